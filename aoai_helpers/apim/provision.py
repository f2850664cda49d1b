"""Provisioning as plan → apply, through azure-mgmt-apimanagement, -eventhub and -monitor.

:func:`plan` compares what the spec wants (:func:`~aoai_helpers.apim.resources.desired_resources`)
with what exists (one GET per resource) and returns ordered :class:`Step` objects: ``create``,
``update`` (naming the fields that differ) or ``noop``. Offline (no clients) it assumes nothing
exists, so it needs no credentials or network. :func:`apply` sends the creates and updates, in
order, and nothing else: applying the same spec twice leaves the second plan all no-ops, and
its apply sends only GETs. The one exception is what earlier provisioning created and this one
no longer does (:func:`~aoai_helpers.apim.resources.retired_resources`: the ``v1_other``
catch-all operation): online, the plan reads it too and lists it in :attr:`Plan.retired` when
it still exists; apply then deletes it (``If-Match: *``), after the creates and updates.

Secrets are compared by presence only (ARM never returns them) and masked in every display.
BU subscription keys are read (``listSecrets``) only when a key file is asked for; they are
written with mode 0600 and shown masked.

The language-model log's two resources the SDKs do not model (see
:mod:`~aoai_helpers.apim.resources`) go through the management clients' own pipelines
(``_send_request(HttpRequest(…))``: the same credential, ARM endpoint, scope and transport):
the API diagnostic through the APIM client, at ``2024-10-01-preview``, because
azure-mgmt-apimanagement 5.x speaks ``2024-05-01``, whose ``DiagnosticContract`` has no
``largeLanguageModel``; the diagnostic setting through azure-mgmt-monitor's client, because
azure-mgmt-monitor 7.0.0 no longer has a ``diagnostic_settings`` operation group (6.x had it;
8.0.0b1 adds it back). Both are ``GET`` then, when needed, ``PUT`` of the whole resource —
never ``PATCH``. ``_send_request`` is how the generated clients document sending a request
they have no method for (their docstring: ``>>> response = client._send_request(request)``,
"see https://aka.ms/azsdk/dpcodegen/python/send_request").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from .._files import write_private
from ..clouds import Cloud, get_cloud
from ..exceptions import ConfigError
from ..llmlog_azure import LOG_ANALYTICS_READER
from ..masking import mask
from ..spec import Spec
from .policy import POLICY_FORMAT
from .resources import (
    MISSING_SEND_CONNECTION,
    SECRET_FROM_SEND_RULE,
    Resource,
    desired_resources,
    retired_resources,
)

__all__ = [
    "ApplyResult",
    "Clients",
    "Plan",
    "Step",
    "apply",
    "arm_delete",
    "arm_get",
    "arm_put",
    "dry_run",
    "make_clients",
    "plan",
    "write_keys",
]

Action = Literal["create", "update", "noop"]


@dataclass(frozen=True)
class Step:
    action: Action
    resource: Resource
    changes: tuple[str, ...] = ()


@dataclass
class Plan:
    """An ordered list of steps for one spec on one cloud.

    ``retired``: resources an earlier provisioning created that this one does not, found to
    exist (online plans only); apply deletes them after the steps."""

    spec: Spec
    cloud: Cloud
    subscription_id: str
    steps: list[Step]
    offline: bool
    retired: list[Resource] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "noop": 0}
        for step in self.steps:
            out[step.action] += 1
        return out

    def render(self) -> str:
        """A reviewable table: action, kind, name, ARM request, what changes (secrets masked)."""
        head = (
            f"Plan for APIM {self.spec.apim.service_name} on {self.cloud.name} "
            f"({self.cloud.arm_endpoint})"
            + (" — offline: assumes nothing exists yet" if self.offline else "")
        )
        lines = [
            head,
            f"requests: PUT/GET {self.cloud.arm_endpoint}/subscriptions/{self.subscription_id}/…/providers/<below>?api-version=…",
            "",
        ]
        for i, step in enumerate(self.steps, 1):
            r = step.resource
            where = r.resource_id.split("/providers/", 1)[-1]
            detail = f"  (changes: {', '.join(step.changes)})" if step.changes else ""
            lines.append(f"{i:>3}  {step.action:<6} {r.kind:<23} {where}{detail}")
        for i, r in enumerate(self.retired, len(self.steps) + 1):
            where = r.resource_id.split("/providers/", 1)[-1]
            note = "  (created by an earlier provisioning, no longer wanted)"
            lines.append(f"{i:>3}  {'delete':<6} {r.kind:<23} {where}{note}")
        c = self.counts()
        summary = f"{c['create']} to create, {c['update']} to update, {c['noop']} unchanged"
        if self.retired:
            summary += f", {len(self.retired)} to delete"
        lines += ["", summary]
        for warning in self.warnings():
            lines += ["", f"warning: {warning}"]
        roles = self.role_assignments()
        if roles:
            lines += [
                "",
                "Not done by this plan (grant once, e.g. with az role assignment create):",
            ]
            lines += [f"  - {role}" for role in roles]
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """Spec values that look wrong for the chosen cloud (not errors: endpoints can be
        custom), and what the spec leaves inexact."""
        out = [
            f"backend {b.name} ({b.endpoint}) is not an {self.cloud.name} AOAI endpoint (*.{self.cloud.aoai_suffix})"
            for b in self.spec.backends
            if not b.endpoint.lower().endswith("." + self.cloud.aoai_suffix)
        ]
        llm = self.spec.llm_log
        if llm.workspace_resource_id is None:
            out.append(
                "pass-through streams stay prompt_only: set llm_log.workspace_resource_id (a Log "
                "Analytics workspace) and llm_log.workspace_id so APIM's language-model log is "
                "provisioned and reconcile gives them their exact usage"
            )
        elif not llm.workspace_id:
            out.append(
                "llm_log.workspace_id (the workspace's GUID, its 'Workspace ID') is not set: the "
                "language-model log is provisioned, but reconcile cannot query it"
            )
        return out

    def role_assignments(self) -> list[str]:
        """RBAC grants the managed-identity options need, which this plan does not make."""
        out = []
        for backend in self.spec.backends:
            if backend.auth == "managed_identity":
                out.append(
                    f"'Cognitive Services OpenAI User' for APIM's managed identity on {backend.endpoint}"
                )
        eh = self.spec.event_hub
        if eh.auth == "managed_identity":
            who = (
                "APIM's system-assigned identity"
                if eh.identity_client_id == "SystemAssigned"
                else f"identity {eh.identity_client_id}"
            )
            out.append(f"'Azure Event Hubs Data Sender' for {who} on hub {eh.namespace}/{eh.name}")
        workspace = self.spec.llm_log.workspace_resource_id
        if workspace is not None:
            fn = self.spec.function
            readers = (
                f"for the function app {fn.name}'s managed identity (the reconcile timer) and "
                if fn is not None
                else "for "
            )
            out.append(
                f"'Log Analytics Reader' (role id {LOG_ANALYTICS_READER}) {readers}for the "
                f"identity that runs `python -m aoai_helpers reconcile`, on workspace {workspace}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The plan with request bodies, secrets masked (for review or a change ticket)."""
        return {
            "cloud": self.cloud.name,
            "offline": self.offline,
            "steps": [
                {
                    "action": s.action,
                    "kind": s.resource.kind,
                    "name": s.resource.name,
                    "method": "PUT" if s.action != "noop" else None,
                    "url": s.resource.url(self.cloud),
                    "changes": list(s.changes),
                    "body": masked_body(s.resource),
                }
                for s in self.steps
            ],
            "retired": [
                {"kind": r.kind, "name": r.name, "method": "DELETE", "url": r.url(self.cloud)}
                for r in self.retired
            ],
        }


def masked_body(resource: Resource) -> Any:
    body = copy.deepcopy(resource.body)
    for path in resource.secret:
        parent, key = _parent(body, path)
        if parent is not None and parent.get(key) is not None:
            parent[key] = mask(parent[key])
    if resource.kind == "api" and isinstance(body, dict):
        value = body["properties"]["value"]
        if not value.startswith("http"):
            body["properties"]["value"] = f"<OpenAPI document, {len(value):,} characters>"
    return body


def _parent(body: Any, path: str) -> tuple[dict[str, Any] | None, str]:
    *heads, last = path.split(".")
    node = body
    for part in heads:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: node}


def _differences(resource: Resource, existing: dict[str, Any]) -> tuple[str, ...]:
    """Dotted paths whose desired value differs from what exists (secrets, create-only skipped;
    under an ``exact`` path, values that exist but are not wanted count too)."""
    if resource.body is None:
        return ()
    skip = set(resource.secret) | set(resource.create_only)
    have = _leaves(existing)
    wanted = _leaves(resource.body)
    changed = []
    for path, want in wanted.items():
        if path in skip or any(path.startswith(s + ".") for s in skip):
            continue
        got = have.get(path)
        if _equivalent(resource, path, want, got):
            continue
        if want != got and not (_empty(want) and _empty(got)):
            changed.append(path.removeprefix("properties."))
    for prefix in resource.exact:
        for path, got in have.items():
            if path.startswith(prefix + ".") and path not in wanted and not _empty(got):
                changed.append(path.removeprefix("properties."))
    return tuple(changed)


def _empty(value: Any) -> bool:
    return value in (None, [], {})


def _equivalent(resource: Resource, path: str, want: Any, got: Any) -> bool:
    """Values that are equal though ARM returns them in another form."""
    if path == "properties.logs" and resource.kind == "diagnostic-setting":
        return _same_categories(want, got)
    if not (isinstance(want, str) and isinstance(got, str)):
        return False
    if path == "properties.scope":  # ARM returns the scope as a full id
        return got.lower().endswith(want.lower())
    if path == "properties.loggerId":  # a full id, or the service-relative /loggers/{id}
        tail = "/loggers/" + want.rsplit("/loggers/", 1)[-1]
        return got.lower().endswith(tail.lower())
    if path == "properties.workspaceId":  # ARM ids are case-insensitive
        return got.lower() == want.lower()
    if path == "properties.value" and resource.kind.endswith("policy"):
        return _same_xml(want, got)  # APIM may re-serialize the XML
    return False


def _same_categories(want: Any, got: Any) -> bool:
    """Every wanted log category is there, enabled alike (ARM adds ``retentionPolicy`` …)."""
    if not isinstance(want, list) or not isinstance(got, list):
        return False
    found = {
        str(g.get("category", "")).lower(): g.get("enabled")
        for g in got
        if isinstance(g, dict) and g.get("category")
    }
    return all(found.get(str(w["category"]).lower()) == w["enabled"] for w in want)


def _same_xml(a: str, b: str) -> bool:
    """Equal as canonical XML (C14N 2.0, whitespace-only text ignored)."""
    try:
        return ET.canonicalize(a, strip_text=True) == ET.canonicalize(b, strip_text=True)
    except ET.ParseError:
        return a == b


@dataclass
class Clients:
    """The management clients of one cloud and Azure subscription."""

    apim: Any
    eventhub: Any = None
    rg: str = ""
    service: str = ""
    monitor: Any = None


def make_clients(
    spec: Spec, cloud: Cloud, subscription_id: str, credential: Any, transport: Any = None
) -> Clients:
    """APIM (and Event Hubs, when the spec creates the hub; Monitor, when it has a language-model
    log workspace) clients on ``cloud``'s ARM endpoint."""
    from azure.mgmt.apimanagement import ApiManagementClient

    kwargs: dict[str, Any] = {
        "base_url": cloud.arm_endpoint,
        "credential_scopes": [cloud.arm_scope],
    }
    if transport is not None:
        kwargs["transport"] = transport
    apim = ApiManagementClient(credential, subscription_id, **kwargs)
    eventhub = None
    if spec.event_hub.create:
        from azure.mgmt.eventhub import EventHubManagementClient

        eventhub = EventHubManagementClient(credential, subscription_id, **kwargs)
    monitor = None
    if spec.llm_log.workspace_resource_id is not None:
        from azure.mgmt.monitor import MonitorManagementClient

        monitor = MonitorManagementClient(credential, subscription_id, **kwargs)
    return Clients(apim, eventhub, spec.apim.resource_group, spec.apim.service_name, monitor)


# --- resources the SDKs do not model: raw requests through the clients' pipelines ---------


def _arm_client(c: Clients, r: Resource) -> Any:
    client = c.monitor if r.kind == "diagnostic-setting" else c.apim
    if client is None:
        raise ConfigError(f"no management client for {r.kind} {r.name} (make_clients)")
    return client


def _arm_request(c: Clients, r: Resource, method: str, body: Any = None) -> Any:
    """One request to ``r``'s ARM id through the client's pipeline; ``ResourceNotFoundError`` on
    404, ``HttpResponseError`` on any other error status."""
    from azure.core.rest import HttpRequest

    kwargs: dict[str, Any] = {"params": {"api-version": r.api_version}}
    if body is not None:
        kwargs["json"] = body
    if method == "DELETE" and r.kind == "api-diagnostic":
        kwargs["headers"] = {"If-Match": "*"}  # ApiDiagnostic_Delete: If-Match is required
    response = _arm_client(c, r)._send_request(HttpRequest(method, r.resource_id, **kwargs))
    if response.status_code == 404:
        raise ResourceNotFoundError(response=response)
    if response.status_code >= 400:
        raise HttpResponseError(response=response)
    return response


def arm_get(c: Clients, r: Resource) -> dict[str, Any] | None:
    """The resource as ARM returns it, ``None`` when it does not exist."""
    try:
        response = _arm_request(c, r, "GET")
    except ResourceNotFoundError:
        return None
    found = response.json()
    return dict(found) if isinstance(found, dict) else {}


def arm_put(c: Clients, r: Resource, body: Any) -> None:
    _arm_request(c, r, "PUT", body)


def arm_delete(c: Clients, r: Resource) -> None:
    _arm_request(c, r, "DELETE")


# --- one GET and one PUT per kind ----------------------------------------------------------


def _get(c: Clients, r: Resource) -> dict[str, Any] | None:
    rg, svc, p = c.rg, c.service, r.parents
    try:
        if r.kind.startswith("eventhub"):
            ns_args = (p["resource_group"], p["namespace"], p["hub"])
            if r.kind == "eventhub":
                found = c.eventhub.event_hubs.get(*ns_args)
            elif r.kind == "eventhub-consumer-group":
                found = c.eventhub.consumer_groups.get(*ns_args, r.name)
            else:
                found = c.eventhub.event_hubs.get_authorization_rule(*ns_args, r.name)
            return dict(found.as_dict())
        if r.kind == "product-api":
            apis = c.apim.product_api.list_by_product(rg, svc, p["product"])
            return {} if any(a.name == r.name for a in apis) else None
        if r.kind in ("api-diagnostic", "diagnostic-setting"):
            return arm_get(c, r)
        getters: dict[str, Callable[[], Any]] = {
            "named-value": lambda: c.apim.named_value.get(rg, svc, r.name),
            "logger": lambda: c.apim.logger.get(rg, svc, r.name),
            "llm-logger": lambda: c.apim.logger.get(rg, svc, r.name),
            "api": lambda: c.apim.api.get(rg, svc, r.name),
            "api-operation": lambda: c.apim.api_operation.get(rg, svc, p["api"], r.name),
            "api-policy": lambda: c.apim.api_policy.get(
                rg, svc, p["api"], "policy", format=POLICY_FORMAT
            ),
            "product": lambda: c.apim.product.get(rg, svc, r.name),
            "product-policy": lambda: c.apim.product_policy.get(
                rg, svc, p["product"], "policy", format=POLICY_FORMAT
            ),
            "subscription": lambda: c.apim.subscription.get(rg, svc, r.name),
        }
        found = getters[r.kind]()
        return dict(found.serialize(keep_readonly=True))
    except ResourceNotFoundError:
        return None


def _put(c: Clients, r: Resource, body: Any) -> None:
    from azure.mgmt.apimanagement import models as m

    rg, svc, p = c.rg, c.service, r.parents
    if r.kind.startswith("eventhub"):
        ns_args = (p["resource_group"], p["namespace"], p["hub"])
        if r.kind == "eventhub":
            c.eventhub.event_hubs.create_or_update(*ns_args, body)
        elif r.kind == "eventhub-consumer-group":
            c.eventhub.consumer_groups.create_or_update(*ns_args, r.name, body)
        else:
            c.eventhub.event_hubs.create_or_update_authorization_rule(*ns_args, r.name, body)
        return
    apim = c.apim
    if r.kind == "named-value":
        apim.named_value.begin_create_or_update(
            rg, svc, r.name, m.NamedValueCreateContract.deserialize(body)
        ).result()
    elif r.kind in ("logger", "llm-logger"):
        apim.logger.create_or_update(rg, svc, r.name, m.LoggerContract.deserialize(body))
    elif r.kind in ("api-diagnostic", "diagnostic-setting"):
        arm_put(c, r, body)
    elif r.kind == "api":
        apim.api.begin_create_or_update(
            rg, svc, r.name, m.ApiCreateOrUpdateParameter.deserialize(body)
        ).result()
    elif r.kind == "api-operation":
        apim.api_operation.create_or_update(
            rg, svc, p["api"], r.name, m.OperationContract.deserialize(body)
        )
    elif r.kind == "api-policy":
        apim.api_policy.create_or_update(
            rg, svc, p["api"], "policy", m.PolicyContract.deserialize(body)
        )
    elif r.kind == "product":
        apim.product.create_or_update(rg, svc, r.name, m.ProductContract.deserialize(body))
    elif r.kind == "product-api":
        apim.product_api.create_or_update(rg, svc, p["product"], r.name)
    elif r.kind == "product-policy":
        apim.product_policy.create_or_update(
            rg, svc, p["product"], "policy", m.PolicyContract.deserialize(body)
        )
    elif r.kind == "subscription":
        apim.subscription.create_or_update(
            rg, svc, r.name, m.SubscriptionCreateParameters.deserialize(body)
        )
    else:  # pragma: no cover - desired_resources only makes the kinds above
        raise ValueError(f"unknown resource kind {r.kind}")


# --- plan and apply --------------------------------------------------------------------------


def _subscription_id(spec: Spec, offline: bool) -> str:
    if spec.subscription_id:
        return spec.subscription_id
    if offline:
        return "00000000-0000-0000-0000-000000000000"
    raise ConfigError(
        "the spec has no subscription_id (the Azure subscription of the APIM service)"
    )


def plan(
    spec: Spec,
    *,
    clients: Clients | None = None,
    cloud: str | None = None,
    env: Mapping[str, str] | None = None,
    subscription_id: str | None = None,
) -> Plan:
    """The ordered steps that make Azure match ``spec`` (offline when ``clients`` is None)."""
    spec = spec.for_cloud(cloud)  # --cloud overrides the spec everywhere (policy audience too)
    the_cloud = get_cloud(spec.cloud)
    offline = clients is None
    sub = subscription_id or _subscription_id(spec, offline)
    desired = desired_resources(spec, the_cloud, sub, os.environ if env is None else env)
    steps = []
    for resource in desired:
        existing = None if clients is None else _get(clients, resource)
        if existing is None:
            steps.append(Step("create", resource))
            continue
        changes = _differences(resource, existing)
        steps.append(Step("update" if changes else "noop", resource, changes))
    retired = []
    if clients is not None:
        retired = [r for r in retired_resources(spec, sub) if _get(clients, r) is not None]
    return Plan(spec, the_cloud, sub, steps, offline, retired)


@dataclass
class ApplyResult:
    done: list[Step] = field(default_factory=list)
    keys_file: Path | None = None
    removed: list[Resource] = field(default_factory=list)


def apply(
    the_plan: Plan,
    clients: Clients,
    *,
    keys_out: str | os.PathLike[str] | None = None,
    on_step: Callable[[int, int, Step], None] | None = None,
) -> ApplyResult:
    """Send the plan's creates and updates in order; optionally write the BU keys (0600)."""
    missing = [
        s.resource.name
        for s in the_plan.steps
        if s.action != "noop"
        and s.resource.kind == "named-value"
        and _is_missing_secret(s.resource)
    ]
    if missing:
        raise ConfigError(
            f"no value for secret named value(s) {', '.join(missing)}: set AOAI_BACKEND_KEY "
            "(or AOAI_BACKEND_KEY_<BACKEND>), or key_vault_secret_id in the spec"
        )
    if any(
        _credentials(s.resource).get("connectionString") == MISSING_SEND_CONNECTION
        for s in the_plan.steps
        if s.action != "noop"
    ):
        raise ConfigError(
            "event_hub.auth is connection_string: set AOAI_EVENTHUB_SEND_CONNECTION to a Send-only "
            "connection string, or let the spec create the hub (event_hub.create: true)"
        )
    result = ApplyResult()
    todo = [s for s in the_plan.steps if s.action != "noop"]
    for i, step in enumerate(todo, 1):
        if on_step:
            on_step(i, len(todo), step)
        body = step.resource.body
        if step.resource.kind == "logger" and _uses_send_rule(step.resource):
            body = _with_send_rule_connection(clients, the_plan.spec, step.resource)
        _put(clients, step.resource, body)
        result.done.append(step)
    for r in the_plan.retired:
        _delete_retired(clients, r)
        result.removed.append(r)
    if keys_out is not None:
        result.keys_file = write_keys(clients, the_plan.spec, Path(keys_out))
    return result


def _delete_retired(c: Clients, r: Resource) -> None:
    """Delete a retired resource (only operations are retired); already gone counts as done."""
    if r.kind != "api-operation":  # pragma: no cover - retired_resources lists operations only
        raise ValueError(f"cannot delete retired {r.kind} {r.name}")
    with contextlib.suppress(ResourceNotFoundError):
        c.apim.api_operation.delete(c.rg, c.service, r.parents["api"], r.name, if_match="*")


def _is_missing_secret(r: Resource) -> bool:
    props = (r.body or {}).get("properties", {})
    return bool(props.get("secret")) and "keyVault" not in props and props.get("value") is None


def _credentials(r: Resource) -> dict[str, Any]:
    creds = (r.body or {}).get("properties", {}).get("credentials")
    return creds if isinstance(creds, dict) else {}


def _uses_send_rule(r: Resource) -> bool:
    return _credentials(r).get("connectionString") == SECRET_FROM_SEND_RULE


def _with_send_rule_connection(c: Clients, spec: Spec, r: Resource) -> dict[str, Any]:
    eh = spec.event_hub
    keys = c.eventhub.event_hubs.list_keys(
        eh.resource_group or spec.apim.resource_group, eh.namespace, eh.name, eh.send_rule
    )
    body = copy.deepcopy(r.body) or {}
    body["properties"]["credentials"]["connectionString"] = keys.primary_connection_string
    return body


def write_keys(c: Clients, spec: Spec, path: Path) -> Path:
    """Each BU subscription's primary key, to ``path`` with mode 0600 (never printed)."""
    keys = {}
    for sub in spec.subscriptions:
        secrets = c.apim.subscription.list_secrets(c.rg, c.service, sub.id)
        keys[sub.id] = {"business_unit": sub.business_unit, "primary_key": secrets.primary_key}
    write_private(path, {"apim_service": spec.apim.service_name, "subscriptions": keys})
    return path


def dry_run(the_plan: Plan, *, repeat: bool = False) -> list[Any]:
    """Apply ``the_plan`` through the real SDK calls against the in-memory ARM of
    :mod:`aoai_helpers.azure_dryrun`; return the HTTP requests the SDK sent (no network).

    ``repeat`` then plans and applies the same spec again, as a second real apply would, and
    returns only that second run's requests (all GETs when provisioning is idempotent).
    """
    from ..azure_dryrun import DryRunCredential, DryRunTransport

    transport = DryRunTransport()
    clients = make_clients(
        the_plan.spec, the_plan.cloud, the_plan.subscription_id, DryRunCredential(), transport
    )
    env = _dry_run_env(the_plan)
    args: dict[str, Any] = {
        "cloud": the_plan.cloud.name,
        "env": env,
        "subscription_id": the_plan.subscription_id,
    }
    first = plan(the_plan.spec, clients=clients if repeat else None, **args)
    transport.requests.clear()
    _apply_quietly(first, clients)
    if not repeat:
        return list(transport.requests)
    transport.requests.clear()
    second = plan(the_plan.spec, clients=clients, **args)
    _apply_quietly(second, clients)
    return list(transport.requests)


def _dry_run_env(the_plan: Plan) -> dict[str, str]:
    """Placeholders for secrets the plan could not read, so a dry run can go through."""
    env = dict(os.environ)
    env.setdefault("AOAI_BACKEND_KEY", "<dry-run: backend key>")
    if not the_plan.spec.event_hub.create:
        env.setdefault("AOAI_EVENTHUB_SEND_CONNECTION", "<dry-run: send connection string>")
    return env


def _apply_quietly(the_plan: Plan, clients: Clients) -> None:
    steps = [
        Step(s.action, _fill_secret(s.resource), s.changes) if _is_missing_secret(s.resource) else s
        for s in the_plan.steps
    ]
    apply(
        Plan(
            the_plan.spec,
            the_plan.cloud,
            the_plan.subscription_id,
            steps,
            the_plan.offline,
            the_plan.retired,
        ),
        clients,
    )


def _fill_secret(r: Resource) -> Resource:
    body = copy.deepcopy(r.body) or {}
    body["properties"]["value"] = "<dry-run: secret>"
    return dataclasses.replace(r, body=body)
