"""Plain-text lines of the bill for the CLI: an import's summary, the imports, coverage and
the invoice allocation. Pure; money through :func:`aoai_helpers.core.money.format_money`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from aoai_helpers.billing.invoice import Coverage, CoverageRow, InvoiceAllocation
from aoai_helpers.billing.store import BillImport, ImportSummary
from aoai_helpers.core.money import format_money

__all__ = [
    "coverage_lines",
    "import_line",
    "imports_lines",
    "invoice_allocation_lines",
]


def _totals(totals: dict[str, Decimal]) -> str:
    return ", ".join(format_money(v, c) for c, v in totals.items()) or "nothing"


def import_line(s: ImportSummary) -> str:
    """``bill import``'s one-line summary."""
    replaced = f"; replaced {s.replaced_lines} earlier line(s)" if s.replaced_lines else ""
    return (
        f"{s.source_file}: {s.rows_read} row(s) read, {s.lines_stored} Azure OpenAI line(s) "
        f"stored ({s.token_lines} by tokens), month(s) {', '.join(s.months)}, cost type "
        f"{s.cost_type}, total {_totals(s.totals)}{replaced}"
    )


def imports_lines(imports: Sequence[BillImport]) -> list[str]:
    """``bill list``: one line per imported month and cost type."""
    if not imports:
        return ["no Azure bill imported yet (bill import FILE)"]
    head = f"{'month':<8} {'cost type':<10} {'lines':>7} {'by tokens':>9}  total  (file, imported)"
    rows = [
        f"{b.month:<8} {b.cost_type:<10} {b.lines:>7} {b.token_lines:>9}  {_totals(b.totals)}  "
        f"({b.source_file}, {b.imported_at:%Y-%m-%d %H:%M} UTC)"
        for b in imports
    ]
    return [head, *rows]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _row(label: str, r: CoverageRow) -> str:
    cost = (
        "-"
        if r.currency is None
        else format_money(r.billed_cost, r.currency)
        if r.billed_cost is not None
        else r.currency
    )
    return (
        f"{label:<12} {r.model:<24} {r.kind:<12} {r.billed_tokens:>14,} {r.recorded_tokens:>14,} "
        f"{_ratio(r.ratio):>8} {r.bypassed_tokens:>14,}  {cost}"
    )


def coverage_lines(cov: Coverage | None, *, daily: bool = True) -> list[str]:
    """The coverage table (per day when ``daily``, then per meter, then the total)."""
    if cov is None:
        return ["no Azure bill imported for this month (bill import FILE): no coverage"]
    head = (
        f"{'day':<12} {'model':<24} {'token kind':<12} {'billed':>14} {'recorded':>14} "
        f"{'coverage':>8} {'bypassed':>14}  billed cost"
    )
    out = [
        f"coverage {cov.month} ({cov.cost_type} cost): tokens Azure billed beside tokens the gateway recorded",
        head,
    ]
    if daily:
        out += [_row(f"{r.day:%Y-%m-%d}" if r.day else "", r) for r in cov.rows]
    out += [_row("month", m) for m in cov.meters]
    out.append(
        f"{'total':<12} {'':<24} {'':<12} {cov.billed_tokens:>14,} {cov.recorded_tokens:>14,} "
        f"{_ratio(cov.ratio):>8} {cov.bypassed_tokens:>14,}  {_totals(cov.billed_cost)}"
    )
    if cov.non_token_cost:
        out.append(
            f"not attributable by tokens (provisioned, hosting, training): {_totals(cov.non_token_cost)}"
        )
    return out


def invoice_allocation_lines(alloc: InvoiceAllocation | None) -> list[str]:
    """The invoice split per BU, per currency, with its total."""
    if alloc is None:
        return ["no Azure bill imported for this month (bill import FILE): no invoice to allocate"]
    out = [f"invoice {alloc.month} ({alloc.cost_type} cost) allocated by token share per meter"]
    for currency, total in alloc.totals.items():
        out.append(f"{'business unit':<32} {'cost centre':<12} {'tokens':>14} {'amount':>18}")
        for line in alloc.lines_in(currency):
            out.append(
                f"{line.business_unit:<32} {line.cost_centre or '-':<12} {line.tokens:>14,} "
                f"{format_money(line.amount, currency):>18}"
            )
        out.append(f"{'total':<32} {'':<12} {'':>14} {format_money(total, currency):>18}")
    return out
