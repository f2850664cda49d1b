"""The app settings of the function app: their names, and their values for a spec.

The functions read them (through :mod:`aoai_helpers.config`, :func:`reconcile_config` and
binding expressions in ``function_app.py``); ``function deploy`` writes them. One list, so the
two cannot drift.

======================================  =======================================================
``AOAI_DB_URL``                         SQLAlchemy URL of the database (``AOAI_DB_STORE_CONNECTION``,
                                        the original ODBC string, still works)
``AOAI_EVENTHUB_NAME``                  the hub (``%AOAI_EVENTHUB_NAME%`` in the trigger)
``AOAI_EVENTHUB_CONSUMER_GROUP``        the consumer group (``%AOAI_EVENTHUB_CONSUMER_GROUP%``)
``AOAI_EVENTHUB``                       Listen-only connection string, or, identity-based:
``AOAI_EVENTHUB__fullyQualifiedNamespace`` (+ ``__credential=managedidentity``, ``__clientId``)
``AOAI_DEPLOYMENT_MODELS``              JSON: deployment name → model (for events naming no model)
``AOAI_RECONCILE_SCHEDULE``             the reconcile timer's NCRONTAB (``%AOAI_RECONCILE_SCHEDULE%``
                                        in its trigger; always written: the trigger needs it)
``AOAI_CLOUD``                          the cloud of the Log Analytics endpoint (``AzureCloud``…)
``AOAI_LLM_LOG_WORKSPACE_ID``           the workspace GUID the timer queries (none: it only warns)
``AOAI_LLM_LOG_CORRELATION_COLUMN``     the column holding the call's request id
``AOAI_RECONCILE_GRACE_HOURS``          ``reconcile.grace_hours``
``AOAI_RECONCILE_LOOKBACK_MINUTES``     ``reconcile.lookback_minutes``
``AOAI_IDENTITY_CLIENT_ID``             the user-assigned identity the timer signs in with
                                        (``function.identity_client_id``; none: system-assigned)
======================================  =======================================================

The reconcile settings but the schedule are written only when the spec has
``llm_log.workspace_id``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from aoai_helpers.clouds import get_cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Reconcile, Spec

__all__ = [
    "CLOUD",
    "CONNECTION",
    "CONSUMER_GROUP",
    "DB_URL",
    "DEPLOYMENT_MODELS",
    "EVENTHUB_NAME",
    "FUNCTION_NAME",
    "IDENTITY_CLIENT_ID",
    "LLM_LOG_CORRELATION_COLUMN",
    "LLM_LOG_WORKSPACE_ID",
    "RECONCILE_FUNCTION_NAME",
    "RECONCILE_GRACE_HOURS",
    "RECONCILE_LOOKBACK_MINUTES",
    "RECONCILE_SCHEDULE",
    "ReconcileConfig",
    "app_settings",
    "reconcile_config",
    "secret_settings",
]

DB_URL: Final = "AOAI_DB_URL"
EVENTHUB_NAME: Final = "AOAI_EVENTHUB_NAME"
CONSUMER_GROUP: Final = "AOAI_EVENTHUB_CONSUMER_GROUP"
DEPLOYMENT_MODELS: Final = "AOAI_DEPLOYMENT_MODELS"
#: The trigger's ``connection``: a connection string, or the prefix of identity-based settings.
CONNECTION: Final = "AOAI_EVENTHUB"
#: The function's name in the app (what ``function deploy`` checks is indexed).
FUNCTION_NAME: Final = "ingest_usage"
#: The reconcile timer's name in the app, and its settings.
RECONCILE_FUNCTION_NAME: Final = "reconcile_usage"
RECONCILE_SCHEDULE: Final = "AOAI_RECONCILE_SCHEDULE"
CLOUD: Final = "AOAI_CLOUD"
LLM_LOG_WORKSPACE_ID: Final = "AOAI_LLM_LOG_WORKSPACE_ID"
LLM_LOG_CORRELATION_COLUMN: Final = "AOAI_LLM_LOG_CORRELATION_COLUMN"
RECONCILE_GRACE_HOURS: Final = "AOAI_RECONCILE_GRACE_HOURS"
RECONCILE_LOOKBACK_MINUTES: Final = "AOAI_RECONCILE_LOOKBACK_MINUTES"
IDENTITY_CLIENT_ID: Final = "AOAI_IDENTITY_CLIENT_ID"
_COLUMN: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_settings(spec: Spec) -> frozenset[str]:
    """Settings whose values are secrets (masked in every display)."""
    return frozenset({DB_URL, "AOAI_DB_STORE_CONNECTION", CONNECTION})


def app_settings(
    spec: Spec, *, db_url: str, eventhub_connection: str | None = None, flex: bool = False
) -> dict[str, str]:
    """The settings ``function deploy`` sets for ``spec`` (others already on the app are kept).

    ``eventhub_connection`` is the Listen-only connection string, required when the function
    reads the hub with a connection string. ``flex``: the app is on Flex Consumption, which
    takes the runtime from ``properties.functionAppConfig.runtime`` and the remote build from
    One Deploy's ``RemoteBuild`` parameter, so ``FUNCTIONS_WORKER_RUNTIME``,
    ``SCM_DO_BUILD_DURING_DEPLOYMENT`` and ``ENABLE_ORYX_BUILD`` are left out
    (:data:`~aoai_helpers.azure.functions.hosting.FLEX_REJECTED_SETTINGS`). Other plans get them:
    remote build (Oryx) on zip deploy, as *Package-based deployment* says for Linux
    Consumption ("Remote build or external package URL").
    """
    if spec.function is None:
        raise ValueError("the spec has no function section")
    fn, eh = spec.function, spec.event_hub
    out = {
        DB_URL: db_url,
        EVENTHUB_NAME: eh.name,
        CONSUMER_GROUP: eh.consumer_group,
        DEPLOYMENT_MODELS: json.dumps(
            spec.deployment_models(), sort_keys=True, separators=(",", ":")
        ),
        "AzureWebJobsFeatureFlags": "EnableWorkerIndexing",
    }
    if not flex:
        out["FUNCTIONS_WORKER_RUNTIME"] = "python"
        out["SCM_DO_BUILD_DURING_DEPLOYMENT"] = "true"
        out["ENABLE_ORYX_BUILD"] = "true"
    out[RECONCILE_SCHEDULE] = spec.reconcile.schedule
    llm = spec.llm_log
    if llm.workspace_id:
        out[CLOUD] = spec.cloud
        out[LLM_LOG_WORKSPACE_ID] = llm.workspace_id
        out[LLM_LOG_CORRELATION_COLUMN] = llm.correlation_column
        out[RECONCILE_GRACE_HOURS] = repr(spec.reconcile.grace_hours)
        out[RECONCILE_LOOKBACK_MINUTES] = str(spec.reconcile.lookback_minutes)
        if fn.identity_client_id:
            out[IDENTITY_CLIENT_ID] = fn.identity_client_id
    conn = CONNECTION
    if fn.eventhub_auth == "managed_identity":
        out[f"{conn}__fullyQualifiedNamespace"] = get_cloud(spec.cloud).eventhub_host(eh.namespace)
        if fn.identity_client_id:
            out[f"{conn}__credential"] = "managedidentity"
            out[f"{conn}__clientId"] = fn.identity_client_id
    else:
        if not eventhub_connection:
            raise ValueError("a Listen-only Event Hubs connection string is required")
        out[conn] = eventhub_connection
    return out


@dataclass(frozen=True)
class ReconcileConfig:
    """What the reconcile timer reads from its app settings (:func:`reconcile_config`)."""

    cloud: str
    workspace_id: str | None
    correlation_column: str
    settings: Reconcile
    identity_client_id: str | None


def reconcile_config(env: Mapping[str, str] | None = None) -> ReconcileConfig:
    """The reconcile timer's settings from ``env`` (default: the process environment).

    ``AOAI_CLOUD`` defaults to ``AzureCloud``; a missing workspace id is ``None`` (the timer
    warns and does nothing); the grace, lookback and schedule take the spec's defaults when
    absent. A value that cannot be used is a :class:`~aoai_helpers.exceptions.ConfigError`
    naming the setting. The identity's client id is ``AOAI_IDENTITY_CLIENT_ID``, else the
    Event Hubs connection's ``AOAI_EVENTHUB__clientId``.
    """
    env = os.environ if env is None else env

    def value(name: str) -> str | None:
        found = env.get(name, "").strip()
        return found or None

    cloud = get_cloud(value(CLOUD) or "AzureCloud").name
    column = value(LLM_LOG_CORRELATION_COLUMN) or "CorrelationId"
    if not _COLUMN.match(column):
        raise ConfigError(f"{LLM_LOG_CORRELATION_COLUMN} {column!r} is not a column name")
    fields: dict[str, str] = {}
    for name, field_name in (
        (RECONCILE_GRACE_HOURS, "grace_hours"),
        (RECONCILE_LOOKBACK_MINUTES, "lookback_minutes"),
        (RECONCILE_SCHEDULE, "schedule"),
    ):
        found = value(name)
        if found is not None:
            fields[field_name] = found
    try:
        settings = Reconcile.model_validate(fields)
    except ValidationError as exc:
        names = {
            "grace_hours": RECONCILE_GRACE_HOURS,
            "lookback_minutes": RECONCILE_LOOKBACK_MINUTES,
            "schedule": RECONCILE_SCHEDULE,
        }
        bad = sorted({names.get(str(e["loc"][0]), str(e["loc"][0])) for e in exc.errors()})
        raise ConfigError(f"invalid reconcile app setting(s): {', '.join(bad)}") from None
    return ReconcileConfig(
        cloud=cloud,
        workspace_id=value(LLM_LOG_WORKSPACE_ID),
        correlation_column=column,
        settings=settings,
        identity_client_id=value(IDENTITY_CLIENT_ID) or value(f"{CONNECTION}__clientId"),
    )
