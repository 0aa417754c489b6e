"""The plan policy table: who may send InMail, how many credits arrive, the cap, who may buy.

The defaults below are the only place the product figures appear in code; an operator
overrides them through configuration (``plan_table_from_overrides``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from inmail.domain.errors import Reason, whole_number_within
from inmail.domain.money import Money

LEGACY_ALLOTMENT_MIN = 1
LEGACY_ALLOTMENT_MAX = 1000
PLAN_COUNT_MAX = 1_000_000
"""The most credits an operator's plan table may give in a month or let a balance hold: every
balance, cap and count the API answers with fits GraphQL's 32-bit Int."""
CAP_MULTIPLIER_MAX = 1000
"""The largest legacy cap multiplier: with the largest legacy allotment, a cap of a million."""
PLAN_PRICE_MAX = 1_000_000
"""The highest price in minor units (10,000.00 in a currency of cents): a purchase of the most
credits one may buy (INMAIL_MAX_PURCHASE_QUANTITY, 1,000 at most) still fits the 32-bit Int."""


class PlanType(StrEnum):
    BASIC = "BASIC"
    PREMIUM_CAREER = "PREMIUM_CAREER"
    PREMIUM_BUSINESS = "PREMIUM_BUSINESS"
    SALES_NAVIGATOR = "SALES_NAVIGATOR"
    RECRUITER_LITE = "RECRUITER_LITE"
    LEGACY_PREMIUM = "LEGACY_PREMIUM"


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    type: PlanType
    can_send_inmail: bool
    monthly_allotment: int
    max_balance: int
    can_purchase: bool
    monthly_price: Money
    credit_price: Money | None = None
    """The price of one extra credit; None for a plan that cannot buy credits."""

    def __post_init__(self) -> None:
        if self.can_purchase and self.credit_price is None:
            raise ValueError(f"{self.type.value} can buy credits but has no creditPrice")


@dataclass(frozen=True, slots=True)
class PlanTable:
    policies: Mapping[PlanType, PlanPolicy]
    legacy_cap_multiplier: int
    """A LEGACY_PREMIUM subscription's cap is this many times its own allotment (SPEC 1):
    the table's legacy policy is given the cap of its default allotment here."""

    def __post_init__(self) -> None:
        missing = [plan.value for plan in PlanType if plan not in self.policies]
        if missing:
            raise ValueError(f"plan table has no policy for: {', '.join(missing)}")
        for plan, policy in self.policies.items():
            if policy.type is not plan:
                raise ValueError(
                    f"plan table maps {plan.value} to a policy for {policy.type.value}"
                )
        if self.legacy_cap_multiplier < 1:
            raise ValueError("legacy_cap_multiplier must be at least 1")
        policies = dict(self.policies)  # a caller's dict cannot change the table after this
        legacy = policies[PlanType.LEGACY_PREMIUM]
        policies[PlanType.LEGACY_PREMIUM] = replace(
            legacy, max_balance=self.legacy_cap_multiplier * legacy.monthly_allotment
        )
        object.__setattr__(self, "policies", MappingProxyType(policies))

    def __reduce__(self) -> tuple[type[PlanTable], tuple[dict[PlanType, PlanPolicy], int]]:
        """Pickled as a plain dict (a read-only view cannot be), and checked again when read
        back: `inmail serve` hands its settings, this table with them, to each worker so."""
        return PlanTable, (dict(self.policies), self.legacy_cap_multiplier)

    def policy(self, plan: PlanType, monthly_allotment: int | None = None) -> PlanPolicy:
        base = self.policies[plan]
        if plan is not PlanType.LEGACY_PREMIUM:
            return base
        allotment = base.monthly_allotment if monthly_allotment is None else monthly_allotment
        if allotment < 0:
            raise ValueError(f"a legacy monthly allotment cannot be negative (got {allotment})")
        return replace(
            base,
            monthly_allotment=allotment,
            max_balance=self.legacy_cap_multiplier * allotment,
        )

    def grandfathered_allotment(self, plan: PlanType, monthly_allotment: int | None) -> int | None:
        """The allotment a subscription to `plan` keeps from its start (SPEC 1).

        LEGACY_PREMIUM's terms are fixed per subscription: the allotment asked for, else this
        table's default at the start, written into the subscription so that a later change of
        the default leaves it alone. Other plans keep none: they follow the table.
        """
        if plan is not PlanType.LEGACY_PREMIUM or monthly_allotment is not None:
            return monthly_allotment
        return self.policies[plan].monthly_allotment

    def all(self) -> list[PlanPolicy]:
        return [self.policy(plan) for plan in PlanType]


def _usd(cents: int) -> Money:
    return Money(cents, "USD")


DEFAULT_CREDIT_PRICE: Final = _usd(1000)
"""What one extra credit costs on a plan that can buy them, unless the settings say otherwise
(SPEC 1); purchases recorded before prices existed were charged it."""


DEFAULT_PLAN_TABLE = PlanTable(
    policies={
        PlanType.BASIC: PlanPolicy(PlanType.BASIC, False, 0, 0, False, _usd(0)),
        PlanType.PREMIUM_CAREER: PlanPolicy(
            PlanType.PREMIUM_CAREER, True, 5, 15, True, _usd(2999), DEFAULT_CREDIT_PRICE
        ),
        PlanType.PREMIUM_BUSINESS: PlanPolicy(
            PlanType.PREMIUM_BUSINESS, True, 15, 45, True, _usd(5999), DEFAULT_CREDIT_PRICE
        ),
        PlanType.SALES_NAVIGATOR: PlanPolicy(
            PlanType.SALES_NAVIGATOR, True, 20, 60, False, _usd(9999)
        ),
        PlanType.RECRUITER_LITE: PlanPolicy(
            PlanType.RECRUITER_LITE, True, 30, 90, False, _usd(17000)
        ),
        # Its cap (max_balance, 0 here) is set by the table: legacy_cap_multiplier x allotment.
        PlanType.LEGACY_PREMIUM: PlanPolicy(
            PlanType.LEGACY_PREMIUM, True, 10, 0, True, _usd(2999), DEFAULT_CREDIT_PRICE
        ),
    },
    legacy_cap_multiplier=3,
)

_CAN_SEND_KEY = "canSendInMail"
_ALLOTMENT_KEY = "monthlyAllotment"
_MAX_BALANCE_KEY = "maxBalance"
_CAN_PURCHASE_KEY = "canPurchaseCredits"
_CAP_MULTIPLIER_KEY = "capMultiplier"
_MONTHLY_PRICE_KEY = "monthlyPrice"
_CREDIT_PRICE_KEY = "creditPrice"
_PRICE_KEYS = frozenset({_MONTHLY_PRICE_KEY, _CREDIT_PRICE_KEY})
_STANDARD_KEYS = (
    frozenset({_CAN_SEND_KEY, _ALLOTMENT_KEY, _MAX_BALANCE_KEY, _CAN_PURCHASE_KEY}) | _PRICE_KEYS
)
_LEGACY_KEYS = (
    frozenset({_CAN_SEND_KEY, _ALLOTMENT_KEY, _CAN_PURCHASE_KEY, _CAP_MULTIPLIER_KEY}) | _PRICE_KEYS
)


def plan_table_from_overrides(
    overrides: Mapping[str, Mapping[str, object]],
    base: PlanTable = DEFAULT_PLAN_TABLE,
) -> PlanTable:
    if not isinstance(overrides, Mapping):
        raise ValueError("plan overrides must be a mapping of plan name to settings")
    policies = dict(base.policies)
    cap_multiplier = base.legacy_cap_multiplier
    for name, settings in overrides.items():
        plan = _plan_named(name)
        if not isinstance(settings, Mapping):
            raise ValueError(f"plan override for {plan.value} must be a mapping of settings")
        _reject_unknown_keys(plan, settings)
        cap_multiplier = _setting_int(
            plan,
            settings,
            _CAP_MULTIPLIER_KEY,
            cap_multiplier,
            minimum=1,
            maximum=CAP_MULTIPLIER_MAX,
        )
        policy = _overridden(policies[plan], settings)
        if plan is not PlanType.LEGACY_PREMIUM and policy.max_balance < policy.monthly_allotment:
            raise ValueError(
                f"plan override for {plan.value}: maxBalance ({policy.max_balance}) must not be "
                f"below monthlyAllotment ({policy.monthly_allotment})"
            )
        policies[plan] = policy
    return PlanTable(policies=policies, legacy_cap_multiplier=cap_multiplier)


def validate_legacy_allotment(value: int) -> int:
    return whole_number_within(
        value,
        LEGACY_ALLOTMENT_MIN,
        LEGACY_ALLOTMENT_MAX,
        reason=Reason.ALLOTMENT_OUT_OF_RANGE,
        field="monthlyAllotment",
    )


def _plan_named(name: str) -> PlanType:
    try:
        return PlanType(name)
    except ValueError:
        known = ", ".join(plan.value for plan in PlanType)
        raise ValueError(f"unknown plan {name!r} in plan overrides (known: {known})") from None


def _reject_unknown_keys(plan: PlanType, settings: Mapping[str, object]) -> None:
    # The legacy cap is always a multiple of the allotment, so it is tuned by its multiplier only.
    allowed = _LEGACY_KEYS if plan is PlanType.LEGACY_PREMIUM else _STANDARD_KEYS
    unknown = sorted(str(key) for key in settings if key not in allowed)
    if unknown:
        raise ValueError(
            f"plan override for {plan.value} has unknown key(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _overridden(policy: PlanPolicy, settings: Mapping[str, object]) -> PlanPolicy:
    plan = policy.type
    # LEGACY_PREMIUM's default allotment is one an admin could have given: held to their range.
    allotment_range = (
        (LEGACY_ALLOTMENT_MIN, LEGACY_ALLOTMENT_MAX)
        if plan is PlanType.LEGACY_PREMIUM
        else (0, PLAN_COUNT_MAX)
    )
    return PlanPolicy(
        type=plan,
        can_send_inmail=_setting_bool(plan, settings, _CAN_SEND_KEY, policy.can_send_inmail),
        monthly_allotment=_setting_int(
            plan, settings, _ALLOTMENT_KEY, policy.monthly_allotment, *allotment_range
        ),
        max_balance=_setting_int(plan, settings, _MAX_BALANCE_KEY, policy.max_balance),
        can_purchase=_setting_bool(plan, settings, _CAN_PURCHASE_KEY, policy.can_purchase),
        # What is charged is at least one minor unit: a charge of nothing would grant a plan
        # or credits for nothing, and providers refuse one. BASIC, the free plan, is never
        # charged for.
        monthly_price=_setting_money(
            plan,
            settings,
            _MONTHLY_PRICE_KEY,
            policy.monthly_price,
            minimum=0 if plan is PlanType.BASIC else 1,
        ),
        credit_price=_setting_optional_money(
            plan, settings, _CREDIT_PRICE_KEY, policy.credit_price
        ),
    )


def _setting_money(
    plan: PlanType, settings: Mapping[str, object], key: str, default: Money, *, minimum: int = 1
) -> Money:
    if key not in settings:
        return default
    value = settings[key]
    try:
        if not isinstance(value, Mapping):
            raise ValueError(f'expected {{"amount": ..., "currency": ...}}, got {value!r}')
        money = Money.from_doc(value)
        if not minimum <= money.amount <= PLAN_PRICE_MAX:
            raise ValueError(
                f"an amount of {minimum} to {PLAN_PRICE_MAX} minor units, got {money.amount}"
            )
        return money
    except ValueError as exc:
        raise ValueError(f"plan override {plan.value}.{key}: {exc}") from None


def _setting_optional_money(
    plan: PlanType, settings: Mapping[str, object], key: str, default: Money | None
) -> Money | None:
    if key in settings and settings[key] is None:
        return None
    if default is None and key not in settings:
        return None
    return _setting_money(plan, settings, key, default or Money(0, "USD"))


def _setting_bool(plan: PlanType, settings: Mapping[str, object], key: str, default: bool) -> bool:
    if key not in settings:
        return default
    value = settings[key]
    if not isinstance(value, bool):
        raise ValueError(f"plan override {plan.value}.{key} must be true or false, got {value!r}")
    return value


def _setting_int(
    plan: PlanType,
    settings: Mapping[str, object],
    key: str,
    default: int,
    minimum: int = 0,
    maximum: int = PLAN_COUNT_MAX,
) -> int:
    if key not in settings:
        return default
    value = settings[key]
    # bool is a subclass of int, yet `"maxBalance": true` is a configuration mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"plan override {plan.value}.{key} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(
            f"plan override {plan.value}.{key} must be between {minimum} and {maximum}, got {value}"
        )
    return value
