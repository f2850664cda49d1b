"""Tests for aoai_helpers.analysis.report (chargeback in SQL), the ``report`` CLI and the bundled demo.

The chargeback database holds hand-made events over two months and three subscriptions:
two mapped to the same business unit, one unmapped (billed under its subscription name).
Prices are the default rates (USD per 1M: gpt-4o 2.50 / cached 1.25 / 10.00,
gpt-4.1-mini 0.40 / 1.60). Every expected figure below is worked out by hand from those
events and prices (the comments show the arithmetic), not by another query.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

import pytest
from cli_run import run_cli
from sqlalchemy import func, select
from usage_events import HELLO, usage

from aoai_helpers.analysis.report import (
    MIXED,
    NO_SUBSCRIPTION,
    BuCharge,
    DailyUsage,
    ModelUsage,
    SubscriptionUsage,
    UserUsage,
    chargeback_by_bu,
    daily_trend,
    latest_month,
    month_bounds,
    top_subscriptions,
    top_users,
    unpriced_models,
    usage_by_model,
)
from aoai_helpers.analysis.text import money_totals, render_table
from aoai_helpers.core.pricing import Rate
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import dead_letter, token_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.pipeline.reprice import set_rates
from aoai_helpers.pipeline.service import sample_path
from aoai_helpers.synthetic.demo import run_demo

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

REL = 1e-12


def sub(sid: str, name: str | None) -> dict[str, str | None]:
    return {"SubscriptionId": sid, "SubscriptionName": name}


SUB_A, SUB_B, SUB_C = sub("sub-a", "fin-a"), sub("sub-b", "fin-b"), sub("sub-c", "legal-review")


# ----------------------------------------------------------------------------- month_bounds


@pytest.mark.parametrize(
    ("month", "bounds"),
    [
        ("2026-11", (datetime(2026, 11, 1), datetime(2026, 12, 1))),
        ("2026-12", (datetime(2026, 12, 1), datetime(2027, 1, 1))),
        ("2026-01", (datetime(2026, 1, 1), datetime(2026, 2, 1))),
        ("2024-02", (datetime(2024, 2, 1), datetime(2024, 3, 1))),
        (" 2026-11 ", (datetime(2026, 11, 1), datetime(2026, 12, 1))),
    ],
)
def test_month_bounds(month, bounds):
    assert month_bounds(month) == bounds


@pytest.mark.parametrize(
    "month", ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "", "2026-11-01", "Nov 2026"]
)
def test_month_bounds_rejects_bad_months(month):
    with pytest.raises(ConfigError, match="month must look like 2026-11"):
        month_bounds(month)


# ----------------------------------------------------------------------------- chargeback


@pytest.fixture
def billed(engine, make_v2, ingest_events):
    """The default-rated database with the two-month, three-subscription event set."""
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", "fin-a", "CC-1"),
                BusinessUnit("sub-b", "Finance", "fin-b", "CC-1"),
            ],
        )
    events = [
        # --- November 2026
        make_v2(**SUB_A, ExecTimeUTC="2026-11-01T00:00:00.000Z", Usage=usage(1000, 200)),
        make_v2(**SUB_A, ExecTimeUTC="2026-11-10T12:00:00.000Z", Usage=usage(2000, 100, 1024)),
        make_v2(
            **SUB_B,
            ExecTimeUTC="2026-11-15T09:00:00.000Z",
            DeploymentName="gpt-4.1-mini",
            Model="gpt-4.1-mini-2025-04-14",
            Usage=usage(500, 500),
        ),
        make_v2(  # a model with no rate: unpriced
            **SUB_B,
            ExecTimeUTC="2026-11-16T09:00:00.000Z",
            Model="my-finetune",
            Usage=usage(10, 10),
        ),
        make_v2(  # usage not reported: prompt counted from the request
            **SUB_B,
            ExecTimeUTC="2026-11-17T09:00:00.000Z",
            IsStreaming=True,
            Usage=None,
            Request=HELLO,
        ),
        make_v2(**SUB_C, ExecTimeUTC="2026-11-30T23:59:59.999Z", Usage=usage(100, 50)),
        make_v2(  # throttled: a call, never billed
            **SUB_C, ExecTimeUTC="2026-11-20T10:00:00.000Z", StatusCode=429, Usage=None
        ),
        # --- October 2026
        make_v2(**SUB_A, ExecTimeUTC="2026-10-31T23:59:59.999Z", Usage=usage(100, 50)),
        make_v2(**SUB_C, ExecTimeUTC="2026-10-15T08:00:00.000Z", Usage=usage(1000, 200)),
    ]
    result = ingest_events(engine, *events)
    assert (result.stored, result.unpriced, result.prompt_only, result.dead_lettered) == (
        9,
        1,
        1,
        0,
    )
    return engine


def test_chargeback_november(billed):
    charges = chargeback_by_bu(billed, "2026-11")
    assert charges == [
        BuCharge(
            business_unit="Finance",
            cost_centre="CC-1",
            calls=5,
            prompt_tokens=1000 + 2000 + 500 + 10 + 8,
            completion_tokens=200 + 100 + 500 + 10,
            total_tokens=1200 + 2100 + 1000 + 20 + 8,
            # 0.0045 (1000/200) + 0.00472 (2000/100, 1024 cached) + 0.001 (4.1-mini 500/500)
            # + 0 (unpriced) + 0.00002 (8 prompt-only tokens)
            cost=pytest.approx(0.01024, rel=REL),
            currency="USD",
            estimated_cost=pytest.approx(0.00002, rel=REL),
            unpriced_calls=1,
            estimated_calls=1,
        ),
        BuCharge(
            business_unit="legal-review",  # unmapped: falls back to the subscription name
            cost_centre=None,
            calls=2,
            prompt_tokens=100,
            completion_tokens=50,
            total_tokens=150,
            cost=pytest.approx(0.00075, rel=REL),
            currency="USD",
            estimated_cost=0.0,
            unpriced_calls=0,
            estimated_calls=0,
        ),
    ]


def test_chargeback_october_excludes_november(billed):
    charges = chargeback_by_bu(billed, "2026-10")
    assert [(c.business_unit, c.calls, c.total_tokens, c.cost) for c in charges] == [
        ("legal-review", 1, 1200, pytest.approx(0.0045, rel=REL)),
        ("Finance", 1, 150, pytest.approx(0.00075, rel=REL)),
    ]


def test_chargeback_empty_month(billed):
    assert chargeback_by_bu(billed, "2026-09") == []
    assert chargeback_by_bu(billed, "2026-12") == []


def test_chargeback_bad_month(billed):
    with pytest.raises(ConfigError):
        chargeback_by_bu(billed, "2026-13")


def test_chargeback_fallback_to_subscription_id(engine, make_v2, ingest_events):
    ingest_events(
        engine,
        make_v2(SubscriptionId="sub-x", SubscriptionName=None),
        make_v2(SubscriptionId=None, SubscriptionName=None),
    )
    charges = chargeback_by_bu(engine, "2026-11")
    assert sorted((c.business_unit, c.calls) for c in charges) == [
        ("(no subscription)", 1),
        ("sub-x", 1),
    ]


def test_chargeback_mixed_currency(empty_engine, make_v2, ingest_events):
    with transaction(empty_engine) as conn:
        set_rates(
            conn,
            [
                Rate("gpt-4o", 2.5e-6, 1e-5, currency="USD"),
                Rate("gpt-4.1-mini", 4e-7, 1.6e-6, currency="EUR"),
            ],
        )
    ingest_events(empty_engine, make_v2(), make_v2(Model="gpt-4.1-mini"))
    (charge,) = chargeback_by_bu(empty_engine, "2026-11")
    assert charge.currency == "MIXED"
    assert charge.calls == 2


def test_latest_month(engine, make_v2, ingest_events, monkeypatch):
    monkeypatch.setenv("AOAI_NOW", "2027-01-15T00:00:00Z")  # the default: up to now
    assert latest_month(engine) is None
    ingest_events(engine, make_v2(ExecTimeUTC="2026-10-15T08:00:00.000Z"))
    assert latest_month(engine) == "2026-10"
    ingest_events(engine, make_v2(ExecTimeUTC="2026-12-31T23:59:59.999Z"))
    ingest_events(engine, make_v2(ExecTimeUTC="2026-11-15T08:00:00.000Z"))
    assert latest_month(engine) == "2026-12"


def test_render_table(billed):
    text = render_table(chargeback_by_bu(billed, "2026-11"), "2026-11")
    lines = text.splitlines()
    assert lines[0].startswith("Chargeback 2026-11")
    assert lines[1].split()[:2] == ["Business", "unit"]
    finance = next(line for line in lines if line.startswith("Finance"))
    # cost, the exact part, the provisional part (the prompt-only call: 8 * 2.5e-6), currency,
    # in cents: 0.01024 + 0.00075 = 0.01099 → 0.01, by largest remainder Finance 0.01 (1.024
    # cents), legal-review 0.00 (0.075 cents); Finance's 0.01 is all exact (0.00002 provisional)
    assert finance.split() == [
        *("Finance", "CC-1", "5", "3,518", "810"),
        *("0.01", "0.01", "0.00", "USD", "1"),
    ]
    legal = next(line for line in lines if line.startswith("legal-review"))
    assert legal.split() == [
        *("legal-review", "-", "2", "100", "50"),
        *("0.00", "0.00", "-", "USD", "-"),
    ]
    assert lines[-1] == (
        "Total: 0.01 USD (0.00 USD of it provisional); 1 unpriced call(s) — add their rates: "
        "python -m aoai_helpers rates set MODEL --input … --output …"
    )
    with_models = render_table(
        chargeback_by_bu(billed, "2026-11"), "2026-11", unpriced_models(billed, "2026-11")
    )
    assert with_models.splitlines()[-1].startswith("Unpriced models: ")
    assert with_models.splitlines()[-1].endswith("(1 calls)")


def test_render_table_empty():
    text = render_table([], "2026-09")
    assert "(no calls in this month)" in text
    assert "Total" not in text


HOSTILE_NAMES = [
    '=HYPERLINK("http://x")',
    "\r=cmd",
    "\x1b[31mred\x1b[0m",
    "abc\u202edef",
    "a\nb",
    "Fin\x1b]8;;http://evil\x07ance",
]


def test_render_table_escapes_names_and_aligns_on_the_escaped_text():
    rows = [
        BuCharge(name, "CC\n9", 1, 10, 5, 15, 0.5, "US\x1bD", 0.0, 0, 0) for name in HOSTILE_NAMES
    ]
    text = render_table(rows, "2026-11", [("gpt\u202e-x\n", 2)])
    lines = text.split("\n")  # a name cannot add a line
    assert len(lines) == 3 + len(rows) + 2  # title, header, rule, rows, total, unpriced models
    assert not any(ch in text for ch in "\x1b\x07\r\u202e")
    body = lines[3 : 3 + len(rows)]
    assert body[0].startswith('=HYPERLINK("http://x")')
    assert body[1].startswith("\\r=cmd ")
    assert body[2].startswith("\\x1b[31mred\\x1b[0m ")
    assert body[3].startswith("abc\\u202edef ")
    assert body[4].startswith("a\\nb ")
    assert all("CC\\n9" in line and "US\\x1bD" in line for line in body)
    # every column lines up: widths are those of the escaped text
    rule = lines[2]
    starts = [i for i in range(len(rule)) if rule[i] == "-" and (i == 0 or rule[i - 1] == " ")]
    for line in [lines[1], *body]:
        assert len(line) == len(rule), line
        assert all(line[i - 2 : i] == "  " for i in starts[1:]), line
    assert lines[-2].startswith("Total: 3.00 US\\x1bD")
    assert lines[-1] == "Unpriced models: gpt\\u202e-x\\n (2 calls)"


def _bu(name: str, cost: float, currency: str | None, *, calls: int = 2, unpriced: int = 0):
    return BuCharge(name, None, calls, 10, 5, 15, cost, currency, 0.0, unpriced, 0)


def _cost_column(text: str) -> dict[str, str]:
    body = text.splitlines()[3:-1]
    return {line.split()[0]: line.split()[5] for line in body}


def test_render_table_rounds_parts_that_add_up_to_the_total():
    """Three BUs at half a cent: each rounded on its own would be 0.01 (total 0.03), but the
    month is 0.015 → 0.02: largest remainder gives 0.01, 0.01 and 0.00 (ties: first first)."""
    rows = [_bu("A", 0.005, "USD"), _bu("B", 0.005, "USD"), _bu("C", 0.005, "USD")]
    text = render_table(rows, "2026-11")
    costs = _cost_column(text)
    assert costs == {"A": "0.01", "B": "0.01", "C": "0.00"}
    assert text.splitlines()[-1] == "Total: 0.02 USD"
    assert sum(Decimal(v) for v in costs.values()) == Decimal("0.02")


def test_render_table_unpriced_is_a_word_and_currencies_are_never_added():
    rows = [
        _bu("Tokyo", 1234.5, "JPY"),
        _bu("Paris", 10.004, "USD"),
        _bu("Lab", 0.0, None, calls=3, unpriced=3),  # no priced call at all
        _bu("Ops", 2.5, "USD", calls=4, unpriced=1),  # some priced, some not
        _bu("Mix", 7.0, MIXED),
    ]
    text = render_table(rows, "2026-11", [("my-ft", 4)])
    lines = text.splitlines()
    assert "0.0000" not in text
    lab = next(line for line in lines if line.startswith("Lab"))
    assert lab.split()[5:] == ["unpriced", "-", "-", "-", "3"]
    assert not re.search(r"\b0\.00\b|\b0\b", " ".join(lab.split()[5:]))  # never 0
    ops = next(line for line in lines if line.startswith("Ops"))
    assert ops.split()[5:] == ["2.50", "2.50", "-", "USD", "1"]  # priced part + the count
    tokyo = next(line for line in lines if line.startswith("Tokyo"))
    assert tokyo.split()[5:7] == ["1,235", "1,235"]  # JPY: no minor unit (half up)
    mix = next(line for line in lines if line.startswith("Mix"))
    assert mix.split()[5] == "mixed"  # not a sum of two currencies
    assert money_totals(rows) == {"JPY": Decimal("1235"), "USD": Decimal("12.50")}
    assert lines[-2] == (
        "Total: 1,235 JPY, 12.50 USD; 1 BU(s) priced in several currencies, not totalled "
        "(MIXED): Mix; 4 unpriced call(s) — add their rates: "
        "python -m aoai_helpers rates set MODEL --input … --output …"
    )
    # text columns start at the column, numbers end at it
    columns = lines[2].split("  ")
    end_cost = sum(len(c) + 2 for c in columns[:5]) + len(columns[5])
    assert all(line[end_cost - 1] != " " for line in lines[3:8])
    assert all(line[0] != " " for line in lines[3:8])


# ----------------------------------------------------------------------------- the demo


def test_run_demo_counts_and_is_idempotent(engine):
    lines = [
        line
        for line in sample_path("sample_events.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    first = run_demo(engine)
    assert first.ingest.received == len(lines) == 313
    assert first.ingest.dead_lettered == 1  # the line cut at 200 KB
    assert first.ingest.duplicates == 1  # the redelivered event
    assert first.ingest.stored == len(lines) - 2
    assert first.month == "2026-11"
    assert {c.business_unit for c in first.charges} == {"Finance", "Marketing", "R&D", "Legal"}
    assert sum(c.calls for c in first.charges) == first.ingest.stored
    with transaction(engine) as conn:
        stored = conn.execute(select(func.count()).select_from(token_table)).scalar()
        (reason,) = conn.execute(select(dead_letter.c.Reason)).scalars().all()
    assert stored == first.ingest.stored
    assert "truncated" in reason

    second = run_demo(engine)
    assert second.ingest.received == len(lines)
    assert second.ingest.stored == 0
    assert second.ingest.duplicates == len(lines) - 1
    assert second.schema_changes == []
    with transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(token_table)).scalar() == stored
        assert conn.execute(select(func.count()).select_from(dead_letter)).scalar() == 1
    assert second.charges == first.charges


# ----------------------------------------------------------------------------- by model


# Per-call costs of the November events of ``billed`` (default rates, USD):
#   A1 sub-a gpt-4o 1000/200            0.0025 + 0.002                       = 0.0045
#   A2 sub-a gpt-4o 2000/100, 1024 cached  976*2.5e-6 + 1024*1.25e-6 + 0.001 = 0.00472
#   B1 sub-b gpt-4.1-mini 500/500       0.0002 + 0.0008                      = 0.001
#   B2 sub-b my-finetune 10/10          unpriced
#   B3 sub-b gpt-4o 8 prompt-only       8 * 2.5e-6                           = 0.00002
#   C1 sub-c gpt-4o 100/50              0.00025 + 0.0005                     = 0.00075
#   C2 sub-c 429                        unbilled: 0 tokens, cost 0, no currency


def test_usage_by_model(billed):
    rows = usage_by_model(billed, "2026-11")
    assert rows == [
        ModelUsage(
            business_unit="Finance",
            model="gpt-4o",
            deployment="gpt-4o",
            calls=3,  # A1, A2, B3
            prompt_tokens=1000 + 2000 + 8,
            completion_tokens=200 + 100,
            cached_tokens=1024,
            total_tokens=1200 + 2100 + 8,
            cost=pytest.approx(0.0045 + 0.00472 + 0.00002, rel=REL),
            currency="USD",
            estimated_cost=pytest.approx(0.00002, rel=REL),
            estimated_calls=1,
            unpriced_calls=0,
        ),
        ModelUsage(
            business_unit="Finance",
            model="gpt-4.1-mini",
            deployment="gpt-4.1-mini",
            calls=1,
            prompt_tokens=500,
            completion_tokens=500,
            cached_tokens=0,
            total_tokens=1000,
            cost=pytest.approx(0.001, rel=REL),
            currency="USD",
            estimated_cost=0.0,
            estimated_calls=0,
            unpriced_calls=0,
        ),
        ModelUsage(  # unpriced: no cost at all (not 0), counted
            business_unit="Finance",
            model="my-finetune",
            deployment="gpt-4o",
            calls=1,
            prompt_tokens=10,
            completion_tokens=10,
            cached_tokens=0,
            total_tokens=20,
            cost=None,
            currency=None,
            estimated_cost=0.0,
            estimated_calls=0,
            unpriced_calls=1,
        ),
        ModelUsage(
            business_unit="legal-review",
            model="gpt-4o",
            deployment="gpt-4o",
            calls=2,  # C1 and the throttled C2
            prompt_tokens=100,
            completion_tokens=50,
            cached_tokens=0,
            total_tokens=150,
            cost=pytest.approx(0.00075, rel=REL),
            currency="USD",
            estimated_cost=0.0,
            estimated_calls=0,
            unpriced_calls=0,
        ),
    ]
    assert rows[0].estimated_share == pytest.approx(0.00002 / 0.00924, rel=REL)
    assert rows[2].estimated_share == 0.0
    assert usage_by_model(billed, "2026-11", bu="legal-review") == rows[3:]
    assert usage_by_model(billed, "2026-09") == []


def test_usage_by_model_sums_to_chargeback(billed):
    for month in ("2026-10", "2026-11"):
        charges = {c.business_unit: c for c in chargeback_by_bu(billed, month)}
        models = usage_by_model(billed, month)
        for bu, charge in charges.items():
            mine = [m for m in models if m.business_unit == bu]
            assert sum(m.calls for m in mine) == charge.calls
            assert sum(m.total_tokens for m in mine) == charge.total_tokens
            assert sum(m.cost or 0.0 for m in mine) == pytest.approx(charge.cost, rel=REL)
            assert sum(m.unpriced_calls for m in mine) == charge.unpriced_calls


# ----------------------------------------------------------------------------- daily


def test_daily_trend(billed):
    def day(d: int, bu: str, calls: int, tokens: tuple[int, int], cost, currency="USD", unpriced=0):
        return DailyUsage(
            day=date(2026, 11, d),
            business_unit=bu,
            calls=calls,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            total_tokens=sum(tokens),
            cost=cost if cost is None else pytest.approx(cost, rel=REL),
            currency=currency,
            unpriced_calls=unpriced,
        )

    assert daily_trend(billed, "2026-11") == [
        day(1, "Finance", 1, (1000, 200), 0.0045),  # 00:00:00 is the 1st, not October
        day(10, "Finance", 1, (2000, 100), 0.00472),
        day(15, "Finance", 1, (500, 500), 0.001),
        day(16, "Finance", 1, (10, 10), None, None, 1),
        day(17, "Finance", 1, (8, 0), 0.00002),
        day(20, "legal-review", 1, (0, 0), 0.0, None),  # unbilled: costs 0, no currency
        day(30, "legal-review", 1, (100, 50), 0.00075),  # 23:59:59.999 is still the 30th
    ]
    assert [d.day for d in daily_trend(billed, "2026-11", bu="legal-review")] == [
        date(2026, 11, 20),
        date(2026, 11, 30),
    ]
    (october,) = [d for d in daily_trend(billed, "2026-10") if d.business_unit == "Finance"]
    assert october.day == date(2026, 10, 31)


# ----------------------------------------------------------------------------- top lists


def test_top_subscriptions(billed):
    def row(sid, name, bu, calls, total, cost):
        return SubscriptionUsage(
            sid, name, bu, calls, total, pytest.approx(cost, rel=REL), "USD", int(sid == "sub-b")
        )

    a = row("sub-a", "fin-a", "Finance", 2, 3300, 0.0045 + 0.00472)
    b = row("sub-b", "fin-b", "Finance", 3, 1028, 0.001 + 0.00002)
    c = row("sub-c", "legal-review", "legal-review", 2, 150, 0.00075)
    assert top_subscriptions(billed, "2026-11") == [a, b, c]
    assert top_subscriptions(billed, "2026-11", limit=2) == [a, b]
    assert top_subscriptions(billed, "2026-11", limit=1, per_bu=True) == [a, c]
    assert top_subscriptions(billed, "2026-11", bu="Finance", limit=5) == [a, b]
    with pytest.raises(ConfigError, match="limit"):
        top_subscriptions(billed, "2026-11", limit=0)


@pytest.fixture
def users(engine, make_v2, ingest_events):
    """Four users over two BUs; Bob also calls from the other BU's subscription."""
    with transaction(engine) as conn:
        set_bu(conn, [BusinessUnit("sub-a", "Finance"), BusinessUnit("sub-c", "Legal")])

    def call(sub, user, prompt, completion, model=None):
        extra = {"Model": model} if model else {}
        return make_v2(
            SubscriptionId=sub,
            UserName=user,
            UserEmail=f"{user.lower()}@example.com",
            Usage=usage(prompt, completion),
            **extra,
        )

    ingest_events(
        engine,
        call("sub-a", "Ann", 1000, 1000),  # 0.0025 + 0.01 = 0.0125
        call("sub-a", "Ann", 1000, 0),  # 0.0025
        call("sub-a", "Bob", 4000, 0),  # 0.01
        call("sub-a", "Cid", 9999, 9999, "my-finetune"),  # unpriced: most tokens, no cost
        call("sub-c", "Bob", 100, 0),  # 0.00025
        call("sub-c", "Dee", 200, 0),  # 0.0005
    )
    return engine


def test_top_users(users):
    def row(name, bu, calls, total, cost, unpriced=0):
        return UserUsage(
            name,
            f"{name.lower()}@example.com",
            bu,
            calls,
            total,
            None if cost is None else pytest.approx(cost, rel=REL),
            None if cost is None else "USD",
            unpriced,
        )

    ann = row("Ann", "Finance", 2, 3000, 0.015)
    bob_fin = row("Bob", "Finance", 1, 4000, 0.01)
    cid = row("Cid", "Finance", 1, 19998, None, 1)
    dee = row("Dee", "Legal", 1, 200, 0.0005)
    bob_legal = row("Bob", "Legal", 1, 100, 0.00025)
    # by cost, then tokens: an unpriced user ranks after the priced ones
    assert top_users(users, "2026-11") == [ann, bob_fin, dee, bob_legal, cid]
    assert top_users(users, "2026-11", limit=2) == [ann, bob_fin]
    assert top_users(users, "2026-11", limit=1, per_bu=True) == [ann, dee]
    assert top_users(users, "2026-11", bu="Legal") == [dee, bob_legal]
    assert top_users(users, "2026-12") == []


# ----------------------------------------------------------------------------- edge cases


def test_fallback_and_big_sums(engine, make_v2, ingest_events):
    """No subscription at all → its own BU; token sums past 2**31 do not overflow."""
    big = usage(2_000_000_000, 0)
    ingest_events(
        engine,
        make_v2(SubscriptionId=None, SubscriptionName=None, Usage=big, Model="my-finetune"),
        make_v2(SubscriptionId=None, SubscriptionName=None, Usage=big, Model="my-finetune"),
        make_v2(SubscriptionId="sub-x", SubscriptionName=None),
    )
    (none,) = chargeback_by_bu(engine, "2026-11", bu=NO_SUBSCRIPTION)
    assert (none.calls, none.total_tokens, none.cost, none.unpriced_calls) == (2, 4e9, 0.0, 2)
    assert {m.business_unit for m in usage_by_model(engine, "2026-11")} == {
        NO_SUBSCRIPTION,
        "sub-x",
    }
    (day_none,) = [d for d in daily_trend(engine, "2026-11") if d.business_unit == NO_SUBSCRIPTION]
    assert (day_none.total_tokens, day_none.cost) == (4_000_000_000, None)
    assert unpriced_models(engine, "2026-11") == [("my-finetune", 2)]


def test_mixed_currency_within_a_model(empty_engine, make_v2, ingest_events):
    """gpt-4o in USD until the 10th, in EUR after: the model's month is MIXED, each day is not."""
    with transaction(empty_engine) as conn:
        set_rates(
            conn,
            [
                Rate("gpt-4o", 1e-6, 1e-6, currency="USD", effective_to=datetime(2026, 11, 10)),
                Rate("gpt-4o", 2e-6, 2e-6, currency="EUR", effective_from=datetime(2026, 11, 10)),
            ],
        )
    ingest_events(
        empty_engine,
        make_v2(ExecTimeUTC="2026-11-09T10:00:00Z", Usage=usage(100, 0)),
        make_v2(ExecTimeUTC="2026-11-11T10:00:00Z", Usage=usage(100, 0)),
    )
    (model,) = usage_by_model(empty_engine, "2026-11")
    assert (model.currency, model.cost) == (MIXED, pytest.approx(100e-6 + 200e-6, rel=REL))
    assert [(d.currency, d.cost) for d in daily_trend(empty_engine, "2026-11")] == [
        ("USD", pytest.approx(100e-6, rel=REL)),
        ("EUR", pytest.approx(200e-6, rel=REL)),
    ]
    (sub,) = top_subscriptions(empty_engine, "2026-11")
    assert sub.currency == MIXED


# ----------------------------------------------------------------------------- the CLI


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_cli_report_issue_allocate_and_files(billed, tmp_path):
    xlsx, csv_file = tmp_path / "out" / "nov.xlsx", tmp_path / "out" / "nov.csv"
    done = run_cli(
        "report",
        "--month",
        "2026-11",
        "--db",
        _url(billed),
        "--issue",
        "--allocate",
        "100",
        "--xlsx",
        str(xlsx),
        "--csv",
        str(csv_file),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("Chargeback 2026-11")
    assert any(line.startswith("Finance") for line in out)
    assert any(line.startswith("Statement 2026-11: issued ") for line in out)
    # tokens: Finance 3308 + 1000 + 20 = 4328, legal-review 150: 96.650 % / 3.350 %
    assert (
        "Allocation of 100.00 USD by token share: Finance 96.65 (96.7%), legal-review 3.35 (3.3%)"
        in out
    )
    assert f"wrote {xlsx}" in out and f"wrote {csv_file}" in out
    assert xlsx.stat().st_size > 0 and csv_file.read_text("utf-8").startswith("Month,")

    again = run_cli("report", "--month", "2026-11", "--db", _url(billed), "--issue")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "was issued" in again.stderr
    shown = run_cli("report", "--month", "2026-11", "--db", _url(billed))
    assert shown.returncode == 0 and "Statement 2026-11: issued" in shown.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-13"], "month must look like 2026-11"),
        (["--month", "2026-11", "--allocate", "ten"], "not an amount"),
        (["--month", "2026-11", "--allocate", "-5"], "non-negative"),
    ],
)
def test_cli_report_bad_input_is_one_line(billed, args, message):
    done = run_cli("report", "--db", _url(billed), *args)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.sqlite_only
def test_cli_report_usage_errors(tmp_path):
    both = run_cli("report", "--issue", "--reissue", "--db", str(tmp_path / "x.db"))
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing = run_cli("report", "--month", "2026-11", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and "no database file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
