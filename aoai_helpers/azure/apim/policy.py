"""APIM policies: render the API and product policy templates from the deployment spec.

The templates (``templates/api-policy.xml``, ``templates/product-policy.xml``, committed as
``policies/*.xml`` too) hold two kinds of references:

- ``{%NAME%}`` placeholders, filled here by :func:`render` — which fails, naming them, on a
  placeholder without a value, a value no placeholder uses (a typo) or a ``{%`` left over;
- ``{{name}}`` APIM named values, left untouched and resolved by APIM at run time; every one
  of them is listed by :func:`named_values` (what provisioning must create first).

The API policy does at the gateway what :mod:`aoai_helpers.local.gateway` does locally (its
docstring is the behaviour both follow; :func:`policy_settings` is what both read) and logs
one v2 event whose fields :func:`policy_fields` extracts, for tests against
:data:`~aoai_helpers.core.events.V2_FIELDS`. The product policy holds the per-subscription
``llm-token-limit`` policies. Facts relied on, from the Azure API Management docs
(policies/README.md has the details and what could not be confirmed):

- ``log-to-eventhub`` truncates messages over 200 KB (log-to-eventhub-policy): the event is
  kept under 100 KB (request ≤ 50 KB, response text ≤ 33 KB, as the local gateway does);
- ``forward-request``: "Multiple statements per policy document: not supported" and
  ``buffer-response`` takes no policy expression (forward-request-policy), so ONE element is
  rendered from the capture mode (:func:`forward_request`); ``false`` relays SSE chunks at once
  (how-to-server-sent-events) and "affects processing of chunked responses" only;
- ``on-error`` (api-management-error-handling-policies): ``context.LastError.Section`` /
  ``.Reason`` (``Timeout``, ``BackendConnectionFailure``) decide the logged status, never 2xx
  unless the error was raised in ``outbound``; the client gets that status through
  ``return-response`` (allowed in on-error) because APIM's own is not documented;
- ``set-variable`` stores basic types only (set-variable-policy, "Allowed types"), so the
  request body read once with ``As<string>(preserveContent: true)`` is kept as JSON text;
- ``return-response`` "cancels pipeline execution" (return-response-policy): refused calls are
  answered in inbound, before the token limit, and never forwarded; ``set-status`` takes
  expressions for ``code`` and ``reason`` (set-status-policy);
- ``context.Request.OriginalUrl`` is the URL received, ``Url`` the backend URL as it stands (the
  docs team, MicrosoftDocs/azure-docs#16317): the classifier checks both;
- ``llm-token-limit``: inbound section, product scope allowed, usable several times per
  policy definition (llm-token-limit-policy); ``choose`` lists no excluded policies.

The output is well-formed XML with escaped expressions: apply it with :data:`POLICY_FORMAT`
(``xml``), not ``rawxml`` (a non-XML-encoded document, PolicyContentFormat).

Two parts are rendered from Python so that they follow their reference: the classifier's
patterns and messages from :mod:`aoai_helpers.core.routes` (:func:`route_table`), and the event
expression with :mod:`aoai_helpers.core.shrink`'s constants (:func:`event_expression`, one text for
both ``log-to-eventhub`` policies). Expressions in attributes carry no ``//`` comment: XML turns
an attribute's newlines into spaces.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal
from xml.sax.saxutils import escape, quoteattr

from aoai_helpers.core import routes, shrink
from aoai_helpers.core.events import LOG_TO_EVENTHUB_LIMIT
from aoai_helpers.core.masking import mask
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Backend, CaptureMode, Spec, TokenLimit

__all__ = [
    "POLICY_FORMAT",
    "NamedValue",
    "PolicySettings",
    "event_expression",
    "forward_request",
    "key_env_var",
    "named_values",
    "policy_fields",
    "policy_settings",
    "render",
    "render_api_policy",
    "render_product_policy",
    "route_table",
    "template",
]

#: ``PolicyContract.format`` for the rendered policies (escaped XML, see the module docstring).
POLICY_FORMAT: Final = "xml"
#: Named values the API policy reads (the backend keys come on top, one per key name).
CAPTURE_STREAMING: Final = "aoai-capture-streaming"
INCLUDE_USAGE_VERSIONS: Final = "aoai-include-usage-api-versions"
CAPTURE_PAYLOAD: Final = "aoai-capture-payload"
INCLUDE_USAGE_FROM: Final = "aoai-include-usage-from"
ALLOW_UNMETERED: Final = "aoai-allow-unmetered"
MAX_JSON_DEPTH: Final = "aoai-max-json-depth"
#: The bodies of the statuses on-error answers with when it replaces the status (the local
#: gateway sends the same): ``{"statusCode": N, "message": …}`` as APIM's own errors.
BACKEND_ERROR_MESSAGE: Final = "Internal server error"
BACKEND_TIMEOUT_MESSAGE: Final = "Gateway timeout: the backend did not answer in time."
#: Budgets in bytes, as in the local gateway: the event stays under half the 200 KB limit.
EVENT_BUDGET: Final = LOG_TO_EVENTHUB_LIMIT // 2
REQUEST_BUDGET: Final = EVENT_BUDGET // 2
RESPONSE_BUDGET: Final = EVENT_BUDGET // 3

_PLACEHOLDER = re.compile(r"\{%([A-Z][A-Z0-9_]*)%\}")
_MI_AUTH: Final = (
    '<set-header name="api-key" exists-action="delete" />\n'
    '<authentication-managed-identity resource="{%MI_RESOURCE%}" />'
)
_KEY_AUTH: Final = (
    '<set-header name="Authorization" exists-action="delete" />\n'
    '<set-header name="api-key" exists-action="override">\n'
    "    <value>{{{%KEY_NAMED_VALUE%}}}</value>\n"
    "</set-header>"
)


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``{%NAME%}`` replaced by ``values[NAME]`` (one pass).

    ``ConfigError`` names every placeholder without a value, every value no placeholder uses
    and any ``{%`` left after rendering (a malformed placeholder, or one inside a value).
    APIM named values (``{{name}}``) are not touched.
    """
    wanted = set(_PLACEHOLDER.findall(template))
    problems: list[str] = []
    if missing := sorted(wanted - set(values)):
        problems.append("no value for " + ", ".join(f"{{%{n}%}}" for n in missing))
    if unused := sorted(set(values) - wanted):
        problems.append("values not used by the template: " + ", ".join(unused))
    if problems:
        raise ConfigError("cannot render policy template: " + "; ".join(problems))
    out = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if "{%" in out:
        left = sorted({out[m.start() :][:24].split("\n")[0] for m in re.finditer("{%", out)})
        raise ConfigError("placeholder syntax left after rendering: " + ", ".join(left))
    return out


def template(name: Literal["api-policy.xml", "product-policy.xml"]) -> str:
    """The text of a packaged policy template."""
    return (
        resources.files("aoai_helpers.azure.apim")
        .joinpath("templates", name)
        .read_text(encoding="utf-8")
    )


@dataclass(frozen=True)
class PolicySettings:
    """What the API policy reads through named values (the local gateway reads the same)."""

    capture: CaptureMode
    include_usage_api_versions: tuple[str, ...]
    payload: bool
    include_usage_from: str = "2024-09-01-preview"
    allow_unmetered: frozenset[str] = frozenset()
    max_json_depth: int = 64

    def accepts_include_usage(self, api_version: str | None, v1: bool) -> bool:
        """Whether a request of ``api_version`` may carry ``stream_options.include_usage``: the
        v1 API, a listed api-version, or one whose date is on or after ``include_usage_from``'s
        (``YYYY-MM-DD`` prefixes compared as text, as the policy does)."""
        if v1:
            return True
        if not api_version:
            return False
        if api_version in self.include_usage_api_versions:
            return True
        date = api_version[:10]
        return (
            len(date) == 10 and date[4] == date[7] == "-" and date >= self.include_usage_from[:10]
        )


def policy_settings(spec: Spec) -> PolicySettings:
    """The capture settings of ``spec``, as the policy and the local gateway apply them."""
    return PolicySettings(
        capture=spec.capture.streaming,
        include_usage_api_versions=tuple(spec.capture.include_usage_api_versions),
        payload=spec.capture.payload,
        include_usage_from=spec.capture.include_usage_from,
        allow_unmetered=frozenset(spec.capture.allow_unmetered),
        max_json_depth=spec.capture.max_json_depth,
    )


@dataclass(frozen=True, repr=False)
class NamedValue:
    """One APIM named value the policies reference (``{{display_name}}``).

    ``value`` is ``None`` for a secret that comes from Key Vault (``key_vault_secret_id``) or
    that is not available yet (then provisioning must refuse to apply). ``repr`` masks secrets.
    """

    id: str
    display_name: str
    value: str | None
    secret: bool
    key_vault_secret_id: str | None = None

    def __repr__(self) -> str:
        shown = self.value
        if self.secret and shown is not None:
            shown = mask(shown)
        return (
            f"NamedValue(id={self.id!r}, display_name={self.display_name!r}, value={shown!r}, "
            f"secret={self.secret!r}, key_vault_secret_id={self.key_vault_secret_id!r})"
        )


def key_env_var(backend: Backend) -> str:
    """``AOAI_BACKEND_KEY_<NAME>``: the environment variable holding ``backend``'s key."""
    return "AOAI_BACKEND_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", backend.name).upper()


def named_values(spec: Spec, env: Mapping[str, str] | None = None) -> list[NamedValue]:
    """Every named value the rendered policies reference, in a stable order.

    The capture settings (:class:`PolicySettings`: mode, include-usage api-versions, payload,
    include-usage-from date, allowed unmetered operations, JSON depth), then one secret per
    ``key_named_value`` of the ``auth: key``
    backends (in backend order): a Key Vault reference when ``key_vault_secret_id`` is set,
    else the key from ``env`` (``AOAI_BACKEND_KEY_<BACKEND>``, else ``AOAI_BACKEND_KEY``), else
    ``None``. Backends sharing a named value must agree on it (``ConfigError`` otherwise).
    """
    env = os.environ if env is None else env
    settings = policy_settings(spec)
    found = [
        NamedValue(CAPTURE_STREAMING, CAPTURE_STREAMING, settings.capture, False),
        # APIM refuses an empty value; "none" matches no api-version.
        NamedValue(
            INCLUDE_USAGE_VERSIONS,
            INCLUDE_USAGE_VERSIONS,
            ",".join(settings.include_usage_api_versions) or "none",
            False,
        ),
        NamedValue(
            CAPTURE_PAYLOAD, CAPTURE_PAYLOAD, "true" if settings.payload else "false", False
        ),
        NamedValue(INCLUDE_USAGE_FROM, INCLUDE_USAGE_FROM, settings.include_usage_from, False),
        # comma-separated operation names; "none" (no operation has that name) when empty
        NamedValue(
            ALLOW_UNMETERED,
            ALLOW_UNMETERED,
            ",".join(sorted(settings.allow_unmetered)) or "none",
            False,
        ),
        NamedValue(MAX_JSON_DEPTH, MAX_JSON_DEPTH, str(settings.max_json_depth), False),
    ]
    shared: dict[str, list[Backend]] = {}
    for backend in spec.backends:
        if backend.auth == "key":
            shared.setdefault(backend.key_named_value, []).append(backend)
    for name, backends in shared.items():
        owners = ", ".join(b.name for b in backends)
        vaults = {b.key_vault_secret_id for b in backends}
        if len(vaults) > 1:
            raise ConfigError(
                f"backends {owners} share the named value {name!r} but not key_vault_secret_id; "
                "give each backend its own key_named_value"
            )
        vault = vaults.pop()
        value: str | None = None
        if vault is None:
            specific = {env[key_env_var(b)] for b in backends if env.get(key_env_var(b))}
            if len(specific) > 1:
                raise ConfigError(
                    f"backends {owners} share the named value {name!r} but their "
                    "AOAI_BACKEND_KEY_<BACKEND> variables differ; give each its own key_named_value"
                )
            value = specific.pop() if specific else env.get("AOAI_BACKEND_KEY") or None
        found.append(NamedValue(name, name, value, True, vault))
    return found


def render_api_policy(spec: Spec) -> str:
    """The API-scope policy for ``spec`` (see ``policies/README.md``)."""
    return render(
        template("api-policy.xml"),
        {
            "LOGGER_ID": _attr_text(spec.event_hub.logger_id),
            "BACKEND_ROUTING": _indent(_routing(spec), 8),
            "ROUTE_TABLE": _attr_code(_indent(route_table(spec.apim.api_path), 12)),
            "EVENT": _text_code(event_expression()),
            "RESPONSE_BUDGET": str(RESPONSE_BUDGET),
            "FORWARD_REQUEST": _indent(forward_request(spec.capture.streaming), 8),
            "TIMEOUT_MESSAGE": _text_code(BACKEND_TIMEOUT_MESSAGE),
            "ERROR_MESSAGE": _text_code(BACKEND_ERROR_MESSAGE),
        },
    )


def forward_request(capture: CaptureMode) -> str:
    """The one ``forward-request`` of the backend section for ``capture``.

    ``passthrough`` and ``passthrough_usage`` relay streams as they arrive
    (``buffer-response="false"``: it "affects processing of chunked responses"; non-streamed
    bodies are still read in outbound, as any policy reading a body buffers it — the SSE page
    warns of exactly that); ``buffered`` keeps the default. The attribute takes no expression
    and the element may appear once per policy document, so it is chosen here, at render
    time: switching ``aoai-capture-streaming`` alone keeps billing right, but streams are then
    relayed as the rendered element says until the policy is rendered and saved again.
    """
    if capture == "buffered":
        return "<forward-request />"
    return '<forward-request buffer-response="false" />'


def _dotnet_regex(pattern: str) -> str:
    """A ``^…$`` Python pattern as .NET: ``\\A…\\z`` (``$`` would also match before a final
    newline), ``(?P<name>`` as ``(?<name>``; anything else is the same syntax in both."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ConfigError(f"route pattern is not anchored: {pattern}")
    body = pattern[1:-1].replace("(?P<", "(?<")
    if any(c in body for c in '"$^') or "(?P" in body:
        raise ConfigError(f"route pattern uses syntax the policy does not translate: {pattern}")
    return "\\A" + body + "\\z"


def _verbatim(value: str) -> str:
    """A C# verbatim string literal."""
    return '@"' + value.replace('"', '""') + '"'


def _refusal(method: str, path: str) -> str:
    found = routes.classify(method, path)
    if not isinstance(found, routes.Refusal):  # pragma: no cover - fixed inputs
        raise ConfigError(f"{method} {path} is not refused by aoai_helpers.core.routes")
    return found.message


def route_table(api_path: str) -> str:
    """C# declarations of :mod:`aoai_helpers.core.routes`' rules for the policy's classifier: the
    canonical-path pattern, the metered and unmetered operations' patterns, the refusal
    messages (as :func:`~aoai_helpers.core.routes.classify` words them) and the API's front-end
    path (``/`` + ``api_path``, ``""`` for an API at the root)."""
    sample, quote = "files", "'"
    forbidden = _refusal("POST", f"/openai/{sample}")
    before, after = forbidden.split(f"'{sample}'")
    metered = ",\n".join(
        f"    {_verbatim(_dotnet_regex(p.pattern))}, {_cs_string(op)}" for p, op in routes.METERED
    )
    unmetered = ",\n".join(
        f"    {_cs_string(name)}, {_verbatim(_dotnet_regex(p.pattern))}"
        for name, p in routes.UNMETERED.items()
    )
    front = api_path.strip("/")
    prefix = _dotnet_regex(f"^/openai/deployments/({routes.DEPLOYMENT})/$").removesuffix("\\z")
    lines = [
        "/* aoai_helpers.core.routes, rendered by aoai_helpers.azure.apim.policy.route_table */",
        f"string canonical = {_verbatim(_dotnet_regex(routes._CANONICAL.pattern))};",
        f"string[] metered = new[] {{\n{metered}\n}};",
        f"string[] unmetered = new[] {{\n{unmetered}\n}};",
        f"string deploymentPrefix = {_verbatim(prefix)};",
        f"string notCanonical = {_cs_string(_refusal('POST', '/openai/'))};",
        f"string notFound = {_cs_string(_refusal('POST', '/x'))};",
        f"string[] notServed = new[] {{ {_cs_string(before + quote)}, {_cs_string(quote + after)} }};",
        f"string apiPath = {_cs_string('/' + front if front else '')};",
    ]
    return "\n".join(lines)


def event_expression() -> str:
    """The event expression (C#, not XML-escaped) both ``log-to-eventhub`` policies use:
    :data:`_EVENT` with the request budget and :mod:`aoai_helpers.core.shrink`'s constants."""

    def array(names: tuple[str, ...]) -> str:
        return "new[] { " + ", ".join(_cs_string(n) for n in names) + " }"

    return render(
        _EVENT,
        {
            "REQUEST_BUDGET": str(REQUEST_BUDGET),
            "MIN_CAP": str(shrink.MIN_CAP),
            "MARKER": _cs_string(shrink.MARKER),
            "OMITTED": _cs_string(shrink.OMITTED),
            "ITEM_FIELDS": array(shrink.ITEM_FIELDS),
            "TEXT_FIELDS": array(shrink.TEXT_FIELDS),
            "LIST_FIELDS": array(shrink.LIST_FIELDS),
        },
    )


def _attr_code(code: str) -> str:
    """C# for a single-quoted XML attribute (the template's expressions are delimited by ')."""
    return code.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")


def _text_code(code: str) -> str:
    """C# for XML element text (escaped like the template: ``&`` and ``<``)."""
    return code.replace("&", "&amp;").replace("<", "&lt;")


def render_product_policy(spec: Spec) -> str:
    """The product-scope policy: a token limit per subscription that has one in ``spec``."""
    limited = [(s.id, s.token_limit) for s in spec.subscriptions if s.token_limit is not None]
    fragment = ""
    if limited:
        whens = "\n".join(
            f"    <when condition={quoteattr(_is_subscription(sid))}>\n"
            f"        {_token_limit(limit)}\n"
            "    </when>"
            for sid, limit in limited
        )
        fragment = "\n" + _indent(f"<choose>\n{whens}\n</choose>", 8)
    return render(template("product-policy.xml"), {"TOKEN_LIMITS": fragment})


def _routing(spec: Spec) -> str:
    """Backend choice by deployment (the first backend is the API's service URL) + credentials."""
    first, *others = spec.backends
    if not others:
        return _credentials(spec, first)
    whens = []
    for backend in others:
        names = ", ".join(_cs_string(d) for d in backend.deployments)
        test = (
            f"@(new[] {{ {names} }}.Contains(context.Variables.GetValueOrDefault<string>"
            '("aoai-deployment", ""), StringComparer.OrdinalIgnoreCase))'
        )
        body = (
            f"<set-backend-service base-url={quoteattr(backend.endpoint + '/openai')} />\n"
            + _credentials(spec, backend)
        )
        whens.append(f"    <when condition={quoteattr(test)}>\n{_indent(body, 8)}\n    </when>")
    otherwise = f"    <otherwise>\n{_indent(_credentials(spec, first), 8)}\n    </otherwise>"
    return "<choose>\n" + "\n".join(whens) + "\n" + otherwise + "\n</choose>"


def _credentials(spec: Spec, backend: Backend) -> str:
    if backend.auth == "key":
        return render(_KEY_AUTH, {"KEY_NAMED_VALUE": backend.key_named_value})
    resource = spec.aoai_audience()
    return render(_MI_AUTH, {"MI_RESOURCE": _attr_text(resource)})


def _token_limit(limit: TokenLimit) -> str:
    """One ``llm-token-limit`` (attributes in the order of the documented policy statement)."""
    attrs = {"counter-key": "@(context.Subscription.Id)"}
    if limit.tokens_per_minute is not None:
        attrs["tokens-per-minute"] = str(limit.tokens_per_minute)
    if limit.token_quota is not None and limit.token_quota_period is not None:
        attrs["token-quota"] = str(limit.token_quota)
        attrs["token-quota-period"] = limit.token_quota_period
    # Streams are estimated whatever this says; other calls count the usage they report.
    attrs["estimate-prompt-tokens"] = "false"
    if limit.token_quota is not None:
        attrs["remaining-quota-tokens-header-name"] = "x-apim-remaining-quota-tokens"
    if limit.tokens_per_minute is not None:
        attrs["remaining-tokens-header-name"] = "x-apim-remaining-tokens"
    attrs["tokens-consumed-header-name"] = "x-apim-tokens-consumed"
    return "<llm-token-limit " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + " />"


def _is_subscription(subscription_id: str) -> str:
    return (
        f"@(string.Equals(context.Subscription?.Id, {_cs_string(subscription_id)}, "
        "StringComparison.OrdinalIgnoreCase))"
    )


def _cs_string(value: str) -> str:
    """A C# regular string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f]", lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def _attr_text(value: str) -> str:
    """``value`` escaped for a double-quoted XML attribute."""
    return escape(value, {'"': "&quot;"})


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def policy_fields(xml: str) -> list[str]:
    """The top-level field names the policy's event expression writes, in order.

    Each ``log-to-eventhub`` expression must end in ``return new JObject(new JProperty("Name",
    …), …)``; all of them must write the same fields (``ConfigError`` otherwise).
    """
    root = ET.fromstring(xml)
    lists = [_event_fields(el.text or "") for el in root.iter("log-to-eventhub")]
    if not lists:
        raise ConfigError("the policy has no log-to-eventhub")
    if any(fields != lists[0] for fields in lists[1:]):
        raise ConfigError("the policy's log-to-eventhub expressions write different fields")
    return lists[0]


def _event_fields(code: str) -> list[str]:
    opener = "return new JObject("
    start = code.rfind(opener)
    if start < 0:
        raise ConfigError(f"log-to-eventhub does not end in {opener}…)")
    fields = []
    for arg in _arguments(code, start + len(opener)):
        m = re.fullmatch(r'\s*new\s+JProperty\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*,.*\)\s*', arg, re.S)
        if m is None:
            raise ConfigError(f'event argument is not new JProperty("Name", …): {arg.strip()[:60]}')
        fields.append(m.group(1))
    return fields


def _arguments(code: str, i: int) -> list[str]:
    """The comma-separated arguments of the call whose ``(`` ends just before ``code[i]``."""
    args: list[str] = []
    depth, begin = 0, i
    while i < len(code):
        c = code[i]
        if c == '"' or (c == "@" and code[i + 1 : i + 2] == '"'):
            i = _string_end(code, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append(code[begin:i])
                return [a for a in args if a.strip()]
            depth -= 1
        elif c == "," and depth == 0:
            args.append(code[begin:i])
            begin = i + 1
        i += 1
    raise ConfigError("unbalanced parentheses in the event expression")


def _string_end(code: str, i: int) -> int:
    """Index just after the C# string literal starting at ``code[i]`` (``"…"`` or ``@"…"``)."""
    verbatim = code[i] == "@"
    i += 2 if verbatim else 1
    while i < len(code):
        c = code[i]
        if (verbatim and c == '"' and code[i + 1 : i + 2] == '"') or (not verbatim and c == "\\"):
            i += 2  # "" in a verbatim string, \x in a regular one
        elif c == '"':
            return i + 1
        else:
            i += 1
    raise ConfigError("unterminated string in the event expression")


#: The event both ``log-to-eventhub`` policies write (outbound and on-error), as C# — XML-escaped
#: where it is rendered into the template (``{%EVENT%}``), so the two copies cannot drift. It
#: cannot fail: each part is computed under a guard, and an exception keeps the fields known so
#: far and puts the exception's type into ``Request`` as ``{"_unloggable": "<type>"}`` (the
#: field list is the contract, ``V2_FIELDS``). ``Request`` is shrunk as
#: :func:`aoai_helpers.core.shrink.shrink_request` does: same steps, same binary searches, same stats
#: (string lengths in code points, sizes in UTF-8 bytes of compact JSON). No helper methods,
#: delegates or recursion: APIM expressions are one method body, and the allowed types list no
#: ``Func``; the strings and lists are changed in place and measured, never deep-copied.
_EVENT: Final = r"""@{
            string failure = null;
            string requestId = null, execTime = null, region = null, serviceName = null;
            string subscriptionId = null, subscriptionName = null, productName = null;
            string userName = null, userEmail = null, apiName = null, operationId = null;
            string operation = "other", deployment = null, version = null;
            bool streaming = false;
            int status = 500;
            try {
                requestId = context.RequestId.ToString();
                execTime = context.Timestamp.ToString("o").Substring(0, 23) + "Z";
                region = context.Deployment.Region;
                serviceName = context.Deployment.ServiceName;
                subscriptionId = context.Subscription?.Id;
                subscriptionName = context.Subscription?.Name;
                productName = context.Product?.Name;
                string last = context.User == null ? "" : (context.User.LastName ?? "");
                string user = context.User == null ? "" : ((context.User.FirstName ?? "") + " " + (last == "-" ? "" : last)).Trim();
                userName = user.Length > 0 ? user : null;
                userEmail = context.User?.Email;
                apiName = context.Api?.Name;
                operationId = context.Operation?.Id;
                operation = context.Variables.GetValueOrDefault<string>("aoai-operation", "other");
                string named = context.Variables.GetValueOrDefault<string>("aoai-deployment", "");
                deployment = named.Length > 0 ? named : null;
                string asked = context.Variables.GetValueOrDefault<string>("aoai-api-version", "");
                version = asked.Length > 0 ? asked : null;
                streaming = context.Variables.GetValueOrDefault<bool>("aoai-streaming", false);
                status = context.Variables.GetValueOrDefault<int>("aoai-status", 500);
            } catch (Exception e) {
                failure = "Exception";
                try { failure = e.ToString(); } catch (Exception) { }
            }
            JToken usage = null;
            string model = null;
            string response = null;
            JToken request = null;
            try {
                string result = context.Variables.GetValueOrDefault<string>("aoai-result", "");
                JObject found = result.Length > 0 ? JObject.Parse(result) : null;
                JToken fu = found?["usage"];
                JToken fm = found?["model"];
                JToken fr = found?["response"];
                usage = fu != null && fu.Type == JTokenType.Object ? fu : null;
                model = fm != null && fm.Type == JTokenType.String ? (string)fm : null;
                response = fr != null && fr.Type == JTokenType.String ? (string)fr : null;
                bool payload = "{{aoai-capture-payload}}".Trim().ToLowerInvariant() == "true";
                string raw = context.Variables.GetValueOrDefault<string>("aoai-request", "");
                if (raw.Length > 0 && (payload || (usage == null && status >= 200 && status <= 299))) {
                    /* the request copy, shrunk to the budget as aoai_helpers.core.shrink.shrink_request */
                    JObject whole = JObject.Parse(raw);
                    int budget = {%REQUEST_BUDGET%};
                    string marker = {%MARKER%};
                    string[] itemFields = {%ITEM_FIELDS%};
                    string[] textFields = {%TEXT_FIELDS%};
                    string[] listFields = {%LIST_FIELDS%};
                    string itemField = itemFields.FirstOrDefault(f => whole.Property(f) != null);
                    /* every string value (keys are not counted), its text and its length in code
                       points; dates Json.NET parsed are strings again, as the caller sent them */
                    List<JValue> values = new List<JValue>();
                    List<string> texts = new List<string>();
                    List<int> lengths = new List<int>();
                    long strings = 0;
                    long chars = 0;
                    int longest = 0;
                    foreach (JProperty top in whole.Properties().ToList()) {
                        bool isItems = top.Name == itemField;
                        bool isText = textFields.Contains(top.Name);
                        List<JValue> under = top.Value is JValue ? new List<JValue> { (JValue)top.Value } : ((JContainer)top.Value).Descendants().OfType<JValue>().ToList();
                        foreach (JValue v in under) {
                            if (v.Type == JTokenType.Date) { string iso = v.ToString(Newtonsoft.Json.Formatting.None); v.Value = iso.Substring(1, iso.Length - 2); }
                            if (v.Type != JTokenType.String) { continue; }
                            string s = (string)v.Value;
                            int n = s.Length;
                            for (int i = 0; i + 1 < s.Length; i++) {
                                if (char.IsHighSurrogate(s[i]) && char.IsLowSurrogate(s[i + 1])) { n--; i++; }
                            }
                            values.Add(v);
                            texts.Add(s);
                            lengths.Add(n);
                            longest = Math.Max(longest, n);
                            if (isItems && n > 0) { strings++; }
                            if (isText) { chars += n; }
                        }
                    }
                    if (Encoding.UTF8.GetByteCount(whole.ToString(Newtonsoft.Json.Formatting.None)) <= budget) {
                        request = whole;
                    } else {
                        JToken items = itemField == null ? null : whole[itemField];
                        long count = 1;
                        if (items == null || items.Type == JTokenType.Null) { count = 0; }
                        else if (items.Type == JTokenType.Array) { count = ((JArray)items).Count; }
                        else if (items.Type == JTokenType.Object) { count = ((JObject)items).Count > 0 ? 1 : 0; }
                        else if (items.Type == JTokenType.String) { count = ((string)items).Length > 0 ? 1 : 0; }
                        else if (items.Type == JTokenType.Boolean) { count = (bool)items ? 1 : 0; }
                        else if (items.Type == JTokenType.Float) { count = (double)items != 0 ? 1 : 0; }
                        else if (items.Type == JTokenType.Integer) { count = items.ToString(Newtonsoft.Json.Formatting.None) != "0" ? 1 : 0; }
                        JObject stats = new JObject(new JProperty("items", count), new JProperty("strings", strings), new JProperty("chars", chars));
                        int room = budget - Encoding.UTF8.GetByteCount(new JObject(new JProperty(marker, stats.DeepClone())).ToString(Newtonsoft.Json.Formatting.None)) - 1;
                        /* step 1: the largest cap on every string that fits (binary search, as
                           shrink._largest: 0 first, then upper midpoints); then applied once more */
                        int cap = -1;
                        int lo = 0;
                        int hi = longest;
                        int probe = 0;
                        int chosen = -1;
                        bool first = true;
                        while (true) {
                            int c = chosen >= 0 ? chosen : probe;
                            for (int k = 0; k < values.Count; k++) {
                                string s = texts[k];
                                if (lengths[k] <= c) { values[k].Value = s; continue; }
                                int units = 0;
                                for (int n = 0; n < c; n++) {
                                    units += char.IsHighSurrogate(s[units]) && units + 1 < s.Length && char.IsLowSurrogate(s[units + 1]) ? 2 : 1;
                                }
                                values[k].Value = s.Substring(0, units) + "\u2026";
                            }
                            if (chosen >= 0) { break; }
                            bool fits = Encoding.UTF8.GetByteCount(whole.ToString(Newtonsoft.Json.Formatting.None)) <= room;
                            if (first) {
                                first = false;
                                if (!fits) { chosen = {%MIN_CAP%}; continue; }
                            } else if (fits) { lo = probe; } else { hi = probe - 1; }
                            if (lo >= hi) { cap = lo; chosen = Math.Max(cap, {%MIN_CAP%}); continue; }
                            probe = (lo + hi + 1) / 2;
                        }
                        if (cap >= {%MIN_CAP%}) {
                            whole[marker] = stats;
                            request = whole;
                        } else {
                            /* step 2: strings at the minimum cap, and the lists of the prompt (and
                               content parts) thinned to their first and last h items around
                               {"_omitted": n}, h the largest that fits; innermost lists first */
                            List<JProperty> lists = whole.Descendants().OfType<JProperty>().Where(p => p.Value.Type == JTokenType.Array && (listFields.Contains(p.Name) || p.Name == "content")).ToList();
                            lists.Reverse();
                            List<JArray> originals = lists.Select(p => (JArray)p.Value).ToList();
                            bool[] replaced = new bool[lists.Count];
                            int keep = -1;
                            lo = 0;
                            hi = originals.Count == 0 ? 0 : originals.Max(a => a.Count);
                            probe = 0;
                            chosen = -1;
                            first = true;
                            while (true) {
                                int h = chosen >= 0 ? chosen : probe;
                                for (int k = 0; k < lists.Count; k++) {
                                    JArray a = originals[k];
                                    if (a.Count > 2 * h + 1) {
                                        JArray thin = new JArray();
                                        for (int i = 0; i < h; i++) { thin.Add(a[i]); }
                                        thin.Add(new JObject(new JProperty({%OMITTED%}, a.Count - 2 * h)));
                                        for (int i = a.Count - h; i < a.Count; i++) { thin.Add(a[i]); }
                                        lists[k].Value = thin;
                                        replaced[k] = true;
                                    } else if (replaced[k]) {
                                        lists[k].Value = a;
                                        replaced[k] = false;
                                    }
                                }
                                if (chosen >= 0) { break; }
                                bool fits = Encoding.UTF8.GetByteCount(whole.ToString(Newtonsoft.Json.Formatting.None)) <= room;
                                if (first) {
                                    first = false;
                                    if (!fits) { break; }
                                } else if (fits) { lo = probe; } else { hi = probe - 1; }
                                if (lo >= hi) { keep = lo; chosen = keep; continue; }
                                probe = (lo + hi + 1) / 2;
                            }
                            if (keep >= 0) {
                                whole[marker] = stats;
                                request = whole;
                            } else {
                                request = new JObject(new JProperty(marker, stats));
                            }
                        }
                    }
                }
            } catch (Exception e) {
                if (failure == null) {
                    failure = "Exception";
                    try { failure = e.ToString(); } catch (Exception) { }
                }
            }
            string unloggable = null;
            if (failure != null) {
                int end = 0;
                while (end < failure.Length && (char.IsLetterOrDigit(failure[end]) || failure[end] == '.' || failure[end] == '_')) { end++; }
                unloggable = failure.Substring(0, end);
                unloggable = unloggable.Substring(unloggable.LastIndexOf('.') + 1);
                if (unloggable.Length == 0) { unloggable = "Exception"; }
            }
            return new JObject(
                new JProperty("EventVersion", 2),
                new JProperty("RequestId", requestId),
                new JProperty("ExecTimeUTC", execTime),
                new JProperty("GatewayRegion", region),
                new JProperty("GatewayServiceName", serviceName),
                new JProperty("SubscriptionId", subscriptionId),
                new JProperty("SubscriptionName", subscriptionName),
                new JProperty("ProductName", productName),
                new JProperty("UserName", userName),
                new JProperty("UserEmail", userEmail),
                new JProperty("ApiName", apiName),
                new JProperty("OperationId", operationId),
                new JProperty("Operation", operation),
                new JProperty("DeploymentName", deployment),
                new JProperty("ApiVersion", version),
                new JProperty("IsStreaming", streaming),
                new JProperty("StatusCode", status),
                new JProperty("Model", model),
                new JProperty("Usage", usage),
                new JProperty("Request", unloggable != null ? new JObject(new JProperty("_unloggable", unloggable)) : request),
                new JProperty("ResponseString", response)
            ).ToString(Newtonsoft.Json.Formatting.None);
        }"""
