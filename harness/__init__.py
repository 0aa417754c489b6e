"""What the tests and the benchmarks share: starting and stopping processes of the service.

A development package beside `tests/` and `benchmarks/`, never part of the `inmail` package.
"""
