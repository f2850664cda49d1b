"""``sql/migrate_from_original.sql``: the T-SQL twin of :func:`aoai_helpers.pipeline.upgrade.upgrade`.

Generated from the same models and the same constants as the Python upgrade, for Azure SQL
DBAs who run scripts rather than tools (``python -m aoai_helpers db ddl --from-original``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import mssql
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from aoai_helpers.core.events import V1_OPERATION_IDS
from aoai_helpers.core.pricing import EPOCH
from aoai_helpers.db.migrations.original import (
    _FILLED,
    _HASH_DIGITS,
    _ORIGINAL,
    _UPGRADE_NOTE,
    LEGACY_PREFIX,
    ORIGINAL_RATE_SOURCE,
    ORIGINAL_TOKEN_COLUMNS,
    _nullable_ddl,
    _primary_key,
    _set_not_null,
    required,
)
from aoai_helpers.db.migrations.v0005_money_views import money_tsql_blocks
from aoai_helpers.db.rollup import rebuild_statements
from aoai_helpers.db.schema import SCHEMA_VERSION
from aoai_helpers.db.tables import (
    MONEY_COLUMNS,
    SCHEMA_TABLES,
    daily_table,
    metadata,
    rate_table,
    schema_version,
    token_table,
)
from aoai_helpers.db.views import VIEWS, create_view_statements

__all__ = ["migration_tsql"]


def _tsql_dialect() -> Dialect:
    dialect: Dialect = mssql.dialect(deprecate_large_types=True)  # type: ignore[no-untyped-call]
    return dialect


def _column(table: str, name: str) -> Any:
    return metadata.tables[table].c[name]


def _tsql_literal(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


def _request_id_tsql(q: Any) -> str:
    parts = []
    for name in ORIGINAL_TOKEN_COLUMNS:
        col = q.quote(name)
        is_time = name in ("ExecTimeUTC", "ExecDateUTC")
        parts.append(f"CONVERT(NVARCHAR(23), {col}, 121)" if is_time else col)
    content = ", N'|', ".join(parts)
    return (
        f"CONCAT({_tsql_literal(LEGACY_PREFIX)}, LOWER(LEFT(CONVERT(VARCHAR(64), "
        f"HASHBYTES('SHA2_256', CONCAT({content})), 2), {_HASH_DIGITS})), N':', {q.quote('Id')})"
    )


def migration_tsql() -> str:
    """``sql/migrate_from_original.sql``: :func:`upgrade` as an idempotent T-SQL script.

    Regenerate with ``python -m aoai_helpers db ddl --from-original``. Each step is guarded
    (``IF COL_LENGTH(…) IS NULL``, ``IF NOT EXISTS …``); statements that use a column added by
    the script are in a later batch (``GO``) than the one adding it, as T-SQL compiles a batch
    whole. ``ModelKnown`` is left at its default (1) here: ``db upgrade`` computes it.
    """
    d = _tsql_dialect()
    parts = (_preamble, _create_tables, _add_columns, _fill_rows, _constrain_and_index)
    out = [line for part in (*parts, _cost_and_record) for line in part(d)]
    return "\n".join(line.rstrip() for line in "\n".join(out).splitlines()) + "\n"


def _preamble(d: Dialect) -> list[str]:
    """The header comment and step 0 (refuse duplicate rates)."""
    q = d.identifier_preparer
    rate = q.format_table(rate_table)
    c = q.quote
    out: list[str] = []
    out += [
        f"-- apim-aoai-proxy: upgrade a database of the original APIM-AOAI-Proxy (its"
        f" aoaieventdb.sql) to schema v{SCHEMA_VERSION}, in place.",
        "-- Generated from aoai_helpers.db.tables; regenerate with:"
        " python -m aoai_helpers db ddl --from-original",
        "-- The T-SQL twin of `python -m aoai_helpers db upgrade` (see aoai_helpers/pipeline/upgrade.py).",
        "--",
        "-- Every row is kept and the original columns are not changed: Power BI reports on them",
        "-- keep working. Every step is guarded, so the script does nothing on an upgraded",
        "-- database and can be run again after an interruption. Run it whole and stop at the",
        "-- first error: sqlcmd -b -i migrate_from_original.sql (SSMS: execute the whole file).",
        "--",
        "-- Rows that predate the schema get RequestId = legacy:<first 32 hex digits of the",
        "-- SHA-256 of their original columns>:<Id> (unique through Id), EventVersion 1,",
        "-- Operation from OperationId, UsageSource 'estimated' where IsStreaming = 1 (the",
        "-- original counted streams with tiktoken) else 'reported', IngestedAtUTC = now.",
        "-- Original rates get CachedPromptTokenRate = PromptTokenRate, Currency USD,",
        f"-- EffectiveFrom {EPOCH:%Y-%m-%d} (always), EffectiveTo NULL (open),",
        f"-- Source '{ORIGINAL_RATE_SOURCE}'. Then Cost is filled for every upgraded call",
        "-- whose ModelName has a rate (NULL = unpriced). ModelKnown keeps its default (1).",
        "",
        "SET XACT_ABORT ON;",
        "GO",
        "",
        "-- 0. The upgraded rate table holds one rate per model and start: refuse duplicates.",
        f"IF OBJECT_ID(N'{rate_table.name}', N'U') IS NOT NULL"
        f" AND COL_LENGTH(N'{rate_table.name}', N'EffectiveFrom') IS NULL",
        f"    IF EXISTS (SELECT {c('ModelName')} FROM {rate}"
        f" GROUP BY {c('ModelName')} HAVING COUNT(*) > 1)",
        "    BEGIN",
        "        RAISERROR(N'AoaiTokenRate has more than one rate for a model: keep one row per"
        " ModelName, then run this script again (nothing was changed)', 16, 1);",
        "        SET NOEXEC ON;",
        "    END",
        "GO",
        "",
        "-- 1. Tables that do not exist yet.",
    ]
    return out


def _create_tables(d: Dialect) -> list[str]:
    """Step 1: the tables that do not exist yet."""
    out: list[str] = []
    for tbl in SCHEMA_TABLES:
        create = str(CreateTable(tbl).compile(dialect=d)).strip()
        out += [
            f"IF OBJECT_ID(N'{tbl.name}', N'U') IS NULL",
            "BEGIN",
            create + ";",
            "END",
            "GO",
            "",
        ]
    return out


def _add_columns(d: Dialect) -> list[str]:
    """Step 2: the new columns (NOT NULL ones nullable first), then the primary keys."""
    q = d.identifier_preparer
    out: list[str] = []
    out += [
        "-- 2. New columns. Those the schema wants NOT NULL without a default are added",
        "--    nullable, filled (3), then made NOT NULL (4).",
    ]
    for tbl in SCHEMA_TABLES:
        upgradable = tbl.name in _FILLED
        lines = []
        for col in tbl.columns:
            if col.name in _ORIGINAL.get(tbl.name, ()):
                continue
            if col.primary_key or required(col):
                if not upgradable:
                    continue  # created with its table, never added
                ddl = (
                    str(CreateColumn(col).compile(dialect=d))
                    if col.primary_key
                    else _nullable_ddl(col, d)
                )
            else:
                ddl = str(CreateColumn(col).compile(dialect=d))
            lines += [
                f"IF COL_LENGTH(N'{tbl.name}', N'{col.name}') IS NULL",
                f"    ALTER TABLE {q.format_table(tbl)} ADD {ddl};",
            ]
        if lines:
            out += [*lines, "GO", ""]
    for tbl in (token_table, rate_table):
        out += [
            f"IF NOT EXISTS (SELECT 1 FROM sys.key_constraints WHERE [type] = 'PK'"
            f" AND parent_object_id = OBJECT_ID(N'{tbl.name}'))",
            f"    ALTER TABLE {q.format_table(tbl)} ADD {_primary_key(tbl, d)};",
            "GO",
            "",
        ]
    return out


def _fill_rows(d: Dialect) -> list[str]:
    """Step 3: fill the rows and rates that predate the schema."""
    q = d.identifier_preparer
    tok, rate = q.format_table(token_table), q.format_table(rate_table)
    c = q.quote
    out: list[str] = []
    ops = " ".join(
        f"WHEN {_tsql_literal(k)} THEN {_tsql_literal(v)}" for k, v in V1_OPERATION_IDS.items()
    )
    out += [
        "-- 3. Fill the rows that predate the schema (RequestId IS NULL / EffectiveFrom IS NULL).",
        f"UPDATE {tok} SET",
        f"    {c('RequestId')} = {_request_id_tsql(q)},",
        f"    {c('EventVersion')} = 1,",
        f"    {c('Operation')} = CASE LOWER({c('OperationId')}) {ops} ELSE N'other' END,",
        f"    {c('UsageSource')} = CASE WHEN {c('IsStreaming')} = 1 THEN N'estimated'"
        " ELSE N'reported' END,",
        f"    {c('IngestedAtUTC')} = GETUTCDATE()",
        f"WHERE {c('RequestId')} IS NULL;",
        "GO",
        "",
        f"UPDATE {rate} SET",
        f"    {c('CachedPromptTokenRate')} = {c('PromptTokenRate')},",
        f"    {c('Currency')} = N'USD',",
        f"    {c('EffectiveFrom')} = '{EPOCH:%Y-%m-%dT%H:%M:%S}',",  # ISO 8601: any DATEFORMAT
        f"    {c('EffectiveTo')} = NULL,",
        f"    {c('Source')} = {_tsql_literal(ORIGINAL_RATE_SOURCE)}",
        f"WHERE {c('EffectiveFrom')} IS NULL;",
        "GO",
        "",
        "-- 4. NOT NULL, now that every row has a value.",
    ]
    return out


def _constrain_and_index(d: Dialect) -> list[str]:
    """Steps 4 and 5: NOT NULL once filled; the indexes."""
    q = d.identifier_preparer
    out: list[str] = []
    for tbl in (token_table, rate_table):
        lines = []
        for col in tbl.columns:
            if required(col) and not col.primary_key and col.name not in _ORIGINAL[tbl.name]:
                lines += [
                    f"IF COLUMNPROPERTY(OBJECT_ID(N'{tbl.name}'), N'{col.name}', 'AllowsNull') = 1",
                    f"    {_set_not_null(q.format_table(tbl), col, d)};",
                ]
        out += [*lines, "GO", ""]
    out += [
        "-- 4b. Money columns exact: NUMERIC (the original FLOAT rates, and the costs of a",
        "--     database written before schema v5). An index that holds the column is dropped",
        "--     first (ALTER COLUMN refuses otherwise) and created again in step 5. Each",
        "--     conversion rewrites the table: plan it for a quiet hour on a large one.",
    ]
    tables = list(dict.fromkeys(t for t, _c in MONEY_COLUMNS))
    for name in tables:
        cols = [c for t, c in MONEY_COLUMNS if t == name]
        blocks = money_tsql_blocks(d, [_column(name, c) for c in cols])
        out += [*blocks, "GO", ""]
    out.append("-- 5. Indexes (the unique RequestId index among them).")
    for tbl in SCHEMA_TABLES:
        lines = []
        for ix in sorted(tbl.indexes, key=lambda i: i.name or ""):
            lines += [
                f"IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'{ix.name}'"
                f" AND object_id = OBJECT_ID(N'{tbl.name}'))",
                f"    {str(CreateIndex(ix).compile(dialect=d)).strip()};",
            ]
        if lines:
            out += [*lines, "GO", ""]
    return out


def _cost_and_record(d: Dialect) -> list[str]:
    """Steps 6 and 7: price the upgraded calls, sum them into the rollup; record the version."""
    q = d.identifier_preparer
    tok, rate = q.format_table(token_table), q.format_table(rate_table)
    c = q.quote
    out: list[str] = []
    cached = (
        f"CASE WHEN t.{c('CachedTokens')} < t.{c('PromptTokens')}"
        f" THEN t.{c('CachedTokens')} ELSE t.{c('PromptTokens')} END"
    )
    out += [
        "-- 6. Cost of the upgraded calls at the rate in effect at ExecTimeUTC (as db upgrade).",
        "UPDATE t SET",
        f"    {c('Cost')} = (t.{c('PromptTokens')} - {cached}) * r.{c('PromptTokenRate')}",
        f"        + {cached} * COALESCE(r.{c('CachedPromptTokenRate')}, r.{c('PromptTokenRate')})",
        f"        + t.{c('CompletionTokens')} * r.{c('CompletionTokenRate')},",
        f"    {c('Currency')} = r.{c('Currency')},",
        f"    {c('RateId')} = r.{c('RateId')}",
        f"FROM {tok} AS t",
        f"JOIN {rate} AS r ON r.{c('ModelName')} = t.{c('ModelName')}"
        f" AND r.{c('EffectiveFrom')} <= t.{c('ExecTimeUTC')}",
        f"    AND (r.{c('EffectiveTo')} IS NULL OR t.{c('ExecTimeUTC')} < r.{c('EffectiveTo')})",
        f"WHERE t.{c('Cost')} IS NULL AND t.{c('RequestId')} LIKE N'legacy:%'"
        f" AND t.{c('UsageSource')} <> N'unbilled';",
        "GO",
        "",
        f"-- 6b. The daily rollup {q.format_table(daily_table)}, summed from the calls (as db upgrade),",
        "--     once: a database at schema v4 keeps it itself (re-running the script beside live",
        "--     ingesters must not empty it).",
        f"IF NOT EXISTS (SELECT 1 FROM {q.format_table(schema_version)} WHERE {c('Version')} >= 4)",
        "BEGIN",
        *(
            "    "
            + str(stmt.compile(dialect=d, compile_kwargs={"literal_binds": True})).strip()
            + ";"
            for stmt in rebuild_statements()
        ),
        "END",
        "GO",
        "",
        "-- 6c. The views for Power BI and other SQL readers (CREATE OR ALTER: a view that",
        "--     exists gets this definition).",
        *(line for view in VIEWS for line in (*create_view_statements(view, d), "GO", "")),
        "-- 7. Record the migration.",
        f"IF NOT EXISTS (SELECT 1 FROM {q.format_table(schema_version)}"
        f" WHERE {c('Version')} = {SCHEMA_VERSION})",
        f"    INSERT INTO {q.format_table(schema_version)}"
        f" ({c('Version')}, {c('AppliedAtUTC')}, {c('Description')})",
        f"    VALUES ({SCHEMA_VERSION}, GETUTCDATE(),"
        f" {_tsql_literal(_UPGRADE_NOTE + ' (sql/migrate_from_original.sql)')});",
        "GO",
        "",
        "SET NOEXEC OFF;",
        "GO",
    ]
    return out
