"""Engines and transactions: a database URL (or a bare SQLite path) to a tuned engine,
passwords masked for display, driver failures as one-line :class:`DatabaseError`.

Any SQLAlchemy URL works: SQLite (default, a file), PostgreSQL (``postgresql+psycopg://``),
Azure SQL (``mssql+pyodbc://``; the driver is imported only when such a URL is used).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

# the URL rules are configuration's (one copy); re-exported here for the engine's callers
from aoai_helpers.config import DEFAULT_DB_URL, normalize_url, url_from_odbc
from aoai_helpers.exceptions import ConfigError, DatabaseError

__all__ = [
    "DEFAULT_DB_URL",
    "as_date",
    "database_errors",
    "engine_from_url",
    "masked_url",
    "normalize_url",
    "parse_url",
    "sqlite_file",
    "sqlite_path",
    "transaction",
    "url_from_odbc",
]

_ODBC_SECRET = re.compile(r"(?i)((?:pwd|password)(?:=|%3D))(.*?)(;|%3B|&|$)")


def masked_url(url: str) -> str:
    """The URL with its password — also one inside ``odbc_connect=`` — replaced by ``***``."""
    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"
    return _ODBC_SECRET.sub(r"\1***\3", rendered)


def parse_url(url: str | os.PathLike[str] | None) -> URL:
    """The parsed URL of :func:`normalize_url` (a ConfigError, password masked, if malformed)."""
    s = normalize_url(url)
    try:
        return make_url(s)
    except ArgumentError:
        raise ConfigError(f"not a database URL: {masked_url(s)}") from None


def sqlite_file(parsed: URL) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory and ``file:`` URIs)."""
    db = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or not db
        or db == ":memory:"
        or db.startswith("file:")
    ):
        return None
    return Path(db).expanduser()


def sqlite_path(url: str | os.PathLike[str] | None) -> Path | None:
    """The file of a SQLite URL or path (None for other databases and in-memory SQLite)."""
    return sqlite_file(parse_url(url))


def engine_from_url(url: str | os.PathLike[str] | None = None) -> Engine:
    """An engine for ``url`` (SQLite file by default), with SQLite tuned for ingest.

    Raises :class:`ConfigError` for a malformed URL or a missing driver.
    """
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {}
    file = sqlite_file(parsed)
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder for the SQLite file {file}: {exc.strerror or exc}"
            ) from None
    if parsed.get_backend_name() != "sqlite":
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        hint = ""
        if parsed.get_backend_name() == "mssql":
            hint = " — install the extra: pip install 'apim-aoai-proxy[mssql]' and the Microsoft ODBC driver (or FreeTDS)"
        elif parsed.get_backend_name() == "postgresql":
            hint = " — install the extra: pip install 'apim-aoai-proxy[postgres]'"
        raise ConfigError(f"no driver for {parsed.drivername}: {exc}{hint}") from None
    if parsed.drivername == "mssql+pyodbc":
        _check_odbc_driver(parsed, engine.dialect.dbapi)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


_ODBC_DRIVER = re.compile(r"(?i)(?:^|;)\s*driver\s*=\s*(\{[^}]*\}|[^;]*)")


def _check_odbc_driver(parsed: URL, dbapi: Any) -> None:
    """A ConfigError now, rather than a driver-manager error at the first query, when the URL
    names an ODBC driver that is not installed (``pyodbc.drivers()`` lists those that are)."""
    named = parsed.query.get("driver")
    odbc = parsed.query.get("odbc_connect")
    if not named and isinstance(odbc, str):
        found = _ODBC_DRIVER.search(odbc)
        named = found.group(1).strip().strip("{}") if found else None
    drivers = getattr(dbapi, "drivers", None)
    if not isinstance(named, str) or not named or drivers is None:
        return  # a DSN, or a pyodbc that cannot list drivers: the driver manager decides
    installed = list(drivers())
    if named not in installed:
        raise ConfigError(
            f"ODBC driver {named!r} is not installed (installed: {', '.join(installed) or 'none'})"
            " — install the Microsoft ODBC driver (msodbcsql18) or FreeTDS, or name an installed"
            " one with ?driver=…"
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: keeps the RequestId index hot during ingest
    cur.close()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; database failures surface as :class:`DatabaseError` (URL masked)."""
    with database_errors(engine), engine.begin() as conn:
        yield conn


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Turn SQLAlchemy/driver exceptions into one-line :class:`DatabaseError` (URL masked)."""
    try:
        yield
    except OperationalError as exc:
        raise DatabaseError(
            f"database unreachable or busy ({masked_url(str(engine.url))}): {_first_line(exc.orig)}"
        ) from exc
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database error: {_first_line(getattr(exc, 'orig', exc))}") from exc


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def as_date(value: date | datetime | str) -> date:
    """The day of a DATETIME (or DATE) value as a driver hands it back: SQLite may give the
    stored text (through a subquery or an aggregate) instead of a ``datetime``."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.date() if isinstance(value, datetime) else value
