"""Provisioning, offline: the real SDK calls go through an azure-core transport that records each
HTTP request (``aoai_helpers.azure.dryrun``); the tests check method, host, path, api-version and
body against the documented REST shapes (Microsoft.ApiManagement 2024-05-01 and
2024-10-01-preview, Microsoft.EventHub, Microsoft.Insights 2021-05-01-preview), for every cloud,
and that a second apply sends only GETs. Nothing reaches the network.

The language-model log's REST facts are written out below (``SPEC_FACTS``) from the REST
specifications in Azure/azure-rest-api-specs — paths, api-versions, body property names, enums
and status codes only — and the recorded requests are checked against them, not against the
code under test.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli
from secrets_registry import register_secret

from aoai_helpers.azure.apim.policy import render_api_policy
from aoai_helpers.azure.apim.provision import (
    PROVIDERS_API_VERSION,
    apply,
    dry_run,
    make_clients,
    plan,
    resource_type,
    write_keys,
)
from aoai_helpers.azure.apim.resources import (
    APIM_API_VERSION,
    EVENTHUB_API_VERSION,
    LLM_LOGGER_DESCRIPTION,
    inference_spec_url,
)
from aoai_helpers.azure.dryrun import DryRunCredential, DryRunTransport, RecordedRequest
from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.exceptions import ConfigError, InputError
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SUB = "00000000-0000-0000-0000-000000000000"
SVC = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway"
    "/providers/Microsoft.ApiManagement/service/apim-aoai-gateway"
)
HOSTS = {
    "AzureCloud": "management.azure.com",
    "AzureChinaCloud": "management.chinacloudapi.cn",
    "AzureUSGovernment": "management.usgovcloudapi.net",
}


def _variant(**changes: Any) -> Spec:
    data = SPEC.model_dump()
    for dotted, value in changes.items():
        node = data
        *heads, last = dotted.split("__")
        for part in heads:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return parse_spec(data)


#: A local OpenAPI document (``apim.openapi_spec``: imported inline, in any cloud).
LOCAL_OPENAPI = str(Path(__file__).parent / "rest_specs" / "minimal-openapi.json")


def _applicable(spec: Spec, cloud: str) -> Spec:
    """``spec`` on ``cloud``; in AzureChinaCloud with a local OpenAPI document instead of the
    bundled one (the bundled default is tested on its own)."""
    spec = spec.for_cloud(cloud)
    if cloud != "AzureChinaCloud" or spec.apim.openapi_spec:
        return spec
    return spec.model_copy(
        update={"apim": spec.apim.model_copy(update={"openapi_spec": LOCAL_OPENAPI})}
    )


#: The example spec's language-model log (``llm_log`` in examples/gateway.yaml), as written there.
EXAMPLE_WORKSPACE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway"
    "/providers/Microsoft.OperationalInsights/workspaces/log-aoai-gateway"
)
EXAMPLE_WORKSPACE_GUID = "11111111-2222-3333-4444-555555555555"
#: The example without a language-model log (nothing of it provisioned, reconcile has no source).
NO_LLM_LOG = parse_spec({**SPEC.model_dump(), "llm_log": {}})
#: A workspace in another subscription and resource group than APIM.
WORKSPACE = (
    "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-logs"
    "/providers/Microsoft.OperationalInsights/workspaces/law-aoai"
)
WORKSPACE_GUID = "2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11"
LLM_SPEC = _variant(llm_log__workspace_resource_id=WORKSPACE, llm_log__workspace_id=WORKSPACE_GUID)

_APIM = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
    "/providers/Microsoft.ApiManagement/service/{serviceName}"
)
#: REST facts of the language-model log's resources, from Azure/azure-rest-api-specs:
#: - specification/apimanagement/resource-manager/Microsoft.ApiManagement/preview/
#:   2024-10-01-preview/apimloggers.json (Logger_CreateOrUpdate: 201 created, 200 updated) and
#:   definitions.json (LoggerContractProperties: loggerType enum azureEventHub |
#:   applicationInsights | azureMonitor, required [loggerType]); the stable 2024-05-01 enum the
#:   SDK is generated from has azureMonitor too (azure-mgmt-apimanagement 5.0.0 LoggerType);
#: - …/2024-10-01-preview/apimapis.json (ApiDiagnostic_CreateOrUpdate: PUT, 201 created, 200
#:   updated; ApiDiagnostic_Delete: If-Match required) and definitions.json
#:   (DiagnosticContractProperties, required [loggerId]; LLMDiagnosticSettings logs | requests |
#:   responses; LLMLogsTypes enabled | disabled; LLMMessageDiagnosticSettings messages |
#:   maxSizeInBytes 1..262144; LLMMessageLogTypes all; SamplingSettings samplingType fixed,
#:   percentage 0..100);
#: - specification/monitor/resource-manager/Microsoft.Insights/preview/2021-05-01-preview/
#:   diagnosticsSettings_API.json (DiagnosticSettings_CreateOrUpdate: PUT
#:   /{resourceUri}/providers/Microsoft.Insights/diagnosticSettings/{name}, 200; DiagnosticSettings
#:   properties; LogSettings category | categoryGroup | enabled (required) | retentionPolicy).
SPEC_FACTS: dict[str, Any] = {
    "Logger_CreateOrUpdate": {
        "path": f"{_APIM}/loggers/{{loggerId}}",
        "api_version": "2024-05-01",
        "statuses": {"created": 201, "updated": 200},
        "properties": {"loggerType", "description", "credentials", "isBuffered", "resourceId"},
        "required": {"loggerType"},
        "loggerType": {"azureEventHub", "applicationInsights", "azureMonitor"},
    },
    "ApiDiagnostic_CreateOrUpdate": {
        "path": f"{_APIM}/apis/{{apiId}}/diagnostics/{{diagnosticId}}",
        "api_version": "2024-10-01-preview",
        "statuses": {"created": 201, "updated": 200},
        "properties": {
            "alwaysLog",
            "loggerId",
            "sampling",
            "frontend",
            "backend",
            "largeLanguageModel",
            "logClientIp",
            "httpCorrelationProtocol",
            "verbosity",
            "operationNameFormat",
            "metrics",
        },
        "required": {"loggerId"},
        "largeLanguageModel": {"logs", "requests", "responses"},
        "logs": {"enabled", "disabled"},
        "message_settings": {"messages", "maxSizeInBytes"},
        "messages": {"all"},
        "maxSizeInBytes": (1, 262144),
        "sampling": {"samplingType", "percentage"},
        "samplingType": {"fixed"},
    },
    "DiagnosticSettings_CreateOrUpdate": {
        "path": "/{resourceUri}/providers/Microsoft.Insights/diagnosticSettings/{name}",
        "api_version": "2021-05-01-preview",
        "statuses": {"created": 200, "updated": 200},
        "properties": {
            "storageAccountId",
            "serviceBusRuleId",
            "eventHubAuthorizationRuleId",
            "eventHubName",
            "metrics",
            "logs",
            "workspaceId",
            "marketplacePartnerId",
            "logAnalyticsDestinationType",
        },
        "log_settings": {"category", "categoryGroup", "enabled", "retentionPolicy"},
        "log_required": {"enabled"},
    },
}
#: The category and table of APIM's language-model log (Supported logs for
#: Microsoft.ApiManagement/service: "GatewayLlmLogs | … | ApiManagementGatewayLlmLog").
LLM_CATEGORY = "GatewayLlmLogs"


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
    pattern = pattern.replace(
        "[^/]+/providers/Microsoft\\.Insights", ".+/providers/Microsoft\\.Insights"
    )
    return re.fullmatch(pattern, path) is not None


def _operation(request: RecordedRequest) -> str:
    found = [name for name, fact in SPEC_FACTS.items() if _matches(fact["path"], request.path)]
    assert len(found) == 1, (request.path, found)
    return found[0]


def _documented_api_version(request: RecordedRequest) -> str:
    """The api-version the REST specs give the request's operation: the language-model log's
    from ``SPEC_FACTS``, every other APIM call Microsoft.ApiManagement 2024-05-01."""
    found = {f["api_version"] for f in SPEC_FACTS.values() if _matches(f["path"], request.path)}
    assert len(found) <= 1, (request.path, found)
    return found.pop() if found else "2024-05-01"


def _puts(requests: list[RecordedRequest]) -> dict[str, RecordedRequest]:
    return {r.path.removeprefix(SVC): r for r in requests if r.method == "PUT"}


def order_of(puts: dict[str, RecordedRequest], path: str) -> int:
    return list(puts).index(path)


class ScopeRecorder(DryRunCredential):
    """A dry-run credential that records the scopes it is asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        self.asked.append(scopes)
        return super().get_token_info(*scopes, options=options)

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.asked.append(scopes)
        return super().get_token(*scopes, **kwargs)


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_offline_plan_dry_run_hits_the_clouds_arm_endpoint_with_documented_shapes(
    cloud: str,
) -> None:
    the_plan = plan(SPEC, cloud=cloud, env={})
    assert the_plan.offline and {s.action for s in the_plan.steps} == {"create"}
    requests = dry_run(the_plan)
    assert {r.host for r in requests} == {HOSTS[cloud]}
    # APIM at 2024-05-01 but for the example's language-model log (llm_log): its API diagnostic
    # (largeLanguageModel: 2024-10-01-preview) and diagnostic setting (Microsoft.Insights)
    for r in requests:
        assert r.api_version == _documented_api_version(r), (r.method, r.path, r.api_version)
    assert {r.api_version for r in requests} == {
        "2024-05-01",
        "2024-10-01-preview",
        "2021-05-01-preview",
    }
    assert APIM_API_VERSION == "2024-05-01"
    # its three PUTs (their bodies: test_llm_log_resources_are_the_documented_puts)
    assert set(_llm_puts(requests)) == set(SPEC_FACTS)
    puts_in_order = [r for r in requests if r.method == "PUT"]
    # the plan's own URLs are exactly what the SDK sent, in order
    assert [r.url for r in puts_in_order] == [
        s.resource.url(get_cloud(cloud)) for s in the_plan.steps
    ]
    # the only reads are the SDK polling a long-running PUT (named values, API import) until done
    for i, r in enumerate(requests):
        if r.method == "GET":
            assert requests[i - 1].url == r.url and requests[i - 1].method in ("PUT", "GET")
            assert "/namedValues/" in r.path or r.path.endswith("/apis/azure-openai")
    puts = _puts(requests)
    suffix = get_cloud(cloud).eventhub_suffix

    logger = puts["/loggers/aoai-usage-logger"].body["properties"]
    assert logger == {
        "loggerType": "azureEventHub",
        "description": logger["description"],
        "credentials": {
            "name": "aoai-usage",
            "endpointAddress": f"evhns-aoai-usage.{suffix}",
            "identityClientId": "SystemAssigned",
        },
    }
    api = puts["/apis/azure-openai"].body["properties"]
    if cloud == "AzureChinaCloud":  # no link by default there: the bundled document, inline
        assert api["format"] == "openapi+json"
        document = json.loads(api["value"])
        assert {op["post"]["operationId"] for op in document["paths"].values()} == {
            "ChatCompletions_Create",
            "Completions_Create",
            "embeddings_create",
        }
        assert the_plan.errors() == []
    else:
        assert api["format"] == "openapi+json-link"
        assert api["value"] == inference_spec_url("2024-10-21")
        assert api["value"].endswith("/inference/stable/2024-10-21/inference.json")
        assert the_plan.errors() == []
    assert api["path"] == "openai" and api["protocols"] == ["https"]
    assert api["serviceUrl"] == "https://aoai-weu.openai.azure.com/openai"
    assert api["subscriptionKeyParameterNames"] == {
        "header": "api-key",
        "query": "subscription-key",
    }
    assert api["subscriptionRequired"] is True

    ops = {
        p.rsplit("/", 1)[1]: r.body["properties"] for p, r in puts.items() if "/operations/" in p
    }
    assert ops["v1_chat_completions"] == {
        "displayName": "v1: chat completions",
        "method": "POST",
        "urlTemplate": "/v1/chat/completions",
        "templateParameters": [],
    }
    assert ops["responses_create"]["urlTemplate"] == "/responses"
    # only the metered operations: no catch-all, APIM answers 404 for any other path itself
    assert sorted(ops) == [
        "responses_create",
        "v1_chat_completions",
        "v1_completions",
        "v1_embeddings",
        "v1_responses",
    ]
    assert not [o for o in ops.values() if "*" in o["urlTemplate"] or "{" in o["urlTemplate"]]

    for policy_path in (
        "/apis/azure-openai/policies/policy",
        "/products/aoai-chargeback/policies/policy",
    ):
        props = puts[policy_path].body["properties"]
        assert props["format"] == "xml"  # escaped XML (policy expressions as &lt; &amp;)
        assert ET.fromstring(props["value"]).tag == "policies"
    api_policy = puts["/apis/azure-openai/policies/policy"].body["properties"]["value"]
    assert get_cloud(cloud).cognitive_resource in api_policy  # managed identity, per cloud

    product = puts["/products/aoai-chargeback"].body["properties"]
    assert (product["state"], product["subscriptionRequired"], product["approvalRequired"]) == (
        "published",
        True,
        False,
    )
    link = puts["/products/aoai-chargeback/apis/azure-openai"]
    assert link.body is None  # PUT products/{productId}/apis/{apiId} has no body

    subs = {
        p.rsplit("/", 1)[1]: r.body["properties"]
        for p, r in puts.items()
        if p.startswith("/subscriptions/")
    }
    assert set(subs) == {"bu-finance", "bu-marketing", "bu-rnd"}
    assert subs["bu-finance"] == {
        "scope": "/products/aoai-chargeback",
        "displayName": "Finance [CC-1100]",
        "state": "active",
        "ownerId": "/users/bu-owner-ana-silva-contoso-com-9759d85f3e",  # its owner's user
    }
    users = {p: r for p, r in puts.items() if p.startswith("/users/")}
    assert users[subs["bu-finance"]["ownerId"]].body["properties"] == {
        "email": "ana.silva@contoso.com",
        "firstName": "Ana",
        "lastName": "Silva",
        "state": "active",
        "note": "BU subscription owner created by apim-aoai-proxy provisioning",
    }
    assert len(users) == 3 and all(r.query["notify"] == ["false"] for r in users.values())
    # subscriptions too: Subscription_CreateOrUpdate's notify ("If false, do not send any email
    # notification for change of state of subscription", apimanagement.json 2024-05-01)
    sub_puts = [r for p, r in puts.items() if p.startswith("/subscriptions/")]
    assert len(sub_puts) == 3 and all(r.query["notify"] == ["false"] for r in sub_puts)
    # each user before the subscription it owns
    assert all(order_of(puts, u) < order_of(puts, "/subscriptions/bu-finance") for u in users)
    assert subs["bu-rnd"]["displayName"] == "R&D copilot [R&D, CC-4100]"

    nvs = {
        p.rsplit("/", 1)[1]: r.body["properties"] for p, r in puts.items() if "/namedValues/" in p
    }
    assert nvs["aoai-capture-streaming"] == {
        "displayName": "aoai-capture-streaming",
        "secret": False,
        "value": "passthrough",
    }
    # named values go first, the policies that reference them after
    order = [p for p in puts]
    assert max(order.index(p) for p in order if "/namedValues/" in p) < order.index(
        "/apis/azure-openai/policies/policy"
    )
    assert order.index("/loggers/aoai-usage-logger") < order.index(
        "/apis/azure-openai/policies/policy"
    )


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_the_credential_is_asked_for_the_clouds_arm_scope(cloud: str) -> None:
    recording = ScopeRecorder()
    asked = recording.asked
    c = get_cloud(cloud)
    clients = make_clients(SPEC, c, "sub", recording, DryRunTransport())
    clients.apim.product.create_or_update("rg", "svc", "p", {"properties": {"displayName": "p"}})
    assert asked and set(asked) == {(c.arm_scope,)}


def test_a_second_apply_sends_only_gets() -> None:
    second = dry_run(plan(SPEC, env={}), repeat=True)
    assert second and {r.method for r in second} == {"GET"}
    # policies are read back in the format they were written in, and compared as canonical XML
    policy_gets = [r for r in second if r.path.endswith("/policies/policy")]
    assert policy_gets and all(r.query["format"] == ["xml"] for r in policy_gets)


def _applied(spec: Spec) -> tuple[DryRunTransport, Any]:
    transport = DryRunTransport()
    clients = make_clients(
        spec,
        get_cloud(spec.cloud),
        "00000000-0000-0000-0000-000000000000",
        DryRunCredential(),
        transport,
    )
    apply(plan(spec, clients=clients, env={}), clients)
    return transport, clients


def test_a_changed_spec_updates_only_what_changed() -> None:
    transport, clients = _applied(SPEC)
    changed = _variant(
        product__display_name="Azure OpenAI (BU billing)", capture__streaming="buffered"
    )
    the_plan = plan(changed, clients=clients, env={})
    updates = {
        (s.resource.kind, s.resource.name): s.changes
        for s in the_plan.steps
        if s.action == "update"
    }
    want = {
        ("named-value", "aoai-capture-streaming"): ("value",),
        ("product", "aoai-chargeback"): ("displayName",),
    }
    if render_api_policy(changed) != render_api_policy(SPEC):  # the policy follows the mode
        want[("api-policy", "policy")] = ("value",)
    assert updates == want
    assert all(
        s.action == "noop"
        for s in the_plan.steps
        if (s.resource.kind, s.resource.name) not in updates
    )
    transport.requests.clear()
    apply(the_plan, clients)
    sent = sorted(r.path.removeprefix(SVC) for r in transport.requests if r.method == "PUT")
    paths = {"named-value": "/namedValues/", "product": "/products/", "api-policy": "/apis/"}
    assert sent == sorted(
        f"{paths[kind]}{name}" if kind != "api-policy" else "/apis/azure-openai/policies/policy"
        for kind, name in want
    )
    assert "changes: displayName" in the_plan.render()


def test_creating_the_event_hub_with_least_privilege_rules() -> None:
    spec = _variant(
        event_hub__create=True,
        event_hub__auth="connection_string",
        event_hub__consumer_group="aoai-ingest",
    )
    transport, _ = _applied(spec)
    eh = [r for r in transport.requests if "/Microsoft.EventHub/" in r.path]
    assert {r.api_version for r in eh} == {EVENTHUB_API_VERSION}
    hub = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-aoai-gateway/providers/Microsoft.EventHub/namespaces/evhns-aoai-usage/eventhubs/aoai-usage"
    puts = [(r.path, r.body) for r in eh if r.method == "PUT"]
    assert puts == [
        (hub, {"properties": {"partitionCount": 4, "messageRetentionInDays": 7}}),
        (
            f"{hub}/consumergroups/aoai-ingest",
            {"properties": {"userMetadata": "aoai usage ingestion"}},
        ),
        (f"{hub}/authorizationRules/apim-send", {"properties": {"rights": ["Send"]}}),
        (f"{hub}/authorizationRules/ingest-listen", {"properties": {"rights": ["Listen"]}}),
    ]
    # the logger gets the Send rule's connection string, read just before it is created
    methods = [
        (r.method, r.path.rsplit("/", 1)[-1]) for r in transport.requests if r.method != "GET"
    ]
    i = methods.index(("POST", "listKeys"))
    assert methods[i + 1] == ("PUT", "aoai-usage-logger")
    logger = next(
        r
        for r in transport.requests
        if r.method == "PUT" and r.path.endswith("/loggers/aoai-usage-logger")
    )
    assert logger.body["properties"]["credentials"]["connectionString"].startswith("Endpoint=sb://")
    assert "SharedAccessKeyName=x" in logger.body["properties"]["credentials"]["connectionString"]


def test_key_auth_backend_secret_is_masked_and_required(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _variant(backends__0__auth="key")
    secret = "s3cr3t-backend-key-0123456789"
    register_secret(secret)
    the_plan = plan(spec, env={"AOAI_BACKEND_KEY": secret})
    nv = next(s.resource for s in the_plan.steps if s.resource.name == "aoai-backend-key")
    assert nv.body is not None and nv.body["properties"] == {
        "displayName": "aoai-backend-key",
        "secret": True,
        "value": secret,
    }
    shown = the_plan.render() + str(the_plan.to_dict())
    assert secret not in shown and "****6789" in shown
    # without the key, planning works but apply refuses before sending anything
    missing = plan(spec, env={})
    transport = DryRunTransport()
    clients = make_clients(spec, get_cloud("AzureCloud"), "sub", DryRunCredential(), transport)
    with pytest.raises(ConfigError, match="AOAI_BACKEND_KEY"):
        apply(missing, clients)
    assert transport.requests == []


def test_key_vault_named_value() -> None:
    ref = "https://kv-aoai.vault.azure.net/secrets/aoai-key"
    spec = _variant(backends__0__auth="key", backends__0__key_vault_secret_id=ref)
    requests = dry_run(plan(spec, env={}))
    nv = next(r for r in requests if r.path.endswith("/namedValues/aoai-backend-key"))
    assert nv.body["properties"]["keyVault"] == {"secretIdentifier": ref}
    assert "value" not in nv.body["properties"]


def test_keys_are_written_owner_only(tmp_path: Path) -> None:
    _, clients = _applied(SPEC)
    path = write_keys(clients, SPEC, tmp_path / "keys.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(__import__("json").loads(path.read_text())["subscriptions"]) == {
        "bu-finance",
        "bu-marketing",
        "bu-rnd",
    }


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    register_secret(*(env or {}).values())
    return run_cli(*args, env=env)


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_cli_offline_plan_for_each_cloud(cloud: str, tmp_path: Path) -> None:
    secret = "connection-string-secret-XYZ1"
    out = _cli(
        "provision",
        "plan",
        "--offline",
        "--spec",
        "examples/gateway.yaml",
        "--cloud",
        cloud,
        "--json",
        str(tmp_path / "plan.json"),
        env={"AOAI_EVENTHUB_SEND_CONNECTION": secret, "AOAI_BACKEND_KEY": secret},
    )
    assert out.returncode == 0, out.stderr  # AzureChinaCloud too: the bundled document, inline
    assert ("the bundled document of the metered operations" in out.stdout) == (
        cloud == "AzureChinaCloud"
    )
    assert f"all to {HOSTS[cloud]}" in out.stdout
    assert "create named-value" in out.stdout.replace("  ", " ") or "create" in out.stdout
    assert out.stdout.count(" create ") == len(plan(SPEC, env={}).steps)
    assert secret not in out.stdout and secret not in (tmp_path / "plan.json").read_text()


def test_cli_apply_without_a_subscription_id_is_one_line(tmp_path: Path) -> None:
    data = (
        (ROOT / "examples" / "gateway.yaml")
        .read_text()
        .replace("subscription_id: 00000000-0000-0000-0000-000000000000", "")
    )
    spec = tmp_path / "gw.yaml"
    spec.write_text(data)
    out = _cli("provision", "apply", "--spec", str(spec))
    assert (
        out.returncode == 1 and out.stderr.startswith("error: ") and "subscription_id" in out.stderr
    )
    assert "Traceback" not in out.stderr


def test_api_import_from_a_local_file(tmp_path: Path) -> None:
    doc = tmp_path / "inference.json"
    doc.write_text(
        '{"openapi": "3.0.0", "info": {"title": "AOAI", "version": "2024-10-21"}, "paths": {}}'
    )
    the_plan = plan(_variant(apim__openapi_spec=str(doc)), env={})
    api = next(s.resource for s in the_plan.steps if s.resource.kind == "api")
    assert api.body is not None
    assert api.body["properties"]["format"] == "openapi+json"
    assert api.body["properties"]["value"] == doc.read_text()
    shown = next(s for s in the_plan.to_dict()["steps"] if s["kind"] == "api")
    assert (
        shown["body"]["properties"]["value"]
        == f"<OpenAPI document, {len(doc.read_text())} characters>"
    )
    with pytest.raises(InputError, match="cannot read the OpenAPI spec"):
        plan(_variant(apim__openapi_spec=str(tmp_path / "missing.json")), env={})


def test_a_sovereign_plan_warns_about_a_global_endpoint() -> None:
    china = plan(LLM_SPEC, cloud="AzureChinaCloud", env={})
    assert china.warnings() == [
        "backend aoai-weu (https://aoai-weu.openai.azure.com) is not an AzureChinaCloud AOAI endpoint (*.openai.azure.cn)"
    ]
    assert plan(LLM_SPEC, env={}).warnings() == []


# --- APIM's language-model log (llm_log) ------------------------------------------------------


def _llm_puts(requests: list[RecordedRequest]) -> dict[str, RecordedRequest]:
    """The PUTs of the language-model log's three resources, by documented operation."""
    out = {}
    for r in requests:
        if r.method != "PUT":
            continue
        if (
            "/diagnostics/" in r.path
            or "/diagnosticSettings/" in r.path
            or r.path.endswith("/loggers/azuremonitor")
        ):
            out[_operation(r)] = r
    return out


@pytest.mark.parametrize("cloud", list(CLOUDS))
@pytest.mark.parametrize(
    ("spec", "workspace"),
    [(SPEC, EXAMPLE_WORKSPACE), (LLM_SPEC, WORKSPACE)],
    ids=["example", "workspace-elsewhere"],
)
def test_llm_log_resources_are_the_documented_puts(cloud: str, spec: Spec, workspace: str) -> None:
    the_plan = plan(spec, cloud=cloud, env={})
    requests = dry_run(the_plan)
    assert {r.host for r in requests} == {HOSTS[cloud]}
    puts = _llm_puts(requests)
    assert set(puts) == set(SPEC_FACTS)
    for name, r in puts.items():
        assert r.api_version == SPEC_FACTS[name]["api_version"], name
        assert set(r.body) == {"properties"}, name
        assert set(r.body["properties"]) <= SPEC_FACTS[name]["properties"], name
        assert SPEC_FACTS[name].get("required", set()) <= set(r.body["properties"]), name

    logger = puts["Logger_CreateOrUpdate"].body["properties"]
    assert (
        logger["loggerType"] == "azureMonitor" in SPEC_FACTS["Logger_CreateOrUpdate"]["loggerType"]
    )
    assert "credentials" not in logger  # an azureMonitor logger has no connection string

    diagnostic = puts["ApiDiagnostic_CreateOrUpdate"]
    facts = SPEC_FACTS["ApiDiagnostic_CreateOrUpdate"]
    assert diagnostic.path == f"{SVC}/apis/azure-openai/diagnostics/azuremonitor"
    props = diagnostic.body["properties"]
    assert props["loggerId"] == f"{SVC}/loggers/azuremonitor"  # the logger PUT just before
    assert props["largeLanguageModel"] == {"logs": "enabled"}  # token counts, no messages
    assert props["largeLanguageModel"]["logs"] in facts["logs"]
    assert set(props["sampling"]) <= facts["sampling"]
    assert props["sampling"]["samplingType"] in facts["samplingType"]
    assert props["sampling"]["percentage"] == 100  # every call is billed
    assert "frontend" not in props and "backend" not in props  # no body logging (SSE buffering)

    setting = puts["DiagnosticSettings_CreateOrUpdate"]
    facts = SPEC_FACTS["DiagnosticSettings_CreateOrUpdate"]
    assert setting.path == f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/aoai-llm-logs"
    assert setting.body["properties"] == {
        "workspaceId": workspace,
        "logAnalyticsDestinationType": "Dedicated",  # resource-specific table, not AzureDiagnostics
        "logs": [{"category": LLM_CATEGORY, "enabled": True}],
    }
    for log in setting.body["properties"]["logs"]:
        assert facts["log_required"] <= set(log) <= facts["log_settings"]

    # order: the logger before the diagnostic naming it, the diagnostic after its API
    order = [r.path for r in requests if r.method == "PUT"]
    assert order.index(f"{SVC}/loggers/azuremonitor") < order.index(diagnostic.path)
    assert order.index(f"{SVC}/apis/azure-openai") < order.index(diagnostic.path)


def test_log_messages_adds_request_and_response_message_settings() -> None:
    spec = _variant(
        llm_log__workspace_resource_id=WORKSPACE,
        llm_log__workspace_id=WORKSPACE_GUID,
        llm_log__log_messages=True,
        llm_log__max_message_bytes=65536,
    )
    puts = _llm_puts(dry_run(plan(spec, env={})))
    facts = SPEC_FACTS["ApiDiagnostic_CreateOrUpdate"]
    llm = puts["ApiDiagnostic_CreateOrUpdate"].body["properties"]["largeLanguageModel"]
    assert set(llm) == facts["largeLanguageModel"]
    low, high = facts["maxSizeInBytes"]
    for part in ("requests", "responses"):
        assert set(llm[part]) == facts["message_settings"]
        assert llm[part]["messages"] in facts["messages"]
        assert low <= llm[part]["maxSizeInBytes"] == 65536 <= high


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_a_second_apply_with_the_llm_log_sends_only_gets(cloud: str) -> None:
    second = dry_run(plan(LLM_SPEC, cloud=cloud, env={}), repeat=True)
    assert {r.method for r in second} == {"GET"}
    assert {r.host for r in second} == {HOSTS[cloud]}
    got = {(r.path, r.api_version) for r in second}
    assert (
        f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/aoai-llm-logs",
        "2021-05-01-preview",
    ) in got
    assert (f"{SVC}/apis/azure-openai/diagnostics/azuremonitor", "2024-10-01-preview") in got


def test_the_in_memory_arm_answers_the_documented_put_statuses() -> None:
    """APIM: 201 when created, 200 when updated; Microsoft.Insights: 200 — even though the
    diagnostic setting's path runs through Microsoft.ApiManagement/service/{name}."""
    from azure.core.rest import HttpRequest

    transport = DryRunTransport()
    clients = make_clients(LLM_SPEC, get_cloud("AzureCloud"), SUB, DryRunCredential(), transport)
    cases = {
        "Logger_CreateOrUpdate": (clients.apim, f"{SVC}/loggers/azuremonitor", "2024-05-01"),
        "ApiDiagnostic_CreateOrUpdate": (
            clients.apim,
            f"{SVC}/apis/azure-openai/diagnostics/azuremonitor",
            "2024-10-01-preview",
        ),
        "DiagnosticSettings_CreateOrUpdate": (
            clients.monitor,
            f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/aoai-llm-logs",
            "2021-05-01-preview",
        ),
    }
    for name, (client, path, version) in cases.items():
        statuses = []
        for _ in range(2):
            request = HttpRequest(
                "PUT", path, params={"api-version": version}, json={"properties": {}}
            )
            statuses.append(client._send_request(request).status_code)
        facts = SPEC_FACTS[name]["statuses"]
        assert statuses == [facts["created"], facts["updated"]], name
    stored = transport.store[cases["DiagnosticSettings_CreateOrUpdate"][1].lower()]
    assert stored["type"] == "Microsoft.Insights/diagnosticSettings"


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_the_monitor_client_asks_for_the_clouds_arm_scope(cloud: str) -> None:
    recording = ScopeRecorder()
    asked = recording.asked
    c = get_cloud(cloud)
    transport = DryRunTransport()
    dry = plan(_applicable(LLM_SPEC, cloud), cloud=cloud, env={})
    clients = make_clients(dry.spec, c, SUB, recording, transport)
    apply(dry, clients)
    assert asked and set(asked) == {(c.arm_scope,)}
    monitor = [r for r in transport.requests if "Microsoft.Insights" in r.path]
    assert monitor and {r.host for r in monitor} == {HOSTS[cloud]}


def test_turning_message_logging_off_is_an_update_the_put_applies() -> None:
    on = _variant(
        llm_log__workspace_resource_id=WORKSPACE,
        llm_log__workspace_id=WORKSPACE_GUID,
        llm_log__log_messages=True,
    )
    transport, clients = _applied(on)
    the_plan = plan(LLM_SPEC, clients=clients, env={})
    updates = {s.resource.kind: s.changes for s in the_plan.steps if s.action == "update"}
    assert updates == {
        "api-diagnostic": (
            "largeLanguageModel.requests.messages",
            "largeLanguageModel.requests.maxSizeInBytes",
            "largeLanguageModel.responses.messages",
            "largeLanguageModel.responses.maxSizeInBytes",
        )
    }
    transport.requests.clear()
    apply(the_plan, clients)
    (put,) = [r for r in transport.requests if r.method == "PUT"]
    assert put.body["properties"]["largeLanguageModel"] == {"logs": "enabled"}  # PUT, not PATCH


def test_what_arm_returns_in_its_own_form_is_no_change() -> None:
    transport, clients = _applied(LLM_SPEC)
    diag = f"{SVC}/apis/azure-openai/diagnostics/azuremonitor".lower()
    setting = f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/aoai-llm-logs".lower()
    # service-relative logger id, other casing of the workspace, defaults ARM adds
    transport.store[diag]["properties"]["loggerId"] = "/loggers/azuremonitor"
    transport.store[diag]["properties"]["largeLanguageModel"]["requests"] = None
    transport.store[setting]["properties"]["workspaceId"] = WORKSPACE.lower()
    transport.store[setting]["properties"]["logs"] = [
        {
            "category": "GatewayLlmLogs",
            "categoryGroup": None,
            "enabled": True,
            "retentionPolicy": {"enabled": False, "days": 0},
        },
        {"category": "GatewayLogs", "enabled": False},
    ]
    the_plan = plan(LLM_SPEC, clients=clients, env={})
    assert {s.action for s in the_plan.steps} == {"noop"}
    transport.store[setting]["properties"]["logs"][0]["enabled"] = False
    changed = plan(LLM_SPEC, clients=clients, env={})
    assert [(s.resource.kind, s.changes) for s in changed.steps if s.action == "update"] == [
        ("diagnostic-setting", ("logs",))
    ]


def test_an_azuremonitor_logger_apim_already_has_is_used_as_it_is() -> None:
    transport = DryRunTransport()
    clients = make_clients(LLM_SPEC, get_cloud("AzureCloud"), SUB, DryRunCredential(), transport)
    from azure.mgmt.apimanagement import models as m

    clients.apim.logger.create_or_update(
        clients.rg, clients.service, "azuremonitor", m.LoggerContract(logger_type="azureMonitor")
    )
    the_plan = plan(LLM_SPEC, clients=clients, env={})
    step = next(s for s in the_plan.steps if s.resource.kind == "llm-logger")
    assert step.action == "noop"  # neither its description nor its buffering is ours to change
    transport.requests.clear()
    apply(the_plan, clients)
    assert not [r for r in transport.requests if r.path.endswith("/loggers/azuremonitor")]
    fresh = next(s for s in plan(LLM_SPEC, env={}).steps if s.resource.kind == "llm-logger")
    assert fresh.resource.body is not None
    assert fresh.resource.body["properties"]["description"] == LLM_LOGGER_DESCRIPTION


def test_the_plan_says_what_the_llm_log_needs() -> None:
    assert NO_LLM_LOG.llm_log.workspace_resource_id is None
    assert plan(NO_LLM_LOG, env={}).warnings() == [
        "pass-through streams stay prompt_only: set llm_log.workspace_resource_id (a Log "
        "Analytics workspace) and llm_log.workspace_id so APIM's language-model log is "
        "provisioned and reconcile gives them their exact usage"
    ]
    no_guid = _variant(llm_log__workspace_id=None)
    assert no_guid.llm_log.workspace_resource_id == EXAMPLE_WORKSPACE
    assert plan(no_guid, env={}).warnings() == [
        "llm_log.workspace_id (the workspace's GUID, its 'Workspace ID') is not set: the "
        "language-model log is provisioned, but reconcile cannot query it"
    ]
    assert plan(SPEC, env={}).warnings() == []  # the example has both
    reader = "'Log Analytics Reader' (role 73c42c96-874c-492b-b04d-ab87d138a893) for {} on {}"
    for spec, workspace in ((SPEC, EXAMPLE_WORKSPACE), (LLM_SPEC, WORKSPACE)):
        roles = plan(spec, env={}).role_assignments()
        timer = reader.format("function app func-aoai-ingest's system-assigned identity", workspace)
        cli = reader.format("the identity that runs `reconcile`", workspace)
        assert any(r.startswith(timer) for r in roles) and any(r.startswith(cli) for r in roles)
    assert not any("Log Analytics" in r for r in plan(NO_LLM_LOG, env={}).role_assignments())
    assert "Log Analytics Reader" in plan(LLM_SPEC, env={}).render()
    # without a workspace nothing of the language-model log is planned; with one, all three
    llm_kinds = {"llm-logger", "api-diagnostic", "diagnostic-setting"}
    assert not {s.resource.kind for s in plan(NO_LLM_LOG, env={}).steps} & llm_kinds
    assert llm_kinds <= {s.resource.kind for s in plan(SPEC, env={}).steps}
    assert {r.api_version for r in dry_run(plan(NO_LLM_LOG, env={}))} == {"2024-05-01"}


def test_an_operation_an_earlier_provisioning_created_is_removed() -> None:
    from azure.mgmt.apimanagement import models as m

    transport, clients = _applied(SPEC)
    assert plan(SPEC, clients=clients, env={}).retired == []  # never created now
    clients.apim.api_operation.create_or_update(
        clients.rg,
        clients.service,
        "azure-openai",
        "v1_other",
        m.OperationContract(display_name="v1: other POST", method="POST", url_template="/v1/*"),
    )
    the_plan = plan(SPEC, clients=clients, env={})
    assert [r.name for r in the_plan.retired] == ["v1_other"]
    assert {s.action for s in the_plan.steps} == {"noop"} and the_plan.counts()["noop"] > 0
    text = the_plan.render()
    assert "delete api-operation" in re.sub(r" +", " ", text) and ", 1 to delete" in text
    assert the_plan.to_dict()["retired"][0]["method"] == "DELETE"
    transport.requests.clear()
    result = apply(the_plan, clients)
    deletes = [r for r in transport.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == [f"{SVC}/apis/azure-openai/operations/v1_other"]
    assert deletes[0].if_match == "*" and [r.name for r in result.removed] == ["v1_other"]
    again = plan(SPEC, clients=clients, env={})
    assert again.retired == [] and ", 1 to delete" not in again.render()
    # a second apply of the same plan: already gone counts as done
    apply(the_plan, clients)


# --- owners, tiers, retention, the API document, roles (issue 14) -----------------------------

NO_LIMITS = parse_spec(
    {
        **SPEC.model_dump(),
        "subscriptions": [{**s.model_dump(), "token_limit": None} for s in SPEC.subscriptions],
    }
)


def _clients(transport: DryRunTransport, spec: Spec = SPEC) -> Any:
    return make_clients(spec, get_cloud(spec.cloud), SUB, DryRunCredential(), transport)


def test_apim_user_ids_are_deterministic_valid_and_distinct() -> None:
    from aoai_helpers.azure.apim.resources import apim_user_id

    emails = [
        "ana.silva@contoso.com",
        "Ana.Silva@Contoso.com",
        "li.wei@contoso.com",
        "a" * 49 + "@x.io",
    ]
    ids = [apim_user_id(e) for e in emails]
    assert ids[0] == ids[1]  # case-insensitive, as emails are
    assert len({ids[0], ids[2], ids[3]}) == 3
    for uid in ids:  # UserIdParameter: 1..80 characters
        assert 1 <= len(uid) <= 80 and re.fullmatch(r"[a-z0-9-]+", uid), uid
    # two emails with the same slug differ by their hash
    assert apim_user_id("a.b@c.d") != apim_user_id("a-b@c.d")


def test_owner_names_split_into_first_and_last() -> None:
    from aoai_helpers.azure.apim.resources import owner_names

    sub = SPEC.subscriptions[0]
    assert owner_names(sub) == ("Ana", "Silva")
    one = sub.model_copy(update={"owner_name": "Cher", "owner_email": "cher@x.io"})
    assert owner_names(one) == ("Cher", "-")  # APIM requires a last name; the policy drops "-"
    none = sub.model_copy(update={"owner_name": None, "owner_email": "li.wei@x.io"})
    assert owner_names(none) == ("li", "wei")
    single = sub.model_copy(update={"owner_name": None, "owner_email": "ops@x.io"})
    assert owner_names(single) == ("ops", "-")
    long = sub.model_copy(update={"owner_name": "Mary Ann van der Berg"})
    assert owner_names(long) == ("Mary", "Ann van der Berg")


def test_an_existing_user_with_the_owners_email_is_reused_not_changed() -> None:
    from azure.mgmt.apimanagement import models as m

    transport = DryRunTransport()
    clients = _clients(transport)
    clients.apim.user.create_or_update(
        "rg-aoai-gateway",
        "apim-aoai-gateway",
        "ana-from-the-portal",
        m.UserCreateParameters(email="Ana.Silva@contoso.com", first_name="Ana", last_name="S."),
    )
    the_plan = plan(SPEC, clients=clients, env={})
    assert the_plan.reused_owners == {"ana.silva@contoso.com": "ana-from-the-portal"}
    assert "existing APIM user ana-from-the-portal (reused, not changed)" in the_plan.render()
    lookups = [r for r in transport.requests if r.path.endswith("/users")]
    assert lookups and all(r.query["$filter"][0].startswith("email eq '") for r in lookups)
    users = [s.resource.name for s in the_plan.steps if s.resource.kind == "user"]
    assert len(users) == 2 and not any("ana" in u for u in users)
    transport.requests.clear()
    apply(the_plan, clients)
    puts = _puts(transport.requests)
    assert "/users/ana-from-the-portal" not in puts
    assert puts["/subscriptions/bu-finance"].body["properties"]["ownerId"] == (
        "/users/ana-from-the-portal"
    )
    # ARM returns ownerId as a full id (the REST example): still no change
    key = f"{SVC}/subscriptions/bu-finance".lower()
    transport.store[key]["properties"]["ownerId"] = f"{SVC}/users/ana-from-the-portal"
    again = plan(SPEC, clients=clients, env={})
    assert {s.action for s in again.steps} == {"noop"}


def test_on_consumption_there_are_no_users_and_the_plan_says_so() -> None:
    transport = DryRunTransport(apim_sku="Consumption")
    clients = _clients(transport, NO_LIMITS)
    the_plan = plan(NO_LIMITS, clients=clients, env={})
    assert the_plan.apim_sku == "Consumption" and the_plan.apim_sku_source == "live"
    assert not [s for s in the_plan.steps if s.resource.kind == "user"]
    subs = [s.resource.body for s in the_plan.steps if s.resource.kind == "subscription"]
    assert subs and not any("ownerId" in (b or {})["properties"] for b in subs)
    assert any("UserName and UserEmail stay empty" in w for w in the_plan.warnings())
    assert not [r for r in transport.requests if "/users" in r.path]  # not even looked up
    assert the_plan.errors() == []


def test_token_limits_on_consumption_are_a_plan_error_apply_refuses() -> None:
    transport = DryRunTransport(apim_sku="Consumption")
    clients = _clients(transport)
    the_plan = plan(SPEC, clients=clients, env={})
    assert the_plan.errors() and "Consumption" in the_plan.errors()[0]
    assert "error: subscriptions bu-marketing, bu-rnd have token_limit" in the_plan.render()
    transport.requests.clear()
    with pytest.raises(ConfigError, match="the plan has errors"):
        apply(the_plan, clients)
    assert transport.requests == []


def test_a_spec_sku_that_differs_from_the_service_is_a_warning() -> None:
    spec = _variant(apim__sku="Premium")
    the_plan = plan(spec, clients=_clients(DryRunTransport(apim_sku="StandardV2"), spec), env={})
    assert the_plan.apim_sku == "StandardV2"
    assert "apim.sku is Premium but the service is StandardV2 (read from ARM)" in "\n".join(
        the_plan.warnings()
    )
    offline = plan(spec, env={})
    assert (offline.apim_sku, offline.apim_sku_source) == ("Premium", "spec")
    assert not any("apim.sku is" in w for w in offline.warnings())


def test_a_missing_apim_service_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="APIM service apim-aoai-gateway not found"):
        plan(SPEC, clients=_clients(DryRunTransport(apim_sku=None)), env={})


def _hub_body(spec: Spec, tier: str) -> tuple[Any, Any]:
    transport = DryRunTransport(eventhub_tier=tier)
    clients = _clients(transport, spec)
    the_plan = plan(spec, clients=clients, env={})
    hub = next(s for s in the_plan.steps if s.resource.kind == "eventhub")
    return the_plan, hub.resource.body["properties"]


def test_retention_follows_the_namespace_tier() -> None:
    week = _variant(event_hub__create=True, event_hub__retention_days=7)
    the_plan, props = _hub_body(week, "Standard")
    assert props == {"partitionCount": 4, "messageRetentionInDays": 7}
    assert the_plan.eventhub_tier == "Standard" and the_plan.errors() == []
    month = _variant(event_hub__create=True, event_hub__retention_days=30)
    the_plan, _ = _hub_body(month, "Standard")
    assert the_plan.errors() == [
        "event_hub.retention_days 30 exceeds the Standard tier's maximum of 7 days (Event Hubs "
        "quotas); use a Premium or Dedicated namespace for longer retention"
    ]
    for tier in ("Premium", "Dedicated"):  # Dedicated: a namespace in a cluster
        the_plan, props = _hub_body(month, tier)
        assert the_plan.eventhub_tier == tier and the_plan.errors() == []
        assert props == {
            "partitionCount": 4,
            "retentionDescription": {"cleanupPolicy": "Delete", "retentionTimeInHours": 720},
        }
    day = _variant(event_hub__create=True, event_hub__retention_days=2)
    assert "exceeds the Basic tier's maximum of 1 day " in _hub_body(day, "Basic")[0].errors()[0]
    # offline, the tier unknown: sent as retentionDescription, with a warning
    offline = plan(month, env={})
    assert offline.errors() == [] and any("Premium or Dedicated" in w for w in offline.warnings())
    sent = _puts(dry_run(offline))
    hub = next(r for p, r in sent.items() if p.endswith("/eventhubs/aoai-usage"))
    assert "messageRetentionInDays" not in hub.body["properties"]


def test_china_imports_a_local_document_inline_and_warns_about_a_link(tmp_path: Path) -> None:
    local = _applicable(SPEC, "AzureChinaCloud")
    the_plan = plan(local, env={})
    assert the_plan.errors() == []
    assert "API document: inline (openapi+json" in the_plan.render()
    api = _puts(dry_run(the_plan))["/apis/azure-openai"].body["properties"]
    assert api["format"] == "openapi+json"
    assert api["value"] == Path(LOCAL_OPENAPI).read_text("utf-8")
    link = _variant(apim__openapi_spec=inference_spec_url("2024-10-21"))
    warned = plan(link, cloud="AzureChinaCloud", env={})
    assert warned.errors() == [] and any("not confirmed" in w for w in warned.warnings())
    # global Azure keeps the link, and says APIM fetches it
    assert "API document: by link, fetched by APIM" in plan(SPEC, env={}).render()
    # an API that exists already needs no document: not an error in China
    transport = DryRunTransport()
    clients = _clients(transport, local)
    apply(plan(local, clients=clients, env={}), clients)
    china = SPEC.for_cloud("AzureChinaCloud")
    assert plan(china, clients=clients, env={}).errors() == []


def test_the_plan_prints_the_api_versions_it_uses() -> None:
    the_plan = plan(_variant(event_hub__create=True), env={})
    assert the_plan.api_versions() == {
        "Microsoft.ApiManagement": ["2024-05-01", "2024-10-01-preview"],
        "Microsoft.EventHub": ["2026-01-01"],
        "Microsoft.Insights": ["2021-05-01-preview"],
    }
    text = the_plan.render()
    assert "api-versions: Microsoft.ApiManagement 2024-05-01, 2024-10-01-preview;" in text
    assert "not confirmed" not in text.split("\n")[2]
    gov = plan(SPEC, cloud="AzureUSGovernment", env={}).render().split("\n")[2]
    assert "AzureUSGovernment's ARM serves them is not confirmed" in gov


def test_the_roles_are_listed_per_identity() -> None:
    from aoai_helpers.azure.roles import render_roles, required_roles

    text = plan(SPEC, env={}).render()
    tail = text.split("Not done by this plan", 1)[1]
    heads = [
        "  APIM's managed identity:",
        "  the ingestion function's identity:",
        "  whoever runs the commands:",
    ]
    assert [tail.index(h) for h in heads] == sorted(tail.index(h) for h in heads)
    for line in render_roles(required_roles(SPEC)):  # every role, once
        assert tail.count(f"    - {line}\n") + tail.endswith(f"    - {line}") == 1


def test_basic_namespaces_refuse_a_consumer_group_other_than_default() -> None:
    """Event Hubs quotas: "Number of consumer groups per event hub": Basic 1 (``$Default``)."""
    own = _variant(
        event_hub__create=True, event_hub__retention_days=1, event_hub__consumer_group="aoai-ingest"
    )
    the_plan, _ = _hub_body(own, "Basic")
    (error,) = the_plan.errors()
    assert "consumer_group is aoai-ingest, but the namespace is Basic (read from ARM)" in error
    transport = DryRunTransport(eventhub_tier="Basic")
    clients = _clients(transport, own)
    transport.requests.clear()
    with pytest.raises(ConfigError, match="one consumer group, \\$Default"):
        apply(plan(own, clients=clients, env={}), clients)
    assert {r.method for r in transport.requests} == {"GET"}  # the plan's reads; no PUT
    default = _variant(
        event_hub__create=True, event_hub__retention_days=1, event_hub__consumer_group="$Default"
    )
    assert _hub_body(default, "Basic")[0].errors() == []
    assert _hub_body(own, "Standard")[0].errors() == []
    offline = plan(
        _variant(
            event_hub__create=True,
            event_hub__retention_days=1,
            event_hub__consumer_group="x",
            event_hub__tier="Basic",
        ),
        env={},
    )
    assert "(event_hub.tier)" in offline.errors()[0]
    # without event_hub.create the hub is not ours: nothing to refuse
    assert (
        plan(
            _variant(
                event_hub__consumer_group="x", event_hub__tier="Basic", event_hub__retention_days=1
            ),
            env={},
        ).errors()
        == []
    )


def test_resource_types_are_named_as_arm_lists_them() -> None:
    assert resource_type(f"{SVC}/apis/azure-openai/policies/policy") == (
        "Microsoft.ApiManagement",
        "service/apis/policies",
    )
    hub = "/subscriptions/s/resourceGroups/r/providers/Microsoft.EventHub/namespaces/n/eventhubs/h"
    assert resource_type(hub + "/consumergroups/c") == (
        "Microsoft.EventHub",
        "namespaces/eventhubs/consumergroups",
    )
    setting = f"{SVC}/providers/Microsoft.Insights/diagnosticSettings/d"
    assert resource_type(setting) == ("Microsoft.Insights", "diagnosticSettings")


def _online(transport: DryRunTransport, spec: Spec) -> Any:
    return plan(spec, clients=_clients(transport, spec), env={})


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_the_online_plan_checks_each_api_version_against_the_clouds_listing(cloud: str) -> None:
    """The listing the in-memory ARM answers is the test's assumption (azure_dryrun), not a fact
    about the cloud: what is tested is that the plan asks, and what it does with the answer."""
    spec = _applicable(_variant(event_hub__create=True), cloud)
    transport = DryRunTransport()
    the_plan = _online(transport, spec)
    asked = [
        r
        for r in transport.requests
        if re.fullmatch(r"/subscriptions/[^/]+/providers/[^/]+", r.path)
    ]
    assert sorted(r.path.rsplit("/", 1)[-1] for r in asked) == [
        "Microsoft.ApiManagement",
        "Microsoft.EventHub",
        "Microsoft.Insights",
    ]
    assert {(r.host, r.api_version) for r in asked} == {(HOSTS[cloud], PROVIDERS_API_VERSION)}
    assert the_plan.api_versions_checked and the_plan.errors() == []
    assert the_plan.api_version_warnings == []
    line = the_plan.render().split("\n")[2]
    assert f"(checked against {cloud}'s ARM, Providers_Get: each one listed)" in line
    assert "not confirmed" not in line
    # the Event Hubs version gone from that cloud's listing: a plan error naming what it offers
    listing = transport.providers[cloud]["Microsoft.EventHub"]
    listing["namespaces/eventhubs"] = ["2024-01-01", "2021-11-01"]
    broken = _online(transport, spec)
    (error,) = broken.errors()
    assert error == (
        f"api-version 2026-01-01 of Microsoft.EventHub/namespaces/eventhubs is not served by "
        f"{cloud}'s ARM ({get_cloud(cloud).arm_endpoint}): it offers 2024-01-01, 2021-11-01 "
        "(Providers_Get)"
    )
    assert "some are not served: see the errors" in broken.render().split("\n")[2]
    transport.requests.clear()
    with pytest.raises(ConfigError, match="api-version 2026-01-01"):
        apply(broken, _clients(transport, spec))
    assert transport.requests == []


def test_a_nested_type_the_listing_lacks_is_checked_against_its_parent() -> None:
    spec = _variant(event_hub__create=True, event_hub__consumer_group="aoai-ingest")
    transport = DryRunTransport()
    del transport.providers["AzureCloud"]["Microsoft.EventHub"][
        "namespaces/eventhubs/consumergroups"
    ]
    assert _online(transport, spec).errors() == []  # namespaces/eventhubs has 2026-01-01
    transport.providers["AzureCloud"]["Microsoft.EventHub"]["namespaces/eventhubs"] = ["2024-01-01"]
    errors = _online(transport, spec).errors()
    assert any(
        "Microsoft.EventHub/namespaces/eventhubs/consumergroups is not served" in e
        and "(listed as namespaces/eventhubs)" in e
        for e in errors
    ), errors
    transport.providers["AzureCloud"]["Microsoft.Insights"] = {"logProfiles": ["2016-03-01"]}
    warnings = _online(transport, spec).warnings()
    assert any(
        "Microsoft.Insights/diagnosticSettings is not in the resource-type listing" in w
        for w in warnings
    ), warnings


def test_a_provider_that_cannot_be_read_is_a_warning_naming_what_was_not_checked() -> None:
    spec = _variant(event_hub__create=True)
    transport = DryRunTransport()
    transport.provider_errors["Microsoft.EventHub"] = 403
    transport.unregistered.add("Microsoft.Insights")
    the_plan = _online(transport, spec)
    assert the_plan.errors() == []  # nothing known to be missing
    warnings = "\n".join(the_plan.warnings())
    assert (
        "could not read Microsoft.EventHub from AzureCloud's ARM (https://management.azure.com) "
        "(Providers_Get: HTTP 403 AuthorizationFailed): api-versions not checked: namespaces "
        "2026-01-01; namespaces/eventhubs 2026-01-01;"
    ) in warnings
    assert "Microsoft.Insights is NotRegistered in subscription" in warnings
    assert "az provider register -n Microsoft.Insights" in warnings
    assert "some could not be checked: see the warnings" in the_plan.render().split("\n")[2]
    # a namespace the cloud does not know (404) is a warning too
    del transport.providers["AzureCloud"]["Microsoft.Insights"]
    assert "Providers_Get: HTTP 404 InvalidResourceNamespace" in "\n".join(
        _online(transport, spec).warnings()
    )


def test_the_offline_plan_asks_no_listing() -> None:
    the_plan = plan(SPEC, env={})
    assert not the_plan.api_versions_checked and the_plan.api_version_errors == []
    requests = dry_run(the_plan)  # the apply of an offline plan: no preflight either
    assert not any(r.path.endswith("/providers/Microsoft.EventHub") for r in requests)
