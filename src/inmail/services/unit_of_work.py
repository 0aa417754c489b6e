"""What the use cases need of storage: plain reads, and transactions that are retried."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from inmail.repositories.mongo import DatabaseUnavailable, WriteWindowClosed, new_id, unanswered
from inmail.repositories.unit_of_work import Conflict, Reads, Transaction

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "Conflict",
    "DatabaseUnavailable",
    "Reads",
    "Transaction",
    "UnitOfWork",
    "WriteWindowClosed",
    "new_id",
    "unanswered",
]


class UnitOfWork(Protocol):
    """The storage a use case works through (repositories/unit_of_work.py on MongoDB).

    `reads` are repositories with no write methods; every write goes through a `Transaction`,
    from `run` (retried when it raced a concurrent change), `run_optimistically` (first without
    the reads a unique index makes redundant) or `transaction()` (one attempt). `deadline()`
    bounds all the database work of a request.
    """

    @property
    def reads(self) -> Reads: ...

    def deadline(
        self, ends_by: float | None = None, *, timed: bool = True
    ) -> contextlib.AbstractContextManager[None]: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    async def run(
        self,
        step: Callable[Concatenate[Transaction, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    async def run_optimistically(
        self,
        step: Callable[Concatenate[Transaction, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...
