"""The management clients of one cloud and subscription, and one read and one write per
resource kind (the SDKs' operations, or raw ARM requests for what they do not model); the
live tiers of the APIM service and the Event Hubs namespace. Imports ``resources``, ``policy``
and the top level.

The language-model log's two resources the SDKs do not model (see
:mod:`~aoai_helpers.azure.apim.resources`) go through the management clients' own pipelines
(``_send_request(HttpRequest(…))``: the same credential, ARM endpoint, scope and transport):
the API diagnostic through the APIM client, at ``2024-10-01-preview``, because
azure-mgmt-apimanagement 5.x speaks ``2024-05-01``, whose ``DiagnosticContract`` has no
``largeLanguageModel``; the diagnostic setting through azure-mgmt-monitor's client, because
azure-mgmt-monitor 7.0.0 no longer has a ``diagnostic_settings`` operation group (6.x had it;
8.0.0b1 adds it back). Both are ``GET`` then, when needed, ``PUT`` of the whole resource —
never ``PATCH``. ``_send_request`` is how the generated clients document sending a request
they have no method for (their docstring: ``>>> response = client._send_request(request)``,
"see https://aka.ms/azsdk/dpcodegen/python/send_request").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from aoai_helpers.azure.apim.policy import POLICY_FORMAT
from aoai_helpers.azure.apim.resources import (
    Resource,
    apim_user_id,
)
from aoai_helpers.clouds import Cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec

__all__ = [
    "Clients",
    "arm_delete",
    "arm_get",
    "arm_put",
    "existing_owners",
    "get_resource",
    "live_apim_sku",
    "live_eventhub_tier",
    "make_clients",
    "put_resource",
]


@dataclass
class Clients:
    """The management clients of one cloud and Azure subscription."""

    apim: Any
    eventhub: Any = None
    rg: str = ""
    service: str = ""
    monitor: Any = None


def make_clients(
    spec: Spec, cloud: Cloud, subscription_id: str, credential: Any, transport: Any = None
) -> Clients:
    """APIM (and Event Hubs, when the spec creates the hub; Monitor, when it has a language-model
    log workspace) clients on ``cloud``'s ARM endpoint."""
    from azure.mgmt.apimanagement import ApiManagementClient

    kwargs: dict[str, Any] = {
        "base_url": cloud.arm_endpoint,
        "credential_scopes": [cloud.arm_scope],
    }
    if transport is not None:
        kwargs["transport"] = transport
    apim = ApiManagementClient(credential, subscription_id, **kwargs)
    eventhub = None
    if spec.event_hub.create:
        from azure.mgmt.eventhub import EventHubManagementClient

        eventhub = EventHubManagementClient(credential, subscription_id, **kwargs)
    monitor = None
    if spec.llm_log.workspace_resource_id is not None:
        from azure.mgmt.monitor import MonitorManagementClient

        monitor = MonitorManagementClient(credential, subscription_id, **kwargs)
    return Clients(apim, eventhub, spec.apim.resource_group, spec.apim.service_name, monitor)


def _arm_client(c: Clients, r: Resource) -> Any:
    client = c.monitor if r.kind == "diagnostic-setting" else c.apim
    if client is None:
        raise ConfigError(f"no management client for {r.kind} {r.name} (make_clients)")
    return client


def _arm_request(c: Clients, r: Resource, method: str, body: Any = None) -> Any:
    """One request to ``r``'s ARM id through the client's pipeline; ``ResourceNotFoundError`` on
    404, ``HttpResponseError`` on any other error status."""
    from azure.core.rest import HttpRequest

    kwargs: dict[str, Any] = {"params": {"api-version": r.api_version}}
    if body is not None:
        kwargs["json"] = body
    if method == "DELETE" and r.kind == "api-diagnostic":
        kwargs["headers"] = {"If-Match": "*"}  # ApiDiagnostic_Delete: If-Match is required
    response = _arm_client(c, r)._send_request(HttpRequest(method, r.resource_id, **kwargs))
    if response.status_code == 404:
        raise ResourceNotFoundError(response=response)
    if response.status_code >= 400:
        raise HttpResponseError(response=response)
    return response


def arm_get(c: Clients, r: Resource) -> dict[str, Any] | None:
    """The resource as ARM returns it, ``None`` when it does not exist."""
    try:
        response = _arm_request(c, r, "GET")
    except ResourceNotFoundError:
        return None
    found = response.json()
    return dict(found) if isinstance(found, dict) else {}


def arm_put(c: Clients, r: Resource, body: Any) -> None:
    _arm_request(c, r, "PUT", body)


def arm_delete(c: Clients, r: Resource) -> None:
    _arm_request(c, r, "DELETE")


def get_resource(c: Clients, r: Resource) -> dict[str, Any] | None:
    rg, svc, p = c.rg, c.service, r.parents
    try:
        if r.kind.startswith("eventhub"):
            ns_args = (p["resource_group"], p["namespace"], p["hub"])
            if r.kind == "eventhub":
                found = c.eventhub.event_hubs.get(*ns_args)
            elif r.kind == "eventhub-consumer-group":
                found = c.eventhub.consumer_groups.get(*ns_args, r.name)
            else:
                found = c.eventhub.event_hubs.get_authorization_rule(*ns_args, r.name)
            return dict(found.as_dict())
        if r.kind == "product-api":
            apis = c.apim.product_api.list_by_product(rg, svc, p["product"])
            return {} if any(a.name == r.name for a in apis) else None
        if r.kind in ("api-diagnostic", "diagnostic-setting"):
            return arm_get(c, r)
        getters: dict[str, Callable[[], Any]] = {
            "named-value": lambda: c.apim.named_value.get(rg, svc, r.name),
            "logger": lambda: c.apim.logger.get(rg, svc, r.name),
            "llm-logger": lambda: c.apim.logger.get(rg, svc, r.name),
            "api": lambda: c.apim.api.get(rg, svc, r.name),
            "api-operation": lambda: c.apim.api_operation.get(rg, svc, p["api"], r.name),
            "api-policy": lambda: c.apim.api_policy.get(
                rg, svc, p["api"], "policy", format=POLICY_FORMAT
            ),
            "product": lambda: c.apim.product.get(rg, svc, r.name),
            "product-policy": lambda: c.apim.product_policy.get(
                rg, svc, p["product"], "policy", format=POLICY_FORMAT
            ),
            "subscription": lambda: c.apim.subscription.get(rg, svc, r.name),
            "user": lambda: c.apim.user.get(rg, svc, r.name),
        }
        found = getters[r.kind]()
        return dict(found.serialize(keep_readonly=True))
    except ResourceNotFoundError:
        return None


def put_resource(c: Clients, r: Resource, body: Any) -> None:
    from azure.mgmt.apimanagement import models as m

    rg, svc, p = c.rg, c.service, r.parents
    if r.kind.startswith("eventhub"):
        ns_args = (p["resource_group"], p["namespace"], p["hub"])
        if r.kind == "eventhub":
            c.eventhub.event_hubs.create_or_update(*ns_args, body)
        elif r.kind == "eventhub-consumer-group":
            c.eventhub.consumer_groups.create_or_update(*ns_args, r.name, body)
        else:
            c.eventhub.event_hubs.create_or_update_authorization_rule(*ns_args, r.name, body)
        return
    apim = c.apim
    if r.kind == "named-value":
        apim.named_value.begin_create_or_update(
            rg, svc, r.name, m.NamedValueCreateContract.deserialize(body)
        ).result()
    elif r.kind in ("logger", "llm-logger"):
        apim.logger.create_or_update(rg, svc, r.name, m.LoggerContract.deserialize(body))
    elif r.kind in ("api-diagnostic", "diagnostic-setting"):
        arm_put(c, r, body)
    elif r.kind == "api":
        apim.api.begin_create_or_update(
            rg, svc, r.name, m.ApiCreateOrUpdateParameter.deserialize(body)
        ).result()
    elif r.kind == "api-operation":
        apim.api_operation.create_or_update(
            rg, svc, p["api"], r.name, m.OperationContract.deserialize(body)
        )
    elif r.kind == "api-policy":
        apim.api_policy.create_or_update(
            rg, svc, p["api"], "policy", m.PolicyContract.deserialize(body)
        )
    elif r.kind == "product":
        apim.product.create_or_update(rg, svc, r.name, m.ProductContract.deserialize(body))
    elif r.kind == "product-api":
        apim.product_api.create_or_update(rg, svc, p["product"], r.name)
    elif r.kind == "product-policy":
        apim.product_policy.create_or_update(
            rg, svc, p["product"], "policy", m.PolicyContract.deserialize(body)
        )
    elif r.kind == "subscription":  # notify=false: no e-mail (Subscription_CreateOrUpdate)
        apim.subscription.create_or_update(
            rg, svc, r.name, m.SubscriptionCreateParameters.deserialize(body), notify=False
        )
    elif r.kind == "user":  # notify=false: no e-mail to the owner (User_CreateOrUpdate)
        apim.user.create_or_update(
            rg, svc, r.name, m.UserCreateParameters.deserialize(body), notify=False
        )
    else:  # pragma: no cover - desired_resources only makes the kinds above
        raise ValueError(f"unknown resource kind {r.kind}")


def _value(x: Any) -> str | None:
    """An SDK enum member or string as its string value."""
    if x is None:
        return None
    return str(getattr(x, "value", x))


def live_apim_sku(c: Clients, *, required: bool = False) -> str | None:
    """The APIM service's tier (``ApiManagementService_Get`` → ``sku.name``); ``None`` when the
    service does not exist (``ConfigError`` instead with ``required``)."""
    try:
        service = c.apim.api_management_service.get(c.rg, c.service)
    except ResourceNotFoundError:
        if required:
            raise ConfigError(
                f"APIM service {c.service} not found in resource group {c.rg}: provisioning "
                "uses an existing service and never creates one"
            ) from None
        return None
    return _value(service.sku.name if service.sku is not None else None)


def live_eventhub_tier(c: Clients, spec: Spec) -> str | None:
    """The Event Hubs namespace's tier (``Namespaces_Get`` → ``sku.tier``, or ``Dedicated``
    when it runs in a cluster: ``clusterArmId``); ``ConfigError`` when it does not exist."""
    eh = spec.event_hub
    rg = eh.resource_group or spec.apim.resource_group
    try:
        ns = c.eventhub.namespaces.get(rg, eh.namespace)
    except ResourceNotFoundError:
        raise ConfigError(
            f"Event Hubs namespace {eh.namespace} not found in resource group {rg}: the spec "
            "creates the hub in an existing namespace, never the namespace"
        ) from None
    props = getattr(ns, "properties", None)
    if props is not None and getattr(props, "cluster_arm_id", None):
        return "Dedicated"
    sku = getattr(ns, "sku", None)
    return _value(getattr(sku, "tier", None) or getattr(sku, "name", None))


def existing_owners(c: Clients, spec: Spec) -> dict[str, str]:
    """Owner email (lower case) → the id of a user the service already has with that email,
    for owners whose deterministic user (:func:`apim_user_id`) does not exist."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for sub in spec.subscriptions:
        email = (sub.owner_email or "").lower()
        if not email or email in seen:
            continue
        seen.add(email)
        try:
            c.apim.user.get(c.rg, c.service, apim_user_id(email))
            continue  # ours: compared like every resource
        except ResourceNotFoundError:
            pass
        quoted = (sub.owner_email or "").replace("'", "''")  # OData string literal
        found = c.apim.user.list_by_service(c.rg, c.service, filter=f"email eq '{quoted}'")
        match = next((u for u in found if str(u.email or "").lower() == email), None)
        if match is not None and match.name:
            out[email] = str(match.name)
    return out
