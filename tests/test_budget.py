"""Tests for aoai_helpers.analysis.budget: budget burn against the BU map's budgets, and the split of a
fixed amount by token share (exact to the cent).

The budget database holds hand-made November 2026 events at the default rates (USD per 1M:
gpt-4o 2.50 / cached 1.25 / 10.00, gpt-4.1-mini 0.40 / 1.60); the expected figures are worked
out by hand in the comments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from usage_events import HELLO, usage

from aoai_helpers.analysis.budget import Allocation, allocate, budget_burn, parse_amount
from aoai_helpers.analysis.report import BuCharge
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.exceptions import ConfigError

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

REL = 1e-12


@pytest.fixture
def billed(engine, make_v2, ingest_events):
    """Finance (sub-a, sub-b) and the unmapped legal-review (sub-c) in November 2026."""
    with transaction(engine) as conn:
        set_bu(conn, [BusinessUnit("sub-a", "Finance"), BusinessUnit("sub-b", "Finance")])
    a = {"SubscriptionId": "sub-a", "SubscriptionName": "fin-a"}
    b = {"SubscriptionId": "sub-b", "SubscriptionName": "fin-b"}
    c = {"SubscriptionId": "sub-c", "SubscriptionName": "legal-review"}
    ingest_events(
        engine,
        make_v2(**a, ExecTimeUTC="2026-11-01T00:00:00Z", Usage=usage(1000, 200)),  # 0.0045
        make_v2(**a, ExecTimeUTC="2026-11-10T12:00:00Z", Usage=usage(2000, 100, 1024)),  # 0.00472
        make_v2(  # 0.0002 + 0.0008
            **b,
            ExecTimeUTC="2026-11-15T09:00:00Z",
            Model="gpt-4.1-mini-2025-04-14",
            Usage=usage(500, 500),
        ),
        make_v2(**b, ExecTimeUTC="2026-11-16T09:00:00Z", Model="my-finetune", Usage=usage(10, 10)),
        make_v2(  # prompt only: 8 * 2.5e-6
            **b, ExecTimeUTC="2026-11-17T09:00:00Z", IsStreaming=True, Usage=None, Request=HELLO
        ),
        make_v2(**c, ExecTimeUTC="2026-11-30T23:59:59Z", Usage=usage(100, 50)),  # 0.00075
    )
    return engine


def _budgets(engine, **budgets):
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", "fin-a", "CC-1", budgets.get("a")),
                BusinessUnit("sub-b", "Finance", "fin-b", "CC-1", budgets.get("b")),
                BusinessUnit("sub-z", "Ops", None, "CC-9", budgets.get("z")),
            ],
        )


FINANCE_NOV = 0.01024  # 0.0045 + 0.00472 + 0.001 + 0.00002 (the unpriced call adds nothing)


@pytest.mark.parametrize(
    ("budget_a", "budget_b", "status"),
    [
        (0.004, 0.002, "over"),  # 0.006 < month to date
        (0.012, None, "at risk"),  # not yet, but the projection (2x) is over
        (0.03, 0.02, "on track"),
    ],
)
def test_budget_burn_mid_month(billed, budget_a, budget_b, status):
    _budgets(billed, a=budget_a, b=budget_b, z=1.0)
    half = datetime(2026, 11, 16)  # 15 of 30 days elapsed
    burn = {b.business_unit: b for b in budget_burn(billed, "2026-11", as_of=half)}
    finance = burn["Finance"]
    budget = budget_a + (budget_b or 0.0)  # the sum over the BU's subscriptions that have one
    assert finance.budget == pytest.approx(budget, rel=REL)
    assert finance.elapsed == pytest.approx(0.5)
    assert finance.cost == pytest.approx(FINANCE_NOV, rel=REL)
    assert finance.projected == pytest.approx(2 * FINANCE_NOV, rel=REL)
    assert finance.used == pytest.approx(FINANCE_NOV / budget, rel=REL)
    assert finance.projected_used == pytest.approx(2 * FINANCE_NOV / budget, rel=REL)
    assert (finance.status, finance.cost_centre, finance.unpriced_calls) == (status, "CC-1", 1)
    # a budgeted BU without calls is listed; an unmapped BU has no budget
    ops = burn["Ops"]
    assert (ops.cost, ops.budget, ops.used, ops.status, ops.currency) == (
        0.0,
        1.0,
        0.0,
        "on track",
        None,
    )
    legal = burn["legal-review"]
    assert (legal.budget, legal.used, legal.projected_used, legal.status) == (
        None,
        None,
        None,
        "no budget",
    )
    assert list(burn) == ["Finance", "legal-review", "Ops"]  # most cost first
    assert burn["legal-review"].cost == pytest.approx(0.00075, rel=REL)


def test_budget_burn_closed_month_and_timezones(billed):
    _budgets(billed, a=0.02)
    for as_of in (
        datetime(2026, 12, 1),
        datetime(2027, 3, 1),
        datetime(2026, 12, 1, 1, tzinfo=UTC),
        datetime(2026, 10, 20),  # before the month: nothing elapsed, nothing to project
    ):
        (finance,) = [b for b in budget_burn(billed, "2026-11", as_of=as_of) if b.budget]
        assert finance.projected == finance.cost
    # an aware time is converted to UTC: 2026-11-16 01:00+01:00 is midnight UTC
    aware = datetime(2026, 11, 16, 1, tzinfo=timezone(timedelta(hours=1)))
    (finance,) = [b for b in budget_burn(billed, "2026-11", as_of=aware) if b.budget]
    assert finance.elapsed == pytest.approx(0.5)


def test_budget_burn_no_budgets_at_all(billed):
    assert {b.status for b in budget_burn(billed, "2026-11")} == {"no budget"}
    assert budget_burn(billed, "2026-09") == []


# ----------------------------------------------------------------------------- allocation


def charge(bu: str, tokens: int, calls: int = 1) -> BuCharge:
    return BuCharge(bu, None, calls, tokens, 0, tokens, 0.0, "USD", 0.0, 0, 0)


def test_allocate_by_token_share():
    rows = [charge("Finance", 600), charge("Legal", 300), charge("R&D", 100)]
    assert allocate("1000", rows) == [
        Allocation("Finance", 600, 0.6, Decimal("600.00")),
        Allocation("Legal", 300, 0.3, Decimal("300.00")),
        Allocation("R&D", 100, 0.1, Decimal("100.00")),
    ]


def test_allocate_largest_remainder_to_the_cent():
    thirds = allocate(Decimal("100"), [charge("C", 1), charge("A", 1), charge("B", 1)])
    # 33.333… each: the one spare cent goes to the first by name among equal remainders
    assert [(a.business_unit, a.amount) for a in thirds] == [
        ("C", Decimal("33.33")),
        ("A", Decimal("33.34")),
        ("B", Decimal("33.33")),
    ]
    # 10.00 over 1/2/4 tokens: quotas 1.428…, 2.857…, 5.714…; largest remainders get the cents
    parts = allocate(10, [charge("x", 1), charge("y", 2), charge("z", 4)])
    assert [a.amount for a in parts] == [Decimal("1.43"), Decimal("2.86"), Decimal("5.71")]
    assert sum(a.amount for a in parts) == Decimal("10.00")
    by_calls = allocate("9", [charge("x", 1, calls=2), charge("y", 100, calls=1)], basis="calls")
    assert [a.amount for a in by_calls] == [Decimal("6.00"), Decimal("3.00")]


@given(
    cents=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=12),
)
def test_allocate_always_sums_exactly(cents, weights):
    if not any(weights):
        weights[0] = 1
    rows = [charge(f"bu{i}", w) for i, w in enumerate(weights)]
    amount = Decimal(cents).scaleb(-2)
    parts = allocate(amount, rows)
    assert sum(a.amount for a in parts) == amount
    total = sum(weights)
    for a, w in zip(parts, weights, strict=True):
        exact = Decimal(cents) * w / total  # in cents
        assert abs(a.amount.scaleb(2) - exact) < 1  # never more than a cent off its share
        assert a.amount >= 0


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-1", "non-negative"),
        ("12.345", "more than 2 decimal places"),
        ("abc", "not an amount"),
        ("nan", "non-negative"),
        ("inf", "non-negative"),
    ],
)
def test_allocate_rejects_bad_amounts(amount, message):
    with pytest.raises(ConfigError, match=message):
        allocate(amount, [charge("x", 1)])


def test_allocate_edge_cases():
    assert parse_amount("12,000.50") == Decimal("12000.50")
    assert allocate("0", []) == []
    assert allocate("0", [charge("x", 0)]) == [Allocation("x", 0, 0.0, Decimal("0.00"))]
    with pytest.raises(ConfigError, match="no total tokens"):
        allocate("10", [charge("x", 0)])
    with pytest.raises(ConfigError, match="no total tokens"):
        allocate("10", [])
