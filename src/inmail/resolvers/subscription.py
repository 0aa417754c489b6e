"""The Subscription root: live balance updates over websockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import strawberry
from graphql import GraphQLError

from inmail.resolvers.context import Context
from inmail.schema.errors import bad_input
from inmail.schema.types import (
    BalanceUpdate,
    ConversationEvent,
    GraphInfo,
    Notification,
    ctx,
)
from inmail.services import events
from inmail.services.live import InboxBroker


def balance_update(update: events.BalanceUpdate) -> BalanceUpdate:
    return BalanceUpdate(
        member_id=strawberry.ID(update.member_id),
        balance=update.balance,
        delta=update.delta,
        reason=update.reason,
        at=update.at,
    )


async def _watched_member(c: Context, member_id: strawberry.ID | None) -> str:
    """Whose balance the viewer may watch: their own, or any member's for an admin."""
    viewer = c.require_viewer()
    if member_id is None:
        if viewer.member_id is None:
            raise bad_input("memberId is required: an admin watches one member at a time.")
        target = viewer.member_id
    else:
        target = str(member_id)
    c.require_owner_or_admin(target)
    if await c.loaders.member.load(target) is None:
        raise bad_input(f"memberId: no member with id {target!r}.")
    return target


async def _updates(c: Context, member_id: str) -> AsyncIterator[BalanceUpdate]:
    async with c.container.live.subscribe(member_id) as updates:
        async for update in updates:
            # The websocket's context lives as long as the connection: nothing cached may
            # outlive the event it was loaded for.
            c.loaders.clear()
            yield balance_update(update)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "Every change to the balance of the viewer (or, for an admin, of memberId). "
            "The first update is the latest change already recorded, so a client knows the "
            "balance at once; then every change, in order, each once."
        )
    )
    async def balance_changed(
        self, info: GraphInfo, member_id: strawberry.ID | None = None
    ) -> AsyncIterator[BalanceUpdate]:
        c = ctx(info)
        # Checked before the stream starts, so a refusal is the operation's error.
        target = await _watched_member(c, member_id)
        return _updates(c, target)

    @strawberry.subscription(description="Each new notification of the viewer, once.")
    async def notification_received(self, info: GraphInfo) -> AsyncIterator[Notification]:
        c = ctx(info)
        member = c.require_member()
        return _notifications(c, member)

    @strawberry.subscription(
        description=(
            "Each event in the viewer's conversations: new InMails, responses, messages, "
            "reminders; in order per conversation, each once."
        )
    )
    async def conversation_updated(self, info: GraphInfo) -> AsyncIterator[ConversationEvent]:
        c = ctx(info)
        member = c.require_member()
        return _conversation_events(c, member)


def _inbox(c: Context) -> InboxBroker:
    inbox = c.container.inbox
    if inbox is None:  # pragma: no cover - every container has one
        raise GraphQLError("Live notifications are not available.")
    return inbox


def _overflowed() -> GraphQLError:
    return GraphQLError(
        "The subscription fell too far behind and was closed: read the list and subscribe again."
    )


async def _notifications(c: Context, member_id: str) -> AsyncIterator[Notification]:
    async with _inbox(c).notifications.subscribe(member_id) as updates:
        async for notification in updates:
            c.loaders.clear()
            yield Notification.from_domain(notification)
        if updates.overflowed:
            raise _overflowed()


async def _conversation_events(c: Context, member_id: str) -> AsyncIterator[ConversationEvent]:
    async with _inbox(c).conversations.subscribe(member_id) as updates:
        async for event in updates:
            c.loaders.clear()
            yield ConversationEvent.for_member(event, member_id)
        if updates.overflowed:
            raise _overflowed()
