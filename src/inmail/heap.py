"""The serving process's garbage collector, set for a server once the app has started.

CPython collects its youngest generation every 700 net allocations of container objects. A
GraphQL request allocates thousands (its document, its results, its DataLoaders and futures),
so a busy server ran a collection every few requests, and each one walked every request then
in flight. Once the app has started, `tuned_gc` moves everything alive (modules, the schema,
the clients) out of the collector's sight with `gc.freeze()` and raises that threshold, so
collections are rarer and walk only what requests left. BENCHMARKS.md has the figures.

Better still is a request that leaves the collector nothing to find: what it made is freed by
reference counting as it ends, unless its objects refer to each other in a cycle. So a
callback an object hands to something it owns (a reader to its loaders, an execution to the
helpers it gives resolvers) is `weakly_bound`, and the state a context and its reader both
ask (the request's credentials) is an object of its own that refers to neither.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

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


def weakly_bound(method: Callable[P, R]) -> Callable[P, R]:
    """The bound `method` (a method of an object, nothing else), holding its object weakly.

    For a callback an object gives to something it owns: held strongly, the two would form a
    reference cycle, and they and all they hold would wait for the collector instead of being
    freed when the last outside reference goes. Called after its object is gone, it raises
    ReferenceError.
    """
    ref = weakref.WeakMethod(method)
    name = method.__qualname__

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = ref()
        if bound is None:
            raise ReferenceError(f"{name}: its object is gone")
        return bound(*args, **kwargs)

    return call
