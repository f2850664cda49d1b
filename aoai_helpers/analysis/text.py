"""The month's chargeback as plain text for terminals and logs (``report``, ``demo``).

Names that callers control (business unit, cost centre, currency, model) are printed through
:func:`aoai_helpers.core.terminal.safe`: control characters, bidi controls and newlines show as
escapes, and column widths are those of the escaped text. :func:`totals_by_currency` is the one
place a month's cost is totalled per currency (the table's ``Total`` line, notebook 04).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from aoai_helpers.analysis.report import BuCharge
from aoai_helpers.core.terminal import safe

__all__ = ["UNPRICED", "render_table", "totals_by_currency"]

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
    "Chargeback {month} (cost in the rate's currency; 'Provisional' = cost of calls whose tokens we "
    "counted, not yet given by the API or APIM's language-model log)"
)


def totals_by_currency(lines: Iterable[BuCharge]) -> dict[str, float]:
    """Cost per currency (``MIXED`` included as it is; lines without one under :data:`UNPRICED`),
    in the order the currencies first appear."""
    totals: dict[str, float] = {}
    for line in lines:
        key = line.currency or UNPRICED
        totals[key] = totals.get(key, 0.0) + line.cost
    return totals


def _cells(r: BuCharge) -> tuple[str, ...]:
    return (
        safe(r.business_unit),
        safe(r.cost_centre or "-"),
        f"{r.calls:,}",
        f"{r.prompt_tokens:,}",
        f"{r.completion_tokens:,}",
        f"{r.cost:,.4f}",
        f"{r.cost - r.estimated_cost:,.4f}",
        f"{r.estimated_cost:,.4f}" if r.estimated_calls else "-",
        safe(r.currency or "-"),
        f"{r.unpriced_calls:,}" if r.unpriced_calls else "-",
    )


def _total_line(rows: list[BuCharge]) -> str:
    totals = totals_by_currency(rows)
    unpriced_calls = sum(r.unpriced_calls for r in rows)
    provisional = sum(r.estimated_cost for r in rows)
    return (
        "Total: "
        + ", ".join(f"{v:,.4f} {safe(k)}" for k, v in totals.items() if k != UNPRICED)
        + (f" ({provisional:,.4f} of it provisional)" if provisional else "")
        + (
            f"; {unpriced_calls:,} unpriced call(s) — add their rates: python -m aoai_helpers rates set MODEL --input … --output …"
            if unpriced_calls
            else ""
        )
    )


def render_table(
    rows: list[BuCharge], month: str, unpriced: list[tuple[str, int]] | None = None
) -> str:
    """A plain-text table of per-BU lines (:func:`~aoai_helpers.analysis.report.chargeback_by_bu`
    or an issued statement), its total per currency, and the unpriced models when given."""
    body = [_cells(r) for r in rows]
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
