"""Chargeback queries, aggregated in SQL (portable across SQLite, PostgreSQL and Azure SQL).

Nothing here loads the call table into memory: every figure is a ``GROUP BY`` in the
database. A business unit is the ``BusinessUnitMap`` entry of the call's subscription, falling
back to the subscription name, then the subscription id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, literal, select
from sqlalchemy.engine import Engine

from .exceptions import ConfigError
from .store import bu_map, token_table, transaction

__all__ = [
    "BuCharge",
    "chargeback_by_bu",
    "latest_month",
    "month_bounds",
    "render_table",
    "unpriced_models",
]


@dataclass(frozen=True, slots=True)
class BuCharge:
    """One business unit's usage and cost for a period (``currency`` is ``MIXED`` if rates differ)."""

    business_unit: str
    cost_centre: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    currency: str | None
    estimated_cost: float
    unpriced_calls: int
    estimated_calls: int


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → (2026-11-01, 2026-12-01). Raises :class:`ConfigError` on a bad month."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ConfigError(f"month must look like 2026-11, not {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1)
    return start, end


def latest_month(engine: Engine) -> str | None:
    """The month of the most recent call, as ``YYYY-MM`` (None for an empty table)."""
    with transaction(engine) as conn:
        latest = conn.execute(select(func.max(token_table.c.ExecTimeUTC))).scalar()
    if latest is None:
        return None
    if isinstance(latest, str):  # SQLite returns aggregates of DATETIME columns as text
        latest = datetime.fromisoformat(latest)
    return f"{latest:%Y-%m}"


def chargeback_by_bu(engine: Engine, month: str) -> list[BuCharge]:
    """Per-BU calls, tokens and cost for ``month``; unpriced calls are counted, never costed at 0."""
    start, end = month_bounds(month)
    t = token_table.c
    b = bu_map.c
    bu = func.coalesce(
        b.BusinessUnit, t.SubscriptionName, t.SubscriptionId, literal("(no subscription)")
    )
    estimated = t.UsageSource.in_(["estimated", "prompt_only"])
    unpriced = case((t.Cost.is_(None), 1), else_=0)
    stmt = (
        select(
            bu.label("bu"),
            func.max(b.CostCentre).label("cc"),
            func.count().label("calls"),
            func.sum(t.PromptTokens).label("prompt"),
            func.sum(t.CompletionTokens).label("completion"),
            func.sum(t.TotalTokens).label("total"),
            func.sum(func.coalesce(t.Cost, 0.0)).label("cost"),
            func.max(t.Currency).label("currency"),
            func.min(t.Currency).label("currency_min"),
            func.sum(case((estimated, func.coalesce(t.Cost, 0.0)), else_=0.0)).label("est_cost"),
            func.sum(unpriced).label("unpriced"),
            func.sum(case((estimated, 1), else_=0)).label("est_calls"),
        )
        .select_from(token_table.outerjoin(bu_map, b.SubscriptionId == t.SubscriptionId))
        .where(t.ExecTimeUTC >= start, t.ExecTimeUTC < end)
        .group_by(bu)
        .order_by(func.sum(func.coalesce(t.Cost, 0.0)).desc(), bu)
    )
    with transaction(engine) as conn:
        rows = conn.execute(stmt).all()
    return [
        BuCharge(
            business_unit=r.bu,
            cost_centre=r.cc,
            calls=int(r.calls),
            prompt_tokens=int(r.prompt or 0),
            completion_tokens=int(r.completion or 0),
            total_tokens=int(r.total or 0),
            cost=float(r.cost or 0.0),
            currency=r.currency if r.currency == r.currency_min else "MIXED",
            estimated_cost=float(r.est_cost or 0.0),
            unpriced_calls=int(r.unpriced or 0),
            estimated_calls=int(r.est_calls or 0),
        )
        for r in rows
    ]


def unpriced_models(engine: Engine, month: str) -> list[tuple[str, int]]:
    """Models with calls but no rate in ``month``, with their call counts (most calls first)."""
    start, end = month_bounds(month)
    t = token_table.c
    model = func.coalesce(t.ModelName, literal("unknown"))
    stmt = (
        select(model.label("model"), func.count().label("calls"))
        .where(t.ExecTimeUTC >= start, t.ExecTimeUTC < end, t.Cost.is_(None))
        .group_by(model)
        .order_by(func.count().desc(), model)
    )
    with transaction(engine) as conn:
        return [(r.model, int(r.calls)) for r in conn.execute(stmt)]


def render_table(
    rows: list[BuCharge], month: str, unpriced: list[tuple[str, int]] | None = None
) -> str:
    """A plain-text table of :func:`chargeback_by_bu` for terminals and logs."""
    header = (
        "Business unit",
        "Cost centre",
        "Calls",
        "Prompt tok",
        "Completion tok",
        "Cost",
        "Cur",
        "Estimated",
        "Unpriced",
    )
    body = [
        (
            r.business_unit,
            r.cost_centre or "-",
            f"{r.calls:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            f"{r.cost:,.4f}",
            r.currency or "-",
            f"{(r.estimated_cost / r.cost * 100) if r.cost else 0:.1f}%",
            f"{r.unpriced_calls:,}" if r.unpriced_calls else "-",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
    numeric = {2, 3, 4, 5, 7, 8}

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [
        f"Chargeback {month} (cost in the rate's currency; 'Estimated' = share of cost from estimated tokens)"
    ]
    lines += [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in body]
    if not body:
        lines.append("(no calls in this month)")
    totals: dict[str, float] = {}
    for r in rows:
        totals[r.currency or "unpriced"] = totals.get(r.currency or "unpriced", 0.0) + r.cost
    unpriced_calls = sum(r.unpriced_calls for r in rows)
    if body:
        lines.append(
            "Total: "
            + ", ".join(f"{v:,.4f} {k}" for k, v in totals.items() if k != "unpriced")
            + (
                f"; {unpriced_calls:,} unpriced call(s) — add their rates: python -m aoai_helpers rates set MODEL --input … --output …"
                if unpriced_calls
                else ""
            )
        )
    if unpriced:
        lines.append("Unpriced models: " + ", ".join(f"{m} ({n:,} calls)" for m, n in unpriced))
    return "\n".join(lines)
