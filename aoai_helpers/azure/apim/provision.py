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

Online, the plan also checks every api-version it would send against the cloud's own
listing (:mod:`~aoai_helpers.azure.apim.preflight`). The management clients, their reads and
writes per kind, and the raw requests for what the SDKs do not model are in
:mod:`~aoai_helpers.azure.apim.arm`; the :class:`~aoai_helpers.azure.apim.plan.Plan` and its
rendering in :mod:`~aoai_helpers.azure.apim.plan`.

Secrets are compared by presence only (ARM never returns them) and masked in every display.
BU subscription keys are read (``listSecrets``) only when a key file is asked for; they are
written with mode 0600 and shown masked.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from aoai_helpers.azure.apim.arm import (
    Clients,
    arm_delete,
    arm_get,
    arm_put,
    existing_owners,
    get_resource,
    live_apim_sku,
    live_eventhub_tier,
    make_clients,
    put_resource,
)
from aoai_helpers.azure.apim.plan import Plan, Source, Step, differences
from aoai_helpers.azure.apim.preflight import (
    PROVIDERS_API_VERSION,
    api_versions_used,
    check_api_versions,
    resource_type,
)
from aoai_helpers.azure.apim.resources import (
    MISSING_SEND_CONNECTION,
    SECRET_FROM_SEND_RULE,
    Resource,
    desired_resources,
    retired_resources,
)
from aoai_helpers.azure.roles import LOG_ANALYTICS_READER
from aoai_helpers.clouds import get_cloud
from aoai_helpers.core.files import write_private
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec

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


def _subscription_id(spec: Spec, offline: bool) -> str:
    if spec.subscription_id:
        return spec.subscription_id
    if offline:
        return "00000000-0000-0000-0000-000000000000"
    raise ConfigError(
        "the spec has no subscription_id (the Azure subscription of the APIM service)"
    )


def _tiers_and_owners(
    spec: Spec, clients: Clients | None
) -> tuple[str | None, Source, str | None, Source, dict[str, str]]:
    """The APIM tier, the Event Hubs namespace tier (each with where it came from) and the
    owners the service already has as users: read from ARM online, from the spec offline."""
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
            owners = existing_owners(clients, spec)
    return sku, sku_source, tier, tier_source, owners


def _steps(desired: list[Resource], clients: Clients | None) -> list[Step]:
    """One step per desired resource: create what is missing (everything offline), update
    what differs, leave the rest."""
    steps = []
    for resource in desired:
        existing = None if clients is None else get_resource(clients, resource)
        if existing is None:
            steps.append(Step("create", resource))
            continue
        changes = differences(resource, existing)
        steps.append(Step("update" if changes else "noop", resource, changes))
    return steps


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
    sku, sku_source, tier, tier_source, owners = _tiers_and_owners(spec, clients)
    desired = desired_resources(
        spec,
        the_cloud,
        sub,
        os.environ if env is None else env,
        apim_sku=sku,
        eventhub_tier=tier,
        owners=owners,
    )
    steps = _steps(desired, clients)
    retired = []
    version_errors: list[str] = []
    version_warnings: list[str] = []
    if clients is not None:
        retired = [r for r in retired_resources(spec, sub) if get_resource(clients, r) is not None]
        version_errors, version_warnings = check_api_versions(
            clients, the_cloud, sub, api_versions_used(spec, sub, desired + retired)
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
        put_resource(clients, step.resource, body)
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
