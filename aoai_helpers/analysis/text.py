"""The month's chargeback as plain text for terminals and logs (``report``, ``demo``).

Names that callers control (business unit, cost centre, currency, model) are printed through
:func:`aoai_helpers.core.terminal.safe`: control characters, bidi controls and newlines show as
escapes, and column widths are those of the escaped text. Text columns are left-aligned,
numbers right-aligned.

Money is in each currency's minor units, rounded as in the CSV and the workbook
(:func:`aoai_helpers.analysis.ledger.ledger`: the lines of a currency add up to its total to
the cent); a BU with no priced call shows ``unpriced`` — never 0 — and one with some unpriced
calls shows its priced cost and the count. The ``Total`` line gives one figure per currency,
never a sum across currencies; a ``MIXED`` line (calls priced in several currencies) is not a
sum and is shown as ``mixed``, left out of the totals and named. :func:`totals_by_currency`
(floats, for notebook 04) and :func:`money_totals` (exact, rounded) total a month's cost per
currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final

from aoai_helpers.analysis.ledger import LineMoney, ledger
from aoai_helpers.analysis.report import MIXED, BuCharge
from aoai_helpers.core.money import format_money
from aoai_helpers.core.terminal import safe

__all__ = ["UNPRICED", "money_totals", "render_table", "totals_by_currency"]

#: The key of :func:`totals_by_currency` for lines with no currency (no priced call).
UNPRICED: Final = "unpriced"

_HEADER: Final = (
    "Business unit",
    "Cost centre",
    "Calls",
    "Prompt tok",
    "Completion tok",
    "Cost",
    "Exact",
    "Provisional",
    "Cur",
    "Unpriced",
)
_NUMERIC: Final = frozenset({2, 3, 4, 5, 6, 7, 9})
_TITLE: Final = (
    "Chargeback {month} (cost in the rate's currency, in its minor units; 'Provisional' = cost "
    "of calls whose tokens we counted, not yet given by the API or APIM's language-model log)"
)


def totals_by_currency(lines: Iterable[BuCharge]) -> dict[str, float]:
    """Cost per currency (``MIXED`` included as it is; lines without one under :data:`UNPRICED`),
    in the order the currencies first appear."""
    totals: dict[str, float] = {}
    for line in lines:
        key = line.currency or UNPRICED
        totals[key] = totals.get(key, 0.0) + line.cost
    return totals


def money_totals(lines: Sequence[BuCharge]) -> dict[str | None, Decimal]:
    """Cost per currency, rounded to its minor unit (the sum of the rounded lines), in the
    order the currencies first appear; no entry for unpriced or ``MIXED`` lines."""
    return {t.currency: t.cost for t in ledger(lines).totals}


def _amount(value: Decimal | None, money: LineMoney) -> str:
    if money.currency == MIXED:
        return "mixed"
    return format_money(value, money.currency, code=False)


def _cells(r: BuCharge, m: LineMoney) -> tuple[str, ...]:
    return (
        safe(r.business_unit),
        safe(r.cost_centre or "-"),
        f"{r.calls:,}",
        f"{r.prompt_tokens:,}",
        f"{r.completion_tokens:,}",
        _amount(m.cost, m),
        "-" if m.cost is None else _amount(m.exact, m),
        _amount(m.provisional, m) if r.estimated_calls and m.cost is not None else "-",
        safe(r.currency or "-"),
        f"{r.unpriced_calls:,}" if r.unpriced_calls else "-",
    )


def _total_line(rows: list[BuCharge]) -> str:
    book = ledger(rows)
    parts = [format_money(t.cost, t.currency) for t in book.totals]
    provisional = [
        format_money(t.provisional, t.currency) for t in book.totals if t.estimated_calls
    ]
    text = "Total: " + (", ".join(safe(p) for p in parts) or "none priced")
    if provisional:
        text += f" ({', '.join(safe(p) for p in provisional)} of it provisional)"
    if book.mixed:
        text += (
            f"; {len(book.mixed)} BU(s) priced in several currencies, not totalled (MIXED): "
            + ", ".join(safe(n) for n in book.mixed)
        )
    if book.unpriced_calls:
        text += (
            f"; {book.unpriced_calls:,} unpriced call(s) — add their rates: "
            "python -m aoai_helpers rates set MODEL --input … --output …"
        )
    return text


def render_table(
    rows: list[BuCharge], month: str, unpriced: list[tuple[str, int]] | None = None
) -> str:
    """A plain-text table of per-BU lines (:func:`~aoai_helpers.analysis.report.chargeback_by_bu`
    or an issued statement), its total per currency, and the unpriced models when given."""
    body = [_cells(r, m) for r, m in zip(rows, ledger(rows).lines, strict=True)]
    widths = [max(len(str(x)) for x in col) for col in zip(_HEADER, *body, strict=False)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in _NUMERIC else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [_TITLE.format(month=month), fmt(_HEADER), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in body]
    lines.append(_total_line(rows) if body else "(no calls in this month)")
    if unpriced:
        lines.append(
            "Unpriced models: " + ", ".join(f"{safe(m)} ({n:,} calls)" for m, n in unpriced)
        )
    return "\n".join(lines)
