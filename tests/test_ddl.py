"""``db ddl`` and ``sql/aoaieventdb.sql`` hold every table and view the project creates, in all
three dialects, and the DDL runs: on a real SQLite file and a real PostgreSQL server it creates
exactly the tables and views the code itself creates (``db init``, ``report --issue``,
``bill import``, database checkpoints of ``consume``)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect

import aoai_helpers
from aoai_helpers.analysis.statement import statement_metadata
from aoai_helpers.db.schema import ddl, init_schema
from aoai_helpers.db.views import VIEWS
from aoai_helpers.eventlog.checkpoints import checkpoint_metadata

ROOT = Path(__file__).resolve().parents[1]
CREATE = re.compile(r'CREATE TABLE [\["]?(\w+)[\]"]?')
CREATE_VIEW = re.compile(r'CREATE (?:OR (?:ALTER|REPLACE) )?VIEW [\["]?(\w+)[\]"]?')


def _tables_in_the_package() -> set[str]:
    """Every table of every ``MetaData`` any module of the package defines (found by importing
    them all, not from the list ``ddl`` uses)."""
    names: set[str] = set()
    for info in pkgutil.walk_packages(aoai_helpers.__path__, "aoai_helpers."):
        if ".functions.template" in info.name:
            continue  # the function app's entry point imports azure.functions at import time
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, MetaData):
                names |= set(value.tables)
    return names


@pytest.mark.parametrize("dialect", ["mssql", "postgresql", "sqlite"])
def test_ddl_has_every_table_the_package_defines(dialect: str) -> None:
    defined = _tables_in_the_package()
    assert {
        "ApimAoaiToken",
        "ChargebackStatement",
        "EventHubCheckpoint",
        "ReconcileState",
    } <= defined
    assert set(CREATE.findall(ddl(dialect))) == defined
    assert CREATE_VIEW.findall(ddl(dialect)) == [v.name for v in VIEWS]


def test_the_committed_sql_file_has_every_table_and_view() -> None:
    committed = (ROOT / "sql" / "aoaieventdb.sql").read_text("utf-8")
    assert set(CREATE.findall(committed)) == _tables_in_the_package()
    assert CREATE_VIEW.findall(committed) == [v.name for v in VIEWS]
    migration = (ROOT / "sql" / "migrate_from_original.sql").read_text("utf-8")
    assert CREATE_VIEW.findall(migration) == [v.name for v in VIEWS]


def _run_ddl(url: str, dialect: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in ddl(dialect).split(";\n"):
                body = "\n".join(
                    line for line in statement.splitlines() if not line.startswith("--")
                ).strip()
                if body:
                    conn.exec_driver_sql(body)
        insp = inspect(engine)
        return set(insp.get_table_names()), set(insp.get_view_names())
    finally:
        engine.dispose()


def _created_by_the_code(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            init_schema(conn)
        statement_metadata.create_all(engine)
        checkpoint_metadata.create_all(engine)
        insp = inspect(engine)
        return set(insp.get_table_names()), set(insp.get_view_names())
    finally:
        engine.dispose()


def test_sqlite_ddl_creates_what_the_code_creates(tmp_path: Path) -> None:
    from_ddl = _run_ddl(f"sqlite:///{tmp_path / 'ddl.db'}", "sqlite")
    assert from_ddl == _created_by_the_code(f"sqlite:///{tmp_path / 'code.db'}")
    assert from_ddl[1] == {v.name for v in VIEWS}


@pytest.mark.postgres
def test_postgresql_ddl_creates_what_the_code_creates(pg_server) -> None:
    from_ddl = _run_ddl(pg_server.new_database(), "postgresql")
    assert from_ddl == _created_by_the_code(pg_server.new_database())
