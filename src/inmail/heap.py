"""The serving process's garbage collector, set for a server once the app has started.

CPython collects its youngest generation every 700 net allocations of container objects. A
GraphQL request allocates thousands (its document, its results, its DataLoaders and futures),
so a busy server ran a collection every few requests, and each one walked every request then
in flight. Once the app has started, `tuned_gc` moves everything alive (modules, the schema,
the clients) out of the collector's sight with `gc.freeze()` and raises that threshold, so
collections are rarer and walk only what requests left. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG_THRESHOLD = 10_000
"""Net allocations between two collections of the youngest generation (CPython's default: 700)."""


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """The collector tuned for serving while the block runs, as it was afterwards."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
