"""Clean-up as plan → apply: remove what ``provision apply`` and ``function deploy`` created.

:func:`plan_cleanup` lists, for one spec, the resources provisioning creates
(:func:`~aoai_helpers.azure.apim.resources.desired_resources`) in reverse apply order — BU
subscriptions, the product's policy, API link and the product, the service's diagnostic setting
and the API's diagnostic (with a language-model log), the API's policy, operations and the API,
the loggers, the named values — then the function's app settings, then the Event Hub's
rules, consumer group and the hub, but only when the spec has provisioning create the hub
(``event_hub.create``). Policies go before the named values and the logger they reference (APIM
refuses to delete a named value a policy still uses). With clients, each step is ``delete``
(one GET found it) or ``absent`` (already gone); offline (no clients) every step is ``delete``.
The BU owners' APIM users go right after the subscriptions they own (online: unless the service
is on the Consumption tier, which has none — ``GET`` service → ``sku.name``).
What an earlier provisioning created and the current one no longer does
(:func:`~aoai_helpers.azure.apim.resources.retired_resources`: the ``v1_other`` catch-all operation)
is deleted with the API's operations when a GET finds it, and left out of the plan when it does
not; offline it is listed as ``delete`` ("if it exists"), a ``404`` counting as done.
:func:`apply_cleanup` sends the deletes in order; a ``404`` counts as done, so a second apply
sends no delete at all, only the plan's reads.

Deleted vs kept (the rule: remove only what this project created, never more):

- APIM entities the spec names: deleted (APIM deletes send ``If-Match: *``; the product's API
  link takes no ``If-Match``, as its REST spec documents). A product that subscriptions outside
  the spec still use is ``keep``: it is never deleted with ``deleteSubscriptions``.
- The BU owners' APIM users: only those provisioning created — the id
  :func:`~aoai_helpers.azure.apim.resources.apim_user_id` derives from the owner's email *and* the
  note :data:`~aoai_helpers.azure.apim.resources.USER_NOTE`; a user the service already had (reused
  as an owner) has another id and is never listed. A user of ours that still owns subscriptions
  outside the spec is ``keep``. ``User_Delete`` with ``If-Match: *`` and ``notify=false`` (no
  "account closed" e-mail), never ``deleteSubscriptions``.
- The function app: ``function deploy`` does not create it (it merges settings into an existing
  app and uploads a package), so the app, its package and its platform settings
  (``FUNCTIONS_WORKER_RUNTIME``, ``AzureWebJobsFeatureFlags``, build flags) are kept; only the
  ``AOAI_*`` settings it wrote (:mod:`aoai_helpers.azure.functions.settings`) are removed — read again
  at apply time, the rest written back unchanged (``PUT …/config/appsettings`` replaces the whole
  set). Without them the function no longer starts its trigger.
- The language-model log (``llm_log.workspace_resource_id``): the service's diagnostic setting
  (Microsoft.Insights ``DiagnosticSettings_Delete``, no ``If-Match``) and the API's diagnostic
  (``ApiDiagnostic_Delete``, ``If-Match: *``) are deleted; the ``azuremonitor`` logger only if
  provisioning created it — its description is
  :data:`~aoai_helpers.azure.apim.resources.LLM_LOGGER_DESCRIPTION` — else it is ``keep`` (APIM's or
  another team's logger). The Log Analytics workspace and the records already in it stay.
- Never touched: the APIM service, resource groups, the Event Hubs namespace (the spec never
  creates one), an Event Hub the spec did not create, the AOAI resources, the database (usage
  rows, rates and statements stay), anything not named by the spec.

:func:`cleanup_dry_run` runs the whole apply through the real SDK calls against the in-memory
ARM of :mod:`aoai_helpers.azure.dryrun` (seeded as provisioning and function deploy leave it)
and returns the exact requests, without credentials or network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from aoai_helpers.azure.apim.arm import Clients, live_apim_sku, make_clients
from aoai_helpers.azure.apim.arm import get_resource as _read
from aoai_helpers.azure.apim.cleanup_apply import (
    DELETERS,
    OFFLINE_SUBSCRIPTION,
    WEB_API_VERSION,
    CleanupPlan,
    CleanupResult,
    CleanupStep,
    apply_cleanup,
    function_resource,
    function_settings,
    function_settings_owned,
    is_owned,
)
from aoai_helpers.azure.apim.resources import (
    LLM_LOGGER_DESCRIPTION,
    USER_NOTE,
    Resource,
    desired_resources,
    retired_resources,
)
from aoai_helpers.azure.functions.deploy import WebClients, make_web_clients
from aoai_helpers.clouds import Cloud, get_cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec

__all__ = [
    "WEB_API_VERSION",
    "CleanupDryRun",
    "CleanupPlan",
    "CleanupResult",
    "CleanupStep",
    "apply_cleanup",
    "cleanup_dry_run",
    "function_settings_owned",
    "make_cleanup_clients",
    "plan_cleanup",
]


# --- clients -----------------------------------------------------------------------------------


def make_cleanup_clients(
    spec: Spec, cloud: Cloud, subscription_id: str, credential: Any, transport: Any = None
) -> tuple[Clients, WebClients | None]:
    """Provisioning's clients, and azure-mgmt-web's for the function app (``None`` without a
    ``function`` section in the spec)."""
    clients = make_clients(spec, cloud, subscription_id, credential, transport)
    web = None
    if spec.function is not None:
        web = make_web_clients(spec, cloud, subscription_id, credential, transport)
    return clients, web


# --- plan --------------------------------------------------------------------------------------


def _for_cleanup(spec: Spec) -> Spec:
    """The spec with the default OpenAPI link: deleting the API never needs its document."""
    if spec.apim.openapi_spec is None:
        return spec
    return spec.model_copy(update={"apim": spec.apim.model_copy(update={"openapi_spec": None})})


def _foreign_subscriptions(c: Clients, spec: Spec) -> list[str]:
    """Subscriptions on the spec's product that the spec does not name."""
    ours = {s.id.lower() for s in spec.subscriptions}
    suffix = f"/products/{spec.product.id}".lower()
    try:
        return sorted(
            str(s.name)
            for s in c.apim.subscription.list(c.rg, c.service)
            if (s.scope or "").lower().endswith(suffix) and str(s.name).lower() not in ours
        )
    except ResourceNotFoundError:  # no APIM service: nothing of it is left to delete
        return []


def _subscription(spec: Spec, subscription_id: str | None, offline: bool) -> str:
    """The Azure subscription to clean up: given, the spec's, or (offline only) a stand-in."""
    sub = subscription_id or spec.subscription_id
    if sub is None:
        if not offline:
            raise ConfigError(
                "the spec has no subscription_id (the Azure subscription of the APIM service)"
            )
        sub = OFFLINE_SUBSCRIPTION
    return sub


def plan_cleanup(
    spec: Spec,
    *,
    clients: Clients | None = None,
    web: WebClients | None = None,
    cloud: str | None = None,
    env: Mapping[str, str] | None = None,
    subscription_id: str | None = None,
) -> CleanupPlan:
    """The ordered steps that remove what provisioning and function deploy created for
    ``spec`` (offline when ``clients`` is None: every step ``delete``).

    ``web`` (:func:`~aoai_helpers.azure.functions.deploy.make_web_clients`) lets the plan read the
    function's settings; with ``clients`` but no ``web`` that step is ``keep`` (not checked).
    ``env`` is accepted for symmetry with :func:`~aoai_helpers.azure.apim.provision.plan`: deleting
    needs no secret, so it defaults to an empty environment."""
    spec = _for_cleanup(spec.for_cloud(cloud))
    the_cloud = get_cloud(spec.cloud)
    offline = clients is None
    sub = _subscription(spec, subscription_id, offline)
    sku = None if clients is None else live_apim_sku(clients)  # no service: None, all absent
    created = desired_resources(spec, the_cloud, sub, {} if env is None else env, apim_sku=sku)
    unknown = sorted({r.kind for r in created} - set(DELETERS))
    if unknown:
        raise ConfigError(f"clean-up does not know how to delete: {', '.join(unknown)}")
    apim_part = [r for r in reversed(created) if not r.kind.startswith("eventhub")]
    hub_part = [r for r in reversed(created) if r.kind.startswith("eventhub")]
    # retired operations go with the API's operations: after the policy, before the API
    old = retired_resources(spec, sub)
    at = next(i for i, r in enumerate(apim_part) if r.kind == "api")
    apim_part[at:at] = old
    retired = {r.resource_id for r in old}

    foreign = [] if clients is None else _foreign_subscriptions(clients, spec)
    steps = []
    for r in apim_part:
        if r.kind == "product" and foreign:
            note = f"subscriptions not in the spec still use it: {', '.join(foreign)}"
            steps.append(CleanupStep("keep", r, note))
            continue
        if r.kind == "llm-logger":
            steps.append(_llm_logger_step(clients, r))
            continue
        if r.kind == "user":
            steps.append(_user_step(clients, spec, r))
            continue
        found = clients is None or _read(clients, r) is not None
        if r.resource_id in retired:  # listed only where it exists (offline: if it exists)
            if found:
                note = "created by an earlier provisioning"
                steps.append(CleanupStep("delete", r, note + (": if it exists" if offline else "")))
            continue
        steps.append(CleanupStep("delete" if found else "absent", r))
    if spec.function is not None:
        steps.append(_function_step(spec, sub, clients, web))
    for r in hub_part:
        found = clients is None or _read(clients, r) is not None
        steps.append(CleanupStep("delete" if found else "absent", r))
    return CleanupPlan(spec, the_cloud, sub, steps, offline)


def _llm_logger_step(clients: Clients | None, r: Resource) -> CleanupStep:
    """The ``azuremonitor`` logger goes only if provisioning created it (its description)."""
    if clients is None:
        return CleanupStep("delete", r, "only if provisioning created it (checked online)")
    found = _read(clients, r)
    if found is None:
        return CleanupStep("absent", r)
    description = (found.get("properties") or {}).get("description")
    if description != LLM_LOGGER_DESCRIPTION:
        return CleanupStep("keep", r, "provisioning did not create it (its description says so)")
    return CleanupStep("delete", r)


def _user_step(clients: Clients | None, spec: Spec, r: Resource) -> CleanupStep:
    """An owner's user goes only if provisioning created it (its note) and it owns nothing but
    the spec's subscriptions (deleted just before)."""
    if clients is None:
        return CleanupStep("delete", r, "only if provisioning created it (checked online)")
    found = _read(clients, r)
    if found is None:
        return CleanupStep("absent", r)
    if (found.get("properties") or {}).get("note") != USER_NOTE:
        return CleanupStep("keep", r, "provisioning did not create it (its note says so)")
    ours = {s.id.lower() for s in spec.subscriptions}
    try:
        owned = clients.apim.user_subscription.list(clients.rg, clients.service, r.name)
        foreign = sorted(str(s.name) for s in owned if str(s.name).lower() not in ours)
    except ResourceNotFoundError:
        foreign = []
    if foreign:
        return CleanupStep(
            "keep", r, f"it owns subscriptions not in the spec: {', '.join(foreign)}"
        )
    return CleanupStep("delete", r)


def _function_step(
    spec: Spec, sub: str, clients: Clients | None, web: WebClients | None
) -> CleanupStep:
    r = function_resource(spec, sub)
    owned = function_settings_owned(spec)
    if clients is None:
        return CleanupStep("delete", r, settings=owned)
    if web is None:
        return CleanupStep("keep", r, "not checked: no web client given (make_cleanup_clients)")
    present = _present_settings(web, owned)
    if present is None:
        return CleanupStep("absent", r, "the function app does not exist")
    return CleanupStep("delete" if present else "absent", r, settings=present)


def _present_settings(web: WebClients, owned: tuple[str, ...]) -> tuple[str, ...] | None:
    """Owned settings the app has now (``None`` if the app is gone)."""
    try:
        found = web.web.web_apps.list_application_settings(web.rg, web.app)
    except ResourceNotFoundError:
        return None
    return tuple(n for n in (found.properties or {}) if is_owned(n, owned))


# --- dry run -----------------------------------------------------------------------------------


@dataclass
class CleanupDryRun:
    """A clean-up applied to the in-memory ARM: the plan it ran and the requests it sent."""

    plan: CleanupPlan
    requests: list[Any]
    result: CleanupResult

    def rows(self) -> list[dict[str, Any]]:
        """One dict per request: method, path, api-version, If-Match (for a notebook table)."""
        return [
            {
                "method": r.method,
                "path": r.path,
                "api_version": r.api_version,
                "if_match": r.if_match,
            }
            for r in self.requests
        ]

    def render(self) -> str:
        hosts = ", ".join(sorted({r.host for r in self.requests})) or "-"
        lines = [
            f"dry run of the SDK calls: {len(self.requests)} requests, all to {hosts} "
            "(recorded in memory; nothing was sent)"
        ]
        for row in self.rows():
            extra = f"  If-Match: {row['if_match']}" if row["if_match"] else ""
            lines.append(
                f"  {row['method']:<6} {row['path']}?api-version={row['api_version']}{extra}"
            )
        return "\n".join(lines)


def cleanup_dry_run(
    spec: Spec,
    *,
    cloud: str | None = None,
    subscription_id: str | None = None,
    repeat: bool = False,
) -> CleanupDryRun:
    """Plan and apply the clean-up through the real SDK calls against the in-memory ARM of
    :mod:`aoai_helpers.azure.dryrun`, seeded with what provisioning and function deploy leave;
    no credentials, no network. Returns the apply's requests (``repeat``: those of a second
    plan and apply, which find everything gone and only read)."""
    from aoai_helpers.azure.dryrun import DryRunCredential, DryRunTransport

    spec = _for_cleanup(spec.for_cloud(cloud))
    the_cloud = get_cloud(spec.cloud)
    sub = subscription_id or spec.subscription_id or OFFLINE_SUBSCRIPTION
    transport = DryRunTransport()
    _seed(transport, spec, the_cloud, sub)
    clients, web = make_cleanup_clients(spec, the_cloud, sub, DryRunCredential(), transport)
    args: dict[str, Any] = {"clients": clients, "web": web, "subscription_id": sub}
    the_plan = plan_cleanup(spec, **args)
    transport.requests.clear()
    result = apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    if repeat:
        transport.requests.clear()
        the_plan = plan_cleanup(spec, **args)
        result = apply_cleanup(the_plan, clients, web=web, polling_interval=0)
    return CleanupDryRun(the_plan, list(transport.requests), result)


def _seed(transport: Any, spec: Spec, cloud: Cloud, sub: str) -> None:
    """Store what provisioning and function deploy create (bodies are not needed to delete)."""
    for r in desired_resources(spec, cloud, sub, {}):
        props: dict[str, Any] = {}
        if r.kind == "subscription":
            props = {"scope": f"/products/{spec.product.id}"}
        elif r.kind == "llm-logger":  # as provisioning creates it: marked as its own
            props = {"loggerType": "azureMonitor", "description": LLM_LOGGER_DESCRIPTION}
        elif r.kind == "user":  # as provisioning creates it: marked as its own
            props = dict((r.body or {}).get("properties") or {})
        transport.store[r.resource_id.lower()] = {
            "id": r.resource_id,
            "name": r.name,
            "properties": props,
        }
    if spec.function is not None:
        r = function_resource(spec, sub)
        settings = {name: "<dry-run>" for name in function_settings(spec)}
        transport.store[r.resource_id.lower()] = {"id": r.resource_id, "properties": settings}
