"""The one place that reads environment variables (configuration at the edge).

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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aoai_helpers.db.store import DEFAULT_DB_URL, normalize_url, url_from_odbc

__all__ = ["db_url", "deployment_models", "secret_from_env", "spec_path"]


def db_url(
    explicit: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    default: str | None = None,
) -> str:
    """The database URL: ``explicit`` (a --db argument), else the environment, else ``default``
    (commands that read a spec pass its ``database.url``), else ``sqlite:///data/aoai_usage.db``."""
    env = os.environ if env is None else env
    if explicit:
        return normalize_url(explicit)
    if env.get("AOAI_DB_URL"):
        return normalize_url(env["AOAI_DB_URL"])
    if env.get("AOAI_DB_STORE_CONNECTION"):
        return url_from_odbc(env["AOAI_DB_STORE_CONNECTION"])
    return normalize_url(default) if default else DEFAULT_DB_URL


def spec_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The deployment spec: ``explicit`` (a --spec argument), else ``$AOAI_SPEC``, else
    ``gateway.yaml`` in the current directory, else the bundled sample (``examples/gateway.yaml``).
    """
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("AOAI_SPEC"):
        return Path(env["AOAI_SPEC"])
    if Path("gateway.yaml").is_file():
        return Path("gateway.yaml")
    return Path(__file__).parent / "data" / "gateway.yaml"


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
