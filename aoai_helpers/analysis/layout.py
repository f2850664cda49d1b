"""What each table of the statement files holds, cell by cell, before any file format. Pure.

:func:`summary` (the per-BU statement: the workbook's Summary sheet and the CSV) and
:func:`bu_tables` (a BU's model mix, daily trend and top users) — and
:func:`aoai_helpers.analysis.notes.notes` (what the figures rest on) — turn a
:class:`~aoai_helpers.analysis.statement.MonthReport` into :class:`Table` values that
:mod:`aoai_helpers.analysis.workbook` and :mod:`aoai_helpers.analysis.export` write out.

Cell values: counts are ``int``; money is a :class:`~decimal.Decimal` already rounded to its
currency's minor unit (:mod:`aoai_helpers.analysis.ledger`: the parts of each currency add up
to its total to the cent), or the word ``"unpriced"`` for a group with no priced call — never
0 — or None (empty: nothing to show, e.g. a ``MIXED`` line's cost, which is not a sum); shares
are fractions (``0.25``); times are naive UTC. A row's money is in the row's ``currency``
unless its column has a currency of its own (:attr:`Table.fixed`). Totals rows come after the
data rows: one ``Total`` row when the table has one currency, else a ``Total (USD)`` row per
currency and a ``Total`` row with only the counts — currencies are never added together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

from aoai_helpers.analysis.budget import BudgetBurn
from aoai_helpers.analysis.ledger import Ledger, LineMoney, ledger, priced_cost, round_by_currency
from aoai_helpers.analysis.report import MIXED, BuCharge
from aoai_helpers.analysis.statement import MonthReport
from aoai_helpers.core.money import UNPRICED, to_decimal

__all__ = [
    "SUMMARY_COLUMNS",
    "Col",
    "Kind",
    "Row",
    "Table",
    "bu_tables",
    "summary",
    "with_totals",
    "without",
]

Kind = Literal["text", "int", "money", "share", "date", "time", "rate"]


@dataclass(frozen=True, slots=True)
class Col:
    """A column: its header and what its cells are (text, count, money, share, time…)."""

    header: str
    kind: Kind = "text"

    @property
    def numeric(self) -> bool:
        """True for columns of numbers (right-aligned)."""
        return self.kind != "text"


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a table: its values (one per column) and its money's currency."""

    values: tuple[Any, ...]
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table: header, data rows, totals rows (after the data, outside a filter)."""

    title: str | None
    columns: tuple[Col, ...]
    rows: list[Row]
    totals: list[Row] = field(default_factory=list)
    fixed: dict[str, str | None] = field(default_factory=dict)  # column → its own currency
    name: str = "table"  # a stem for the workbook's table names

    @property
    def headers(self) -> list[str]:
        return [c.header for c in self.columns]


_T: Final = "text"
_I: Final = "int"
_M: Final = "money"
_S: Final = "share"

#: Columns of the Summary sheet and the CSV (``Allocation`` only when an amount is split).
SUMMARY_COLUMNS: Final[tuple[Col, ...]] = (
    Col("Month", _T),
    Col("Business unit", _T),
    Col("Cost centre", _T),
    Col("Calls", _I),
    Col("Prompt tokens", _I),
    Col("Completion tokens", _I),
    Col("Total tokens", _I),
    Col("Cost", _M),
    Col("Currency", _T),
    Col("Provisional cost", _M),
    Col("Provisional share", _S),
    Col("Unpriced calls", _I),
    Col("Provisional calls", _I),
    Col("Budget", _M),
    Col("Budget used", _S),
    Col("Projected cost", _M),
    Col("Budget status", _T),
    Col("Allocation", _M),
    Col("Statement", _T),
    Col("Issued at (UTC)", "time"),
    Col("Statement id", _T),
)


def _share(part: Decimal | float | None, whole: Decimal | float | None) -> Decimal | None:
    p, w = to_decimal(part), to_decimal(whole)
    return p / w if p is not None and w else None


def _money(value: Decimal | None, unpriced: bool) -> Decimal | str | None:
    return UNPRICED if unpriced else value


# ----------------------------------------------------------------------------- totals


Extra = Callable[[str | None, list[Row], bool], dict[str, Any]]


def _priced_currencies(table: Table) -> list[str | None]:
    """The currencies of the rows whose cost is priced, in order (not ``MIXED``)."""
    money = [i for i, c in enumerate(table.columns) if c.header.startswith("Cost")]
    seen: list[str | None] = []
    for row in table.rows:
        if row.currency == MIXED or row.currency in seen:
            continue
        values = [row.values[i] for i in money]
        if any(isinstance(v, Decimal) and (v or row.currency is not None) for v in values):
            seen.append(row.currency)
    return seen


def _sum_row(
    table: Table, rows: list[Row], label: str, currency: str | None, money: bool
) -> list[Any]:
    """Counts summed over ``rows``; money (when ``money``) over those rows' priced cells."""
    out: list[Any] = []
    for i, col in enumerate(table.columns):
        values = [r.values[i] for r in rows]
        if col.header == "Currency":
            out.append(currency)
        elif col.kind == "int":
            out.append(sum(v for v in values if isinstance(v, int)))
        elif col.kind == "money" and money and col.header not in table.fixed:
            amounts = [v for v in values if isinstance(v, Decimal)]
            if amounts:
                out.append(sum(amounts, Decimal(0)))
            else:
                out.append(UNPRICED if UNPRICED in values else None)
        else:
            out.append(None)
    first_text = next(i for i, c in enumerate(table.columns) if c.kind in ("text", "date"))
    label_at = 1 if table.columns[0].header == "Month" else first_text
    out[label_at] = label
    return out


def with_totals(table: Table, extra: Extra | None = None) -> Table:
    """``table`` with its totals rows (see the module docstring); ``extra(currency, rows,
    grand)`` overrides cells of a totals row by header."""
    currencies = _priced_currencies(table)
    mixed = any(r.currency == MIXED for r in table.rows)

    def row(label: str, rows: list[Row], currency: str | None, money: bool, grand: bool) -> Row:
        values = _sum_row(table, rows, label, currency, money)
        for header, value in (extra(currency, rows, grand) if extra else {}).items():
            values[table.headers.index(header)] = value
        return Row(tuple(values), currency)

    if not table.rows:
        return table
    if len(currencies) <= 1 and not mixed:
        cur = currencies[0] if currencies else None
        totals = [row("Total", table.rows, cur, True, True)]
    else:
        totals = [
            row(
                f"Total ({c or 'no currency'})",
                [r for r in table.rows if r.currency == c],
                c,
                True,
                False,
            )
            for c in currencies
        ]
        totals.append(row("Total", table.rows, MIXED, False, True))
    return Table(table.title, table.columns, table.rows, totals, table.fixed, table.name)


def without(table: Table, headers: Sequence[str]) -> Table:
    """``table`` without the columns named ``headers`` (rows and totals alike)."""
    keep = [i for i, c in enumerate(table.columns) if c.header not in headers]

    def cut(rows: list[Row]) -> list[Row]:
        return [Row(tuple(r.values[i] for i in keep), r.currency) for r in rows]

    return Table(
        table.title,
        tuple(table.columns[i] for i in keep),
        cut(table.rows),
        cut(table.totals),
        {k: v for k, v in table.fixed.items() if k not in headers},
        table.name,
    )


# ----------------------------------------------------------------------------- summary


def _columns(report: MonthReport) -> tuple[Col, ...]:
    return tuple(
        c for c in SUMMARY_COLUMNS if c.header != "Allocation" or report.allocation is not None
    )


@dataclass(frozen=True, slots=True)
class _LineFigures:
    """What a statement line's Summary row needs beyond the line itself, in line order."""

    money: LineMoney
    burn: BudgetBurn | None  # None: the BU has no budget
    budget: Decimal | None
    projected: Decimal | None


def _line_figures(report: MonthReport, money: Ledger) -> list[_LineFigures]:
    """Each line's rounded money, budget burn, rounded budget and rounded projected cost."""
    lines = report.statement.lines
    budgets = {b.business_unit: b for b in report.budgets}
    burns = [budgets.get(line.business_unit) for line in lines]
    currencies = [line.currency for line in lines]
    budget = round_by_currency([b.budget if b else None for b in burns], currencies)
    projected = round_by_currency(
        [
            None if m.cost is None else (b.projected if b else line.cost)
            for line, m, b in zip(lines, money.lines, burns, strict=True)
        ],
        currencies,
    )
    return [
        _LineFigures(m, b, bud, proj)
        for m, b, bud, proj in zip(money.lines, burns, budget, projected, strict=True)
    ]


def _allocations(report: MonthReport) -> dict[str, Decimal] | None:
    """Business unit → its allocated amount, or None when no amount is split."""
    if report.allocation is None:
        return None
    return {a.business_unit: a.amount for a in report.allocation}


def _summary_row(
    report: MonthReport, line: BuCharge, fig: _LineFigures, allocations: dict[str, Decimal] | None
) -> Row:
    """One statement line's Summary row (see :data:`SUMMARY_COLUMNS`)."""
    stmt = report.statement
    m, burn = fig.money, fig.burn
    unpriced = m.unpriced
    values: list[Any] = [
        report.month,
        line.business_unit,
        line.cost_centre,
        line.calls,
        line.prompt_tokens,
        line.completion_tokens,
        line.total_tokens,
        _money(m.cost, unpriced),
        line.currency,
        _money(m.provisional, unpriced),
        None if m.cost is None else _share(line.estimated_cost, line.cost),
        line.unpriced_calls,
        line.estimated_calls,
        fig.budget,
        burn.used if burn and m.cost is not None else None,
        _money(fig.projected, unpriced),
        UNPRICED if unpriced else (burn.status if burn else "no budget"),
    ]
    if allocations is not None:
        values.append(allocations.get(line.business_unit))
    values += [stmt.status, stmt.issued_at, stmt.statement_id]
    return Row(tuple(values), line.currency)


def _summary_extra(report: MonthReport, money: Ledger, allocated: bool) -> Extra:
    """The cells of the Summary's totals rows that are not sums (see :func:`with_totals`)."""
    stmt = report.statement
    by_currency = {t.currency: t for t in money.totals}

    def extra(currency: str | None, part: list[Row], grand: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"Month": report.month, "Statement": stmt.status}
        out |= {"Issued at (UTC)": stmt.issued_at, "Statement id": stmt.statement_id}
        total = by_currency.get(currency)
        if total is not None and currency != MIXED:
            out["Provisional share"] = total.provisional_share
        if grand and allocated:
            out["Allocation"] = report.allocation_amount
        return out

    return extra


def summary(report: MonthReport) -> Table:
    """The per-BU statement with its totals (the Summary sheet; the CSV is its data rows)."""
    lines = report.statement.lines
    money = ledger(lines)
    allocations = _allocations(report)
    rows = [
        _summary_row(report, line, fig, allocations)
        for line, fig in zip(lines, _line_figures(report, money), strict=True)
    ]
    fixed = {"Allocation": report.currency()} if allocations is not None else {}
    table = Table(None, _columns(report), rows, fixed=fixed, name="Statement")
    return with_totals(table, _summary_extra(report, money, allocations is not None))


# ----------------------------------------------------------------------------- BU sheets

_MODEL_COLUMNS: Final = (
    Col("Model", _T),
    Col("Deployment", _T),
    Col("Calls", _I),
    Col("Prompt tokens", _I),
    Col("Completion tokens", _I),
    Col("Cached tokens", _I),
    Col("Total tokens", _I),
    Col("Cost", _M),
    Col("Currency", _T),
    Col("Provisional share", _S),
    Col("Unpriced calls", _I),
)
_DAILY_COLUMNS: Final = (
    Col("Day", "date"),
    Col("Calls", _I),
    Col("Prompt tokens", _I),
    Col("Completion tokens", _I),
    Col("Total tokens", _I),
    Col("Cost", _M),
    Col("Currency", _T),
    Col("Unpriced calls", _I),
)
_USER_COLUMNS: Final = (
    Col("User", _T),
    Col("Email", _T),
    Col("Calls", _I),
    Col("Total tokens", _I),
    Col("Cost", _M),
    Col("Currency", _T),
    Col("Unpriced calls", _I),
)


def _costs(items: Sequence[Any]) -> list[Decimal | str | None]:
    """The rounded cost of each group (``"unpriced"`` when none of its calls is priced)."""
    exact = [priced_cost(x.cost, x.calls, x.unpriced_calls, x.currency) for x in items]
    rounded = round_by_currency(exact, [x.currency for x in items])
    return [UNPRICED if e is None else r for e, r in zip(exact, rounded, strict=True)]


def bu_tables(report: MonthReport, name: str) -> list[Table]:
    """The BU's model mix and daily trend (with totals) and its top users (live figures)."""
    models = [m for m in report.by_model if m.business_unit == name]
    days = [d for d in report.daily if d.business_unit == name]
    users = [u for u in report.top_users if u.business_unit == name]
    model_rows = [
        Row(
            (
                m.model, m.deployment, m.calls, m.prompt_tokens, m.completion_tokens,
                m.cached_tokens, m.total_tokens, cost, m.currency,
                _share(m.estimated_cost, m.cost) if cost != UNPRICED else None,
                m.unpriced_calls,
            ),
            m.currency,
        )
        for m, cost in zip(models, _costs(models), strict=True)
    ]  # fmt: skip
    day_rows = [
        Row(
            (
                d.day, d.calls, d.prompt_tokens, d.completion_tokens, d.total_tokens, cost,
                d.currency, d.unpriced_calls,
            ),
            d.currency,
        )
        for d, cost in zip(days, _costs(days), strict=True)
    ]  # fmt: skip
    user_rows = [
        Row(
            (
                u.user_name,
                u.user_email,
                u.calls,
                u.total_tokens,
                cost,
                u.currency,
                u.unpriced_calls,
            ),
            u.currency,
        )
        for u, cost in zip(users, _costs(users), strict=True)
    ]
    return [
        with_totals(Table("By model and deployment", _MODEL_COLUMNS, model_rows, name="Models")),
        with_totals(Table("Daily trend (UTC)", _DAILY_COLUMNS, day_rows, name="Daily")),
        Table("Top users", _USER_COLUMNS, user_rows, name="Users"),
    ]
