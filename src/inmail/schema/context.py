"""What the schema's types may ask of a request's context: the caller's reads, nothing more.

The types map records to the schema; who may see what is decided by the reads they call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from strawberry.types import Info

from inmail.domain.conversations import ConversationFilter
from inmail.domain.credits import CreditLot, LotStatus
from inmail.domain.model import Conversation, LedgerEntry, Member, Message, Purchase
from inmail.domain.notifications import Notification
from inmail.domain.plans import PlanTable
from inmail.domain.profiles import PublicProfile

T_co = TypeVar("T_co", covariant=True)


class Listing(Protocol[T_co]):
    @property
    def items(self) -> Sequence[tuple[object, T_co]]: ...  # (cursor: its text is `str` of it, item)

    @property
    def has_next(self) -> bool: ...

    async def has_previous(self) -> bool: ...

    @property
    def start_cursor(self) -> str | None: ...

    @property
    def end_cursor(self) -> str | None: ...

    async def total_count(self) -> int: ...


class Reads(Protocol):
    """The records the caller may see; a refusal is raised as the API's error."""

    @property
    def plans(self) -> PlanTable: ...

    def now(self) -> datetime: ...

    # A member is shown as its public profile; the rest of its record is asked for by its id,
    # and refused to all but its owner and admins.

    def profile(self, member_id: str) -> Awaitable[PublicProfile | None]: ...

    async def viewer_profile(self) -> PublicProfile | None: ...

    def known_profile(self, member_id: str) -> PublicProfile | None: ...

    async def current(self, member_id: str) -> Member | None: ...

    async def balance(self, member_id: str) -> int: ...

    async def credit_lots(
        self,
        member_id: str | None,
        statuses: Sequence[LotStatus] | None,
        first: int | None,
        after: str | None,
    ) -> Listing[CreditLot]: ...

    async def ledger(
        self, member_id: str, first: int | None, after: str | None
    ) -> Listing[LedgerEntry]: ...

    async def conversations(
        self, which: ConversationFilter, first: int | None, after: str | None
    ) -> Listing[Conversation]: ...

    async def latest_messages(
        self, conversation: Conversation, *, authors: bool = False
    ) -> list[Message]: ...

    def known_latest_messages(self, conversation: Conversation) -> list[Message] | None: ...

    async def read_ahead(
        self, conversations: Sequence[Conversation], *, parties: bool, messages: bool
    ) -> None: ...

    async def messages(
        self,
        conversation: Conversation,
        first: int | None,
        after: str | None,
        *,
        authors: bool = False,
    ) -> Listing[Message]: ...

    async def notifications(
        self, member_id: str, unread_only: bool, first: int | None, after: str | None
    ) -> Listing[Notification]: ...

    async def purchases(
        self, member_id: str, first: int | None, after: str | None
    ) -> Listing[Purchase]: ...

    async def conversation(self, conversation_id: str) -> Conversation | None: ...

    async def lot(self, lot_id: str) -> CreditLot | None: ...

    async def purchase(self, purchase_id: str) -> Purchase | None: ...


class GraphContext(Protocol):
    @property
    def reads(self) -> Reads: ...


if TYPE_CHECKING:
    GraphInfo = Info[GraphContext, None]
else:
    GraphInfo = Info


def reads(info: GraphInfo) -> Reads:
    return info.context.reads
