"""The in-memory ARM's Providers_Get listing (:mod:`aoai_helpers.azure.dryrun`): namespace →
resource type → api-versions, and a few region names per cloud. **The tests' assumption, not a
fact about any cloud** (see :mod:`~aoai_helpers.azure.dryrun`'s docstring). Imports the top
level only.
"""

from __future__ import annotations

from collections.abc import Mapping

from aoai_helpers.clouds import CLOUDS

__all__ = [
    "LOCATIONS",
    "provider_listing",
]

#: A few region names of each cloud, for the provider listing's ``locations`` (flavour only:
#: nothing reads them).
LOCATIONS: Mapping[str, tuple[str, ...]] = {
    "AzureCloud": ("West Europe", "North Europe", "East US", "Sweden Central"),
    "AzureChinaCloud": ("China North 3", "China East 2", "China North 2", "China East 3"),
    "AzureUSGovernment": ("USGov Virginia", "USGov Arizona", "USGov Texas"),
}


_APIM = ["2024-10-01-preview", "2024-05-01", "2022-08-01", "2021-08-01"]


_EVENTHUB = ["2026-01-01", "2024-01-01", "2021-11-01", "2017-04-01"]


#: namespace → resource type (as ARM lists it, nested types with ``/``) → api-versions. The
#: tests' assumption (see the module docstring), the same on every cloud.
_PROVIDERS: Mapping[str, Mapping[str, list[str]]] = {
    "Microsoft.ApiManagement": {
        t: _APIM
        for t in (
            "service",
            "service/apis",
            "service/apis/operations",
            "service/apis/policies",
            "service/apis/diagnostics",
            "service/namedValues",
            "service/loggers",
            "service/products",
            "service/products/apis",
            "service/products/policies",
            "service/subscriptions",
            "service/users",
        )
    },
    "Microsoft.EventHub": {
        t: _EVENTHUB
        for t in (
            "namespaces",
            "namespaces/eventhubs",
            "namespaces/eventhubs/authorizationRules",
            "namespaces/eventhubs/consumergroups",
        )
    },
    "Microsoft.Insights": {"diagnosticSettings": ["2021-05-01-preview", "2017-05-01-preview"]},
    "Microsoft.Web": {
        t: ["2025-05-01", "2024-04-01", "2023-12-01", "2022-09-01"]
        for t in ("sites", "sites/config", "serverfarms")
    },
}


def provider_listing(cloud: str) -> dict[str, dict[str, list[str]]]:
    """The in-memory ARM's default Providers_Get listing on ``cloud``: namespace → resource type
    → api-versions (a fresh copy a test may change). An assumption, not a fact about the cloud
    (module docstring)."""
    if cloud not in CLOUDS:
        raise ValueError(f"unknown cloud {cloud!r}")
    return {ns: {t: list(v) for t, v in types.items()} for ns, types in _PROVIDERS.items()}
