"""The function app's managed identity and the roles it needs: what ``function deploy`` can see.

``function deploy`` never grants roles (granting needs Owner or User Access Administrator); it
checks, and says what it could not check:

1. The identity exists on the site (``GET …/sites/{name}``, top-level ``identity``):
   system-assigned — ``identity.principalId``; user-assigned (``function.identity_client_id``)
   — the client id is one of ``identity.userAssignedIdentities[*].clientId``, whose
   ``principalId`` is then the principal to look for. Missing: an error, before any upload.
2. For each role :func:`aoai_helpers.roles.required_roles` lists for principal ``function``,
   an assignment of that role definition to that principal at the resource's scope or above:
   ``GET {scope}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&
   $filter=principalId eq '{id}'`` — "returns all role assignments at, above or below the
   scope for the specified principal" (*Role Assignments - List For Scope*,
   https://learn.microsoft.com/rest/api/authorization/role-assignments/list-for-scope); those
   below the scope are ignored here (they do not apply to it). The caller needs
   ``Microsoft.Authorization/roleAssignments/read`` (Reader has it through ``*/read``); a 403
   is reported as "could not check", never as missing.

Not checked: assignments to a group the identity belongs to (``principalId eq`` is not
transitive; ``assignedTo('{id}')`` would be), deny assignments, conditions, and propagation
delay of a fresh assignment. The Event Hubs trigger accepts *Azure Event Hubs Data Receiver*
or *Data Owner* (*Azure Event Hubs trigger*, "Identity-based connections"), so either counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..roles import (
    EVENT_HUBS_DATA_OWNER,
    EVENT_HUBS_DATA_RECEIVER,
    EVENT_HUBS_DATA_SENDER,
    RoleNeed,
)
from ..spec import Spec

__all__ = [
    "ROLE_ASSIGNMENTS_API_VERSION",
    "RoleCheck",
    "assignment_applies",
    "check_role",
    "hub_scope",
    "need_scope",
    "site_principal",
]

ROLE_ASSIGNMENTS_API_VERSION: Final = "2022-04-01"
#: Roles that also satisfy a need (the trigger: Data Receiver or Data Owner).
_ALSO_SATISFIES: Final[Mapping[str, frozenset[str]]] = {
    EVENT_HUBS_DATA_RECEIVER: frozenset({EVENT_HUBS_DATA_RECEIVER, EVENT_HUBS_DATA_OWNER}),
    EVENT_HUBS_DATA_SENDER: frozenset({EVENT_HUBS_DATA_SENDER, EVENT_HUBS_DATA_OWNER}),
}
_EVENT_HUBS_ROLES: Final = frozenset(
    {EVENT_HUBS_DATA_RECEIVER, EVENT_HUBS_DATA_SENDER, EVENT_HUBS_DATA_OWNER}
)

State = Literal["seen", "not_seen", "unknown", "offline"]
#: ``(status, JSON body)`` of ``GET {path}`` with ``params`` through ARM.
ArmGet = Callable[[str, Mapping[str, str]], tuple[int, Any]]


def site_principal(site: Mapping[str, Any], client_id: str | None) -> tuple[str | None, str]:
    """``(principal id, description)`` of the identity the spec names on ``site``, or
    ``(None, what is missing)``."""
    identity = site.get("identity")
    identity = identity if isinstance(identity, Mapping) else {}
    if client_id:
        for rid, uai in (identity.get("userAssignedIdentities") or {}).items():
            if (
                isinstance(uai, Mapping)
                and str(uai.get("clientId", "")).lower() == client_id.lower()
            ):
                pid = uai.get("principalId")
                if pid:
                    return str(pid), f"user-assigned identity {client_id} (principal {pid})"
                return None, f"user-assigned identity {rid} has no principalId"
        return None, (
            f"the user-assigned identity with client id {client_id} (function.identity_client_id) "
            "is not attached to the app (identity.userAssignedIdentities): assign it to the app"
        )
    pid = identity.get("principalId")
    if pid and "systemassigned" in str(identity.get("type", "")).replace(" ", "").lower():
        return str(pid), f"system-assigned identity (principal {pid})"
    return None, (
        "the app has no system-assigned identity (identity.principalId): turn it on "
        "(az functionapp identity assign) or set function.identity_client_id"
    )


def hub_scope(spec: Spec, subscription: str) -> str:
    """The ARM id of the spec's event hub (namespace group: ``event_hub.resource_group`` or
    ``apim.resource_group``)."""
    eh = spec.event_hub
    rg = eh.resource_group or spec.apim.resource_group
    return (
        f"/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.EventHub"
        f"/namespaces/{eh.namespace}/eventhubs/{eh.name}"
    )


def need_scope(spec: Spec, subscription: str, need: RoleNeed) -> str | None:
    """The ARM id ``need`` applies to: the hub for Event Hubs roles, the need's own scope when
    it is an ARM id, else None (nothing to query)."""
    if need.role_id in _EVENT_HUBS_ROLES:
        return hub_scope(spec, subscription) if subscription else None
    return need.scope if need.scope.lower().startswith("/subscriptions/") else None


def assignment_applies(assignment_scope: str, scope: str) -> bool:
    """An assignment at ``assignment_scope`` reaches ``scope``: it is at or above it. The list
    also returns those below, which do not; a management group (or ``/``) is above every
    subscription ARM answers for, so it counts."""
    a, s = assignment_scope.rstrip("/").lower(), scope.rstrip("/").lower()
    if not a or a.startswith("/providers/microsoft.management/managementgroups/"):
        return True
    return s == a or s.startswith(a + "/")


@dataclass(frozen=True)
class RoleCheck:
    """One need of the function's identity, and what ARM showed about it."""

    need: RoleNeed
    scope: str | None  # the ARM id queried
    state: State
    detail: str
    principal_id: str | None = None

    @property
    def command(self) -> str:
        """The ``az`` command that grants it."""
        return (
            f"az role assignment create --assignee-object-id {self.principal_id or '<principal id>'} "
            f"--assignee-principal-type ServicePrincipal --role {self.need.role_id} "
            f"--scope {self.scope or '<ARM id of ' + self.need.scope + '>'}"
        )

    def line(self) -> str:
        mark = {"seen": "ok", "not_seen": "MISSING?", "unknown": "unchecked", "offline": "need"}
        return f"  {mark[self.state]:<9} {self.need.line()} — {self.detail}"


def check_role(need: RoleNeed, scope: str | None, principal_id: str, get: ArmGet) -> RoleCheck:
    """Look for an assignment of ``need``'s role (or one that satisfies it) to ``principal_id``
    at ``scope`` or above."""
    if scope is None:
        return RoleCheck(
            need, None, "unknown", f"not checked: {need.scope} is not an ARM id", principal_id
        )
    status, body = get(
        f"{scope}/providers/Microsoft.Authorization/roleAssignments",
        {
            "api-version": ROLE_ASSIGNMENTS_API_VERSION,
            "$filter": f"principalId eq '{principal_id}'",
        },
    )
    if status in (401, 403):
        return RoleCheck(
            need,
            scope,
            "unknown",
            f"could not check: reading role assignments was refused (HTTP {status}; needs "
            "Microsoft.Authorization/roleAssignments/read, e.g. Reader)",
            principal_id,
        )
    if status >= 400 or not isinstance(body, Mapping):
        return RoleCheck(need, scope, "unknown", f"could not check (HTTP {status})", principal_id)
    wanted = _ALSO_SATISFIES.get(need.role_id, frozenset({need.role_id}))
    for item in body.get("value") or ():
        props = item.get("properties") if isinstance(item, Mapping) else None
        if not isinstance(props, Mapping):
            continue
        role = str(props.get("roleDefinitionId", "")).rstrip("/").rsplit("/", 1)[-1].lower()
        if (
            str(props.get("principalId", "")).lower() == principal_id.lower()
            and role in wanted
            and assignment_applies(str(props.get("scope", "")), scope)
        ):
            return RoleCheck(
                need, scope, "seen", f"assigned at {props.get('scope') or scope}", principal_id
            )
    return RoleCheck(
        need,
        scope,
        "not_seen",
        "no assignment seen at this scope or above (group memberships are not checked)",
        principal_id,
    )
