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
both ``log-to-eventhub`` policies, in :mod:`~aoai_helpers.azure.apim.event_expression`; the
templates and their placeholders are :mod:`~aoai_helpers.azure.apim.templating`'s).
Expressions in attributes carry no ``//`` comment: XML turns an attribute's newlines into
spaces.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from aoai_helpers.azure.apim.event_expression import (
    EVENT_BUDGET as EVENT_BUDGET,
)
from aoai_helpers.azure.apim.event_expression import (
    REQUEST_BUDGET as REQUEST_BUDGET,
)
from aoai_helpers.azure.apim.event_expression import (
    RESPONSE_BUDGET,
    cs_string,
    event_expression,
    policy_fields,
)
from aoai_helpers.azure.apim.templating import render, template
from aoai_helpers.core import routes
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
        f"    {_verbatim(_dotnet_regex(p.pattern))}, {cs_string(op)}" for p, op in routes.METERED
    )
    unmetered = ",\n".join(
        f"    {cs_string(name)}, {_verbatim(_dotnet_regex(p.pattern))}"
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
        f"string notCanonical = {cs_string(_refusal('POST', '/openai/'))};",
        f"string notFound = {cs_string(_refusal('POST', '/x'))};",
        f"string[] notServed = new[] {{ {cs_string(before + quote)}, {cs_string(quote + after)} }};",
        f"string apiPath = {cs_string('/' + front if front else '')};",
    ]
    return "\n".join(lines)


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
        names = ", ".join(cs_string(d) for d in backend.deployments)
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
        f"@(string.Equals(context.Subscription?.Id, {cs_string(subscription_id)}, "
        "StringComparison.OrdinalIgnoreCase))"
    )


def _attr_text(value: str) -> str:
    """``value`` escaped for a double-quoted XML attribute."""
    return escape(value, {'"': "&quot;"})


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.split("\n"))
