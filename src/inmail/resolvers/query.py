"""The Query root."""

from __future__ import annotations

from datetime import datetime

import strawberry

from inmail.domain.access import DEFAULT_PAGE_SIZE
from inmail.resolvers.context import ResolverInfo, ctx
from inmail.schema.enums import CreditLotStatus
from inmail.schema.types import (
    ComposeInfo,
    Connection,
    Conversation,
    CreditLot,
    Member,
    Node,
    Plan,
    node_from_domain,
)
from inmail.services import inmail as inmail_service
from inmail.services.reads import MAX_NODE_IDS


@strawberry.type
class Query:
    @strawberry.field
    async def viewer(self, info: ResolverInfo) -> Member | None:
        profile = await ctx(info).reads.viewer_profile()
        return Member.from_domain(profile) if profile else None

    @strawberry.field
    async def member(self, info: ResolverInfo, id: strawberry.ID) -> Member | None:
        profile = await ctx(info).reads.profile(str(id))
        return Member.from_domain(profile) if profile else None

    @strawberry.field(
        description="Any object by its id, as its own fields show it: null for an unknown id "
        "and for what the caller may not see alike."
    )
    async def node(self, info: ResolverInfo, id: strawberry.ID) -> Node | None:
        found = await ctx(info).reads.node(str(id))
        return node_from_domain(found) if found is not None else None

    @strawberry.field(
        description=f"Objects by id, in the order asked (at most {MAX_NODE_IDS} ids): null in "
        "place of each unknown id or object the caller may not see."
    )
    async def nodes(self, info: ResolverInfo, ids: list[strawberry.ID]) -> list[Node | None]:
        found = await ctx(info).reads.node_views([str(i) for i in ids])
        return [node_from_domain(record) if record is not None else None for record in found]

    @strawberry.field
    async def conversation(self, info: ResolverInfo, id: strawberry.ID) -> Conversation | None:
        """An InMail or thread, for its two parties (and admins) only."""
        found = await ctx(info).reads.conversation(str(id))
        return Conversation.from_domain(found) if found else None

    @strawberry.field(description="Credit lots of the viewer, or of any member for an admin.")
    async def credit_lots(
        self,
        info: ResolverInfo,
        member_id: strawberry.ID | None = None,
        status: list[CreditLotStatus] | None = None,
        first: int | None = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[CreditLot]:
        target = str(member_id) if member_id is not None else None
        listing = await ctx(info).reads.credit_lots(target, status, first, after)
        return Connection.build(listing, CreditLot.from_domain)

    @strawberry.field
    async def compose(self, info: ResolverInfo, recipient_id: strawberry.ID) -> ComposeInfo:
        c = ctx(info)
        viewer_id = c.require_member()
        result = await c.run(
            inmail_service.compose,
            viewer_id,
            str(recipient_id),
            reads=c.reads,
        )
        return ComposeInfo.from_domain(result)

    @strawberry.field
    def plans(self, info: ResolverInfo) -> list[Plan]:
        return [Plan.from_domain(policy) for policy in ctx(info).reads.plans.all()]

    @strawberry.field(description="The service's clock.")
    def now(self, info: ResolverInfo) -> datetime:
        return ctx(info).reads.now()
