"""Chargeback queries (this module owns every query of the call table for a report), aggregated in SQL (portable across SQLite, PostgreSQL and Azure SQL).

Nothing here loads the call table into memory: every figure is a ``GROUP BY`` in the
database, and Python only turns the few aggregated rows into dataclasses. A business unit is
the ``BusinessUnitMap`` entry of the call's subscription, falling back to the subscription
name, then the subscription id.

How a month is queried (milliseconds at any row count, ``benchmarks/report.py``): the inner
query reads the month's rows of the daily rollup ``AoaiUsageDaily`` (:mod:`aoai_helpers.db.rollup`:
the calls summed per day, subscription, model, deployment, usage source and currency, kept in
the same transaction as the calls by every writer) — a few thousand rows whatever the number
of calls — which the outer query joins to the small BU map and groups as each report needs.
Only :func:`top_users` (users are not a rollup column) and :func:`latest_month` (an index
seek) read the call table. Token sums are cast to BIGINT (SQL Server's
``SUM(int)`` is an ``int`` and overflows past 2**31).

Money: a call with no rate (``Cost`` NULL) is *unpriced*: counted in ``unpriced_calls`` and
left out of ``cost``, never costed as 0. Where every call of a group is unpriced the new
row types report ``cost=None``; :class:`BuCharge` (the statement line) keeps ``0.0`` plus the
count. A group whose priced calls have different currencies shows ``MIXED``.

Budgets and allocations: :mod:`aoai_helpers.analysis.budget`; issued statements (snapshots) and the
whole month for the exports: :mod:`aoai_helpers.analysis.statement`; the text table:
:mod:`aoai_helpers.analysis.text`; files: :mod:`aoai_helpers.analysis.export`; figures:
:mod:`aoai_helpers.analysis.charts`. This module imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection, Engine

from aoai_helpers import clock
from aoai_helpers.clock import month_bounds
from aoai_helpers.db.engine import as_date, transaction
from aoai_helpers.db.tables import DAILY_KEY, bu_map, daily_table, token_table
from aoai_helpers.db.views import ESTIMATED_SOURCES, NO_SUBSCRIPTION
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "ESTIMATED_SOURCES",
    "MIXED",
    "NO_SUBSCRIPTION",
    "BuCharge",
    "DailyUsage",
    "ModelUsage",
    "SubscriptionUsage",
    "UserUsage",
    "chargeback_by_bu",
    "chargeback_rows",
    "daily_trend",
    "latest_month",
    "month_bounds",
    "top_subscriptions",
    "top_users",
    "unpriced_models",
    "usage_by_model",
]

#: The currency shown for a group whose priced calls have different currencies.
MIXED: Final = "MIXED"


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


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One BU's calls of one model through one deployment in a month."""

    business_unit: str
    model: str
    deployment: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost: float | None  # None: no call of the group is priced
    currency: str | None
    estimated_cost: float
    estimated_calls: int
    unpriced_calls: int

    @property
    def estimated_share(self) -> float:
        """Share of the cost that comes from estimated (not reported) token counts."""
        return self.estimated_cost / self.cost if self.cost else 0.0


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One BU's usage on one day (UTC)."""

    day: date
    business_unit: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None
    currency: str | None
    unpriced_calls: int


@dataclass(frozen=True, slots=True)
class SubscriptionUsage:
    """One APIM subscription's usage in a month (a row of :func:`top_subscriptions`)."""

    subscription_id: str | None
    subscription_name: str | None
    business_unit: str
    calls: int
    total_tokens: int
    cost: float | None
    currency: str | None
    unpriced_calls: int


@dataclass(frozen=True, slots=True)
class UserUsage:
    """One user's usage within one BU in a month (a row of :func:`top_users`)."""

    user_name: str | None
    user_email: str | None
    business_unit: str
    calls: int
    total_tokens: int
    cost: float | None
    currency: str | None
    unpriced_calls: int


# ----------------------------------------------------------------------------- month


def latest_month(engine: Engine) -> str | None:
    """The default report month: that of the most recent call up to now (:mod:`aoai_helpers.clock`),
    as ``YYYY-MM``; None when there is no such call.

    Calls stamped after the clock (the clock set back with ``AOAI_NOW``) are not taken.
    """
    with transaction(engine) as conn:
        latest = conn.execute(
            select(func.max(token_table.c.ExecTimeUTC)).where(
                token_table.c.ExecTimeUTC <= clock.utcnow()
            )
        ).scalar()
    if latest is None:
        return None
    if isinstance(latest, str):  # SQLite returns aggregates of DATETIME columns as text
        latest = datetime.fromisoformat(latest)
    return f"{latest:%Y-%m}"


# ----------------------------------------------------------------------------- SQL building


#: The rollup's text key columns, '' standing for NULL (:mod:`aoai_helpers.db.rollup`).
_TEXT_KEYS: Final = DAILY_KEY[1:]


def _big_sum(column: Any) -> ColumnElement[Any]:
    return func.sum(cast(column, BigInteger))


def _sums() -> list[ColumnElement[Any]]:
    """Calls, token sums, cost and priced calls of a group of calls (the cube's measures)."""
    t = token_table.c
    return [
        func.count().label("calls"),
        _big_sum(t.PromptTokens).label("prompt"),
        _big_sum(t.CompletionTokens).label("completion"),
        _big_sum(t.CachedTokens).label("cached"),
        _big_sum(t.TotalTokens).label("total"),
        func.sum(t.Cost).label("cost"),
        func.count(t.Cost).label("priced"),
    ]


def _cube(start: datetime, end: datetime) -> Subquery:
    """The month's groups of calls, read from the daily rollup (see the module docstring)."""
    d = daily_table.c
    return (
        select(
            d.ExecDateUTC,
            *(_absent(d[k]).label(k) for k in _TEXT_KEYS),
            d.Calls.label("calls"),
            d.PromptTokens.label("prompt"),
            d.CompletionTokens.label("completion"),
            d.CachedTokens.label("cached"),
            d.TotalTokens.label("total"),
            d.Cost.label("cost"),
            d.PricedCalls.label("priced"),
        )
        .where(d.ExecDateUTC >= start, d.ExecDateUTC < end)
        .subquery("cube")
    )


def _absent(column: Any) -> ColumnElement[Any]:
    """A rollup key column with its '' read back as NULL (the calls' missing value)."""
    return func.nullif(column, literal_column("''"))


def _labelled(inner: Subquery) -> Subquery:
    """``inner`` with its business unit (``bu``) and the BU map's cost centre (``cc``)."""
    c = inner.c
    bu = func.coalesce(
        bu_map.c.BusinessUnit,
        c.SubscriptionName,
        c.SubscriptionId,
        literal_column(f"'{NO_SUBSCRIPTION}'"),
    )
    return (
        select(inner, bu.label("bu"), bu_map.c.CostCentre.label("cc"))
        .select_from(inner.outerjoin(bu_map, bu_map.c.SubscriptionId == c.SubscriptionId))
        .subquery("u")
    )


def _measures(u: Subquery) -> list[ColumnElement[Any]]:
    """The sums every report row carries, over a :func:`_labelled` cube."""
    estimated = u.c.UsageSource.in_(ESTIMATED_SOURCES)
    return [
        _big_sum(u.c.calls).label("calls"),
        _big_sum(u.c.prompt).label("prompt"),
        _big_sum(u.c.completion).label("completion"),
        _big_sum(u.c.cached).label("cached"),
        _big_sum(u.c.total).label("total"),
        # no cost where no call has a rate: the unpriced calls' group may hold unbilled ones
        # (a 429: cost 0, no currency), whose 0 is not the group's price
        case(
            (and_(func.max(u.c.Currency).is_(None), _big_sum(u.c.calls - u.c.priced) > 0), None),
            else_=func.sum(u.c.cost),
        ).label("cost"),
        _big_sum(u.c.calls - u.c.priced).label("unpriced"),
        func.min(u.c.Currency).label("cur_min"),
        func.max(u.c.Currency).label("cur_max"),
        func.sum(case((estimated, u.c.cost), else_=0.0)).label("est_cost"),
        _big_sum(case((estimated, u.c.calls), else_=0)).label("est_calls"),
    ]


def _month_view(month: str, bu: str | None) -> Subquery:
    start, end = month_bounds(month)
    u = _labelled(_cube(start, end))
    if bu is None:
        return u
    return select(u).where(u.c.bu == bu).subquery("f")


def _currency(row: Any) -> str | None:
    return row.cur_max if row.cur_max == row.cur_min else MIXED


def _cost(value: Any) -> float | None:
    return None if value is None else float(value)


def _rank_key(row: Any) -> tuple[float, str]:
    return (-float(row.cost or 0.0), str(row.bu))


# ----------------------------------------------------------------------------- per BU


def chargeback_rows(conn: Connection, month: str, bu: str | None = None) -> list[BuCharge]:
    u = _month_view(month, bu)
    stmt = select(u.c.bu, func.max(u.c.cc).label("cc"), *_measures(u)).group_by(u.c.bu)
    rows = sorted(conn.execute(stmt).all(), key=_rank_key)
    return [
        BuCharge(
            business_unit=r.bu,
            cost_centre=r.cc,
            calls=int(r.calls),
            prompt_tokens=int(r.prompt or 0),
            completion_tokens=int(r.completion or 0),
            total_tokens=int(r.total or 0),
            cost=float(r.cost or 0.0),
            currency=_currency(r),
            estimated_cost=float(r.est_cost or 0.0),
            unpriced_calls=int(r.unpriced or 0),
            estimated_calls=int(r.est_calls or 0),
        )
        for r in rows
    ]


def chargeback_by_bu(engine: Engine, month: str, *, bu: str | None = None) -> list[BuCharge]:
    """Per-BU calls, tokens and cost for ``month`` (most cost first); ``bu`` keeps one BU.

    Unpriced calls are counted, never costed at 0.
    """
    with transaction(engine) as conn:
        return chargeback_rows(conn, month, bu)


def usage_by_model(engine: Engine, month: str, *, bu: str | None = None) -> list[ModelUsage]:
    """Per BU, model and deployment: calls, tokens (prompt, completion, cached), cost, currency,
    estimated part, unpriced calls — by BU, then most cost first."""
    u = _month_view(month, bu)
    model = func.coalesce(u.c.ModelName, literal_column("'unknown'")).label("model")
    stmt = select(u.c.bu, model, u.c.DeploymentName, *_measures(u)).group_by(
        u.c.bu, model, u.c.DeploymentName
    )
    with transaction(engine) as conn:
        rows = list(conn.execute(stmt).all())
    rows.sort(key=lambda r: (str(r.bu), -float(r.cost or 0.0), -int(r.total or 0), str(r.model)))
    return [
        ModelUsage(
            business_unit=r.bu,
            model=r.model,
            deployment=r.DeploymentName,
            calls=int(r.calls),
            prompt_tokens=int(r.prompt or 0),
            completion_tokens=int(r.completion or 0),
            cached_tokens=int(r.cached or 0),
            total_tokens=int(r.total or 0),
            cost=_cost(r.cost),
            currency=_currency(r),
            estimated_cost=float(r.est_cost or 0.0),
            estimated_calls=int(r.est_calls or 0),
            unpriced_calls=int(r.unpriced or 0),
        )
        for r in rows
    ]


def daily_trend(engine: Engine, month: str, *, bu: str | None = None) -> list[DailyUsage]:
    """Per day (UTC) and BU: calls, tokens, cost — by day, then BU. Days without calls are absent."""
    u = _month_view(month, bu)
    stmt = select(u.c.ExecDateUTC, u.c.bu, *_measures(u)).group_by(u.c.ExecDateUTC, u.c.bu)
    with transaction(engine) as conn:
        rows = list(conn.execute(stmt).all())
    out = [
        DailyUsage(
            day=as_date(r.ExecDateUTC),
            business_unit=r.bu,
            calls=int(r.calls),
            prompt_tokens=int(r.prompt or 0),
            completion_tokens=int(r.completion or 0),
            total_tokens=int(r.total or 0),
            cost=_cost(r.cost),
            currency=_currency(r),
            unpriced_calls=int(r.unpriced or 0),
        )
        for r in rows
    ]
    out.sort(key=lambda d: (d.day, d.business_unit))
    return out


def _top(
    conn: Connection, grouped: Any, keys: Sequence[str], limit: int, per_bu: bool
) -> list[Any]:
    """The first ``limit`` rows of ``grouped`` by cost then tokens (per BU: ROW_NUMBER)."""
    if limit < 1:
        raise ConfigError(f"limit must be at least 1, not {limit}")
    g = grouped.subquery("g")
    order = (
        func.coalesce(g.c.cost, 0.0).desc(),
        g.c.total.desc(),
        *(func.coalesce(g.c[k], literal_column("''")) for k in keys),
    )
    rank = func.row_number().over(partition_by=g.c.bu if per_bu else None, order_by=order)
    ranked = select(g, rank.label("rn")).subquery("r")
    stmt = select(ranked).where(ranked.c.rn <= limit)
    rows = list(conn.execute(stmt).all())
    rows.sort(key=lambda r: (str(r.bu) if per_bu else "", int(r.rn)))
    return rows


def _ranked_totals(r: Any) -> dict[str, Any]:
    """The fields :class:`SubscriptionUsage` and :class:`UserUsage` share, from a ranked row."""
    return {
        "business_unit": r.bu,
        "calls": int(r.calls),
        "total_tokens": int(r.total or 0),
        "cost": _cost(r.cost),
        "currency": _currency(r),
        "unpriced_calls": int(r.unpriced or 0),
    }


def top_subscriptions(
    engine: Engine, month: str, *, bu: str | None = None, limit: int = 10, per_bu: bool = False
) -> list[SubscriptionUsage]:
    """The ``limit`` APIM subscriptions with the most cost, then tokens (``per_bu``: in each BU)."""
    u = _month_view(month, bu)
    grouped = select(
        u.c.SubscriptionId,
        func.max(u.c.SubscriptionName).label("name"),
        u.c.bu,
        *_measures(u),
    ).group_by(u.c.SubscriptionId, u.c.bu)
    with transaction(engine) as conn:
        rows = _top(conn, grouped, ["SubscriptionId"], limit, per_bu)
    return [
        SubscriptionUsage(
            subscription_id=r.SubscriptionId, subscription_name=r.name, **_ranked_totals(r)
        )
        for r in rows
    ]


def top_users(
    engine: Engine, month: str, *, bu: str | None = None, limit: int = 10, per_bu: bool = False
) -> list[UserUsage]:
    """The ``limit`` users (``UserName`` / ``UserEmail``, within a BU) with the most cost, then
    tokens; ``per_bu``: the first ``limit`` of each BU (by BU, then rank)."""
    start, end = month_bounds(month)
    t = token_table.c
    # users are not in the covering index: one pass over the month's rows (~2.5 s per 1M on
    # SQLite, against ~0.4 s for the other reports; only the workbook and notebooks ask)
    # the rollup's rule for the subscription: an empty text is no value ('' reads as NULL)
    sub_id, sub_name = (_absent(t.SubscriptionId), _absent(t.SubscriptionName))
    keys = (sub_id, sub_name, t.UserName, t.UserEmail)
    inner = (
        select(
            sub_id.label("SubscriptionId"),
            sub_name.label("SubscriptionName"),
            t.UserName,
            t.UserEmail,
            t.UsageSource,
            t.Currency,
            *_sums(),
        )
        .where(t.ExecDateUTC >= start, t.ExecDateUTC < end)
        .group_by(*keys, t.UsageSource, t.Currency)
        .subquery("cube")
    )
    u = _labelled(inner)
    if bu is not None:
        u = select(u).where(u.c.bu == bu).subquery("f")
    grouped = select(u.c.UserName, u.c.UserEmail, u.c.bu, *_measures(u)).group_by(
        u.c.UserName, u.c.UserEmail, u.c.bu
    )
    with transaction(engine) as conn:
        rows = _top(conn, grouped, ["UserName", "UserEmail"], limit, per_bu)
    return [
        UserUsage(user_name=r.UserName, user_email=r.UserEmail, **_ranked_totals(r)) for r in rows
    ]


def unpriced_models(engine: Engine, month: str) -> list[tuple[str, int]]:
    """Models with calls but no rate in ``month``, with their call counts (most calls first)."""
    start, end = month_bounds(month)
    d = daily_table.c
    model = func.coalesce(_absent(d.ModelName), literal_column("'unknown'"))
    unpriced = _big_sum(d.Calls - d.PricedCalls)
    stmt = (
        select(model.label("model"), unpriced.label("calls"))
        .where(d.ExecDateUTC >= start, d.ExecDateUTC < end)
        .group_by(model)
        .having(unpriced > 0)
    )
    with transaction(engine) as conn:
        rows = [(str(r.model), int(r.calls)) for r in conn.execute(stmt)]
    return sorted(rows, key=lambda r: (-r[1], r[0]))
