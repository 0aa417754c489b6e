from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.money import Money
from inmail.domain.plans import (
    DEFAULT_PLAN_TABLE,
    PlanPolicy,
    PlanTable,
    PlanType,
    plan_table_from_overrides,
    validate_legacy_allotment,
)
from support import check_bounded


def test_the_default_table_holds_the_published_figures_for_every_plan() -> None:
    figures = {
        policy.type: (
            policy.can_send_inmail,
            policy.monthly_allotment,
            policy.max_balance,
            policy.can_purchase,
        )
        for policy in DEFAULT_PLAN_TABLE.all()
    }
    assert figures == {
        PlanType.BASIC: (False, 0, 0, False),
        PlanType.PREMIUM_CAREER: (True, 5, 15, True),
        PlanType.PREMIUM_BUSINESS: (True, 15, 45, True),
        PlanType.SALES_NAVIGATOR: (True, 20, 60, False),
        PlanType.RECRUITER_LITE: (True, 30, 90, False),
        PlanType.LEGACY_PREMIUM: (True, 10, 30, True),
    }


def test_all_lists_policies_in_plan_declaration_order() -> None:
    assert [policy.type for policy in DEFAULT_PLAN_TABLE.all()] == list(PlanType)


def test_a_legacy_subscription_keeps_its_grandfathered_allotment_and_a_cap_three_times_it() -> None:
    policy = DEFAULT_PLAN_TABLE.policy(PlanType.LEGACY_PREMIUM, monthly_allotment=7)
    assert policy.monthly_allotment == 7
    assert policy.max_balance == 21


def test_a_legacy_subscription_without_grandfathered_terms_gets_the_default_allotment() -> None:
    policy = DEFAULT_PLAN_TABLE.policy(PlanType.LEGACY_PREMIUM)
    assert (policy.monthly_allotment, policy.max_balance) == (10, 30)


def test_a_legacy_subscription_starts_with_the_allotment_asked_else_todays_default() -> None:
    raised = plan_table_from_overrides({"LEGACY_PREMIUM": {"monthlyAllotment": 25}})
    assert DEFAULT_PLAN_TABLE.grandfathered_allotment(PlanType.LEGACY_PREMIUM, None) == 10
    assert raised.grandfathered_allotment(PlanType.LEGACY_PREMIUM, None) == 25
    assert raised.grandfathered_allotment(PlanType.LEGACY_PREMIUM, 7) == 7


def test_a_subscription_to_another_plan_keeps_no_allotment_of_its_own() -> None:
    for plan in PlanType:
        if plan is not PlanType.LEGACY_PREMIUM:
            assert DEFAULT_PLAN_TABLE.grandfathered_allotment(plan, None) is None, plan


def test_an_allotment_override_is_ignored_for_plans_that_are_not_legacy() -> None:
    policy = DEFAULT_PLAN_TABLE.policy(PlanType.PREMIUM_CAREER, monthly_allotment=99)
    assert (policy.monthly_allotment, policy.max_balance) == (5, 15)


@given(allotment=st.integers(min_value=0, max_value=1000), multiplier=st.integers(1, 10))
def test_a_legacy_cap_is_always_the_multiplier_times_the_allotment(
    allotment: int, multiplier: int
) -> None:
    table = plan_table_from_overrides({"LEGACY_PREMIUM": {"capMultiplier": multiplier}})
    policy = table.policy(PlanType.LEGACY_PREMIUM, monthly_allotment=allotment)
    assert policy.max_balance == multiplier * allotment


def test_an_operator_can_change_a_plans_allotment_and_cap_without_touching_the_others() -> None:
    table = plan_table_from_overrides({"PREMIUM_CAREER": {"monthlyAllotment": 8, "maxBalance": 24}})
    career = table.policy(PlanType.PREMIUM_CAREER)
    assert (career.monthly_allotment, career.max_balance, career.can_purchase) == (8, 24, True)
    for plan in PlanType:
        if plan is not PlanType.PREMIUM_CAREER:
            assert table.policy(plan) == DEFAULT_PLAN_TABLE.policy(plan)


def test_an_operator_can_let_sales_navigator_members_buy_credits() -> None:
    table = plan_table_from_overrides(
        {
            "SALES_NAVIGATOR": {
                "canPurchaseCredits": True,
                "creditPrice": {"amount": 800, "currency": "USD"},
            }
        }
    )
    assert table.policy(PlanType.SALES_NAVIGATOR).can_purchase is True


def test_an_operator_can_change_the_legacy_default_allotment_and_multiplier() -> None:
    table = plan_table_from_overrides(
        {"LEGACY_PREMIUM": {"monthlyAllotment": 12, "capMultiplier": 4}}
    )
    assert table.legacy_cap_multiplier == 4
    legacy = table.policy(PlanType.LEGACY_PREMIUM)
    assert (legacy.monthly_allotment, legacy.max_balance) == (12, 48)
    assert table.policy(PlanType.LEGACY_PREMIUM, monthly_allotment=5).max_balance == 20


def test_no_overrides_give_a_table_equal_to_the_defaults() -> None:
    assert plan_table_from_overrides({}).all() == DEFAULT_PLAN_TABLE.all()


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"PLATINUM": {"monthlyAllotment": 1}}, ["PLATINUM"]),
        ({"PREMIUM_CAREER": {"allotment": 1}}, ["PREMIUM_CAREER", "allotment"]),
        ({"PREMIUM_CAREER": {"monthlyAllotment": "8"}}, ["PREMIUM_CAREER", "monthlyAllotment"]),
        ({"PREMIUM_CAREER": {"monthlyAllotment": True}}, ["PREMIUM_CAREER", "monthlyAllotment"]),
        ({"PREMIUM_CAREER": {"monthlyAllotment": 2.5}}, ["PREMIUM_CAREER", "monthlyAllotment"]),
        ({"PREMIUM_CAREER": {"maxBalance": -1}}, ["PREMIUM_CAREER", "maxBalance"]),
        ({"PREMIUM_CAREER": {"canSendInMail": 1}}, ["PREMIUM_CAREER", "canSendInMail"]),
        (
            {"PREMIUM_CAREER": {"canPurchaseCredits": "yes"}},
            ["PREMIUM_CAREER", "canPurchaseCredits"],
        ),
        ({"PREMIUM_CAREER": {"maxBalance": 4}}, ["PREMIUM_CAREER", "maxBalance"]),
        ({"PREMIUM_CAREER": {"capMultiplier": 2}}, ["PREMIUM_CAREER", "capMultiplier"]),
        ({"LEGACY_PREMIUM": {"capMultiplier": 0}}, ["LEGACY_PREMIUM", "capMultiplier"]),
        ({"LEGACY_PREMIUM": {"maxBalance": 50}}, ["LEGACY_PREMIUM", "maxBalance"]),
        ({"PREMIUM_CAREER": {"maxBalance": 10**20}}, ["PREMIUM_CAREER", "maxBalance"]),
        (
            {"PREMIUM_CAREER": {"monthlyAllotment": 1_000_001, "maxBalance": 1_000_001}},
            ["PREMIUM_CAREER", "monthlyAllotment"],
        ),
        ({"LEGACY_PREMIUM": {"capMultiplier": 1001}}, ["LEGACY_PREMIUM", "capMultiplier"]),
        ({"LEGACY_PREMIUM": {"monthlyAllotment": 0}}, ["LEGACY_PREMIUM", "monthlyAllotment"]),
        ({"LEGACY_PREMIUM": {"monthlyAllotment": 1001}}, ["LEGACY_PREMIUM", "monthlyAllotment"]),
        (
            {"PREMIUM_CAREER": {"monthlyPrice": {"amount": 1_000_001, "currency": "USD"}}},
            ["PREMIUM_CAREER", "monthlyPrice"],
        ),
        (
            {"PREMIUM_CAREER": {"creditPrice": {"amount": 10**12, "currency": "USD"}}},
            ["PREMIUM_CAREER", "creditPrice"],
        ),
        ({"BASIC": "off"}, ["BASIC"]),
        (
            {"PREMIUM_CAREER": {"creditPrice": {"amount": 0, "currency": "USD"}}},
            ["PREMIUM_CAREER", "creditPrice"],
        ),
        (
            {"SALES_NAVIGATOR": {"monthlyPrice": {"amount": 0, "currency": "USD"}}},
            ["SALES_NAVIGATOR", "monthlyPrice"],
        ),
    ],
)
def test_a_bad_override_is_refused_with_a_message_naming_the_plan_and_key(
    overrides: Mapping[str, Mapping[str, object]], names: list[str]
) -> None:
    with pytest.raises(ValueError, match=names[0]) as refused:
        plan_table_from_overrides(overrides)
    for name in names:
        assert name in str(refused.value)


def test_the_largest_table_an_operator_may_set_answers_in_graphql_s_32_bit_int() -> None:
    table = plan_table_from_overrides(
        {
            "PREMIUM_BUSINESS": {
                "monthlyAllotment": 1_000_000,
                "maxBalance": 1_000_000,
                "creditPrice": {"amount": 1_000_000, "currency": "USD"},
            },
            "LEGACY_PREMIUM": {"monthlyAllotment": 1000, "capMultiplier": 1000},
        }
    )
    largest = max(
        figure
        for plan in PlanType
        for policy in (table.policy(plan), table.policy(plan, monthly_allotment=1000))
        for figure in (policy.monthly_allotment, policy.max_balance)
    )
    assert largest == 1_000_000 < 2**31
    credit_price = table.policy(PlanType.PREMIUM_BUSINESS).credit_price
    assert credit_price is not None
    most_credits_one_purchase_buys = 1000  # INMAIL_MAX_PURCHASE_QUANTITY's upper bound
    assert most_credits_one_purchase_buys * credit_price.amount < 2**31


def test_a_table_missing_a_plan_is_refused() -> None:
    policies: dict[PlanType, PlanPolicy] = {
        plan: policy
        for plan, policy in DEFAULT_PLAN_TABLE.policies.items()
        if plan is not PlanType.RECRUITER_LITE
    }
    with pytest.raises(ValueError, match="RECRUITER_LITE"):
        PlanTable(policies, DEFAULT_PLAN_TABLE.legacy_cap_multiplier)


def test_a_table_cannot_be_changed_through_the_dict_it_was_built_from() -> None:
    policies = dict(DEFAULT_PLAN_TABLE.policies)
    table = PlanTable(policies, DEFAULT_PLAN_TABLE.legacy_cap_multiplier)
    policies[PlanType.BASIC] = PlanPolicy(
        PlanType.BASIC, True, 100, 100, True, Money(100, "USD"), Money(1, "USD")
    )
    assert table.policy(PlanType.BASIC).can_send_inmail is False


@pytest.mark.parametrize(
    ("allotment", "within"),
    [(1, True), (10, True), (1000, True), (0, False), (-3, False), (1001, False)],
)
def test_a_legacy_allotment_is_accepted_within_bounds_and_invalid_input_on_its_field_outside(
    allotment: int, within: bool
) -> None:
    check_bounded(validate_legacy_allotment, allotment, within=within, field="monthlyAllotment")


def test_a_domain_error_carries_its_code_reason_field_and_data_and_no_words() -> None:
    error = DomainError(ErrorCode.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=25, cap=15)
    assert (error.code, error.reason, error.field, error.data) == (
        ErrorCode.CAP_EXCEEDED,
        Reason.OVER_CAP,
        "quantity",
        {"balance": 25, "cap": 15},
    )
    assert str(error) == "CAP_EXCEEDED/OVER_CAP on quantity {'balance': 25, 'cap': 15}"


def test_every_error_code_value_is_its_name() -> None:
    assert all(code.value == code.name for code in ErrorCode)


def test_the_default_prices_are_the_specs_in_cents_of_usd() -> None:
    prices = {
        plan.value: (policy.monthly_price, policy.credit_price)
        for plan, policy in DEFAULT_PLAN_TABLE.policies.items()
    }
    assert prices == {
        "BASIC": (Money(0, "USD"), None),
        "PREMIUM_CAREER": (Money(2999, "USD"), Money(1000, "USD")),
        "PREMIUM_BUSINESS": (Money(5999, "USD"), Money(1000, "USD")),
        "SALES_NAVIGATOR": (Money(9999, "USD"), None),
        "RECRUITER_LITE": (Money(17000, "USD"), None),
        "LEGACY_PREMIUM": (Money(2999, "USD"), Money(1000, "USD")),
    }


def test_an_operator_can_reprice_a_plan_and_its_credits() -> None:
    table = plan_table_from_overrides(
        {
            "PREMIUM_CAREER": {
                "monthlyPrice": {"amount": 3499, "currency": "USD"},
                "creditPrice": {"amount": 1250, "currency": "EUR"},
            },
            "SALES_NAVIGATOR": {
                "canPurchaseCredits": True,
                "creditPrice": {"amount": 900, "currency": "USD"},
            },
        }
    )
    career = table.policy(PlanType.PREMIUM_CAREER)
    assert (career.monthly_price, career.credit_price) == (
        Money(3499, "USD"),
        Money(1250, "EUR"),
    )
    assert table.policy(PlanType.SALES_NAVIGATOR).credit_price == Money(900, "USD")
    assert table.policy(PlanType.PREMIUM_BUSINESS).monthly_price == Money(5999, "USD")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"PREMIUM_CAREER": {"monthlyPrice": 29.99}}, "monthlyPrice"),
        ({"PREMIUM_CAREER": {"monthlyPrice": {"amount": 29.99, "currency": "USD"}}}, "integer"),
        ({"PREMIUM_CAREER": {"monthlyPrice": {"amount": -1, "currency": "USD"}}}, "0 to"),
        ({"PREMIUM_CAREER": {"monthlyPrice": {"amount": 100, "currency": "usd"}}}, "ISO 4217"),
        ({"PREMIUM_CAREER": {"creditPrice": None}}, "no creditPrice"),
        ({"SALES_NAVIGATOR": {"canPurchaseCredits": True}}, "no creditPrice"),
    ],
)
def test_a_malformed_price_is_refused_with_a_message_naming_it(
    override: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_table_from_overrides(override)


def test_money_is_never_a_float_and_reads_as_its_currency() -> None:
    with pytest.raises(ValueError, match="integer"):
        Money(29.99, "USD")  # type: ignore[arg-type]
    assert str(Money(17000, "USD")) == "USD 170.00"
    assert Money(1000, "USD").times(3) == Money(3000, "USD")


def test_a_price_of_nothing_is_basic_s_alone() -> None:
    """A charge of nothing would grant a plan or credits for nothing: a paid plan's price is at
    least one minor unit, while BASIC, never charged for, stays at 0."""
    free = {"amount": 0, "currency": "USD"}
    table = plan_table_from_overrides({"BASIC": {"monthlyPrice": free}})
    assert table.policy(PlanType.BASIC).monthly_price == Money(0, "USD")
    cheapest = {"amount": 1, "currency": "USD"}
    table = plan_table_from_overrides(
        {"PREMIUM_CAREER": {"monthlyPrice": cheapest, "creditPrice": cheapest}}
    )
    assert table.policy(PlanType.PREMIUM_CAREER).credit_price == Money(1, "USD")
    assert table.policy(PlanType.PREMIUM_CAREER).monthly_price == Money(1, "USD")
