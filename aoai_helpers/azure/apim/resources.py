"""What a spec asks of Azure, as data: the ARM resources, their REST bodies, in apply order.

Pure: :func:`desired_resources` turns a :class:`~aoai_helpers.spec.Spec` into an ordered list
of :class:`Resource` (ARM resource id, api-version, the body the REST API documents, which
fields are secret and which are create-only). :mod:`aoai_helpers.azure.apim.provision` compares them
with what exists and sends them through the SDKs; nothing here touches the network.

REST shapes: Microsoft.ApiManagement ``2024-05-01`` (azure-mgmt-apimanagement 5.x) and
Microsoft.EventHub (azure-mgmt-eventhub). Order: Event Hub (when the spec creates it), named
values, the Event Hub logger, the API (OpenAPI import of the AOAI inference spec), its extra
operations (the metered operations of the v1 API and classic Responses, absent from the GA
spec), the API policy, the product, the API in the product, the product policy, the BU
owners' APIM users, one subscription per BU (owned by its user).

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

**The API's OpenAPI document**: a link (``openapi+json-link``, fetched by APIM itself) on
AzureCloud and AzureUSGovernment; in AzureChinaCloud, whether APIM reaches
raw.githubusercontent.com is not confirmed, so without ``apim.openapi_spec`` the bundled
document of the metered operations (:mod:`aoai_helpers.azure.apim.openapi`) is imported inline
(``openapi+json``). ``apim.openapi_spec`` (a local file, imported inline, or a URL, imported by
link) overrides both.

No catch-all operation: a path that is no operation of the API is answered ``404`` by APIM
itself, before any policy runs. Earlier versions provisioned ``v1_other`` (``POST /v1/*``);
:func:`retired_resources` names it, so that provisioning removes it where it still exists and
clean-up deletes it with the rest.

With ``llm_log.workspace_resource_id`` (APIM's language-model log, policies/README.md "Exact
usage for pass-through streams"), three more, each at the api-version whose REST spec has
what it needs (Azure/azure-rest-api-specs):

- the logger ``azuremonitor`` (``loggerType: azureMonitor``; ``LoggerContractProperties``
  requires only ``loggerType``, ``apimloggers.json`` / ``definitions.json``), after the Event
  Hub logger — the API diagnostic's ``loggerId`` is required and must name it (the
  Azure-Samples/AI-Gateway modules create it the same way). APIM may already have one: then it
  is used as it is (its description and buffering are not compared), and clean-up keeps it
  unless its description is :data:`LLM_LOGGER_DESCRIPTION`;
- the API's diagnostic ``azuremonitor`` at :data:`LLM_DIAGNOSTIC_API_VERSION`
  (``largeLanguageModel`` is in ``DiagnosticContractProperties`` of ``2024-10-01-preview``,
  not of ``2024-05-01``): ``logs: enabled``, ``sampling`` fixed at 100 % (every call is
  billed), and ``requests`` / ``responses`` (``messages: all``, ``maxSizeInBytes``) only with
  ``llm_log.log_messages``; after the API policy;
- the service's diagnostic setting ``llm_log.diagnostic_setting`` (Microsoft.Insights
  ``2021-05-01-preview``, ``diagnosticsSettings_API.json``): category ``GatewayLlmLogs`` to the
  workspace, ``logAnalyticsDestinationType: Dedicated`` (the resource-specific table
  ``ApiManagementGatewayLlmLog``, not ``AzureDiagnostics``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aoai_helpers.azure.apim.openapi import metered_document_text
from aoai_helpers.azure.apim.policy import (
    POLICY_FORMAT,
    named_values,
    render_api_policy,
    render_product_policy,
)
from aoai_helpers.clouds import Cloud
from aoai_helpers.exceptions import InputError
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
    "MISSING_SEND_CONNECTION",
    "NO_LAST_NAME",
    "RETIRED_OPERATIONS",
    "SECRET_FROM_SEND_RULE",
    "USER_NOTE",
    "Resource",
    "apim_user_id",
    "desired_resources",
    "inference_spec_url",
    "logged_owner",
    "owner_names",
    "retention_body",
    "retired_resources",
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


def _service_id(spec: Spec, subscription_id: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{spec.apim.resource_group}"
        f"/providers/Microsoft.ApiManagement/service/{spec.apim.service_name}"
    )


def _api_import(spec: Spec, cloud: Cloud) -> tuple[str, str]:
    """(format, value) of the API import: a link, or a local file's content (AzureChinaCloud
    without ``apim.openapi_spec``: the bundled document, see the module docstring)."""
    if spec.apim.openapi_spec is None and cloud.name == "AzureChinaCloud":
        return "openapi+json", metered_document_text(spec)
    source = spec.apim.openapi_spec or inference_spec_url(spec.apim.api_version)
    if source.startswith(("https://", "http://")):
        return (
            "openapi-link" if source.endswith((".yaml", ".yml")) else "openapi+json-link"
        ), source
    path = Path(source)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the OpenAPI spec {path}: {exc.strerror}") from None
    return ("openapi" if path.suffix in (".yaml", ".yml") else "openapi+json"), text


def _eventhub(spec: Spec, subscription_id: str, tier: str | None) -> list[Resource]:
    eh = spec.event_hub
    rg = eh.resource_group or spec.apim.resource_group
    hub_id = (
        f"/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/Microsoft.EventHub"
        f"/namespaces/{eh.namespace}/eventhubs/{eh.name}"
    )
    parents = {"resource_group": rg, "namespace": eh.namespace, "hub": eh.name}
    out = [
        Resource(
            "eventhub",
            eh.name,
            hub_id,
            EVENTHUB_API_VERSION,
            {
                "properties": {
                    "partitionCount": eh.partition_count,
                    **retention_body(eh.retention_days, tier),
                }
            },
            create_only=("properties.partitionCount",),  # fixed once created (Standard tier)
            parents=parents,
        )
    ]
    if eh.consumer_group != "$Default":
        out.append(
            Resource(
                "eventhub-consumer-group",
                eh.consumer_group,
                f"{hub_id}/consumergroups/{eh.consumer_group}",
                EVENTHUB_API_VERSION,
                {"properties": {"userMetadata": "aoai usage ingestion"}},
                parents=parents,
            )
        )
    for rule, rights in ((eh.send_rule, ["Send"]), (eh.listen_rule, ["Listen"])):
        out.append(
            Resource(
                "eventhub-rule",
                rule,
                f"{hub_id}/authorizationRules/{rule}",
                EVENTHUB_API_VERSION,
                {"properties": {"rights": rights}},
                parents=parents,
            )
        )
    return out


def _logger_credentials(spec: Spec, cloud: Cloud, env: Mapping[str, str]) -> dict[str, Any]:
    eh = spec.event_hub
    if eh.auth == "managed_identity":
        return {
            "name": eh.name,
            "endpointAddress": cloud.eventhub_host(eh.namespace),
            "identityClientId": eh.identity_client_id,
        }
    connection = env.get("AOAI_EVENTHUB_SEND_CONNECTION") or (
        SECRET_FROM_SEND_RULE if eh.create else MISSING_SEND_CONNECTION
    )
    return {"name": eh.name, "connectionString": connection}


def _llm_logger(svc: str) -> Resource:
    return Resource(
        "llm-logger",
        LLM_LOGGER,
        f"{svc}/loggers/{LLM_LOGGER}",
        APIM_API_VERSION,
        {
            "properties": {
                "loggerType": "azureMonitor",
                "description": LLM_LOGGER_DESCRIPTION,
                "isBuffered": False,
            }
        },
        # an azuremonitor logger APIM already has is used as it is
        create_only=("properties.description", "properties.isBuffered"),
    )


def _llm_diagnostics(spec: Spec, svc: str, api_id: str) -> list[Resource]:
    llm = spec.llm_log
    assert llm.workspace_resource_id is not None
    settings: dict[str, Any] = {"logs": "enabled"}
    if llm.log_messages:
        messages = {"messages": "all", "maxSizeInBytes": llm.max_message_bytes}
        settings["requests"] = dict(messages)
        settings["responses"] = dict(messages)
    diagnostic = Resource(
        "api-diagnostic",
        LLM_DIAGNOSTIC,
        f"{api_id}/diagnostics/{LLM_DIAGNOSTIC}",
        LLM_DIAGNOSTIC_API_VERSION,
        {
            "properties": {
                "loggerId": f"{svc}/loggers/{LLM_LOGGER}",
                "sampling": {"samplingType": "fixed", "percentage": 100},
                "largeLanguageModel": settings,
            }
        },
        parents={"api": spec.apim.api_id},
        exact=("properties.largeLanguageModel",),
    )
    setting = Resource(
        "diagnostic-setting",
        llm.diagnostic_setting,
        f"{svc}/providers/Microsoft.Insights/diagnosticSettings/{llm.diagnostic_setting}",
        DIAGNOSTIC_SETTINGS_API_VERSION,
        {
            "properties": {
                "workspaceId": llm.workspace_resource_id,
                "logAnalyticsDestinationType": "Dedicated",
                "logs": [{"category": LLM_LOG_CATEGORY, "enabled": True}],
            }
        },
        parents={"resource_uri": svc},
    )
    return [diagnostic, setting]


def _operation(spec: Spec, api_id: str, op_id: str, display: str, template: str) -> Resource:
    return Resource(
        "api-operation",
        op_id,
        f"{api_id}/operations/{op_id}",
        APIM_API_VERSION,
        {
            "properties": {
                "displayName": display,
                "method": "POST",
                "urlTemplate": template,
                "templateParameters": [],
            }
        },
        parents={"api": spec.apim.api_id},
    )


def retired_resources(spec: Spec, subscription_id: str) -> list[Resource]:
    """What earlier versions of provisioning created for ``spec`` and this one does not (the
    ``v1_other`` catch-all operation): provisioning deletes them where they exist, and so does
    clean-up (:mod:`aoai_helpers.azure.apim.cleanup`)."""
    api_id = f"{_service_id(spec, subscription_id)}/apis/{spec.apim.api_id}"
    return [_operation(spec, api_id, *op) for op in RETIRED_OPERATIONS]


def _users(
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


def desired_resources(
    spec: Spec,
    cloud: Cloud,
    subscription_id: str,
    env: Mapping[str, str],
    *,
    apim_sku: str | None = None,
    eventhub_tier: str | None = None,
    owners: Mapping[str, str] | None = None,
) -> list[Resource]:
    """Every resource the spec asks for, in apply order (see the module docstring).

    ``apim_sku``: the service's tier (``None``: unknown, taken to have users); ``eventhub_tier``:
    the namespace's (``None``: unknown); ``owners``: owner email (lower case) → the id of a user
    the service already has with that email, reused instead of creating one."""
    svc = _service_id(spec, subscription_id)
    apim = spec.apim
    api_id = f"{svc}/apis/{apim.api_id}"
    product_id = f"{svc}/products/{spec.product.id}"
    out: list[Resource] = (
        _eventhub(spec, subscription_id, eventhub_tier or spec.event_hub.tier)
        if spec.event_hub.create
        else []
    )
    for nv in named_values(spec, env):
        props: dict[str, Any] = {"displayName": nv.display_name, "secret": nv.secret}
        if nv.key_vault_secret_id:
            props["keyVault"] = {"secretIdentifier": nv.key_vault_secret_id}
        else:
            props["value"] = nv.value
        out.append(
            Resource(
                "named-value",
                nv.id,
                f"{svc}/namedValues/{nv.id}",
                APIM_API_VERSION,
                {"properties": props},
                secret=("properties.value",) if nv.secret else (),
            )
        )
    out.append(
        Resource(
            "logger",
            spec.event_hub.logger_id,
            f"{svc}/loggers/{spec.event_hub.logger_id}",
            APIM_API_VERSION,
            {
                "properties": {
                    "loggerType": "azureEventHub",
                    "description": f"AOAI usage events to Event Hub {spec.event_hub.name}",
                    "credentials": _logger_credentials(spec, cloud, env),
                }
            },
            secret=("properties.credentials.connectionString",),
        )
    )
    llm_log = spec.llm_log.workspace_resource_id is not None
    if llm_log:
        out.append(_llm_logger(svc))
    fmt, value = _api_import(spec, cloud)
    out.append(
        Resource(
            "api",
            apim.api_id,
            api_id,
            APIM_API_VERSION,
            {
                "properties": {
                    "format": fmt,
                    "value": value,
                    "path": apim.api_path,
                    "displayName": apim.api_display_name,
                    "serviceUrl": f"{spec.backends[0].endpoint}/openai",
                    "protocols": ["https"],
                    "subscriptionRequired": True,
                    "subscriptionKeyParameterNames": {
                        "header": "api-key",
                        "query": "subscription-key",
                    },
                }
            },
            create_only=("properties.format", "properties.value"),
        )
    )
    out.extend(_operation(spec, api_id, *op) for op in EXTRA_OPERATIONS)
    out.append(
        Resource(
            "api-policy",
            "policy",
            f"{api_id}/policies/policy",
            APIM_API_VERSION,
            {"properties": {"format": POLICY_FORMAT, "value": render_api_policy(spec)}},
            create_only=("properties.format",),
            parents={"api": apim.api_id},
        )
    )
    if llm_log:
        out.extend(_llm_diagnostics(spec, svc, api_id))
    product = spec.product
    out.append(
        Resource(
            "product",
            product.id,
            product_id,
            APIM_API_VERSION,
            {
                "properties": {
                    "displayName": product.display_name,
                    "description": product.description,
                    "subscriptionRequired": True,
                    "approvalRequired": False,
                    "state": "published",
                }
            },
        )
    )
    out.append(
        Resource(
            "product-api",
            apim.api_id,
            f"{product_id}/apis/{apim.api_id}",
            APIM_API_VERSION,
            None,
            parents={"product": product.id},
        )
    )
    out.append(
        Resource(
            "product-policy",
            "policy",
            f"{product_id}/policies/policy",
            APIM_API_VERSION,
            {"properties": {"format": POLICY_FORMAT, "value": render_product_policy(spec)}},
            create_only=("properties.format",),
            parents={"product": product.id},
        )
    )
    users: list[Resource] = []
    owner_ids: dict[str, str] = {}
    if spec.owners_logged(apim_sku):
        users, owner_ids = _users(spec, svc, owners or {})
    out.extend(users)
    for sub in spec.subscriptions:
        sub_props: dict[str, Any] = {
            "scope": f"/products/{product.id}",
            "displayName": subscription_display_name(sub),
            "state": "active",
        }
        owner = owner_ids.get((sub.owner_email or "").lower())
        if owner is not None:
            sub_props["ownerId"] = f"/users/{owner}"
        out.append(
            Resource(
                "subscription",
                sub.id,
                f"{svc}/subscriptions/{sub.id}",
                APIM_API_VERSION,
                {"properties": sub_props},
                # Subscription_CreateOrUpdate's ``notify``: "If false, do not send any email
                # notification for change of state of subscription"
                query=(("notify", "false"),),
            )
        )
    return out
