"""Which hosting plan a function app runs on, read from its ARM JSON, and what that plan needs.

Pure: :func:`detect_hosting` takes the site as ``GET …/Microsoft.Web/sites/{name}`` returns it
(api-version 2025-05-01, azure-mgmt-web 11's) and, when the site alone does not tell, its
server farm (``GET …/Microsoft.Web/serverfarms/{name}``). The evidence, strongest first:

1. ``properties.managedEnvironmentId`` set: Azure Container Apps hosting. Refused: it deploys
   container images, not packages (the Azure CLI's ``is_centauri_functionapp`` is this test).
2. ``properties.sku`` (read-only, added to ``Site`` in api-version 2025-05-01; "Some valid SKU
   values are Free, Shared, Basic, Dynamic, FlexConsumption, Standard, Premium…",
   Azure/azure-rest-api-specs ``Microsoft.Web/stable/2025-05-01/CommonDefinitions.json``):
   ``FlexConsumption`` is Flex — the field the Azure CLI's ``is_flex_functionapp`` reads and
   the one Microsoft's Flex PM names ("Look at properties.sku. This should say FlexConsumption",
   https://github.com/Azure/azure-dev/issues/3658); ``Dynamic`` is Consumption;
   ``ElasticPremium`` Elastic Premium; any other value a Dedicated (App Service) plan.
3. ``properties.functionAppConfig`` present: Flex. An inference — the section was introduced
   for Flex (*Migrate Consumption apps to Flex*), no page says only Flex has it.
4. The server farm's ``sku.tier`` / ``sku.name``: ``FlexConsumption``/``FC1``,
   ``Dynamic``/``Y1``, ``ElasticPremium``/``EP1-3``, anything else Dedicated. These values are
   NOT CONFIRMED by a Microsoft page (the REST spec gives no enum); the Azure CLI checks
   ``tier == 'dynamic'`` for Linux Consumption.

Python runs on Linux only (*Azure Functions Python developer guide*, "Python is only supported
on a Linux-based hosting plan when running in Azure",
https://learn.microsoft.com/azure/azure-functions/functions-reference-python): a Windows plan is
refused. ``kind`` containing ``linux`` (or ``properties.reserved``) marks Linux.

The SCM (Kudu) host is the ``hostNameSslStates`` entry with ``hostType: Repository`` — apps
can have regional host names (``<app>-<hash>.scm.<region>-01.azurewebsites.net``); the REST
example of a Flex site shows ``sitef6141.scm.azurewebsites.net`` as ``Repository``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "FLEX_REJECTED_SETTINGS",
    "PLAN_LABELS",
    "Hosting",
    "PlanKind",
    "detect_hosting",
    "needs_server_farm",
    "scm_host",
    "server_farm_ref",
]

PlanKind = Literal[
    "flex", "consumption", "elastic_premium", "dedicated", "container_apps", "unknown"
]

PLAN_LABELS: Final[Mapping[PlanKind, str]] = {
    "flex": "Flex Consumption",
    "consumption": "Consumption",
    "elastic_premium": "Elastic Premium",
    "dedicated": "Dedicated (App Service plan)",
    "container_apps": "Azure Container Apps",
    "unknown": "unknown",
}

#: App settings a Flex Consumption app must not have, and why. ``function deploy`` removes the
#: ones the app has (shown as ``remove`` in the plan; ``--keep-setting NAME`` keeps one).
#: Sources: the *Flex Consumption plan deprecations* list (functions-app-settings.md), whose
#: current text was NOT retrieved — the first four rows are in Microsoft's preview-era draft of
#: flex-consumption-plan.md; WEBSITE_RUN_FROM_PACKAGE is on *Package-based deployment* ("Don't
#: set WEBSITE_RUN_FROM_PACKAGE"); SCM_DO_BUILD_DURING_DEPLOYMENT and ENABLE_ORYX_BUILD only in
#: third-party copies ("Replaced by the remoteBuild parameter") — NOT CONFIRMED.
FLEX_REJECTED_SETTINGS: Final[Mapping[str, str]] = {
    "FUNCTIONS_WORKER_RUNTIME": "replaced by properties.functionAppConfig.runtime.name",
    "FUNCTIONS_WORKER_RUNTIME_VERSION": "replaced by properties.functionAppConfig.runtime.version",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING": "replaced by functionAppConfig.deployment",
    "WEBSITE_CONTENTSHARE": "replaced by functionAppConfig.deployment",
    "WEBSITE_RUN_FROM_PACKAGE": "Flex runs from the deployed package (don't set it)",
    "SCM_DO_BUILD_DURING_DEPLOYMENT": "replaced by One Deploy's RemoteBuild parameter",
    "ENABLE_ORYX_BUILD": "replaced by One Deploy's RemoteBuild parameter",
}

_CONTAINER_APPS_REFUSAL: Final = (
    "is hosted on Azure Container Apps (properties.managedEnvironmentId): it runs a container "
    "image, not a package — `function deploy` cannot deploy it; build an image instead"
)


@dataclass(frozen=True)
class Hosting:
    """The app's hosting plan and how it was told (``evidence``)."""

    plan: PlanKind
    linux: bool | None
    sku: str | None  # the site's properties.sku, else the server farm's tier/name
    evidence: str
    scm_host: str | None = None  # from hostNameSslStates (hostType Repository)
    runtime: tuple[str, str] | None = None  # Flex: functionAppConfig.runtime (name, version)

    @property
    def flex(self) -> bool:
        return self.plan == "flex"

    @property
    def label(self) -> str:
        return PLAN_LABELS[self.plan] + (f" ({self.sku})" if self.sku else "")

    @property
    def refusal(self) -> str | None:
        """Why ``function deploy`` cannot deploy this package here (None: it can)."""
        if self.plan == "container_apps":
            return _CONTAINER_APPS_REFUSAL
        if self.linux is False:
            return (
                f"runs on Windows ({self.label}): Python function apps run on Linux only "
                "(Azure Functions Python developer guide); create a Linux app"
            )
        if self.flex and self.runtime is not None and self.runtime[0].lower() != "python":
            return (
                f"is a Flex Consumption app for runtime {self.runtime[0]!r} "
                "(properties.functionAppConfig.runtime.name): this package needs 'python'"
            )
        return None


def _props(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    props = resource.get("properties")
    return props if isinstance(props, Mapping) else {}


def scm_host(site: Mapping[str, Any]) -> str | None:
    """The SCM host of ``site`` (``hostNameSslStates[hostType == Repository].name``), if any."""
    for state in _props(site).get("hostNameSslStates") or ():
        if isinstance(state, Mapping) and str(state.get("hostType", "")).lower() == "repository":
            name = state.get("name")
            if name:
                return str(name)
    return None


def server_farm_ref(site: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(resource group, name)`` of the site's ``serverFarmId``, if it has one."""
    farm = _props(site).get("serverFarmId")
    if not farm:
        return None
    parts = str(farm).strip("/").split("/")
    lower = [p.lower() for p in parts]
    try:
        rg = parts[lower.index("resourcegroups") + 1]
        name = parts[lower.index("serverfarms") + 1]
    except (ValueError, IndexError):
        return None
    return rg, name


def needs_server_farm(site: Mapping[str, Any]) -> bool:
    """Whether :func:`detect_hosting` needs the server farm to tell the plan."""
    props = _props(site)
    if props.get("managedEnvironmentId") or props.get("sku") or props.get("functionAppConfig"):
        return False
    return server_farm_ref(site) is not None


def _linux(site: Mapping[str, Any], farm: Mapping[str, Any] | None) -> bool | None:
    kind = str(site.get("kind") or "").lower()
    if "linux" in kind:
        return True
    reserved = _props(site).get("reserved")
    if reserved is None and farm is not None:
        reserved = _props(farm).get("reserved")
    if reserved is not None:
        return bool(reserved)
    return False if kind.startswith("functionapp") else None


def _from_sku(value: str) -> PlanKind:
    low = value.lower()
    if low in ("flexconsumption", "fc1"):
        return "flex"
    if low in ("dynamic", "y1"):
        return "consumption"
    if low == "elasticpremium" or low.startswith("ep"):
        return "elastic_premium"
    return "dedicated"


def _runtime(props: Mapping[str, Any]) -> tuple[str, str] | None:
    config = props.get("functionAppConfig")
    runtime = config.get("runtime") if isinstance(config, Mapping) else None
    if isinstance(runtime, Mapping) and runtime.get("name"):
        return str(runtime["name"]), str(runtime.get("version") or "")
    return None


def detect_hosting(
    site: Mapping[str, Any], server_farm: Mapping[str, Any] | None = None
) -> Hosting:
    """The hosting plan of ``site`` (ARM JSON), by the evidence in the module docstring."""
    props = _props(site)
    host = scm_host(site)
    runtime = _runtime(props)
    linux = _linux(site, server_farm)
    if props.get("managedEnvironmentId"):
        return Hosting(
            "container_apps", True, None, "properties.managedEnvironmentId", host, runtime
        )
    sku = props.get("sku")
    if sku:
        plan = _from_sku(str(sku))
        return Hosting(
            plan, True if plan == "flex" else linux, str(sku), "properties.sku", host, runtime
        )
    if props.get("functionAppConfig") is not None:
        return Hosting("flex", True, None, "properties.functionAppConfig", host, runtime)
    farm_sku = server_farm.get("sku") if server_farm is not None else None
    if isinstance(farm_sku, Mapping) and (farm_sku.get("tier") or farm_sku.get("name")):
        tier, name = str(farm_sku.get("tier") or ""), str(farm_sku.get("name") or "")
        plan = _from_sku(tier) if tier else _from_sku(name)
        shown = "/".join(v for v in (tier, name) if v)
        return Hosting(plan, linux, shown, "the server farm's sku", host, runtime)
    return Hosting("unknown", linux, None, "neither the site nor its server farm says", host)
