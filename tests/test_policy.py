"""APIM policies (aoai_helpers.apim.policy): rendering, the templates' invariants, local parity.

The policies are rendered for the sample spec and variants of it (key auth, two backends,
buffered and passthrough_usage capture, payload capture, no token limits, each cloud) and
checked as data: the XML parses and has the four sections, no placeholder is left, the named
values referenced are exactly those :func:`named_values` lists, every policy expression has
balanced brackets outside C# string literals, and the event the policy logs has the contract's
fields in order — the same keys the local gateway's ``build_event`` writes.

The capture-mode expressions (the include_usage condition, the usage-chunk removal) are also
compiled as C# 7 with Mono's ``mcs -langversion:7`` against minimal stand-ins of the APIM
context and the Newtonsoft types they use, and run: each mode's decision, and the removal
byte-for-byte against :func:`aoai_helpers.local.gateway.strip_usage_chunk` (skipped, with the
reason, where ``mcs``/``mono`` are not installed: ``apt-get install mono-mcs``).
"""

from __future__ import annotations

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

from aoai_helpers.apim import policy
from aoai_helpers.apim.policy import (
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
from aoai_helpers.events import LOG_TO_EVENTHUB_LIMIT, USAGE_FIELDS, V2_FIELDS
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
    from aoai_helpers.local.gateway import _Call, build_event

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
    condition = whens[0].get("condition", "")
    assert "{{aoai-capture-streaming}}" in condition
    assert "{{aoai-include-usage-api-versions}}" in condition
    # injected in buffered and passthrough_usage capture, never in passthrough
    assert '"buffered"' in condition and '"passthrough_usage"' in condition
    assert '"passthrough"' not in condition
    assert '"include_usage"' in (whens[0].findtext("set-body") or "")
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
    when = backend.find("choose/when")
    assert when is not None
    # buffer-response="false" for every mode but buffered, so passthrough_usage too
    assert '"{{aoai-capture-streaming}}" != "buffered"' in when.get("condition", "")
    result = next(
        el.get("value", "")
        for el in _section(xml, "outbound").iter("set-variable")
        if el.get("name") == "aoai-result"
    )
    # the streamed body is never read but in buffered capture
    assert 'if (sse && "{{aoai-capture-streaming}}" != "buffered") { return ""; }' in result


def test_backend_forwards_once_unbuffered_only_for_passthrough_streams() -> None:
    backend = _section(render_api_policy(spec_with()), "backend")
    assert [child.tag for child in backend] == ["choose"]  # no <base />: this is the only forward
    when, otherwise = backend.find("choose/when"), backend.find("choose/otherwise")
    assert when is not None and otherwise is not None
    assert "{{aoai-capture-streaming}}" in when.get("condition", "")
    assert [f.attrib for f in when.iter("forward-request")] == [{"buffer-response": "false"}]
    assert [f.attrib for f in otherwise.iter("forward-request")] == [{}]


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
    ]
    assert values[0].value == "passthrough" and values[2].value == "false"
    assert values[1].value == ",".join(SAMPLE_VERSIONS)


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
        d["capture"] = {"streaming": "buffered", "payload": True, "include_usage_api_versions": []}

    values = {nv.id: nv.value for nv in named_values(spec_with(change), {})}
    assert values == {
        "aoai-capture-streaming": "buffered",
        "aoai-include-usage-api-versions": "none",  # APIM refuses an empty value
        "aoai-capture-payload": "true",
    }


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
    packaged = ROOT / "aoai_helpers" / "apim" / "templates" / name
    assert (ROOT / "policies" / name).read_bytes() == packaged.read_bytes(), (
        f"policies/{name} differs from the package template: cp {packaged.relative_to(ROOT)} policies/"
    )
    assert policy.template(name) == packaged.read_text("utf-8")  # type: ignore[arg-type]


# --- the capture-mode expressions, compiled and run as C# 7 --------------------------------------

_CS_STANDINS = r"""
using System;
using System.Collections.Generic;
using System.Text;

namespace Newtonsoft.Json { public enum Formatting { None, Indented } }

namespace Newtonsoft.Json.Linq
{
    // Only what the expressions under test use; Parse reads plain JSON (no dates, no comments).
    public enum JTokenType { None, Object, Array, Integer, Float, String, Boolean, Null }

    public class JToken
    {
        public JTokenType Type;
        public object Value;
        public List<JToken> Items = new List<JToken>();
        public List<KeyValuePair<string, JToken>> Props = new List<KeyValuePair<string, JToken>>();

        public JToken this[string key]
        {
            get { foreach (var p in Props) { if (p.Key == key) { return p.Value; } } return null; }
            set { Props.RemoveAll(p => p.Key == key); Props.Add(new KeyValuePair<string, JToken>(key, value)); }
        }

        public bool HasValues { get { return Type == JTokenType.Array ? Items.Count > 0 : Props.Count > 0; } }

        public JToken SelectToken(string path)
        {
            JToken node = this;
            foreach (string part in path.Split('.')) { node = node == null ? null : node[part]; }
            return node;
        }

        public static explicit operator bool(JToken t) { return (bool)t.Value; }
        public static explicit operator string(JToken t) { return (string)t.Value; }
        public static implicit operator JToken(bool b) { return new JToken { Type = JTokenType.Boolean, Value = b }; }
        public string ToString(Newtonsoft.Json.Formatting f) { return "{}"; }
    }

    public class JObject : JToken
    {
        public JObject() { Type = JTokenType.Object; }

        public static JObject Parse(string s)
        {
            int i = 0;
            JToken t = Value(s, ref i);
            Skip(s, ref i);
            if (i != s.Length || !(t is JObject)) { throw new FormatException("not a JSON object"); }
            return (JObject)t;
        }

        static void Skip(string s, ref int i) { while (i < s.Length && char.IsWhiteSpace(s[i])) { i++; } }

        static JToken Value(string s, ref int i)
        {
            Skip(s, ref i);
            char c = s[i];
            if (c == '{' || c == '[')
            {
                bool obj = c == '{';
                JToken node = obj ? new JObject() : new JToken { Type = JTokenType.Array };
                i++; Skip(s, ref i);
                if (s[i] == (obj ? '}' : ']')) { i++; return node; }
                while (true)
                {
                    if (obj)
                    {
                        JToken key = Value(s, ref i);
                        Skip(s, ref i); if (s[i] != ':') { throw new FormatException(":"); } i++;
                        node.Props.Add(new KeyValuePair<string, JToken>((string)key.Value, Value(s, ref i)));
                    }
                    else { node.Items.Add(Value(s, ref i)); }
                    Skip(s, ref i);
                    if (s[i] == ',') { i++; continue; }
                    if (s[i] == (obj ? '}' : ']')) { i++; return node; }
                    throw new FormatException("container");
                }
            }
            if (c == '"')
            {
                var sb = new StringBuilder(); i++;
                while (s[i] != '"') { if (s[i] == '\\') { i++; } sb.Append(s[i]); i++; }
                i++;
                return new JToken { Type = JTokenType.String, Value = sb.ToString() };
            }
            foreach (var word in new[] { "true", "false", "null" })
            {
                if (string.CompareOrdinal(s, i, word, 0, word.Length) == 0)
                {
                    i += word.Length;
                    return word == "null" ? new JToken { Type = JTokenType.Null } : new JToken { Type = JTokenType.Boolean, Value = word == "true" };
                }
            }
            int j = i;
            while (j < s.Length && "+-.eE0123456789".IndexOf(s[j]) >= 0) { j++; }
            if (j == i) { throw new FormatException("value"); }
            string n = s.Substring(i, j - i); i = j;
            return new JToken { Type = JTokenType.Integer, Value = n };
        }
    }
}

namespace Apim
{
    public class Body { public string Text; public T As<T>(bool preserveContent = false) where T : class { return Text as T; } }
    public class Headers
    {
        public Dictionary<string, string> Values = new Dictionary<string, string>();
        public string GetValueOrDefault(string name, string fallback) { string v; return Values.TryGetValue(name, out v) ? v : fallback; }
    }
    public class Variables
    {
        public Dictionary<string, object> Values = new Dictionary<string, object>();
        public T GetValueOrDefault<T>(string name, T fallback) { object v; return Values.TryGetValue(name, out v) ? (T)v : fallback; }
    }
    public class Message { public Body Body = new Body(); public Headers Headers = new Headers(); }
    public class Context { public Message Response = new Message(); public Variables Variables = new Variables(); }
}
"""

_CS_PROGRAM = r"""
using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;
using Apim;

public static class Program
{
    public static string Mode = "buffered";
    public static string Versions = "2024-10-21";
    static bool Inject(Context context) { INJECT }
    static bool StripWhen(Context context) { STRIP_WHEN }
    static string Strip(Context context) { STRIP }

    public static int Main(string[] args)
    {
        foreach (string mode in new[] { "passthrough", "buffered", "passthrough_usage" })
        {
            Mode = mode;
            foreach (bool asked in new[] { false, true })
            {
                var c = new Context();
                c.Variables.Values["aoai-streaming"] = true;
                c.Variables.Values["aoai-operation"] = "chat";
                c.Variables.Values["aoai-api-version"] = "2024-10-21";
                c.Variables.Values["aoai-v1"] = false;
                c.Variables.Values["aoai-request"] = asked
                    ? "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
                    : "{\"stream\":true}";
                Console.WriteLine("inject " + mode + " " + (asked ? "asked" : "not-asked") + " " + Inject(c));
            }
            var s = new Context();
            s.Variables.Values["aoai-usage-injected"] = true;
            s.Response.Headers.Values["Content-Type"] = "text/event-stream; charset=utf-8";
            Console.WriteLine("strip " + mode + " " + StripWhen(s));
        }
        Mode = "buffered";
        foreach (string path in args)
        {
            var c = new Context();
            c.Response.Body.Text = System.IO.File.ReadAllText(path, new UTF8Encoding(false));
            System.IO.File.WriteAllText(path + ".out", Strip(c), new UTF8Encoding(false));
        }
        return 0;
    }
}
"""


def _cs_body(expression: str) -> str:
    """A policy expression as a C# method body (named values as the program's fields)."""
    code = expression.strip()
    code = code.replace('"{{aoai-capture-streaming}}"', "Program.Mode")
    code = code.replace('"{{aoai-include-usage-api-versions}}"', "Program.Versions")
    assert "{{" not in code, code[:80]
    return f"return {code[1:]};" if code.startswith("@(") else code[2:-1]


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


@pytest.fixture(scope="module")
def compiled_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, bytes]]:
    """The capture expressions compiled (mcs -langversion:7) and run: stdout, stripped streams."""
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        reason = "no Mono C# compiler (mcs, mono): apt-get install mono-mcs"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason} (.ci/run installs it)")
        pytest.skip(reason)
    root = ET.fromstring(render_api_policy(spec_with()))
    inbound, outbound = root.find("inbound"), root.find("outbound")
    assert inbound is not None and outbound is not None
    inject = next(w for w in inbound.iter("when") if w.find("set-body") is not None)
    strip = next(w for w in outbound.iter("when") if w.find("set-body") is not None)
    program = (
        _CS_PROGRAM.replace("INJECT", _cs_body(inject.get("condition", "")))
        .replace("STRIP_WHEN", _cs_body(strip.get("condition", "")))
        .replace("STRIP", _cs_body(strip.findtext("set-body") or ""))
    )
    work = tmp_path_factory.mktemp("csharp")
    (work / "program.cs").write_text(program, "utf-8")
    (work / "standins.cs").write_text(_CS_STANDINS, "utf-8")
    built = subprocess.run(
        [
            mcs,
            "-langversion:7",
            "-nologo",
            "-warnaserror-",
            "-out:capture.exe",
            "program.cs",
            "standins.cs",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    paths = []
    for name, text in STREAMS.items():
        path = work / f"{name}.sse"
        path.write_bytes(text.encode("utf-8"))
        paths.append(path)
    ran = subprocess.run(
        [mono, "capture.exe", *map(str, paths)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout, {p.stem: (work / f"{p.name}.out").read_bytes() for p in paths}


def test_compiled_include_usage_decision_per_capture_mode(
    compiled_capture: tuple[str, dict[str, bytes]],
) -> None:
    lines = set(compiled_capture[0].splitlines())
    assert lines == {
        "inject passthrough not-asked False",
        "inject passthrough asked False",
        "strip passthrough False",
        "inject buffered not-asked True",
        "inject buffered asked False",  # the caller asked itself: nothing injected, nothing hidden
        "strip buffered True",
        "inject passthrough_usage not-asked True",
        "inject passthrough_usage asked False",
        "strip passthrough_usage False",  # never read, never rewritten: the client sees the chunk
    }


def test_compiled_usage_chunk_removal_matches_the_local_gateway(
    compiled_capture: tuple[str, dict[str, bytes]],
) -> None:
    pytest.importorskip("httpx")
    from aoai_helpers.local.gateway import strip_usage_chunk

    stripped = compiled_capture[1]
    for name, text in STREAMS.items():
        raw = text.encode("utf-8")
        assert stripped[name] == strip_usage_chunk(raw), name
        has_usage = name not in ("no-usage-chunk",)
        assert (stripped[name] != raw) is has_usage, name
    lf = stripped["lf"].decode("utf-8")
    assert lf == _sse(_PREAMBLE, _DELTA, "data: [DONE]")  # every other byte as it came
