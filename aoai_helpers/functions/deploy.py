"""Deploy the ingestion function: app settings through ARM, the zip through Kudu, then verify.

Plan first (:func:`plan_deploy`): the app settings the spec needs, compared with what the app
has (``POST …/config/appsettings/list``; secrets masked), and the zip to upload. Then
:func:`deploy`:

1. ``PUT …/config/appsettings`` (azure-mgmt-web ``update_application_settings``) with the
   app's current settings plus ours — only when something changes; settings we do not own are
   kept.
2. Kudu zip deploy: ``POST https://<app>.scm.<suffix>/api/zipdeploy?isAsync=true`` with
   ``Authorization: Bearer <ARM token>`` (facts: azure-facts.md, Azure Functions); ``202`` and a
   ``Location`` to poll until the deployment reports ``complete`` — status ``4`` is success,
   ``3`` failure (its ``status_text`` and log URL go into the error).
3. Verify the functions are indexed: ``GET …/functions`` (``list_functions``) until
   ``<app>/ingest_usage`` and ``<app>/reconcile_usage`` (the reconcile timer; the package
   always has both) appear, or fail with what to check.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..clouds import Cloud, get_cloud
from ..exceptions import AoaiHelpersError, ConfigError
from ..masking import mask
from ..spec import Spec
from .settings import FUNCTION_NAME, RECONCILE_FUNCTION_NAME, app_settings, secret_settings

__all__ = [
    "FUNCTIONS",
    "DeployError",
    "DeployPlan",
    "SettingChange",
    "WebClients",
    "deploy",
    "make_web_clients",
    "plan_deploy",
    "scm_url",
]

KUDU_SUCCESS: Final = 4
KUDU_FAILED: Final = 3
#: The functions of the package, all of which must be indexed after a deployment.
FUNCTIONS: Final = (FUNCTION_NAME, RECONCILE_FUNCTION_NAME)


class DeployError(AoaiHelpersError):
    """The deployment failed (Kudu reported a failure, timed out, or the function is not indexed)."""


@dataclass(frozen=True)
class SettingChange:
    name: str
    action: str  # add | change | same
    old: str | None
    new: str


@dataclass
class WebClients:
    web: Any
    rg: str
    app: str


def make_web_clients(
    spec: Spec, cloud: Cloud, subscription_id: str, credential: Any, transport: Any = None
) -> WebClients:
    """azure-mgmt-web on ``cloud``'s ARM endpoint, for the spec's function app."""
    from azure.mgmt.web import WebSiteManagementClient

    if spec.function is None:
        raise ConfigError("the spec has no function section (function: name: …)")
    kwargs: dict[str, Any] = {
        "base_url": cloud.arm_endpoint,
        "credential_scopes": [cloud.arm_scope],
    }
    if transport is not None:
        kwargs["transport"] = transport
    web = WebSiteManagementClient(credential, subscription_id, **kwargs)
    return WebClients(
        web, spec.function.resource_group or spec.apim.resource_group, spec.function.name
    )


def scm_url(spec: Spec, cloud: Cloud) -> str:
    """``https://<app>.scm.<suffix>`` of the spec's function app."""
    if spec.function is None:
        raise ConfigError("the spec has no function section (function: name: …)")
    return f"https://{spec.function.name}.scm.{cloud.scm_suffix}"


def _mask(name: str, value: str | None, secrets: frozenset[str]) -> str | None:
    if value is None or name not in secrets:
        return value
    return mask(value)


@dataclass
class DeployPlan:
    """What ``deploy`` would change: app settings (masked) and the package to upload."""

    spec: Spec
    cloud: Cloud
    settings: dict[str, str]
    changes: list[SettingChange]
    zip_path: Path | None
    zip_sha256: str | None = None
    offline: bool = False
    existing: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def settings_changed(self) -> bool:
        return any(c.action != "same" for c in self.changes)

    def render(self) -> str:
        fn = self.spec.function
        assert fn is not None
        lines = [
            f"Deploy plan for function app {fn.name} on {self.cloud.name}"
            + (" — offline: assumes no settings exist yet" if self.offline else ""),
            "",
            "app settings (PUT …/config/appsettings; settings not listed here are kept):",
        ]
        for c in self.changes:
            shown = c.new if c.action != "change" else f"{c.old} -> {c.new}"
            lines.append(f"  {c.action:<6} {c.name:<44} {shown}")
        if not self.settings_changed:
            lines.append("  (no change)")
        if self.zip_path is not None:
            size = self.zip_path.stat().st_size
            lines += [
                "",
                f"package: {self.zip_path.name} ({size:,} bytes, sha256 {self.zip_sha256 or '?'})",
            ]
        lines.append(
            f"upload:  POST {scm_url(self.spec, self.cloud)}/api/zipdeploy?isAsync=true (Bearer token), then poll"
        )
        listed = " and ".join(f"{fn.name}/{name}" for name in FUNCTIONS)
        lines.append(f"verify:  GET …/sites/{fn.name}/functions lists {listed}")
        return "\n".join(lines)


def plan_deploy(
    spec: Spec,
    *,
    clients: WebClients | None,
    db_url: str,
    eventhub_connection: str | None = None,
    zip_path: Path | None = None,
    zip_sha256: str | None = None,
    cloud: str | None = None,
) -> DeployPlan:
    """Compare the settings the spec needs with the app's (offline: with none)."""
    spec = spec.for_cloud(cloud)
    the_cloud = get_cloud(spec.cloud)
    if spec.function is None:
        raise ConfigError("the spec has no function section (function: name: …)")
    if spec.function.eventhub_auth == "connection_string" and not eventhub_connection:
        raise ConfigError(
            "function.eventhub_auth is connection_string: set AOAI_EVENTHUB_LISTEN_CONNECTION to the "
            "Listen-only connection string"
        )
    wanted = app_settings(spec, db_url=db_url, eventhub_connection=eventhub_connection)
    existing: dict[str, str] = {}
    if clients is not None:
        found = clients.web.web_apps.list_application_settings(clients.rg, clients.app)
        existing = dict(found.properties or {})
    secrets = secret_settings(spec)
    changes = [
        SettingChange(
            name,
            "add" if name not in existing else ("same" if existing[name] == value else "change"),
            _mask(name, existing.get(name), secrets),
            _mask(name, value, secrets) or "",
        )
        for name, value in wanted.items()
    ]
    return DeployPlan(
        spec, the_cloud, wanted, changes, zip_path, zip_sha256, clients is None, existing
    )


@dataclass
class DeployResult:
    settings_updated: bool
    deployment_status: dict[str, Any]
    functions: list[str]


def deploy(
    the_plan: DeployPlan,
    clients: WebClients,
    *,
    credential: Any,
    scm: str | None = None,
    poll_interval: float = 2.0,
    timeout: float = 900.0,
    index_attempts: int = 30,
    on_progress: Callable[[str], None] | None = None,
) -> DeployResult:
    """Settings, upload, poll, verify (see the module docstring). ``scm`` overrides the SCM URL."""
    say = on_progress or (lambda _msg: None)
    if the_plan.zip_path is None:
        raise ConfigError(
            "nothing to deploy: build the package first (python -m aoai_helpers function build)"
        )
    if the_plan.settings_changed:
        merged = {**the_plan.existing, **the_plan.settings}
        clients.web.web_apps.update_application_settings(
            clients.rg, clients.app, {"properties": merged}
        )
        say("app settings updated")
    token = credential.get_token(the_plan.cloud.arm_scope).token
    base = (scm or scm_url(the_plan.spec, the_plan.cloud)).rstrip("/")
    status = _zip_deploy(base, token, the_plan.zip_path, poll_interval, timeout, say)
    functions: list[str] = []
    missing: list[str] = list(FUNCTIONS)
    for attempt in range(index_attempts):
        functions = [f.name for f in clients.web.web_apps.list_functions(clients.rg, clients.app)]
        indexed = {name.rsplit("/", 1)[-1] for name in functions}
        missing = [name for name in FUNCTIONS if name not in indexed]
        if not missing:
            say(f"functions {', '.join(FUNCTIONS)} are indexed")
            return DeployResult(the_plan.settings_changed, status, functions)
        if attempt + 1 < index_attempts:
            time.sleep(poll_interval)
    raise DeployError(
        f"the package deployed but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
        f"indexed (functions: {functions or 'none'}); check the app's log stream for import errors "
        "and that AzureWebJobsFeatureFlags=EnableWorkerIndexing"
    )


def _request(
    url: str, token: str, *, data: bytes | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/zip")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DeployError(
            f"cannot reach {url.split('?')[0]}: {getattr(exc, 'reason', exc)}"
        ) from None


def _zip_deploy(
    base: str,
    token: str,
    zip_path: Path,
    poll_interval: float,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    data = zip_path.read_bytes()
    say(f"uploading {zip_path.name} ({len(data):,} bytes) to {base}")
    status, headers, body = _request(
        f"{base}/api/zipdeploy?isAsync=true", token, data=data, method="POST"
    )
    if status in (401, 403):
        raise DeployError(
            f"the SCM endpoint refused the upload (HTTP {status}): the signed-in identity needs Contributor on the app"
        )
    if status != 202:
        raise DeployError(
            f"zip deploy was not accepted (HTTP {status}): {body[:200].decode('utf-8', 'replace')}"
        )
    location = {k.lower(): v for k, v in headers.items()}.get("location")
    if not location:
        raise DeployError("zip deploy was accepted but gave no Location to poll")
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = _request(location, token)
        if status in (200, 202):
            try:
                info = json.loads(body or b"{}")
            except ValueError:
                info = {}
            if info.get("complete") or info.get("status") in (KUDU_SUCCESS, KUDU_FAILED):
                if info.get("status") == KUDU_SUCCESS:
                    say("deployment succeeded")
                    return dict(info)
                text = info.get("status_text") or info.get("message") or "no reason given"
                log = (
                    info.get("log_url") or f"{base}/api/deployments/{info.get('id', 'latest')}/log"
                )
                raise DeployError(f"the deployment failed: {text} (log: {log})")
            say(
                f"deployment in progress ({info.get('progress') or info.get('status_text') or 'building'})"
            )
        elif status >= 400:
            raise DeployError(f"polling the deployment failed (HTTP {status})")
        if time.monotonic() > deadline:
            raise DeployError(
                f"the deployment did not finish within {timeout:.0f} s (still polling {location})"
            )
        time.sleep(poll_interval)
