"""The vocabulary of provisioning: :class:`Resource` (one ARM resource as the spec wants it), the
api-versions and fixed names of what it creates, the BU owners' APIM user ids and names, and
the hub's retention body. Pure; imports the top level only.

**Owners** (``UserName``/``UserEmail`` in the rows come from APIM's ``context.User``, which is
empty for a subscription without an owner): each distinct ``owner_email`` of the spec's
subscriptions gets an APIM user (``User_CreateOrUpdate``: ``email`` 1..254, ``firstName`` and
``lastName`` 1..100 required; user id 1..80 characters, ``apimusers.json`` / ``definitions.json``
2024-05-01) with the id :func:`apim_user_id` derives from the email, ``state: active``, no
``confirmation`` (it only picks which e-mail a new user gets, and ``notify=false`` sends none)
and :data:`USER_NOTE` as its note; the subscription's ``ownerId`` is ``/users/{userId}``
(``SubscriptionCreateParameterProperties.ownerId``: "in form /users/{userId}"). A user the
service already has with that email is reused instead (``owners``), never changed. No users on
the Consumption tier (no users there: *API Management features*, "Developer portal" row,
footnote "users, groups…"): ``apim_sku="Consumption"`` leaves them and ``ownerId`` out.

**Event Hub retention** (``eventhub_tier``): up to 7 days as ``messageRetentionInDays``
("value should be 1 to 7 days", Microsoft.EventHub ``2026-01-01`` ``EventhubProperties``);
longer (Premium, Dedicated: 90 days, *Event Hubs quotas*) as ``retentionDescription``
(``cleanupPolicy: Delete``, ``retentionTimeInHours``) without ``messageRetentionInDays``, which
cannot carry more than 7.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aoai_helpers.clouds import Cloud
from aoai_helpers.spec import Spec, Subscription

__all__ = [
    "APIM_API_VERSION",
    "DIAGNOSTIC_SETTINGS_API_VERSION",
    "EVENTHUB_API_VERSION",
    "EXTRA_OPERATIONS",
    "LLM_DIAGNOSTIC",
    "LLM_DIAGNOSTIC_API_VERSION",
    "LLM_LOGGER",
    "LLM_LOGGER_DESCRIPTION",
    "LLM_LOG_CATEGORY",
    "MAX_MESSAGE_RETENTION_DAYS",
    "MISSING_SEND_CONNECTION",
    "NO_LAST_NAME",
    "RETIRED_OPERATIONS",
    "SECRET_FROM_SEND_RULE",
    "USER_NOTE",
    "Resource",
    "apim_user_id",
    "inference_spec_url",
    "logged_owner",
    "owner_names",
    "owner_users",
    "retention_body",
    "subscription_display_name",
]

APIM_API_VERSION: Final = "2024-05-01"
EVENTHUB_API_VERSION: Final = "2026-01-01"
#: The API diagnostic's api-version: the first whose ``DiagnosticContractProperties`` has
#: ``largeLanguageModel`` among the ones checked (2024-05-01 has not).
LLM_DIAGNOSTIC_API_VERSION: Final = "2024-10-01-preview"
#: Microsoft.Insights diagnostic settings (``DiagnosticSettings_CreateOrUpdate``).
DIAGNOSTIC_SETTINGS_API_VERSION: Final = "2021-05-01-preview"
#: The APIM logger and API diagnostic of the language-model log (names as the portal uses them).
LLM_LOGGER: Final = "azuremonitor"
LLM_DIAGNOSTIC: Final = "azuremonitor"
#: Marks the ``azuremonitor`` logger as created by provisioning (clean-up deletes only that one).
LLM_LOGGER_DESCRIPTION: Final = "Azure Monitor logger created by apim-aoai-proxy provisioning"
#: The resource-log category of APIM's language-model log (table ApiManagementGatewayLlmLog).
LLM_LOG_CATEGORY: Final = "GatewayLlmLogs"
#: Stand-in for the logger's connection string when the plan creates the Send rule itself:
#: apply reads the rule's key (``listKeys``) just before creating the logger.
SECRET_FROM_SEND_RULE: Final = "<connection string of the new Send rule>"
#: Operations the GA inference spec lacks: the metered operations of the v1 API and classic
#: Responses (ids as the local gateway reports them in ``OperationId``). Nothing else: APIM
#: answers 404 for a path that matches no operation (aoai_helpers.core.routes is what is served).
EXTRA_OPERATIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("v1_chat_completions", "v1: chat completions", "/v1/chat/completions"),
    ("v1_completions", "v1: completions", "/v1/completions"),
    ("v1_embeddings", "v1: embeddings", "/v1/embeddings"),
    ("v1_responses", "v1: responses", "/v1/responses"),
    ("responses_create", "Responses (classic)", "/responses"),
)
#: Operations earlier provisioning created and this one does not: ``v1_other`` forwarded any
#: ``POST /v1/*`` (unmetered calls billed 0). Removed where found (provision, clean-up).
RETIRED_OPERATIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("v1_other", "v1: other POST", "/v1/*"),
)
#: The logger's connection string when the environment does not give one (apply refuses it).
MISSING_SEND_CONNECTION: Final = "<not set: $AOAI_EVENTHUB_SEND_CONNECTION>"
#: The note of the APIM users provisioning creates (clean-up deletes only users with it).
USER_NOTE: Final = "BU subscription owner created by apim-aoai-proxy provisioning"
#: Longest ``messageRetentionInDays`` (REST spec: "value should be 1 to 7 days").
MAX_MESSAGE_RETENTION_DAYS: Final = 7
_SPEC_URL: Final = (
    "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/main/specification/"
    "cognitiveservices/data-plane/AzureOpenAI/inference/{kind}/{version}/inference.json"
)


@dataclass(frozen=True)
class Resource:
    """One ARM resource as the spec wants it.

    ``kind`` names the SDK call; ``name`` is its short id; ``resource_id`` the ARM id;
    ``body`` the REST body. ``secret`` and ``create_only`` are dotted paths into ``body``:
    secrets are masked in every display and, like create-only fields (ARM does not return
    them), are not compared with what exists. ``scope`` is the product scope of a subscription
    (compared by suffix: ARM returns it as a full id). ``exact`` are dotted paths whose whole
    object must match: a key that exists there but is not wanted is a change too (a PUT
    replaces the resource, e.g. message logging turned off).
    """

    kind: str
    name: str
    resource_id: str
    api_version: str
    body: dict[str, Any] | None
    secret: tuple[str, ...] = ()
    create_only: tuple[str, ...] = ()
    parents: dict[str, str] = field(default_factory=dict)
    exact: tuple[str, ...] = ()
    #: query parameters the PUT sends besides ``api-version`` (a user's ``notify=false``)
    query: tuple[tuple[str, str], ...] = ()

    def url(self, cloud: Cloud) -> str:
        # as the SDKs send them: the operation's own parameters, then api-version
        extra = "".join(f"{k}={v}&" for k, v in self.query)
        return f"{cloud.arm_endpoint}{self.resource_id}?{extra}api-version={self.api_version}"


def apim_user_id(email: str) -> str:
    """The APIM user id provisioning gives the owner ``email``: deterministic (clean-up finds it
    again), case-insensitive, ``[a-z0-9-]`` only, at most 80 characters (``UserIdParameter``:
    1..80): ``bu-owner-`` + a slug of the email (≤ 50) + ``-`` + 10 hex digits of its SHA-256."""
    normal = email.strip().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", normal).strip("-")[:50].rstrip("-") or "user"
    digest = hashlib.sha256(normal.encode("utf-8")).hexdigest()[:10]
    return f"bu-owner-{slug}-{digest}"


#: APIM requires a user's last name (1..100 characters): a one-word owner name is stored with
#: this one, which the policy leaves out when it logs the name (``UserName`` = the spec's name).
NO_LAST_NAME: Final = "-"


def owner_names(sub: Subscription) -> tuple[str, str]:
    """(firstName, lastName) of the subscription's owner, each 1..100 characters (both required).

    ``owner_name`` splits at its first space (the policy logs them joined again, so any split
    gives back the name); a one-word name gets :data:`NO_LAST_NAME`; no name takes the email's
    local part (``li.wei@…`` → ``li``, ``wei``; one part → it and :data:`NO_LAST_NAME`)."""
    assert sub.owner_email is not None
    name = " ".join((sub.owner_name or "").split())
    if not name:
        local = [p for p in re.split(r"[._+-]+", sub.owner_email.split("@", 1)[0]) if p]
        name = " ".join(local) or sub.owner_email
    first, _, last = name.partition(" ")
    return first[:100], (last or NO_LAST_NAME)[:100]


def logged_owner(sub: Subscription) -> tuple[str | None, str | None]:
    """(``UserName``, ``UserEmail``) the policy logs for ``sub`` once provisioning made its owner:
    the APIM user's first and last name joined (:data:`NO_LAST_NAME` left out) and its email;
    (None, None) without ``owner_email`` (no user, so APIM's ``context.User`` is null). The
    local gateway logs the same. Where provisioning reuses a user the service already has, APIM
    logs that user's own names (the plan says so)."""
    if not sub.owner_email:
        return None, None
    first, last = owner_names(sub)
    return (first if last == NO_LAST_NAME else f"{first} {last}"), sub.owner_email


def retention_body(days: int, tier: str | None) -> dict[str, Any]:
    """The hub's retention properties: ``messageRetentionInDays`` up to 7 days, else (Premium,
    Dedicated) ``retentionDescription`` with ``cleanupPolicy: Delete`` in hours."""
    if days <= MAX_MESSAGE_RETENTION_DAYS or tier in ("Basic", "Standard"):
        return {"messageRetentionInDays": days}
    return {"retentionDescription": {"cleanupPolicy": "Delete", "retentionTimeInHours": days * 24}}


def inference_spec_url(api_version: str) -> str:
    """The published AOAI inference OpenAPI spec for ``api_version`` (GA or preview folder)."""
    kind = "preview" if "preview" in api_version else "stable"
    return _SPEC_URL.format(kind=kind, version=api_version)


def subscription_display_name(sub: Subscription) -> str:
    """The APIM subscription's display name: carries the BU and cost centre (max 100)."""
    unit = sub.business_unit if sub.business_unit != sub.display_name else None
    extra = ", ".join(x for x in (unit, sub.cost_center) if x)
    name = f"{sub.display_name} [{extra}]" if extra else sub.display_name
    return name[:100]


def owner_users(
    spec: Spec, svc: str, owners: Mapping[str, str]
) -> tuple[list[Resource], dict[str, str]]:
    """The owners' users to create, and owner email (lower case) → user id for every owner."""
    out: list[Resource] = []
    ids: dict[str, str] = {}
    for sub in spec.subscriptions:
        if sub.owner_email is None or sub.owner_email.lower() in ids:
            continue
        email = sub.owner_email.lower()
        if email in owners:  # a user the service already has: reused as it is
            ids[email] = owners[email]
            continue
        uid = ids[email] = apim_user_id(sub.owner_email)
        first, last = owner_names(sub)
        out.append(
            Resource(
                "user",
                uid,
                f"{svc}/users/{uid}",
                APIM_API_VERSION,
                {
                    "properties": {
                        "email": sub.owner_email,
                        "firstName": first,
                        "lastName": last,
                        "state": "active",
                        "note": USER_NOTE,
                    }
                },
                create_only=("properties.note",),
                query=(("notify", "false"),),
            )
        )
    return out, ids
