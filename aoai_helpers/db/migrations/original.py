"""The original APIM-AOAI-Proxy schema migrated in place: the work of migration 0001.

The original project's ``aoaieventdb.sql`` created ``ApimAoaiToken`` (16 columns, no key) and
``AoaiTokenRate`` (model, prompt and completion rate). :func:`plan_original` finds such tables
and refuses, before any change, those that cannot be migrated; :func:`migrate_original` adds
the new columns, fills the rows that predate the schema and (SQLite) rebuilds the tables.
What each row gets is described in :mod:`aoai_helpers.pipeline.upgrade`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Column,
    ColumnClause,
    ColumnElement,
    DateTime,
    MetaData,
    Table,
    bindparam,
    case,
    column,
    func,
    inspect,
    select,
    table,
    text,
    update,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import CreateColumn, CreateTable

from aoai_helpers.core.events import V1_OPERATION_IDS
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import EPOCH
from aoai_helpers.db.tables import rate_table, token_table
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "LEGACY_PREFIX",
    "ORIGINAL_RATE_COLUMNS",
    "ORIGINAL_RATE_SOURCE",
    "ORIGINAL_TOKEN_COLUMNS",
    "OriginalTable",
    "TableUpgrade",
    "legacy_request_id",
    "migrate_original",
    "plan_original",
    "required",
]

#: The columns of the original ``ApimAoaiToken``, in their order (contract §4).
ORIGINAL_TOKEN_COLUMNS: Final = (
    "ExecTimeUTC",
    "ExecDateUTC",
    "GatewayRegion",
    "GatewayServiceName",
    "SubscriptionId",
    "SubscriptionName",
    "UserName",
    "UserEmail",
    "ProductName",
    "ApiName",
    "OperationId",
    "ModelName",
    "IsStreaming",
    "PromptTokens",
    "CompletionTokens",
    "TotalTokens",
)
#: The columns of the original ``AoaiTokenRate``.
ORIGINAL_RATE_COLUMNS: Final = ("ModelName", "PromptTokenRate", "CompletionTokenRate")
LEGACY_PREFIX: Final = "legacy:"
ORIGINAL_RATE_SOURCE: Final = "original AoaiTokenRate"
_UPGRADE_NOTE: Final = "upgraded in place from the original APIM-AOAI-Proxy schema"
_HASH_DIGITS: Final = 32
_CHUNK: Final = 5000
#: The NOT NULL columns without a default each upgradable table's old rows get filled in.
_FILLED: Final[dict[str, frozenset[str]]] = {
    token_table.name: frozenset(
        {"Id", "RequestId", "EventVersion", "Operation", "UsageSource", "IngestedAtUTC"}
    ),
    rate_table.name: frozenset({"RateId", "EffectiveFrom"}),
}
_ORIGINAL: Final[dict[str, tuple[str, ...]]] = {
    token_table.name: ORIGINAL_TOKEN_COLUMNS,
    rate_table.name: ORIGINAL_RATE_COLUMNS,
}


# --- the row values ---------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    """One original column's value as text, as T-SQL's CONCAT / CONVERT(…, 121) writes it."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d}"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def legacy_request_id(row_id: int, original_values: Sequence[Any]) -> str:
    """``RequestId`` of a row that predates the schema: ``legacy:<hash>:<Id>``.

    ``<hash>`` is the first 32 hex digits of the SHA-256 of the original columns' values
    (:data:`ORIGINAL_TOKEN_COLUMNS` order) joined by ``|`` (NULL as empty, datetimes as
    ``YYYY-MM-DD hh:mm:ss.mmm``) in UTF-16-LE — what ``HASHBYTES('SHA2_256', CONCAT(…))`` over
    NVARCHAR computes in ``sql/migrate_from_original.sql``. ``<Id>`` makes it unique.
    """
    canonical = "|".join(_canonical(v) for v in original_values)
    digest = hashlib.sha256(canonical.encode("utf-16-le")).hexdigest()[:_HASH_DIGITS]
    return f"{LEGACY_PREFIX}{digest}:{row_id}"


def _operation_case(operation_id: ColumnElement[Any]) -> ColumnElement[Any]:
    return case(
        {k: v for k, v in V1_OPERATION_IDS.items()},
        value=func.lower(operation_id),
        else_="other",
    )


def _usage_source_case(is_streaming: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((is_streaming == 1, "estimated"), else_="reported")


@dataclass(slots=True)
class TableUpgrade:
    """What the upgrade did to one of the original tables."""

    table: str
    columns_added: list[str] = field(default_factory=list)
    rows: int = 0
    rebuilt: bool = False
    usage_sources: dict[str, int] = field(default_factory=dict)


def required(col: Column[Any]) -> bool:
    return not col.nullable and col.server_default is None


def _check_migratable(
    conn: Connection, model: Table, missing: list[Column[Any]], reflected: dict[str, str]
) -> None:
    """Refuse, before any change, what cannot be migrated without losing or inventing data."""
    name = model.name
    lost = [c for c in _ORIGINAL[name] if c.lower() not in reflected]
    if lost:
        raise ConfigError(
            f"table {name} lacks the original column(s) {', '.join(lost)}: it is neither this "
            "schema nor the original APIM-AOAI-Proxy one, so it cannot be upgraded"
        )
    unknown = [c.name for c in missing if required(c) and c.name not in _FILLED[name]]
    if unknown:
        raise ConfigError(f"table {name} lacks {', '.join(unknown)}, which db upgrade cannot fill")
    if conn.dialect.name == "sqlite":
        known = {c.name.lower() for c in model.columns}
        extra = sorted(col for low, col in reflected.items() if low not in known)
        if extra:
            raise ConfigError(
                f"table {name} has column(s) this schema does not know ({', '.join(extra)}): "
                "upgrading SQLite rebuilds the table and would drop them; move them elsewhere first"
            )
    if model is rate_table:
        m: ColumnClause[Any] = column("ModelName")
        dupes = conn.execute(
            select(m, func.count())
            .select_from(table(name))
            .group_by(m)
            .having(func.count() > 1)
            .order_by(m)
        ).all()
        if dupes:
            listed = ", ".join(f"{r[0]} ({r[1]} rows)" for r in dupes[:10])
            raise ConfigError(
                f"{name} has more than one rate for {listed}: the upgraded table holds one rate per "
                "model and start date; keep one row per model, run db upgrade, then add the "
                "others with dates (rates set MODEL … --from DATE)"
            )


def _nullable_ddl(col: Column[Any], dialect: Dialect) -> str:
    """The column's definition without NOT NULL (it is filled, then constrained)."""
    loose = Table(col.table.name, MetaData(), Column(col.name, col.type, nullable=True))
    return str(CreateColumn(loose.c[col.name]).compile(dialect=dialect))


def _migrate_table(
    conn: Connection,
    model: Table,
    missing: list[Column[Any]],
    existing_pk: list[str],
    now: datetime,
) -> TableUpgrade:
    dialect = conn.dialect
    sqlite = dialect.name == "sqlite"
    quoted = dialect.identifier_preparer.format_table(model)
    done = TableUpgrade(model.name)
    to_constrain: list[Column[Any]] = []
    for col in missing:
        if col.primary_key and sqlite:
            done.columns_added.append(col.name)  # the rebuild below makes it the rowid alias
            continue
        if required(col) and not col.primary_key:
            ddl = _nullable_ddl(col, dialect)
            to_constrain.append(col)
        else:
            ddl = str(CreateColumn(col).compile(dialect=dialect))  # identity / default fill it
        conn.execute(text(f"ALTER TABLE {quoted} ADD {ddl}"))
        done.columns_added.append(col.name)
        if col.primary_key and not existing_pk:  # before the updates by key below
            # (not AddConstraint: it would mark the model's own key "not inline" for good)
            conn.execute(text(f"ALTER TABLE {quoted} ADD {_primary_key(model, dialect)}"))
    pk = next(iter(model.primary_key.columns)).name
    key = "rowid" if sqlite else pk
    if model is token_table:
        done.rows = _fill_token_rows(conn, key, now)
        done.usage_sources = _usage_sources(conn)
    else:
        done.rows = _fill_rates(conn)
    if sqlite:
        _rebuild_sqlite(conn, model)
        done.rebuilt = True
    else:
        for col in to_constrain:
            conn.execute(text(_set_not_null(quoted, col, dialect)))
    return done


def _primary_key(model: Table, dialect: Dialect) -> str:
    cols = ", ".join(dialect.identifier_preparer.quote(c.name) for c in model.primary_key.columns)
    return f"PRIMARY KEY ({cols})"


def _fill_token_rows(conn: Connection, key: str, now: datetime) -> int:
    """Fill the new NOT NULL columns of the rows that predate the schema (RequestId IS NULL)."""
    t = token_table.c
    conn.execute(
        update(token_table)
        .where(t.RequestId.is_(None))
        .values(
            EventVersion=1,
            Operation=_operation_case(t.OperationId),
            UsageSource=_usage_source_case(t.IsStreaming),
            IngestedAtUTC=now,
        )
    )
    # RequestId and ModelKnown are computed here, from the raw values (no type conversion, so
    # the hash sees what is stored), a chunk at a time in key order.
    raw = table(
        token_table.name,
        column(key),
        column("RequestId"),
        column("ModelKnown"),
        *(column(c) for c in ORIGINAL_TOKEN_COLUMNS),
    )
    query = (
        select(raw.c[key], *(raw.c[c] for c in ORIGINAL_TOKEN_COLUMNS))
        .where(raw.c.RequestId.is_(None))
        .order_by(raw.c[key])
        .limit(_CHUNK)
    )
    stmt = (
        update(raw)
        .where(raw.c[key] == bindparam("b_key"))
        .values(RequestId=bindparam("b_rid"), ModelKnown=bindparam("b_known"))
    )
    model_at = ORIGINAL_TOKEN_COLUMNS.index("ModelName") + 1
    filled, last = 0, None
    while True:
        page = query if last is None else query.where(raw.c[key] > last)
        rows = conn.execute(page).all()
        if not rows:
            return filled
        conn.execute(
            stmt,
            [
                {
                    "b_key": r[0],
                    "b_rid": legacy_request_id(int(r[0]), r[1:]),
                    "b_known": 1 if normalize_model(str(r[model_at] or "")).known else 0,
                }
                for r in rows
            ],
        )
        filled += len(rows)
        last = rows[-1][0]


def _usage_sources(conn: Connection) -> dict[str, int]:
    t = token_table.c
    rows = conn.execute(select(t.UsageSource, func.count()).group_by(t.UsageSource)).all()
    return {str(source): int(n) for source, n in rows}


def _fill_rates(conn: Connection) -> int:
    """Give the original rates their new columns (EffectiveFrom IS NULL marks them)."""
    r = rate_table.c
    return int(
        conn.execute(
            update(rate_table)
            .where(r.EffectiveFrom.is_(None))
            .values(
                CachedPromptTokenRate=r.PromptTokenRate,
                Currency="USD",
                EffectiveFrom=EPOCH,
                EffectiveTo=None,
                Source=ORIGINAL_RATE_SOURCE,
            )
        ).rowcount
    )


def _set_not_null(quoted_table: str, col: Column[Any], dialect: Dialect) -> str:
    name = dialect.identifier_preparer.quote(col.name)
    if dialect.name == "mssql":
        kind = col.type.compile(dialect=dialect)
        return f"ALTER TABLE {quoted_table} ALTER COLUMN {name} {kind} NOT NULL"
    return f"ALTER TABLE {quoted_table} ALTER COLUMN {name} SET NOT NULL"


def _copied(col: Column[Any], quoted: str) -> str:
    """A column's value as the rebuilt SQLite table gets it: the key is the rowid; a date-time
    stored as a bare date (``'2023-12-01'``, as the original schema's ``ExecDateUTC`` may be)
    gets the time SQLAlchemy writes (``'2023-12-01 00:00:00.000000'``) — SQLite compares the
    text, and the bare date sorts before the first instant of its own day, so a report's month
    would lose its first day."""
    if col.primary_key:
        return "rowid"
    if isinstance(col.type, DateTime):
        return (
            f"CASE WHEN length({quoted}) = 10 THEN {quoted} || ' 00:00:00.000000' ELSE {quoted} END"
        )
    return quoted


def _rebuild_sqlite(conn: Connection, model: Table) -> None:
    """SQLite: recreate the table as the schema has it, rows copied as stored, Id = rowid."""
    q = conn.dialect.identifier_preparer
    name, temp = model.name, f"{model.name}__upgrade"
    keep = conn.execute(  # a DBA's own indexes and triggers on the table: recreated after
        text(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = :t "
            "AND type IN ('index', 'trigger') AND sql IS NOT NULL"
        ),
        {"t": name},
    ).all()
    ours = {ix.name for ix in model.indexes}
    conn.execute(CreateTable(model.to_metadata(MetaData(), name=temp)))  # no indexes yet
    cols = ", ".join(q.quote(c.name) for c in model.columns)
    source = ", ".join(_copied(c, q.quote(c.name)) for c in model.columns)
    conn.execute(
        text(
            f"INSERT INTO {q.quote(temp)} ({cols}) SELECT {source} FROM {q.quote(name)} "
            "ORDER BY rowid"
        )
    )
    conn.execute(text(f"DROP TABLE {q.quote(name)}"))
    # legacy_alter_table: the rename leaves views and triggers that name the table alone (they
    # resolve to the new table), as SQLite's documented table-rebuild procedure requires.
    legacy = conn.exec_driver_sql("PRAGMA legacy_alter_table").scalar()
    conn.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    conn.execute(text(f"ALTER TABLE {q.quote(temp)} RENAME TO {q.quote(name)}"))
    conn.exec_driver_sql(f"PRAGMA legacy_alter_table = {1 if legacy else 0}")
    for obj_name, sql in keep:
        if obj_name not in ours:
            conn.exec_driver_sql(sql)


@dataclass(frozen=True, slots=True)
class OriginalTable:
    """One original table to migrate: its model, the columns it lacks, its primary key now."""

    model: Table
    missing: list[Column[Any]]
    existing_pk: list[str]


def plan_original(conn: Connection) -> list[OriginalTable]:
    """The original tables of this database (none on this schema), each checked migratable.

    Raises :class:`ConfigError`, before any change, for a table that cannot be migrated.
    """
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    plans: list[tuple[Table, list[Column[Any]]]] = []
    for model in (token_table, rate_table):
        if model.name not in existing:
            continue
        reflected = {c["name"].lower(): c["name"] for c in insp.get_columns(model.name)}
        missing = [c for c in model.columns if c.name.lower() not in reflected]
        if any(required(c) for c in missing):
            _check_migratable(conn, model, missing, reflected)
            plans.append((model, missing))
    return [
        OriginalTable(
            model, missing, insp.get_pk_constraint(model.name).get("constrained_columns") or []
        )
        for model, missing in plans
    ]


def migrate_original(
    conn: Connection, plans: Sequence[OriginalTable], now: datetime
) -> list[TableUpgrade]:
    """Migrate the planned original tables in place (module doc); what was done to each."""
    return [_migrate_table(conn, p.model, p.missing, p.existing_pk, now) for p in plans]
