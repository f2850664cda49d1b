"""One MetaData for every table, and the numbered migrations (aoai_helpers.db.migrations)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, inspect, text

import aoai_helpers
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.migrations.runner import HEAD, MIGRATIONS, applied_versions, pending
from aoai_helpers.db.schema import SCHEMA_VERSION, ddl, init_db
from aoai_helpers.db.tables import SCHEMA_TABLES, metadata, token_table
from aoai_helpers.db.views import VIEWS

EVERY_TABLE = {
    "AoaiUsageDaily",
    "ApimAoaiToken",
    "AoaiTokenRate",
    "BusinessUnitMap",
    "IngestDeadLetter",
    "ReconcileState",
    "AoaiSchemaVersion",
    "AzureCostLine",
    "ChargebackStatement",
    "EventHubCheckpoint",
    "EventHubOwnership",
}


def test_one_metadata_in_the_package_holds_every_table() -> None:
    found: dict[int, list[str]] = {}
    for info in pkgutil.walk_packages(aoai_helpers.__path__, "aoai_helpers."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue  # an optional extra that is not installed
        for name, value in vars(module).items():
            if isinstance(value, MetaData):
                found.setdefault(id(value), []).append(f"{info.name}.{name}")
    assert len(found) == 1, found
    assert set(metadata.tables) == EVERY_TABLE


def test_ddl_names_every_table() -> None:
    script = ddl("mssql")
    for name in EVERY_TABLE:
        assert f"CREATE TABLE [{name}]" in script, name


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.VERSION for m in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert HEAD == SCHEMA_VERSION == versions[-1]
    assert all(m.DESCRIPTION for m in MIGRATIONS)
    assert [m.VERSION for m in pending([])] == versions
    assert pending([HEAD]) == []


def test_a_v1_database_gets_migrations_2_and_3_recorded(tmp_path: Path) -> None:
    engine = engine_from_url(str(tmp_path / "v1.db"))
    try:
        init_db(engine)
        with transaction(engine) as conn:  # back to v1: what migration 0002 added, removed
            conn.execute(text("DROP TABLE ReconcileState"))
            conn.execute(text("DELETE FROM AoaiSchemaVersion"))
            conn.execute(
                text(
                    "INSERT INTO AoaiSchemaVersion (Version, AppliedAtUTC) "
                    "VALUES (1, '2026-01-01 00:00:00')"
                )
            )
        changes = init_db(engine)
        assert changes == [
            "created table ReconcileState",
            *(f"replaced view {v.name}" for v in VIEWS),  # migration 0005 is pending
            "schema version 2",
            "schema version 3",
            "schema version 4",
            "schema version 5",
        ]
        with transaction(engine) as conn:
            assert sorted(applied_versions(conn)) == [1, 2, 3, 4, 5]
        assert {t.name for t in SCHEMA_TABLES} <= set(inspect(engine).get_table_names())
        assert "ChargebackStatement" not in inspect(engine).get_table_names()  # made when issued
        assert token_table.name in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_v2_database_gets_the_estimate_quality_column(tmp_path: Path) -> None:
    """Migration 0003 adds ``EstimateQuality`` (nullable) to a database written before it."""
    engine = engine_from_url(str(tmp_path / "v2.db"))
    try:
        init_db(engine)
        with transaction(engine) as conn:  # back to v2
            conn.execute(text("DROP INDEX IF EXISTS ix_ApimAoaiToken_Report"))
            conn.execute(text("ALTER TABLE ApimAoaiToken DROP COLUMN EstimateQuality"))
            conn.execute(text("DROP TABLE AoaiUsageDaily"))
            conn.execute(text("UPDATE AoaiSchemaVersion SET Version = 2"))
        columns = {c["name"] for c in inspect(engine).get_columns(token_table.name)}
        assert "EstimateQuality" not in columns
        changes = init_db(engine)
        assert any("EstimateQuality" in change for change in changes), changes
        assert changes[-3:] == ["schema version 3", "schema version 4", "schema version 5"]
        columns = {c["name"]: c for c in inspect(engine).get_columns(token_table.name)}
        assert columns["EstimateQuality"]["nullable"] is True
    finally:
        engine.dispose()


def _view_columns(engine: Any, name: str) -> list[str]:
    with transaction(engine) as conn:
        return list(conn.exec_driver_sql(f'SELECT * FROM "{name}" WHERE 1 = 0').keys())


def test_a_v4_database_gets_the_views_and_a_later_definition_replaces_an_older(
    tmp_path: Path,
) -> None:
    """Migration 0005 on a v4 database: a view already there (an older definition) is
    replaced, a missing one created; once v5 is recorded, a view dropped by hand comes back
    and one that exists is left alone."""
    engine = engine_from_url(str(tmp_path / "v4.db"))
    try:
        init_db(engine)
        daily, monthly, calls = (v.name for v in VIEWS)
        with transaction(engine) as conn:  # back to v4, with an older definition of one view
            for view in VIEWS:
                conn.exec_driver_sql(f'DROP VIEW "{view.name}"')
            conn.exec_driver_sql(f'CREATE VIEW "{daily}" AS SELECT 1 AS "Old"')
            conn.exec_driver_sql("UPDATE AoaiSchemaVersion SET Version = 4")
        assert _view_columns(engine, daily) == ["Old"]
        changes = init_db(engine)
        assert changes == [
            f"replaced view {daily}",
            f"created view {monthly}",
            f"created view {calls}",
            "schema version 5",
        ]
        for view in VIEWS:
            assert _view_columns(engine, view.name) == list(view.columns), view.name
        assert init_db(engine) == []
        with transaction(engine) as conn:  # v5: a dropped view is repaired, no other touched
            conn.exec_driver_sql(f'DROP VIEW "{calls}"')
            conn.exec_driver_sql(f'DROP VIEW "{daily}"')
            conn.exec_driver_sql(f'CREATE VIEW "{daily}" AS SELECT 2 AS "Mine"')
        assert init_db(engine) == [f"created view {calls}"]
        assert _view_columns(engine, daily) == ["Mine"]
    finally:
        engine.dispose()


def test_ddl_has_the_views_in_every_dialect() -> None:
    for dialect, verb in (
        ("mssql", "CREATE OR ALTER VIEW [{}] AS"),
        ("postgresql", 'CREATE OR REPLACE VIEW "{}" AS'),
        ("sqlite", 'CREATE VIEW "{}" AS'),
    ):
        script = ddl(dialect)
        at = [script.index(verb.format(v.name)) for v in VIEWS]
        assert at == sorted(at), dialect
        # after the tables they read, before the tables created when needed
        assert script.index("CREATE TABLE", at[-1]) > at[-1]
        assert "ChargebackStatement" in script[at[-1] :] and "AzureCostLine" in script[at[-1] :]
