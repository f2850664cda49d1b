"""The finance report's figures: every month of the database, ready to show. Pure but the queries.

:func:`build_finance_report` reads each month with calls (:func:`~aoai_helpers.analysis.statement.month_report`:
the statement, budgets, model mix, daily trend, top users; plus unpriced models and dead
letters) and turns it into a :class:`MonthView` of exact, rounded money, so that the page
(:mod:`aoai_helpers.analysis.finance_html`) only formats. The rules it settles:

* **Money** is :class:`~decimal.Decimal` in the currency's minor unit (:mod:`aoai_helpers.core.money`).
  The per-BU costs are rounded with :func:`~aoai_helpers.core.money.round_parts`, so the BU rows
  add up to the month's total to the cent; a BU's models and days are split from the BU's own
  figure (:func:`~aoai_helpers.core.money.split_exact` over their exact costs), so they add up
  to it. Totals are per currency (a month priced in two currencies has two totals).
* **Unpriced** (no call of the group has a rate) is ``None``, never 0; partly unpriced groups
  keep their priced cost and the count of unpriced calls beside it.
* **Provisional** cost is that of calls whose tokens the gateway counted (usage sources
  :data:`~aoai_helpers.analysis.report.ESTIMATED_SOURCES`), not reported by Azure OpenAI.
* **Budgets** early in a month: a linear projection from fewer than :data:`MIN_CONFIDENT_DAYS`
  days is low-confidence — it is not drawn and "at risk" becomes "too early to tell"; "over"
  (already spent more than the budget) stays.
* **Change vs last month** compares each currency's total with the calendar month before; a
  month before without calls has no change ("no data last month").
* **Coverage** against the Azure invoice comes from the caller (``bill import`` owns it), as a
  :class:`CoverageFigure` per month.

A month without calls is an error (:class:`~aoai_helpers.exceptions.ConfigError`), never an
empty page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final

from sqlalchemy.engine import Engine

from aoai_helpers.analysis.budget import BudgetBurn, parse_amount
from aoai_helpers.analysis.finance_data import (
    CoverageFigure,
    DeadLetters,
    dead_letters,
    months_with_calls,
)
from aoai_helpers.analysis.ledger import ledger
from aoai_helpers.analysis.report import (
    MIXED,
    BuCharge,
    DailyUsage,
    ModelUsage,
    UserUsage,
    unpriced_models,
)
from aoai_helpers.analysis.statement import MonthReport, month_report
from aoai_helpers.clock import month_bounds, month_of, previous_month, utcnow
from aoai_helpers.core.money import minor_units, round_money, split_exact, to_decimal
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "MIN_CONFIDENT_DAYS",
    "PALETTE",
    "AllocationView",
    "BuRow",
    "BudgetRow",
    "CoverageFigure",
    "CurrencyTotal",
    "FinanceReport",
    "LineItem",
    "MonthView",
    "Quality",
    "build_finance_report",
    "day_label",
    "month_label",
]

#: Business unit colours (Tableau 10: distinct, colour-blind-friendlier than plotly's default).
PALETTE: Final = (
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759",
    "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
#: Days of a month below which a projection to month end is low-confidence.
MIN_CONFIDENT_DAYS: Final = 7
_MONTHS: Final = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


def month_label(month: str) -> str:
    """``"2026-11"`` → ``"November 2026"`` (English, whatever the locale)."""
    start, _ = month_bounds(month)
    return f"{_MONTHS[start.month - 1]} {start.year}"


def day_label(day: date) -> str:
    """``Dec 1``."""
    return f"{_MONTHS[day.month - 1][:3]} {day.day}"


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """One currency's total of a month: the sum of its BU rows, and last month's."""

    currency: str
    cost: Decimal
    provisional: Decimal
    previous: Decimal | None  # last month's total in this currency; None: none

    @property
    def exact(self) -> Decimal:
        """The part of the cost from token counts Azure OpenAI reported."""
        return self.cost - self.provisional

    @property
    def change(self) -> Decimal | None:
        """This month minus last month (None without last month)."""
        return None if self.previous is None else self.cost - self.previous

    @property
    def change_share(self) -> Decimal | None:
        """:attr:`change` relative to last month (None without a non-zero last month)."""
        return None if not self.previous else (self.cost - self.previous) / self.previous


@dataclass(frozen=True, slots=True)
class LineItem:
    """A row of usage and cost: a BU, a model and deployment, a user or a day."""

    name: str
    detail: str | None  # cost centre, deployment or e-mail
    calls: int
    tokens: int
    cost: Decimal | None  # None: unpriced (no call of the group has a rate)
    currency: str | None
    unpriced_calls: int
    provisional: Decimal | None = None  # cost from counted tokens; None when there is none
    estimated_calls: int = 0
    day: date | None = None
    exact: Decimal | None = None  # the cost before rounding (a chart's bar height)


@dataclass(frozen=True, slots=True)
class BuRow:
    """A business unit's statement line with its drill-down."""

    line: LineItem
    color: str
    models: list[LineItem]
    users: list[LineItem]
    days: list[LineItem]  # days with calls, in order


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """A BU's month to date against its budget."""

    business_unit: str
    budget: Decimal
    spent: Decimal | None  # None: all of its calls unpriced
    projected: Decimal | None  # None: low-confidence (or nothing priced)
    currency: str | None
    status: str  # over | at risk | on track | too early to tell | unpriced
    unpriced_calls: int

    @property
    def used(self) -> Decimal | None:
        """Spent over budget."""
        return None if self.spent is None or not self.budget else self.spent / self.budget


@dataclass(frozen=True, slots=True)
class AllocationView:
    """A fixed amount split across the BUs by token share."""

    amount: Decimal
    currency: str
    rows: list[tuple[str, int, Decimal]]  # (business unit, tokens, amount)


@dataclass(frozen=True, slots=True)
class Quality:
    """How far the month's figures can be trusted."""

    calls: int
    estimated_calls: int
    unpriced_calls: int
    unpriced_models: list[tuple[str, int]]
    dead_letters: DeadLetters
    coverage: CoverageFigure | None
    mixed: list[str]  # BUs whose calls are priced in several currencies


@dataclass(frozen=True, slots=True)
class MonthView:
    """Everything the report shows for one month."""

    month: str
    issued_at: datetime | None  # None: live figures, not issued
    totals: list[CurrencyTotal]
    has_previous: bool
    rows: list[BuRow]
    days: list[date]  # every day of the month
    budgets: list[BudgetRow]
    no_budget: list[str]
    elapsed_days: float
    closed: bool
    allocation: AllocationView | None
    quality: Quality

    @property
    def label(self) -> str:
        """``November 2026``."""
        return month_label(self.month)

    @property
    def previous_label(self) -> str:
        """The calendar month before, ``October 2026``."""
        return month_label(previous_month(self.month))

    @property
    def confident(self) -> bool:
        """Whether projections to month end rest on enough days."""
        return self.closed or self.elapsed_days >= MIN_CONFIDENT_DAYS

    @property
    def currency(self) -> str | None:
        """The month's one currency (None when priced in several, or nothing priced)."""
        return self.totals[0].currency if len(self.totals) == 1 else None


@dataclass(frozen=True, slots=True)
class FinanceReport:
    """Every month with calls (oldest first), the one shown first, and when it was made."""

    organisation: str | None
    months: list[MonthView]
    selected: str
    as_of: datetime
    allocation_asked: bool = False  # an amount to allocate was given

    def month(self, month: str) -> MonthView:
        """The view of ``month`` (KeyError when it has no calls)."""
        return next(m for m in self.months if m.month == month)


# ----------------------------------------------------------------------------- building


def build_finance_report(
    engine: Engine,
    *,
    month: str | None = None,
    organisation: str | None = None,
    coverage: Mapping[str, CoverageFigure] | None = None,
    as_of: datetime | None = None,
    allocate_amount: Decimal | float | str | None = None,
    allocate_currency: str | None = None,
    top: int = 10,
) -> FinanceReport:
    """Every month of ``engine`` with calls; ``month`` (default: the latest up to ``as_of``)
    is the one shown first. ``as_of`` (default: the clock) sets budget projections.
    ``allocate_amount`` (in ``allocate_currency``, default the month's currency) is split
    across each month's BUs by token share. ConfigError for a month without calls."""
    now = as_of or utcnow()  # naive UTC, as the database stores times
    now = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    months = months_with_calls(engine)
    selected = _selected(months, month, now)
    if allocate_amount is not None:
        parse_amount(allocate_amount, 4)  # a bad amount fails before any month is read
    reports = [month_report(engine, m, top=top, as_of=now) for m in months]
    names = sorted({line.business_unit for r in reports for line in r.statement.lines})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    views: dict[str, MonthView] = {}
    for report in reports:
        previous = views.get(previous_month(report.month))
        views[report.month] = _month_view(
            engine, report, previous, colors, (coverage or {}).get(report.month), now
        )
        if allocate_amount is not None:
            views[report.month] = _with_allocation(
                views[report.month], report, allocate_amount, allocate_currency
            )
    return FinanceReport(
        organisation or None, list(views.values()), selected, now, allocate_amount is not None
    )


def _selected(months: Sequence[str], month: str | None, now: datetime) -> str:
    if month is not None:
        month = month.strip()
        month_bounds(month)  # ConfigError for anything but YYYY-MM
        if month not in months:
            raise ConfigError(f"no calls in {month}: there is no report to show")
        return month
    if not months:
        raise ConfigError("no calls in the database: there is no report to show")
    up_to_now = [m for m in months if m <= month_of(now)]
    return (up_to_now or list(months))[-1]


def _month_view(
    engine: Engine,
    report: MonthReport,
    previous: MonthView | None,
    colors: Mapping[str, str],
    coverage: CoverageFigure | None,
    now: datetime,
) -> MonthView:
    start, end = month_bounds(report.month)
    lines = _lines(report.statement.lines)
    rows = [
        BuRow(
            line,
            colors.get(line.name, PALETTE[0]),
            _split(line, [m for m in report.by_model if m.business_unit == line.name]),
            [_user(u) for u in report.top_users if u.business_unit == line.name],
            _split(line, [d for d in report.daily if d.business_unit == line.name]),
        )
        for line in lines
    ]
    totals = _totals(lines, previous)
    elapsed = min(max((now - start) / timedelta(days=1), 0.0), (end - start).days)
    confident = now >= end or elapsed >= MIN_CONFIDENT_DAYS
    budgets, no_budget = _budgets(report.budgets, lines, totals, confident)
    return MonthView(
        month=report.month,
        issued_at=report.statement.issued_at,
        totals=totals,
        has_previous=previous is not None,
        rows=rows,
        days=[start.date() + timedelta(days=i) for i in range((end - start).days)],
        budgets=budgets,
        no_budget=no_budget,
        elapsed_days=elapsed,
        closed=now >= end,
        allocation=None,
        quality=_quality(engine, report, lines, coverage),
    )


def _lines(charges: Sequence[BuCharge]) -> list[LineItem]:
    """The statement lines with the statement's own cents (:func:`aoai_helpers.analysis.ledger.ledger`:
    each currency's costs rounded to add up to its exact total, each cost split into its exact
    and provisional parts) — the figures of the text table, the CSV and the workbook."""
    money = ledger(charges).lines
    costs = [m.cost for m in money]
    provisional = [m.provisional for m in money]
    return [
        LineItem(
            name=c.business_unit,
            detail=c.cost_centre,
            calls=c.calls,
            tokens=c.total_tokens,
            cost=costs[i],
            currency=c.currency if costs[i] is not None else None,
            unpriced_calls=c.unpriced_calls,
            provisional=provisional[i] if c.estimated_calls else None,
            estimated_calls=c.estimated_calls,
        )
        for i, c in enumerate(charges)
    ]


def _split(line: LineItem, groups: Sequence[ModelUsage | DailyUsage]) -> list[LineItem]:
    """A BU's models (or days), their costs split from the BU's own so that they add up to it
    (rounded one by one when the BU has no single currency or the figures differ, as an issued
    statement may from the live calls)."""
    exact = [to_decimal(g.cost) for g in groups]
    priced = [d for d in exact if d is not None]
    parts: list[Decimal | None] = [
        None if d is None else round_money(d, g.currency)
        for d, g in zip(exact, groups, strict=True)
    ]
    target, currency = line.cost, line.currency
    if target is not None and currency not in (None, MIXED) and priced and sum(priced) > 0:
        unit = Decimal(1).scaleb(-minor_units(currency))
        if abs(round_money(sum(priced, Decimal(0)), currency) - target) <= unit:
            split = iter(split_exact(target, priced, currency))
            parts = [None if d is None else next(split) for d in exact]
    return [_item(g, part) for g, part in zip(groups, parts, strict=True)]


def _item(group: ModelUsage | DailyUsage, cost: Decimal | None) -> LineItem:
    if isinstance(group, ModelUsage):
        provisional = (
            round_money(group.estimated_cost, group.currency) if group.estimated_calls else None
        )
        return LineItem(
            group.model, group.deployment, group.calls, group.total_tokens, cost,
            group.currency if cost is not None else None, group.unpriced_calls,
            provisional if cost is not None else None, group.estimated_calls,
        )  # fmt: skip
    return LineItem(
        day_label(group.day), None, group.calls, group.total_tokens, cost,
        group.currency if cost is not None else None, group.unpriced_calls, day=group.day,
        exact=to_decimal(group.cost),
    )  # fmt: skip


def _user(u: UserUsage) -> LineItem:
    cost = None if u.cost is None else round_money(u.cost, u.currency)
    name = u.user_name or u.user_email or "(no user)"
    email = u.user_email if u.user_name and u.user_email != u.user_name else None
    return LineItem(name, email, u.calls, u.total_tokens, cost, u.currency, u.unpriced_calls)


def _totals(lines: Sequence[LineItem], previous: MonthView | None) -> list[CurrencyTotal]:
    before = {t.currency: t.cost for t in previous.totals} if previous else {}
    out = []
    for currency in sorted({line.currency for line in lines if line.currency is not None}):
        mine = [line for line in lines if line.currency == currency]
        cost = sum((line.cost or Decimal(0) for line in mine), Decimal(0))
        provisional = sum((line.provisional or Decimal(0) for line in mine), Decimal(0))
        out.append(CurrencyTotal(currency, cost, provisional, before.get(currency)))
    return out


def _budgets(
    burns: Sequence[BudgetBurn],
    lines: Sequence[LineItem],
    totals: Sequence[CurrencyTotal],
    confident: bool,
) -> tuple[list[BudgetRow], list[str]]:
    """Rows of the BUs with a budget, and the names of those without; without ``confident``
    projections, no projection and no "at risk" (too few days to project from)."""
    by_name = {line.name: line for line in lines}
    fallback = totals[0].currency if len(totals) == 1 else None
    rows, no_budget = [], []
    for b in burns:
        if b.budget is None:
            no_budget.append(b.business_unit)
            continue
        line = by_name.get(b.business_unit)
        currency = (line.currency if line else None) or b.currency or fallback
        spent = line.cost if line else round_money(0, currency)
        status: str = "unpriced" if spent is None else b.status
        projected = None if spent is None else max(spent, round_money(b.projected, currency))
        if not confident:
            projected = None
            status = "too early to tell" if status == "at risk" else status
        budget = round_money(b.budget, currency)
        rows.append(BudgetRow(b.business_unit, budget, spent, projected, currency, status,
                              b.unpriced_calls))  # fmt: skip
    return rows, no_budget


def _quality(
    engine: Engine,
    report: MonthReport,
    lines: Sequence[LineItem],
    coverage: CoverageFigure | None,
) -> Quality:
    return Quality(
        calls=sum(line.calls for line in lines),
        estimated_calls=sum(line.estimated_calls for line in lines),
        unpriced_calls=sum(line.unpriced_calls for line in lines),
        unpriced_models=unpriced_models(engine, report.month),
        dead_letters=dead_letters(engine, report.month),
        coverage=coverage,
        mixed=[line.name for line in lines if line.currency == MIXED],
    )


def _with_allocation(
    view: MonthView, report: MonthReport, amount: Decimal | float | str, currency: str | None
) -> MonthView:
    """``view`` with ``amount`` split across its BUs by token share; unchanged when the month
    has no tokens, or no one currency and none was given."""
    cur = currency or view.currency
    lines = report.statement.lines
    if cur is None or not any(line.total_tokens for line in lines):
        return view
    total = parse_amount(amount, minor_units(cur))
    if cur == view.currency:  # the statement's own allocation, in its currency
        allocated = report.with_allocation(total).allocation or []
        rows = [(a.business_unit, a.basis, a.amount) for a in allocated]
    else:
        parts = split_exact(total, [line.total_tokens for line in lines], cur)
        rows = [(c.business_unit, c.total_tokens, p) for c, p in zip(lines, parts, strict=True)]
    return replace(view, allocation=AllocationView(round_money(total, cur), cur, rows))
