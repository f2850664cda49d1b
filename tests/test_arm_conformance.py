"""Every ARM request the dry runs record, checked against the REST specification of the
api-version it uses (excerpts in ``tests/rest_specs/``, each naming its source file and commit
in Azure/azure-rest-api-specs).

For provision plan (online: its GETs), apply, a second apply (all no-ops) and destroy, on the
three clouds and several spec shapes, each request must match exactly one documented path
template and method, with that operation's api-version; each PUT body with an excerpted
definition is validated (unknown and read-only properties, required, types, enums,
min/max length, minimum, patterns, max items, ``additionalProperties`` types). The online plan's
api-version preflight (Providers_Get, Microsoft.Resources 2021-04-01) is one of those requests,
and the in-memory ARM's answer to it is validated against the ``Provider`` definition. The SDK drops fields its models do not know without a
word, so every PUT body is also compared with the body the plan showed: each planned leaf must
arrive unchanged. Nothing reaches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from aoai_helpers.azure.apim.cleanup import apply_cleanup, make_cleanup_clients, plan_cleanup
from aoai_helpers.azure.apim.provision import apply, plan
from aoai_helpers.azure.dryrun import (
    DryRunCredential,
    DryRunTransport,
    RecordedRequest,
    provider_listing,
)
from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = Path(__file__).parent / "rest_specs"
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SUB = "00000000-0000-0000-0000-000000000000"
_SERVICE = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
    "/providers/Microsoft.ApiManagement/service/{serviceName}"
)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SPECS_DIR / name).read_text("utf-8"))
    return data


APIM = _load("apimanagement-2024-05-01.json")
EVENTHUB = _load("eventhub-2026-01-01.json")
OTHERS = _load("paths-others.json")
RESOURCES = _load("resources-2021-04-01.json")


def _operations() -> list[dict[str, Any]]:
    out = []
    for doc in (APIM, EVENTHUB, OTHERS, RESOURCES):
        for op_id, op in doc["paths"].items():
            template = op["template"].replace("{service}", _SERVICE)
            out.append(
                {
                    **op,
                    "id": op_id,
                    "template": template,
                    "api_version": op.get("api_version", doc.get("api_version")),
                    "doc": doc,
                }
            )
    return out


OPERATIONS = _operations()


def _template_re(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{resourceUri}"), "/.+")
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
    return re.compile(pattern, re.IGNORECASE)


def operation_of(r: RecordedRequest) -> dict[str, Any]:
    """The one documented operation whose template and method match the request."""
    found = [
        op
        for op in OPERATIONS
        if r.method in op["methods"] and _template_re(op["template"]).fullmatch(r.path)
    ]
    assert len(found) == 1, (r.method, r.path, [f["id"] for f in found])
    return found[0]


# --- a small validator for the Swagger 2.0 schema subset the excerpts use ------------------------


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert name in doc["definitions"], f"definition {name} not excerpted"
        return _resolve(doc, doc["definitions"][name])
    return schema


def _flatten(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Properties and required of a schema with its ``allOf`` parents merged."""
    schema = _resolve(doc, schema)
    props = dict(schema.get("properties", {}))
    required = list(schema.get("required", []))
    for parent in schema.get("allOf", []):
        merged = _flatten(doc, parent)
        props.update(merged["properties"])
        required += merged["required"]
    return {**schema, "properties": props, "required": required}


_TYPES = {"string": str, "boolean": bool, "array": list, "object": dict}


def problems(
    doc: dict[str, Any],
    schema: dict[str, Any],
    value: Any,
    at: str = "",
    *,
    response: bool = False,
) -> list[str]:
    """What in ``value`` the schema does not allow (empty: conforms). ``response``: ``value`` is
    what ARM answers, where read-only properties belong."""
    schema = _resolve(doc, schema)
    out: list[str] = []
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{at}: {value!r} is not an integer"]
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{at}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{at}: {value} > maximum {schema['maximum']}")
        return out
    if kind in _TYPES and not isinstance(value, _TYPES[kind]):
        return [f"{at}: {value!r} is not a {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: does not match {schema['pattern']}")
    if isinstance(value, list) and "maxItems" in schema and len(value) > schema["maxItems"]:
        out.append(f"{at}: more than {schema['maxItems']} items")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += problems(doc, schema["items"], item, f"{at}[{i}]", response=response)
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for name, sub in value.items():
            out += problems(doc, schema["additionalProperties"], sub, f"{at}.{name}")
    if isinstance(value, dict) and ("properties" in schema or "allOf" in schema):
        flat = _flatten(doc, schema)
        for name in flat["required"]:
            if name not in value:
                out.append(f"{at}.{name}: required")
        for name, sub in value.items():
            if name not in flat["properties"]:
                out.append(f"{at}.{name}: not a property of the definition")
                continue
            prop = _resolve(doc, flat["properties"][name])
            read_only = flat["properties"][name].get("readOnly") or prop.get("readOnly")
            if read_only and not response:
                out.append(f"{at}.{name}: read-only, must not be sent")
            out += problems(doc, flat["properties"][name], sub, f"{at}.{name}", response=response)
    return out


# --- the dry runs ----------------------------------------------------------------------------------


def _variant(spec: Spec, **changes: Any) -> Spec:
    data = spec.model_dump()
    for dotted, value in changes.items():
        node = data
        *heads, last = dotted.split("__")
        for part in heads:
            node = node[part]
        node[last] = value
    return parse_spec(data)


def _applicable(spec: Spec, cloud: str) -> Spec:
    return spec.for_cloud(cloud)  # AzureChinaCloud: the bundled document, imported inline


SHAPES: dict[str, tuple[Spec, dict[str, Any]]] = {
    "example": (SPEC, {}),
    "hub-created-premium-30-days": (
        _variant(
            SPEC,
            event_hub__create=True,
            event_hub__consumer_group="aoai-ingest",
            event_hub__retention_days=30,
            event_hub__auth="connection_string",
        ),
        {"eventhub_tier": "Premium"},
    ),
    "hub-created-standard-key-backend": (
        _variant(
            SPEC,
            event_hub__create=True,
            event_hub__retention_days=7,
            backends=[{**SPEC.backends[0].model_dump(), "auth": "key"}],
            llm_log={"log_messages": False},
        ),
        {"eventhub_tier": "Standard"},
    ),
    "llm-messages-standardv2": (
        _variant(SPEC, llm_log__log_messages=True),
        {"apim_sku": "StandardV2"},
    ),
}


def _runs(spec: Spec, cloud: str, arm: dict[str, Any]) -> dict[str, Any]:
    """Each phase's plan and recorded requests, on one in-memory ARM."""
    spec = _applicable(spec, cloud)
    transport = DryRunTransport(**arm)
    c = get_cloud(cloud)
    env = {"AOAI_BACKEND_KEY": "<test: backend key>"}
    clients, web = make_cleanup_clients(spec, c, SUB, DryRunCredential(), transport)
    out: dict[str, Any] = {}
    first = plan(spec, clients=clients, env=env)
    out["plan"] = (first, list(transport.requests))
    transport.requests.clear()
    apply(first, clients)
    out["apply"] = (first, list(transport.requests))
    transport.requests.clear()
    second = plan(spec, clients=clients, env=env)
    apply(second, clients)
    out["second apply"] = (second, list(transport.requests))
    transport.requests.clear()
    if web is not None:  # as function deploy leaves it
        web.web.web_apps.update_application_settings(
            web.rg, web.app, {"properties": {"AOAI_DB_URL": "sqlite://", "KEEP": "x"}}
        )
        transport.requests.clear()
    gone = plan_cleanup(spec, clients=clients, web=web)
    apply_cleanup(gone, clients, web=web, polling_interval=0)
    out["destroy"] = (gone, list(transport.requests))
    return out


CASES = [(shape, cloud) for shape in SHAPES for cloud in CLOUDS]


@pytest.fixture(scope="module")
def recorded() -> dict[tuple[str, str], dict[str, Any]]:
    return {(s, c): _runs(SHAPES[s][0], c, SHAPES[s][1]) for s, c in CASES}


@pytest.mark.parametrize(("shape", "cloud"), CASES)
def test_every_request_is_a_documented_operation_at_its_api_version(
    shape: str, cloud: str, recorded: dict[tuple[str, str], dict[str, Any]]
) -> None:
    seen = set()
    for phase, (_plan, requests) in recorded[(shape, cloud)].items():
        assert requests, phase
        for r in requests:
            if "asyncId" in r.query:  # polling a location ARM gave (Api_Delete, User_Delete)
                continue
            op = operation_of(r)
            seen.add(op["id"])
            assert r.api_version == op["api_version"], (phase, op["id"], r.api_version)
            assert r.host == get_cloud(cloud).arm_endpoint.removeprefix("https://")
            extra = set(r.query) - {"api-version", "format"} - set(op.get("query", []))
            assert not extra, (phase, op["id"], extra)
            for name, limits in op.get("params", {}).items():
                value = r.path.rstrip("/").rsplit("/", 1)[-1]
                assert limits["minLength"] <= len(value) <= limits["maxLength"], (name, value)
    assert {
        "ApiManagementService_Get",
        "User_CreateOrUpdate",
        "Subscription_CreateOrUpdate",
        "Providers_Get",
    } <= seen


@pytest.mark.parametrize(("shape", "cloud"), CASES)
def test_every_body_conforms_to_its_definition(
    shape: str, cloud: str, recorded: dict[tuple[str, str], dict[str, Any]]
) -> None:
    checked = set()
    for phase, (_plan, requests) in recorded[(shape, cloud)].items():
        for r in requests:
            if r.method != "PUT" or "asyncId" in r.query:
                continue
            op = operation_of(r)
            if "body" not in op:
                continue
            doc = op["doc"]
            found = problems(doc, doc["definitions"][op["body"]], r.body)
            assert found == [], (phase, op["id"], found)
            checked.add(op["id"])
    assert {
        "Api_CreateOrUpdate",
        "Subscription_CreateOrUpdate",
        "User_CreateOrUpdate",
        "NamedValue_CreateOrUpdate",
        "Logger_CreateOrUpdate",
        "ApiOperation_CreateOrUpdate",
        "ApiPolicy_CreateOrUpdate",
        "Product_CreateOrUpdate",
        "ProductPolicy_CreateOrUpdate",
    } <= checked
    eh = SHAPES[shape][0].event_hub
    if eh.create:
        assert {"EventHubs_CreateOrUpdate", "EventHubs_CreateOrUpdateAuthorizationRule"} <= checked
        assert ("ConsumerGroups_CreateOrUpdate" in checked) == (eh.consumer_group != "$Default")


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: node}


@pytest.mark.parametrize(("shape", "cloud"), CASES)
def test_what_was_sent_is_what_was_planned(
    shape: str, cloud: str, recorded: dict[tuple[str, str], dict[str, Any]]
) -> None:
    the_plan, requests = recorded[(shape, cloud)]["apply"]
    puts = {r.url: r for r in requests if r.method == "PUT"}
    todo = [s for s in the_plan.steps if s.action != "noop"]
    assert [s.resource.url(the_plan.cloud) for s in todo] == [
        r.url for r in requests if r.method == "PUT"
    ]
    for step in todo:
        sent = puts[step.resource.url(the_plan.cloud)]
        planned = _leaves(step.resource.body) if step.resource.body is not None else {}
        got = _leaves(sent.body) if sent.body is not None else {}
        for path, want in planned.items():
            if path in step.resource.secret:  # filled at apply (a key, a connection string)
                assert got.get(path), (step.resource.kind, path)
                continue
            assert path in got, f"{step.resource.kind}: {path} dropped by the SDK"
            assert got[path] == want, (step.resource.kind, path, got[path], want)
        unplanned = set(got) - set(planned)
        assert not unplanned, (step.resource.kind, unplanned)


@pytest.mark.parametrize(("shape", "cloud"), CASES)
def test_a_second_apply_only_reads(
    shape: str, cloud: str, recorded: dict[tuple[str, str], dict[str, Any]]
) -> None:
    second, requests = recorded[(shape, cloud)]["second apply"]
    assert {s.action for s in second.steps} == {"noop"}
    assert {r.method for r in requests} == {"GET"}


def test_the_validator_catches_what_the_specs_forbid() -> None:
    """The checks above can fail: each kind of violation is reported."""
    user = APIM["definitions"]["UserCreateParameters"]
    good = {"properties": {"email": "a@b.c", "firstName": "A", "lastName": "B", "state": "active"}}
    assert problems(APIM, user, good) == []
    bad = {
        "properties": {
            "email": "x" * 255,
            "firstName": "",
            "state": "sleeping",
            "nickname": "z",
            "confirmation": 1,
        }
    }
    found = "\n".join(problems(APIM, user, bad))
    for expected in (
        ".properties.email: longer than 254",
        ".properties.firstName: shorter than 1",
        ".properties.lastName: required",
        ".properties.state: 'sleeping' not in",
        ".properties.nickname: not a property",
        ".properties.confirmation: 1 is not a string",
    ):
        assert expected in found, expected
    hub = EVENTHUB["definitions"]["Eventhub"]
    assert problems(EVENTHUB, hub, {"properties": {"messageRetentionInDays": 0}}) == [
        ".properties.messageRetentionInDays: 0 < minimum 1"
    ]
    assert "read-only" in problems(EVENTHUB, hub, {"properties": {"partitionIds": ["0"]}})[0]
    retention = {"properties": {"retentionDescription": {"cleanupPolicy": "Forever"}}}
    assert "not in" in problems(EVENTHUB, hub, retention)[0]
    api = APIM["definitions"]["ApiCreateOrUpdateParameter"]
    assert ".properties.path: required" in problems(APIM, api, {"properties": {}})
    logger = APIM["definitions"]["LoggerContract"]
    bad_logger = {"id": "/x", "properties": {"loggerType": "splunk", "credentials": {"name": 1}}}
    found = "\n".join(problems(APIM, logger, bad_logger))
    for expected in (
        ".id: read-only",  # ProxyResource → Resource, from common-types
        ".properties.loggerType: 'splunk' not in",
        ".properties.credentials.name: 1 is not a string",  # additionalProperties: string
    ):
        assert expected in found, expected
    assert ".properties.loggerType: required" in problems(APIM, logger, {"properties": {}})
    named = APIM["definitions"]["NamedValueCreateContract"]
    bad_named = {"properties": {"displayName": "a b", "tags": ["t"] * 33, "value": "x" * 4097}}
    found = "\n".join(problems(APIM, named, bad_named))
    for expected in (
        "displayName: does not match",
        "tags: more than 32",
        "value: longer than 4096",
    ):
        assert expected in found, expected
    kv = {"properties": {"displayName": "k", "keyVault": {"secretIdentifier": "u", "vault": "v"}}}
    assert problems(APIM, named, kv) == [
        ".properties.keyVault.vault: not a property of the definition"
    ]
    policy = APIM["definitions"]["PolicyContract"]
    assert "not in" in problems(APIM, policy, {"properties": {"value": "<p/>", "format": "XML"}})[0]
    op = APIM["definitions"]["OperationContract"]
    assert ".properties.urlTemplate: required" in problems(
        APIM, op, {"properties": {"displayName": "d", "method": "POST"}}
    )
    assert "templateParameters[0].type: required" in "\n".join(
        problems(
            APIM,
            op,
            {
                "properties": {
                    "displayName": "d",
                    "method": "GET",
                    "urlTemplate": "/{x}",
                    "templateParameters": [{"name": "x"}],
                }
            },
        )
    )
    product = APIM["definitions"]["ProductContract"]
    assert (
        "'draft' not in"
        in problems(APIM, product, {"properties": {"displayName": "p", "state": "draft"}})[0]
    )
    provider = RESOURCES["definitions"]["Provider"]
    assert problems(RESOURCES, provider, {"resourceTypes": []}, response=True) == []
    assert "read-only" in problems(RESOURCES, provider, {"resourceTypes": []})[0]
    with pytest.raises(AssertionError):  # an unknown path is no documented operation
        operation_of(RecordedRequest("PUT", "https://management.azure.com/x/y?api-version=1", None))


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_the_in_memory_providers_get_answers_the_documented_shape(cloud: str) -> None:
    """What the preflight reads from the in-memory ARM is a ``Provider`` as resources.json
    defines it (the listing's *content* is the tests' assumption: azure_dryrun)."""
    transport = DryRunTransport()
    host = get_cloud(cloud).arm_endpoint.removeprefix("https://")
    for namespace in provider_listing(cloud):
        status, body = transport._providers_get(host, f"/subscriptions/{SUB}/providers/{namespace}")
        assert status == 200
        assert problems(RESOURCES, RESOURCES["definitions"]["Provider"], body, response=True) == []
        assert body["namespace"] == namespace and body["registrationState"] == "Registered"
        assert all(t["apiVersions"] and t["locations"] for t in body["resourceTypes"])
    transport.provider_errors["Microsoft.EventHub"] = 403
    status, body = transport._providers_get(
        host, f"/subscriptions/{SUB}/providers/Microsoft.EventHub"
    )
    assert (status, body["error"]["code"]) == (403, "AuthorizationFailed")
    status, _ = transport._providers_get(host, f"/subscriptions/{SUB}/providers/Microsoft.Nope")
    assert status == 404


def test_the_excerpts_name_their_source() -> None:
    for doc in (APIM, EVENTHUB, RESOURCES):
        src = doc["source"]
        assert src["repo"] == "Azure/azure-rest-api-specs"
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]) and src["path"].endswith(".json")
        assert f"/{doc['api_version']}/" in src["path"]
    assert all(f["repo"] == "Azure/azure-rest-api-specs" for f in OTHERS["source"]["files"])
