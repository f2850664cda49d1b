"""Clean-up (``provision destroy``), offline: provisioning is applied into the in-memory ARM of
``aoai_helpers.azure.dryrun`` through the real SDK calls, then the clean-up plan and apply run
against it. The recorded DELETEs are checked against the REST paths and headers the specs
document (Microsoft.ApiManagement 2024-05-01 and 2024-10-01-preview, Microsoft.EventHub,
Microsoft.Web, Microsoft.Insights 2021-05-01-preview), written out below from the specs — not
derived from the code under test. Nothing reaches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli
from secrets_registry import register_secret

from aoai_helpers.azure.apim.cleanup import (
    WEB_API_VERSION,
    apply_cleanup,
    cleanup_dry_run,
    function_settings_owned,
    make_cleanup_clients,
    plan_cleanup,
)
from aoai_helpers.azure.apim.provision import apply, plan
from aoai_helpers.azure.apim.resources import (
    APIM_API_VERSION,
    EVENTHUB_API_VERSION,
    Resource,
    desired_resources,
    retired_resources,
)
from aoai_helpers.azure.dryrun import DryRunCredential, DryRunTransport, RecordedRequest
from aoai_helpers.azure.functions.settings import app_settings
from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SUB = "00000000-0000-0000-0000-000000000000"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway"
SVC = f"{RG}/providers/Microsoft.ApiManagement/service/apim-aoai-gateway"
HUB = f"{RG}/providers/Microsoft.EventHub/namespaces/evhns-aoai-usage/eventhubs/aoai-usage"
SITE = f"{RG}/providers/Microsoft.Web/sites/func-aoai-ingest"
DB = "mssql+pyodbc://ingest:Cl3anup-db-secret@sql-aoai.database.windows.net/aoai?driver=ODBC+Driver+18+for+SQL+Server"
register_secret("Cl3anup-db-secret")
HOSTS = {
    "AzureCloud": "management.azure.com",
    "AzureChinaCloud": "management.chinacloudapi.cn",
    "AzureUSGovernment": "management.usgovcloudapi.net",
}

# The documented DELETE operations (path template, whether If-Match is a required header),
# copied from azure-rest-api-specs: apimsubscriptions/apimproducts/apimapis/apimnamedvalues/
# apimloggers.json (2024-05-01; ProductApi_Delete is the one without If-Match),
# Microsoft.EventHub eventhubs.json / AuthorizationRules / consumergroups, and the
# language-model log's two (api-versions and statuses in LLM_DELETES below):
# - ApiDiagnostic_Delete: specification/apimanagement/resource-manager/Microsoft.ApiManagement/
#   preview/2024-10-01-preview/apimapis.json, DELETE …/apis/{apiId}/diagnostics/{diagnosticId},
#   IfMatchRequiredParameter;
# - DiagnosticSettings_Delete: specification/monitor/resource-manager/Microsoft.Insights/preview/
#   2021-05-01-preview/diagnosticsSettings_API.json, DELETE
#   {resourceUri}/providers/Microsoft.Insights/diagnosticSettings/{name}, no If-Match parameter.
_APIM = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}"
_EH = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.EventHub/namespaces/{namespaceName}/eventhubs/{eventHubName}"
DOCUMENTED_DELETES = {
    "Subscription_Delete": (f"{_APIM}/subscriptions/{{sid}}", True),
    # apimusers.json 2024-05-01: User_Delete, IfMatchRequiredParameter, query notify
    "User_Delete": (f"{_APIM}/users/{{userId}}", True),
    "ProductPolicy_Delete": (f"{_APIM}/products/{{productId}}/policies/{{policyId}}", True),
    "ProductApi_Delete": (f"{_APIM}/products/{{productId}}/apis/{{apiId}}", False),
    "Product_Delete": (f"{_APIM}/products/{{productId}}", True),
    "ApiPolicy_Delete": (f"{_APIM}/apis/{{apiId}}/policies/{{policyId}}", True),
    "ApiOperation_Delete": (f"{_APIM}/apis/{{apiId}}/operations/{{operationId}}", True),
    "Api_Delete": (f"{_APIM}/apis/{{apiId}}", True),
    "ApiDiagnostic_Delete": (f"{_APIM}/apis/{{apiId}}/diagnostics/{{diagnosticId}}", True),
    "DiagnosticSettings_Delete": (
        "/{resourceUri}/providers/Microsoft.Insights/diagnosticSettings/{name}",
        False,
    ),
    "Logger_Delete": (f"{_APIM}/loggers/{{loggerId}}", True),
    "NamedValue_Delete": (f"{_APIM}/namedValues/{{namedValueId}}", True),
    "EventHubs_DeleteAuthorizationRule": (
        f"{_EH}/authorizationRules/{{authorizationRuleName}}",
        False,
    ),
    "ConsumerGroups_Delete": (f"{_EH}/consumergroups/{{consumerGroupName}}", False),
    "EventHubs_Delete": (_EH, False),
}


# The language-model log's DELETEs (api-version, statuses; paths and If-Match in
# DOCUMENTED_DELETES): apimapis.json 2024-10-01-preview (ApiDiagnostic_Delete: 200, 204 "removed
# by previous request or does not exist"; largeLanguageModel is not in 2024-05-01) and
# diagnosticsSettings_API.json 2021-05-01-preview (DiagnosticSettings_Delete: 200, 204).
# The azuremonitor logger goes by Logger_Delete (apimloggers.json, 2024-05-01).
LLM_DELETES = {
    "ApiDiagnostic_Delete": ("2024-10-01-preview", {200, 204}),
    "DiagnosticSettings_Delete": ("2021-05-01-preview", {200, 204}),
}
#: The example spec's workspace (``llm_log.workspace_resource_id`` in examples/gateway.yaml).
EXAMPLE_WORKSPACE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway"
    "/providers/Microsoft.OperationalInsights/workspaces/log-aoai-gateway"
)
#: A workspace in another subscription and resource group than APIM.
WORKSPACE = (
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-logs"
    "/providers/Microsoft.OperationalInsights/workspaces/law-aoai"
)


def _template_re(template: str) -> str:
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
    # {resourceUri} is a whole ARM id (x-ms-skip-url-encoding): slashes included
    return pattern.replace(
        "/[^/]+/providers/Microsoft\\.Insights", "/.+/providers/Microsoft\\.Insights"
    )


def _operation(request: RecordedRequest | str) -> str:
    """The one documented DELETE whose path template matches the request's path (else fail)."""
    path = request if isinstance(request, str) else request.path
    matches = [
        name
        for name, (template, _) in DOCUMENTED_DELETES.items()
        if re.fullmatch(_template_re(template), path)
    ]
    assert len(matches) == 1, (path, matches)
    return matches[0]


def _variant(**changes: Any) -> Spec:
    data = SPEC.model_dump()
    for dotted, value in changes.items():
        node = data
        *heads, last = dotted.split("__")
        for part in heads:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return parse_spec(data)


#: A local OpenAPI document (AzureChinaCloud imports the API inline: no link by default).
LOCAL_OPENAPI = str(Path(__file__).parent / "rest_specs" / "minimal-openapi.json")


def _applicable(spec: Spec, cloud: str) -> Spec:
    """``spec`` on ``cloud``, with a local OpenAPI document where the cloud needs one."""
    spec = spec.for_cloud(cloud)
    if cloud != "AzureChinaCloud" or spec.apim.openapi_spec:
        return spec
    return spec.model_copy(
        update={"apim": spec.apim.model_copy(update={"openapi_spec": LOCAL_OPENAPI})}
    )


def _provisioned(spec: Spec, cloud: str = "AzureCloud") -> tuple[DryRunTransport, Any, Any]:
    """The in-memory ARM after ``provision apply`` and function deploy's settings, with its
    clean-up clients (APIM/Event Hubs, Web)."""
    transport = DryRunTransport()
    spec = _applicable(spec, cloud)
    clients, web = make_cleanup_clients(spec, get_cloud(cloud), SUB, DryRunCredential(), transport)
    apply(plan(spec, clients=clients, env={}), clients)
    if web is not None:
        settings = {
            "MY_OWN_SETTING": "keep me",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            **app_settings(spec, db_url=DB),
        }
        web.web.web_apps.update_application_settings(web.rg, web.app, {"properties": settings})
    return transport, clients, web


def _seed_foreign(clients: Any) -> list[str]:
    """Things in the same APIM service that the spec does not name; their ARM ids."""
    from azure.mgmt.apimanagement import models as m

    rg, svc = clients.rg, clients.service
    clients.apim.api.begin_create_or_update(
        rg,
        svc,
        "foreign-api",
        m.ApiCreateOrUpdateParameter(display_name="Other team", path="other", protocols=["https"]),
    ).result()
    clients.apim.api_operation.create_or_update(
        rg,
        svc,
        "foreign-api",
        "ping",
        m.OperationContract(display_name="ping", method="GET", url_template="/ping"),
    )
    clients.apim.subscription.create_or_update(
        rg,
        svc,
        "other-team",
        m.SubscriptionCreateParameters(scope="/apis", display_name="Other team"),
    )
    clients.apim.named_value.begin_create_or_update(
        rg, svc, "other-setting", m.NamedValueCreateContract(display_name="other", value="x")
    ).result()
    return [
        f"{SVC}/apis/foreign-api",
        f"{SVC}/apis/foreign-api/operations/ping",
        f"{SVC}/subscriptions/other-team",
        f"{SVC}/namedValues/other-setting",
    ]


def _spec_ids(spec: Spec) -> list[str]:
    return [r.resource_id for r in desired_resources(spec, get_cloud(spec.cloud), SUB, {})]


def _retired_ids(spec: Spec) -> list[str]:
    return [r.resource_id for r in retired_resources(spec, SUB)]


# ----------------------------------------------------------------------------------- plan


def test_the_offline_plan_deletes_everything_in_reverse_dependency_order() -> None:
    spec = _variant(event_hub__create=True, event_hub__consumer_group="aoai-ingest")
    the_plan = plan_cleanup(spec)
    assert the_plan.offline and {s.action for s in the_plan.steps} == {"delete"}
    kinds = [s.resource.kind for s in the_plan.steps]
    assert kinds == [
        *["subscription"] * 3,
        *["user"] * 3,  # the BU owners', right after the subscriptions they own
        "product-policy",
        "product-api",
        "product",
        # the example's language-model log: the setting and the API's diagnostic before the
        # API, the azuremonitor logger after the diagnostic naming it
        "diagnostic-setting",
        "api-diagnostic",
        "api-policy",
        *["api-operation"] * 6,  # five, and v1_other an earlier provisioning created
        "api",
        "llm-logger",
        "logger",
        *["named-value"] * 6,
        "function-app-settings",
        "eventhub-rule",
        "eventhub-rule",
        "eventhub-consumer-group",
        "eventhub",
    ]
    # exactly what provisioning creates, plus the function's settings; nothing else
    ids = [s.resource.resource_id for s in the_plan.steps]
    assert sorted(i for i in ids if "/Microsoft.Web/" not in i) == sorted(
        _spec_ids(spec) + _retired_ids(spec)
    )
    retired = next(s for s in the_plan.steps if s.resource.name == "v1_other")
    assert retired.note == "created by an earlier provisioning: if it exists"
    assert not any(
        i.endswith(("/service/apim-aoai-gateway", "/namespaces/evhns-aoai-usage")) for i in ids
    )
    text = the_plan.render()
    assert "32 to delete, 0 already gone, 0 kept" in text
    assert f"the Log Analytics workspace {EXAMPLE_WORKSPACE}" in text  # kept, never deleted
    assert "BU subscription keys stop working" in text and "data in the database is kept" in text
    assert "not ingested are lost" in text  # the hub goes with its unread events


def test_an_event_hub_the_spec_did_not_create_is_never_touched() -> None:
    assert SPEC.event_hub.create is False
    the_plan = plan_cleanup(SPEC)
    assert not any(s.resource.kind.startswith("eventhub") for s in the_plan.steps)
    assert "Event Hub aoai-usage (the spec did not create it)" in the_plan.render()
    requests = cleanup_dry_run(SPEC).requests
    assert requests and not any("Microsoft.EventHub" in r.path for r in requests)


def test_the_function_step_removes_only_the_settings_deploy_wrote() -> None:
    owned = function_settings_owned(SPEC)
    assert set(owned) == {n for n in app_settings(SPEC, db_url=DB) if n.startswith("AOAI_")}
    assert "FUNCTIONS_WORKER_RUNTIME" not in owned
    assert function_settings_owned(_variant(function=None)) == ()
    steps = [s for s in plan_cleanup(SPEC).steps if s.resource.kind == "function-app-settings"]
    assert len(steps) == 1 and steps[0].settings == owned
    assert steps[0].resource.url(get_cloud("AzureCloud")) == (
        f"https://management.azure.com{SITE}/config/appsettings?api-version={WEB_API_VERSION}"
    )
    assert (
        "function app func-aoai-ingest: the app, its deployed package"
        in plan_cleanup(SPEC).render()
    )
    no_function = plan_cleanup(_variant(function=None))
    assert not any(s.resource.kind == "function-app-settings" for s in no_function.steps)


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_a_sovereign_plan_targets_that_clouds_arm(cloud: str) -> None:
    the_plan = plan_cleanup(SPEC, cloud=cloud)
    endpoint = get_cloud(cloud).arm_endpoint
    assert endpoint == f"https://{HOSTS[cloud]}"
    assert all(s["url"].startswith(endpoint + "/") for s in the_plan.to_dict()["steps"])
    assert f"on {cloud} ({endpoint})" in the_plan.render()
    assert {r.host for r in cleanup_dry_run(SPEC, cloud=cloud).requests} == {HOSTS[cloud]}


def test_a_local_openapi_file_is_not_needed_to_delete_the_api(tmp_path: Path) -> None:
    the_plan = plan_cleanup(_variant(apim__openapi_spec=str(tmp_path / "gone.json")))
    assert any(s.resource.kind == "api" for s in the_plan.steps)


def test_a_kind_cleanup_cannot_delete_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    diag = Resource("diagnostic", "applicationinsights", f"{SVC}/diagnostics/x", "v", None)
    monkeypatch.setattr("aoai_helpers.azure.apim.cleanup.desired_resources", lambda *a, **k: [diag])
    with pytest.raises(ConfigError, match="does not know how to delete: diagnostic"):
        plan_cleanup(SPEC)


def test_the_database_url_is_masked_in_the_plan() -> None:
    text = plan_cleanup(_variant(database__url=DB)).render()
    assert "Cl3anup-db-secret" not in text and "sql-aoai.database.windows.net" in text


# ----------------------------------------------------------------------------------- apply


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_provision_then_cleanup_leaves_only_what_the_spec_did_not_create(cloud: str) -> None:
    spec = _variant(
        event_hub__create=True,
        event_hub__auth="connection_string",
        event_hub__consumer_group="aoai-ingest",
    ).for_cloud(cloud)
    transport, clients, web = _provisioned(spec, cloud)
    foreign = _seed_foreign(clients)
    other_hub = HUB.replace("/eventhubs/aoai-usage", "/eventhubs/other-hub")
    clients.eventhub.event_hubs.create_or_update(
        "rg-aoai-gateway", "evhns-aoai-usage", "other-hub", {"properties": {"partitionCount": 2}}
    )
    ours = _spec_ids(spec)
    assert all(i.lower() in transport.store for i in ours + foreign)

    the_plan = plan_cleanup(spec, clients=clients, web=web)
    assert {s.action for s in the_plan.steps} == {"delete"}
    transport.requests.clear()
    result = apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    assert len(result.deleted) == len(the_plan.steps) and result.already_gone == []

    assert {r.host for r in transport.requests} == {HOSTS[cloud]}
    assert not [i for i in ours if i.lower() in transport.store]
    assert all(i.lower() in transport.store for i in [*foreign, other_hub.lower()])
    # the function app keeps everything but the settings deploy wrote
    left = web.web.web_apps.list_application_settings(web.rg, web.app).properties
    assert left["MY_OWN_SETTING"] == "keep me" and left["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert "AzureWebJobsStorage" in left and not [n for n in left if n.startswith("AOAI_")]

    # a second run finds everything gone: its plan only reads, its apply sends nothing
    transport.requests.clear()
    again = plan_cleanup(spec, clients=clients, web=web)
    assert {s.action for s in again.steps} == {"absent"}
    assert "0 to delete, 31 already gone, 0 kept" in again.render()  # v1_other: never there
    assert apply_cleanup(again, clients, web=web).deleted == []
    reads = {(r.method, r.path.endswith("/config/appsettings/list")) for r in transport.requests}
    assert reads == {("GET", False), ("POST", True)}  # settings are listed by POST (REST)


def test_the_requests_are_the_documented_deletes() -> None:
    spec = _variant(event_hub__create=True, event_hub__consumer_group="aoai-ingest")
    transport, clients, web = _provisioned(spec)
    the_plan = plan_cleanup(spec, clients=clients, web=web)
    transport.requests.clear()
    apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    deletes = [r for r in transport.requests if r.method == "DELETE"]
    seen = set()
    for r in deletes:
        name = _operation(r)
        seen.add(name)
        if_match_required = DOCUMENTED_DELETES[name][1]
        assert r.if_match == ("*" if if_match_required else None), (name, r.if_match)
        if name in LLM_DELETES:
            want = LLM_DELETES[name][0]
        elif "Microsoft.EventHub" in r.path:
            want = EVENTHUB_API_VERSION
        else:
            want = APIM_API_VERSION
        assert r.api_version == want and r.body is None, (name, r.api_version)
    assert seen == set(DOCUMENTED_DELETES)  # the example's language-model log included
    loggers = {r.path.rsplit("/", 1)[1] for r in deletes if _operation(r) == "Logger_Delete"}
    assert loggers == {"aoai-usage-logger", "azuremonitor"}
    assert not [r for r in transport.requests if "Microsoft.OperationalInsights" in r.path]
    # the API delete is asynchronous (202 + location), polled until its asyncCode 204
    i = next(
        i
        for i, r in enumerate(transport.requests)
        if r.method == "DELETE" and r.path == f"{SVC}/apis/azure-openai"
    )
    poll = transport.requests[i + 1]
    assert poll.method == "GET" and poll.query["asyncId"] == ["dry-run"]
    # the function's settings: read, then the rest written back (Web: documented PUT, no If-Match)
    web_calls = [
        (r.method, r.path, r.api_version) for r in transport.requests if "/Microsoft.Web/" in r.path
    ]
    assert web_calls == [
        ("POST", f"{SITE}/config/appsettings/list", WEB_API_VERSION),
        ("PUT", f"{SITE}/config/appsettings", WEB_API_VERSION),
    ]
    put = next(r for r in transport.requests if r.method == "PUT")
    assert set(put.body["properties"]) == {
        "MY_OWN_SETTING",
        "AzureWebJobsStorage",
        "FUNCTIONS_WORKER_RUNTIME",
        "AzureWebJobsFeatureFlags",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
    }


def _seed_retired(clients: Any) -> str:
    """The catch-all operation an earlier provisioning created; its ARM id."""
    from azure.mgmt.apimanagement import models as m

    clients.apim.api_operation.create_or_update(
        clients.rg,
        clients.service,
        "azure-openai",
        "v1_other",
        m.OperationContract(display_name="v1: other POST", method="POST", url_template="/v1/*"),
    )
    return f"{SVC}/apis/azure-openai/operations/v1_other"


def test_an_operation_an_earlier_provisioning_created_is_deleted_too() -> None:
    transport, clients, web = _provisioned(SPEC)
    assert not [
        s
        for s in plan_cleanup(SPEC, clients=clients, web=web).steps
        if s.resource.name == "v1_other"
    ]
    retired = _seed_retired(clients)
    the_plan = plan_cleanup(SPEC, clients=clients, web=web)
    kinds = [(s.resource.kind, s.resource.name, s.action) for s in the_plan.steps]
    at = kinds.index(("api-operation", "v1_other", "delete"))
    assert kinds[at + 1][0] == "api" and kinds[at - 1][0] == "api-operation"  # before the API
    apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    assert retired.lower() not in transport.store


def test_a_404_on_delete_counts_as_done() -> None:
    transport, clients, web = _provisioned(SPEC)
    _seed_retired(clients)
    the_plan = plan_cleanup(SPEC, clients=clients, web=web)
    # someone deletes the API (and with it its operations and policy) between plan and apply
    clients.apim.api.begin_delete(
        clients.rg, clients.service, "azure-openai", if_match="*", polling_interval=0
    ).result()
    transport.requests.clear()
    result = apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    gone = {(s.resource.kind, s.resource.name) for s in result.already_gone}
    assert ("api-policy", "policy") in gone and ("api-operation", "v1_other") in gone
    assert not [i for i in _spec_ids(SPEC) if i.lower() in transport.store]
    # the API itself: APIM answers 204 ("removed by previous request or does not exist")
    api_delete = [
        r
        for r in transport.requests
        if r.method == "DELETE" and r.path == f"{SVC}/apis/azure-openai"
    ]
    assert len(api_delete) == 1 and ("api", "azure-openai") in {
        (s.resource.kind, s.resource.name) for s in result.deleted
    }


def test_a_product_other_subscriptions_still_use_is_kept() -> None:
    from azure.mgmt.apimanagement import models as m

    transport, clients, web = _provisioned(SPEC)
    clients.apim.subscription.create_or_update(
        clients.rg,
        clients.service,
        "bu-added-by-hand",
        m.SubscriptionCreateParameters(scope="/products/aoai-chargeback", display_name="Legal"),
    )
    the_plan = plan_cleanup(SPEC, clients=clients, web=web)
    kept = [s for s in the_plan.steps if s.action == "keep"]
    assert [(s.resource.kind, s.note) for s in kept] == [
        ("product", "subscriptions not in the spec still use it: bu-added-by-hand")
    ]
    assert "1 kept" in the_plan.render()
    apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    assert f"{SVC}/products/aoai-chargeback".lower() in transport.store
    assert f"{SVC}/subscriptions/bu-added-by-hand".lower() in transport.store
    assert f"{SVC}/subscriptions/bu-finance".lower() not in transport.store
    assert not any(
        r.method == "DELETE" and r.query.get("deleteSubscriptions") for r in transport.requests
    )


def test_function_settings_need_the_web_client() -> None:
    transport, clients, _ = _provisioned(SPEC)
    online = plan_cleanup(SPEC, clients=clients)
    step = next(s for s in online.steps if s.resource.kind == "function-app-settings")
    assert step.action == "keep" and "no web client" in step.note
    transport.requests.clear()
    with pytest.raises(ConfigError, match="pass web="):
        apply_cleanup(plan_cleanup(SPEC), clients)  # offline plan: settings to delete
    assert transport.requests == []


def test_online_planning_needs_a_subscription_id() -> None:
    _, clients, _ = _provisioned(SPEC)
    with pytest.raises(ConfigError, match="subscription_id"):
        plan_cleanup(_variant(subscription_id=None), clients=clients)


# --------------------------------------------------------------------------- notebook, CLI


def test_cleanup_dry_run_for_a_notebook() -> None:
    dry = cleanup_dry_run(SPEC)
    assert dry.plan.counts() == {"delete": 27, "absent": 0, "keep": 0}
    assert dry.result.summary() == "27 deleted, 0 already gone"
    rows = dry.rows()
    assert rows[0] == {
        "method": "DELETE",
        "path": f"{SVC}/subscriptions/bu-rnd",
        "api_version": APIM_API_VERSION,
        "if_match": "*",
    }
    assert {r["method"] for r in rows} == {"DELETE", "GET", "POST", "PUT"}
    assert "nothing was sent" in dry.render()
    again = cleanup_dry_run(SPEC, repeat=True)
    assert {s.action for s in again.plan.steps} == {"absent"}
    assert {r.method for r in again.requests} <= {"GET", "POST"}


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_cli_destroy_offline(cloud: str, tmp_path: Path) -> None:
    out = run_cli(
        "provision",
        "destroy",
        "--offline",
        "--spec",
        "examples/gateway.yaml",
        "--cloud",
        cloud,
        "--json",
        str(tmp_path / "destroy.json"),
    )
    assert out.returncode == 0, out.stderr
    assert f"all to {HOSTS[cloud]}" in out.stdout and "If-Match: *" in out.stdout
    assert out.stdout.count(" delete ") == 28  # with v1_other, "if it exists"
    assert "nothing deleted: run again with --apply" in out.stdout
    data = json.loads((tmp_path / "destroy.json").read_text())
    assert len(data["steps"]) == 28 and data["dry_run_requests"][0]["if_match"] == "*"
    # the example's language-model log, as documented (DOCUMENTED_DELETES, LLM_DELETES)
    by_operation = {
        _operation(row["path"]): row
        for row in data["dry_run_requests"]
        if row["method"] == "DELETE"
    }
    for name, (version, _statuses) in LLM_DELETES.items():
        row = by_operation[name]
        assert row["api_version"] == version, name
        assert row["if_match"] == ("*" if DOCUMENTED_DELETES[name][1] else None), name


def test_cli_destroy_errors_are_one_line(tmp_path: Path) -> None:
    out = run_cli("provision", "destroy", "--offline", "--apply")
    assert (
        out.returncode == 1
        and out.stderr == "error: --offline only plans: drop --offline to apply\n"
    )
    spec = tmp_path / "gw.yaml"
    spec.write_text(
        (ROOT / "examples" / "gateway.yaml").read_text().replace(f"subscription_id: {SUB}", "")
    )
    out = run_cli("provision", "destroy", "--apply", "--yes", "--spec", str(spec))
    assert (
        out.returncode == 1 and out.stderr.startswith("error: ") and "subscription_id" in out.stderr
    )
    assert "Traceback" not in out.stderr


def test_nothing_provisioned_means_nothing_to_delete() -> None:
    transport = DryRunTransport()
    clients, web = make_cleanup_clients(
        SPEC, get_cloud("AzureCloud"), SUB, DryRunCredential(), transport
    )
    the_plan = plan_cleanup(SPEC, clients=clients, web=web)
    assert {s.action for s in the_plan.steps} == {"absent"}
    transport.requests.clear()
    assert apply_cleanup(the_plan, clients, web=web).deleted == []
    assert transport.requests == []


# --------------------------------------------------------------------- the language-model log


def _llm_spec(**changes: Any) -> Spec:
    return _variant(
        llm_log__workspace_resource_id=WORKSPACE,
        llm_log__workspace_id="2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11",
        **changes,
    )


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_the_llm_log_resources_go_with_the_documented_deletes(cloud: str) -> None:
    spec = _llm_spec().for_cloud(cloud)
    transport, clients, web = _provisioned(spec, cloud)
    the_plan = plan_cleanup(spec, clients=clients, web=web)
    kinds = [s.resource.kind for s in the_plan.steps]
    # the setting and the API diagnostic before the API, the logger after them
    assert kinds.index("diagnostic-setting") < kinds.index("api-diagnostic") < kinds.index("api")
    assert kinds.index("api-diagnostic") < kinds.index("llm-logger")
    assert {s.action for s in the_plan.steps} == {"delete"}
    transport.requests.clear()
    apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    assert {r.host for r in transport.requests} == {HOSTS[cloud]}
    deletes = {_operation(r): r for r in transport.requests if r.method == "DELETE"}
    for name, (version, _statuses) in LLM_DELETES.items():
        r = deletes[name]
        assert r.if_match == ("*" if DOCUMENTED_DELETES[name][1] else None), name
        assert r.api_version == version and r.body is None, name
    logger_deletes = [
        r
        for r in transport.requests
        if r.method == "DELETE" and r.path.endswith("/loggers/azuremonitor")
    ]
    assert len(logger_deletes) == 1 and logger_deletes[0].if_match == "*"
    assert not [i for i in _spec_ids(spec) if i.lower() in transport.store]
    # the workspace is never touched
    assert not [r for r in transport.requests if "Microsoft.OperationalInsights" in r.path]
    assert f"the Log Analytics workspace {WORKSPACE}" in the_plan.render()

    transport.requests.clear()
    again = plan_cleanup(spec, clients=clients, web=web)
    assert {s.action for s in again.steps} == {"absent"}
    assert apply_cleanup(again, clients, web=web).deleted == []


def test_deleting_an_llm_log_resource_already_gone_answers_as_documented() -> None:
    from azure.core.rest import HttpRequest

    _transport, clients, _web = _provisioned(_llm_spec())
    statuses = {}
    for name, client, path in (
        ("ApiDiagnostic_Delete", clients.apim, f"{SVC}/apis/azure-openai/diagnostics/azuremonitor"),
        (
            "DiagnosticSettings_Delete",
            clients.monitor,
            f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/aoai-llm-logs",
        ),
    ):
        version = LLM_DELETES[name][0]
        got = [
            client._send_request(
                HttpRequest(
                    "DELETE", path, params={"api-version": version}, headers={"If-Match": "*"}
                )
            ).status_code
            for _ in range(2)
        ]
        statuses[name] = got
        assert set(got) <= LLM_DELETES[name][1], name
    assert statuses == {"ApiDiagnostic_Delete": [200, 204], "DiagnosticSettings_Delete": [200, 204]}


def test_an_azuremonitor_logger_provisioning_did_not_create_is_kept() -> None:
    from azure.mgmt.apimanagement import models as m

    spec = _llm_spec()
    transport = DryRunTransport()
    clients, web = make_cleanup_clients(
        spec, get_cloud("AzureCloud"), SUB, DryRunCredential(), transport
    )
    # APIM's (or another team's) logger was there first: provisioning uses it as it is
    clients.apim.logger.create_or_update(
        clients.rg, clients.service, "azuremonitor", m.LoggerContract(logger_type="azureMonitor")
    )
    apply(plan(spec, clients=clients, env={}), clients)
    the_plan = plan_cleanup(spec, clients=clients, web=web)
    step = next(s for s in the_plan.steps if s.resource.kind == "llm-logger")
    assert step.action == "keep" and "provisioning did not create it" in step.note
    assert "llm-logger azuremonitor: provisioning did not create it" in the_plan.render()
    apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    assert f"{SVC}/loggers/azuremonitor".lower() in transport.store
    assert f"{SVC}/apis/azure-openai/diagnostics/azuremonitor".lower() not in transport.store


def test_the_cleanup_dry_run_covers_the_llm_log() -> None:
    dry = cleanup_dry_run(_llm_spec())
    assert dry.plan.counts() == {"delete": 27, "absent": 0, "keep": 0}
    paths = [row["path"] for row in dry.rows() if row["method"] == "DELETE"]
    assert f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/aoai-llm-logs" in paths
    assert f"{SVC}/loggers/azuremonitor" in paths
    offline = plan_cleanup(_llm_spec())
    step = next(s for s in offline.steps if s.resource.kind == "llm-logger")
    assert step.action == "delete" and "only if provisioning created it" in step.note


# --- the BU owners' APIM users (issue 14) -------------------------------------------------------


def test_only_the_users_provisioning_created_are_deleted_after_the_subscriptions() -> None:
    from azure.mgmt.apimanagement import models as m

    from aoai_helpers.azure.apim.resources import apim_user_id

    transport, clients, web = _provisioned(SPEC)
    rg, svc = clients.rg, clients.service
    # someone else's user, and one of ours that now owns a subscription outside the spec
    clients.apim.user.create_or_update(
        rg, svc, "someone", m.UserCreateParameters(email="x@y.z", first_name="x", last_name="y")
    )
    li = apim_user_id("li.wei@contoso.com")
    clients.apim.subscription.create_or_update(
        rg,
        svc,
        "li-private",
        m.SubscriptionCreateParameters(scope="/apis", display_name="Li", owner_id=f"/users/{li}"),
    )
    transport.store[f"{SVC}/users/{li}/subscriptions/li-private".lower()] = {
        "id": f"{SVC}/users/{li}/subscriptions/li-private",
        "name": "li-private",
        "properties": {"scope": "/apis", "ownerId": f"/users/{li}"},
    }
    the_plan = plan_cleanup(SPEC, clients=clients, web=web)
    users = {s.resource.name: s for s in the_plan.steps if s.resource.kind == "user"}
    assert users[li].action == "keep" and "li-private" in users[li].note
    assert {s.action for n, s in users.items() if n != li} == {"delete"}
    assert "someone" not in users
    kinds = [s.resource.kind for s in the_plan.steps]
    assert kinds.index("user") == kinds.count("subscription")  # right after the subscriptions
    transport.requests.clear()
    apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    deleted = [r for r in transport.requests if r.method == "DELETE" and "/users/" in r.path]
    assert len(deleted) == 2 and all(
        r.if_match == "*"
        and r.query["notify"] == ["false"]
        and "deleteSubscriptions" not in r.query
        for r in deleted
    )
    assert f"{SVC}/users/someone".lower() in transport.store
    assert f"{SVC}/users/{li}".lower() in transport.store


def test_a_user_provisioning_did_not_create_is_kept() -> None:
    from aoai_helpers.azure.apim.resources import apim_user_id

    transport, clients, web = _provisioned(SPEC)
    ana = f"{SVC}/users/{apim_user_id('ana.silva@contoso.com')}".lower()
    transport.store[ana]["properties"]["note"] = "made by hand"
    step = next(
        s
        for s in plan_cleanup(SPEC, clients=clients, web=web).steps
        if s.resource.resource_id.lower() == ana
    )
    assert step.action == "keep" and "did not create it" in step.note


def test_on_consumption_cleanup_lists_no_users() -> None:
    transport = DryRunTransport(apim_sku="Consumption")
    spec = parse_spec(
        {
            **SPEC.model_dump(),
            "subscriptions": [{**s.model_dump(), "token_limit": None} for s in SPEC.subscriptions],
        }
    )
    clients, web = make_cleanup_clients(
        spec, get_cloud("AzureCloud"), SUB, DryRunCredential(), transport
    )
    the_plan = plan_cleanup(spec, clients=clients, web=web)
    assert not [s for s in the_plan.steps if s.resource.kind == "user"]
    assert [s for s in plan_cleanup(spec).steps if s.resource.kind == "user"]  # offline: listed
