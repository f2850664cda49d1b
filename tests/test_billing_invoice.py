"""Tests for aoai_helpers.billing.invoice (coverage, invoice allocation) and billing.text.

The database is filled through the real ingest path (tests/conftest.py ``ingest_events``):
November 2026, three APIM subscriptions — sub-a and sub-b mapped to Finance (CC-1), sub-c
unmapped (billed under its name, legal-review). Recorded tokens, by hand:

* 2026-11-05 gpt-4o: sub-a prompt 1,000,000 (400,000 cached) completion 200,000; sub-c
  prompt 500,000 completion 100,000 → input 1,100,000, cached 400,000, output 300,000;
* 2026-11-06 gpt-4.1-mini: sub-b prompt 2,000,000 completion 500,000.

The bill is tests/data/costdetails/ea-actual-2026-11.csv: gpt-4o input 1,500,000 tokens
(3.75 USD), cached 400,000 (0.50), output 300,000 (3.00); gpt-4.1-mini input 2,000,000
(0.80), output 500,000 (0.80); provisioned throughput 48.00 — 56.85 USD.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from usage_events import usage

from aoai_helpers.billing.invoice import (
    NOT_BY_TOKENS,
    UNATTRIBUTED,
    CoverageRow,
    allocate_invoice,
    coverage,
)
from aoai_helpers.billing.store import import_cost_details
from aoai_helpers.billing.text import coverage_lines, invoice_allocation_lines
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import cost_line_table

BOTH_DATABASES = True

EA = Path(__file__).parent / "data" / "costdetails" / "ea-actual-2026-11.csv"


@pytest.fixture
def recorded(engine, make_v2, ingest_events):
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", "fin-a", "CC-1"),
                BusinessUnit("sub-b", "Finance", "fin-b", "CC-1"),
            ],
        )
    result = ingest_events(
        engine,
        make_v2(SubscriptionId="sub-a", SubscriptionName="fin-a", ExecTimeUTC="2026-11-05T10:00:00.000Z",
                Usage=usage(1_000_000, 200_000, 400_000)),
        make_v2(SubscriptionId="sub-c", SubscriptionName="legal-review", ExecTimeUTC="2026-11-05T23:59:59.000Z",
                Usage=usage(500_000, 100_000)),
        make_v2(SubscriptionId="sub-b", SubscriptionName="fin-b", ExecTimeUTC="2026-11-06T00:00:00.000Z",
                DeploymentName="gpt-4.1-mini", Model="gpt-4.1-mini-2025-04-14", Usage=usage(2_000_000, 500_000)),
        make_v2(SubscriptionId="sub-a", ExecTimeUTC="2026-12-01T00:00:00.000Z", Usage=usage(9, 9)),  # December
    )  # fmt: skip
    assert result.stored == 4
    return engine


def test_nothing_without_a_bill(recorded) -> None:
    assert coverage(recorded, "2026-11") is None
    assert allocate_invoice(recorded, "2026-11") is None
    assert coverage_lines(None) == [
        "no Azure bill imported for this month (bill import FILE): no coverage"
    ]


def test_coverage(recorded) -> None:
    import_cost_details(recorded, EA)
    cov = coverage(recorded, "2026-11")
    assert cov is not None and cov.cost_type == "actual"
    d5, d6 = date(2026, 11, 5), date(2026, 11, 6)
    usd = "USD"
    assert cov.rows == [
        CoverageRow(d5, "gpt-4o", "input", 1_500_000, 1_100_000, Decimal("3.75"), usd),
        CoverageRow(d5, "gpt-4o", "cached_input", 400_000, 400_000, Decimal("0.5"), usd),
        CoverageRow(d5, "gpt-4o", "output", 300_000, 300_000, Decimal("3"), usd),
        CoverageRow(d6, "gpt-4.1-mini", "input", 2_000_000, 2_000_000, Decimal("0.8"), usd),
        CoverageRow(d6, "gpt-4.1-mini", "output", 500_000, 500_000, Decimal("0.8"), usd),
    ]
    first = cov.rows[0]
    assert first.bypassed_tokens == 400_000 and first.ratio == pytest.approx(1_100_000 / 1_500_000)
    assert [(m.model, m.kind, m.billed_tokens) for m in cov.meters] == [
        ("gpt-4.1-mini", "input", 2_000_000),
        ("gpt-4.1-mini", "output", 500_000),
        ("gpt-4o", "input", 1_500_000),
        ("gpt-4o", "cached_input", 400_000),
        ("gpt-4o", "output", 300_000),
    ]
    assert (cov.billed_tokens, cov.recorded_tokens, cov.bypassed_tokens) == (
        4_700_000,
        4_300_000,
        400_000,
    )
    assert cov.billed_cost == {"USD": Decimal("56.85")}
    assert cov.non_token_cost == {"USD": Decimal("48")}
    text = "\n".join(coverage_lines(cov))
    assert "2026-11-05   gpt-4o" in text and "73.3%" in text and "400,000" in text
    assert "not attributable by tokens (provisioned, hosting, training): 48.00 USD" in text


def test_recorded_but_not_billed_and_billed_but_not_recorded(recorded, tmp_path: Path) -> None:
    """A day Azure billed that the gateway never saw, and recorded calls of a model the bill
    does not have: both show, with no ratio where nothing was billed."""
    header, *rows = EA.read_text("utf-8").splitlines()
    mini = [
        r.replace("gpt 4.1 mini 0414", "gpt 4o 1120").replace("11/06/2026", "11/20/2026")
        for r in rows
        if "4.1 mini" in r
    ]
    f = tmp_path / "ea.csv"
    f.write_text(
        "\n".join([header, *(r for r in rows if "4.1 mini" not in r), *mini]) + "\n", "utf-8"
    )
    import_cost_details(recorded, f)
    cov = coverage(recorded, "2026-11")
    assert cov is not None
    by = {(r.day, r.model, r.kind): r for r in cov.rows}
    bypassed = by[(date(2026, 11, 20), "gpt-4o", "input")]
    assert (bypassed.billed_tokens, bypassed.recorded_tokens, bypassed.ratio) == (2_000_000, 0, 0.0)
    unbilled = by[(date(2026, 11, 6), "gpt-4.1-mini", "input")]
    assert (unbilled.billed_tokens, unbilled.recorded_tokens, unbilled.ratio) == (
        0,
        2_000_000,
        None,
    )
    assert unbilled.currency is None and unbilled.billed_cost is None


def test_allocation_by_hand(recorded) -> None:
    import_cost_details(recorded, EA)
    alloc = allocate_invoice(recorded, "2026-11")
    assert alloc is not None
    assert alloc.totals == {"USD": Decimal("56.85")}
    got = [(x.business_unit, x.cost_centre, x.kind, x.tokens, x.amount) for x in alloc.lines]
    # gpt-4o input 3.75 over Finance 600,000 / legal 500,000 / bypassed 400,000 of 1,500,000
    # = 1.50 / 1.25 / 1.00; cached 0.50 Finance; output 3.00 = 2.00 Finance / 1.00 legal;
    # gpt-4.1-mini 0.80 + 0.80 Finance; provisioned 48.00 not by tokens
    assert got == [
        (
            "Finance",
            "CC-1",
            "bu",
            600_000 + 400_000 + 200_000 + 2_000_000 + 500_000,
            Decimal("5.60"),
        ),
        ("legal-review", None, "bu", 600_000, Decimal("2.25")),
        (UNATTRIBUTED, None, "unattributed", 400_000, Decimal("1.00")),
        (NOT_BY_TOKENS, None, "not_by_tokens", 0, Decimal("48.00")),
    ]
    assert sum(x.amount for x in alloc.lines) == alloc.totals["USD"]
    text = "\n".join(invoice_allocation_lines(alloc))
    assert "Finance" in text and "5.60 USD" in text and "56.85 USD" in text


def test_a_meter_nobody_recorded_goes_to_unattributed(empty_engine) -> None:
    import_cost_details(empty_engine, EA)
    alloc = allocate_invoice(empty_engine, "2026-11")
    assert alloc is not None
    assert [(x.business_unit, x.amount) for x in alloc.lines] == [
        (UNATTRIBUTED, Decimal("8.85")),
        (NOT_BY_TOKENS, Decimal("48.00")),
    ]


# ----------------------------------------------------------------------------- property


def _replace_bill(engine, lines: list[tuple[str, str, int, Decimal]]) -> None:
    """Rewrite the month's gpt-4o token lines with (kind, currency, tokens, cost)."""
    t = cost_line_table.c
    with transaction(engine) as conn:
        conn.execute(cost_line_table.delete().where(t.ModelName.is_not(None)))
        base = conn.execute(cost_line_table.select().limit(1)).mappings().one()
        for i, (kind, currency, tokens, cost) in enumerate(lines):
            row = {k: v for k, v in base.items() if k != "Id"}
            row.update(MeterName=f"m{i}", ModelName="gpt-4o", TokenKind=kind, Tokens=tokens,
                       Cost=float(cost), Currency=currency)  # fmt: skip
            conn.execute(cost_line_table.insert(), row)


bill_lines = st.lists(
    st.tuples(
        st.sampled_from(["input", "cached_input", "output"]),
        st.sampled_from(["USD", "JPY", "BHD"]),
        st.integers(0, 3_000_000),
        st.decimals(Decimal("0"), Decimal("5000"), places=6),
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.sqlite_only
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=bill_lines)
def test_allocation_adds_up_to_the_invoice_and_unattributed_is_the_bypassed_share(
    recorded, lines
) -> None:
    import_cost_details(recorded, EA)  # replaces the month: every example starts the same
    _replace_bill(recorded, lines)
    alloc = allocate_invoice(recorded, "2026-11")
    assert alloc is not None
    exact: dict[str, Decimal] = defaultdict(Decimal)
    for _, currency, _, cost in lines:
        exact[currency] += Decimal(repr(float(cost)))
    exact["USD"] += Decimal(48)  # the provisioned hours, not by tokens
    for currency, total in alloc.totals.items():
        places = {"USD": 2, "JPY": 0, "BHD": 3}[currency]
        assert total == exact[currency].quantize(
            Decimal(1).scaleb(-places), rounding="ROUND_HALF_UP"
        )
        assert sum(x.amount for x in alloc.lines_in(currency)) == total  # to the minor unit
        assert all(x.amount.as_tuple().exponent == -places for x in alloc.lines_in(currency))
    # the unattributed cells: each meter's cost x (billed - recorded) / max(billed, recorded)
    recorded_tokens = {"input": 1_100_000, "cached_input": 400_000, "output": 300_000}
    meters: dict[tuple[str, str], list] = defaultdict(lambda: [0, Decimal(0)])
    for kind, currency, tokens, cost in lines:
        meters[(currency, kind)][0] += tokens
        meters[(currency, kind)][1] += Decimal(repr(float(cost)))
    for (currency, kind), (billed, cost) in meters.items():
        bypassed = max(0, billed - recorded_tokens[kind])
        whole = recorded_tokens[kind] + bypassed
        share = cost * bypassed / whole
        cell = [
            c
            for c in alloc.cells
            if (c.currency, c.kind, c.business_unit) == (currency, kind, UNATTRIBUTED)
        ]
        if bypassed:
            assert len(cell) == 1 and cell[0].tokens == bypassed
            assert abs(cell[0].amount - share) <= Decimal(1).scaleb(
                -{"USD": 2, "JPY": 0, "BHD": 3}[currency]
            )
        else:
            assert cell == []
