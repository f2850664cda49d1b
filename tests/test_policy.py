"""APIM policies (aoai_helpers.azure.apim.policy): rendering, the templates' invariants, local parity.

The policies are rendered for the sample spec and variants of it (key auth, two backends,
buffered and passthrough_usage capture, payload capture, no token limits, each cloud) and
checked as data: the XML parses and has the four sections, no placeholder is left, the named
values referenced are exactly those :func:`named_values` lists, every policy expression has
balanced brackets outside C# string literals and comments (and no ``//`` comment in an
attribute, where XML turns newlines into spaces), and the event the policy logs has the
contract's fields in order — the same keys the local gateway's ``build_event`` writes.

Every expression of the API policy is also compiled as C# 7 with Mono's ``mcs -langversion:7``
against minimal stand-ins of the APIM context (and of Json.NET, or the real Newtonsoft.Json where
Debian's ``libnewtonsoft-json5.0-cil`` is installed) and run on jobs, against the Python they
follow: the classifier on a table of hostile paths against :func:`aoai_helpers.core.routes.classify`,
the body checks, the include_usage acceptance against ``PolicySettings.accepts_include_usage``,
the request shrink against :func:`aoai_helpers.core.shrink.shrink_request` (equal results), the event
that cannot fail, the buffered reply kept for old api-versions, each capture mode's decision and
the usage-chunk removal byte-for-byte against :func:`aoai_helpers.local.gateway.strip_usage_chunk`
(skipped, with the reason, where ``mcs``/``mono`` are not installed: ``apt-get install mono-mcs``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoai_helpers.azure.apim import policy
from aoai_helpers.azure.apim.policy import (
    POLICY_FORMAT,
    NamedValue,
    PolicySettings,
    named_values,
    policy_fields,
    policy_settings,
    render,
    render_api_policy,
    render_product_policy,
)
from aoai_helpers.clouds import CLOUDS
from aoai_helpers.core.events import LOG_TO_EVENTHUB_LIMIT, USAGE_FIELDS, V2_FIELDS
from aoai_helpers.core.routes import Refusal, classify
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SAMPLE: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "gateway.yaml").read_text("utf-8"))
SAMPLE_VERSIONS = parse_spec(SAMPLE).capture.include_usage_api_versions
SECTIONS = ["inbound", "backend", "outbound", "on-error"]
NAMED_VALUE = re.compile(r"\{\{([^{}]+)\}\}")
EUS = {
    "name": "aoai-eus",
    "endpoint": "https://aoai-eus.openai.azure.com/",
    "auth": "key",
    "key_named_value": "aoai-eus-key",
    "deployments": {"o3": "o3-2025-04-16", "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14"},
}


def spec_with(change: Callable[[dict[str, Any]], None] | None = None) -> Spec:
    data = copy.deepcopy(SAMPLE)
    if change is not None:
        change(data)
    return parse_spec(data)


def _key_auth(d: dict[str, Any]) -> None:
    d["backends"][0]["auth"] = "key"


def _two_backends(d: dict[str, Any]) -> None:
    d["backends"].append(dict(EUS))


def _buffered(d: dict[str, Any]) -> None:
    d["capture"]["streaming"] = "buffered"


def _passthrough_usage(d: dict[str, Any]) -> None:
    d["capture"]["streaming"] = "passthrough_usage"


def _payload(d: dict[str, Any]) -> None:
    d["capture"]["payload"] = True


def _no_limits(d: dict[str, Any]) -> None:
    for sub in d["subscriptions"]:
        sub.pop("token_limit", None)


def _cloud(name: str) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["cloud"] = name

    return change


VARIANTS: dict[str, Callable[[dict[str, Any]], None] | None] = {
    "sample": None,
    "key-auth": _key_auth,
    "two-backends": _two_backends,
    "buffered": _buffered,
    "passthrough-usage": _passthrough_usage,
    "payload": _payload,
    "no-token-limits": _no_limits,
    **{f"cloud-{name}": _cloud(name) for name in CLOUDS},
}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def spec(request: pytest.FixtureRequest) -> Spec:
    return spec_with(VARIANTS[request.param])


# --- a checker for policy expressions ------------------------------------------------------------

_CLOSES = {")": "(", "]": "[", "}": "{"}


def _string_end(code: str, i: int) -> int:
    """Index after the C# literal at ``code[i]``: ``"…"`` (escapes), ``@"…"`` (``""``), ``'…'``."""
    if code[i] == "@":
        i += 2
        while i < len(code):
            if code[i] == '"':
                if code[i + 1 : i + 2] != '"':
                    return i + 1
                i += 1
            i += 1
    else:
        quote, i = code[i], i + 1
        while i < len(code):
            if code[i] == "\\":
                i += 1
            elif code[i] == quote:
                return i + 1
            i += 1
    raise AssertionError(f"unterminated literal in {code!r}")


def balanced(expression: str) -> bool:
    """``@(…)`` / ``@{…}``: brackets pair up outside literals and the first one closes last."""
    code = expression[1:]
    stack: list[str] = []
    i = 0
    while i < len(code):
        c = code[i]
        if c in "\"'" or (c == "@" and code[i + 1 : i + 2] == '"'):
            i = _string_end(code, i)
            continue
        if code.startswith("/*", i):  # a comment
            i = code.index("*/", i) + 2
            continue
        if c in "([{":
            stack.append(c)
        elif c in _CLOSES:
            if not stack or stack.pop() != _CLOSES[c]:
                return False
            if not stack and i != len(code) - 1:
                return False
        i += 1
    return not stack and code[:1] in ("(", "{")


def expressions(root: ET.Element) -> Iterator[str]:
    for el in root.iter():
        for value in [*el.attrib.values(), el.text or ""]:
            value = value.strip()
            if value.startswith(("@(", "@{")):
                yield value


def test_the_checker_skips_string_and_char_literals() -> None:
    assert balanced('@(f(")", \'(\', @"a""(", "\\"("))')
    assert balanced('@{ if (x) { return "}"; } return new[] { 1 }[0]; }')
    assert balanced("@{ /* it's a comment ( */ return 1; }")
    assert not balanced('@(f(")")')
    assert not balanced("@(a)(b)")
    assert not balanced("@{ return f(; }")
    assert not balanced("@(a[)]")


# --- render ----------------------------------------------------------------------------------------


def test_render_fills_placeholders_and_leaves_named_values() -> None:
    out = render('<a x="{%X%}">{{nv-1}} {%Y_2%} {%X%}</a>', {"X": "1", "Y_2": "two"})
    assert out == '<a x="1">{{nv-1}} two 1</a>'


def test_render_names_every_missing_and_unused_value() -> None:
    with pytest.raises(ConfigError) as err:
        render("{%A%} {%B%} {%C%}", {"A": "1", "TYPO": "x", "OTHER": "y"})
    message = str(err.value)
    assert "{%B%}" in message and "{%C%}" in message
    assert "TYPO" in message and "OTHER" in message


def test_render_refuses_leftover_placeholder_syntax() -> None:
    with pytest.raises(ConfigError, match=r"\{%lower%\}"):
        render("{%A%} {%lower%}", {"A": "1"})
    with pytest.raises(ConfigError, match="left after rendering"):
        render("{%A%}", {"A": "{%B%}"})  # one pass: a value cannot smuggle a placeholder in


# --- both policies, every variant -----------------------------------------------------------------


def test_policies_are_well_formed_with_four_sections(spec: Spec) -> None:
    for xml in (render_api_policy(spec), render_product_policy(spec)):
        root = ET.fromstring(xml)
        assert root.tag == "policies"
        assert [child.tag for child in root] == SECTIONS
        assert "{%" not in xml and "%}" not in xml


def test_policy_expressions_are_balanced(spec: Spec) -> None:
    api = list(expressions(ET.fromstring(render_api_policy(spec))))
    product = list(expressions(ET.fromstring(render_product_policy(spec))))
    assert len(api) >= 15
    assert len(product) == 2 * sum(s.token_limit is not None for s in spec.subscriptions)
    bad = [e[:80] for e in api + product if not balanced(e)]
    assert not bad, bad


def test_attribute_expressions_have_no_line_comments(spec: Spec) -> None:
    # XML turns the newlines of an attribute into spaces: a // comment would end the expression
    root = ET.fromstring(render_api_policy(spec))
    for el in root.iter():
        for value in el.attrib.values():
            if value.strip().startswith(("@(", "@{")):
                assert "\n" not in value and "//" not in value, value[:80]


def test_named_values_referenced_are_exactly_those_listed(spec: Spec) -> None:
    referenced = set(NAMED_VALUE.findall(render_api_policy(spec) + render_product_policy(spec)))
    listed = named_values(spec, {})
    assert referenced == {nv.display_name for nv in listed}
    assert len(listed) == len({nv.id for nv in listed})


def test_events_go_to_the_spec_logger_once_per_path(spec: Spec) -> None:
    root = ET.fromstring(render_api_policy(spec))
    loggers = list(root.iter("log-to-eventhub"))
    assert [el.get("logger-id") for el in loggers] == [spec.event_hub.logger_id] * 2
    outbound, on_error = root.find("outbound"), root.find("on-error")
    assert outbound is not None and on_error is not None
    assert len(list(outbound.iter("log-to-eventhub"))) == 1
    assert len(list(on_error.iter("log-to-eventhub"))) == 1
    assert loggers[0].text == loggers[1].text  # one event expression, not two that drift


def test_event_fields_are_the_contract(spec: Spec) -> None:
    assert policy_fields(render_api_policy(spec)) == list(V2_FIELDS)


def test_usage_is_normalised_to_the_contract_keys(spec: Spec) -> None:
    root = ET.fromstring(render_api_policy(spec))
    result = next(
        el.get("value", "") for el in root.iter("set-variable") if el.get("name") == "aoai-result"
    )
    assert re.findall(r'new JProperty\("(\w+)", n\[\d\]\)', result) == list(USAGE_FIELDS)


def test_managed_identity_audience_is_the_clouds(spec: Spec) -> None:
    root = ET.fromstring(render_api_policy(spec))
    wanted = CLOUDS[spec.cloud].cognitive_resource
    resources = [el.get("resource") for el in root.iter("authentication-managed-identity")]
    assert len(resources) == sum(b.auth == "managed_identity" for b in spec.backends)
    assert set(resources) <= {wanted}


def test_local_gateway_writes_the_policy_fields(spec: Spec) -> None:
    pytest.importorskip("httpx")
    from aoai_helpers.local.events import GatewayCall as _Call
    from aoai_helpers.local.events import build_event

    call = _Call(
        request_id="00000000-0000-4000-8000-000000000001",
        started=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        subscription=spec.subscriptions[0],
        path="/openai/deployments/gpt-4o/chat/completions",
        operation="chat",
        v1=False,
        deployment="gpt-4o",
        api_version="2024-10-21",
        streaming=False,
        body={"messages": [{"role": "user", "content": "hi"}]},
    )
    event = build_event(spec, call, status=200, model=None, usage=None)
    assert list(event) == policy_fields(render_api_policy(spec))


# --- the API policy's parts ----------------------------------------------------------------------


def _section(xml: str, name: str) -> ET.Element:
    found = ET.fromstring(xml).find(name)
    assert found is not None
    return found


def test_the_call_is_described_before_base() -> None:
    inbound = [
        el.get("name") or el.tag for el in _section(render_api_policy(spec_with()), "inbound")
    ]
    base = inbound.index("base")
    described = {"aoai-operation", "aoai-v1", "aoai-api-version", "aoai-request", "aoai-streaming"}
    assert described | {"aoai-deployment"} <= set(inbound[:base])


def test_include_usage_is_injected_only_under_the_capture_named_values() -> None:
    inbound = _section(render_api_policy(spec_with()), "inbound")
    whens = [w for w in inbound.iter("when") if w.find("set-body") is not None]
    assert len(whens) == 1
    assert "aoai-usage-body" in whens[0].get("condition", "")
    condition = next(
        el.get("value", "")
        for el in inbound.iter("set-variable")
        if el.get("name") == "aoai-usage-body"
    )
    assert "{{aoai-capture-streaming}}" in condition
    # for api-versions that accept it: listed, or dated on or after include_usage_from
    assert 'GetValueOrDefault<bool>("aoai-usage-accepted", false)' in condition
    accepted = next(
        el.get("value", "")
        for el in inbound.iter("set-variable")
        if el.get("name") == "aoai-usage-accepted"
    )
    assert "{{aoai-include-usage-api-versions}}" in accepted
    assert "{{aoai-include-usage-from}}" in accepted
    # injected in buffered and passthrough_usage capture, never in passthrough
    assert '"buffered"' in condition and '"passthrough_usage"' in condition
    assert '"passthrough"' not in condition
    assert '"include_usage"' in condition
    assert "aoai-usage-body" in (whens[0].findtext("set-body") or "")
    # and remembered, for the outbound section to hide what it injected
    marks = [(el.get("name"), el.get("value")) for el in whens[0].iter("set-variable")]
    assert marks == [("aoai-usage-injected", "@(true)")]
    assert [child.tag for child in whens[0]] == ["set-variable", "set-body"]


def test_buffered_capture_removes_the_usage_chunk_it_injected_after_logging() -> None:
    outbound = _section(render_api_policy(spec_with()), "outbound")
    children = [el.get("name") or el.tag for el in outbound]
    # the usage is read (aoai-result) and logged before the body is rewritten
    assert children.index("aoai-result") < children.index("log-to-eventhub")
    assert children.index("aoai-logged") < len(children) - 1
    strip = [w for w in outbound.iter("when") if w.find("set-body") is not None]
    assert len(strip) == 1 and children[-1] == "choose"
    condition = strip[0].get("condition", "")
    assert '"{{aoai-capture-streaming}}" == "buffered"' in condition
    assert 'GetValueOrDefault<bool>("aoai-usage-injected", false)' in condition
    assert '"text/event-stream"' in condition
    code = strip[0].findtext("set-body") or ""
    assert "As<string>(preserveContent: true)" in code
    assert '"[DONE]"' in code and 'chunk["usage"] is JObject' in code


def test_passthrough_usage_streams_like_passthrough() -> None:
    xml = render_api_policy(spec_with(_passthrough_usage))
    backend = _section(xml, "backend")
    # buffer-response="false" for every mode but buffered, so passthrough_usage too
    assert [f.attrib for f in backend] == [{"buffer-response": "false"}]
    result = next(
        el.get("value", "")
        for el in _section(xml, "outbound").iter("set-variable")
        if el.get("name") == "aoai-result"
    )
    # the streamed body is never read but in buffered capture
    assert 'if (sse && "{{aoai-capture-streaming}}" != "buffered") { return ""; }' in result


@pytest.mark.parametrize(
    ("mode", "attributes"),
    [
        ("passthrough", {"buffer-response": "false"}),
        ("passthrough_usage", {"buffer-response": "false"}),
        ("buffered", {}),
    ],
)
def test_backend_forwards_once_unbuffered_in_passthrough_modes(
    mode: str, attributes: dict[str, str]
) -> None:
    """ONE forward-request per document (forward-request-policy: "Multiple statements per
    policy document: not supported"), nowhere else, its buffer-response rendered from the mode."""

    def change(d: dict[str, Any]) -> None:
        d["capture"]["streaming"] = mode

    root = ET.fromstring(render_api_policy(spec_with(change)))
    backend = root.find("backend")
    assert backend is not None
    # no <base />, no <choose>: this is the only forward, straight in the backend section
    assert [(child.tag, child.attrib) for child in backend] == [("forward-request", attributes)]
    assert len(list(root.iter("forward-request"))) == 1


def test_caller_credentials_never_reach_the_backend() -> None:
    inbound = _section(render_api_policy(spec_with()), "inbound")
    deleted = {
        el.get("name") for el in inbound.iter("set-header") if el.get("exists-action") == "delete"
    }
    assert {"Ocp-Apim-Subscription-Key", "api-key"} <= deleted
    query = [el.get("name") for el in inbound.iter("set-query-parameter")]
    assert query == ["subscription-key"]


def test_key_auth_sends_the_named_value_and_drops_authorization() -> None:
    inbound = _section(render_api_policy(spec_with(_key_auth)), "inbound")
    assert not list(inbound.iter("authentication-managed-identity"))
    headers = {el.get("name"): el for el in inbound.iter("set-header")}
    assert headers["Authorization"].get("exists-action") == "delete"
    assert headers["api-key"].get("exists-action") == "override"
    assert headers["api-key"].findtext("value") == "{{aoai-backend-key}}"


def test_second_backend_is_chosen_by_deployment() -> None:
    inbound = _section(render_api_policy(spec_with(_two_backends)), "inbound")
    choose = next(
        c for c in inbound.iter("choose") if c.find("when/set-backend-service") is not None
    )
    when, otherwise = choose.find("when"), choose.find("otherwise")
    assert when is not None and otherwise is not None
    target = when.find("set-backend-service")
    assert (
        target is not None and target.get("base-url") == "https://aoai-eus.openai.azure.com/openai"
    )
    condition = when.get("condition", "")
    assert (
        '"o3"' in condition and '"gpt-4.1-nano"' in condition and "OrdinalIgnoreCase" in condition
    )
    assert when.findtext("set-header/value") == "{{aoai-eus-key}}"  # key auth for the second one
    assert otherwise.find("set-backend-service") is None  # the first is the API's service URL
    mi = otherwise.find("authentication-managed-identity")
    assert mi is not None and mi.get("resource") == "https://cognitiveservices.azure.com"


def test_event_budget_matches_the_local_gateway() -> None:
    pytest.importorskip("httpx")
    from aoai_helpers.local.gateway import EVENT_BUDGET

    assert policy.REQUEST_BUDGET == EVENT_BUDGET // 2
    assert policy.RESPONSE_BUDGET == EVENT_BUDGET // 3
    assert policy.REQUEST_BUDGET + policy.RESPONSE_BUDGET < LOG_TO_EVENTHUB_LIMIT // 2
    xml = render_api_policy(spec_with())
    assert f"int budget = {policy.REQUEST_BUDGET};" in xml
    assert f"int limit = {policy.RESPONSE_BUDGET};" in xml


def test_policy_format_is_escaped_xml() -> None:
    assert POLICY_FORMAT == "xml"
    assert "&lt;JObject>" in render_api_policy(spec_with())  # expressions are XML-escaped


# --- the product policy -----------------------------------------------------------------------------


def test_product_policy_limits_each_limited_subscription() -> None:
    inbound = _section(render_product_policy(spec_with()), "inbound")
    assert [child.tag for child in inbound] == ["base", "choose"]
    whens = inbound.findall("choose/when")
    assert [re.findall(r'"([^"]+)"', w.get("condition", "")) for w in whens] == [
        ["bu-marketing"],
        ["bu-rnd"],
    ]
    limits = [w.find("llm-token-limit") for w in whens]
    assert all(limit is not None for limit in limits)
    marketing, rnd = (limit.attrib for limit in limits if limit is not None)
    assert marketing["counter-key"] == rnd["counter-key"] == "@(context.Subscription.Id)"
    assert marketing["tokens-per-minute"] == "50000" and "token-quota" not in marketing
    assert (rnd["tokens-per-minute"], rnd["token-quota"], rnd["token-quota-period"]) == (
        "200000",
        "50000000",
        "Monthly",
    )
    assert marketing["estimate-prompt-tokens"] == rnd["estimate-prompt-tokens"] == "false"
    assert "remaining-quota-tokens-header-name" in rnd
    assert "remaining-quota-tokens-header-name" not in marketing


def test_product_policy_without_limits_only_inherits() -> None:
    root = ET.fromstring(render_product_policy(spec_with(_no_limits)))
    assert [[child.tag for child in section] for section in root] == [["base"]] * 4


# --- named values and settings ---------------------------------------------------------------------


def test_named_values_of_the_sample() -> None:
    values = named_values(spec_with(), {})
    assert [(nv.id, nv.secret) for nv in values] == [
        ("aoai-capture-streaming", False),
        ("aoai-include-usage-api-versions", False),
        ("aoai-capture-payload", False),
        ("aoai-include-usage-from", False),
        ("aoai-allow-unmetered", False),
        ("aoai-max-json-depth", False),
    ]
    assert values[0].value == "passthrough" and values[2].value == "false"
    assert values[1].value == ",".join(SAMPLE_VERSIONS)
    assert [nv.value for nv in values[3:]] == ["2024-09-01-preview", "none", "64"]


def test_named_values_carry_each_capture_mode() -> None:
    for change, mode in (
        (None, "passthrough"),
        (_buffered, "buffered"),
        (_passthrough_usage, "passthrough_usage"),
    ):
        values = {nv.id: nv.value for nv in named_values(spec_with(change), {})}
        assert values["aoai-capture-streaming"] == mode


def test_named_values_follow_the_capture_settings() -> None:
    def change(d: dict[str, Any]) -> None:
        d["capture"] = {
            "streaming": "buffered",
            "payload": True,
            "include_usage_api_versions": [],
            "include_usage_from": "2025-01-01-preview",
            "allow_unmetered": ["images", "audio"],
            "max_json_depth": 32,
        }

    values = {nv.id: nv.value for nv in named_values(spec_with(change), {})}
    assert values == {
        "aoai-capture-streaming": "buffered",
        "aoai-include-usage-api-versions": "none",  # APIM refuses an empty value
        "aoai-capture-payload": "true",
        "aoai-include-usage-from": "2025-01-01-preview",
        "aoai-allow-unmetered": "audio,images",
        "aoai-max-json-depth": "32",
    }
    # and the local gateway reads the same settings
    settings = policy_settings(spec_with(change))
    assert settings.allow_unmetered == {"images", "audio"} and settings.max_json_depth == 32


def test_backend_key_comes_from_the_environment() -> None:
    spec = spec_with(_key_auth)
    specific = {
        "AOAI_BACKEND_KEY_AOAI_WEU": "weu-secret-123456",
        "AOAI_BACKEND_KEY": "generic-9999",
    }
    key = named_values(spec, specific)[-1]
    assert (key.id, key.secret, key.value) == ("aoai-backend-key", True, "weu-secret-123456")
    assert named_values(spec, {"AOAI_BACKEND_KEY": "generic-9999"})[-1].value == "generic-9999"
    assert named_values(spec, {})[-1].value is None  # plan still works; apply must refuse


def test_backend_key_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOAI_BACKEND_KEY", "from-the-environment")
    assert named_values(spec_with(_key_auth))[-1].value == "from-the-environment"


def test_backend_key_from_key_vault() -> None:
    secret_id = "https://kv-aoai.vault.azure.net/secrets/aoai-key"

    def change(d: dict[str, Any]) -> None:
        d["backends"][0].update(auth="key", key_vault_secret_id=secret_id)

    key = named_values(spec_with(change), {"AOAI_BACKEND_KEY": "ignored"})[-1]
    assert (key.value, key.secret, key.key_vault_secret_id) == (None, True, secret_id)


def test_backends_sharing_a_key_name_must_agree() -> None:
    def change(d: dict[str, Any]) -> None:
        d["backends"][0]["auth"] = "key"
        d["backends"].append({**EUS, "key_named_value": "aoai-backend-key"})

    spec = spec_with(change)
    same = named_values(spec, {"AOAI_BACKEND_KEY": "one-key-for-both"})
    assert [nv.id for nv in same if nv.secret] == ["aoai-backend-key"]
    with pytest.raises(ConfigError, match="aoai-weu, aoai-eus"):
        named_values(
            spec, {"AOAI_BACKEND_KEY_AOAI_WEU": "a-key", "AOAI_BACKEND_KEY_AOAI_EUS": "b-key"}
        )


def test_named_value_repr_masks_secrets() -> None:
    secret = NamedValue("k", "k", "supersecretvalue-abcd", True)
    assert "supersecret" not in repr(secret) and "****abcd" in repr(secret)
    assert "passthrough" in repr(NamedValue("m", "m", "passthrough", False))


def test_policy_settings_are_the_spec_capture() -> None:
    settings = policy_settings(spec_with(_buffered))
    assert settings == PolicySettings("buffered", SAMPLE_VERSIONS, False)
    with pytest.raises(AttributeError):
        settings.payload = True  # type: ignore[misc]


# --- policy_fields and the committed copies ---------------------------------------------------------


def test_policy_fields_rejects_events_it_cannot_read() -> None:
    event = (
        '<log-to-eventhub logger-id="l">@{{ return new JObject({}).ToString(); }}</log-to-eventhub>'
    )
    one = (
        "<policies><outbound>"
        + event.format('new JProperty("A", 1), new JProperty("B", f(",")))')
        + "</outbound></policies>"
    )
    assert policy_fields(one) == ["A", "B"]
    two = one.replace(
        "</outbound>",
        "</outbound><on-error>" + event.format('new JProperty("A", 1)') + "</on-error>",
    )
    with pytest.raises(ConfigError, match="different fields"):
        policy_fields(two)
    with pytest.raises(ConfigError, match="JProperty"):
        policy_fields(one.replace('new JProperty("B"', "extra("))
    with pytest.raises(ConfigError, match="no log-to-eventhub"):
        policy_fields("<policies><inbound /></policies>")


@pytest.mark.parametrize("name", ["api-policy.xml", "product-policy.xml"])
def test_committed_policies_are_the_package_templates(name: str) -> None:
    packaged = ROOT / "aoai_helpers" / "azure" / "apim" / "templates" / name
    assert (ROOT / "policies" / name).read_bytes() == packaged.read_bytes(), (
        f"policies/{name} differs from the package template: cp {packaged.relative_to(ROOT)} policies/"
    )
    assert policy.template(name) == packaged.read_text("utf-8")  # type: ignore[arg-type]


# --- the policy's expressions, compiled and run as C# 7 --------------------------------------------
#
# Every expression of the rendered API policy becomes one method of a C# program (named values
# read from the job at run time) compiled with Mono's ``mcs -langversion:7`` and run on jobs: the
# inbound pipeline, the result, the event, the include_usage decision and the usage-chunk removal.
# Twice where possible: against the minimal Json.NET stand-ins below, and against the real
# Newtonsoft.Json where it is installed (Debian's libnewtonsoft-json5.0-cil: Json.NET 6.0.8;
# APIM's own version is not documented, see policies/README.md).

_CS_JSON = r"""
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;

namespace Newtonsoft.Json
{
    public enum Formatting { None, Indented }
    public class JsonReaderException : Exception { public JsonReaderException(string m) : base(m) { } }
}

namespace Newtonsoft.Json.Linq
{
    using Newtonsoft.Json;

    // What the policy uses of Json.NET 13, with its semantics where they matter: a token added
    // to a second parent is cloned, replacing a property's value detaches the old one, parsing
    // keeps the last of duplicate keys at the first's place, strings are written with Json.NET's
    // escapes (control characters, quote, backslash, U+0085, U+2028, U+2029). Not modelled:
    // date parsing (no test string looks like a date) and MaxDepth (the policy checks depth
    // before parsing).
    public enum JTokenType { None, Object, Array, Constructor, Property, Comment, Integer, Float, String, Boolean, Null, Undefined, Date, Raw, Bytes, Guid, Uri, TimeSpan }

    public abstract class JToken
    {
        public JContainer Parent { get; internal set; }
        public abstract JTokenType Type { get; }
        public abstract JToken DeepClone();
        internal abstract void Write(StringBuilder sb);
        public virtual bool HasValues { get { return false; } }
        public virtual JToken this[object key]
        {
            get { throw new InvalidOperationException("Cannot access child value on " + GetType().Name); }
            set { throw new InvalidOperationException("Cannot set child value on " + GetType().Name); }
        }
        public string ToString(Formatting formatting) { var sb = new StringBuilder(); Write(sb); return sb.ToString(); }
        public override string ToString() { return ToString(Formatting.Indented); }

        public JToken SelectToken(string path)
        {
            JToken node = this;
            foreach (string part in path.Split('.'))
            {
                JObject o = node as JObject;
                node = o == null ? null : o[part];
                if (node == null) { return null; }
            }
            return node;
        }

        static JValue V(JToken t) { JValue v = t as JValue; if (v == null) { throw new ArgumentException("Can not convert " + (t == null ? "null" : t.Type.ToString())); } return v; }
        public static explicit operator bool(JToken t) { return Convert.ToBoolean(V(t).Value, CultureInfo.InvariantCulture); }
        public static explicit operator long(JToken t) { return Convert.ToInt64(V(t).Value, CultureInfo.InvariantCulture); }
        public static explicit operator int(JToken t) { return Convert.ToInt32(V(t).Value, CultureInfo.InvariantCulture); }
        public static explicit operator double(JToken t) { return Convert.ToDouble(V(t).Value, CultureInfo.InvariantCulture); }
        public static explicit operator string(JToken t)
        {
            if (t == null) { return null; }
            object v = V(t).Value;
            return v == null ? null : v as string ?? Convert.ToString(v, CultureInfo.InvariantCulture);
        }
        public static implicit operator JToken(bool b) { return new JValue(b); }
        public static implicit operator JToken(string s) { return new JValue(s); }
        public static implicit operator JToken(long n) { return new JValue(n); }

        internal static void Quote(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        if (c < ' ' || c == '\u0085' || c == '\u2028' || c == '\u2029') { sb.Append("\\u").Append(((int)c).ToString("x4")); }
                        else { sb.Append(c); }
                        break;
                }
            }
            sb.Append('"');
        }
    }

    public abstract class JContainer : JToken, IEnumerable<JToken>
    {
        internal readonly List<JToken> Items = new List<JToken>();
        public IEnumerator<JToken> GetEnumerator() { return Items.GetEnumerator(); }
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() { return Items.GetEnumerator(); }
        public int Count { get { return Items.Count; } }
        public override bool HasValues { get { return Items.Count > 0; } }
        public IEnumerable<JToken> Descendants()
        {
            foreach (JToken child in Items)  // a live enumeration, as Json.NET's
            {
                yield return child;
                JContainer c = child as JContainer;
                if (c != null) { foreach (JToken d in c.Descendants()) { yield return d; } }
            }
        }
        internal JToken Own(JToken item)
        {
            if (item == null) { item = new JValue((object)null); }
            if (item.Parent != null) { item = item.DeepClone(); }
            item.Parent = this;
            return item;
        }
        internal static JToken FromContent(object content) { return content as JToken ?? new JValue(content); }
    }

    public class JValue : JToken
    {
        object value;
        JTokenType type;
        public JValue(object value) { Value = value; }
        public JValue(string value) { Value = value; }
        public JValue(long value) { Value = value; }
        public JValue(bool value) { Value = value; }
        internal JValue(object value, JTokenType type) { this.value = value; this.type = type; }
        public override JTokenType Type { get { return type; } }
        public object Value
        {
            get { return value; }
            set
            {
                object v = value is int ? (long)(int)value : value;
                this.value = v;
                type = v == null ? JTokenType.Null : v is string ? JTokenType.String : v is bool ? JTokenType.Boolean
                    : v is long ? JTokenType.Integer : v is double ? JTokenType.Float : v is DateTime ? JTokenType.Date : JTokenType.Raw;
            }
        }
        public override JToken DeepClone() { return new JValue(value, type); }
        internal override void Write(StringBuilder sb)
        {
            switch (type)
            {
                case JTokenType.Null: sb.Append("null"); break;
                case JTokenType.Boolean: sb.Append((bool)value ? "true" : "false"); break;
                case JTokenType.Integer: sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
                case JTokenType.Float:
                    string r = ((double)value).ToString("R", CultureInfo.InvariantCulture);
                    sb.Append(r.IndexOfAny(new[] { '.', 'E', 'e', 'N', 'I' }) >= 0 ? r : r + ".0");
                    break;
                case JTokenType.String: Quote(sb, (string)value); break;
                default: Quote(sb, Convert.ToString(value, CultureInfo.InvariantCulture)); break;
            }
        }
    }

    public class JProperty : JContainer
    {
        public string Name { get; private set; }
        public JProperty(string name, object content) { Name = name; Value = FromContent(content); }
        public JProperty(string name, params object[] content) { Name = name; Value = content == null ? null : FromContent(content.Length == 1 ? content[0] : new JArray(content)); }
        public override JTokenType Type { get { return JTokenType.Property; } }
        public JToken Value
        {
            get { return Items.Count > 0 ? Items[0] : null; }
            set
            {
                JToken v = Own(value);
                if (Items.Count > 0) { Items[0].Parent = null; Items[0] = v; } else { Items.Add(v); }
            }
        }
        public override JToken DeepClone() { return new JProperty(Name, Value.DeepClone()); }
        internal override void Write(StringBuilder sb) { Quote(sb, Name); sb.Append(':'); Value.Write(sb); }
    }

    public class JArray : JContainer
    {
        public JArray() { }
        public JArray(params object[] content) { foreach (object c in content) { Add(c); } }
        public override JTokenType Type { get { return JTokenType.Array; } }
        public void Add(object item) { Items.Add(Own(FromContent(item))); }
        public JToken this[int index] { get { return Items[index]; } }
        public override JToken this[object key] { get { return Items[(int)key]; } set { throw new NotSupportedException(); } }
        public override JToken DeepClone() { var a = new JArray(); foreach (JToken t in Items) { a.Add(t.DeepClone()); } return a; }
        internal override void Write(StringBuilder sb)
        {
            sb.Append('[');
            for (int i = 0; i < Items.Count; i++) { if (i > 0) { sb.Append(','); } Items[i].Write(sb); }
            sb.Append(']');
        }
    }

    public class JObject : JContainer
    {
        readonly Dictionary<string, JProperty> byName = new Dictionary<string, JProperty>();
        public JObject() { }
        public JObject(params object[] content) { foreach (object c in content) { Add((JProperty)c); } }
        public override JTokenType Type { get { return JTokenType.Object; } }
        public void Add(JProperty p)
        {
            if (Property(p.Name) != null) { throw new ArgumentException("Can not add property " + p.Name + " to Newtonsoft.Json.Linq.JObject. Property with the same name already exists on object."); }
            JProperty owned = (JProperty)Own(p);
            Items.Add(owned);
            byName[owned.Name] = owned;
        }
        public JProperty Property(string name) { JProperty p; return byName.TryGetValue(name, out p) ? p : null; }
        public IEnumerable<JProperty> Properties() { return Items.Cast<JProperty>(); }
        public JToken this[string name]
        {
            get { JProperty p = Property(name); return p == null ? null : p.Value; }
            set { JProperty p = Property(name); if (p != null) { p.Value = value; } else { Add(new JProperty(name, (object)value)); } }
        }
        public override JToken this[object key] { get { return this[(string)key]; } set { this[(string)key] = value; } }
        public override JToken DeepClone() { var o = new JObject(); foreach (JProperty p in Properties()) { o.Add((JProperty)p.DeepClone()); } return o; }
        internal override void Write(StringBuilder sb)
        {
            sb.Append('{');
            for (int i = 0; i < Items.Count; i++) { if (i > 0) { sb.Append(','); } Items[i].Write(sb); }
            sb.Append('}');
        }

        public static JObject Parse(string json)
        {
            int i = 0;
            JToken t = Value(json, ref i);
            Skip(json, ref i);
            if (i != json.Length) { throw new JsonReaderException("Additional text encountered after finished reading JSON content."); }
            JObject o = t as JObject;
            if (o == null) { throw new JsonReaderException("Error reading JObject from JsonReader."); }
            return o;
        }

        static void Skip(string s, ref int i) { while (i < s.Length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) { i++; } }
        static char At(string s, int i) { if (i >= s.Length) { throw new JsonReaderException("Unexpected end of content."); } return s[i]; }

        static JToken Value(string s, ref int i)
        {
            Skip(s, ref i);
            char c = At(s, i);
            if (c == '{')
            {
                var o = new JObject();
                i++; Skip(s, ref i);
                if (At(s, i) == '}') { i++; return o; }
                while (true)
                {
                    Skip(s, ref i);
                    if (At(s, i) != '"') { throw new JsonReaderException("Invalid property identifier."); }
                    string key = Str(s, ref i);
                    Skip(s, ref i);
                    if (At(s, i) != ':') { throw new JsonReaderException("Expected ':'."); }
                    i++;
                    JToken v = Value(s, ref i);
                    JProperty existing = o.Property(key);
                    if (existing != null) { existing.Value = v; } else { o.Add(new JProperty(key, (object)v)); }
                    Skip(s, ref i);
                    if (At(s, i) == ',') { i++; continue; }
                    if (At(s, i) == '}') { i++; return o; }
                    throw new JsonReaderException("Expected ',' or '}'.");
                }
            }
            if (c == '[')
            {
                var a = new JArray();
                i++; Skip(s, ref i);
                if (At(s, i) == ']') { i++; return a; }
                while (true)
                {
                    a.Add(Value(s, ref i));
                    Skip(s, ref i);
                    if (At(s, i) == ',') { i++; continue; }
                    if (At(s, i) == ']') { i++; return a; }
                    throw new JsonReaderException("Expected ',' or ']'.");
                }
            }
            if (c == '"') { return new JValue(Str(s, ref i)); }
            foreach (string word in new[] { "true", "false", "null" })
            {
                if (string.CompareOrdinal(s, i, word, 0, word.Length) == 0)
                {
                    i += word.Length;
                    return word == "null" ? new JValue((object)null) : new JValue(word == "true");
                }
            }
            int j = i;
            while (j < s.Length && "+-.eE0123456789".IndexOf(s[j]) >= 0) { j++; }
            if (j == i) { throw new JsonReaderException("Unexpected character: " + c); }
            string n = s.Substring(i, j - i);
            i = j;
            long l;
            if (n.IndexOfAny(new[] { '.', 'e', 'E' }) < 0)
            {
                return long.TryParse(n, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out l) ? new JValue(l) : new JValue(n, JTokenType.Integer);
            }
            return new JValue(double.Parse(n, NumberStyles.Float, CultureInfo.InvariantCulture));
        }

        static string Str(string s, ref int i)
        {
            var sb = new StringBuilder();
            i++;
            while (true)
            {
                char c = At(s, i++);
                if (c == '"') { return sb.ToString(); }
                if (c != '\\') { sb.Append(c); continue; }
                char e = At(s, i++);
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 'r': sb.Append('\r'); break;
                    case 't': sb.Append('\t'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u': sb.Append((char)int.Parse(s.Substring(i, 4), NumberStyles.HexNumber)); i += 4; break;
                    default: sb.Append(e); break;
                }
            }
        }
    }
}
"""

_CS_APIM = r"""
using System;
using System.Collections.Generic;

namespace Apim
{
    public class Query
    {
        public Dictionary<string, string> Values = new Dictionary<string, string>();
        public string GetValueOrDefault(string name, string fallback) { string v; return Values.TryGetValue(name, out v) ? v : fallback; }
    }
    public class Url { public string Path = ""; public Query Query = new Query(); }
    public class Body { public string Text; public T As<T>(bool preserveContent = false) where T : class { return Text as T; } }
    public class Headers
    {
        public Dictionary<string, string> Values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        public string GetValueOrDefault(string name, string fallback) { string v; return Values.TryGetValue(name, out v) ? v : fallback; }
    }
    public class Variables
    {
        public Dictionary<string, object> Values = new Dictionary<string, object>();
        public T GetValueOrDefault<T>(string name, T fallback) { object v; return Values.TryGetValue(name, out v) ? (T)v : fallback; }
    }
    public class Request { public Url Url = new Url(); public Url OriginalUrl = new Url(); public string Method = "POST"; public Body Body; public Headers Headers = new Headers(); }
    public class Response { public int StatusCode = 200; public Body Body = new Body(); public Headers Headers = new Headers(); }
    public class Deployment { public string Region = "West Europe"; public string ServiceName = "apim-aoai-gateway"; }
    public class Subscription { public string Id = "bu-finance"; public string Name = "Finance"; }
    public class Product { public string Name = "Azure OpenAI (charged back)"; }
    public class User { public string FirstName = "Ana"; public string LastName = "Silva"; public string Email = "ana.silva@contoso.com"; }
    public class Api { public string Name = "Azure OpenAI"; }
    public class Operation { public string Id = "ChatCompletions_Create"; }
    public class LastError { public string Source = "forward-request"; public string Reason = null; public string Message = "multiple"; public string Scope = "api"; public string Section = "backend"; public string Path = null; public string PolicyId = null; }
    public class Context
    {
        public Request Request = new Request();
        public Response Response = new Response();
        public Variables Variables = new Variables();
        public Guid RequestId = new Guid("00000000-0000-4000-8000-000000000001");
        public DateTime Timestamp = new DateTime(2025, 1, 2, 3, 4, 5, 678, DateTimeKind.Utc);
        public Deployment Deployment = new Deployment();
        public Subscription Subscription = new Subscription();
        public Product Product = new Product();
        public User User = new User();
        public Api Api = new Api();
        public Operation Operation = new Operation();
        public LastError LastError = new LastError();
    }
}
"""

# The program: METHODS are the policy's expressions (static object E<i>(Context context)); a job
# (one JSON object per line) names the expressions to run in order ("run"), the variable each
# result is stored in, and the context (URLs, method, body, response, variables, named values).
_CS_PROGRAM = r"""
USINGS
using System.IO;
using Apim;

public static class Program
{
    static Dictionary<string, string> named = new Dictionary<string, string>();
    public static string NV(string name) { return named[name]; }
    public static string ApiPath = "/openai";

METHODS

    static object Run(int index, Context context)
    {
        switch (index)
        {
CASES
            default: throw new ArgumentException("no expression " + index);
        }
    }

    static object Plain(JToken t)
    {
        if (t == null || t.Type == JTokenType.Null) { return null; }
        if (t.Type == JTokenType.Boolean) { return (bool)t; }
        if (t.Type == JTokenType.Integer) { return (int)t; }
        return (string)t;
    }

    static string Kind(Exception e)
    {
        string s = e.ToString();
        int end = 0;
        while (end < s.Length && (char.IsLetterOrDigit(s[end]) || s[end] == '.' || s[end] == '_')) { end++; }
        s = s.Substring(0, end);
        return s.Substring(s.LastIndexOf('.') + 1);
    }

    public static int Main(string[] args)
    {
        var output = new StringBuilder();
        foreach (string line in File.ReadAllLines(args[0], new UTF8Encoding(false)))
        {
            if (line.Length == 0) { continue; }
            JObject job = JObject.Parse(line);
            named.Clear();
            foreach (JProperty p in ((JObject)job["named"]).Properties()) { named[p.Name] = (string)p.Value; }
            ApiPath = (string)job["api_path"] ?? "/openai";
            var c = new Context();
            c.Request.Method = (string)job["method"] ?? "POST";
            c.Request.Url.Path = (string)job["url"] ?? "/";
            c.Request.OriginalUrl.Path = (string)job["original"] ?? c.Request.Url.Path;
            string version = (string)job["api_version"];
            if (version != null) { c.Request.Url.Query.Values["api-version"] = version; c.Request.OriginalUrl.Query.Values["api-version"] = version; }
            string body = (string)job["body"];
            if (body != null) { c.Request.Body = new Body { Text = body }; }
            JObject response = job["response"] as JObject;
            if (response != null)
            {
                c.Response.StatusCode = (int)response["status"];
                c.Response.Headers.Values["Content-Type"] = (string)response["content_type"];
                c.Response.Body.Text = (string)response["body"];
            }
            if (job["no_response"] != null && (bool)job["no_response"]) { c.Response = null; }
            JObject error = job["last_error"] as JObject;
            if (error != null)
            {
                c.LastError.Section = (string)error["section"];
                c.LastError.Reason = (string)error["reason"];
                c.LastError.Source = (string)error["source"];
            }
            if (job["no_error"] != null && (bool)job["no_error"]) { c.LastError = null; }
            JToken user = job["user"];
            if (user != null && user.Type == JTokenType.Null) { c.User = null; }
            else if (user != null) { c.User.FirstName = (string)user["first"]; c.User.LastName = (string)user["last"]; c.User.Email = (string)user["email"]; }
            JObject variables = job["variables"] as JObject;
            if (variables != null) { foreach (JProperty p in variables.Properties()) { c.Variables.Values[p.Name] = Plain(p.Value); } }
            var results = new JArray();
            foreach (JToken step in (JArray)job["run"])
            {
                int index = (int)step[0];
                string store = (string)step[1];
                object value;
                try { value = Run(index, c); }
                catch (Exception e) { results.Add(new JObject(new JProperty("error", Kind(e)))); break; }
                if (store != null) { c.Variables.Values[store] = value; }
                results.Add(value is bool ? new JValue((bool)value) : value is int ? new JValue((long)(int)value) : new JValue((string)value));
            }
            var vars = new JObject();
            foreach (var kv in c.Variables.Values)
            {
                object v = kv.Value;
                vars.Add(new JProperty(kv.Key, v is bool ? new JValue((bool)v) : v is int ? new JValue((long)(int)v) : new JValue((string)v)));
            }
            output.Append(new JObject(new JProperty("results", results), new JProperty("variables", vars)).ToString(Newtonsoft.Json.Formatting.None)).Append('\n');
        }
        File.WriteAllText(args[1], output.ToString(), new UTF8Encoding(false));
        return 0;
    }
}
"""

#: The namespaces APIM may import for policy expressions (which ones it does is undocumented:
#: research notes 5b): all of them are in scope, so an ambiguous name such as ``Formatting``
#: (System.Xml.Formatting vs Newtonsoft.Json.Formatting) fails the compilation (CS0104).
CS_USINGS = "\n".join(
    f"using {ns};"
    for ns in (
        "System",
        "System.Collections.Generic",
        "System.Linq",
        "System.Text",
        "System.Text.RegularExpressions",
        "System.Xml",
        "System.Xml.Linq",
        "Newtonsoft.Json",
        "Newtonsoft.Json.Linq",
    )
)
#: The assemblies those namespaces live in (Mono's mcs names them explicitly).
CS_REFERENCES = ["-r:System.Xml.dll", "-r:System.Xml.Linq.dll", "-r:System.Core.dll"]
_NEWTONSOFT = sorted(Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll"))
_NAMED_IN_CODE = re.compile(r"\{\{([^{}]+)\}\}")


def _cs_method_body(expression: str) -> str:
    """A policy expression as the body of ``static object E(Context context)``: named values
    read from the job (inside C# string literals, where the policy has them), the API path too."""
    code = expression.strip()
    code = _NAMED_IN_CODE.sub(lambda m: '" + Program.NV("' + m.group(1) + '") + "', code)
    code = code.replace('string apiPath = "/openai";', "string apiPath = Program.ApiPath;")
    return f"return {code[1:]};" if code.startswith("@(") else code[2:-1]


def _roles(root: ET.Element) -> dict[str, ET.Element]:
    """The elements whose expressions the tests run, by role."""
    inbound, outbound, on_error = (root.find(s) for s in ("inbound", "outbound", "on-error"))
    assert inbound is not None and outbound is not None and on_error is not None
    inject = next(e for e in inbound.iter("set-variable") if e.get("name") == "aoai-usage-body")
    strip = next(w for w in outbound.iter("when") if w.find("set-body") is not None)
    refuse = next(w for w in inbound.iter("when") if w.find("return-response") is not None)
    result = next(e for e in outbound.iter("set-variable") if e.get("name") == "aoai-result")
    log = outbound.find("log-to-eventhub")
    assert log is not None
    status = next(e for e in on_error.iter("set-variable") if e.get("name") == "aoai-status")
    answer = next(e for e in on_error.iter("set-variable") if e.get("name") == "aoai-error-answer")
    reply = on_error.find("choose/when/return-response")
    assert reply is not None
    return {
        "inject": inject,
        "strip": strip,
        "refuse": refuse,
        "result": result,
        "event": log,
        "error-status": status,
        "error-answer": answer,
        "error-code": reply.find("set-status"),  # type: ignore[dict-item]
        "error-body": reply.find("set-body"),  # type: ignore[dict-item]
    }


class CSharp:
    """The policy's expressions, compiled, and a runner for jobs."""

    def __init__(self, exe: Path, mono: str, index: dict[str, int], inbound: list[tuple[str, int]]):
        self.exe, self.mono, self.index, self.inbound = exe, mono, index, inbound

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        work = self.exe.parent
        (work / "jobs.jsonl").write_text(
            "".join(json.dumps(j, ensure_ascii=False) + "\n" for j in jobs), "utf-8"
        )
        ran = subprocess.run(
            [self.mono, str(self.exe), "jobs.jsonl", "out.jsonl"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        lines = (work / "out.jsonl").read_text("utf-8").splitlines()
        assert len(lines) == len(jobs)
        return [json.loads(line) for line in lines]

    def job(self, run: list[str], **context: Any) -> dict[str, Any]:
        """A job running the expressions named in ``run`` (``inbound`` is the whole inbound
        description, in the template's order, each stored in its variable)."""
        steps: list[list[Any]] = []
        for role in run:
            if role == "inbound":
                steps += [[i, name] for name, i in self.inbound]
            else:  # results are kept where the policy keeps them (the event reads them)
                steps.append([self.index[role], _STORES.get(role)])
        named = {**NAMED, **context.pop("named", {})}
        return {"run": steps, "named": named, **context}


#: The variable each role's result is stored in.
_STORES = {
    "result": "aoai-result",
    "inject": "aoai-usage-body",
    "error-status": "aoai-status",
    "error-answer": "aoai-error-answer",
}


def _sse(*events: str, newline: str = "\n") -> str:
    return "".join(e.replace("\n", newline) + newline + newline for e in events)


def _chunk(choices: list[Any], usage: Any = "absent", **extra: Any) -> str:
    body: dict[str, Any] = {"id": "chatcmpl-1", "model": "gpt-4o-2024-11-20", "choices": choices}
    body.update(extra)
    if usage != "absent":
        body["usage"] = usage
    return "data: " + json.dumps(body, ensure_ascii=False)


_PREAMBLE = _chunk([], prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {}}])
_DELTA = _chunk([{"index": 0, "delta": {"content": 'Hé… "quoted" {braces}'}}], usage=None)
_USAGE = _chunk([], usage={"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})
STREAMS = {
    "lf": _sse(_PREAMBLE, _DELTA, _USAGE, "data: [DONE]"),
    "crlf": _sse(_PREAMBLE, _DELTA, _USAGE, "data: [DONE]", newline="\r\n"),
    "cr": _sse(_DELTA, _USAGE, "data: [DONE]", newline="\r"),
    "comments-and-event-lines": _sse(
        ": keep-alive", _DELTA, "event: chunk\n" + _USAGE, "data: [DONE]"
    ),
    "no-final-newline": _sse(_DELTA) + _USAGE,
    "no-usage-chunk": _sse(_PREAMBLE, _DELTA, "data: [DONE]"),
    "usage-split-over-data-lines": _sse(
        _DELTA, 'data: {"choices": [],\ndata: "usage": {"total_tokens": 1}}', "data: [DONE]"
    ),
    "whitespace-blank-lines": _DELTA + "\n  \n" + _USAGE + "\n\t\ndata: [DONE]\n",
}


#: Named values as the sample spec sets them (jobs override some).
NAMED: dict[str, str] = {nv.display_name: nv.value or "" for nv in named_values(spec_with(), {})}


@pytest.fixture(scope="module", params=["stand-ins", "Json.NET"])
def csharp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CSharp:
    """Every expression of the rendered API policy compiled (mcs -langversion:7), runnable."""
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        reason = "no Mono C# compiler (mcs, mono): apt-get install mono-mcs"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason} (.ci/run installs it)")
        pytest.skip(reason)
    real = request.param == "Json.NET"
    if real and not _NEWTONSOFT:
        reason = "no Newtonsoft.Json for Mono: apt-get install libnewtonsoft-json5.0-cil"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason} (.ci/run installs it)")
        pytest.skip(reason)
    root = ET.fromstring(render_api_policy(spec_with(_two_backends)))
    methods, cases, index = [], [], {}
    elements: dict[int, ET.Element] = {}
    for i, (element, code) in enumerate(
        (el, value)
        for el in root.iter()
        for value in [*el.attrib.values(), el.text or ""]
        if value.strip().startswith(("@(", "@{"))
    ):
        methods.append(
            f"    static object E{i}(Context context) {{\n{_cs_method_body(code)}\n    }}"
        )
        cases.append(f"            case {i}: return E{i}(context);")
        elements[i] = element
    by_element: dict[int, int] = {}
    for i, el in elements.items():  # an element's first expression (set-status: its code)
        by_element.setdefault(id(el), i)
    roles = _roles(root)
    index["inject"] = by_element[id(roles["inject"])]
    for role in ("error-status", "error-answer", "error-code", "error-body"):
        index[role] = by_element[id(roles[role])]
    index["strip"] = by_element[id(roles["strip"])]
    index["strip-body"] = next(
        i for i, el in elements.items() if el is roles["strip"].find("set-body")
    )
    index["refuse"] = by_element[id(roles["refuse"])]
    index["result"] = by_element[id(roles["result"])]
    index["event"] = by_element[id(roles["event"])]
    inbound = root.find("inbound")
    assert inbound is not None
    described = []
    for el in inbound:
        if el.tag == "base":
            break
        if el.tag == "set-variable":
            described.append((el.get("name", ""), by_element[id(el)]))
    program = (
        _CS_PROGRAM.replace("USINGS", CS_USINGS)
        .replace("METHODS", "\n".join(methods))
        .replace("CASES", "\n".join(cases))
    )
    work = tmp_path_factory.mktemp("csharp-" + request.param.replace(".", "").lower())
    (work / "program.cs").write_text(program, "utf-8")
    (work / "apim.cs").write_text(_CS_APIM, "utf-8")
    sources = ["program.cs", "apim.cs"]
    if real:
        references = [f"-r:{_NEWTONSOFT[-1]}"]
        shutil.copy(_NEWTONSOFT[-1], work / "Newtonsoft.Json.dll")
    else:
        (work / "json.cs").write_text(_CS_JSON, "utf-8")
        sources.append("json.cs")
        references = []
    built = subprocess.run(
        [
            mcs,
            "-langversion:7",
            "-nologo",
            "-warnaserror-",
            "-out:policy.exe",
            *CS_REFERENCES,
            *references,
            *sources,
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return CSharp(work / "policy.exe", mono, index, described)


CHAT = "/openai/deployments/gpt-4o/chat/completions"
BODY = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
#: Paths as they arrive: attacks on the billing (operation or deployment not what is served,
#: other backend paths with the gateway's credential), unmetered operations, and the operations.
PATHS: list[tuple[str, str]] = [
    ("POST", f"{CHAT}/."),
    ("POST", f"{CHAT}/x/.."),
    ("POST", f"{CHAT}%23x"),
    ("POST", "/openai/deployments/gpt-4o-mini/../gpt-4.1/chat/completions"),
    ("POST", "/openai/../internal"),
    ("POST", "/openai/deployments/%2e%2e/chat/completions"),
    ("POST", "/openai/deployments/%2E/chat/completions"),
    ("POST", "/openai/deployments/gpt-4o%2Fchat/completions"),
    ("POST", "/openai/deployments/gpt-4o/chat%2fcompletions"),
    ("POST", "/openai//deployments/gpt-4o/chat/completions"),
    ("POST", f"{CHAT}/"),
    ("POST", "/openai/deployments/.hidden/chat/completions"),
    ("POST", "/openai/v1/chat/completions%23x"),
    ("POST", "/openai/deployments/gpt-4o\\..\\gpt-4.1/chat/completions"),
    ("POST", f"{CHAT}\n"),
    ("POST", "/openai/deployments/gpt 4o/chat/completions"),
    ("POST", "/openai/deployments/gpt-4o;x=1/chat/completions"),
    ("POST", "/openai/deployments/a/b/chat/completions"),
    ("POST", "/openai/deployments/" + "d" * 65 + "/chat/completions"),
    ("POST", "/openai/files"),
    ("POST", "/openai/v1/files/file-1/content"),
    ("POST", "/openai/deployments/x/images/generations"),
    ("POST", "/openai/v1/audio/speech"),
    ("POST", "/openai/deployments/whisper/audio/transcriptions"),
    ("POST", "/openai/realtime"),
    ("POST", "/openai/v1/threads/t1/runs"),
    ("POST", "/openai/batches"),
    ("POST", "/openai/v1/models"),
    ("POST", "/openai/v1/chat/completions/extra"),
    ("POST", "/openai/responses/resp_1"),
    ("POST", "/openai"),
    ("POST", "/openaix/deployments/gpt-4o/chat/completions"),
    ("GET", CHAT),
    ("DELETE", "/openai/files/file-1"),
    ("post", CHAT),
    ("POST", CHAT),
    ("POST", "/openai/deployments/gpt-4o-mini/completions"),
    ("POST", "/openai/deployments/text-embedding-3-small/embeddings"),
    ("POST", "/openai/deployments/my_dep~1.v2/chat/completions"),
    ("POST", "/openai/responses"),
    ("POST", "/openai/v1/responses"),
    ("POST", "/openai/v1/chat/completions"),
    ("POST", "/openai/v1/completions"),
    ("POST", "/openai/v1/embeddings"),
]
ALLOWED = [frozenset(), frozenset({"images", "audio", "files", "realtime"})]


def _allow(allowed: frozenset[str]) -> dict[str, str]:
    return {"aoai-allow-unmetered": ",".join(sorted(allowed)) or "none"}


def test_the_route_table_is_rendered_from_routes() -> None:
    table = policy.route_table("openai")
    from aoai_helpers.core import routes

    for pattern, operation in routes.METERED:
        assert f'@"{policy._dotnet_regex(pattern.pattern)}", "{operation}"' in table
    for name, pattern in routes.UNMETERED.items():
        assert f'"{name}", @"{policy._dotnet_regex(pattern.pattern)}"' in table
    assert policy._dotnet_regex("^/a/(?P<d>x)$") == "\\A/a/(?<d>x)\\z"
    with pytest.raises(ConfigError):
        policy._dotnet_regex("/a$")
    assert 'string apiPath = "/openai";' in table
    assert 'string apiPath = "";' in policy.route_table("/")
    assert 'string apiPath = "/gw/aoai";' in policy.route_table("/gw/aoai/")


def test_compiled_classifier_matches_routes(csharp: CSharp) -> None:
    cases = [(m, p, a) for a in ALLOWED for m, p in PATHS]
    jobs = [
        csharp.job(["inbound", "refuse"], method=m, url=p, body=BODY, named=_allow(a))
        for m, p, a in cases
    ]
    for (method, path, allowed), out in zip(cases, csharp.run(jobs), strict=True):
        where = f"{method} {path!r} allow={sorted(allowed)}"
        assert not any(isinstance(r, dict) for r in out["results"]), (where, out["results"])
        got = out["variables"]
        route = json.loads(got["aoai-route"])
        want = classify(method, path, allowed)
        refused = out["results"][-1]
        if isinstance(want, Refusal):
            assert (route["status"], route["message"]) == (want.status, want.message), where
            assert json.loads(got["aoai-refusal"]) == {
                "statusCode": want.status,
                "message": want.message,
            }, where
            assert refused is True and got["aoai-operation"] == "other", where
            continue
        assert route["status"] == 0 and refused is False and got["aoai-refusal"] == "", where
        assert (route["operation"], route["v1"], route["deployment"], route["unmetered"]) == (
            want.operation,
            want.v1,
            want.deployment,
            want.unmetered,
        ), where
        unmetered = want.operation == "unmetered"
        assert got["aoai-operation"] == ("other" if unmetered else want.operation), where
        assert got["aoai-v1"] is want.v1, where
        # the deployment: the path's, else the body's model (never read for unmetered calls)
        model = "" if unmetered else "gpt-4.1"
        assert got["aoai-deployment"] == (want.deployment or model), where
        assert got["aoai-request"] == (
            "" if unmetered else json.dumps(json.loads(BODY), separators=(",", ":"))
        ), where


def test_compiled_classifier_refuses_when_the_two_urls_disagree(csharp: CSharp) -> None:
    normalised = "/openai/deployments/gpt-4.1/chat/completions"
    cases = [
        # the backend URL normalised, the received one not canonical
        ("/openai", normalised, "/openai/deployments/gpt-4o-mini/../gpt-4.1/chat/completions", 400),
        (
            "/openai",
            normalised,
            "/openai/deployments/gpt-4o-mini/%2e%2e/gpt-4.1/chat/completions",
            400,
        ),
        # both canonical, different operations or deployments
        ("/openai", normalised, "/openai/deployments/gpt-4o-mini/chat/completions", 400),
        ("/openai", CHAT, "/openai/deployments/gpt-4o/embeddings", 400),
        # an API path of its own: /aoai/… in front, /openai/… to the backend
        ("/aoai", CHAT, "/aoai/deployments/gpt-4o/chat/completions", 0),
        ("/aoai", CHAT, "/AOAI/deployments/gpt-4o/chat/completions", 0),
        ("/aoai", CHAT, "/aoai/deployments/gpt-4o/x/../chat/completions", 400),
        ("/aoai", CHAT, "/aoai/deployments/gpt-4o-mini/chat/completions", 400),
        ("", CHAT, "/deployments/gpt-4o/chat/completions", 0),
    ]
    jobs = [
        csharp.job(["inbound"], api_path=api, url=url, original=original, body=BODY)
        for api, url, original, _ in cases
    ]
    for (api, url, original, status), out in zip(cases, csharp.run(jobs), strict=True):
        route = json.loads(out["variables"]["aoai-route"])
        assert route["status"] == status, (api, url, original, route)
        if status == 0:
            assert (route["operation"], route["deployment"]) == ("chat", "gpt-4o")


def _nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` containers deep (the body itself is the first)."""
    node: Any = "leaf"
    for _ in range(depth - 1):
        node = [node]
    return {"messages": node}


def test_nested_helper_depth() -> None:
    def depth(node: Any) -> int:
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return 1 + max((depth(v) for v in node), default=0)
        return 0

    assert [depth(_nested(n)) for n in (1, 2, 3, 64, 65)] == [1, 2, 3, 64, 65]


NOT_AN_OBJECT = "Bad request: the body must be a JSON object."
TOO_DEEP = "Bad request: the JSON body is nested deeper than 64 levels."
TWICE = "Bad request: a key appears more than once in an object of the JSON body."
BODIES: list[tuple[str, str | None, str | None]] = [
    # (why, body, refusal message or None: forwarded)
    ("an object", BODY, None),
    ("empty object", "{}", None),
    ("depth 64", json.dumps(_nested(64)), None),
    ("depth 65", json.dumps(_nested(65)), TOO_DEEP),
    ("depth 65, then invalid", json.dumps(_nested(65))[:-1], TOO_DEEP),
    ("brackets and colons in strings", json.dumps({"messages": [{"content": '{[:"\\]}'}]}), None),
    ("an array", "[1, 2]", NOT_AN_OBJECT),
    ("a string", '"hi"', NOT_AN_OBJECT),
    ("not JSON", "model=gpt-4o", NOT_AN_OBJECT),
    ("empty", "", NOT_AN_OBJECT),
    ("no body", None, NOT_AN_OBJECT),
    ("truncated", '{"messages": [', NOT_AN_OBJECT),
    ("trailing text", '{"model": "a"} {"model": "b"}', NOT_AN_OBJECT),
    ("duplicate key", '{"model": "gpt-4o-mini", "model": "gpt-4.1"}', TWICE),
    ("duplicate nested key", '{"messages": [{"role": "user", "role": "system"}]}', TWICE),
    ("duplicate stream", '{"stream": false, "stream": true}', TWICE),
]


def test_compiled_body_checks(csharp: CSharp) -> None:
    jobs = [
        csharp.job(["inbound", "refuse"], url="/openai/v1/chat/completions", body=body)
        for _, body, _ in BODIES
    ]
    # a lower limit from the named value
    jobs.append(
        csharp.job(
            ["inbound", "refuse"],
            url=CHAT,
            body=json.dumps(_nested(9)),
            named={"aoai-max-json-depth": "8"},
        )
    )
    expected = [*BODIES, ("depth 9 > 8", "", TOO_DEEP.replace("64", "8"))]
    for (why, body, refused), out in zip(expected, csharp.run(jobs), strict=True):
        got = out["variables"]
        assert out["results"][-1] is (refused is not None), why
        if refused is None:
            assert got["aoai-refusal"] == "" and got["aoai-request"] == json.dumps(
                json.loads(body or ""), separators=(",", ":"), ensure_ascii=False
            ), why
        else:
            refusal = json.loads(got["aoai-refusal"])
            assert refusal == {"statusCode": 400, "message": refused}, why
            assert got["aoai-request"] == "", why
    # unmetered (allowed) calls are forwarded unread, multipart or not
    out = csharp.run(
        [
            csharp.job(
                ["inbound", "refuse"],
                url="/openai/deployments/whisper/audio/transcriptions",
                body="--boundary\r\nContent-Disposition: form-data; name=file\r\n\r\n...",
                named=_allow(frozenset({"audio"})),
            )
        ]
    )[0]
    assert out["results"][-1] is False and out["variables"]["aoai-request"] == ""
    assert out["variables"]["aoai-operation"] == "other"
    assert out["variables"]["aoai-deployment"] == "whisper"


VERSIONS = [
    None,
    "",
    "2023-05-15",
    "2024-06-01",
    "2024-08-01-preview",
    "2024-09-01-preview",
    "2024-10-21",
    "2025-04-01-preview",
    "2024-9-1",
    "2024/10/21",
    "preview",
    "none",
    "2024-10-21,2023-05-15",
]
SETTINGS = [
    ("2024-10-21,2025-01-01-preview", "2024-09-01-preview"),
    ("none", "2025-03-01-preview"),
    ("2023-05-15", "2030-01-01"),
]


def test_compiled_include_usage_acceptance_is_policy_settings(csharp: CSharp) -> None:
    cases = [(v, v1, s) for s in SETTINGS for v1 in (False, True) for v in VERSIONS]
    jobs = [
        csharp.job(
            ["inbound"],
            url="/openai/v1/chat/completions" if v1 else CHAT,
            api_version=version,
            body=BODY,
            named={"aoai-include-usage-api-versions": listed, "aoai-include-usage-from": start},
        )
        for version, v1, (listed, start) in cases
    ]
    for (version, v1, (listed, start)), out in zip(cases, csharp.run(jobs), strict=True):
        settings = PolicySettings(
            "buffered",
            () if listed == "none" else tuple(listed.split(",")),
            False,
            include_usage_from=start,
        )
        want = settings.accepts_include_usage(version, v1)
        assert out["variables"]["aoai-usage-accepted"] is want, (version, v1, listed, start)


def _asked(asked: bool) -> str:
    return json.dumps(
        {"stream": True, "stream_options": {"include_usage": True}} if asked else {"stream": True}
    )


def test_compiled_include_usage_decision_per_capture_mode(csharp: CSharp) -> None:
    cases = [
        (mode, asked, accepted)
        for mode in ("passthrough", "buffered", "passthrough_usage")
        for asked in (False, True)
        for accepted in (False, True)
    ]
    jobs = [
        csharp.job(
            ["inject"],
            named={"aoai-capture-streaming": mode},
            variables={
                "aoai-streaming": True,
                "aoai-operation": "chat",
                "aoai-usage-accepted": accepted,
                "aoai-request": _asked(asked),
            },
            body=_asked(asked),
        )
        for mode, asked, accepted in cases
    ]
    for (mode, asked, accepted), out in zip(cases, csharp.run(jobs), strict=True):
        # injected in buffered and passthrough_usage capture, for accepting api-versions,
        # unless the caller asked itself (then nothing is injected, nothing hidden)
        want = mode != "passthrough" and accepted and not asked
        assert (out["results"] != [""]) is want, (mode, asked, accepted, out["results"])
    strip = csharp.run(
        [
            csharp.job(
                ["strip"],
                named={"aoai-capture-streaming": mode},
                variables={"aoai-usage-injected": True},
                response={
                    "status": 200,
                    "content_type": "text/event-stream; charset=utf-8",
                    "body": "",
                },
            )
            for mode in ("passthrough", "buffered", "passthrough_usage")
        ]
    )
    # never read, never rewritten but in buffered capture: passthrough_usage clients see it
    assert [o["results"] for o in strip] == [[False], [True], [False]]


def test_compiled_usage_chunk_removal_matches_the_local_gateway(csharp: CSharp) -> None:
    pytest.importorskip("httpx")
    from aoai_helpers.local.gateway import strip_usage_chunk

    names = list(STREAMS)
    jobs = [
        csharp.job(
            ["strip-body"],
            named={"aoai-capture-streaming": "buffered"},
            response={"status": 200, "content_type": "text/event-stream", "body": STREAMS[n]},
        )
        for n in names
    ]
    for name, out in zip(names, csharp.run(jobs), strict=True):
        stripped = out["results"][0].encode("utf-8")
        raw = STREAMS[name].encode("utf-8")
        assert stripped == strip_usage_chunk(raw), name
        assert (stripped != raw) is (name != "no-usage-chunk"), name
    lf = csharp.run([jobs[names.index("lf")]])[0]["results"][0]
    assert lf == _sse(_PREAMBLE, _DELTA, "data: [DONE]")  # every other byte as it came


def _message(i: int, text: str) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": text}


def _schema(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string", "description": "leaf"}
    for level in range(depth):
        node = {"type": "object", "description": f"level {level}", "properties": {"x": node}}
    return node


SHRINK_CASES: dict[str, dict[str, Any]] = {
    "fits as it is": {"model": "gpt-4o", "messages": [_message(0, "hello")], "temperature": 0.7},
    "20,000 messages of hi": {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"} for _ in range(20_000)],
    },
    "one 540 KB message": {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            _message(0, ('Grüße, 世界 😀 "quoted" \\ tab\t line\n' * 15_000)[:540_000]),
        ],
        "max_tokens": 100,
    },
    "deep tool schema": {
        "model": "gpt-4.1",
        "messages": [_message(0, "call the tool")] * 40,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": f"tool_{t}",
                    "description": f"tool {t} " + "does many things. " * 400,
                    "parameters": _schema(28),
                },
            }
            for t in range(8)
        ],
    },
    "Responses input items": {
        "model": "gpt-4.1",
        "instructions": "Answer briefly.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": f"part {i}.{j}"} for j in range(5)],
            }
            for i in range(3_000)
        ],
    },
    "long content parts": {
        "model": "gpt-4.1",
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": f"part {i}.{j}"} for j in range(300)],
            }
            for i in range(60)
        ],
    },
    "embeddings input": {"model": "e", "input": [f"text number {i}" for i in range(20_000)]},
    "completions prompt list": {"prompt": ["x" * 40 + str(i) for i in range(5_000)], "n": 0},
    "a forged marker": {
        "_truncated": {"items": 0, "strings": 0, "chars": 0},
        "messages": [{"role": "user", "content": "hi"} for _ in range(20_000)],
    },
    "nothing fits": {"metadata": {f"key-{i:05d}": i for i in range(12_000)}, "messages": []},
    "items is a string": {"input": "word " * 30_000, "tools": [{"name": "t" * 100}] * 300},
}


def test_compiled_shrink_matches_shrink_request(csharp: CSharp) -> None:
    from aoai_helpers.core.shrink import MARKER, request_stats, shrink_request

    names = list(SHRINK_CASES)
    raws = [json.dumps(SHRINK_CASES[n], ensure_ascii=False, separators=(",", ":")) for n in names]
    jobs = [
        csharp.job(
            ["event"], variables={"aoai-status": 200, "aoai-result": "", "aoai-request": raw}
        )
        for raw in raws
    ]
    shrunk = {}
    for name, raw, out in zip(names, raws, csharp.run(jobs), strict=True):
        event = json.loads(out["results"][0])
        got = shrunk[name] = event["Request"]
        want = shrink_request(json.loads(raw), policy.REQUEST_BUDGET)
        assert got == want, name
        assert (
            len(json.dumps(got, ensure_ascii=False, separators=(",", ":")).encode())
            <= policy.REQUEST_BUDGET
        ), name
        if name != "fits as it is":
            assert got[MARKER] == request_stats(json.loads(raw)), name
    # what the billing relies on: the whole request's stats, and the shape shrink.py gives
    hi = shrunk["20,000 messages of hi"]
    assert hi[MARKER] == {"items": 20_000, "strings": 40_000, "chars": 120_000}
    assert sum(1 for m in hi["messages"] if "_omitted" in m) == 1  # thinned (step 2)
    long_text = shrunk["one 540 KB message"]["messages"][1]["content"]
    assert long_text.endswith("…") and MARKER in shrunk["one 540 KB message"]  # capped (step 1)
    assert sum(1 for item in shrunk["Responses input items"]["input"] if "_omitted" in item) == 1
    parts = shrunk["long content parts"]["input"]
    assert sum(1 for item in parts if "_omitted" in item) == 1  # the items thinned...
    assert all(any("_omitted" in p for p in item["content"]) for item in parts if "content" in item)
    assert shrunk["a forged marker"][MARKER]["items"] == 20_000  # the caller's stats replaced
    assert shrunk["nothing fits"] == {MARKER: {"items": 0, "strings": 0, "chars": 0}}
    assert shrunk["fits as it is"] == SHRINK_CASES["fits as it is"]


def test_compiled_shrink_through_the_inbound_pipeline(csharp: CSharp) -> None:
    """The 20,000-message body as the gateway receives it: read, kept, shrunk into the event."""
    from aoai_helpers.core.shrink import MARKER, shrink_request

    body = json.dumps(SHRINK_CASES["20,000 messages of hi"])
    out = csharp.run(
        [
            csharp.job(
                ["inbound", "event"],
                url=CHAT,
                api_version="2024-10-21",
                body=body,
                variables={"aoai-status": 200, "aoai-result": ""},
            )
        ]
    )[0]
    event = json.loads(out["results"][-1])
    assert event["Request"] == shrink_request(json.loads(body), policy.REQUEST_BUDGET)
    assert event["Request"][MARKER]["items"] == 20_000
    assert (event["Operation"], event["DeploymentName"], event["ApiVersion"]) == (
        "chat",
        "gpt-4o",
        "2024-10-21",
    )


def test_compiled_event_never_fails(csharp: CSharp) -> None:
    good = {"aoai-status": 200, "aoai-result": "", "aoai-request": BODY, "aoai-operation": "chat"}
    cases = {
        # the request copy cannot be parsed: the event is logged, its reason in Request
        "request copy": ({**good, "aoai-request": '{"messages": ['}, "JsonReaderException"),
        # a variable of another type than the event reads (GetValueOrDefault<int> throws)
        "status variable": ({**good, "aoai-status": "200"}, "InvalidCastException"),
        "result variable": ({**good, "aoai-result": "{not json"}, "JsonReaderException"),
    }
    names = list(cases)
    jobs = [csharp.job(["event"], variables=cases[n][0]) for n in names]
    for name, out in zip(names, csharp.run(jobs), strict=True):
        assert not isinstance(out["results"][0], dict), (name, out["results"])
        event = json.loads(out["results"][0])
        assert list(event) == list(V2_FIELDS), name
        assert event["Request"] == {"_unloggable": cases[name][1]}, name
        # the fields known before the failure are there
        assert event["RequestId"] == "00000000-0000-4000-8000-000000000001", name
        assert event["ExecTimeUTC"] == "2025-01-02T03:04:05.678Z", name
        assert event["SubscriptionId"] == "bu-finance" and event["Operation"] == "chat", name
        assert event["Usage"] is None, name
    status = json.loads(csharp.run([jobs[1]])[0]["results"][0])
    assert status["StatusCode"] == 500  # unknown: never billed as a success
    fine = json.loads(csharp.run([csharp.job(["event"], variables=good)])[0]["results"][0])
    assert fine["Request"] == json.loads(BODY) and fine["StatusCode"] == 200


def test_compiled_owner_is_logged_as_the_local_gateway_logs_it(csharp: CSharp) -> None:
    """UserName/UserEmail: the policy, given the APIM user provisioning creates for a
    subscription (owner_names, or no user without an email), logs what the local gateway logs."""
    from aoai_helpers.azure.apim.resources import owner_names
    from aoai_helpers.local.events import GatewayCall as _Call
    from aoai_helpers.local.events import build_event

    spec = spec_with()
    base = spec.subscriptions[0]
    shapes = {
        "two words": {"owner_name": "Ana Silva", "owner_email": "ana.silva@contoso.com"},
        "one word": {"owner_name": "Cher", "owner_email": "cher@contoso.com"},
        "many words": {"owner_name": "Mary Ann van der Berg", "owner_email": "m@contoso.com"},
        "no name": {"owner_name": None, "owner_email": "li.wei@contoso.com"},
        "one-part email": {"owner_name": None, "owner_email": "ops@contoso.com"},
        "no email": {"owner_name": "Priya Nair", "owner_email": None},
    }
    good = {"aoai-status": 200, "aoai-result": "", "aoai-request": BODY, "aoai-operation": "chat"}
    jobs, expected = [], {}
    for name, fields in shapes.items():
        sub = base.model_copy(update=fields)
        user = None
        if sub.owner_email:
            first, last = owner_names(sub)
            user = {"first": first, "last": last, "email": sub.owner_email}
        jobs.append(csharp.job(["event"], variables=good, user=user))
        call = _Call(
            "00000000-0000-4000-8000-000000000001",
            datetime(2025, 1, 2, tzinfo=UTC),
            sub,
            "/openai/deployments/gpt-4o/chat/completions",
            "chat",
            False,
            "gpt-4o",
            "2024-10-21",
            False,
            json.loads(BODY),
        )
        local = build_event(spec, call, status=200, model=None, usage=None)
        expected[name] = (local["UserName"], local["UserEmail"])
    for name, out in zip(shapes, csharp.run(jobs), strict=True):
        event = json.loads(out["results"][0])
        assert (event["UserName"], event["UserEmail"]) == expected[name], name
    assert expected["one word"] == ("Cher", "cher@contoso.com")  # the spec's name, as written
    assert expected["no email"] == (None, None)  # no user: APIM's context.User is null
    assert expected["no name"] == ("li wei", "li.wei@contoso.com")


_UNCOUNTED = _sse(_PREAMBLE, _DELTA, "data: [DONE]")  # no usage chunk: an old api-version


def test_compiled_buffered_old_api_version_keeps_the_reply(csharp: CSharp) -> None:
    long_reply = _sse(*[_DELTA] * 2_000, "data: [DONE]")
    counted = _sse(_PREAMBLE, _DELTA, _USAGE, "data: [DONE]")
    cases = [
        # (mode, payload, status, body, the response text kept, usage found)
        ("buffered", False, 200, _UNCOUNTED, _UNCOUNTED, False),  # no usage chunk: kept
        ("buffered", False, 200, counted, None, True),  # usage: nothing else to count
        ("buffered", True, 200, counted, counted, True),  # payload capture, as before
        ("buffered", False, 500, _UNCOUNTED, None, False),  # not served: never billed
        ("buffered", False, 200, long_reply, "cut", False),
        ("passthrough", False, 200, _UNCOUNTED, "", False),  # never read
        ("passthrough_usage", False, 200, _UNCOUNTED, "", False),
    ]
    jobs = [
        csharp.job(
            ["result"],
            named={"aoai-capture-streaming": mode, "aoai-capture-payload": str(payload).lower()},
            response={"status": status, "content_type": "text/event-stream", "body": body},
        )
        for mode, payload, status, body, _, _ in cases
    ]
    for case, out in zip(cases, csharp.run(jobs), strict=True):
        _, _, _, body, kept, found = case
        raw = out["results"][0]
        if kept == "":
            assert raw == "", case
            continue
        result = json.loads(raw)
        if kept == "cut":  # cut as payload capture cuts: to the response budget, in bytes
            assert body.startswith(result["response"]) and len(result["response"]) < len(body)
            assert len(result["response"].encode()) > policy.RESPONSE_BUDGET - 8
            assert len(result["response"].encode()) <= policy.RESPONSE_BUDGET
        else:
            assert result["response"] == kept, case
        assert result["model"] == "gpt-4o-2024-11-20"
        assert (result["usage"] is not None) is found, case
    # the whole way: an api-version before include_usage_from, buffered; nothing is injected,
    # no usage comes back, the event carries the reply and the request for ingest to count
    out = csharp.run(
        [
            csharp.job(
                ["inbound", "inject", "result", "event"],
                url=CHAT,
                api_version="2024-06-01",
                body=json.dumps({"stream": True, "messages": [{"role": "user", "content": "hi"}]}),
                named={"aoai-capture-streaming": "buffered"},
                variables={"aoai-status": 200},
                response={"status": 200, "content_type": "text/event-stream", "body": _UNCOUNTED},
            )
        ]
    )[0]
    assert out["variables"]["aoai-usage-accepted"] is False
    assert out["results"][-3] == ""  # include_usage not injected
    event = json.loads(out["results"][-1])
    assert event["ResponseString"] == _UNCOUNTED and event["Usage"] is None
    assert event["Request"] == {"stream": True, "messages": [{"role": "user", "content": "hi"}]}
    assert (event["ApiVersion"], event["IsStreaming"]) == ("2024-06-01", True)


def test_compiled_result_never_fails(csharp: CSharp) -> None:
    # a buffered stream APIM hands over as no text at all: "" (no usage) instead of an error
    out = csharp.run(
        [
            csharp.job(
                ["result"],
                named={"aoai-capture-streaming": "buffered"},
                response={"status": 200, "content_type": "text/event-stream", "body": None},
            )
        ]
    )[0]
    assert out["results"] == [""]


def test_compiled_shrink_where_json_net_escapes_more(csharp: CSharp) -> None:
    """Json.NET writes U+0085, U+2028 and U+2029 as \\uXXXX (6 bytes; orjson: 2 or 3), so a
    request full of them is measured bigger by the policy: the same stats and the same shape,
    a smaller cap — the one case where the two differ."""
    from aoai_helpers.core.shrink import MARKER, request_stats, shrink_request

    request = {"messages": [_message(0, "line\u2028next\u2029para\u0085 " * 20_000)]}
    raw = json.dumps(request, ensure_ascii=False, separators=(",", ":"))
    out = csharp.run(
        [
            csharp.job(
                ["event"], variables={"aoai-status": 200, "aoai-result": "", "aoai-request": raw}
            )
        ]
    )[0]
    got = json.loads(out["results"][0])["Request"]
    want = shrink_request(json.loads(raw), policy.REQUEST_BUDGET)
    assert got[MARKER] == want[MARKER] == request_stats(request)
    assert list(got) == list(want) and got["messages"][0]["role"] == "user"
    cut, ours = got["messages"][0]["content"], want["messages"][0]["content"]
    assert cut.endswith("…") and ours.endswith("…") and ours.startswith(cut[:-1])
    assert len(cut) < len(ours)
    text = json.dumps(got, ensure_ascii=False, separators=(",", ":"))
    json_net = (
        len(text.encode())
        + 3 * (text.count("\u2028") + text.count("\u2029"))
        + 4 * text.count("\u0085")
    )
    assert (
        json_net
        <= policy.REQUEST_BUDGET
        < len(json.dumps(want, ensure_ascii=False, separators=(",", ":")).encode())
        + 3 * (ours.count("\u2028") + ours.count("\u2029"))
        + 4 * ours.count("\u0085")
    )


# --- on-error: the status logged (and answered) when the call failed ---------------------------

#: (section, reason, status APIM holds or None for no response) → (status logged, replaced?)
ON_ERROR_CASES: list[tuple[str | None, str | None, int | None, int, bool]] = [
    # raised in inbound before the backend was called: never a success
    ("inbound", None, 200, 500, True),
    ("inbound", "ExpressionValueEvaluationFailure", None, 500, True),
    # the token limit's own answers are kept
    ("inbound", None, 429, 429, False),
    ("inbound", None, 403, 403, False),
    # backend: forward-request timed out / the connection failed, with or without a response
    ("backend", "Timeout", 200, 504, True),
    ("backend", "Timeout", None, 504, True),
    ("backend", "BackendConnectionFailure", 200, 500, True),
    ("backend", "BackendConnectionFailure", None, 500, True),
    ("backend", "Timeout", 502, 504, True),
    ("backend", None, 503, 503, False),
    # outbound: the backend answered, so it served the call: billed as served
    ("outbound", "ClientConnectionFailure", 200, 200, False),
    ("outbound", "Timeout", 201, 201, False),
    ("outbound", None, 500, 500, False),
    ("outbound", None, None, 500, True),
    # no LastError at all, no response: unknown, never a success
    (None, None, None, 500, True),
    (None, None, 204, 500, True),
]


def test_compiled_on_error_never_logs_an_unserved_call_as_a_success(csharp: CSharp) -> None:
    jobs = []
    for section, reason, held, _, _ in ON_ERROR_CASES:
        context: dict[str, Any] = {
            "variables": {"aoai-result": "", "aoai-request": BODY, "aoai-operation": "chat"}
        }
        if section is None:
            context["no_error"] = True
        else:
            context["last_error"] = {"section": section, "reason": reason, "source": "x"}
        if held is None:
            context["no_response"] = True
        else:
            context["response"] = {"status": held, "content_type": "application/json", "body": ""}
        jobs.append(
            csharp.job(
                ["error-status", "error-answer", "error-code", "error-body", "event"], **context
            )
        )
    for case, out in zip(ON_ERROR_CASES, csharp.run(jobs), strict=True):
        _, _, held, logged, replaced = case
        status, answer, code, body, event = out["results"]
        assert (status, answer) == (logged, replaced), (case, out["results"])
        assert json.loads(event)["StatusCode"] == logged, case
        # what the client is answered when the status was replaced: the same status
        assert code == logged, case
        message = policy.BACKEND_TIMEOUT_MESSAGE if logged == 504 else policy.BACKEND_ERROR_MESSAGE
        assert json.loads(body) == {"statusCode": logged, "message": message}, case
        ok = 200 <= logged <= 299
        assert ok is (case[0] == "outbound" and held is not None and 200 <= held <= 299), case
        # a 2xx without usage is estimated from the request; anything else is not billed
        assert (json.loads(event)["Request"] is not None) is ok, case


def test_on_error_answers_with_the_logged_status_only_when_it_replaced_it() -> None:
    on_error = _section(render_api_policy(spec_with()), "on-error")
    children = [child.tag for child in on_error]
    assert children == ["choose", "base", "choose"]  # logged first, the answer after <base />
    reply = on_error.find("choose[2]/when/return-response")
    assert reply is not None
    when = on_error.find("choose[2]/when")
    assert when is not None and "aoai-error-answer" in when.get("condition", "")
    assert [child.tag for child in reply] == ["set-status", "set-header", "set-body"]


# --- include_usage injected without changing the body (8b) ----------------------------------------

INJECT_BODIES: dict[str, tuple[str, bool]] = {
    # name: (the body as sent, whether include_usage is injected)
    "dates and floats, no stream_options": (
        '{"stream": true, "messages": [{"role": "user", "content": "2024-01-01T10:00:00+02:00"}],'
        ' "temperature": 1.10, "top_p": 1e0, "meta": {"at": "2024-01-01T10:00:00.1234567Z"}}',
        True,
    ),
    "whitespace and escapes": (
        ' \r\n\t{ "stream" : true ,\n  "messages":[{"role":"user","content":"caf\\u00e9 \\/ \\"q\\" \\ud83d\\ude00"}] }\n',
        True,
    ),
    "stream_options to amend": (
        '{"stream": true, "stream_options": {"include_usage": false, "x": 1},'
        ' "messages": [{"role": "user", "content": "h\\u00e9 \\u2028 \\u0085 \\u0001 \\u001f \\u007f"}]}',
        True,
    ),
    "stream_options null": ('{"stream_options": null, "stream": true, "messages": []}', True),
    "stream_options and a date": (
        '{"stream": true, "stream_options": {}, "messages": [{"role": "user", "content":'
        ' "2024-01-01T10:00:00+02:00"}]}',
        False,
    ),
    "stream_options and a float": (
        '{"stream": true, "stream_options": {}, "temperature": 1.10, "messages": []}',
        False,
    ),
    "stream_options and an MS date": (
        '{"stream": true, "stream_options": {}, "user": "/Date(1198908717056)/", "messages": []}',
        False,
    ),
    "asked already": (
        '{"stream": true, "stream_options": {"include_usage": true}, "messages": []}',
        False,
    ),
    "not streamed": ('{"stream": false, "temperature": 1.10, "messages": []}', False),
}


def test_compiled_usage_injection_is_lossless_and_the_gateways(csharp: CSharp) -> None:
    pytest.importorskip("httpx")
    from aoai_helpers.local.gateway import Gateway

    spec = spec_with(_buffered)
    gateway = Gateway(spec, keys={}, backend_secret="x", sink=lambda _e: None)
    subscription = spec.subscriptions[0]
    names = list(INJECT_BODIES)
    jobs = [
        csharp.job(
            ["inbound", "inject"],
            url=CHAT,
            api_version="2024-10-21",
            body=INJECT_BODIES[n][0],
            named={"aoai-capture-streaming": "buffered"},
        )
        for n in names
    ]
    for name, out in zip(names, csharp.run(jobs), strict=True):
        text, injected = INJECT_BODIES[name]
        raw = text.encode("utf-8")
        forwarded = out["results"][-1]
        assert isinstance(forwarded, str), (name, out["results"])
        assert (forwarded != "") is injected, (name, forwarded)
        route = classify("POST", CHAT)
        assert not isinstance(route, Refusal)
        call = gateway._describe(subscription, CHAT, route, [("api-version", "2024-10-21")], raw)
        assert not isinstance(call, Refusal), name
        ours = gateway._maybe_inject_usage(call, raw)
        if not injected:
            assert ours is raw, name
            continue
        # the policy and the local gateway forward the same bytes
        assert ours == forwarded.encode("utf-8"), name
        sent = json.loads(ours)
        assert sent["stream_options"]["include_usage"] is True, name
        if "stream_options" not in json.loads(raw):
            # nothing else changed: the body as sent, with the one member added
            brace = raw.index(b"{") + 1
            assert ours == raw[:brace] + b'"stream_options":{"include_usage":true},' + raw[brace:]
        else:
            # written again, but every value is the caller's
            want = json.loads(raw)
            options = want.get("stream_options")
            want["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            assert sent == want, name
    asyncio.run(gateway.aclose())
