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

The :class:`~aoai_helpers.azure.apim.contracts.Resource` type, the api-versions, the owners'
user ids and names and the hub's retention body are in :mod:`~aoai_helpers.azure.apim.contracts`.

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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aoai_helpers.azure.apim.contracts import (
    APIM_API_VERSION,
    DIAGNOSTIC_SETTINGS_API_VERSION,
    EVENTHUB_API_VERSION,
    EXTRA_OPERATIONS,
    LLM_DIAGNOSTIC,
    LLM_DIAGNOSTIC_API_VERSION,
    LLM_LOG_CATEGORY,
    LLM_LOGGER,
    LLM_LOGGER_DESCRIPTION,
    MISSING_SEND_CONNECTION,
    NO_LAST_NAME,
    RETIRED_OPERATIONS,
    SECRET_FROM_SEND_RULE,
    USER_NOTE,
    Resource,
    apim_user_id,
    inference_spec_url,
    logged_owner,
    owner_names,
    owner_users,
    retention_body,
    subscription_display_name,
)
from aoai_helpers.azure.apim.openapi import metered_document_text
from aoai_helpers.azure.apim.policy import (
    POLICY_FORMAT,
    named_values,
    render_api_policy,
    render_product_policy,
)
from aoai_helpers.clouds import Cloud
from aoai_helpers.exceptions import InputError
from aoai_helpers.spec import Spec

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
    api_id = f"{svc}/apis/{spec.apim.api_id}"
    out: list[Resource] = (
        _eventhub(spec, subscription_id, eventhub_tier or spec.event_hub.tier)
        if spec.event_hub.create
        else []
    )
    out += _named_values(spec, env, svc)
    out.append(_eventhub_logger(spec, cloud, env, svc))
    llm_log = spec.llm_log.workspace_resource_id is not None
    if llm_log:
        out.append(_llm_logger(svc))
    out.append(_api(spec, cloud, api_id))
    out.extend(_operation(spec, api_id, *op) for op in EXTRA_OPERATIONS)
    out.append(
        Resource(
            "api-policy",
            "policy",
            f"{api_id}/policies/policy",
            APIM_API_VERSION,
            {"properties": {"format": POLICY_FORMAT, "value": render_api_policy(spec)}},
            create_only=("properties.format",),
            parents={"api": spec.apim.api_id},
        )
    )
    if llm_log:
        out.extend(_llm_diagnostics(spec, svc, api_id))
    out += _product(spec, svc)
    users: list[Resource] = []
    owner_ids: dict[str, str] = {}
    if spec.owners_logged(apim_sku):
        users, owner_ids = owner_users(spec, svc, owners or {})
    out.extend(users)
    out += _subscriptions(spec, svc, owner_ids)
    return out


def _named_values(spec: Spec, env: Mapping[str, str], svc: str) -> list[Resource]:
    """The API policy's named values (a secret one from Key Vault when the spec says so)."""
    out = []
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
    return out


def _eventhub_logger(spec: Spec, cloud: Cloud, env: Mapping[str, str], svc: str) -> Resource:
    """The APIM logger both ``log-to-eventhub`` policies write to."""
    return Resource(
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


def _api(spec: Spec, cloud: Cloud, api_id: str) -> Resource:
    """The API, imported from the inference spec's OpenAPI document (create-only)."""
    apim = spec.apim
    fmt, value = _api_import(spec, cloud)
    return Resource(
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


def _product(spec: Spec, svc: str) -> list[Resource]:
    """The product, the API in it and the product policy (the token limits)."""
    product, api = spec.product, spec.apim.api_id
    product_id = f"{svc}/products/{product.id}"
    return [
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
        ),
        Resource(
            "product-api",
            api,
            f"{product_id}/apis/{api}",
            APIM_API_VERSION,
            None,
            parents={"product": product.id},
        ),
        Resource(
            "product-policy",
            "policy",
            f"{product_id}/policies/policy",
            APIM_API_VERSION,
            {"properties": {"format": POLICY_FORMAT, "value": render_product_policy(spec)}},
            create_only=("properties.format",),
            parents={"product": product.id},
        ),
    ]


def _subscriptions(spec: Spec, svc: str, owner_ids: Mapping[str, str]) -> list[Resource]:
    """One subscription per BU, owned by its owner's user when there is one."""
    out = []
    for sub in spec.subscriptions:
        sub_props: dict[str, Any] = {
            "scope": f"/products/{spec.product.id}",
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
