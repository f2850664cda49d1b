"""The api-version preflight: every (resource type, api-version) a plan sends, checked against
the cloud's Providers_Get listing before anything is applied. Imports ``arm`` and the top level.

Online, :func:`~aoai_helpers.azure.apim.provision.plan` asks the cloud's ARM which api-versions it
serves (:func:`check_api_versions`): one ``GET /subscriptions/{id}/providers/{namespace}?api-version=2021-04-01`` (Providers_Get) per
resource provider its requests use, through the APIM client's pipeline. Each (resource type,
api-version) the plan would send must be in that listing's ``resourceTypes[].apiVersions``: a
missing one is a plan error naming the versions the cloud offers, instead of an
``InvalidApiVersion`` halfway through apply. A provider that cannot be read (403, unknown) is a
warning saying what was not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aoai_helpers.azure.apim.arm import Clients
from aoai_helpers.azure.apim.resources import (
    APIM_API_VERSION,
    EVENTHUB_API_VERSION,
    Resource,
)
from aoai_helpers.clouds import Cloud
from aoai_helpers.spec import Spec

__all__ = [
    "PROVIDERS_API_VERSION",
    "api_versions_used",
    "check_api_versions",
    "resource_type",
]

#: Providers_Get (Microsoft.Resources ``2021-04-01``, resources.json): a provider's resource
#: types and the api-versions each serves
PROVIDERS_API_VERSION: Final = "2021-04-01"


def resource_type(resource_id: str) -> tuple[str, str]:
    """``(namespace, resource type)`` of an ARM id, as Providers_Get lists them: the provider
    after the id's *last* ``providers/`` (an extension resource such as a diagnostic setting
    belongs to Microsoft.Insights), and its type names joined by ``/`` (``service/apis/policies``,
    ``namespaces/eventhubs/consumergroups``)."""
    parts = resource_id.strip("/").split("/")
    i = max(k for k, part in enumerate(parts) if part.lower() == "providers")
    return parts[i + 1], "/".join(parts[i + 2 :: 2])


def api_versions_used(
    spec: Spec, subscription_id: str, resources: list[Resource]
) -> dict[tuple[str, str], set[str]]:
    """(namespace, resource type) → the api-versions plan and apply send to it: every resource's,
    plus the reads of what provisioning never creates (the APIM service, the Event Hubs
    namespace)."""
    rg = spec.apim.resource_group
    service = (
        f"/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/"
        f"Microsoft.ApiManagement/service/{spec.apim.service_name}"
    )
    used: list[tuple[str, str]] = [(service, APIM_API_VERSION)]
    eh = spec.event_hub
    if eh.create:
        namespace = (
            f"/subscriptions/{subscription_id}/resourceGroups/{eh.resource_group or rg}"
            f"/providers/Microsoft.EventHub/namespaces/{eh.namespace}"
        )
        used.append((namespace, EVENTHUB_API_VERSION))
    used += [(r.resource_id, r.api_version) for r in resources]
    out: dict[tuple[str, str], set[str]] = {}
    for resource_id, version in used:
        out.setdefault(resource_type(resource_id), set()).add(version)
    return out


def check_api_versions(
    c: Clients,
    cloud: Cloud,
    subscription_id: str,
    used: Mapping[tuple[str, str], set[str]],
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)``: each (resource type, api-version) of ``used`` checked against the
    cloud's own listing (Providers_Get, one request per namespace, through the APIM client's
    pipeline).

    A version the listing does not have for that type is an error naming those it has. A type
    the listing does not name is checked against its nearest listed parent type
    (``service/apis/policies`` → ``service/apis`` → ``service``) — an assumption: ARM is not
    documented here to validate a nested type's api-version by its parent's registration — and
    a warning when none is listed. A provider that cannot be read (an error status, a network
    error) is a warning naming what was not checked; one that is not registered in the
    subscription is a warning too (its listing is still checked)."""
    errors: list[str] = []
    warnings: list[str] = []
    by_namespace: dict[str, dict[str, set[str]]] = {}
    for (namespace, rtype), versions in used.items():
        by_namespace.setdefault(namespace, {}).setdefault(rtype, set()).update(versions)
    where = f"{cloud.name}'s ARM ({cloud.arm_endpoint})"
    for namespace, types in sorted(by_namespace.items()):
        wanted = "; ".join(f"{t} {', '.join(sorted(v))}" for t, v in sorted(types.items()))
        body, problem = _provider(c, subscription_id, namespace)
        if problem is not None:
            warnings.append(
                f"could not read {namespace} from {where} (Providers_Get: {problem}): "
                f"api-versions not checked: {wanted}"
            )
            continue
        state = str(body.get("registrationState") or "")
        if state and state.lower() != "registered":
            warnings.append(
                f"{namespace} is {state} in subscription {subscription_id}: apply fails until it "
                f"is registered (az provider register -n {namespace})"
            )
        listing = {
            str(t.get("resourceType", "")).lower(): [str(v) for v in t.get("apiVersions") or []]
            for t in body.get("resourceTypes") or []
            if isinstance(t, dict)
        }
        _compare(namespace, types, listing, where, errors, warnings)
    return errors, warnings


def _provider(c: Clients, subscription_id: str, namespace: str) -> tuple[Any, str | None]:
    """One provider's Providers_Get body, or why it could not be read (``HTTP 403 Code``, or the
    network error)."""
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    request = HttpRequest(
        "GET",
        f"/subscriptions/{subscription_id}/providers/{namespace}",
        params={"api-version": PROVIDERS_API_VERSION},
    )
    try:
        response = c.apim._send_request(request)
        status = response.status_code
        body = response.json() if status < 400 else _error_body(response)
    except (AzureError, ValueError) as exc:
        return None, str(exc)
    if status >= 400:
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        return None, f"HTTP {status}{' ' + code if code else ''}"
    return body, None


def _compare(
    namespace: str,
    types: Mapping[str, set[str]],
    listing: Mapping[str, list[str]],
    where: str,
    errors: list[str],
    warnings: list[str],
) -> None:
    """Each type's api-versions against one provider's listing: an error for a version it does
    not serve, a warning for a type it does not list (appended to ``errors`` / ``warnings``)."""
    for rtype, versions in sorted(types.items()):
        listed_as, offered = _listed(listing, rtype)
        if offered is None:
            warnings.append(
                f"{namespace}/{rtype} is not in the resource-type listing of {where}: api-version "
                f"{', '.join(sorted(versions))} not checked"
            )
            continue
        lower = {v.lower() for v in offered}
        for version in sorted(versions):
            if version.lower() in lower:
                continue
            via = "" if listed_as == rtype.lower() else f" (listed as {listed_as})"
            errors.append(
                f"api-version {version} of {namespace}/{rtype} is not served by {where}"
                f"{via}: it offers {', '.join(offered) or 'none'} (Providers_Get)"
            )


def _listed(listing: Mapping[str, list[str]], rtype: str) -> tuple[str, list[str] | None]:
    """The nearest type of ``rtype``'s chain the listing has, and its api-versions."""
    parts = rtype.lower().split("/")
    while parts:
        name = "/".join(parts)
        if name in listing:
            return name, listing[name]
        parts.pop()
    return rtype.lower(), None


def _error_body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
