"""The imported Azure bill as the finance report's figures: one
:class:`~aoai_helpers.analysis.finance_data.CoverageFigure` per month that has a bill.

:func:`coverage_figures` reads each imported month's coverage and invoice split
(:mod:`aoai_helpers.billing.invoice`) and keeps what the report's data-quality section shows:
tokens billed beside tokens recorded, the invoice total, and the part of it no recorded call
accounts for (usage that bypassed the gateway, and cost that is not tokens), and the invoice's
split across business units line by line.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.engine import Engine

from aoai_helpers.analysis.finance_data import CoverageFigure, InvoiceShare
from aoai_helpers.analysis.finance_invoice import LINE_LABELS
from aoai_helpers.analysis.layout import Col, Row, Table
from aoai_helpers.billing.invoice import InvoiceAllocation, allocate_invoice, coverage
from aoai_helpers.billing.store import list_imports

__all__ = ["coverage_figures", "invoice_table"]


def invoice_table(alloc: InvoiceAllocation) -> Table:
    """The invoice's split as a workbook table: a row per BU (and per line no recorded call
    accounts for), a total row per currency — the invoice, to the cent."""
    rows = [
        Row(
            (
                LINE_LABELS.get(x.kind, x.business_unit),
                x.cost_centre,
                x.tokens,
                x.amount,
                x.currency,
            ),
            x.currency,
        )
        for x in alloc.lines
    ]
    totals = [
        Row((f"Total ({cur})", None, None, total, cur), cur) for cur, total in alloc.totals.items()
    ]
    columns = (
        Col("Business unit"), Col("Cost centre"), Col("Tokens", "int"), Col("Amount", "money"),
        Col("Currency"),
    )  # fmt: skip
    return Table(f"{alloc.cost_type} cost", columns, rows, totals, name="invoice")


def _part(alloc: InvoiceAllocation, kind: str) -> Decimal:
    return sum((line.amount for line in alloc.lines if line.kind == kind), Decimal(0))


def coverage_figures(engine: Engine) -> dict[str, CoverageFigure]:
    """``YYYY-MM`` → the month's Azure bill beside the gateway's records, for every month with
    an imported bill (in one currency; a month billed in several shows no cost)."""
    out: dict[str, CoverageFigure] = {}
    for month in sorted({i.month for i in list_imports(engine)}):
        cov = coverage(engine, month)
        alloc = allocate_invoice(engine, month)
        if cov is None or alloc is None:
            continue
        single = len(alloc.totals) == 1
        currency = next(iter(alloc.totals)) if single else None

        out[month] = CoverageFigure(
            billed_tokens=cov.billed_tokens,
            recorded_tokens=sum(min(m.recorded_tokens, m.billed_tokens) for m in cov.meters),
            recorded_not_billed=sum(
                max(0, m.recorded_tokens - m.billed_tokens) for m in cov.meters
            ),
            billed_cost=alloc.totals[currency] if currency else None,
            currency=currency,
            unattributed_cost=_part(alloc, "unattributed") if single else None,
            not_by_tokens_cost=_part(alloc, "not_by_tokens") if single else None,
            shares=tuple(
                InvoiceShare(x.business_unit, x.cost_centre, x.kind, x.tokens, x.amount)
                for x in alloc.lines
            )
            if single
            else (),
        )
    return out
