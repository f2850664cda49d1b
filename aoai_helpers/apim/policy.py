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
:data:`~aoai_helpers.events.V2_FIELDS`. The product policy holds the per-subscription
``llm-token-limit`` policies. Facts relied on, from the Azure API Management docs
(policies/README.md has the details and what could not be confirmed):

- ``log-to-eventhub`` truncates messages over 200 KB (log-to-eventhub-policy): the event is
  kept under 100 KB (request ≤ 50 KB, response text ≤ 33 KB, as the local gateway does);
- ``forward-request buffer-response`` takes no policy expression (forward-request-policy),
  hence a ``<choose>`` with two ``forward-request`` elements; ``false`` relays SSE chunks at
  once (how-to-server-sent-events);
- ``set-variable`` stores basic types only (set-variable-policy, "Allowed types"), so the
  request body read once with ``As<JObject>(preserveContent: true)`` is kept as JSON text;
- ``llm-token-limit``: inbound section, product scope allowed, usable several times per
  policy definition (llm-token-limit-policy); ``choose`` lists no excluded policies.

The output is well-formed XML with escaped expressions: apply it with :data:`POLICY_FORMAT`
(``xml``), not ``rawxml`` (a non-XML-encoded document, PolicyContentFormat).
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

from ..clouds import get_cloud
from ..events import LOG_TO_EVENTHUB_LIMIT
from ..exceptions import ConfigError
from ..masking import mask
from ..spec import Backend, CaptureMode, Spec, TokenLimit

__all__ = [
    "POLICY_FORMAT",
    "NamedValue",
    "PolicySettings",
    "key_env_var",
    "named_values",
    "policy_fields",
    "policy_settings",
    "render",
    "render_api_policy",
    "render_product_policy",
    "template",
]

#: ``PolicyContract.format`` for the rendered policies (escaped XML, see the module docstring).
POLICY_FORMAT: Final = "xml"
#: Named values the API policy reads (the backend keys come on top, one per key name).
CAPTURE_STREAMING: Final = "aoai-capture-streaming"
INCLUDE_USAGE_VERSIONS: Final = "aoai-include-usage-api-versions"
CAPTURE_PAYLOAD: Final = "aoai-capture-payload"
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
        resources.files("aoai_helpers.apim").joinpath("templates", name).read_text(encoding="utf-8")
    )


@dataclass(frozen=True)
class PolicySettings:
    """What the API policy reads through named values (the local gateway reads the same)."""

    capture: CaptureMode
    include_usage_api_versions: tuple[str, ...]
    payload: bool


def policy_settings(spec: Spec) -> PolicySettings:
    """The capture settings of ``spec``, as the policy and the local gateway apply them."""
    return PolicySettings(
        capture=spec.capture.streaming,
        include_usage_api_versions=tuple(spec.capture.include_usage_api_versions),
        payload=spec.capture.payload,
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

    The three capture settings, then one secret per ``key_named_value`` of the ``auth: key``
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
            "REQUEST_BUDGET": str(REQUEST_BUDGET),
            "RESPONSE_BUDGET": str(RESPONSE_BUDGET),
        },
    )


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
    resource = get_cloud(spec.cloud).cognitive_resource
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
