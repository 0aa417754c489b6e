"""Who may read and do what (SPEC 8): rules over the caller, and the refusals they give.

A member sees other members' public profile only; their own balance, lots, ledger,
subscription, payment method and conversations are theirs alone; a conversation is visible
to its two parties only; admins see everything. Admins alone create and connect members,
change another member's plan and move a manual clock. A refusal carries a code and its data,
never client-facing text: the API words it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Protocol, TypeAlias, TypeVar

from inmail.domain.credits import CreditLot
from inmail.domain.model import Conversation, LedgerEntry, Member, Message, Purchase
from inmail.domain.notifications import Notification
from inmail.domain.profiles import PublicProfile

DEFAULT_PAGE_SIZE: Final = 20
"""How many items a page of any list holds when the caller names no `first` (the API's
`first: Int = 20`), never more than the largest page allowed."""

NodeRecord: TypeAlias = (
    Member | Conversation | Message | CreditLot | LedgerEntry | Purchase | Notification
)
"""Every kind of record the API shows with an id (the schema's `Node`), each read by id under
the rule of the fields that show it."""

NodeView: TypeAlias = (
    PublicProfile | Conversation | Message | CreditLot | LedgerEntry | Purchase | Notification
)
"""What the API shows of each record with an id: a member as its public profile (the rest of
the record is read by its id, under `owner_or_admin`), every other kind whole, to those who
may see it."""


class Caller(Protocol):
    @property
    def is_admin(self) -> bool: ...

    @property
    def member_id(self) -> str | None: ...


C = TypeVar("C", bound=Caller)


class Refusal(StrEnum):
    SIGN_IN = "SIGN_IN"
    MEMBERS_ONLY = "MEMBERS_ONLY"
    ADMINS_ONLY = "ADMINS_ONLY"
    OWNER_OR_ADMIN = "OWNER_OR_ADMIN"
    PAGE_SIZE = "PAGE_SIZE"  # data: maximum
    BAD_CURSOR = "BAD_CURSOR"  # data: reason
    WATCHED_MEMBER_REQUIRED = "WATCHED_MEMBER_REQUIRED"
    NO_SUCH_MEMBER = "NO_SUCH_MEMBER"  # data: member_id
    TOO_MANY_IDS = "TOO_MANY_IDS"  # data: maximum


class ReadRefused(Exception):
    """A read or an action the service will not serve: not the caller's to see or do, or asked
    for wrongly."""

    def __init__(self, refusal: Refusal, **data: object) -> None:
        super().__init__(refusal.value, data)
        self.refusal = refusal
        self.data = data

    def __repr__(self) -> str:
        return f"ReadRefused({self.refusal.value!r}, {self.data!r})"


def signed_in(caller: C | None) -> C:
    if caller is None:
        raise ReadRefused(Refusal.SIGN_IN)
    return caller


def acting_member(caller: Caller | None) -> str:
    """The member a caller acts as: an admin's token names none."""
    member_id = signed_in(caller).member_id
    if member_id is None:
        raise ReadRefused(Refusal.MEMBERS_ONLY)
    return member_id


def admin(caller: C | None) -> C:
    if not signed_in(caller).is_admin:
        raise ReadRefused(Refusal.ADMINS_ONLY)
    assert caller is not None
    return caller


def acting_for(caller: Caller | None, member_id: str | None) -> str:
    """The member an action is for: the caller's own, or the one an admin names."""
    if member_id is None:
        return acting_member(caller)
    admin(caller)
    return member_id


def owner_or_admin(caller: C | None, member_id: str) -> C:
    """A member's private records are theirs alone, and every admin's."""
    who = signed_in(caller)
    if not who.is_admin and who.member_id != member_id:
        raise ReadRefused(Refusal.OWNER_OR_ADMIN)
    return who


def sees_conversation(caller: Caller, conversation: Conversation) -> bool:
    return caller.is_admin or (
        caller.member_id is not None and conversation.has_party(caller.member_id)
    )


def sees_lot(caller: Caller, lot: CreditLot) -> bool:
    return caller.is_admin or caller.member_id == lot.member_id


def owns(caller: Caller, member_id: str) -> bool:
    """A record that belongs to one member: theirs and the admins' to see."""
    return caller.is_admin or caller.member_id == member_id


def sees_message(caller: Caller, thread: Conversation | None) -> bool:
    """A message is its conversation's: seen by whoever sees the conversation."""
    return thread is not None and sees_conversation(caller, thread)


def is_connection_of(caller: Caller | None, connections: frozenset[str]) -> bool:
    """Whether the caller is one of these 1st-degree connections (an admin is no member)."""
    return caller is not None and caller.member_id is not None and caller.member_id in connections


def profile_for(caller: Caller | None, member: Member) -> PublicProfile:
    """What the caller is shown of a member, whoever it is: the public profile. Its plan shows
    a LEGACY_PREMIUM subscription's own grandfathered allotment to the member and admins
    alone: to others, the plan's published terms (a subscription's terms are its member's)."""
    profile = PublicProfile.of(member, is_connection=is_connection_of(caller, member.connections))
    if caller is None or not owns(caller, member.id):
        return profile.with_published_terms()
    return profile


def node_view(caller: Caller | None, record: NodeRecord) -> NodeView:
    """What the caller is shown of a record it may see by its id: a member as its profile."""
    return profile_for(caller, record) if isinstance(record, Member) else record


def own_profile(member: Member) -> PublicProfile:
    """The public profile of a record handed whole to its owner or an admin (a mutation's
    result): neither is one of its connections, since no member is connected to itself and an
    admin is no member."""
    return PublicProfile.of(member, is_connection=False)
