"""CLI: ``db init|upgrade|ddl`` — create, migrate or print the schema (tables and the views
for Power BI, :mod:`aoai_helpers.db.views`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aoai_helpers.cli._options import announce, database_url, with_db
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_db_parser"]


def cmd_db_init(args: argparse.Namespace) -> int:
    from aoai_helpers.db.engine import engine_from_url, masked_url
    from aoai_helpers.pipeline.service import ensure_db

    engine = engine_from_url(database_url(args))
    changes = ensure_db(engine, seed_default_rates=not args.no_default_rates)
    print(
        f"database {masked_url(str(engine.url))}: "
        + ("; ".join(changes) if changes else "up to date")
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from aoai_helpers.db.engine import engine_from_url, sqlite_path
    from aoai_helpers.pipeline.upgrade import upgrade

    url = database_url(args)
    announce(url)
    file = sqlite_path(url)
    if file is not None and not file.is_file():
        raise ConfigError(
            f"no database file at {file}: nothing to upgrade (db init creates a new database)"
        )
    result = upgrade(engine_from_url(url), seed_default_rates=not args.no_default_rates)
    lines = result.lines()
    print(lines[0])
    for line in lines[1:]:
        print(f"  {line}")
    return 0


def cmd_db_ddl(args: argparse.Namespace) -> int:
    from aoai_helpers.db.schema import ddl

    if args.from_original:
        from aoai_helpers.db.migrate_tsql import migration_tsql

        if args.dialect != "mssql":
            raise ConfigError("--from-original is T-SQL only (--dialect mssql)")
        sys.stdout.write(migration_tsql())
        return 0
    sys.stdout.write(ddl(args.dialect))
    return 0


def add_db_parser(sub: Any) -> None:
    """Register ``db init|upgrade|ddl``."""
    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    p = with_db(
        db.add_parser(
            "init", help="create or upgrade the schema (seeds default rates into a new rate table)"
        )
    )
    p.add_argument(
        "--no-default-rates", action="store_true", help="do not seed the default rate set"
    )
    p.set_defaults(func=cmd_db_init)
    p = with_db(
        db.add_parser(
            "upgrade",
            help="migrate a database of the original APIM-AOAI-Proxy (or an older schema) in place",
        )
    )
    p.add_argument(
        "--no-default-rates",
        action="store_true",
        help="do not seed the default rate set into a rate table it creates",
    )
    p.set_defaults(func=cmd_db_upgrade)
    p = db.add_parser(
        "ddl", help="print the schema (tables and views) as SQL (T-SQL for Azure SQL by default)"
    )
    p.add_argument("--dialect", choices=["mssql", "postgresql", "sqlite"], default="mssql")
    p.add_argument(
        "--from-original",
        action="store_true",
        help="print the T-SQL migration from the original schema (sql/migrate_from_original.sql)",
    )
    p.set_defaults(func=cmd_db_ddl)
