"""Provisioning as plan → apply, through azure-mgmt-apimanagement, -eventhub and -monitor.

:func:`plan` compares what the spec wants (:func:`~aoai_helpers.azure.apim.resources.desired_resources`)
with what exists (one GET per resource) and returns ordered :class:`Step` objects: ``create``,
``update`` (naming the fields that differ) or ``noop``. Offline (no clients) it assumes nothing
exists, so it needs no credentials or network. :func:`apply` sends the creates and updates, in
order, and nothing else: applying the same spec twice leaves the second plan all no-ops, and
its apply sends only GETs. The one exception is what earlier provisioning created and this one
no longer does (:func:`~aoai_helpers.azure.apim.resources.retired_resources`: the ``v1_other``
catch-all operation): online, the plan reads it too and lists it in :attr:`Plan.retired` when
it still exists; apply then deletes it (``If-Match: *``), after the creates and updates.

Online, the plan first reads two facts of what exists: the APIM service's tier (``GET``
service → ``sku.name``; a missing service is an error — provisioning never creates it) and,
with ``event_hub.create``, the Event Hubs namespace's tier (``GET`` namespace → ``sku.tier``;
a namespace with ``clusterArmId`` counts as Dedicated). Offline it takes ``apim.sku`` and
``event_hub.tier`` from the spec (unknown: the service is taken to have users, and retention is
checked online only). From them: the BU owners' APIM users (none on Consumption: UserName and
UserEmail stay empty there), the hub's retention properties, and the plan's errors
(:meth:`Plan.errors`: token limits on Consumption, a retention the tier cannot hold, an API
that cannot be imported) — apply refuses a plan with errors. Each owner email is looked up
once (``GET`` its user id, then ``users?$filter=email eq '…'``): a user the service already
has with that email owns the subscription and is not changed.

Online, the plan also asks the cloud's ARM which api-versions it serves
(:func:`check_api_versions`): one ``GET /subscriptions/{id}/providers/{namespace}?api-version=2021-04-01`` (Providers_Get) per
resource provider its requests use, through the APIM client's pipeline. Each (resource type,
api-version) the plan would send must be in that listing's ``resourceTypes[].apiVersions``: a
missing one is a plan error naming the versions the cloud offers, instead of an
``InvalidApiVersion`` halfway through apply. A provider that cannot be read (403, unknown) is a
warning saying what was not checked.

Secrets are compared by presence only (ARM never returns them) and masked in every display.
BU subscription keys are read (``listSecrets``) only when a key file is asked for; they are
written with mode 0600 and shown masked.

The language-model log's two resources the SDKs do not model (see
:mod:`~aoai_helpers.azure.apim.resources`) go through the management clients' own pipelines
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
from typing import Any, Final, Literal

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from aoai_helpers.azure.apim.policy import POLICY_FORMAT
from aoai_helpers.azure.apim.resources import (
    APIM_API_VERSION,
    EVENTHUB_API_VERSION,
    MISSING_SEND_CONNECTION,
    SECRET_FROM_SEND_RULE,
    Resource,
    apim_user_id,
    desired_resources,
    retired_resources,
)
from aoai_helpers.azure.roles import LOG_ANALYTICS_READER, Principal, render_roles, required_roles
from aoai_helpers.clouds import Cloud, get_cloud
from aoai_helpers.core.files import write_private
from aoai_helpers.core.masking import mask
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import MAX_RETENTION_DAYS, Spec, retention_problem, token_limit_problem

__all__ = [
    "LOG_ANALYTICS_READER",
    "PROVIDERS_API_VERSION",
    "ApplyResult",
    "Clients",
    "Plan",
    "Step",
    "apply",
    "arm_delete",
    "arm_get",
    "arm_put",
    "check_api_versions",
    "dry_run",
    "live_apim_sku",
    "live_eventhub_tier",
    "make_clients",
    "plan",
    "resource_type",
    "write_keys",
]

#: Providers_Get (Microsoft.Resources ``2021-04-01``, resources.json): a provider's resource
#: types and the api-versions each serves
PROVIDERS_API_VERSION: Final = "2021-04-01"

Action = Literal["create", "update", "noop"]
#: Where a tier the plan used came from: ARM (online), the spec (offline), or nowhere.
Source = Literal["live", "spec", "unknown"]
_ROLE_GROUPS: tuple[tuple[Principal, str], ...] = (
    ("apim", "APIM's managed identity"),
    ("function", "the ingestion function's identity"),
    ("operator", "whoever runs the commands"),
)


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
    #: the APIM tier (``sku.name``) the plan was made for, and where it came from
    apim_sku: str | None = None
    apim_sku_source: Source = "unknown"
    #: the Event Hubs namespace tier (``sku.tier``), with ``event_hub.create`` only
    eventhub_tier: str | None = None
    eventhub_tier_source: Source = "unknown"
    #: owner email → the id of a user the service already had with it (reused, not changed)
    reused_owners: dict[str, str] = field(default_factory=dict)
    #: online only: the api-versions were checked against the cloud's Providers_Get listing;
    #: what is missing there (errors) and what could not be checked (warnings)
    api_versions_checked: bool = False
    api_version_errors: list[str] = field(default_factory=list)
    api_version_warnings: list[str] = field(default_factory=list)

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
            "api-versions: " + self.api_versions_text(),
            f"APIM tier: {self._tier_text(self.apim_sku, self.apim_sku_source, 'apim.sku')}",
        ]
        if self.spec.event_hub.create:
            lines.append(
                "Event Hubs namespace tier: "
                + self._tier_text(self.eventhub_tier, self.eventhub_tier_source, "event_hub.tier")
            )
        lines.append(f"API document: {self.api_document()}")
        lines += [
            f"owner {email}: existing APIM user {uid} (reused, not changed)"
            for email, uid in sorted(self.reused_owners.items())
        ]
        lines.append("")
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
        for error in self.errors():
            lines += ["", f"error: {error}"]
        needs = required_roles(self.spec)
        if needs:
            lines += [
                "",
                "Not done by this plan: roles to grant once (`az role assignment create` "
                "--assignee <identity> --role <role id> --scope <resource>):",
            ]
            for principal, title in _ROLE_GROUPS:
                group = render_roles(needs, (principal,))
                if group:
                    lines.append(f"  {title}:")
                    lines += [f"    - {line}" for line in group]
        return "\n".join(lines)

    @staticmethod
    def _tier_text(tier: str | None, source: Source, setting: str) -> str:
        if tier is None:
            return f"unknown offline (set {setting}; the online plan reads it from ARM)"
        return f"{tier} ({'read from ARM' if source == 'live' else 'from ' + setting})"

    def api_versions(self) -> dict[str, list[str]]:
        """Resource provider → the api-versions this plan's requests use (sorted)."""
        out: dict[str, set[str]] = {}
        for r in [s.resource for s in self.steps] + self.retired:
            provider = r.resource_id.rsplit("/providers/", 1)[-1].split("/", 1)[0]
            out.setdefault(provider, set()).add(r.api_version)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def api_versions_text(self) -> str:
        text = "; ".join(f"{k} {', '.join(v)}" for k, v in self.api_versions().items())
        if self.api_versions_checked:
            verdict = (
                "some are not served: see the errors"
                if self.api_version_errors
                else "some could not be checked: see the warnings"
                if self.api_version_warnings
                else "each one listed"
            )
            return f"{text} (checked against {self.cloud.name}'s ARM, Providers_Get: {verdict})"
        if self.cloud.name != "AzureCloud":
            text += (
                f" (that {self.cloud.name}'s ARM serves them is not confirmed by a Microsoft "
                "page: README, Provisioning)"
            )
        return text

    def api_document(self) -> str:
        """How the API's OpenAPI document is imported (a link APIM fetches, or inline)."""
        api = next((s for s in self.steps if s.resource.kind == "api"), None)
        if api is None or api.resource.body is None:
            return "-"
        props = api.resource.body["properties"]
        if api.action != "create":
            return "the API exists (its document is imported only when it is created)"
        if str(props["format"]).endswith("-link"):
            return f"by link, fetched by APIM: {props['value']}"
        if self.spec.apim.openapi_spec is None:
            return (
                f"inline ({props['format']}, {len(props['value']):,} characters: the bundled "
                "document of the metered operations, aoai_helpers.azure.apim.openapi)"
            )
        return (
            f"inline ({props['format']}, {len(props['value']):,} characters from "
            f"{self.spec.apim.openapi_spec})"
        )

    def errors(self) -> list[str]:
        """What makes the plan impossible to apply (one line each); apply refuses them."""
        out = []
        if self.apim_sku is not None:
            problem = token_limit_problem(self.spec, self.apim_sku)
            if problem:
                out.append(problem)
        eh = self.spec.event_hub
        tier = self.eventhub_tier
        if eh.create and tier is not None and eh.retention_days > MAX_RETENTION_DAYS.get(tier, 90):
            out.append(retention_problem(tier, eh.retention_days))
        if eh.create and tier == "Basic" and eh.consumer_group.lower() != "$default":
            # Event Hubs quotas: "Number of consumer groups per event hub: Basic 1", $Default
            out.append(
                f"event_hub.consumer_group is {eh.consumer_group}, but the namespace is Basic "
                f"({'read from ARM' if self.eventhub_tier_source == 'live' else 'event_hub.tier'}"
                "), whose event hubs hold one consumer group, $Default: use $Default, or a "
                "Standard or higher namespace"
            )
        out += self.api_version_errors
        return out

    def warnings(self) -> list[str]:
        """Spec values that look wrong for the chosen cloud (not errors: endpoints can be
        custom), and what the spec leaves inexact."""
        suffix = self.spec.aoai_suffix()
        out = [
            f"backend {b.name} ({b.endpoint}) is not an {self.cloud.name} AOAI endpoint (*.{suffix})"
            for b in self.spec.backends
            if not b.endpoint.lower().endswith("." + suffix)
        ]
        want = self.spec.apim.sku
        if want is not None and self.apim_sku_source == "live" and self.apim_sku != want:
            out.append(
                f"apim.sku is {want} but the service is {self.apim_sku} (read from ARM): the "
                "plan follows the service"
            )
        owners = any(s.owner_email for s in self.spec.subscriptions)
        if owners and not self.spec.owners_logged(self.apim_sku):
            out.append(
                f"the APIM tier is {self.apim_sku}, which has no users: subscriptions get no "
                "owner, so UserName and UserEmail stay empty in the usage rows"
            )
        eh = self.spec.event_hub
        if eh.create and self.eventhub_tier is None and eh.retention_days > 7:
            out.append(
                f"event_hub.retention_days {eh.retention_days} needs a Premium or Dedicated "
                "namespace (sent as retentionDescription): the namespace tier is unknown "
                "offline (event_hub.tier); the online plan checks it"
            )
        api = self.spec.apim.openapi_spec
        if (
            self.cloud.name == "AzureChinaCloud"
            and api is None
            and self.spec.capture.allow_unmetered
        ):
            out.append(
                "capture.allow_unmetered names operations the bundled OpenAPI document does not "
                "have (it holds the metered ones only): set apim.openapi_spec to a document "
                "that has them"
            )
        if self.cloud.name == "AzureChinaCloud" and api and api.startswith(("https://", "http://")):
            out.append(
                f"the API is imported by link from {api}: whether APIM in AzureChinaCloud "
                "reaches it is not confirmed (a local file is imported inline)"
            )
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
        out += self.api_version_warnings
        return out

    def role_assignments(self) -> list[str]:
        """RBAC grants the spec's options need, which this plan does not make
        (:func:`~aoai_helpers.azure.roles.required_roles`, one line each)."""
        return render_roles(required_roles(self.spec))

    def to_dict(self) -> dict[str, Any]:
        """The plan with request bodies, secrets masked (for review or a change ticket)."""
        return {
            "cloud": self.cloud.name,
            "offline": self.offline,
            "apim_sku": self.apim_sku,
            "apim_sku_source": self.apim_sku_source,
            "eventhub_tier": self.eventhub_tier,
            "eventhub_tier_source": self.eventhub_tier_source,
            "api_versions": self.api_versions(),
            "api_versions_checked": self.api_versions_checked,
            "reused_owners": dict(self.reused_owners),
            "errors": self.errors(),
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
        if not value.startswith(("http", "<not set")):
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
    if path in ("properties.scope", "properties.ownerId"):
        # ARM returns the scope and the owner as full ids (ApiManagementCreateSubscription
        # example: "ownerId": "/subscriptions/…/service/apimService1/users/…")
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
            "user": lambda: c.apim.user.get(rg, svc, r.name),
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
    elif r.kind == "subscription":  # notify=false: no e-mail (Subscription_CreateOrUpdate)
        apim.subscription.create_or_update(
            rg, svc, r.name, m.SubscriptionCreateParameters.deserialize(body), notify=False
        )
    elif r.kind == "user":  # notify=false: no e-mail to the owner (User_CreateOrUpdate)
        apim.user.create_or_update(
            rg, svc, r.name, m.UserCreateParameters.deserialize(body), notify=False
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
    sku: str | None = spec.apim.sku
    tier: str | None = spec.event_hub.tier
    sku_source: Source = "spec" if sku else "unknown"
    tier_source: Source = "spec" if tier else "unknown"
    owners: dict[str, str] = {}
    if clients is not None:
        sku, sku_source = live_apim_sku(clients, required=True), "live"
        if spec.event_hub.create:
            tier, tier_source = live_eventhub_tier(clients, spec), "live"
        if spec.owners_logged(sku):
            owners = _existing_owners(clients, spec)
    desired = desired_resources(
        spec,
        the_cloud,
        sub,
        os.environ if env is None else env,
        apim_sku=sku,
        eventhub_tier=tier,
        owners=owners,
    )
    steps = []
    for resource in desired:
        existing = None if clients is None else _get(clients, resource)
        if existing is None:
            steps.append(Step("create", resource))
            continue
        changes = _differences(resource, existing)
        steps.append(Step("update" if changes else "noop", resource, changes))
    retired = []
    version_errors: list[str] = []
    version_warnings: list[str] = []
    if clients is not None:
        retired = [r for r in retired_resources(spec, sub) if _get(clients, r) is not None]
        version_errors, version_warnings = check_api_versions(
            clients, the_cloud, sub, _api_versions_used(spec, sub, desired + retired)
        )
    return Plan(
        spec,
        the_cloud,
        sub,
        steps,
        offline,
        retired,
        apim_sku=sku,
        apim_sku_source=sku_source,
        eventhub_tier=tier if spec.event_hub.create else None,
        eventhub_tier_source=tier_source if spec.event_hub.create else "unknown",
        reused_owners=owners,
        api_versions_checked=clients is not None,
        api_version_errors=version_errors,
        api_version_warnings=version_warnings,
    )


def resource_type(resource_id: str) -> tuple[str, str]:
    """``(namespace, resource type)`` of an ARM id, as Providers_Get lists them: the provider
    after the id's *last* ``providers/`` (an extension resource such as a diagnostic setting
    belongs to Microsoft.Insights), and its type names joined by ``/`` (``service/apis/policies``,
    ``namespaces/eventhubs/consumergroups``)."""
    parts = resource_id.strip("/").split("/")
    i = max(k for k, part in enumerate(parts) if part.lower() == "providers")
    return parts[i + 1], "/".join(parts[i + 2 :: 2])


def _api_versions_used(
    spec: Spec, subscription_id: str, resources: list[Resource]
) -> dict[tuple[str, str], set[str]]:
    """(namespace, resource type) → the api-versions plan and apply send to it: every resource's,
    plus the reads of what provisioning never creates (the APIM service, the Event Hubs
    namespace)."""
    rg = spec.apim.resource_group
    service = (
        f"/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/"
        f"Microsoft.ApiManagement/service/{spec.apim.service_name}"
    )
    used: list[tuple[str, str]] = [(service, APIM_API_VERSION)]
    eh = spec.event_hub
    if eh.create:
        namespace = (
            f"/subscriptions/{subscription_id}/resourceGroups/{eh.resource_group or rg}"
            f"/providers/Microsoft.EventHub/namespaces/{eh.namespace}"
        )
        used.append((namespace, EVENTHUB_API_VERSION))
    used += [(r.resource_id, r.api_version) for r in resources]
    out: dict[tuple[str, str], set[str]] = {}
    for resource_id, version in used:
        out.setdefault(resource_type(resource_id), set()).add(version)
    return out


def check_api_versions(
    c: Clients,
    cloud: Cloud,
    subscription_id: str,
    used: Mapping[tuple[str, str], set[str]],
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)``: each (resource type, api-version) of ``used`` checked against the
    cloud's own listing (Providers_Get, one request per namespace, through the APIM client's
    pipeline).

    A version the listing does not have for that type is an error naming those it has. A type
    the listing does not name is checked against its nearest listed parent type
    (``service/apis/policies`` → ``service/apis`` → ``service``) — an assumption: ARM is not
    documented here to validate a nested type's api-version by its parent's registration — and
    a warning when none is listed. A provider that cannot be read (an error status, a network
    error) is a warning naming what was not checked; one that is not registered in the
    subscription is a warning too (its listing is still checked)."""
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    errors: list[str] = []
    warnings: list[str] = []
    by_namespace: dict[str, dict[str, set[str]]] = {}
    for (namespace, rtype), versions in used.items():
        by_namespace.setdefault(namespace, {}).setdefault(rtype, set()).update(versions)
    where = f"{cloud.name}'s ARM ({cloud.arm_endpoint})"
    for namespace, types in sorted(by_namespace.items()):
        wanted = "; ".join(f"{t} {', '.join(sorted(v))}" for t, v in sorted(types.items()))
        request = HttpRequest(
            "GET",
            f"/subscriptions/{subscription_id}/providers/{namespace}",
            params={"api-version": PROVIDERS_API_VERSION},
        )
        try:
            response = c.apim._send_request(request)
            status = response.status_code
            body = response.json() if status < 400 else _error_body(response)
        except (AzureError, ValueError) as exc:
            warnings.append(
                f"could not read {namespace} from {where} (Providers_Get: {exc}): api-versions "
                f"not checked: {wanted}"
            )
            continue
        if status >= 400:
            code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
            warnings.append(
                f"could not read {namespace} from {where} (Providers_Get: HTTP {status}"
                f"{' ' + code if code else ''}): api-versions not checked: {wanted}"
            )
            continue
        state = str(body.get("registrationState") or "")
        if state and state.lower() != "registered":
            warnings.append(
                f"{namespace} is {state} in subscription {subscription_id}: apply fails until it "
                f"is registered (az provider register -n {namespace})"
            )
        listing = {
            str(t.get("resourceType", "")).lower(): [str(v) for v in t.get("apiVersions") or []]
            for t in body.get("resourceTypes") or []
            if isinstance(t, dict)
        }
        for rtype, versions in sorted(types.items()):
            listed_as, offered = _listed(listing, rtype)
            if offered is None:
                warnings.append(
                    f"{namespace}/{rtype} is not in the resource-type listing of {where}: api-version "
                    f"{', '.join(sorted(versions))} not checked"
                )
                continue
            lower = {v.lower() for v in offered}
            for version in sorted(versions):
                if version.lower() in lower:
                    continue
                via = "" if listed_as == rtype.lower() else f" (listed as {listed_as})"
                errors.append(
                    f"api-version {version} of {namespace}/{rtype} is not served by {where}"
                    f"{via}: it offers {', '.join(offered) or 'none'} (Providers_Get)"
                )
    return errors, warnings


def _listed(listing: Mapping[str, list[str]], rtype: str) -> tuple[str, list[str] | None]:
    """The nearest type of ``rtype``'s chain the listing has, and its api-versions."""
    parts = rtype.lower().split("/")
    while parts:
        name = "/".join(parts)
        if name in listing:
            return name, listing[name]
        parts.pop()
    return rtype.lower(), None


def _error_body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _value(x: Any) -> str | None:
    """An SDK enum member or string as its string value."""
    if x is None:
        return None
    return str(getattr(x, "value", x))


def live_apim_sku(c: Clients, *, required: bool = False) -> str | None:
    """The APIM service's tier (``ApiManagementService_Get`` → ``sku.name``); ``None`` when the
    service does not exist (``ConfigError`` instead with ``required``)."""
    try:
        service = c.apim.api_management_service.get(c.rg, c.service)
    except ResourceNotFoundError:
        if required:
            raise ConfigError(
                f"APIM service {c.service} not found in resource group {c.rg}: provisioning "
                "uses an existing service and never creates one"
            ) from None
        return None
    return _value(service.sku.name if service.sku is not None else None)


def live_eventhub_tier(c: Clients, spec: Spec) -> str | None:
    """The Event Hubs namespace's tier (``Namespaces_Get`` → ``sku.tier``, or ``Dedicated``
    when it runs in a cluster: ``clusterArmId``); ``ConfigError`` when it does not exist."""
    eh = spec.event_hub
    rg = eh.resource_group or spec.apim.resource_group
    try:
        ns = c.eventhub.namespaces.get(rg, eh.namespace)
    except ResourceNotFoundError:
        raise ConfigError(
            f"Event Hubs namespace {eh.namespace} not found in resource group {rg}: the spec "
            "creates the hub in an existing namespace, never the namespace"
        ) from None
    props = getattr(ns, "properties", None)
    if props is not None and getattr(props, "cluster_arm_id", None):
        return "Dedicated"
    sku = getattr(ns, "sku", None)
    return _value(getattr(sku, "tier", None) or getattr(sku, "name", None))


def _existing_owners(c: Clients, spec: Spec) -> dict[str, str]:
    """Owner email (lower case) → the id of a user the service already has with that email,
    for owners whose deterministic user (:func:`apim_user_id`) does not exist."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for sub in spec.subscriptions:
        email = (sub.owner_email or "").lower()
        if not email or email in seen:
            continue
        seen.add(email)
        try:
            c.apim.user.get(c.rg, c.service, apim_user_id(email))
            continue  # ours: compared like every resource
        except ResourceNotFoundError:
            pass
        quoted = (sub.owner_email or "").replace("'", "''")  # OData string literal
        found = c.apim.user.list_by_service(c.rg, c.service, filter=f"email eq '{quoted}'")
        match = next((u for u in found if str(u.email or "").lower() == email), None)
        if match is not None and match.name:
            out[email] = str(match.name)
    return out


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
    """Send the plan's creates and updates in order; optionally write the BU keys (0600).

    ``ConfigError`` (nothing sent) when the plan has errors (:meth:`Plan.errors`) or a secret
    it needs is not set."""
    errors = the_plan.errors()
    if errors:
        raise ConfigError("the plan has errors: " + "; ".join(errors))
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
    return _send(the_plan, clients, keys_out=keys_out, on_step=on_step)


def _send(
    the_plan: Plan,
    clients: Clients,
    *,
    keys_out: str | os.PathLike[str] | None = None,
    on_step: Callable[[int, int, Step], None] | None = None,
) -> ApplyResult:
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
    :mod:`aoai_helpers.azure.dryrun`; return the HTTP requests the SDK sent (no network).

    ``repeat`` then plans and applies the same spec again, as a second real apply would, and
    returns only that second run's requests (all GETs when provisioning is idempotent).
    """
    from aoai_helpers.azure.dryrun import DryRunCredential, DryRunTransport

    transport = DryRunTransport(
        apim_sku=the_plan.apim_sku or "Developer",
        eventhub_tier=the_plan.eventhub_tier or _tier_for(the_plan.spec),
    )
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


def _tier_for(spec: Spec) -> str:
    """The namespace tier a dry run's in-memory ARM has when the plan does not know it: one
    that holds the spec's retention."""
    return spec.event_hub.tier or ("Standard" if spec.event_hub.retention_days <= 7 else "Premium")


def _dry_run_env(the_plan: Plan) -> dict[str, str]:
    """Placeholders for secrets the plan could not read, so a dry run can go through."""
    env = dict(os.environ)
    env.setdefault("AOAI_BACKEND_KEY", "<dry-run: backend key>")
    if not the_plan.spec.event_hub.create:
        env.setdefault("AOAI_EVENTHUB_SEND_CONNECTION", "<dry-run: send connection string>")
    return env


def _apply_quietly(the_plan: Plan, clients: Clients) -> None:
    steps = [Step(s.action, _fill_dry_run(s.resource), s.changes) for s in the_plan.steps]
    _send(dataclasses.replace(the_plan, steps=steps), clients)


def _fill_dry_run(r: Resource) -> Resource:
    """Placeholders for what a dry run cannot have: a secret."""
    if _is_missing_secret(r):
        value = "<dry-run: secret>"
    else:
        return r
    body = copy.deepcopy(r.body) or {}
    body["properties"]["value"] = value
    return dataclasses.replace(r, body=body)
