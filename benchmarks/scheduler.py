"""The scheduler workload: `benchmarks.renewals`, run against this run's mongod.

That module (a renewal pass of N members against the same writes as bare bulk writes, with the
process's memory during the pass) is the measurement; this one only calls its `run_size` for each
size.
"""

from __future__ import annotations

from benchmarks import renewals


async def renewal_pass(uri: str, size: int, batch: int) -> dict[str, float]:
    """One size: seed, time the pass, check it, then the renewal floor (see the module)."""
    result = await renewals.run_size(uri, size, batch)
    return {key: float(value) for key, value in result.items()}


def default_batch() -> int:
    from inmail.settings import Settings

    return Settings().scheduler_batch
