"""Configuration at the edge: the one place that reads environment variables, and the one
rule for which database a command (or a notebook) opens.

``AOAI_DB_URL``               SQLAlchemy URL of the database (wins over the next one)
``AOAI_DB_STORE_CONNECTION``  the original project's ODBC connection string (Azure SQL)
``AOAI_SPEC``                 path of the deployment spec (``gateway.yaml``)
``AOAI_DEPLOYMENT_MODELS``    JSON deployment → model map (the ingestion function's app setting)
``AOAI_NOW``                  the business clock, e.g. ``2027-03-01T00:05:00Z`` (read by
                              :mod:`aoai_helpers.clock`, which every module asks for the time)

Secrets that provisioning reads (passed on as an ``env`` mapping, default ``os.environ``; never
printed): ``AOAI_BACKEND_KEY`` / ``AOAI_BACKEND_KEY_<BACKEND>`` (an AOAI key for ``auth: key``
backends) and ``AOAI_EVENTHUB_SEND_CONNECTION`` (the logger's Send-only connection string);
``function deploy`` and ``consume`` read ``AOAI_EVENTHUB_LISTEN_CONNECTION`` (Listen-only).

The database rule (:func:`db_url`): ``--db``, else ``$AOAI_DB_URL``, else
``$AOAI_DB_STORE_CONNECTION``, else the spec's ``database.url``, else :data:`DEFAULT_DB_URL`.
A relative SQLite path in a spec resolves against the spec file's folder; the bundled sample
(used when no spec is found) is a copy of ``examples/gateway.yaml`` and resolves as that file
would under the current directory, so its ``sqlite:///../data/aoai_usage.db`` is
``./data/aoai_usage.db`` — the file the CLI, ``make report`` and the notebooks (run from
``notebooks/`` with ``../examples/gateway.yaml``) all open.

Only the standard library here: ``--help`` must not pay for SQLAlchemy or pydantic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import quote_plus

if TYPE_CHECKING:
    from aoai_helpers.spec import Spec

__all__ = [
    "BUNDLED_SPEC",
    "DEFAULT_DB_URL",
    "db_url",
    "deployment_models",
    "normalize_url",
    "secret_from_env",
    "spec_db_url",
    "spec_decides",
    "spec_path",
    "url_from_odbc",
]

#: The database when nothing names one: a SQLite file under the current directory.
DEFAULT_DB_URL: Final = "sqlite:///data/aoai_usage.db"
#: The sample spec shipped inside the package (a copy of ``examples/gateway.yaml``).
BUNDLED_SPEC: Final = Path(__file__).parent / "data" / "gateway.yaml"


def normalize_url(url: str | os.PathLike[str] | None) -> str:
    """Accept a SQLAlchemy URL, a bare file path (SQLite) or None (the default file)."""
    if url is None or str(url).strip() == "":
        return DEFAULT_DB_URL
    s = str(url).strip()
    if "://" not in s:
        return "sqlite:///" + s
    return s


def url_from_odbc(connection_string: str) -> str:
    """A SQLAlchemy URL for an ODBC connection string (the original ``AOAI_DB_STORE_CONNECTION``)."""
    return "mssql+pyodbc:///?odbc_connect=" + quote_plus(connection_string)


def _spec_base(spec_file: str | os.PathLike[str]) -> Path:
    """The folder a spec's relative paths resolve against (see the module docstring)."""
    path = Path(spec_file)
    if path.resolve() == BUNDLED_SPEC.resolve():
        return Path("examples")
    return path.parent


def spec_db_url(url: str, spec_file: str | os.PathLike[str] | None) -> str:
    """A spec's ``database.url``, its relative SQLite path resolved against the spec's folder
    (:func:`_spec_base`); other URLs, absolute paths and in-memory SQLite are returned as given."""
    url = normalize_url(url)
    scheme, sep, rest = url.partition(":///")
    if spec_file is None or not sep or not scheme.startswith("sqlite"):
        return url
    path, q, query = rest.partition("?")
    if not path or path == ":memory:" or path.startswith(("file:", "/", "~")):
        return url
    resolved = os.path.normpath(_spec_base(spec_file) / path)
    return f"{scheme}:///{resolved}{q}{query}"


def spec_decides(explicit: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when neither ``explicit`` (--db) nor the environment names the database, so the
    spec's ``database.url`` decides (a caller loads the spec only then)."""
    env = os.environ if env is None else env
    return not (explicit or env.get("AOAI_DB_URL") or env.get("AOAI_DB_STORE_CONNECTION"))


def db_url(
    explicit: str | None = None,
    spec: Spec | str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    spec_file: str | os.PathLike[str] | None = None,
) -> str:
    """The database every command and notebook opens: ``explicit`` (a --db argument), else
    ``$AOAI_DB_URL``, else ``$AOAI_DB_STORE_CONNECTION``, else the spec's ``database.url``
    (``spec``: the loaded spec or its URL; relative SQLite paths resolve against ``spec_file``'s
    folder, see :func:`spec_db_url`), else :data:`DEFAULT_DB_URL`."""
    env = os.environ if env is None else env
    if explicit:
        return normalize_url(explicit)
    if env.get("AOAI_DB_URL"):
        return normalize_url(env["AOAI_DB_URL"])
    if env.get("AOAI_DB_STORE_CONNECTION"):
        return url_from_odbc(env["AOAI_DB_STORE_CONNECTION"])
    if spec is None:
        return DEFAULT_DB_URL
    url = spec if isinstance(spec, str) else spec.database.url
    return spec_db_url(url, spec_file) if url else DEFAULT_DB_URL


def spec_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The deployment spec: ``explicit`` (a --spec argument), else ``$AOAI_SPEC``, else
    ``gateway.yaml`` in the current directory, else the bundled sample (:data:`BUNDLED_SPEC`).
    """
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("AOAI_SPEC"):
        return Path(env["AOAI_SPEC"])
    if Path("gateway.yaml").is_file():
        return Path("gateway.yaml")
    return BUNDLED_SPEC


def deployment_models(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``$AOAI_DEPLOYMENT_MODELS`` (JSON object deployment → model), or ``{}``."""
    import json

    from aoai_helpers.exceptions import ConfigError

    env = os.environ if env is None else env
    raw = env.get("AOAI_DEPLOYMENT_MODELS", "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(
            'AOAI_DEPLOYMENT_MODELS is not JSON (expected {"deployment": "model"})'
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError("AOAI_DEPLOYMENT_MODELS must map deployment names to model names")
    return data


def secret_from_env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A secret passed by environment variable (``AOAI_EVENTHUB_LISTEN_CONNECTION``, …), or None."""
    env = os.environ if env is None else env
    value = env.get(name, "").strip()
    return value or None
