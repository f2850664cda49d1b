"""What a spec asks of Azure, as data: the ARM resources, their REST bodies, in apply order.

Pure: :func:`desired_resources` turns a :class:`~aoai_helpers.spec.Spec` into an ordered list
of :class:`Resource` (ARM resource id, api-version, the body the REST API documents, which
fields are secret and which are create-only). :mod:`aoai_helpers.apim.provision` compares them
with what exists and sends them through the SDKs; nothing here touches the network.

REST shapes: Microsoft.ApiManagement ``2024-05-01`` (azure-mgmt-apimanagement 5.x) and
Microsoft.EventHub (azure-mgmt-eventhub). Order: Event Hub (when the spec creates it), named
values, the Event Hub logger, the API (OpenAPI import of the AOAI inference spec), its extra
operations (the metered operations of the v1 API and classic Responses, absent from the GA
spec), the API policy, the product, the API in the product, the product policy, one
subscription per BU.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..clouds import Cloud
from ..exceptions import InputError
from ..spec import Spec, Subscription
from .policy import POLICY_FORMAT, named_values, render_api_policy, render_product_policy

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
    "RETIRED_OPERATIONS",
    "SECRET_FROM_SEND_RULE",
    "Resource",
    "desired_resources",
    "inference_spec_url",
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
#: answers 404 for a path that matches no operation (aoai_helpers.routes is what is served).
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

    def url(self, cloud: Cloud) -> str:
        return f"{cloud.arm_endpoint}{self.resource_id}?api-version={self.api_version}"


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


def _api_import(spec: Spec) -> tuple[str, str]:
    """(format, value) of the API import: a link, or a local file's content."""
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


def _eventhub(spec: Spec, subscription_id: str) -> list[Resource]:
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
                    "messageRetentionInDays": eh.retention_days,
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
    clean-up (:mod:`aoai_helpers.apim.cleanup`)."""
    api_id = f"{_service_id(spec, subscription_id)}/apis/{spec.apim.api_id}"
    return [_operation(spec, api_id, *op) for op in RETIRED_OPERATIONS]


def desired_resources(
    spec: Spec, cloud: Cloud, subscription_id: str, env: Mapping[str, str]
) -> list[Resource]:
    """Every resource the spec asks for, in apply order (see the module docstring)."""
    svc = _service_id(spec, subscription_id)
    apim = spec.apim
    api_id = f"{svc}/apis/{apim.api_id}"
    product_id = f"{svc}/products/{spec.product.id}"
    out: list[Resource] = _eventhub(spec, subscription_id) if spec.event_hub.create else []
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
    fmt, value = _api_import(spec)
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
    for sub in spec.subscriptions:
        out.append(
            Resource(
                "subscription",
                sub.id,
                f"{svc}/subscriptions/{sub.id}",
                APIM_API_VERSION,
                {
                    "properties": {
                        "scope": f"/products/{product.id}",
                        "displayName": subscription_display_name(sub),
                        "state": "active",
                    }
                },
            )
        )
    return out
