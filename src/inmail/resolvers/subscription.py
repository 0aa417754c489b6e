"""The Subscription root: live balance updates over websockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import strawberry
from graphql import GraphQLError

from inmail.resolvers.context import Context, ResolverInfo, ctx
from inmail.schema.types import BalanceUpdate, ConversationEvent, Notification
from inmail.services import events
from inmail.services.live import InboxSubscriber

Item = TypeVar("Item")
Shown = TypeVar("Shown")


def balance_update(update: events.BalanceUpdate) -> BalanceUpdate:
    return BalanceUpdate(
        member_id=strawberry.ID(update.member_id),
        balance=update.balance,
        delta=update.delta,
        reason=update.reason,
        at=update.at,
    )


async def _updates(c: Context, member_id: str) -> AsyncIterator[BalanceUpdate]:
    async with c.live.subscribe(member_id) as updates:
        # Clients take the first update as the sign that their subscriptions are live, and read
        # their lists then: it waits for the member's inbox subscriptions asked for before it.
        await c.container.inbox.settled(member_id)
        async for update in updates:
            # The websocket's context lives as long as the connection: nothing cached may
            # outlive the event it was loaded for.
            c.reads.fresh_for(update)
            yield balance_update(update)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "Every change to the balance of the viewer (or, for an admin, of memberId). "
            "The first update comes at once with the balance as of now: the latest change "
            "recorded, brought up to now (credits that lapsed since read as an EXPIRE, a "
            "cycle that started as a GRANT; a member with no change yet: balance 0, delta 0, "
            "reason GRANT, at now). Then every change, in order, each once."
        )
    )
    async def balance_changed(
        self, info: ResolverInfo, member_id: strawberry.ID | None = None
    ) -> AsyncIterator[BalanceUpdate]:
        c = ctx(info)
        # Checked before the stream starts, so a refusal is the operation's error.
        target = await c.reads.watched_member(str(member_id) if member_id is not None else None)
        return _updates(c, target)

    @strawberry.subscription(description="Each new notification of the viewer, once.")
    async def notification_received(self, info: ResolverInfo) -> AsyncIterator[Notification]:
        c = ctx(info)
        member = c.require_member()
        return _notifications(c, member)

    @strawberry.subscription(
        description=(
            "Each event in the viewer's conversations: new InMails, responses, messages, "
            "reminders; in order per conversation, each once."
        )
    )
    async def conversation_updated(self, info: ResolverInfo) -> AsyncIterator[ConversationEvent]:
        c = ctx(info)
        member = c.require_member()
        return _conversation_events(c, member)


def _overflowed() -> GraphQLError:
    return GraphQLError(
        "The subscription fell too far behind and was closed: read the list and subscribe again.",
        extensions={"code": "FELL_BEHIND"},
    )


def _notifications(c: Context, member_id: str) -> AsyncIterator[Notification]:
    return _inbox_items(
        c, lambda: c.container.inbox.notifications.subscribe(member_id), Notification.from_domain
    )


def _conversation_events(c: Context, member_id: str) -> AsyncIterator[ConversationEvent]:
    return _inbox_items(
        c,
        lambda: c.container.inbox.conversations.subscribe(member_id),
        lambda event: ConversationEvent.for_member(event, member_id),
    )


async def _inbox_items(
    c: Context,
    subscribe: Callable[[], AbstractAsyncContextManager[InboxSubscriber[Item]]],
    show: Callable[[Item], Shown],
) -> AsyncIterator[Shown]:
    """A subscriber's items, each as the schema shows it; an error once it fell behind."""
    async with subscribe() as updates:
        async for item in updates:
            c.reads.fresh_for(item)  # nothing cached may outlive the event it was loaded for
            yield show(item)
        if updates.overflowed:
            raise _overflowed()
