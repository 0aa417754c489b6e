"""Change feeds: what a live subscriber reads of the changes committed through any process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from inmail.domain.model import LedgerEntry
from inmail.domain.notifications import ConversationEvent, Notification

ResumeToken = Mapping[str, object]


Item_co = TypeVar("Item_co", covariant=True)


class Feed(Protocol[Item_co]):
    """A change feed: opened, read item by item (each read waits for one), closed. `Mongo`
    opens one for the ledger (`ledger_changes`) and one for the inbox (`inbox_changes`)."""

    async def open(self) -> None: ...

    async def next(self) -> Item_co: ...

    async def close(self) -> None: ...


class ChangesLost(Exception):
    """The stream could not resume where it stopped; it goes on from now, and some changes were
    never seen. Whoever relies on the feed must catch up from the ledger itself."""


@dataclass(frozen=True, slots=True)
class CommittedEntries:
    """The entries one transaction wrote, in ledger order, and where to resume after them."""

    entries: list[LedgerEntry]
    resume_token: ResumeToken


@dataclass(frozen=True, slots=True)
class InboxChange:
    """A document new in `notifications`: its id (ids grow with the time they were made) and
    what it holds, a notification or a conversation event (None: neither kind known here)."""

    id: str
    item: Notification | ConversationEvent | None
