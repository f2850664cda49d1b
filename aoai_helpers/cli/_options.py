"""Options every command group shares (``--db``, ``--spec``) and the one way a command opens
its database: :func:`aoai_helpers.config.db_url` over ``--db``, the environment and the spec.

Light on purpose: the parser is built from these without importing SQLAlchemy or pydantic;
the functions that open a database import them when they run.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Final

from aoai_helpers.config import db_url, spec_decides, spec_path

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from aoai_helpers.spec import Spec

__all__ = [
    "DB_HELP",
    "SPEC_HELP",
    "announce",
    "database_url",
    "existing_engine",
    "open_engine",
    "with_db",
    "with_spec",
]

DB_HELP: Final = (
    "SQLAlchemy URL or SQLite file path (default: $AOAI_DB_URL, else the spec's database.url, "
    "relative to the spec's folder, else sqlite:///data/aoai_usage.db)"
)
SPEC_HELP: Final = "deployment spec (default: $AOAI_SPEC, ./gateway.yaml, else the bundled sample)"


def with_db(p: argparse.ArgumentParser, text: str = DB_HELP) -> argparse.ArgumentParser:
    """Add ``--db``."""
    p.add_argument("--db", metavar="URL", help=text)
    return p


def with_spec(p: argparse.ArgumentParser, text: str = SPEC_HELP) -> argparse.ArgumentParser:
    """Add ``--spec``."""
    p.add_argument("--spec", metavar="FILE", help=text)
    return p


def database_url(args: argparse.Namespace, spec: Spec | None = None) -> str:
    """The database of a command: ``--db``, else the environment, else the database of the
    spec (``spec`` if the command loaded one, else the one ``--spec`` names or is found)."""
    explicit = getattr(args, "db", None)
    if not spec_decides(explicit):
        return db_url(explicit)
    file = spec_path(getattr(args, "spec", None))
    if spec is None:
        from aoai_helpers.spec import load_spec

        spec = load_spec(file)
    return db_url(None, spec, spec_file=file)


def announce(url: str) -> None:
    """Name the database a command opened (masked) on stderr, when stderr is a terminal (as the
    progress bar does: output piped or captured stays exactly the command's)."""
    if sys.stderr.isatty():
        from aoai_helpers.db.engine import masked_url

        print(f"database: {masked_url(url)}", file=sys.stderr, flush=True)


def open_engine(args: argparse.Namespace) -> Engine:
    """An engine on the command's database (created on first write)."""
    from aoai_helpers.db.engine import engine_from_url

    url = database_url(args)
    announce(url)
    return engine_from_url(url)


def existing_engine(args: argparse.Namespace) -> Any:
    """For read commands: the database must exist and have the tables (never created here)."""
    from aoai_helpers.db.schema import require_schema

    url = database_url(args)
    announce(url)
    return require_schema(url)
