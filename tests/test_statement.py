"""Tests for aoai_helpers.analysis.statement: issued statements are snapshots, drift after a reprice,
and the month report the exports and notebooks are built from.

Events: two BUs in November 2026 at the default rates (gpt-4o USD 2.50 / 10.00 per 1M):
Finance (sub-a) 1000/200 → 0.0045 and 2000/0 → 0.005; Legal (sub-c) 100/50 → 0.00075.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, inspect, select
from usage_events import usage

from aoai_helpers.analysis.narrative import allocation_line, changed_since_issue, drift_line
from aoai_helpers.analysis.report import chargeback_by_bu
from aoai_helpers.analysis.statement import (
    LIVE_ID,
    issue_statement,
    issued_months,
    month_report,
    statement,
    statement_drift,
    statement_table,
)
from aoai_helpers.core.pricing import make_rate
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.pipeline.reprice import set_rates

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

REL = 1e-12
ISSUED = datetime(2026, 12, 1, 9, 30)


@pytest.fixture
def month(engine, make_v2, ingest_events):
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", cost_centre="CC-1", monthly_budget=0.01),
                BusinessUnit("sub-c", "Legal"),
            ],
        )
    ingest_events(
        engine,
        make_v2(SubscriptionId="sub-a", Usage=usage(1000, 200)),
        make_v2(SubscriptionId="sub-a", ExecTimeUTC="2026-11-20T10:00:00Z", Usage=usage(2000, 0)),
        make_v2(SubscriptionId="sub-c", UserName="Lee", Usage=usage(100, 50)),
    )
    return engine


def _costs(lines):
    return {line.business_unit: line.cost for line in lines}


def test_live_until_issued(month):
    live = statement(month, "2026-11")
    assert (live.status, live.issued, live.issued_at) == ("live", False, None)
    assert live.describe() == "live (not issued)"
    assert live.lines == chargeback_by_bu(month, "2026-11")
    assert _costs(live.lines) == {
        "Finance": pytest.approx(0.0045 + 0.005, rel=REL),
        "Legal": pytest.approx(0.00075, rel=REL),
    }
    assert statement_drift(month, "2026-11") == []
    assert issued_months(month) == []
    with transaction(month) as conn:  # reading never creates the table
        assert not inspect(conn).has_table(statement_table.name)


def test_issue_snapshots_and_survives_a_reprice(month):
    issued = issue_statement(month, "2026-11", now=ISSUED)
    assert (issued.status, issued.issued_at) == ("issued", ISSUED)
    assert issued.describe() == "issued 2026-12-01 09:30 UTC"
    assert issued.lines == chargeback_by_bu(month, "2026-11")
    assert statement(month, "2026-11") == issued
    assert issued_months(month) == [("2026-11", ISSUED)]

    # the price of gpt-4o doubles from the 15th: Finance's 20th call is repriced 0.005 → 0.010
    with transaction(month) as conn:
        repriced = set_rates(
            conn, [make_rate("gpt-4o", 5e-6, 2e-5, effective_from=datetime(2026, 11, 15))]
        )
    assert repriced == 1
    assert _costs(chargeback_by_bu(month, "2026-11"))["Finance"] == pytest.approx(0.0145, rel=REL)
    # …but the issued statement does not move
    assert statement(month, "2026-11") == issued
    drift = {d.business_unit: d for d in statement_drift(month, "2026-11")}
    assert drift["Finance"].changed and not drift["Legal"].changed
    assert drift["Finance"].cost_delta == pytest.approx(0.005, rel=1e-9)
    assert drift["Legal"].cost_delta == pytest.approx(0.0, abs=1e-15)

    with pytest.raises(ConfigError, match=r"was issued 2026-12-01 09:30 UTC.*--reissue"):
        issue_statement(month, "2026-11")
    again = issue_statement(month, "2026-11", reissue=True, now=datetime(2026, 12, 2))
    assert _costs(again.lines)["Finance"] == pytest.approx(0.0145, rel=REL)
    assert statement(month, "2026-11").issued_at == datetime(2026, 12, 2)
    assert not any(d.changed for d in statement_drift(month, "2026-11"))
    with transaction(month) as conn:  # replaced, not added to
        count = select(func.count()).select_from(statement_table)
        assert conn.execute(count).scalar() == 2


def test_drift_shows_new_and_vanished_business_units(month, make_v2, ingest_events):
    issue_statement(month, "2026-11", now=ISSUED)
    ingest_events(month, make_v2(SubscriptionId="sub-new", SubscriptionName="Ops"))
    with transaction(month) as conn:  # Legal's subscription now belongs to Finance
        set_bu(conn, [BusinessUnit("sub-c", "Finance")])
    drift = {d.business_unit: d for d in statement_drift(month, "2026-11")}
    assert drift["Legal"].live is None and drift["Legal"].changed
    assert drift["Ops"].issued is None and drift["Ops"].changed
    assert drift["Ops"].cost_delta == pytest.approx(100e-6 * 2.5 + 50e-6 * 10, rel=REL)
    assert list(drift) == ["Finance", "Legal", "Ops"]  # issued order, then new BUs


def test_issue_refuses_an_empty_or_bad_month(month):
    with pytest.raises(ConfigError, match="no calls in 2026-09"):
        issue_statement(month, "2026-09")
    with pytest.raises(ConfigError, match="month must look like"):
        issue_statement(month, "2026-13")
    assert issued_months(month) == []  # the refused issue left nothing behind
    assert statement(month, "2026-09").lines == []


def test_months_are_independent(month, make_v2, ingest_events):
    ingest_events(month, make_v2(SubscriptionId="sub-a", ExecTimeUTC="2026-10-03T08:00:00Z"))
    issue_statement(month, "2026-10", now=datetime(2026, 11, 1))
    issue_statement(month, "2026-11", now=ISSUED)
    assert issued_months(month) == [("2026-10", datetime(2026, 11, 1)), ("2026-11", ISSUED)]
    (october,) = statement(month, "2026-10").lines
    assert (october.business_unit, october.calls) == ("Finance", 1)


def test_month_report(month):
    report = month_report(month, "2026-11", allocate_amount="50", as_of=datetime(2026, 12, 3))
    assert report.statement.status == "live"
    assert report.business_units() == ["Finance", "Legal"]
    # tokens: Finance 1200 + 2000 = 3200, Legal 150 → 50 * 3200/3350 = 47.761… → 47.76
    assert [(a.business_unit, a.amount) for a in report.allocation or []] == [
        ("Finance", Decimal("47.76")),
        ("Legal", Decimal("2.24")),
    ]
    assert report.allocation_amount == Decimal("50.00")
    finance = next(b for b in report.budgets if b.business_unit == "Finance")
    assert (finance.status, finance.projected) == ("on track", pytest.approx(0.0095, rel=REL))
    assert {m.business_unit for m in report.by_model} == {"Finance", "Legal"}
    assert sum(d.calls for d in report.daily) == 3
    assert [(u.business_unit, u.user_name) for u in report.top_users] == [
        ("Finance", "Test User"),
        ("Legal", "Lee"),
    ]
    plain = month_report(month, "2026-11")
    assert (plain.allocation, plain.allocation_amount) == (None, None)


def test_month_report_uses_the_issued_figures_for_budgets(month):
    issue_statement(month, "2026-11", now=ISSUED)
    with transaction(month) as conn:
        set_rates(conn, [make_rate("gpt-4o", 1e-3, 1e-3)])  # everything repriced far higher
    report = month_report(month, "2026-11", as_of=datetime(2026, 12, 3))
    assert report.statement.issued
    finance = next(b for b in report.budgets if b.business_unit == "Finance")
    assert finance.cost == pytest.approx(0.0095, rel=REL)  # as issued, not the live figure


def test_a_month_with_provisional_calls_in_the_grace_window_is_not_issued(
    month, make_v2, ingest_events
):
    """A pass-through stream's row is provisional until APIM's language-model log reconciles
    it: issuing its month within the grace window would bill its prompt only."""
    ingest_events(
        month,
        make_v2(
            SubscriptionId="sub-c",
            ExecTimeUTC="2026-11-30T23:30:00Z",
            IsStreaming=True,
            Usage=None,
            Request={"messages": [{"role": "user", "content": "Hello"}], "stream": True},
        ),
    )
    early = datetime(2026, 12, 1, 0, 5)  # the first minutes of the next month
    with pytest.raises(ConfigError, match=r"^2026-11 has 1 provisional call\(s\) .* 6 h grace"):
        issue_statement(month, "2026-11", now=early)
    with transaction(month) as conn:
        assert (
            not inspect(conn).has_table("ChargebackStatement")
            or not conn.execute(select(func.count()).select_from(statement_table)).scalar()
        )
    forced = issue_statement(month, "2026-11", now=early, allow_provisional=True)
    legal = next(line for line in forced.lines if line.business_unit == "Legal")
    assert legal.estimated_calls == 1 and legal.estimated_cost > 0  # the provisional share kept
    assert "of the cost provisional" in forced.describe()
    # past the grace window the unmatched call no longer stops an issue (it stays provisional)
    later = issue_statement(month, "2026-11", reissue=True, now=datetime(2026, 12, 1, 6, 0))
    assert later.issued and "of the cost provisional" in later.describe()


def test_statement_id_is_stable_for_an_issue_and_new_on_reissue(month):
    assert statement(month, "2026-11").statement_id == LIVE_ID == "live — not issued"
    issued = issue_statement(month, "2026-11", now=ISSUED)
    assert issued.statement_id == "CS-2026-11-20261201T093000Z"
    assert statement(month, "2026-11").statement_id == issued.statement_id  # read back: same
    again = issue_statement(month, "2026-11", reissue=True, now=datetime(2026, 12, 2, 8, 0, 5))
    assert again.statement_id == "CS-2026-11-20261202T080005Z"


def test_month_report_knows_the_rates_used_and_what_is_still_provisional(
    month, make_v2, ingest_events
):
    ingest_events(
        month,
        make_v2(SubscriptionId="sub-c", Model="my-finetune"),  # no rate: unpriced
        make_v2(  # a stream whose usage was not reported: provisional until reconciled
            SubscriptionId="sub-a",
            ExecTimeUTC="2026-11-30T23:30:00Z",
            IsStreaming=True,
            Usage=None,
            Request={"messages": [{"role": "user", "content": "Hello"}], "stream": True},
        ),
    )
    early = month_report(month, "2026-11", as_of=datetime(2026, 12, 1, 1, 0))
    assert early.unpriced == [("my-finetune", 1)]
    assert early.pending is not None and early.pending.calls == 1  # inside the 6 h window
    assert early.drift == [] and early.statement.statement_id == LIVE_ID
    (use,) = early.rates  # every priced call of the month at the one seeded gpt-4o rate
    assert (use.model, use.calls) == ("gpt-4o", 4)
    assert use.rate is not None and use.rate.rate_id == use.rate_id
    assert use.cost == pytest.approx(0.0045 + 0.005 + 0.00075 + 8 * 2.5e-6, rel=REL)
    later = month_report(month, "2026-11", as_of=datetime(2026, 12, 1, 7, 0))
    assert later.pending is not None and later.pending.calls == 0  # past the window
    shorter = month_report(month, "2026-11", as_of=datetime(2026, 12, 1, 1, 0), grace=timedelta(0))
    assert shorter.pending is not None and shorter.pending.calls == 0


def test_an_allocation_is_split_in_the_minor_unit_of_the_statements_currency(
    empty_engine, make_v2, ingest_events
):
    with transaction(empty_engine) as conn:
        set_rates(conn, [make_rate("gpt-4o", 0.01, 0.01, currency="JPY")])
    ingest_events(
        empty_engine,
        make_v2(SubscriptionId="s1", SubscriptionName="A", Usage=usage(100, 0)),
        make_v2(SubscriptionId="s2", SubscriptionName="B", Usage=usage(100, 0)),
        make_v2(SubscriptionId="s3", SubscriptionName="C", Usage=usage(100, 0)),
    )
    report = month_report(empty_engine, "2026-11", allocate_amount="100")
    assert report.currency() == "JPY"
    # 100 yen by equal shares: 34 + 33 + 33 (whole yen: JPY has no minor unit)
    assert sorted(a.amount for a in report.allocation or []) == [33, 33, 34]
    assert all(a.amount == a.amount.to_integral_value() for a in report.allocation or [])
    with pytest.raises(ConfigError, match="more than 0 decimal places"):
        month_report(empty_engine, "2026-11", allocate_amount="99.50")


def test_narrative_money_is_in_minor_units(month):
    issue_statement(month, "2026-11", now=ISSUED)
    with transaction(month) as conn:  # Finance's call of the 20th: 0.005 → 0.010
        set_rates(conn, [make_rate("gpt-4o", 5e-6, 2e-5, effective_from=datetime(2026, 11, 15))])
    changed = changed_since_issue(month, "2026-11")
    assert drift_line(changed, "report --month 2026-11 --reissue") == (
        "live figures differ since (rates edited or calls added): Finance +0.01 USD"
        " — replace it with: report --month 2026-11 --reissue"
    )
    lines = statement(month, "2026-11").lines  # tokens: Finance 3200, Legal 150
    assert allocation_line(Decimal("50"), lines) == (
        "Allocation of 50.00 by token share: Finance 47.76 (95.5%), Legal 2.24 (4.5%)"
    )
    assert allocation_line(Decimal("50"), lines, "JPY") == (
        "Allocation of 50 JPY by token share: Finance 48 (95.5%), Legal 2 (4.5%)"
    )
