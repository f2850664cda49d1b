"""The :class:`Plan` of a provisioning run: its ordered :class:`Step` objects, what it cannot do
(errors) or doubts (warnings), its rendering for review and its JSON form (secrets masked);
and the comparison of a desired resource with what exists (:func:`differences`). Imports
``resources``, ``roles`` and the top level.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Literal

from aoai_helpers.azure.apim.resources import (
    Resource,
)
from aoai_helpers.azure.roles import Principal, render_roles, required_roles
from aoai_helpers.clouds import Cloud
from aoai_helpers.core.masking import mask
from aoai_helpers.spec import Spec, retention_problem, token_limit_problem

__all__ = [
    "Action",
    "Plan",
    "Source",
    "Step",
    "differences",
    "masked_body",
]

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
        retention = None if tier is None else retention_problem(tier, eh.retention_days)
        if eh.create and retention:
            out.append(retention)
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


def differences(resource: Resource, existing: dict[str, Any]) -> tuple[str, ...]:
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
