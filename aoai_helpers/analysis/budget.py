"""Budgets and allocations of a month's chargeback: what finance asks after "who spent what".

:func:`budget_burn`
    ``BusinessUnitMap.MonthlyBudget`` is per subscription; a business unit's budget is the sum
    over its mapped subscriptions (``None`` when none has one). Month-to-date cost against it,
    the share used, a linear projection to month end given an ``as_of`` time (for a closed
    month the projection is the actual cost), and a status: ``over``, ``at risk`` (the
    projection is over), ``on track`` or ``no budget``.
:func:`allocate`
    A fixed monthly amount (provisioned throughput, a support contract…) split across BUs by
    token share — pure, over the per-BU rows of :func:`aoai_helpers.analysis.report.chargeback_by_bu`
    (or an issued statement), rounded to the cent by largest remainder so that the parts add
    up to the amount exactly.

Budgets are in the rates' currency (``bu set --budget``); a BU whose calls are priced in
several currencies still gets a figure, its currency shows ``MIXED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from aoai_helpers.analysis.report import BuCharge, chargeback_rows
from aoai_helpers.clock import month_bounds, utcnow
from aoai_helpers.core.amounts import parse_amount
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import bu_map
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "Allocation",
    "AllocationBasis",
    "BudgetBurn",
    "BudgetStatus",
    "allocate",
    "budget_burn",
    "parse_amount",
]

BudgetStatus = Literal["over", "at risk", "on track", "no budget"]


@dataclass(frozen=True, slots=True)
class BudgetBurn:
    """A BU's month-to-date cost against its budget, with a linear projection to month end.

    ``status``: ``over`` (spent more than the budget), ``at risk`` (not yet, but the projection
    is over), ``on track``, or ``no budget`` (none of its subscriptions has one).
    """

    business_unit: str
    cost_centre: str | None
    budget: float | None
    cost: float
    currency: str | None
    used: float | None  # cost / budget
    projected: float  # cost at month end if the rest of the month spends like the elapsed part
    projected_used: float | None
    elapsed: float  # share of the month elapsed at ``as_of`` (1.0 for a closed month)
    status: BudgetStatus
    unpriced_calls: int


@dataclass(frozen=True, slots=True)
class Allocation:
    """One BU's part of a fixed amount (e.g. provisioned throughput) split by usage share."""

    business_unit: str
    basis: int  # the BU's tokens (or calls) the split is proportional to
    share: float
    amount: Decimal


# ----------------------------------------------------------------------------- budgets


def _budgets(conn: Connection) -> dict[str, tuple[float | None, str | None]]:
    """BU → (sum of its subscriptions' budgets or None when none has one, cost centre)."""
    b = bu_map.c
    stmt = select(
        b.BusinessUnit,
        func.sum(b.MonthlyBudget).label("budget"),
        func.count(b.MonthlyBudget).label("budgets"),
        func.max(b.CostCentre).label("cc"),
    ).group_by(b.BusinessUnit)
    return {
        r.BusinessUnit: (float(r.budget) if r.budgets else None, r.cc) for r in conn.execute(stmt)
    }


def budget_burn(
    engine: Engine,
    month: str,
    *,
    as_of: datetime | None = None,
    lines: Sequence[BuCharge] | None = None,
) -> list[BudgetBurn]:
    """Each BU's cost against its monthly budget (the sum of its subscriptions' budgets).

    ``as_of`` (UTC, default now) sets how much of the month has elapsed: the projection is
    ``cost / elapsed`` — for a closed month (``as_of`` at or after its end) the actual cost.
    ``lines`` are the per-BU figures to use (e.g. an issued statement's), else the live ones.
    BUs with a budget but no calls are listed with cost 0. Most cost first.
    """

    start, end = month_bounds(month)
    if as_of is None:
        now = utcnow()
    elif as_of.tzinfo is not None:
        now = as_of.astimezone(UTC).replace(tzinfo=None)
    else:
        now = as_of
    elapsed = min(1.0, max(0.0, (now - start) / (end - start)))
    with transaction(engine) as conn:
        rows = chargeback_rows(conn, month) if lines is None else lines
        budgets = _budgets(conn)
    charges = {c.business_unit: c for c in rows}
    out = []
    for name in charges.keys() | {k for k, (v, _) in budgets.items() if v is not None}:
        charge = charges.get(name)
        budget, cc = budgets.get(name, (None, None))
        cost = charge.cost if charge else 0.0
        projected = cost / elapsed if 0.0 < elapsed < 1.0 else cost
        status: BudgetStatus
        if budget is None:
            status = "no budget"
        elif cost > budget:
            status = "over"
        elif projected > budget:
            status = "at risk"
        else:
            status = "on track"
        out.append(
            BudgetBurn(
                business_unit=name,
                cost_centre=charge.cost_centre if charge else cc,
                budget=budget,
                cost=cost,
                currency=charge.currency if charge else None,
                used=cost / budget if budget else None,
                projected=projected,
                projected_used=projected / budget if budget else None,
                elapsed=elapsed,
                status=status,
                unpriced_calls=charge.unpriced_calls if charge else 0,
            )
        )
    out.sort(key=lambda b: (-b.cost, b.business_unit))
    return out


# ----------------------------------------------------------------------------- allocation

AllocationBasis = Literal["total_tokens", "prompt_tokens", "completion_tokens", "calls"]


def allocate(
    amount: Decimal | float | int | str,
    rows: Sequence[BuCharge],
    *,
    basis: AllocationBasis = "total_tokens",
    decimals: int = 2,
) -> list[Allocation]:
    """Split ``amount`` (e.g. a month of provisioned throughput) across the BUs of ``rows`` in
    proportion to their ``basis`` (tokens by default); pure.

    Rounded to ``decimals`` places (cents) by largest remainder, so the parts add up to
    ``amount`` exactly (ties: the larger basis, then the BU name). Raises
    :class:`ConfigError` for a negative amount, one with more decimals, or a non-zero amount
    and no usage to split it by. Same order as ``rows``.
    """
    total_amount = parse_amount(amount, decimals)
    units = int(total_amount.scaleb(decimals))  # whole cents
    weights = [int(getattr(r, basis)) for r in rows]
    if any(w < 0 for w in weights):
        raise ConfigError(f"negative {basis} in the rows to allocate by")
    total = sum(weights)
    if total == 0:
        if units:
            raise ConfigError(f"no {basis.replace('_', ' ')} in the month to allocate by")
        return [Allocation(r.business_unit, 0, 0.0, Decimal(0).scaleb(-decimals)) for r in rows]
    parts = [units * w // total for w in weights]
    remainders = [units * w % total for w in weights]
    order = sorted(
        range(len(rows)), key=lambda i: (-remainders[i], -weights[i], rows[i].business_unit)
    )
    for i in order[: units - sum(parts)]:
        parts[i] += 1
    return [
        Allocation(r.business_unit, w, w / total, Decimal(p).scaleb(-decimals))
        for r, w, p in zip(rows, weights, parts, strict=True)
    ]
