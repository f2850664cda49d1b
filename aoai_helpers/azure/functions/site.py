"""What ``function deploy`` reads of the function app and its package: the site and its hosting
plan, the app settings as a diff against ours (secrets masked), and what the zip says (its
``host.json`` batch size, whether it carries its installed packages). :mod:`.deploy` plans and
sends. Imports :mod:`.hosting`, :mod:`.identity`, :mod:`.settings` and the top level.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aoai_helpers.azure.functions.hosting import (
    FLEX_REJECTED_SETTINGS,
    Hosting,
    detect_hosting,
    needs_server_farm,
    server_farm_ref,
)
from aoai_helpers.core.masking import mask

__all__ = [
    "SettingChange",
    "WebClients",
    "arm_get",
    "carries_packages",
    "read_hosting",
    "read_site",
    "settings_changes",
    "zip_batch_size",
]

_SITE_PACKAGES: Final = ".python_packages/lib/site-packages/"


@dataclass(frozen=True)
class SettingChange:
    """One row of the settings diff, as shown: ``old`` and ``new`` are masked when secret, and
    a removed setting has no ``old`` (its value is never kept or shown)."""

    name: str
    action: str  # add | change | same | remove
    old: str | None
    new: str


@dataclass
class WebClients:
    web: Any
    rg: str
    app: str
    subscription: str = ""


def carries_packages(zip_path: Path | None) -> bool:
    """Whether the zip holds its installed packages (then Flex needs no remote build)."""
    if zip_path is None:
        return False
    with zipfile.ZipFile(zip_path) as zf:
        return any(name.startswith(_SITE_PACKAGES) for name in zf.namelist())


def zip_batch_size(zip_path: Path | None) -> int | None:
    """``extensions.eventHubs.maxEventBatchSize`` of the zip's ``host.json``, if it says."""
    if zip_path is None:
        return None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            host = json.loads(zf.read("host.json"))
        value = host["extensions"]["eventHubs"]["maxEventBatchSize"]
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    return value if isinstance(value, int) else None


#: Values that carry a credential whatever the setting's name: a storage or Event Hubs key, a
#: SAS signature, a password in a connection string or URL.
_SECRET_VALUE: Final = re.compile(
    r"AccountKey=|SharedAccessKey=|SharedAccessSignature|[?&]sig=|Password=|Pwd=|://[^/@\s]+:[^/@\s]+@",
    re.IGNORECASE,
)


def _mask(name: str, value: str | None, secrets: frozenset[str]) -> str | None:
    """The value as the plan may show it: masked when the setting is a secret or the value
    looks like one (:data:`_SECRET_VALUE`)."""
    if value is None or (name not in secrets and not _SECRET_VALUE.search(value)):
        return value
    return mask(value)


def _raw(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
    """``cls`` of a generated operation: the response's JSON as ARM sent it."""
    return pipeline_response.http_response.json()


def read_site(clients: WebClients) -> dict[str, Any] | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        site = clients.web.web_apps.get(clients.rg, clients.app, cls=_raw)
    except ResourceNotFoundError:
        return None
    return dict(site) if isinstance(site, Mapping) else {}


def read_hosting(clients: WebClients, site: Mapping[str, Any], warnings: list[str]) -> Hosting:
    farm: Mapping[str, Any] | None = None
    ref = server_farm_ref(site)
    if needs_server_farm(site) and ref is not None:
        from azure.core.exceptions import HttpResponseError

        try:
            farm = clients.web.app_service_plans.get(ref[0], ref[1], cls=_raw)
        except HttpResponseError as exc:
            warnings.append(f"the server farm {ref[1]} could not be read (HTTP {exc.status_code})")
    hosting = detect_hosting(site, farm)
    if hosting.plan == "unknown":
        warnings.append(
            f"the hosting plan could not be told ({hosting.evidence}): zip deploy is used, as "
            "on Consumption, Elastic Premium and Dedicated plans"
        )
    return hosting


def arm_get(clients: WebClients) -> Callable[[str, Mapping[str, str]], tuple[int, Any]]:
    from azure.core.rest import HttpRequest

    def get(path: str, params: Mapping[str, str]) -> tuple[int, Any]:
        response = clients.web.send_request(HttpRequest("GET", path, params=dict(params)))
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return int(response.status_code), body

    return get


def settings_changes(
    wanted: Mapping[str, str],
    existing: Mapping[str, str],
    secrets: frozenset[str],
    remove: Collection[str],
) -> list[SettingChange]:
    changes = [
        SettingChange(
            name,
            "add" if name not in existing else ("same" if existing[name] == value else "change"),
            _mask(name, existing.get(name), secrets),
            _mask(name, value, secrets) or "",
        )
        for name, value in wanted.items()
    ]
    for name in sorted(remove):
        reason = FLEX_REJECTED_SETTINGS[name]
        changes.append(SettingChange(name, "remove", None, f"Flex: {reason}"))
    return changes
