"""The clean-up plan's types (:class:`CleanupStep`, :class:`CleanupPlan`), what function deploy
wrote (the ``AOAI_*`` app settings) and :func:`apply_cleanup`: one delete per kind
(:data:`DELETERS`), a ``404`` counting as done. :mod:`~aoai_helpers.azure.apim.cleanup` makes the
plan (its docstring has the rule: remove only what this project created) and the dry run.
Imports ``arm``, ``resources``, ``azure.functions`` and the top level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from azure.core.exceptions import ResourceNotFoundError

from aoai_helpers.azure.apim.arm import Clients, arm_delete
from aoai_helpers.azure.apim.resources import (
    Resource,
)
from aoai_helpers.azure.functions.deploy import WebClients
from aoai_helpers.azure.functions.settings import CONNECTION, app_settings
from aoai_helpers.clouds import Cloud
from aoai_helpers.db.engine import masked_url
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec

__all__ = [
    "DELETERS",
    "FUNCTION_SETTINGS",
    "OFFLINE_SUBSCRIPTION",
    "WEB_API_VERSION",
    "CleanupAction",
    "CleanupPlan",
    "CleanupResult",
    "CleanupStep",
    "apply_cleanup",
    "function_resource",
    "function_settings",
    "function_settings_owned",
    "is_owned",
]

CleanupAction = Literal["delete", "absent", "keep"]


#: azure-mgmt-web 11.x (``WebApps_UpdateApplicationSettings``, default api-version 2025-05-01).
WEB_API_VERSION: Final = "2025-05-01"


FUNCTION_SETTINGS: Final = "function-app-settings"


#: Kinds whose DELETE takes no ``If-Match`` (``ProductApi_Delete`` documents none; Event Hubs
#: and Web have no ETags on these calls).
_NO_IF_MATCH: Final = frozenset(
    {
        "product-api",
        "eventhub",
        "eventhub-consumer-group",
        "eventhub-rule",
        "diagnostic-setting",  # DiagnosticSettings_Delete documents no If-Match
        FUNCTION_SETTINGS,
    }
)


OFFLINE_SUBSCRIPTION: Final = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class CleanupStep:
    """One resource to remove: ``delete``, ``absent`` (already gone) or ``keep`` (with why).

    For the function's app settings, ``settings`` names the settings to remove.
    """

    action: CleanupAction
    resource: Resource
    note: str = ""
    settings: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        return "PUT" if self.resource.kind == FUNCTION_SETTINGS else "DELETE"

    @property
    def if_match(self) -> str | None:
        return None if self.resource.kind in _NO_IF_MATCH else "*"


@dataclass
class CleanupPlan:
    """The ordered clean-up steps for one spec on one cloud."""

    spec: Spec
    cloud: Cloud
    subscription_id: str
    steps: list[CleanupStep]
    offline: bool

    def counts(self) -> dict[str, int]:
        out = {"delete": 0, "absent": 0, "keep": 0}
        for step in self.steps:
            out[step.action] += 1
        return out

    def render(self) -> str:
        """A reviewable table: action, kind, ARM path, notes; then what is kept and warnings.

        No value is shown (no request bodies at all), so nothing needs masking but the
        database URL, which is shown masked."""
        head = (
            f"Clean-up plan for APIM {self.spec.apim.service_name} on {self.cloud.name} "
            f"({self.cloud.arm_endpoint})"
            + (" — offline: assumes everything provisioning creates exists" if self.offline else "")
        )
        lines = [
            head,
            f"requests: DELETE {self.cloud.arm_endpoint}/subscriptions/{self.subscription_id}/…"
            "/providers/<below>?api-version=… (If-Match: * on APIM entities)",
        ]
        if self.spec.function is not None:
            lines.append(
                "function app settings: POST …/config/appsettings/list, then PUT the rest back"
            )
        lines.append("")
        for i, step in enumerate(self.steps, 1):
            r = step.resource
            where = r.resource_id.split("/providers/", 1)[-1]
            detail = []
            if step.settings:
                detail.append(f"removes: {', '.join(step.settings)}")
            if step.note:
                detail.append(step.note)
            extra = f"  ({'; '.join(detail)})" if detail else ""
            lines.append(f"{i:>3}  {step.action:<6} {r.kind:<23} {where}{extra}")
        c = self.counts()
        lines += [
            "",
            f"{c['delete']} to delete, {c['absent']} already gone, {c['keep']} kept",
            "",
            "Kept (this plan never deletes them):",
        ]
        lines += [f"  - {item}" for item in self.kept()]
        for warning in self.warnings():
            lines += ["", f"warning: {warning}"]
        return "\n".join(lines)

    def kept(self) -> list[str]:
        """What the clean-up leaves in place, and why (see the module docstring)."""
        spec = self.spec
        eh = spec.event_hub
        out = [
            f"APIM service {spec.apim.service_name} and resource group {spec.apim.resource_group}",
            f"Event Hubs namespace {eh.namespace}"
            + ("" if eh.create else f" and Event Hub {eh.name} (the spec did not create it)"),
            "the AOAI resources: " + ", ".join(b.endpoint for b in spec.backends),
            f"the database {masked_url(spec.database.url)} (usage, rates, statements)",
        ]
        if spec.llm_log.workspace_resource_id is not None:
            out.append(
                f"the Log Analytics workspace {spec.llm_log.workspace_resource_id} and the "
                "language-model log records already in it"
            )
        if spec.function is not None:
            platform = [n for n in function_settings(spec) if not n.startswith("AOAI_")]
            out.append(
                f"function app {spec.function.name}: the app, its deployed package and its "
                f"platform settings ({', '.join(platform)}); function deploy did not create it"
            )
        return out

    def warnings(self) -> list[str]:
        out = []
        if any(s.resource.kind == "subscription" and s.action == "delete" for s in self.steps):
            out.append(
                "the BU subscription keys stop working as soon as their subscriptions are "
                "deleted: callers get 401 from the gateway"
            )
        out.append(
            "data in the database is kept: ingested usage, rates and issued statements stay "
            "for reports"
        )
        if any(s.resource.kind == "eventhub" and s.action == "delete" for s in self.steps):
            out.append(
                f"events still in Event Hub {self.spec.event_hub.name} that were not ingested "
                "are lost with it: run `consume --until-idle` first to keep them"
            )
        out += [
            f"{s.resource.kind} {s.resource.name}: {s.note}"
            for s in self.steps
            if s.action == "keep"
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The plan as data (no request bodies, hence no secrets)."""
        return {
            "cloud": self.cloud.name,
            "offline": self.offline,
            "steps": [
                {
                    "action": s.action,
                    "kind": s.resource.kind,
                    "name": s.resource.name,
                    "method": s.method if s.action == "delete" else None,
                    "url": s.resource.url(self.cloud),
                    "if_match": s.if_match,
                    "settings": list(s.settings),
                    "note": s.note,
                }
                for s in self.steps
            ],
            "kept": self.kept(),
            "warnings": self.warnings(),
        }


def function_settings(spec: Spec) -> list[str]:
    """The names ``function deploy`` sets for ``spec`` (values are placeholders, never used)."""
    return list(app_settings(spec, db_url="<unused>", eventhub_connection="<unused>"))


def function_settings_owned(spec: Spec) -> tuple[str, ...]:
    """The app settings clean-up removes: the ``AOAI_*`` ones ``function deploy`` writes.

    Platform settings it also writes (``FUNCTIONS_WORKER_RUNTIME`` …) stay: the app needs them
    and they may have been there before."""
    if spec.function is None:
        return ()
    return tuple(n for n in function_settings(spec) if n.startswith("AOAI_"))


def is_owned(name: str, owned: tuple[str, ...]) -> bool:
    # either Event Hubs connection form, whichever auth the app was deployed with
    return name in owned or name == CONNECTION or name.startswith(CONNECTION + "__")


def function_resource(spec: Spec, subscription_id: str) -> Resource:
    assert spec.function is not None
    rg = spec.function.resource_group or spec.apim.resource_group
    app = spec.function.name
    return Resource(
        FUNCTION_SETTINGS,
        app,
        f"/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}"
        "/config/appsettings",
        WEB_API_VERSION,
        None,
        parents={"resource_group": rg, "app": app},
    )


def _delete_api(c: Clients, r: Resource, poll: dict[str, Any]) -> None:
    c.apim.api.begin_delete(c.rg, c.service, r.name, if_match="*", **poll).result()


def _hub_args(r: Resource) -> tuple[str, str, str]:
    p = r.parents
    return p["resource_group"], p["namespace"], p["hub"]


_Deleter = Callable[[Clients, Resource, dict[str, Any]], None]


DELETERS: Final[dict[str, _Deleter]] = {
    "subscription": lambda c, r, _: c.apim.subscription.delete(
        c.rg, c.service, r.name, if_match="*"
    ),
    "product-policy": lambda c, r, _: c.apim.product_policy.delete(
        c.rg, c.service, r.parents["product"], "policy", if_match="*"
    ),
    "product-api": lambda c, r, _: c.apim.product_api.delete(
        c.rg, c.service, r.parents["product"], r.name
    ),
    # notify=false: no "account closed" e-mail; never deleteSubscriptions (see _user_step)
    "user": lambda c, r, poll: c.apim.user.begin_delete(
        c.rg, c.service, r.name, if_match="*", notify=False, **poll
    ).result(),
    # never deleteSubscriptions=true: subscriptions outside the spec are not ours to delete
    "product": lambda c, r, _: c.apim.product.delete(c.rg, c.service, r.name, if_match="*"),
    "api-policy": lambda c, r, _: c.apim.api_policy.delete(
        c.rg, c.service, r.parents["api"], "policy", if_match="*"
    ),
    "api-operation": lambda c, r, _: c.apim.api_operation.delete(
        c.rg, c.service, r.parents["api"], r.name, if_match="*"
    ),
    "api": _delete_api,
    "logger": lambda c, r, _: c.apim.logger.delete(c.rg, c.service, r.name, if_match="*"),
    "llm-logger": lambda c, r, _: c.apim.logger.delete(c.rg, c.service, r.name, if_match="*"),
    # not modelled by the SDKs at their api-versions: raw requests through the clients
    "api-diagnostic": lambda c, r, _: arm_delete(c, r),
    "diagnostic-setting": lambda c, r, _: arm_delete(c, r),
    "named-value": lambda c, r, _: c.apim.named_value.delete(c.rg, c.service, r.name, if_match="*"),
    "eventhub-rule": lambda c, r, _: c.eventhub.event_hubs.delete_authorization_rule(
        *_hub_args(r), r.name
    ),
    "eventhub-consumer-group": lambda c, r, _: c.eventhub.consumer_groups.delete(
        *_hub_args(r), r.name
    ),
    "eventhub": lambda c, r, _: c.eventhub.event_hubs.delete(*_hub_args(r)),
}


@dataclass
class CleanupResult:
    """What apply removed, and what was already gone when it got there (``404``)."""

    deleted: list[CleanupStep] = field(default_factory=list)
    already_gone: list[CleanupStep] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.deleted)} deleted, {len(self.already_gone)} already gone"


def apply_cleanup(
    plan: CleanupPlan,
    clients: Clients,
    *,
    web: WebClients | None = None,
    on_step: Callable[[int, int, CleanupStep], None] | None = None,
    polling_interval: float | None = None,
) -> CleanupResult:
    """Send the plan's deletes in order (``absent`` and ``keep`` steps send nothing).

    A ``404`` counts as done. ``web`` is needed when the plan removes function settings;
    ``polling_interval`` (seconds) overrides the SDK's wait between polls of the asynchronous
    API delete (the dry run uses 0)."""
    todo = [s for s in plan.steps if s.action == "delete"]
    if any(s.resource.kind == FUNCTION_SETTINGS for s in todo) and web is None:
        raise ConfigError(
            "the plan removes function app settings: pass web= (make_cleanup_clients)"
        )
    if any(s.resource.kind.startswith("eventhub") for s in todo) and clients.eventhub is None:
        raise ConfigError("the plan deletes the Event Hub: the clients have no Event Hubs client")
    if any(s.resource.kind == "diagnostic-setting" for s in todo) and clients.monitor is None:
        raise ConfigError(
            "the plan deletes the diagnostic setting: the clients have no Monitor client"
        )
    poll = {} if polling_interval is None else {"polling_interval": polling_interval}
    result = CleanupResult()
    for i, step in enumerate(todo, 1):
        if on_step:
            on_step(i, len(todo), step)
        try:
            if step.resource.kind == FUNCTION_SETTINGS:
                removed = _remove_settings(web, function_settings_owned(plan.spec))
                gone = not removed
            else:
                DELETERS[step.resource.kind](clients, step.resource, poll)
                gone = False
        except ResourceNotFoundError:
            gone = True
        (result.already_gone if gone else result.deleted).append(step)
    return result


def _remove_settings(web: WebClients | None, owned: tuple[str, ...]) -> bool:
    """Read the settings now, write them back without ours; ``False`` if none was there."""
    assert web is not None  # apply_cleanup checked
    found = web.web.web_apps.list_application_settings(web.rg, web.app)
    current = dict(found.properties or {})
    keep = {k: v for k, v in current.items() if not is_owned(k, owned)}
    if len(keep) == len(current):
        return False
    web.web.web_apps.update_application_settings(web.rg, web.app, {"properties": keep})
    return True
