"""Views for Power BI and other SQL readers: the chargeback with the business-unit mapping
applied in SQL, in all three dialects (SQLite, PostgreSQL, SQL Server / Azure SQL).

The mapping of a subscription to its business unit used to live only in Python
(:mod:`aoai_helpers.analysis.report`); these views apply the same rule in the database, so a
report built on them shows the same per-BU figures as ``report``:

* business unit: the ``BusinessUnitMap`` entry of the subscription, else the subscription
  name, else the subscription id, else :data:`NO_SUBSCRIPTION` (an empty text counts as
  none, as in the daily rollup);
* unpriced is never 0: ``Cost`` is NULL where no call of the row has a rate, and
  ``UnpricedCalls`` / ``PriceStatus`` say so;
* estimated: the usage source is one of :data:`ESTIMATED_SOURCES` (tokens counted by the
  gateway, not reported by the API).

``vw_AoaiChargebackDaily``   one row per day and rollup group of ``AoaiUsageDaily`` (day,
                             subscription, model, deployment, usage source, currency)
``vw_AoaiChargebackMonthly`` per month (``YYYY-MM``), business unit and currency
``vw_AoaiPricedCalls``       one row per call of ``ApimAoaiToken``

They are part of the schema: migration 0005 creates them (``db init`` / ``db upgrade``),
``db ddl`` prints them, ``sql/aoaieventdb.sql`` and ``sql/migrate_from_original.sql`` carry
them. Each statement replaces a view that exists, so a later definition lands: SQL Server's
``CREATE OR ALTER VIEW`` (SQL Server 2016 SP1 and later, Azure SQL Database —
https://learn.microsoft.com/en-us/sql/t-sql/statements/create-view-transact-sql), PostgreSQL's
``CREATE OR REPLACE VIEW`` (which keeps grants; :func:`ensure_views` drops and creates where
the old columns differ, which PostgreSQL refuses to replace), SQLite's ``DROP VIEW IF EXISTS``
+ ``CREATE VIEW``. Pure definitions apart from :func:`ensure_views` and :func:`drop_views`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    cast,
    func,
    inspect,
    literal_column,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.sqltypes import Date

from aoai_helpers.db.rollup import TOKEN_COLUMNS
from aoai_helpers.db.tables import bu_map, daily_table, token_table

__all__ = [
    "ESTIMATED_SOURCES",
    "NO_SUBSCRIPTION",
    "VIEWS",
    "View",
    "create_view_statements",
    "drop_views",
    "ensure_views",
    "view_select",
]

#: The business unit of calls that carry no subscription at all (as in the reports).
NO_SUBSCRIPTION: Final = "(no subscription)"
#: Usage sources whose tokens were counted by the gateway, not reported by the API.
ESTIMATED_SOURCES: Final = ("estimated", "prompt_only")


@dataclass(frozen=True, slots=True)
class View:
    """One view: its name, its columns in order, what a row is, and its query per dialect."""

    name: str
    columns: tuple[str, ...]
    description: str
    build: Callable[[str], Select[Any]]


# ----------------------------------------------------------------------------- expressions


def _absent(column: Any) -> ColumnElement[Any]:
    """A text with '' read as NULL (the rollup's key columns store a missing value as '')."""
    return func.nullif(column, literal_column("''"))


def _day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC day of a timestamp, as a DATE (SQLite: 'YYYY-MM-DD' text)."""
    if dialect == "sqlite":
        return func.date(column)
    if dialect == "postgresql":
        return cast(column, Date)
    # CONVERT, not CAST: the mssql dialect compiles Date as DATETIME when it has not seen
    # the server's version (as when generating the DDL)
    return func.convert(literal_column("DATE"), column)


def _month(column: Any, dialect: str) -> ColumnElement[Any]:
    """The month of a timestamp as 'YYYY-MM' (the report's ``--month``)."""
    if dialect == "sqlite":
        return func.strftime(literal_column("'%Y-%m'"), column)
    if dialect == "postgresql":
        return func.to_char(column, literal_column("'YYYY-MM'"))
    # style 126 is ISO 8601 (yyyy-mm-ddThh:mi:ss.mmm): its first seven characters
    return func.convert(literal_column("CHAR(7)"), column, literal_column("126"))


def _month_start(column: Any, dialect: str) -> ColumnElement[Any]:
    """The first day of the month of a timestamp, as a DATE (a date axis for Power BI)."""
    if dialect == "sqlite":
        return func.date(column, literal_column("'start of month'"))
    if dialect == "postgresql":
        return cast(func.date_trunc(literal_column("'month'"), column), Date)
    return func.datefromparts(func.year(column), func.month(column), literal_column("1"))


def _business_unit(mapped: Any, sub_name: Any, sub_id: Any) -> ColumnElement[Any]:
    return func.coalesce(mapped, sub_name, sub_id, literal_column(f"'{NO_SUBSCRIPTION}'"))


def _is_estimated(source: Any) -> ColumnElement[Any]:
    return case((source.in_(ESTIMATED_SOURCES), 1), else_=0)


# ----------------------------------------------------------------------------- the queries

DAILY_COLUMNS: Final = (
    "UsageDate",
    "BusinessUnit",
    "CostCentre",
    "SubscriptionId",
    "SubscriptionName",
    "ModelName",
    "DeploymentName",
    "UsageSource",
    "Currency",
    "Calls",
    "PricedCalls",
    "UnpricedCalls",
    *TOKEN_COLUMNS,
    "Cost",
    "IsEstimated",
)


def _daily(dialect: str, *, months: bool = False) -> Select[Any]:
    """The rollup with its business unit; ``months`` adds the month keys (for the monthly)."""
    d = daily_table.c
    sub_id, sub_name = _absent(d.SubscriptionId), _absent(d.SubscriptionName)
    extra = []
    if months:
        extra = [
            _month(d.ExecDateUTC, dialect).label("UsageMonth"),
            _month_start(d.ExecDateUTC, dialect).label("MonthStart"),
        ]
    return select(
        *extra,
        _day(d.ExecDateUTC, dialect).label("UsageDate"),
        _business_unit(bu_map.c.BusinessUnit, sub_name, sub_id).label("BusinessUnit"),
        bu_map.c.CostCentre.label("CostCentre"),
        sub_id.label("SubscriptionId"),
        sub_name.label("SubscriptionName"),
        _absent(d.ModelName).label("ModelName"),
        _absent(d.DeploymentName).label("DeploymentName"),
        d.UsageSource.label("UsageSource"),
        _absent(d.Currency).label("Currency"),
        d.Calls.label("Calls"),
        d.PricedCalls.label("PricedCalls"),
        (d.Calls - d.PricedCalls).label("UnpricedCalls"),
        *(d[k].label(k) for k in TOKEN_COLUMNS),
        # the rollup keeps Cost NULL while no call is priced; said again, so no reader sees 0 —
        # nor where the row's only "priced" calls are unbilled ones (a 429: cost 0, no currency)
        case(
            (and_(d.PricedCalls > 0, or_(d.Currency != "", d.PricedCalls == d.Calls)), d.Cost)
        ).label("Cost"),
        _is_estimated(d.UsageSource).label("IsEstimated"),
    ).select_from(daily_table.outerjoin(bu_map, bu_map.c.SubscriptionId == sub_id))


MONTHLY_COLUMNS: Final = (
    "UsageMonth",
    "MonthStart",
    "BusinessUnit",
    "CostCentre",
    "Currency",
    "Calls",
    "PricedCalls",
    "UnpricedCalls",
    "EstimatedCalls",
    *TOKEN_COLUMNS,
    "Cost",
    "EstimatedCost",
)


def _monthly(dialect: str) -> Select[Any]:
    """Per month, business unit and currency (NULL: the unpriced calls), from the daily rows."""
    u = _daily(dialect, months=True).subquery("d")
    priced = func.sum(u.c.PricedCalls)
    unpriced = func.sum(u.c.UnpricedCalls)
    estimated_cost = func.sum(case((u.c.IsEstimated == 1, u.c.Cost)))
    return select(
        u.c.UsageMonth,
        u.c.MonthStart,
        u.c.BusinessUnit,
        func.max(u.c.CostCentre).label("CostCentre"),  # the report's rule: one per BU
        u.c.Currency,
        func.sum(u.c.Calls).label("Calls"),
        priced.label("PricedCalls"),
        unpriced.label("UnpricedCalls"),
        func.sum(case((u.c.IsEstimated == 1, u.c.Calls), else_=0)).label("EstimatedCalls"),
        *(func.sum(u.c[k]).label(k) for k in TOKEN_COLUMNS),
        case(
            (and_(priced > 0, or_(u.c.Currency.is_not(None), unpriced == 0)), func.sum(u.c.Cost))
        ).label("Cost"),
        case((priced > 0, func.coalesce(estimated_cost, literal_column("0")))).label(
            "EstimatedCost"
        ),
    ).group_by(u.c.UsageMonth, u.c.MonthStart, u.c.BusinessUnit, u.c.Currency)


CALL_COLUMNS: Final = (
    "Id",
    "RequestId",
    "ExecTimeUTC",
    "UsageDate",
    "BusinessUnit",
    "CostCentre",
    "SubscriptionId",
    "SubscriptionName",
    "UserName",
    "UserEmail",
    "ModelName",
    "DeploymentName",
    "Operation",
    "UsageSource",
    "IsEstimated",
    *TOKEN_COLUMNS,
    "Cost",
    "Currency",
    "PriceStatus",
    "RateId",
)


def _calls(dialect: str) -> Select[Any]:
    """Every call with its business unit; ``PriceStatus`` 'priced' / 'unpriced'."""
    t = token_table.c
    sub_id, sub_name = _absent(t.SubscriptionId), _absent(t.SubscriptionName)
    priced = t.Cost.is_not(None)
    return select(
        t.Id,
        t.RequestId,
        t.ExecTimeUTC,
        _day(t.ExecDateUTC, dialect).label("UsageDate"),
        _business_unit(bu_map.c.BusinessUnit, sub_name, sub_id).label("BusinessUnit"),
        bu_map.c.CostCentre.label("CostCentre"),
        sub_id.label("SubscriptionId"),
        sub_name.label("SubscriptionName"),
        t.UserName,
        t.UserEmail,
        t.ModelName,
        t.DeploymentName,
        t.Operation,
        t.UsageSource,
        _is_estimated(t.UsageSource).label("IsEstimated"),
        *(t[k] for k in TOKEN_COLUMNS),
        t.Cost,
        case((priced, t.Currency)).label("Currency"),
        case((priced, literal_column("'priced'")), else_=literal_column("'unpriced'")).label(
            "PriceStatus"
        ),
        t.RateId,
    ).select_from(token_table.outerjoin(bu_map, bu_map.c.SubscriptionId == sub_id))


#: Every view, in creation order.
VIEWS: Final[tuple[View, ...]] = (
    View(
        "vw_AoaiChargebackDaily",
        DAILY_COLUMNS,
        "one row per day and group of the daily rollup, with its business unit",
        _daily,
    ),
    View(
        "vw_AoaiChargebackMonthly",
        MONTHLY_COLUMNS,
        "per month, business unit and currency (Currency NULL: the unpriced calls)",
        _monthly,
    ),
    View(
        "vw_AoaiPricedCalls",
        CALL_COLUMNS,
        "one row per call, with its business unit and price status",
        _calls,
    ),
)


# ----------------------------------------------------------------------------- SQL


def view_select(view: View, dialect: Dialect) -> str:
    """The view's ``SELECT`` compiled for ``dialect`` (literal values inlined)."""
    stmt = view.build(dialect.name)
    return str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True})).strip()


def create_view_statements(view: View, dialect: Dialect, *, replace: bool = True) -> list[str]:
    """The statements that create ``view`` on ``dialect`` — replacing one that exists when
    ``replace``, else only where it is missing (SQLite; the others always replace)."""
    name = dialect.identifier_preparer.quote(view.name)
    body = view_select(view, dialect)
    if dialect.name == "mssql":
        return [f"CREATE OR ALTER VIEW {name} AS\n{body}"]
    if dialect.name == "postgresql":
        return [f"CREATE OR REPLACE VIEW {name} AS\n{body}"]
    if not replace:
        return [f"CREATE VIEW IF NOT EXISTS {name} AS\n{body}"]
    return [f"DROP VIEW IF EXISTS {name}", f"CREATE VIEW {name} AS\n{body}"]


def ensure_views(conn: Connection, *, replace: bool) -> list[str]:
    """Create the views that are missing — every view when ``replace`` (so a new definition
    replaces an older one); what changed, one line each."""
    existing = set(inspect(conn).get_view_names())
    changes: list[str] = []
    for view in VIEWS:
        if view.name in existing and not replace:
            continue
        statements = create_view_statements(view, conn.dialect)
        if conn.dialect.name == "postgresql" and view.name in existing:
            _replace_postgresql(conn, view, statements)
        else:
            for statement in statements:
                conn.exec_driver_sql(statement)
        verb = "replaced" if view.name in existing else "created"
        changes.append(f"{verb} view {view.name}")
    return changes


def _replace_postgresql(conn: Connection, view: View, statements: list[str]) -> None:
    """``CREATE OR REPLACE VIEW`` (keeps the grants), or — when the old definition's columns
    differ, which PostgreSQL refuses to replace — drop and create (in a savepoint first)."""
    try:
        with conn.begin_nested():
            for statement in statements:
                conn.exec_driver_sql(statement)
    except DBAPIError:
        conn.exec_driver_sql(f"DROP VIEW {conn.dialect.identifier_preparer.quote(view.name)}")
        for statement in statements:
            conn.exec_driver_sql(statement)


def drop_views(conn: Connection) -> list[str]:
    """Drop the views that exist (before a change of the columns they read, e.g. a type)."""
    existing = set(inspect(conn).get_view_names())
    q = conn.dialect.identifier_preparer
    dropped = [v.name for v in reversed(VIEWS) if v.name in existing]
    for name in dropped:
        conn.exec_driver_sql(f"DROP VIEW {q.quote(name)}")
    return dropped
