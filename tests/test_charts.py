"""Tests for aoai_helpers.analysis.charts: figures built from hand-made report rows (no database)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import date
from decimal import Decimal

import plotly.graph_objects as go
import pytest

from aoai_helpers.analysis.budget import Allocation, BudgetBurn
from aoai_helpers.analysis.charts import (
    PALETTE,
    STATUS_COLORS,
    allocation_chart,
    bu_colors,
    budget_burn_chart,
    cost_by_bu_chart,
    daily_trend_chart,
    model_mix_chart,
)
from aoai_helpers.analysis.report import MIXED, BuCharge, DailyUsage, ModelUsage

LINES = [
    BuCharge("R&D", "CC-4", 30, 3000, 300, 3300, 4.5, "USD", 0.5, 2, 1),
    BuCharge("Finance", "CC-1", 10, 1000, 100, 1100, 9.0, "USD", 0.0, 0, 0),
]


def _notes(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_bu_colors_are_stable():
    a = bu_colors(["R&D", "Finance", "Legal"])
    assert a == bu_colors(["Legal", "R&D", "Finance", "R&D"])
    assert a == {"Finance": PALETTE[0], "Legal": PALETTE[1], "R&D": PALETTE[2]}


def test_cost_by_bu():
    fig = cost_by_bu_chart(LINES, month="2026-11")
    assert isinstance(fig, go.Figure)
    (bar,) = fig.data
    assert list(bar.x) == ["Finance", "R&D"]  # most cost first
    assert list(bar.y) == [9.0, 4.5]
    assert list(bar.marker.color) == [PALETTE[0], PALETTE[1]]
    assert list(bar.text) == ["9.00 USD", "4.50 USD"]
    assert fig.layout.title.text == "Cost per business unit (USD) — 2026-11"
    assert _notes(fig) == ["2 unpriced call(s) not in the cost (no rate)"]
    fig.to_json()  # serialisable: what the display wrapper sends


def test_cost_by_bu_mixed_currency_and_empty():
    mixed = [LINES[0], BuCharge("Ops", None, 1, 1, 0, 1, 1.0, "EUR", 0.0, 0, 0)]
    assert "currencies differ" in cost_by_bu_chart(mixed).layout.title.text
    assert (
        "currencies differ"
        in cost_by_bu_chart([replace(LINES[0], currency=MIXED)]).layout.title.text
    )
    empty = cost_by_bu_chart([], month="2026-09")
    assert empty.data == () and _notes(empty) == ["No calls in this month"]


DAILY = [
    DailyUsage(date(2026, 11, 2), "Finance", 5, 500, 50, 550, 2.0, "USD", 0),
    DailyUsage(date(2026, 11, 3), "Finance", 5, 500, 50, 550, None, None, 5),
    DailyUsage(date(2026, 11, 2), "R&D", 1, 10, 1, 11, 0.5, "USD", 0),
]


def test_daily_trend():
    fig = daily_trend_chart(DAILY, month="2026-11")
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["Finance", "R&D"]
    finance = fig.data[0]
    assert list(finance.x) == [date(2026, 11, 2), date(2026, 11, 3)]
    assert list(finance.y) == [2.0, None]  # nothing priced that day: no bar, not 0
    assert finance.marker.color == PALETTE[0]
    assert _notes(fig) == ["5 unpriced call(s) not in the cost (no rate)"]
    tokens = daily_trend_chart(DAILY, metric="tokens", stacked=False)
    assert all(t.type == "scatter" for t in tokens.data)
    assert list(tokens.data[0].y) == [550, 550]
    assert tokens.layout.title.text == "Tokens per day" and _notes(tokens) == []
    assert _notes(daily_trend_chart([])) == ["No calls in this month"]


def test_model_mix():
    rows = [
        ModelUsage("Finance", "gpt-4o", "chat", 1, 1, 1, 0, 2, 3.0, "USD", 0.0, 0, 0),
        ModelUsage("Finance", "gpt-4o", "chat-eu", 1, 1, 1, 0, 2, 1.0, "USD", 0.0, 0, 0),
        ModelUsage("Finance", "my-ft", "ft", 4, 4, 4, 0, 8, None, None, 0.0, 0, 4),
        ModelUsage("R&D", "gpt-4.1", "big", 1, 1, 1, 0, 2, 10.0, "USD", 0.0, 0, 0),
    ]
    fig = model_mix_chart(rows, month="2026-11")
    assert [t.name for t in fig.data] == ["gpt-4.1", "gpt-4o"]  # my-ft has no cost to draw
    gpt4o = fig.data[1]
    assert list(gpt4o.y) == ["Finance", "R&D"]  # smallest BU first: largest at the top
    assert list(gpt4o.x) == [4.0, None]  # deployments of a model added up
    assert _notes(fig) == ["4 unpriced call(s) not in the cost (no rate)"]
    tokens = model_mix_chart(rows, metric="tokens")
    assert {t.name for t in tokens.data} == {"gpt-4.1", "gpt-4o", "my-ft"}
    assert list(tokens.data[0].y) == ["R&D", "Finance"]  # by tokens Finance (12) is larger
    assert list(next(t for t in tokens.data if t.name == "my-ft").x) == [None, 8.0]


def test_budget_burn():
    rows = [
        BudgetBurn("Finance", "CC-1", 10.0, 12.0, "USD", 1.2, 20.0, 2.0, 0.6, "over", 0),
        BudgetBurn("R&D", None, None, 3.0, "USD", None, 5.0, None, 0.6, "no budget", 0),
        BudgetBurn("Ops", None, 5.0, 0.0, None, 0.0, 0.0, 0.0, 0.6, "on track", 0),
    ]
    fig = budget_burn_chart(rows, month="2026-11")
    projected, actual, budget = fig.data
    assert list(actual.x) == ["Finance", "R&D", "Ops"]
    assert list(actual.y) == [12.0, 3.0, 0.0]
    assert list(projected.y) == [20.0, 5.0, 0.0]
    assert list(actual.marker.color) == [
        STATUS_COLORS["over"],
        STATUS_COLORS["no budget"],
        STATUS_COLORS["on track"],
    ]
    assert list(actual.text) == ["120% of budget (over)", "no budget", "0% of budget (on track)"]
    assert list(budget.x) == ["Finance", "Ops"] and list(budget.y) == [10.0, 5.0]
    assert _notes(fig) == ["60% of the month elapsed"]
    closed = budget_burn_chart([replace(r, elapsed=1.0) for r in rows])
    assert _notes(closed) == []
    assert len(budget_burn_chart(rows[1:2]).data) == 2  # no budget line without budgets


def test_allocation_chart():
    parts = [
        Allocation("Finance", 1, 0.25, Decimal("25.00")),
        Allocation("R&D", 3, 0.75, Decimal("75.00")),
    ]
    fig = allocation_chart(parts, month="2026-11", what="PTU")
    (bar,) = fig.data
    assert list(bar.x) == ["R&D", "Finance"] and list(bar.y) == [75.0, 25.0]
    assert list(bar.text) == ["75.00 (75.0%)", "25.00 (25.0%)"]
    assert fig.layout.title.text == "PTU by token share — 2026-11"


@pytest.mark.parametrize(
    "module",
    [
        "aoai_helpers",
        "aoai_helpers.cli.main",
        "aoai_helpers.analysis.statement",
        "aoai_helpers.analysis.export",
    ],
)
def test_heavy_packages_stay_unimported(module):
    """The package and the CLI load neither plotly, pandas nor openpyxl (the notebooks extra)."""
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('plotly', 'pandas', 'openpyxl') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
