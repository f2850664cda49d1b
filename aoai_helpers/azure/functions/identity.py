"""The function app's managed identity and the roles it needs: what ``function deploy`` can see.

``function deploy`` never grants roles (granting needs Owner or User Access Administrator); it
checks, and says what it could not check:

1. The identity exists on the site (``GET …/sites/{name}``, top-level ``identity``):
   system-assigned — ``identity.principalId``; user-assigned (``function.identity_client_id``)
   — the client id is one of ``identity.userAssignedIdentities[*].clientId``, whose
   ``principalId`` is then the principal to look for. Missing: an error, before any upload.
2. For each role :func:`aoai_helpers.azure.roles.required_roles` lists for principal ``function``,
   an assignment of that role definition to that principal at the resource's scope or above:
   ``GET {scope}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&
   $filter=principalId eq '{id}'`` — "returns all role assignments at, above or below the
   scope for the specified principal" (*Role Assignments - List For Scope*,
   https://learn.microsoft.com/rest/api/authorization/role-assignments/list-for-scope); those
   below the scope are ignored here (they do not apply to it). The caller needs
   ``Microsoft.Authorization/roleAssignments/read`` (Reader has it through ``*/read``); a 403
   is reported as "could not check", never as missing.

The list is paged: each ``nextLink`` ARM returns is followed (its path and query, sent to the
same ARM endpoint, so the token never leaves it), up to :data:`MAX_PAGES` pages.

3. Roles the live app needs, read from its settings and site JSON (:func:`storage_needs`),
   checked the same way:

   - **Identity-based host storage**: ``AzureWebJobsStorage__accountName`` (or
     ``__blobServiceUri`` / ``__serviceUri``) and no ``AzureWebJobsStorage`` connection string
     — "make sure the app's identity has the Storage Blob Data Owner role in order to support
     the core host functionality" (*Azure Functions developer guide*, "Connecting to host
     storage with an identity"); ``__clientId`` names a user-assigned identity instead.
   - **Flex deployment storage with a managed identity**
     (``properties.functionAppConfig.deployment.storage.authentication.type``
     ``SystemAssignedIdentity`` / ``UserAssignedIdentity``): One Deploy writes the package to
     that blob container with the identity, so it needs blob data access to it. *Storage Blob
     Data Contributor* is listed, and *Storage Blob Data Owner* also counts; which one
     Microsoft requires is NOT CONFIRMED (no Microsoft page found says).

   The settings name the storage account, not its ARM id (the resource group is unknown), so
   the identity's assignments are listed once at the subscription
   (``principalId eq`` returns those at, above and below it): an assignment on the account (or
   under it) gives the account's ARM id, and the check runs against it. When no assignment
   names the account, an assignment at the subscription or a management group still counts;
   otherwise the role is reported as not checkable, with the ``az`` command to find the id.

Not checked: assignments to a group the identity belongs to (``principalId eq`` is not
transitive; ``assignedTo('{id}')`` would be), deny assignments, conditions, and propagation
delay of a fresh assignment. The Event Hubs trigger accepts *Azure Event Hubs Data Receiver*
or *Data Owner* (*Azure Event Hubs trigger*, "Identity-based connections"), so either counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from aoai_helpers.azure.roles import (
    EVENT_HUBS_DATA_OWNER,
    EVENT_HUBS_DATA_RECEIVER,
    EVENT_HUBS_DATA_SENDER,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
    RoleNeed,
)
from aoai_helpers.spec import Spec

__all__ = [
    "MAX_PAGES",
    "ROLE_ASSIGNMENTS_API_VERSION",
    "STORAGE_BLOB_DATA_OWNER",
    "RoleCheck",
    "StorageNeed",
    "assignment_applies",
    "check_role",
    "check_storage_role",
    "hub_scope",
    "list_assignments",
    "need_scope",
    "site_principal",
    "storage_needs",
    "storage_principal",
]

ROLE_ASSIGNMENTS_API_VERSION: Final = "2022-04-01"
#: *Storage Blob Data Owner* (built-in role id, *Azure built-in roles*).
STORAGE_BLOB_DATA_OWNER: Final = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
#: Pages of role assignments followed (``nextLink``) before giving up as "could not check".
MAX_PAGES: Final = 50
#: Roles that also satisfy a need (the trigger: Data Receiver or Data Owner; blob data
#: access to the Flex deployment container: Contributor or Owner).
_ALSO_SATISFIES: Final[Mapping[str, frozenset[str]]] = {
    EVENT_HUBS_DATA_RECEIVER: frozenset({EVENT_HUBS_DATA_RECEIVER, EVENT_HUBS_DATA_OWNER}),
    EVENT_HUBS_DATA_SENDER: frozenset({EVENT_HUBS_DATA_SENDER, EVENT_HUBS_DATA_OWNER}),
    STORAGE_BLOB_DATA_CONTRIBUTOR: frozenset(
        {STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_BLOB_DATA_OWNER}
    ),
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


def list_assignments(
    scope: str, principal_id: str, get: ArmGet
) -> tuple[int, list[Mapping[str, Any]] | None]:
    """``(status, assignments)`` of ``principal_id`` at, above and below ``scope``, every page
    (``nextLink``) followed; ``None`` when a page could not be read (``status`` says why)."""
    path = f"{scope}/providers/Microsoft.Authorization/roleAssignments"
    params: dict[str, str] = {
        "api-version": ROLE_ASSIGNMENTS_API_VERSION,
        "$filter": f"principalId eq '{principal_id}'",
    }
    items: list[Mapping[str, Any]] = []
    for _ in range(MAX_PAGES):
        status, body = get(path, params)
        if status >= 400 or not isinstance(body, Mapping):
            return status, None
        items += [i for i in body.get("value") or () if isinstance(i, Mapping)]
        link = body.get("nextLink")
        if not link:
            return status, items
        # ARM's next page, asked of the same ARM endpoint (never the host the link names)
        parts = urlsplit(str(link))
        path, params = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
    return 0, None  # more pages than MAX_PAGES


def _props_of(item: Mapping[str, Any]) -> Mapping[str, Any]:
    props = item.get("properties")
    return props if isinstance(props, Mapping) else {}


def _role_of(props: Mapping[str, Any]) -> str:
    return str(props.get("roleDefinitionId", "")).rstrip("/").rsplit("/", 1)[-1].lower()


def _refused(need: RoleNeed, scope: str | None, status: int, principal_id: str) -> RoleCheck:
    if status in (401, 403):
        detail = (
            f"could not check: reading role assignments was refused (HTTP {status}; needs "
            "Microsoft.Authorization/roleAssignments/read, e.g. Reader)"
        )
    elif status == 0:
        detail = f"could not check: more than {MAX_PAGES} pages of role assignments"
    else:
        detail = f"could not check (HTTP {status})"
    return RoleCheck(need, scope, "unknown", detail, principal_id)


def _find(
    items: list[Mapping[str, Any]], need: RoleNeed, principal_id: str, scope: str
) -> Mapping[str, Any] | None:
    wanted = _ALSO_SATISFIES.get(need.role_id, frozenset({need.role_id}))
    for item in items:
        props = _props_of(item)
        if (
            str(props.get("principalId", "")).lower() == principal_id.lower()
            and _role_of(props) in wanted
            and assignment_applies(str(props.get("scope", "")), scope)
        ):
            return props
    return None


def check_role(need: RoleNeed, scope: str | None, principal_id: str, get: ArmGet) -> RoleCheck:
    """Look for an assignment of ``need``'s role (or one that satisfies it) to ``principal_id``
    at ``scope`` or above."""
    if scope is None:
        return RoleCheck(
            need, None, "unknown", f"not checked: {need.scope} is not an ARM id", principal_id
        )
    status, items = list_assignments(scope, principal_id, get)
    if items is None:
        return _refused(need, scope, status, principal_id)
    return _verdict(items, need, principal_id, scope)


# ----------------------------------------------------------------------------- storage roles

#: The settings that make the host use an identity for its storage (*Connecting to host
#: storage with an identity*); an ``AzureWebJobsStorage`` value wins over them (an exact
#: match beats a prefix match).
_HOST_STORAGE_KEYS: Final = (
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__serviceUri",
)
_BLOB_HOST: Final = re.compile(r"^([a-z0-9]{3,24})\.blob\.", re.IGNORECASE)


@dataclass(frozen=True)
class StorageNeed:
    """A storage role the live app needs: on ``account`` (a name; None when the setting does
    not tell it), optionally only on ``container``, for the identity the setting names
    (``client_id`` / ``identity_resource_id``; neither: the function app's own)."""

    need: RoleNeed
    account: str | None
    container: str | None = None
    client_id: str | None = None
    identity_resource_id: str | None = None


def _setting(settings: Mapping[str, str], name: str) -> str | None:
    for key, value in settings.items():
        if key.lower() == name.lower() and str(value).strip():
            return str(value).strip()
    return None


def _account_of_url(url: str) -> tuple[str | None, str | None]:
    """``(account, first path segment)`` of ``https://<account>.blob.<suffix>/<container>…``;
    the account is None for another host (custom DNS, a private endpoint alias)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    match = _BLOB_HOST.match(parts.hostname or "")
    segment = parts.path.strip("/").split("/", 1)[0] or None
    return (match.group(1).lower() if match else None), segment


def storage_needs(
    site: Mapping[str, Any], settings: Mapping[str, str], who: str, app: str
) -> list[StorageNeed]:
    """The storage roles ``site`` with app ``settings`` needs (see the module docstring)."""
    host = _host_storage_need(settings, who, app)
    deployment = _deployment_storage_need(site, app)
    return [n for n in (host, deployment) if n is not None]


def _host_storage_need(settings: Mapping[str, str], who: str, app: str) -> StorageNeed | None:
    """Identity-based host storage (``AzureWebJobsStorage__*``): Storage Blob Data Owner."""
    if _setting(settings, "AzureWebJobsStorage") is None:
        account = _setting(settings, _HOST_STORAGE_KEYS[0])
        source = _HOST_STORAGE_KEYS[0]
        if account is None:
            for key in _HOST_STORAGE_KEYS[1:]:
                uri = _setting(settings, key)
                if uri is not None:
                    account, source = _account_of_url(uri)[0], key
                    break
            else:
                source = ""
        if source:
            client_id = _setting(settings, "AzureWebJobsStorage__clientId")
            return StorageNeed(
                RoleNeed(
                    "function",
                    f"function app {app}'s identity {client_id} (AzureWebJobsStorage__clientId)"
                    if client_id
                    else who,
                    "Storage Blob Data Owner",
                    STORAGE_BLOB_DATA_OWNER,
                    f"storage account {account or '(not named: ' + source + ')'} "
                    f"(host storage, {source})",
                    "the Functions host cannot use its storage (keys, timer locks, Event "
                    "Hubs checkpoints): the triggers do not run",
                ),
                account.lower() if account else None,
                client_id=client_id,
            )
    return None


def _deployment_storage_need(site: Mapping[str, Any], app: str) -> StorageNeed | None:
    """Flex deployment storage with a managed identity: blob data access on its container."""
    props = site.get("properties")
    config = props.get("functionAppConfig") if isinstance(props, Mapping) else None
    deployment = config.get("deployment") if isinstance(config, Mapping) else None
    storage = deployment.get("storage") if isinstance(deployment, Mapping) else None
    auth = storage.get("authentication") if isinstance(storage, Mapping) else None
    kind = str(auth.get("type", "")) if isinstance(auth, Mapping) else ""
    if (
        isinstance(storage, Mapping)
        and isinstance(auth, Mapping)
        and kind.lower()
        in (
            "systemassignedidentity",
            "userassignedidentity",
        )
    ):
        account, container = _account_of_url(str(storage.get("value") or ""))
        rid = (
            str(auth.get("userAssignedIdentityResourceId") or "") or None
            if kind.lower() == "userassignedidentity"
            else None
        )
        return StorageNeed(
            RoleNeed(
                "function",
                f"function app {app}'s user-assigned identity {rid}"
                if rid
                else (f"function app {app}'s system-assigned identity"),
                "Storage Blob Data Contributor",
                STORAGE_BLOB_DATA_CONTRIBUTOR,
                f"storage account {account or '(not named)'} container "
                f"{container or '?'} (Flex deployment storage, {kind}; Storage Blob Data "
                "Owner also counts — which one is required is NOT CONFIRMED)",
                "One Deploy cannot write the package to the deployment container (403 on "
                "the blob upload)",
            ),
            account,
            container,
            identity_resource_id=rid,
        )
    return None


def storage_principal(
    site: Mapping[str, Any], need: StorageNeed, default: tuple[str | None, str]
) -> tuple[str | None, str]:
    """The principal ``need`` is for: the identity its setting names, else ``default``."""
    if need.client_id:
        return site_principal(site, need.client_id)
    if need.identity_resource_id:
        identity = site.get("identity")
        uais = identity.get("userAssignedIdentities") if isinstance(identity, Mapping) else None
        for rid, uai in (uais or {}).items():
            if str(rid).lower() == need.identity_resource_id.lower() and isinstance(uai, Mapping):
                pid = uai.get("principalId")
                if pid:
                    return str(pid), f"user-assigned identity {rid} (principal {pid})"
        return None, (
            f"the user-assigned identity {need.identity_resource_id} (functionAppConfig.deployment."
            "storage.authentication) is not attached to the app or has no principalId"
        )
    return default


def _account_scope(items: list[Mapping[str, Any]], account: str) -> str | None:
    pattern = re.compile(
        r"^(/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.storage/"
        rf"storageaccounts/{re.escape(account)})(/|$)",
        re.IGNORECASE,
    )
    for item in items:
        scope = str(_props_of(item).get("scope", ""))
        match = pattern.match(scope)
        if match:
            return scope[: match.end(1)]
    return None


def check_storage_role(
    need: StorageNeed, subscription: str, principal_id: str, get: ArmGet
) -> RoleCheck:
    """Check ``need`` (see the module docstring: the account's ARM id is derived from the
    identity's assignments in ``subscription``)."""
    role = need.need
    if not need.account or not subscription:
        what = (
            "the storage account is not named by an ARM-checkable setting"
            if not need.account
            else "no subscription"
        )
        return RoleCheck(role, None, "unknown", f"could not be checked: {what}", principal_id)
    sub_scope = f"/subscriptions/{subscription}"
    status, items = list_assignments(sub_scope, principal_id, get)
    if items is None:
        return _refused(role, None, status, principal_id)
    account_id = _account_scope(items, need.account)
    if account_id is None:
        found = _find(items, role, principal_id, sub_scope)
        if found is not None:
            return RoleCheck(
                role,
                None,
                "seen",
                f"assigned at {found.get('scope') or sub_scope} (covers the account if it is in "
                f"subscription {subscription})",
                principal_id,
            )
        return RoleCheck(
            role,
            None,
            "unknown",
            f"could not be checked: the ARM id of storage account {need.account} could not be "
            "derived (no role assignment of this identity names it, and the settings do not "
            f"give its resource group); find it with: az storage account show --name "
            f"{need.account} --query id -o tsv",
            principal_id,
        )
    scope = (
        f"{account_id}/blobServices/default/containers/{need.container}"
        if need.container
        else account_id
    )
    return _verdict(items, role, principal_id, scope)


def _verdict(
    items: list[Mapping[str, Any]], need: RoleNeed, principal_id: str, scope: str
) -> RoleCheck:
    """Seen (where) or not seen, from the assignments listed for the principal."""
    found = _find(items, need, principal_id, scope)
    if found is not None:
        return RoleCheck(
            need, scope, "seen", f"assigned at {found.get('scope') or scope}", principal_id
        )
    return RoleCheck(
        need,
        scope,
        "not_seen",
        "no assignment seen at this scope or above (group memberships are not checked)",
        principal_id,
    )
