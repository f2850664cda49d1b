"""Deploy the ingestion function: read the app, set its settings, upload the package, verify.

Plan first (:func:`plan_deploy`), reading only:

1. The site (``GET …/sites/{name}``, azure-mgmt-web ``web_apps.get``) and, when the site alone
   does not tell, its server farm (``app_service_plans.get``): the hosting plan
   (:mod:`.hosting`), the SCM host, the managed identity.
2. The app settings (``POST …/config/appsettings/list``; secrets masked) against the ones the
   spec and the plan need; on Flex Consumption the settings it rejects are to be removed.
3. The roles :func:`~aoai_helpers.azure.roles.required_roles` lists for the function's identity,
   each looked up among the role assignments ARM shows the caller (:mod:`.identity`).

Then :func:`deploy` — refused before any change when the plan has a problem (no such app, no
identity, Container Apps or Windows hosting):

1. ``PUT …/config/appsettings`` (``update_application_settings``) with the app's settings plus
   ours, minus the removed ones — only when something changes.
2. The upload the plan takes (Bearer token for ARM's scope, as the Azure CLI sends):

   - **Flex Consumption** — One Deploy, the only deployment technology Flex takes ("The Flex
     Consumption plan doesn't support zip deployment", *Zip deployment for Azure Functions*,
     https://learn.microsoft.com/azure/azure-functions/deployment-zip-push):
     ``POST https://<scm>/api/publish?RemoteBuild=true&Deployer=aoai-helpers``
     (``Content-Type: application/zip``; the Azure CLI's ``enable_zip_deploy_flex``), then
     ``GET /api/deployments/latest`` until its ``status`` is final (4 success; 3 failed, -1
     cancelled, 5 conflict, 6 partial success are failures — status codes from Microsoft in
     https://github.com/Azure/azure-dev/issues/3658). ``RemoteBuild=true`` because the package
     carries ``requirements.txt``, not the installed packages; a zip that holds
     ``.python_packages/lib/site-packages`` is sent with ``RemoteBuild=false``.
   - **Consumption, Elastic Premium, Dedicated** — Kudu zip deploy:
     ``POST https://<scm>/api/zipdeploy?isAsync=true``, ``202`` and a ``Location`` polled until
     the deployment reports ``complete`` (remote build through the app settings).

3. Verify the functions are indexed: ``GET …/functions`` (``list_functions``) until
   ``<app>/ingest_usage`` and ``<app>/reconcile_usage`` appear, or fail with what to check.

Roles not seen are warnings (printed in the plan and again after the deploy, with the ``az``
command that grants them): ``function deploy`` cannot tell an assignment it may not read from
a missing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aoai_helpers.azure.functions.hosting import (
    FLEX_REJECTED_SETTINGS,
    Hosting,
)
from aoai_helpers.azure.functions.identity import (
    RoleCheck,
    check_role,
    check_storage_role,
    need_scope,
    site_principal,
    storage_needs,
    storage_principal,
)
from aoai_helpers.azure.functions.settings import (
    FUNCTION_NAME,
    RECONCILE_FUNCTION_NAME,
    app_settings,
    secret_settings,
)
from aoai_helpers.azure.functions.site import (
    SettingChange,
    WebClients,
    arm_get,
    carries_packages,
    read_hosting,
    read_site,
    settings_changes,
    zip_batch_size,
)
from aoai_helpers.azure.functions.upload import DeployError, one_deploy, zip_deploy
from aoai_helpers.azure.roles import required_roles
from aoai_helpers.clouds import Cloud, get_cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import Spec

__all__ = [
    "FUNCTIONS",
    "DeployError",
    "DeployPlan",
    "DeployResult",
    "SettingChange",
    "WebClients",
    "deploy",
    "make_web_clients",
    "plan_deploy",
    "scm_url",
    "upload_url",
]

DEPLOYER: Final = "aoai-helpers"
#: The functions of the package, all of which must be indexed after a deployment.
FUNCTIONS: Final = (FUNCTION_NAME, RECONCILE_FUNCTION_NAME)


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
        web,
        spec.function.resource_group or spec.apim.resource_group,
        spec.function.name,
        subscription_id,
    )


def scm_url(spec: Spec, cloud: Cloud, hosting: Hosting | None = None) -> str:
    """``https://<scm host>``: the site's ``Repository`` host name when read, else
    ``https://<app>.scm.<suffix>``."""
    if spec.function is None:
        raise ConfigError("the spec has no function section (function: name: …)")
    if hosting is not None and hosting.scm_host:
        return f"https://{hosting.scm_host}"
    return f"https://{spec.function.name}.scm.{cloud.scm_suffix}"


def upload_url(base: str, hosting: Hosting | None, *, remote_build: bool = True) -> str:
    """Where the package goes: One Deploy on Flex, zip deploy elsewhere (and when unknown)."""
    base = base.rstrip("/")
    if hosting is not None and hosting.flex:
        return f"{base}/api/publish?RemoteBuild={str(remote_build).lower()}&Deployer={DEPLOYER}"
    return f"{base}/api/zipdeploy?isAsync=true"


#: What the plan shows for a setting it removes: never its value (settings we do not own can
#: hold a storage key — WEBSITE_CONTENTAZUREFILECONNECTIONSTRING — or a SAS URL —
#: WEBSITE_RUN_FROM_PACKAGE).
VALUE_NOT_SHOWN: Final = "(set; value not shown)"


_OFFLINE_HOSTING: Final = (
    "hosting plan: unknown (offline: the site is not read). What differs by plan: Consumption, "
    "Elastic Premium and Dedicated take the zip deploy below with FUNCTIONS_WORKER_RUNTIME, "
    "SCM_DO_BUILD_DURING_DEPLOYMENT and ENABLE_ORYX_BUILD set; Flex Consumption takes One "
    "Deploy ({flex}) without those three, and the settings Flex rejects are removed; Container "
    "Apps hosting and Windows plans are refused."
)


@dataclass
class DeployPlan:
    """What ``deploy`` would do: the plan detected, settings (masked), upload, roles."""

    spec: Spec
    cloud: Cloud
    settings: dict[str, str] = field(repr=False)  # unmasked: what the PUT sends
    changes: list[SettingChange]
    zip_path: Path | None
    zip_sha256: str | None = None
    offline: bool = False
    existing: dict[str, str] = field(default_factory=dict, repr=False)
    hosting: Hosting | None = None
    remote_build: bool = True
    roles: list[RoleCheck] = field(default_factory=list)
    identity: str | None = None  # the identity found on the site, in words
    problems: list[str] = field(default_factory=list)  # each one refuses the deploy
    warnings: list[str] = field(default_factory=list)

    @property
    def settings_changed(self) -> bool:
        return any(c.action != "same" for c in self.changes)

    @property
    def removed(self) -> list[str]:
        return [c.name for c in self.changes if c.action == "remove"]

    @property
    def upload(self) -> str:
        return upload_url(
            scm_url(self.spec, self.cloud, self.hosting),
            self.hosting,
            remote_build=self.remote_build,
        )

    def _hosting_lines(self) -> list[str]:
        if self.hosting is None:
            flex = upload_url(scm_url(self.spec, self.cloud), _FLEX, remote_build=self.remote_build)
            return [_OFFLINE_HOSTING.format(flex=f"POST {flex}")]
        h = self.hosting
        runtime = f"; runtime {' '.join(h.runtime)}" if h.runtime else ""
        return [f"hosting plan: {h.label} — from {h.evidence}{runtime}"]

    def _upload_lines(self) -> list[str]:
        if self.hosting is not None and self.hosting.flex:
            build = (
                "remote build" if self.remote_build else "no remote build: the zip has its packages"
            )
            return [
                f"upload:  POST {self.upload} (One Deploy, {build}; Bearer token), then poll "
                f"{scm_url(self.spec, self.cloud, self.hosting)}/api/deployments/latest"
            ]
        return [f"upload:  POST {self.upload} (Bearer token), then poll"]

    def _role_lines(self) -> list[str]:
        fn = self.spec.function
        assert fn is not None
        lines = ["", f"roles of the function app's identity ({self.identity or 'not read'}):"]
        if not self.roles:
            lines.append("  (none: the function uses no managed-identity connection)")
        if self.offline:
            lines.append(
                "  (offline: the app's own settings are not read — identity-based host storage "
                "(AzureWebJobsStorage__accountName) needs 'Storage Blob Data Owner', Flex "
                "deployment storage with a managed identity blob data access on its container)"
            )
        for check in self.roles:
            lines.append(check.line())
            if check.state != "seen":
                lines.append(f"            grant: {check.command}")
        lines.append("APIM's roles: see `python -m aoai_helpers provision plan`")
        return lines

    def render(self) -> str:
        fn = self.spec.function
        assert fn is not None
        lines = [
            f"Deploy plan for function app {fn.name} on {self.cloud.name}"
            + (" — offline: assumes no settings exist yet" if self.offline else ""),
            *self._hosting_lines(),
            "",
            "app settings (PUT …/config/appsettings; settings not listed here are kept):",
        ]
        for c in self.changes:
            shown = {"change": f"{c.old} -> {c.new}", "remove": f"{VALUE_NOT_SHOWN} {c.new}"}
            lines.append(f"  {c.action:<6} {c.name:<44} {shown.get(c.action, c.new)}")
        if not self.settings_changed:
            lines.append("  (no change)")
        if self.zip_path is not None:
            size = self.zip_path.stat().st_size
            lines += [
                "",
                f"package: {self.zip_path.name} ({size:,} bytes, sha256 {self.zip_sha256 or '?'})",
            ]
        lines += self._upload_lines()
        listed = " and ".join(f"{fn.name}/{name}" for name in FUNCTIONS)
        lines.append(f"verify:  GET …/sites/{fn.name}/functions lists {listed}")
        lines += self._role_lines()
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines += [f"cannot deploy: {p}" for p in self.problems]
        return "\n".join(lines)


_FLEX: Final = Hosting("flex", True, "FlexConsumption", "offline")


def _who(spec: Spec) -> str:
    fn = spec.function
    assert fn is not None
    if fn.identity_client_id:
        return f"function app {fn.name}'s user-assigned identity {fn.identity_client_id}"
    return f"function app {fn.name}'s system-assigned identity"


def _role_checks(
    spec: Spec,
    clients: WebClients | None,
    site: Mapping[str, Any] | None,
    existing: Mapping[str, str],
    plan: DeployPlan,
) -> None:
    fn = spec.function
    assert fn is not None
    needs = [n for n in required_roles(spec) if n.principal == "function"]
    subscription = clients.subscription if clients is not None else spec.subscription_id or ""
    if clients is None or site is None:
        why = "offline" if clients is None else "the app was not found"
        plan.roles = [
            RoleCheck(n, need_scope(spec, subscription, n), "offline", f"not checked ({why})")
            for n in needs
        ]
        return
    stored = storage_needs(site, existing, _who(spec), fn.name)
    found = site_principal(site, fn.identity_client_id)
    principal, described = found
    get = arm_get(clients)
    if principal is None:
        plan.identity = "none found"
        if needs or fn.identity_client_id:
            plan.problems.append(f"function app {fn.name}: {described}")
        plan.roles = [
            RoleCheck(n, need_scope(spec, subscription, n), "unknown", "no identity to check")
            for n in needs
        ]
    else:
        plan.identity = described
        plan.roles = [
            check_role(n, need_scope(spec, subscription, n), principal, get) for n in needs
        ]
    for sn in stored:
        pid, whose = storage_principal(site, sn, found)
        if pid is None:
            plan.roles.append(RoleCheck(sn.need, None, "unknown", f"no identity to check: {whose}"))
            continue
        plan.roles.append(check_storage_role(sn, subscription, pid, get))
    for check in plan.roles:
        if check.state == "not_seen":
            plan.warnings.append(
                f"no '{check.need.role}' assignment for {check.need.identity} seen on "
                f"{check.scope} or above — {check.need.why}. Grant it: {check.command}"
            )
        elif check.state == "unknown" and check.detail != "no identity to check":
            plan.warnings.append(
                f"'{check.need.role}' for {check.need.identity}: {check.detail}. If it is "
                f"missing, {check.need.why}; grant it with: {check.command}"
            )


def _read_app(
    clients: WebClients | None, name: str, problems: list[str], warnings: list[str]
) -> tuple[dict[str, Any] | None, Hosting | None, dict[str, str]]:
    """The site, its hosting plan and its app settings (nothing offline); a missing app or a
    hosting deploy refuses is a problem."""
    site: dict[str, Any] | None = None
    hosting: Hosting | None = None
    existing: dict[str, str] = {}
    if clients is not None:
        site = read_site(clients)
        if site is None:
            problems.append(
                f"function app {name} was not found in resource group {clients.rg} "
                f"(GET …/sites/{name}: 404): create it first"
            )
        else:
            hosting = read_hosting(clients, site, warnings)
            if hosting.refusal:
                problems.append(f"function app {name} {hosting.refusal}")
            found = clients.web.web_apps.list_application_settings(clients.rg, clients.app)
            existing = dict(found.properties or {})
    return site, hosting, existing


def _flex_removals(
    existing: Mapping[str, str], flex: bool, keep_settings: Collection[str], warnings: list[str]
) -> list[str]:
    """The settings Flex Consumption rejects that the app has, minus those kept (a warning)."""
    keep = {k.upper() for k in keep_settings}
    remove = [
        name
        for name in existing
        if flex and name in FLEX_REJECTED_SETTINGS and name.upper() not in keep
    ]
    for name in existing:
        if flex and name in FLEX_REJECTED_SETTINGS and name.upper() in keep:
            warnings.append(f"{name} is kept (--keep-setting) although Flex Consumption rejects it")
    return remove


def plan_deploy(
    spec: Spec,
    *,
    clients: WebClients | None,
    db_url: str,
    eventhub_connection: str | None = None,
    zip_path: Path | None = None,
    zip_sha256: str | None = None,
    cloud: str | None = None,
    keep_settings: Collection[str] = (),
) -> DeployPlan:
    """Read the app (offline: nothing) and plan the deploy (see the module docstring).

    ``keep_settings``: settings Flex rejects that are kept anyway (not removed).
    """
    spec = spec.for_cloud(cloud)
    the_cloud = get_cloud(spec.cloud)
    fn = spec.function
    if fn is None:
        raise ConfigError("the spec has no function section (function: name: …)")
    if fn.eventhub_auth == "connection_string" and not eventhub_connection:
        raise ConfigError(
            "function.eventhub_auth is connection_string: set AOAI_EVENTHUB_LISTEN_CONNECTION to the "
            "Listen-only connection string"
        )
    problems: list[str] = []
    warnings: list[str] = []
    batch = zip_batch_size(zip_path)
    if batch is not None and batch != fn.max_batch_size:
        warnings.append(
            f"the package's host.json has maxEventBatchSize {batch}, the spec's "
            f"function.max_batch_size is {fn.max_batch_size}: rebuild it (function build)"
        )
    site, hosting, existing = _read_app(clients, fn.name, problems, warnings)
    flex = hosting is not None and hosting.flex
    wanted = app_settings(spec, db_url=db_url, eventhub_connection=eventhub_connection, flex=flex)
    remove = _flex_removals(existing, flex, keep_settings, warnings)
    the_plan = DeployPlan(
        spec,
        the_cloud,
        wanted,
        settings_changes(wanted, existing, secret_settings(spec), remove),
        zip_path,
        zip_sha256,
        clients is None,
        existing,
        hosting,
        remote_build=not carries_packages(zip_path),
        problems=problems,
        warnings=warnings,
    )
    _role_checks(spec, clients, site, existing, the_plan)
    return the_plan


@dataclass
class DeployResult:
    settings_updated: bool
    deployment_status: dict[str, Any]
    functions: list[str]
    warnings: list[str] = field(default_factory=list)


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
    if the_plan.offline:
        raise ConfigError("an offline plan cannot be deployed: plan again with credentials")
    if the_plan.problems:
        raise DeployError(f"cannot deploy: {'; '.join(the_plan.problems)}")
    if the_plan.zip_path is None:
        raise ConfigError(
            "nothing to deploy: build the package first (python -m aoai_helpers function build)"
        )
    if the_plan.settings_changed:
        removed = set(the_plan.removed)
        merged = {k: v for k, v in the_plan.existing.items() if k not in removed}
        merged.update(the_plan.settings)
        clients.web.web_apps.update_application_settings(
            clients.rg, clients.app, {"properties": merged}
        )
        say(
            "app settings updated" + (f" (removed {', '.join(sorted(removed))})" if removed else "")
        )
    token = credential.get_token(the_plan.cloud.arm_scope).token
    base = (scm or scm_url(the_plan.spec, the_plan.cloud, the_plan.hosting)).rstrip("/")
    url = upload_url(base, the_plan.hosting, remote_build=the_plan.remote_build)
    if the_plan.hosting is not None and the_plan.hosting.flex:
        status = one_deploy(url, base, token, the_plan.zip_path, poll_interval, timeout, say)
    else:
        status = zip_deploy(url, base, token, the_plan.zip_path, poll_interval, timeout, say)
    functions = _wait_indexed(clients, index_attempts, poll_interval, say)
    for warning in the_plan.warnings:
        say(f"WARNING: {warning}")
    return DeployResult(the_plan.settings_changed, status, functions, list(the_plan.warnings))


def _wait_indexed(
    clients: WebClients, attempts: int, poll_interval: float, say: Callable[[str], None]
) -> list[str]:
    functions: list[str] = []
    missing: list[str] = list(FUNCTIONS)
    for attempt in range(attempts):
        functions = [f.name for f in clients.web.web_apps.list_functions(clients.rg, clients.app)]
        indexed = {name.rsplit("/", 1)[-1] for name in functions}
        missing = [name for name in FUNCTIONS if name not in indexed]
        if not missing:
            say(f"functions {', '.join(FUNCTIONS)} are indexed")
            return functions
        if attempt + 1 < attempts:
            time.sleep(poll_interval)
    raise DeployError(
        f"the package deployed but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
        f"indexed (functions: {functions or 'none'}); check the app's log stream for import errors "
        "and that AzureWebJobsFeatureFlags=EnableWorkerIndexing"
    )
