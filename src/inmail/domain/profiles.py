"""A member's public profile: what anyone signed in may see of a member (SPEC 8)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from inmail.domain.model import Member
from inmail.domain.plans import PlanPolicy, PlanTable, PlanType


@dataclass(frozen=True, slots=True)
class PublicProfile:
    """A member's name, headline and plan, as one viewer is shown them, and whether that
    viewer is one of the member's 1st-degree connections. Nothing else of the record: its
    subscription, card, connections and lists are read by the member's id, for its owner and
    admins alone."""

    id: str
    name: str
    headline: str | None
    plan: PlanType
    # LEGACY_PREMIUM's grandfathered terms, which its plan shows: to its member and admins only
    monthly_allotment: int | None
    is_connection: bool

    @classmethod
    def of(cls, member: Member, *, is_connection: bool) -> PublicProfile:
        subscription = member.subscription
        return cls(
            id=member.id,
            name=member.name,
            headline=member.headline,
            plan=member.plan,
            monthly_allotment=subscription.monthly_allotment if subscription else None,
            is_connection=is_connection,
        )

    def policy(self, plans: PlanTable) -> PlanPolicy:
        return plans.policy(self.plan, self.monthly_allotment)

    def with_published_terms(self) -> PublicProfile:
        """The profile whose plan shows the plan table's terms, not its subscription's own."""
        return replace(self, monthly_allotment=None)
