"""The Query root."""

from __future__ import annotations

from datetime import datetime

import strawberry

from inmail.schema.enums import CreditLotStatus
from inmail.schema.types import (
    ComposeInfo,
    Connection,
    Conversation,
    CreditLot,
    GraphInfo,
    Member,
    Plan,
    credit_lot_connection,
    ctx,
)
from inmail.services import inmail as inmail_service


@strawberry.type
class Query:
    @strawberry.field
    async def viewer(self, info: GraphInfo) -> Member | None:
        c = ctx(info)
        viewer = c.require_viewer()
        if viewer.member_id is None:
            return None
        member = await c.loaders.member.load(viewer.member_id)
        return Member.from_domain(member) if member else None

    @strawberry.field
    async def member(self, info: GraphInfo, id: strawberry.ID) -> Member | None:
        c = ctx(info)
        c.require_viewer()
        member = await c.loaders.member.load(str(id))
        return Member.from_domain(member) if member else None

    @strawberry.field
    async def conversation(self, info: GraphInfo, id: strawberry.ID) -> Conversation | None:
        """An InMail or thread, for its two parties (and admins) only."""
        c = ctx(info)
        viewer = c.require_viewer()
        found = await c.loaders.conversation.load(str(id))
        if found is None:
            return None
        if not viewer.is_admin and not found.has_party(viewer.member_id or ""):
            return None  # not yours: indistinguishable from an unknown id
        return Conversation.from_domain(found)

    @strawberry.field(description="Credit lots of the viewer, or of any member for an admin.")
    async def credit_lots(
        self,
        info: GraphInfo,
        member_id: strawberry.ID | None = None,
        status: list[CreditLotStatus] | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[CreditLot]:
        c = ctx(info)
        viewer = c.require_viewer()
        target = str(member_id) if member_id is not None else viewer.member_id
        if target is None:
            target = c.require_member()
        c.require_owner_or_admin(target)
        return await credit_lot_connection(info, target, status, first, after)

    @strawberry.field
    async def compose(self, info: GraphInfo, recipient_id: strawberry.ID) -> ComposeInfo:
        c = ctx(info)
        viewer_id = c.require_member()
        result = await inmail_service.compose(
            c.deps,
            viewer_id,
            str(recipient_id),
            load_member=c.loaders.member.load,
            load_balance=c.loaders.balance.load,
        )
        return ComposeInfo(
            can_send=result.can_send,
            reason=result.reason,
            credits_left=result.credits_left,
            recipient_is_connection=result.recipient_is_connection,
        )

    @strawberry.field
    def plans(self, info: GraphInfo) -> list[Plan]:
        return [Plan.from_domain(policy) for policy in ctx(info).deps.plans.all()]

    @strawberry.field(description="The service's clock.")
    def now(self, info: GraphInfo) -> datetime:
        return ctx(info).deps.now()
