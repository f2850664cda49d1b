"""The finance report's Azure invoice: coverage in words and the invoice's split as a table.

What ``bill import`` brought for a month (:class:`~aoai_helpers.analysis.finance_data.CoverageFigure`)
rendered as HTML for :mod:`aoai_helpers.analysis.finance_html`: :func:`coverage_text` (the
data-quality line: tokens billed beside tokens recorded, the invoiced cost, what no recorded
call accounts for) and :func:`invoice_section` (per business unit its part of the invoice, by
token share per meter, then the unattributed usage that bypassed the gateway and the cost that
is not tokens as lines of their own, and the total — which is the invoice, to the cent). Pure.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Final

from aoai_helpers.analysis.finance_data import CoverageFigure
from aoai_helpers.core.money import format_money

__all__ = ["BILL_IMPORT_HINT", "LINE_LABELS", "coverage_text", "invoice_section"]

BILL_IMPORT_HINT: Final = "aoai-helpers bill import FILE"
#: What the invoice lines no business unit owns are called.
LINE_LABELS: Final = {
    "unattributed": "Not recorded by the gateway (called Azure OpenAI directly)",
    "not_by_tokens": "Not attributable by tokens (provisioned, hosting, training)",
}


def _share(value: Decimal) -> str:
    return f"{value * 100:.1f} %"


def coverage_text(c: CoverageFigure | None) -> str:
    """The data-quality line of a month: coverage against the invoice, or how to import it."""
    if c is None:
        return (
            '<span class="coverage-missing">No Azure invoice imported for this month \u2014 '
            f"<code>{BILL_IMPORT_HINT}</code></span>"
        )
    share = "" if c.coverage is None else f" ({_share(c.coverage)})"
    text = (
        f"Azure billed {c.billed_tokens:,} tokens; the gateway recorded {c.recorded_tokens:,} "
        f"of them{share}."
    )
    if c.recorded_not_billed:
        text += (
            f" It recorded {c.recorded_not_billed:,} more than the invoice bills for the same "
            "models (calls of models the invoice names otherwise, or not yet billed)."
        )
    if c.billed_cost is not None:
        text += f" Invoiced cost {format_money(c.billed_cost, c.currency)}."
    if c.unattributed_cost is not None:
        text += (
            " Billed tokens the gateway did not record (usage that bypassed it): "
            f"{format_money(c.unattributed_cost, c.currency)}."
        )
    if c.not_by_tokens_cost:
        text += (
            " Cost that is not tokens (provisioned, hosting, training): "
            f"{format_money(c.not_by_tokens_cost, c.currency)}."
        )
    return f'<span class="coverage">{text}</span>'


def invoice_section(c: CoverageFigure | None) -> str:
    """The invoice's split across business units (empty without an invoice in one currency)."""
    if c is None or not c.shares or c.currency is None or c.billed_cost is None:
        return ""
    cur = c.currency
    rows = []
    for s in c.shares:
        name = escape(LINE_LABELS.get(s.kind, s.business_unit))
        css = "" if s.kind == "bu" else ' class="unattributed"'
        rows.append(
            f"<tr{css}><td>{name}</td><td>{escape(s.cost_centre or '')}</td>"
            f'<td class="num">{s.tokens:,}</td>'
            f'<td class="num cost">{format_money(s.amount, cur, code=False)}</td></tr>'
        )
    total = sum((s.amount for s in c.shares), Decimal(0))
    foot = (
        '<tr class="total"><td>Total (the invoice)</td><td></td><td class="num"></td>'
        f'<td class="num cost">{format_money(total, cur, code=False)}</td></tr>'
    )
    head = (
        "<thead><tr><th>Business unit</th><th>Cost centre</th>"
        f'<th class="num">Tokens</th><th class="num">Amount ({escape(cur)})</th></tr></thead>'
    )
    return (
        f'<section class="part invoice"><h3>Azure invoice: {format_money(c.billed_cost, cur)}'
        '</h3><p class="quiet">The month\'s Azure OpenAI invoice (imported from Cost '
        "Management) split across the business units by their share of each meter's tokens, "
        "to the cent. Billed tokens the gateway did not record, and cost that is not tokens, "
        "are lines of their own: they are not spread over the business units.</p>"
        f'<table class="invoice-table">{head}<tbody>{"".join(rows)}</tbody>'
        f"<tfoot>{foot}</tfoot></table></section>"
    )
