"""The hosting plan of a function app from its ARM JSON (functions/hosting.py): pure, offline.

The site shapes follow Azure/azure-rest-api-specs ``specification/web/resource-manager/
Microsoft.Web/stable/2025-05-01/CommonDefinitions.json`` (``Site.properties.sku``: "Some valid
SKU values are Free, Shared, Basic, Dynamic, FlexConsumption, Standard, Premium…";
``functionAppConfig.runtime {name, version}``; ``managedEnvironmentId``; ``hostNameSslStates``
with ``hostType`` ``Standard`` | ``Repository``) and the Flex example
``examples/CreateOrUpdateFunctionAppFlexConsumptionWithDetails.json`` (``kind:
functionapp,linux``, runtime ``python`` ``3.11``).
"""

from __future__ import annotations

from typing import Any

import pytest

from aoai_helpers.azure.functions.hosting import (
    FLEX_REJECTED_SETTINGS,
    detect_hosting,
    needs_server_farm,
    scm_host,
    server_farm_ref,
)

FARM = "/subscriptions/s/resourceGroups/rg-plans/providers/Microsoft.Web/serverfarms/plan-1"


def _site(kind: str = "functionapp,linux", **props: Any) -> dict[str, Any]:
    return {"kind": kind, "properties": {"serverFarmId": FARM, **props}}


@pytest.mark.parametrize(
    ("sku", "plan"),
    [
        ("FlexConsumption", "flex"),
        ("Dynamic", "consumption"),
        ("ElasticPremium", "elastic_premium"),
        ("PremiumV3", "dedicated"),
        ("Basic", "dedicated"),
        ("Standard", "dedicated"),
    ],
)
def test_the_sites_sku_names_the_plan(sku: str, plan: str) -> None:
    hosting = detect_hosting(_site(sku=sku))
    assert (hosting.plan, hosting.evidence, hosting.sku) == (plan, "properties.sku", sku)
    assert hosting.flex is (plan == "flex") and hosting.refusal is None
    assert not needs_server_farm(_site(sku=sku))


def test_function_app_config_alone_means_flex_with_its_runtime() -> None:
    site = _site(functionAppConfig={"runtime": {"name": "python", "version": "3.11"}})
    hosting = detect_hosting(site)
    assert (hosting.plan, hosting.runtime, hosting.refusal) == ("flex", ("python", "3.11"), None)
    assert hosting.evidence == "properties.functionAppConfig"
    node = detect_hosting(
        _site(sku="FlexConsumption", functionAppConfig={"runtime": {"name": "node"}})
    )
    assert node.refusal is not None and "'node'" in node.refusal


@pytest.mark.parametrize(
    ("farm_sku", "plan"),
    [
        ({"name": "FC1", "tier": "FlexConsumption"}, "flex"),
        ({"name": "Y1", "tier": "Dynamic"}, "consumption"),
        ({"name": "EP2", "tier": "ElasticPremium"}, "elastic_premium"),
        ({"name": "P1v3", "tier": "PremiumV3"}, "dedicated"),
        ({"name": "EP1"}, "elastic_premium"),
    ],
)
def test_without_the_sites_sku_the_server_farm_tells(farm_sku: dict[str, str], plan: str) -> None:
    site = _site()
    assert needs_server_farm(site) and server_farm_ref(site) == ("rg-plans", "plan-1")
    hosting = detect_hosting(site, {"sku": farm_sku, "properties": {"reserved": True}})
    assert (hosting.plan, hosting.evidence) == (plan, "the server farm's sku")
    unknown = detect_hosting(site, None)
    assert unknown.plan == "unknown" and unknown.refusal is None


def test_container_apps_and_windows_are_refused() -> None:
    aca = detect_hosting(
        _site(
            kind="functionapp,linux,container,azurecontainerapps",
            managedEnvironmentId="/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/managedEnvironments/env",
            sku="FlexConsumption",  # managedEnvironmentId wins over everything else
        )
    )
    assert aca.plan == "container_apps" and "Container Apps" in (aca.refusal or "")
    windows = detect_hosting(_site(kind="functionapp", sku="Dynamic"))
    assert windows.linux is False and "Linux only" in (windows.refusal or "")
    reserved = detect_hosting(_site(kind="functionapp", sku="Dynamic", reserved=True))
    assert reserved.linux is True and reserved.refusal is None


def test_the_scm_host_is_the_repository_host_name() -> None:
    site = _site(
        sku="FlexConsumption",
        hostNameSslStates=[
            {"name": "func-x-abc.eastus-01.azurewebsites.net", "hostType": "Standard"},
            {"name": "func-x-abc.scm.eastus-01.azurewebsites.net", "hostType": "Repository"},
        ],
    )
    assert scm_host(site) == "func-x-abc.scm.eastus-01.azurewebsites.net"
    assert detect_hosting(site).scm_host == "func-x-abc.scm.eastus-01.azurewebsites.net"
    assert scm_host(_site()) is None
    assert server_farm_ref({"properties": {}}) is None


def test_the_settings_flex_rejects_include_the_ones_deploy_used_to_write() -> None:
    assert {
        "FUNCTIONS_WORKER_RUNTIME",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
        "WEBSITE_RUN_FROM_PACKAGE",
    } <= set(FLEX_REJECTED_SETTINGS)
    assert "AzureWebJobsStorage" not in FLEX_REJECTED_SETTINGS
