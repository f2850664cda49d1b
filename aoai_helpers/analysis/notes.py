"""The workbook's Notes sheet as data: what a month's statement figures rest on. Pure.

:func:`notes` gives ``(item, text)`` pairs — statement id and time of issue, the period, the
currency (several are totalled separately), the provisional share (usage counted by the
gateway: :data:`aoai_helpers.analysis.report.ESTIMATED_SOURCES`), the provisional calls still
inside the reconcile window, the unpriced calls and models, the allocation, the rounding rule,
the BUs changed since issue — and two :class:`~aoai_helpers.analysis.layout.Table` values: the
rates that price the month's calls (``AoaiTokenRate``: source, effective dates, per 1M tokens,
calls and cost at each) and the unpriced models with how to price them.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from aoai_helpers.analysis.layout import Col, Row, Table
from aoai_helpers.analysis.ledger import ledger, round_by_currency, to_exact
from aoai_helpers.analysis.report import ESTIMATED_SOURCES
from aoai_helpers.analysis.statement import LIVE_ID, MonthReport
from aoai_helpers.clock import month_bounds
from aoai_helpers.core.money import format_money, to_decimal

__all__ = ["notes"]


_RATE_COLUMNS: Final = (
    Col("Model", "text"),
    Col("Source", "text"),
    Col("Rate id", "int"),
    Col("Effective from (UTC)", "time"),
    Col("Effective to (UTC)", "time"),
    Col("Currency", "text"),
    Col("Prompt per 1M tokens", "rate"),
    Col("Cached prompt per 1M tokens", "rate"),
    Col("Completion per 1M tokens", "rate"),
    Col("Calls priced", "int"),
    Col("Cost at this rate", "money"),
)
_UNPRICED_COLUMNS: Final = (
    Col("Model", "text"),
    Col("To price them", "text"),
    Col("Unpriced calls", "int"),
)
_MILLION: Final = Decimal(1_000_000)


def _per_million(rate: float | None) -> Decimal | None:
    d = to_decimal(rate)
    return None if d is None else (d * _MILLION).normalize()


def _cached(rate: Any) -> Decimal | str | None:
    """The cached-prompt rate per 1M; a rate without one prices cached tokens as prompt."""
    if rate is None:
        return None
    return "as prompt" if rate.cached_prompt_rate is None else _per_million(rate.cached_prompt_rate)


def _unpriced_note(calls: int, models: list[tuple[str, int]], issued: bool) -> str:
    """The statement's unpriced calls and the models unpriced now (live)."""
    if not calls and not models:
        return "none"
    text = (
        f"{calls:,} call(s) of the statement with no rate in effect, not costed (shown as "
        "'unpriced', never 0)"
    )
    listed = ", ".join(f"{m} ({n:,})" for m, n in models)
    if not issued:
        return text + (f": {listed}" if listed else "")
    return text + (f"; unpriced now: {listed}" if listed else "; none unpriced now")


def _when(value: datetime | date | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _window_note(report: MonthReport) -> str:
    """The provisional calls still inside the reconcile window, or why there are none."""
    pending = report.pending
    hours = f"{report.grace.total_seconds() / 3600:g} h"
    if pending is not None and pending.calls:
        return (
            f"{pending.calls:,} provisional call(s), cost so far "
            f"{format_money(to_exact(pending.cost), report.currency())}, younger than the "
            f"{hours} grace window at "
            f"{report.as_of:%Y-%m-%d %H:%M} UTC: APIM's language-model log may still give "
            "their exact usage (reconcile, then reissue)"
        )
    return f"none (no provisional call younger than {hours})" if pending else "not known"


def _statement_items(report: MonthReport) -> list[tuple[str, str]]:
    """Which statement this is, when it was issued, and the period and time its figures cover."""
    stmt = report.statement
    start, end = month_bounds(report.month)
    return [
        ("Statement id", stmt.statement_id),
        ("Status", "issued (a snapshot: later rate edits do not change it)" if stmt.issued
         else f"{LIVE_ID}: figures computed from the calls now"),
        ("Issued at (UTC)", _when(stmt.issued_at) if stmt.issued_at else "not issued"),
        ("Period (UTC)", f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} (end excluded)"),
        ("Figures as of (UTC)", _when(report.as_of)),
    ]  # fmt: skip


def _money_items(report: MonthReport) -> list[tuple[str, str]]:
    """The currencies, provisional share and window, unpriced calls, allocation, rounding, rates."""
    stmt = report.statement
    money = ledger(stmt.lines)
    codes = money.currencies()
    calls = sum(line.calls for line in stmt.lines)
    est_calls = sum(line.estimated_calls for line in stmt.lines)
    shares = [
        f"{t.provisional_share:.1%} of the {t.currency or 'no-currency'} cost"
        for t in money.totals
        if t.provisional_share is not None
    ]
    return [
        ("Currency", ", ".join(codes) + (" — totalled separately, never added together"
                                         if len(codes) > 1 else "") if codes else "none priced"),
        ("Several currencies", ", ".join(money.mixed) + ": calls priced in more than one "
         "currency; their cost is not a sum and is left empty (see their sheets, by model)"
         if money.mixed else "none"),
        ("Provisional share", (", ".join(shares) or "none") + f" ({est_calls:,} of {calls:,} "
         f"calls): usage counted by the gateway (usage source {', '.join(ESTIMATED_SOURCES)}), "
         "not reported by the API or APIM's language-model log"),
        ("Still inside the reconcile window", _window_note(report)),
        ("Unpriced", _unpriced_note(money.unpriced_calls, report.unpriced, stmt.issued)),
        ("Allocation", f"{format_money(report.allocation_amount, report.currency())} split by "
         "total token share (largest remainder to the minor unit)"
         if report.allocation_amount is not None else "none"),
        ("Rounding", "each amount rounded half-up to its currency's minor unit (ISO 4217); the "
         "per-BU lines by largest remainder, so they add up to the total exactly"),
        ("Rates", "the rates that price the month's calls now (AoaiTokenRate), per 1M tokens"),
    ]  # fmt: skip


def _drift_items(report: MonthReport) -> list[tuple[str, str]]:
    """The BUs whose live figures differ from the issued statement (none: no item)."""
    if not report.drift:
        return []
    return [
        (
            "Changed since issue",
            ", ".join(d.business_unit for d in report.drift)
            + ": live figures differ (rates edited or calls added); reissue to replace",
        )
    ]


def _rates_table(report: MonthReport) -> Table:
    """The rates that price the month's calls, with the calls and cost at each."""
    rate_rows = []
    costs = round_by_currency(
        [u.cost for u in report.rates], [u.rate.currency if u.rate else None for u in report.rates]
    )
    for use, cost in zip(report.rates, costs, strict=True):
        r = use.rate
        rate_rows.append(
            Row(
                (
                    use.model,
                    (r.source or "(no source recorded)") if r else "(no longer in AoaiTokenRate)",
                    use.rate_id,
                    r.effective_from if r else None,
                    (r.effective_to or "open") if r else None,
                    r.currency if r else None,
                    _per_million(r.prompt_rate) if r else None,
                    _cached(r),
                    _per_million(r.completion_rate) if r else None,
                    use.calls,
                    cost,
                ),
                r.currency if r else None,
            )
        )  # fmt: skip
    return Table("Rates used", _RATE_COLUMNS, rate_rows, name="Rates")


def _unpriced_table(report: MonthReport) -> Table | None:
    """The models unpriced now, with the command that prices them (None when there are none)."""
    if not report.unpriced:
        return None
    unpriced = [
        Row((m, f"python -m aoai_helpers rates set {m} --input … --output …", n))
        for m, n in report.unpriced
    ]
    return Table("Unpriced models", _UNPRICED_COLUMNS, unpriced, name="Unpriced")


def notes(report: MonthReport) -> tuple[list[tuple[str, str]], list[Table]]:
    """What the figures rest on, as ``(item, text)`` pairs, and the rates and unpriced-model
    tables (the workbook's Notes sheet)."""
    items = _statement_items(report) + _money_items(report) + _drift_items(report)
    tables = [_rates_table(report)]
    unpriced = _unpriced_table(report)
    if unpriced is not None:
        tables.append(unpriced)
    return items, tables
