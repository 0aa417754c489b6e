"""The Subscription root: live balance updates over websockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import strawberry

from inmail.resolvers.context import Context, ResolverInfo, ctx
from inmail.schema.types import BalanceUpdate
from inmail.services import events


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
        async for update in updates:
            # The websocket's context lives as long as the connection: nothing cached may
            # outlive the event it was loaded for.
            c.reads.clear()
            yield balance_update(update)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "Every change to the balance of the viewer (or, for an admin, of memberId). "
            "The first update is the latest change already recorded (for a member with none "
            "yet: balance 0, delta 0, reason GRANT, at now), so a client knows the balance at "
            "once; then every change, in order, each once."
        )
    )
    async def balance_changed(
        self, info: ResolverInfo, member_id: strawberry.ID | None = None
    ) -> AsyncIterator[BalanceUpdate]:
        c = ctx(info)
        # Checked before the stream starts, so a refusal is the operation's error.
        target = await c.reads.watched_member(str(member_id) if member_id is not None else None)
        return _updates(c, target)
