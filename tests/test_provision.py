"""Provisioning, offline: the real SDK calls go through an azure-core transport that records each
HTTP request (``aoai_helpers.azure_dryrun``); the tests check method, host, path, api-version and
body against the documented REST shapes (Microsoft.ApiManagement 2024-05-01, Microsoft.EventHub),
for every cloud, and that a second apply sends only GETs. Nothing reaches the network.
"""

from __future__ import annotations

import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli
from secrets_registry import register_secret

from aoai_helpers.apim.provision import apply, dry_run, make_clients, plan, write_keys
from aoai_helpers.apim.resources import APIM_API_VERSION, EVENTHUB_API_VERSION, inference_spec_url
from aoai_helpers.azure_dryrun import DryRunCredential, DryRunTransport, RecordedRequest
from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.exceptions import ConfigError, InputError
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SVC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-aoai-gateway"
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


def _puts(requests: list[RecordedRequest]) -> dict[str, RecordedRequest]:
    return {r.path.removeprefix(SVC): r for r in requests if r.method == "PUT"}


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_offline_plan_dry_run_hits_the_clouds_arm_endpoint_with_documented_shapes(
    cloud: str,
) -> None:
    the_plan = plan(SPEC, cloud=cloud, env={})
    assert the_plan.offline and {s.action for s in the_plan.steps} == {"create"}
    requests = dry_run(the_plan)
    assert {r.host for r in requests} == {HOSTS[cloud]}
    assert {r.api_version for r in requests} == {APIM_API_VERSION}
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
    assert api["format"] == "openapi+json-link"
    assert api["value"] == inference_spec_url("2024-10-21")
    assert api["value"].endswith("/inference/stable/2024-10-21/inference.json")
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
    }
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
    asked: list[tuple[str, ...]] = []

    class Recording(DryRunCredential):
        def get_token_info(self, *scopes: str, options: Any = None) -> Any:
            asked.append(scopes)
            return super().get_token_info(*scopes, options=options)

        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            asked.append(scopes)
            return super().get_token(*scopes, **kwargs)

    c = get_cloud(cloud)
    clients = make_clients(SPEC, c, "sub", Recording(), DryRunTransport())
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
    assert updates == {
        ("named-value", "aoai-capture-streaming"): ("value",),
        ("product", "aoai-chargeback"): ("displayName",),
    }
    assert all(
        s.action == "noop"
        for s in the_plan.steps
        if (s.resource.kind, s.resource.name) not in updates
    )
    transport.requests.clear()
    apply(the_plan, clients)
    assert sorted(r.path.removeprefix(SVC) for r in transport.requests if r.method == "PUT") == [
        "/namedValues/aoai-capture-streaming",
        "/products/aoai-chargeback",
    ]
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
    assert out.returncode == 0, out.stderr
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
    china = plan(SPEC, cloud="AzureChinaCloud", env={})
    assert china.warnings() == [
        "backend aoai-weu (https://aoai-weu.openai.azure.com) is not an AzureChinaCloud AOAI endpoint (*.openai.azure.cn)"
    ]
    assert plan(SPEC, env={}).warnings() == []
