"""A member's public profile: what anyone signed in may see of a member (SPEC 8), and its name
and headline as written, cleaned and bounded before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.model import Member
from inmail.domain.plans import PlanPolicy, PlanTable, PlanType
from inmail.domain.text import shows_something, without_controls

NAME_MAX: Final = 100
HEADLINE_MAX: Final = 220


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


def clean_name(name: str) -> str:
    """The name without spaces at either end: 1 to NAME_MAX characters, no control
    characters, and something that shows."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.NAME_LENGTH, "name", maximum=NAME_MAX)
    name = without_controls(name, "name")
    if not shows_something(name):
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.BLANK, "name")
    return name


def clean_headline(headline: str | None) -> str | None:
    """A headline, or None for none: one that shows nothing is none."""
    if headline is None:
        return None
    headline = headline.strip()
    if len(headline) > HEADLINE_MAX:
        raise DomainError(
            ErrorCode.INVALID_INPUT, Reason.HEADLINE_TOO_LONG, "headline", maximum=HEADLINE_MAX
        )
    headline = without_controls(headline, "headline")
    return headline if shows_something(headline) else None
