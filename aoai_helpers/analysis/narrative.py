"""What a month's statement says in words: issued or live, drift since issue, an allocation.

The ``report`` command and notebook 04 say the same things about a statement; they are
written once here. Each function returns text (names escaped for a terminal) and never
prints: the caller decides where it goes. ``command`` is how the caller's reader reissues or
issues a statement (``report --month M --reissue`` on the command line). Money is in the
currency's minor units (:func:`aoai_helpers.core.money.format_money`), as in the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.engine import Engine

from aoai_helpers.analysis.budget import allocate
from aoai_helpers.analysis.ledger import to_exact
from aoai_helpers.analysis.report import BuCharge
from aoai_helpers.analysis.statement import LineDrift, Statement, statement_drift
from aoai_helpers.core.money import minor_units, round_money
from aoai_helpers.core.terminal import safe

__all__ = [
    "allocation_line",
    "changed_since_issue",
    "drift_line",
    "statement_lines",
]


def changed_since_issue(engine: Engine, month: str) -> list[LineDrift]:
    """The BUs whose live figures differ from the month's issued statement (none if never
    issued): rates edited or calls added since."""
    return [d for d in statement_drift(engine, month) if d.changed]


def drift_line(changed: Sequence[LineDrift], reissue: str) -> str:
    """One line naming each changed BU with its cost delta, and how to replace the snapshot."""
    return (
        "live figures differ since (rates edited or calls added): "
        + "; ".join(f"{safe(d.business_unit)} {_delta(d)}" for d in changed)
        + f" — replace it with: {reissue}"
    )


def _delta(d: LineDrift) -> str:
    """The cost delta in the minor unit, signed, with the currency (``+0.01 USD``)."""
    line = d.live or d.issued
    currency = line.currency if line else None
    live = to_exact(d.live.cost) if d.live else None
    issued = to_exact(d.issued.cost) if d.issued else None
    delta = round_money((live or Decimal(0)) - (issued or Decimal(0)), currency)  # exact
    text = f"{delta:+,.{minor_units(currency)}f}"
    return text + (f" {safe(currency)}" if currency else "")


def statement_lines(
    engine: Engine, stmt: Statement, *, just_issued: bool = False, command: str = "report"
) -> list[str]:
    """What a statement is: just issued (a snapshot), issued earlier (with the drift since, if
    any), or live (with how to issue it). ``command`` prefixes the hints (``report``)."""
    month = stmt.month
    if just_issued:
        return [
            f"Statement {month}: {stmt.describe()} (a snapshot: later rate edits do not change it)"
        ]
    if not stmt.issued:
        return [
            f"Statement {month}: live (not issued; snapshot it with: "
            f"{command} --month {month} --issue)"
        ]
    lines = [f"Statement {month}: {stmt.describe()}"]
    changed = changed_since_issue(engine, month)
    if changed:
        lines.append("  " + drift_line(changed, f"{command} --month {month} --reissue"))
    return lines


def allocation_line(amount: Decimal, lines: Sequence[BuCharge], currency: str | None = None) -> str:
    """``amount`` split across the BUs by token share, in one line; with ``currency`` (the
    statement's), in its minor units and named."""
    places = minor_units(currency) if currency else 2
    parts = allocate(amount, list(lines), decimals=places)
    code = f" {safe(currency)}" if currency else ""
    return f"Allocation of {amount:,.{places}f}{code} by token share: " + (
        ", ".join(f"{safe(a.business_unit)} {a.amount:,.{places}f} ({a.share:.1%})" for a in parts)
        or "-"
    )
