"""Tests for aoai_helpers.report (chargeback in SQL) and the bundled demo (service.run_demo).

The chargeback database holds hand-made events over two months and three subscriptions:
two mapped to the same business unit, one unmapped (billed under its subscription name).
Prices are the default rates (USD per 1M: gpt-4o 2.50 / cached 1.25 / 10.00,
gpt-4.1-mini 0.40 / 1.60).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, select

from aoai_helpers.exceptions import ConfigError
from aoai_helpers.pricing import Rate
from aoai_helpers.rates_db import BusinessUnit, set_bu, set_rates
from aoai_helpers.report import (
    BuCharge,
    chargeback_by_bu,
    latest_month,
    month_bounds,
    render_table,
    unpriced_models,
)
from aoai_helpers.service import run_demo, sample_path
from aoai_helpers.store import dead_letter, token_table, transaction

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

REL = 1e-12
HELLO = {"messages": [{"role": "user", "content": "Hello"}]}  # 8 prompt tokens on gpt-4o


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": cached,
        "reasoning_tokens": 0,
    }


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


def test_latest_month(engine, make_v2, ingest_events):
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
    assert finance.split() == ["Finance", "CC-1", "5", "3,518", "810", "0.0102", "USD", "0.2%", "1"]
    legal = next(line for line in lines if line.startswith("legal-review"))
    assert legal.split() == ["legal-review", "-", "2", "100", "50", "0.0008", "USD", "0.0%", "-"]
    assert lines[-1] == (
        "Total: 0.0110 USD; 1 unpriced call(s) — add their rates: "
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
