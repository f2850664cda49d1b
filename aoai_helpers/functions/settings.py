"""The app settings of the ingestion function: their names, and their values for a spec.

The function reads them (through :mod:`aoai_helpers.config` and binding expressions in
``function_app.py``); ``function deploy`` writes them. One list, so the two cannot drift.

===================================  ==========================================================
``AOAI_DB_URL``                      SQLAlchemy URL of the database (``AOAI_DB_STORE_CONNECTION``,
                                     the original ODBC string, still works)
``AOAI_EVENTHUB_NAME``               the hub (``%AOAI_EVENTHUB_NAME%`` in the trigger)
``AOAI_EVENTHUB_CONSUMER_GROUP``     the consumer group (``%AOAI_EVENTHUB_CONSUMER_GROUP%``)
``AOAI_EVENTHUB``                    Listen-only connection string, or, identity-based:
``AOAI_EVENTHUB__fullyQualifiedNamespace`` (+ ``__credential=managedidentity``, ``__clientId``)
``AOAI_DEPLOYMENT_MODELS``           JSON: deployment name → model (for events naming no model)
===================================  ==========================================================
"""

from __future__ import annotations

import json
from typing import Final

from ..clouds import get_cloud
from ..spec import Spec

__all__ = [
    "CONNECTION",
    "CONSUMER_GROUP",
    "DB_URL",
    "DEPLOYMENT_MODELS",
    "EVENTHUB_NAME",
    "FUNCTION_NAME",
    "app_settings",
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


def secret_settings(spec: Spec) -> frozenset[str]:
    """Settings whose values are secrets (masked in every display)."""
    return frozenset({DB_URL, "AOAI_DB_STORE_CONNECTION", CONNECTION})


def app_settings(
    spec: Spec, *, db_url: str, eventhub_connection: str | None = None
) -> dict[str, str]:
    """The settings ``function deploy`` sets for ``spec`` (others already on the app are kept).

    ``eventhub_connection`` is the Listen-only connection string, required when the function
    reads the hub with a connection string.
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
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsFeatureFlags": "EnableWorkerIndexing",
        "SCM_DO_BUILD_DURING_DEPLOYMENT": "true",
        "ENABLE_ORYX_BUILD": "true",
    }
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
