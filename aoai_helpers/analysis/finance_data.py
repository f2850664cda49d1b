"""The finance report's data beyond the month's statement, in and out (:mod:`aoai_helpers.analysis.finance_report`).

* :func:`months_with_calls` — every month the daily rollup ``AoaiUsageDaily`` has calls in
  (the report's month selector): one ``SELECT DISTINCT`` of the rollup's day column, a few
  hundred rows for years of data, whatever the number of calls.
* :func:`dead_letters` — the ``IngestDeadLetter`` rows *received* in a month (the ingest
  clock: a dead letter has no trustworthy call time — it could not be read), counted per
  reason. Portable SQL (SQLite, PostgreSQL, Azure SQL).
* :class:`CoverageFigure` — what the caller brings: a month of the Azure invoice beside the
  recorded usage (``bill import`` works it out).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from aoai_helpers.clock import month_bounds, month_of
from aoai_helpers.db.engine import as_date, transaction
from aoai_helpers.db.tables import daily_table, dead_letter

__all__ = [
    "CoverageFigure",
    "DeadLetters",
    "InvoiceShare",
    "dead_letters",
    "months_with_calls",
]


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """A month's events that could not be ingested: how many, and the commonest reasons."""

    count: int
    reasons: list[tuple[str, int]]  # (reason, events), most events first
    other_reasons: int  # events whose reason is not in ``reasons``


@dataclass(frozen=True, slots=True)
class InvoiceShare:
    """One line of the Azure invoice's split: a business unit's part, or the part no recorded
    call accounts for (``kind`` ``unattributed``: usage that bypassed the gateway;
    ``not_by_tokens``: provisioned hours, hosting, training)."""

    business_unit: str
    cost_centre: str | None
    kind: str  # "bu" | "unattributed" | "not_by_tokens"
    tokens: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CoverageFigure:
    """A month of the Azure invoice beside what the gateway recorded (from ``bill import``):
    ``recorded_tokens`` are the billed tokens the gateway recorded (per meter, at most what
    was billed), ``recorded_not_billed`` what it recorded beyond that.

    ``unattributed_cost``: the invoiced cost of billed tokens no recorded call accounts for
    (usage that bypassed the gateway); ``not_by_tokens_cost``: invoiced cost that is not tokens;
    None when not worked out. ``shares``: the invoice split across business units by token
    share per meter (in ``currency``; they add up to ``billed_cost`` to the cent).
    """

    billed_tokens: int
    recorded_tokens: int
    billed_cost: Decimal | None
    currency: str | None
    unattributed_cost: Decimal | None = None
    not_by_tokens_cost: Decimal | None = None
    shares: tuple[InvoiceShare, ...] = ()
    recorded_not_billed: int = 0  # recorded tokens beyond what the invoice bills per meter

    @property
    def coverage(self) -> Decimal | None:
        """Recorded tokens over billed tokens (None when nothing was billed)."""
        return Decimal(self.recorded_tokens) / self.billed_tokens if self.billed_tokens else None


def months_with_calls(engine: Engine) -> list[str]:
    """``YYYY-MM`` of every month with at least one call in the rollup, oldest first."""
    d = daily_table.c
    stmt = select(d.ExecDateUTC).where(d.Calls > 0).distinct()
    with transaction(engine) as conn:
        days = [as_date(v) for v in conn.execute(stmt).scalars()]
    return sorted({month_of(day) for day in days})


def dead_letters(engine: Engine, month: str, *, reasons: int = 5) -> DeadLetters:
    """The dead letters received in ``month``, with the ``reasons`` commonest reasons."""
    start, end = month_bounds(month)
    t = dead_letter.c
    stmt = (
        select(t.Reason, func.count().label("n"))
        .where(t.ReceivedAtUTC >= start, t.ReceivedAtUTC < end)
        .group_by(t.Reason)
    )
    with transaction(engine) as conn:
        rows = sorted(((str(r.Reason), int(r.n)) for r in conn.execute(stmt)), key=_by_count)
    total = sum(n for _, n in rows)
    kept = rows[:reasons]
    return DeadLetters(total, kept, total - sum(n for _, n in kept))


def _by_count(row: tuple[str, int]) -> tuple[int, str]:
    return (-row[1], row[0])
