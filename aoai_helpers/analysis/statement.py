"""Issued chargeback statements: a month's per-BU figures, snapshotted when issued.

Contract §4: "Issued statements are snapshotted so a closed month does not change when rates
are edited". ``rates set`` / ``rates reprice`` rewrite ``ApimAoaiToken.Cost``; a statement
already sent to the business units must not move with them. :func:`issue_statement` copies
the live per-BU figures of a month (:func:`aoai_helpers.analysis.report.chargeback_by_bu`) into
``ChargebackStatement`` with the time of issue; :func:`statement` answers the issued
snapshot when there is one, else the live figures, and says which; :func:`statement_drift`
compares the two after a reprice (``report --month M --reissue`` replaces the snapshot).

:func:`month_report` gathers everything a month's finance report shows — the statement,
budgets, an allocation, and per BU the model mix, daily trend and top users — for
:mod:`aoai_helpers.analysis.export` and the notebooks, with what the workbook's Notes sheet
states: the rates that priced the month's calls (:func:`rates_used`, with their sources and
effective dates), the unpriced models, the provisional calls still inside the reconcile
window, and the drift of an issued statement.

Statement id: an issued statement is ``CS-<month>-<issue time, UTC, to the second>``
(``CS-2026-11-20261201T093000Z``): stable for as long as that snapshot stands, new when it is
reissued. Live figures have no id: :data:`LIVE_ID` says so.

Table
-----
``ChargebackStatement``  (Month, Line) → BusinessUnit, CostCentre, Calls, PromptTokens,
CompletionTokens, TotalTokens, Cost, Currency, EstimatedCost, UnpricedCalls, EstimatedCalls,
IssuedAtUTC. Defined in :mod:`aoai_helpers.db.tables` (``statement_metadata`` is its one
``MetaData``), it is created on first issue (``checkfirst``), like the checkpoint tables, so
reading a database that never issued one needs no schema change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.engine import Connection, Engine

from aoai_helpers.analysis.budget import Allocation, BudgetBurn, allocate, budget_burn
from aoai_helpers.analysis.ledger import ledger
from aoai_helpers.analysis.report import (
    BuCharge,
    DailyUsage,
    ModelUsage,
    UserUsage,
    chargeback_rows,
    daily_trend,
    month_bounds,
    top_users,
    unpriced_models,
    usage_by_model,
)
from aoai_helpers.clock import utcnow
from aoai_helpers.core.money import minor_units
from aoai_helpers.core.pricing import Rate
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.tables import STATEMENT_TABLES, statement_table, token_table
from aoai_helpers.db.tables import metadata as statement_metadata
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.pipeline.reconcile import ProvisionalRows, provisional_rows

__all__ = [
    "DEFAULT_GRACE",
    "LIVE_ID",
    "LineDrift",
    "MonthReport",
    "RateUse",
    "Statement",
    "issue_statement",
    "issued_months",
    "month_report",
    "rates_used",
    "statement",
    "statement_drift",
    "statement_metadata",
    "statement_table",
]

#: Relative difference below which issued and live costs count as equal (float sums).
_TOLERANCE: Final = 1e-9
#: How long a provisional call may wait for the language-model log before its month may be
#: issued (the spec's ``reconcile.grace_hours`` default).
DEFAULT_GRACE: Final = timedelta(hours=6)

StatementStatus = Literal["issued", "live"]
#: The statement id of live figures (not issued: nothing to file under an id).
LIVE_ID: Final = "live — not issued"


@dataclass(frozen=True, slots=True)
class Statement:
    """A month's per-BU figures: as issued (a snapshot) or live (computed from the calls now)."""

    month: str
    status: StatementStatus
    issued_at: datetime | None  # naive UTC; None when live
    lines: list[BuCharge]

    @property
    def issued(self) -> bool:
        """True for an issued snapshot."""
        return self.status == "issued"

    @property
    def statement_id(self) -> str:
        """``CS-2026-11-20261201T093000Z`` for a statement issued 2026-12-01 09:30 UTC (stable
        while that snapshot stands); :data:`LIVE_ID` for live figures."""
        if self.issued_at is None:
            return LIVE_ID
        return f"CS-{self.month}-{self.issued_at:%Y%m%dT%H%M%SZ}"

    def describe(self) -> str:
        """One line: ``issued 2026-12-01 09:00 UTC`` or ``live (not issued)``, with the share
        of the cost that was provisional when there is one."""
        cost = sum(line.cost for line in self.lines)
        provisional = sum(line.estimated_cost for line in self.lines)
        share = (
            f"; {provisional / cost:.1%} of the cost provisional" if cost and provisional else ""
        )
        if self.issued_at is None:
            return "live (not issued)" + share
        return f"issued {self.issued_at:%Y-%m-%d %H:%M} UTC" + share


@dataclass(frozen=True, slots=True)
class LineDrift:
    """One BU's issued figures against its live ones (either side may be missing)."""

    business_unit: str
    issued: BuCharge | None
    live: BuCharge | None

    @property
    def cost_delta(self) -> float:
        """Live cost minus issued cost."""
        return (self.live.cost if self.live else 0.0) - (self.issued.cost if self.issued else 0.0)

    @property
    def changed(self) -> bool:
        """True when calls, tokens, currency, unpriced calls or cost (beyond float noise) differ."""
        a, b = self.issued, self.live
        if a is None or b is None:
            return a is not b
        same = (a.calls, a.total_tokens, a.currency, a.unpriced_calls) == (
            b.calls,
            b.total_tokens,
            b.currency,
            b.unpriced_calls,
        )
        return not (same and math.isclose(a.cost, b.cost, rel_tol=_TOLERANCE, abs_tol=1e-12))


def _has_table(conn: Connection) -> bool:
    return inspect(conn).has_table(statement_table.name)


def _issued(conn: Connection, month: str) -> tuple[datetime, list[BuCharge]] | None:
    if not _has_table(conn):
        return None
    s = statement_table.c
    rows = conn.execute(select(statement_table).where(s.Month == month).order_by(s.Line)).all()
    if not rows:
        return None
    lines = [
        BuCharge(
            business_unit=r.BusinessUnit,
            cost_centre=r.CostCentre,
            calls=int(r.Calls),
            prompt_tokens=int(r.PromptTokens),
            completion_tokens=int(r.CompletionTokens),
            total_tokens=int(r.TotalTokens),
            cost=float(r.Cost),
            currency=r.Currency,
            estimated_cost=float(r.EstimatedCost),
            unpriced_calls=int(r.UnpricedCalls),
            estimated_calls=int(r.EstimatedCalls),
        )
        for r in rows
    ]
    return rows[0].IssuedAtUTC, lines


def statement(engine: Engine, month: str) -> Statement:
    """The issued statement of ``month`` if there is one, else the live figures (flagged)."""
    month_bounds(month)
    with transaction(engine) as conn:
        issued = _issued(conn, month)
        if issued is not None:
            return Statement(month, "issued", issued[0], issued[1])
        return Statement(month, "live", None, chargeback_rows(conn, month))


def issue_statement(
    engine: Engine,
    month: str,
    *,
    reissue: bool = False,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    allow_provisional: bool = False,
) -> Statement:
    """Snapshot the live per-BU figures of ``month`` as its issued statement; return it.

    Refuses (:class:`ConfigError`) a month already issued unless ``reissue`` (which replaces
    the snapshot), a month without calls, and — unless ``allow_provisional`` — a month with
    provisional calls still inside the ``grace`` window (``prompt_only`` / ``estimated``
    event-v2 rows younger than ``grace``: APIM's language-model log may still give their exact
    usage, :mod:`aoai_helpers.pipeline.reconcile`). Provisional rows past the window (unmatched) do not
    stop it. Each line keeps its provisional cost and calls (``EstimatedCost``,
    ``EstimatedCalls``), so the statement says which share was provisional. One transaction:
    the snapshot is all there or not at all.
    """
    start, end = month_bounds(month)
    clock_now = now or utcnow()
    issued_at = clock_now.replace(microsecond=0)
    with transaction(engine) as conn:
        statement_metadata.create_all(conn, tables=STATEMENT_TABLES, checkfirst=True)
        previous = _issued(conn, month)
        if previous is not None and not reissue:
            raise ConfigError(
                f"the statement of {month} was issued {previous[0]:%Y-%m-%d %H:%M} UTC; "
                "reissue it to replace it (report --month " + month + " --reissue)"
            )
        pending = provisional_rows(conn, start=max(start, clock_now - grace), end=end)
        if pending.calls and not allow_provisional:
            hours = grace.total_seconds() / 3600
            raise ConfigError(
                f"{month} has {pending.calls:,} provisional call(s) (cost so far "
                f"{pending.cost:,.4f}) younger than the {hours:g} h grace window: APIM's "
                "language-model log may still give their exact usage; run `reconcile` or wait, "
                "or issue anyway with --allow-provisional (the statement records the "
                "provisional share)"
            )
        lines = chargeback_rows(conn, month)
        if not lines:
            raise ConfigError(f"no calls in {month}: there is no statement to issue")
        conn.execute(delete(statement_table).where(statement_table.c.Month == month))
        conn.execute(
            statement_table.insert(),
            [_statement_row(month, i, line, issued_at) for i, line in enumerate(lines, start=1)],
        )
    return Statement(month, "issued", issued_at, lines)


def _statement_row(month: str, number: int, line: BuCharge, issued_at: datetime) -> dict[str, Any]:
    """One ``ChargebackStatement`` row: the BU's figures as issued."""
    return {
        "Month": month,
        "Line": number,
        "BusinessUnit": line.business_unit,
        "CostCentre": line.cost_centre,
        "Calls": line.calls,
        "PromptTokens": line.prompt_tokens,
        "CompletionTokens": line.completion_tokens,
        "TotalTokens": line.total_tokens,
        "Cost": line.cost,
        "Currency": line.currency,
        "EstimatedCost": line.estimated_cost,
        "UnpricedCalls": line.unpriced_calls,
        "EstimatedCalls": line.estimated_calls,
        "IssuedAtUTC": issued_at,
    }


def issued_months(engine: Engine) -> list[tuple[str, datetime]]:
    """Every issued month with its time of issue (oldest month first)."""
    with transaction(engine) as conn:
        if not _has_table(conn):
            return []
        s = statement_table.c
        stmt = select(s.Month, s.IssuedAtUTC).where(s.Line == 1).order_by(s.Month)
        return [(r.Month, r.IssuedAtUTC) for r in conn.execute(stmt)]


def statement_drift(engine: Engine, month: str) -> list[LineDrift]:
    """Issued against live figures, one entry per BU on either side (issued order, then new
    BUs); empty when ``month`` was never issued. Filter on :attr:`LineDrift.changed`."""
    month_bounds(month)
    with transaction(engine) as conn:
        issued = _issued(conn, month)
        if issued is None:
            return []
        live = {c.business_unit: c for c in chargeback_rows(conn, month)}
    out = [LineDrift(i.business_unit, i, live.pop(i.business_unit, None)) for i in issued[1]]
    out += [LineDrift(name, None, charge) for name, charge in live.items()]
    return out


# ----------------------------------------------------------------------------- the month


@dataclass(frozen=True, slots=True)
class RateUse:
    """A rate that priced calls of a month (``AoaiTokenRate`` row) and how many it priced."""

    rate_id: int
    rate: Rate | None  # None: the RateId is no longer in AoaiTokenRate
    model: str  # the calls' model (the pricing key)
    calls: int
    cost: float


def rates_used(conn: Connection, month: str) -> list[RateUse]:
    """The rates the month's calls are priced at now (``ApimAoaiToken.RateId``), by model and
    start; one pass over the month's rows (the rollup has no rate column)."""
    start, end = month_bounds(month)
    t = token_table.c
    stmt = (
        select(
            t.RateId,
            func.max(t.ModelName).label("model"),
            func.count().label("calls"),
            func.sum(t.Cost).label("cost"),
        )
        .where(t.ExecDateUTC >= start, t.ExecDateUTC < end, t.RateId.is_not(None))
        .group_by(t.RateId)
    )
    rows = list(conn.execute(stmt))
    rates = {r.rate_id: r for r in read_rates(conn)} if rows else {}
    out = [
        RateUse(
            int(r.RateId),
            rates.get(int(r.RateId)),
            str(rates[int(r.RateId)].model_name if int(r.RateId) in rates else r.model),
            int(r.calls),
            float(r.cost or 0.0),
        )
        for r in rows
    ]
    return sorted(
        out, key=lambda u: (u.model, u.rate.effective_from if u.rate else datetime.min, u.rate_id)
    )


@dataclass(frozen=True, slots=True)
class MonthReport:
    """Everything the finance report of one month shows (built by :func:`month_report`).

    The fields after ``as_of`` (rates used, unpriced models, provisional calls still inside
    the reconcile window, drift since issue) feed the workbook's Notes sheet; they default
    to "nothing known" for a report built by hand.
    """

    month: str
    statement: Statement
    budgets: list[BudgetBurn]
    by_model: list[ModelUsage]
    daily: list[DailyUsage]
    top_users: list[UserUsage]  # the first ``top`` of each BU
    allocation_amount: Decimal | None
    allocation: list[Allocation] | None  # in statement order
    as_of: datetime
    rates: list[RateUse] = field(default_factory=list)
    unpriced: list[tuple[str, int]] = field(default_factory=list)  # (model, calls)
    pending: ProvisionalRows | None = None  # provisional calls still inside the window
    grace: timedelta = DEFAULT_GRACE
    drift: list[LineDrift] = field(default_factory=list)  # changed BUs since issue

    def business_units(self) -> list[str]:
        """The statement's BUs, in its order."""
        return [line.business_unit for line in self.statement.lines]

    def currency(self) -> str | None:
        """The statement's one currency; None when it has several (or none priced)."""
        return ledger(self.statement.lines).single_currency()

    def with_allocation(self, amount: Decimal | float | str) -> MonthReport:
        """The same report with ``amount`` split across its BUs by token share, to the minor
        unit of the statement's currency (cents when it has several)."""
        currency = self.currency()
        places = minor_units(currency) if currency else 2
        allocation = allocate(amount, self.statement.lines, decimals=places)
        total = sum((a.amount for a in allocation), Decimal(0).scaleb(-places))
        return replace(self, allocation_amount=total, allocation=allocation)


def month_report(
    engine: Engine,
    month: str,
    *,
    allocate_amount: Decimal | float | str | None = None,
    top: int = 10,
    as_of: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> MonthReport:
    """Statement (issued, else live), budgets, allocation of ``allocate_amount`` by token share,
    model mix, daily trend and the ``top`` users of each BU, for ``month``; and for the notes,
    the rates used, the unpriced models, the provisional calls younger than ``grace`` at
    ``as_of`` (default now) and the BUs changed since issue."""
    now = as_of or utcnow()
    stmt = statement(engine, month)
    start, end = month_bounds(month)
    naive = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    with transaction(engine) as conn:
        rates = rates_used(conn, month)
        pending = provisional_rows(conn, start=max(start, naive - grace), end=end)
    report = MonthReport(
        month=month,
        statement=stmt,
        budgets=budget_burn(engine, month, as_of=now, lines=stmt.lines),
        by_model=usage_by_model(engine, month),
        daily=daily_trend(engine, month),
        top_users=top_users(engine, month, limit=top, per_bu=True),
        allocation_amount=None,
        allocation=None,
        as_of=now,
        rates=rates,
        unpriced=unpriced_models(engine, month),
        pending=pending,
        grace=grace,
        drift=[d for d in statement_drift(engine, month) if d.changed] if stmt.issued else [],
    )
    return report if allocate_amount is None else report.with_allocation(allocate_amount)
