"""Function deploy, offline: ARM through the recording transport (per cloud), Kudu / One Deploy
through a local HTTP server standing in for the SCM endpoint (upload, polling, failures),
hosting-plan detection, the function identity's roles, indexing checks.

REST shapes checked (Azure/azure-rest-api-specs): ``WebApps_Get`` ``GET /subscriptions/{s}/
resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}`` and ``AppServicePlans_Get`` ``GET …/
Microsoft.Web/serverfarms/{name}`` (``Microsoft.Web/stable/2025-05-01``, azure-mgmt-web 11's
api-version); ``RoleAssignments_ListForScope`` ``GET /{scope}/providers/Microsoft.Authorization/
roleAssignments?api-version=2022-04-01&$filter=principalId eq '{id}'`` (``Microsoft.Authorization/
stable/2022-04-01``). One Deploy: ``POST /api/publish?RemoteBuild=…&Deployer=…`` with
``Content-Type: application/zip``, then ``GET /api/deployments/latest`` (the Azure CLI's
``enable_zip_deploy_flex``; statuses from Microsoft in Azure/azure-dev#3658).
"""

from __future__ import annotations

import json
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from secrets_registry import record_output, register_secret

from aoai_helpers.azure.dryrun import (
    DryRunCredential,
    DryRunTransport,
    RecordedRequest,
    memory_response,
)
from aoai_helpers.azure.functions.build import build_zip
from aoai_helpers.azure.functions.deploy import (
    DeployError,
    deploy,
    make_web_clients,
    plan_deploy,
    scm_url,
)
from aoai_helpers.azure.functions.identity import MAX_PAGES, STORAGE_BLOB_DATA_OWNER, hub_scope
from aoai_helpers.azure.functions.settings import (
    FUNCTION_NAME,
    RECONCILE_FUNCTION_NAME,
    app_settings,
    reconcile_config,
    secret_settings,
)
from aoai_helpers.azure.roles import (
    EVENT_HUBS_DATA_RECEIVER,
    LOG_ANALYTICS_READER,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
)
from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SUB = "00000000-0000-0000-0000-000000000000"
SITE = f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway/providers/Microsoft.Web/sites/func-aoai-ingest"
DB = "mssql+pyodbc://ingest:P4ssw0rd-very-secret@sql-aoai.database.windows.net/aoai?driver=ODBC+Driver+18+for+SQL+Server"
register_secret("P4ssw0rd-very-secret")
PRINCIPAL = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
HUB = hub_scope(SPEC, SUB)
WORKSPACE = SPEC.llm_log.workspace_resource_id or ""
FARM = f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway/providers/Microsoft.Web/serverfarms/plan-ingest"

HOSTS = {
    "AzureCloud": "management.azure.com",
    "AzureChinaCloud": "management.chinacloudapi.cn",
    "AzureUSGovernment": "management.usgovcloudapi.net",
}


@dataclass
class Kudu:
    """What the fake SCM endpoint saw and how it answers."""

    outcome: str = "success"  # success | failed | unauthorized | conflict
    publish_body: bytes = b'"d-new"'  # One Deploy answers the deployment id
    polls_before_done: int = 2
    flex_status: int = 4  # the final status of a One Deploy deployment
    uploads: list[bytes] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    posts: list[tuple[str, str | None]] = field(default_factory=list)  # path, Content-Type
    gets: list[str] = field(default_factory=list)
    polls: int = 0
    url: str = ""


@pytest.fixture
def kudu() -> Iterator[Kudu]:
    yield from kudu_server()


def kudu_server() -> Iterator[Kudu]:
    """The fake SCM endpoint, serving until the generator is closed (the ``kudu`` fixture)."""
    state = Kudu()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            state.auth.append(self.headers.get("Authorization", ""))
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.posts.append((self.path, self.headers.get("Content-Type")))
            if state.outcome == "unauthorized":
                self._json(401, {"message": "Unauthorized"})
                return
            state.uploads.append(body)
            if self.path.startswith("/api/publish"):
                if state.outcome == "conflict":
                    self._json(409, {"message": "deployment in progress"})
                    return
                data = state.publish_body
                self.send_response(202)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            assert self.path == "/api/zipdeploy?isAsync=true", self.path
            assert self.headers.get("Content-Type") == "application/zip"
            self._json(202, {}, {"Location": f"{state.url}/api/deployments/latest?deployer=Push"})

        def _flex_poll(self) -> None:
            if state.polls == 1:  # /latest still shows the previous deployment, a success
                self._json(200, {"id": "d-old", "status": 4, "status_text": ""})
            elif state.polls <= state.polls_before_done:
                self._json(200, {"id": "d-new", "status": 1, "status_text": "Building"})
            else:
                self._json(
                    200, {"id": "d-new", "status": state.flex_status, "status_text": "oryx said no"}
                )

        def do_GET(self) -> None:
            state.auth.append(self.headers.get("Authorization", ""))
            state.gets.append(self.path)
            state.polls += 1
            if any(p.startswith("/api/publish") for p, _ in state.posts):
                self._flex_poll()
                return
            if state.polls <= state.polls_before_done:
                self._json(
                    202, {"complete": False, "status": 1, "progress": "Running oryx build..."}
                )
            elif state.outcome == "failed":
                self._json(
                    200,
                    {
                        "id": "d1",
                        "complete": True,
                        "status": 3,
                        "status_text": "pip install failed",
                        "log_url": f"{state.url}/api/deployments/d1/log",
                    },
                )
            else:
                self._json(200, {"id": "d1", "complete": True, "status": 4, "status_text": ""})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "aoai-ingest.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("function_app.py", "# test package\n")
    return path


def linux_consumption_site(**props: Any) -> dict[str, Any]:
    """``GET …/sites/{name}`` of a Linux Consumption app with a system-assigned identity."""
    return {
        "id": SITE,
        "name": "func-aoai-ingest",
        "kind": "functionapp,linux",
        "identity": {"type": "SystemAssigned", "principalId": PRINCIPAL, "tenantId": "t"},
        "properties": {
            "serverFarmId": FARM,
            "sku": "Dynamic",
            "hostNameSslStates": [
                {"name": "func-aoai-ingest.azurewebsites.net", "hostType": "Standard"},
                {"name": "func-aoai-ingest.scm.azurewebsites.net", "hostType": "Repository"},
            ],
            **props,
        },
    }


def flex_site() -> dict[str, Any]:
    site = linux_consumption_site(
        sku="FlexConsumption",
        functionAppConfig={
            "runtime": {"name": "python", "version": "3.11"},
            "scaleAndConcurrency": {"maximumInstanceCount": 100, "instanceMemoryMB": 2048},
        },
    )
    site["properties"]["hostNameSslStates"][1]["name"] = (
        "func-aoai-ingest-h4sh.scm.eastus-01.azurewebsites.net"
    )
    return site


def _grant(
    transport: DryRunTransport,
    scope: str,
    role: str,
    principal: str = PRINCIPAL,
    listed_at: str | None = None,
) -> None:
    """An assignment at ``scope``, listed by the in-memory ARM under ``listed_at`` (default:
    ``scope``) — as real ARM lists an assignment inherited from above in the resource's list."""
    path = f"{listed_at or scope}/providers/Microsoft.Authorization/roleAssignments/{role[:8]}"
    transport.store[path.lower()] = {
        "id": path,
        "name": role[:8],
        "properties": {
            "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            "principalId": principal,
            "scope": scope,
        },
    }


def _clients(
    cloud: str = "AzureCloud",
    indexed: tuple[str, ...] = (FUNCTION_NAME, RECONCILE_FUNCTION_NAME),
    existing: dict[str, str] | None = None,
    site: dict[str, Any] | None = None,
    granted: bool = True,
    transport: DryRunTransport | None = None,
) -> tuple[Any, DryRunTransport]:
    transport = transport or DryRunTransport()
    transport.store[SITE.lower()] = site if site is not None else linux_consumption_site()
    if granted:
        namespace = HUB.rsplit("/eventhubs/", 1)[0]
        _grant(transport, namespace, EVENT_HUBS_DATA_RECEIVER, listed_at=HUB)  # inherited
        _grant(transport, WORKSPACE, LOG_ANALYTICS_READER)
    if existing is not None:
        transport.store[f"{SITE}/config/appsettings".lower()] = {"properties": dict(existing)}
    for name in indexed:
        transport.store[f"{SITE}/functions/{name}".lower()] = {
            "id": f"{SITE}/functions/{name}",
            "name": f"func-aoai-ingest/{name}",
            "properties": {"config": {}},
        }
    return make_web_clients(SPEC, get_cloud(cloud), SUB, DryRunCredential(), transport), transport


def _deploy(the_plan: Any, clients: Any, kudu: Any, **options: Any) -> Any:
    """``deploy`` against the loopback SCM server ``kudu``, signed in with the dry-run
    credential, polling without waiting."""
    return deploy(
        the_plan, clients, credential=DryRunCredential(), scm=kudu.url, poll_interval=0, **options
    )


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_deploy_sets_settings_uploads_polls_and_verifies(
    cloud: str, kudu: Kudu, package: Path
) -> None:
    clients, transport = _clients(
        cloud, existing={"MY_OWN_SETTING": "keep me", "AOAI_EVENTHUB_NAME": "old-hub"}
    )
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package, cloud=cloud)
    actions = {c.name: c.action for c in the_plan.changes}
    assert actions["AOAI_EVENTHUB_NAME"] == "change" and actions["AOAI_DB_URL"] == "add"
    steps: list[str] = []
    result = _deploy(
        the_plan,
        clients,
        kudu,
        on_progress=steps.append,
    )
    assert result.settings_updated and result.deployment_status["status"] == 4
    assert any(FUNCTION_NAME in f for f in result.functions)
    # ARM: the cloud's endpoint, the documented paths, the app's other settings kept
    assert {r.host for r in transport.requests} == {HOSTS[cloud]}
    calls = [(r.method, r.path.removeprefix(SITE)) for r in transport.requests]
    assert calls == [
        ("GET", ""),  # WebApps_Get: hosting plan, SCM host, identity
        ("POST", "/config/appsettings/list"),
        ("GET", f"{HUB}/providers/Microsoft.Authorization/roleAssignments"),
        ("GET", f"{WORKSPACE}/providers/Microsoft.Authorization/roleAssignments"),
        ("PUT", "/config/appsettings"),
        ("GET", "/functions"),
    ]
    versions = [r.api_version for r in transport.requests]
    assert versions == ["2025-05-01", "2025-05-01", "2022-04-01", "2022-04-01"] + ["2025-05-01"] * 2
    assert transport.requests[2].query["$filter"] == [f"principalId eq '{PRINCIPAL}'"]
    put = transport.requests[4].body["properties"]
    assert put["MY_OWN_SETTING"] == "keep me" and put["AOAI_EVENTHUB_NAME"] == "aoai-usage"
    assert put["AOAI_DB_URL"] == DB and put["AOAI_EVENTHUB_CONSUMER_GROUP"] == "$Default"
    assert put["FUNCTIONS_WORKER_RUNTIME"] == "python" and put["ENABLE_ORYX_BUILD"] == "true"
    ns = get_cloud(cloud).eventhub_host("evhns-aoai-usage")
    assert put["AOAI_EVENTHUB__fullyQualifiedNamespace"] == ns
    assert json.loads(put["AOAI_DEPLOYMENT_MODELS"])["gpt-4o"] == "gpt-4o-2024-11-20"
    # Kudu: one upload of exactly the package, with a bearer token, polled until complete
    assert kudu.uploads == [package.read_bytes()]
    assert set(kudu.auth) == {"Bearer dry-run-token"}
    assert kudu.polls == 3 and "deployment succeeded" in steps
    # the plan names the plan detected and the endpoint (the site's Repository host name)
    text = the_plan.render()
    assert "hosting plan: Consumption (Dynamic) — from properties.sku" in text
    assert "POST https://func-aoai-ingest.scm.azurewebsites.net/api/zipdeploy?isAsync=true" in text
    assert "WARNING" not in text and result.warnings == []
    assert f"  ok        'Azure Event Hubs Data Receiver' (role {EVENT_HUBS_DATA_RECEIVER})" in text
    assert (
        scm_url(SPEC, get_cloud(cloud))
        == f"https://func-aoai-ingest.scm.{get_cloud(cloud).scm_suffix}"
    )


def test_unchanged_settings_are_not_written_again(kudu: Kudu, package: Path) -> None:
    clients, transport = _clients()
    first = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    _deploy(first, clients, kudu)
    transport.requests.clear()
    again = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert not again.settings_changed and "(no change)" in again.render()
    _deploy(again, clients, kudu)
    # read the site, list settings, two role lookups, list functions: no PUT
    assert [r.method for r in transport.requests] == ["GET", "POST", "GET", "GET", "GET"]


def test_a_failed_deployment_is_a_clear_error(kudu: Kudu, package: Path) -> None:
    kudu.outcome = "failed"
    clients, _ = _clients()
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(
        DeployError,
        match=r"the deployment failed: pip install failed \(log: http://127\.0\.0\.1:\d+/api/deployments/d1/log\)",
    ):
        _deploy(the_plan, clients, kudu)


def test_an_unauthorized_upload_says_what_is_missing(kudu: Kudu, package: Path) -> None:
    kudu.outcome = "unauthorized"
    clients, _ = _clients()
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match=r"refused the upload \(HTTP 401\).*Contributor"):
        _deploy(the_plan, clients, kudu)


def test_a_function_that_is_not_indexed_fails_the_deploy(kudu: Kudu, package: Path) -> None:
    clients, _ = _clients(indexed=())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match="ingest_usage, reconcile_usage are not indexed"):
        _deploy(
            the_plan,
            clients,
            kudu,
            index_attempts=2,
        )
    clients, _ = _clients(indexed=(FUNCTION_NAME,))
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match=r"reconcile_usage is not indexed \(functions: "):
        _deploy(
            the_plan,
            clients,
            kudu,
            index_attempts=1,
        )


def test_the_reconcile_timer_settings_follow_the_llm_log() -> None:
    reconcile_settings = {
        "AOAI_CLOUD",
        "AOAI_LLM_LOG_WORKSPACE_ID",
        "AOAI_LLM_LOG_CORRELATION_COLUMN",
        "AOAI_RECONCILE_GRACE_HOURS",
        "AOAI_RECONCILE_LOOKBACK_MINUTES",
    }
    example = SPEC.model_dump()
    # without a language-model log, or with a workspace but not its GUID: nothing to query
    no_llm_log = parse_spec({**example, "llm_log": {}})
    no_guid = parse_spec({**example, "llm_log": {**example["llm_log"], "workspace_id": None}})
    assert no_llm_log.llm_log.workspace_id is None and no_guid.llm_log.workspace_id is None
    assert no_guid.llm_log.workspace_resource_id is not None
    for spec in (no_llm_log, no_guid):
        without = app_settings(spec, db_url=DB)
        # the timer's trigger resolves %AOAI_RECONCILE_SCHEDULE% whatever the spec: always written
        assert without["AOAI_RECONCILE_SCHEDULE"] == "0 */10 * * * *"
        assert not reconcile_settings & set(without)
        assert reconcile_config(without).workspace_id is None  # the timer only warns
    # the example as it is: its workspace GUID and reconcile section (grace_hours: 6)
    settings = app_settings(SPEC, db_url=DB)
    assert {k: settings[k] for k in reconcile_settings | {"AOAI_RECONCILE_SCHEDULE"}} == {
        "AOAI_RECONCILE_SCHEDULE": "0 */10 * * * *",
        "AOAI_CLOUD": "AzureCloud",
        "AOAI_LLM_LOG_WORKSPACE_ID": "11111111-2222-3333-4444-555555555555",
        "AOAI_LLM_LOG_CORRELATION_COLUMN": "CorrelationId",
        "AOAI_RECONCILE_GRACE_HOURS": "6.0",
        "AOAI_RECONCILE_LOOKBACK_MINUTES": "60",
    }
    assert "AOAI_IDENTITY_CLIENT_ID" not in settings  # the example's function: system-assigned
    cfg = reconcile_config(settings)
    assert (cfg.workspace_id, cfg.settings.grace_hours) == (
        "11111111-2222-3333-4444-555555555555",
        6.0,
    )
    data = SPEC.model_dump()
    data["cloud"] = "AzureUSGovernment"
    data["llm_log"].update(
        workspace_id="2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11", correlation_column="RequestId"
    )
    data["reconcile"].update(grace_hours=2.5, lookback_minutes=90, schedule="0 */5 * * * *")
    data["function"]["identity_client_id"] = "5b0e1c2d-0000-4000-8000-0000000000ab"
    spec = parse_spec(data)
    settings = app_settings(spec, db_url=DB)
    assert {
        k: v
        for k, v in settings.items()
        if "RECONCILE" in k
        or "LLM_LOG" in k
        or k
        in (
            "AOAI_CLOUD",
            "AOAI_IDENTITY_CLIENT_ID",
        )
    } == {
        "AOAI_RECONCILE_SCHEDULE": "0 */5 * * * *",
        "AOAI_CLOUD": "AzureUSGovernment",
        "AOAI_LLM_LOG_WORKSPACE_ID": "2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11",
        "AOAI_LLM_LOG_CORRELATION_COLUMN": "RequestId",
        "AOAI_RECONCILE_GRACE_HOURS": "2.5",
        "AOAI_RECONCILE_LOOKBACK_MINUTES": "90",
        "AOAI_IDENTITY_CLIENT_ID": "5b0e1c2d-0000-4000-8000-0000000000ab",
    }
    # and the timer reads them back as the spec's values
    cfg = reconcile_config(settings)
    assert (cfg.cloud, cfg.workspace_id, cfg.correlation_column, cfg.identity_client_id) == (
        "AzureUSGovernment",
        "2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11",
        "RequestId",
        "5b0e1c2d-0000-4000-8000-0000000000ab",
    )
    assert cfg.settings == spec.reconcile
    # none of them is a secret (shown unmasked in the deploy plan)
    assert not secret_settings(spec) & {k for k in settings if "RECONCILE" in k or "LLM" in k}


def test_an_unreachable_scm_endpoint(package: Path) -> None:
    clients, _ = _clients()
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match=r"cannot reach http://127\.0\.0\.1:9/api/zipdeploy"):
        deploy(
            the_plan,
            clients,
            credential=DryRunCredential(),
            scm="http://127.0.0.1:9",
            poll_interval=0,
        )


def test_the_plan_masks_secrets_and_needs_a_listen_connection(package: Path) -> None:
    the_plan = plan_deploy(SPEC, clients=None, db_url=DB, zip_path=package)
    text = the_plan.render()
    record_output("function deploy plan", text)
    assert "P4ssw0rd" not in text and "****" in text and "offline" in text
    data = SPEC.model_dump()
    data["function"]["eventhub_auth"] = "connection_string"
    spec = parse_spec(data)
    with pytest.raises(ConfigError, match="AOAI_EVENTHUB_LISTEN_CONNECTION"):
        plan_deploy(spec, clients=None, db_url=DB)
    conn = "Endpoint=sb://evhns-aoai-usage.servicebus.windows.net/;SharedAccessKeyName=ingest-listen;SharedAccessKey=abcdefSECRET1234"
    listen = plan_deploy(spec, clients=None, db_url=DB, eventhub_connection=conn)
    assert listen.settings["AOAI_EVENTHUB"] == conn and "SECRET1234" not in listen.render().replace(
        "****1234", ""
    )


# ----------------------------------------------------------------------------- Flex Consumption


FLEX_REJECTED_ON_APP = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "SCM_DO_BUILD_DURING_DEPLOYMENT": "true",
    "ENABLE_ORYX_BUILD": "true",
    "WEBSITE_RUN_FROM_PACKAGE": "1",
}


def test_flex_consumption_uses_one_deploy_and_drops_the_settings_flex_rejects(
    kudu: Kudu, package: Path
) -> None:
    clients, transport = _clients(
        site=flex_site(), existing={"MY_OWN_SETTING": "keep me", **FLEX_REJECTED_ON_APP}
    )
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    text = the_plan.render()
    assert "hosting plan: Flex Consumption (FlexConsumption) — from properties.sku" in text
    assert "runtime python 3.11" in text
    scm = "https://func-aoai-ingest-h4sh.scm.eastus-01.azurewebsites.net"  # hostNameSslStates
    assert f"POST {scm}/api/publish?RemoteBuild=true&Deployer=aoai-helpers (One Deploy" in text
    assert f"{scm}/api/deployments/latest" in text and "zipdeploy" not in text
    assert sorted(the_plan.removed) == sorted(FLEX_REJECTED_ON_APP)
    assert "remove FUNCTIONS_WORKER_RUNTIME" in " ".join(text.split())
    assert not {"FUNCTIONS_WORKER_RUNTIME", "ENABLE_ORYX_BUILD"} & set(the_plan.settings)
    steps: list[str] = []
    result = _deploy(
        the_plan,
        clients,
        kudu,
        on_progress=steps.append,
    )
    put = next(r for r in transport.requests if r.method == "PUT").body["properties"]
    assert put["MY_OWN_SETTING"] == "keep me" and put["AOAI_DB_URL"] == DB
    assert not set(FLEX_REJECTED_ON_APP) & set(put), "Flex rejects these: they must go"
    assert kudu.posts == [
        ("/api/publish?RemoteBuild=true&Deployer=aoai-helpers", "application/zip")
    ]
    assert kudu.uploads == [package.read_bytes()] and set(kudu.auth) == {"Bearer dry-run-token"}
    # /latest first showed the previous deployment (a success): it was not taken for ours
    assert kudu.gets == ["/api/deployments/latest"] * 3 and kudu.polls == 3
    assert result.deployment_status == {"id": "d-new", "status": 4, "status_text": "oryx said no"}
    assert "deployment succeeded" in steps and any("removed" in s for s in steps)


def test_keep_setting_keeps_one_the_plan_would_remove(package: Path) -> None:
    clients, _ = _clients(site=flex_site(), existing=dict(FLEX_REJECTED_ON_APP))
    the_plan = plan_deploy(
        SPEC,
        clients=clients,
        db_url=DB,
        zip_path=package,
        keep_settings=["website_run_from_package"],
    )
    assert "WEBSITE_RUN_FROM_PACKAGE" not in the_plan.removed and len(the_plan.removed) == 3
    assert any("WEBSITE_RUN_FROM_PACKAGE is kept" in w for w in the_plan.warnings)


@pytest.mark.parametrize(
    ("status", "word"), [(3, "failed"), (-1, "cancelled"), (5, "conflict"), (6, "partially")]
)
def test_a_one_deploy_that_does_not_succeed_is_an_error(
    kudu: Kudu, package: Path, status: int, word: str
) -> None:
    kudu.flex_status = status
    clients, _ = _clients(site=flex_site())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(
        DeployError, match=rf"the deployment {word}.*\(status {status}\): oryx said no"
    ):
        _deploy(the_plan, clients, kudu)


def test_a_one_deploy_conflict_says_another_deployment_runs(kudu: Kudu, package: Path) -> None:
    kudu.outcome = "conflict"
    clients, _ = _clients(site=flex_site())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match=r"HTTP 409.*another deployment"):
        _deploy(the_plan, clients, kudu)


def test_a_zip_with_its_packages_needs_no_remote_build(tmp_path: Path) -> None:
    path = tmp_path / "with-packages.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("function_app.py", "")
        z.writestr(".python_packages/lib/site-packages/azure/functions/__init__.py", "")
    clients, _ = _clients(site=flex_site())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=path)
    assert not the_plan.remote_build and "RemoteBuild=false" in the_plan.upload


def test_function_build_output_is_sent_with_remote_build(tmp_path: Path) -> None:
    """`function build` ships requirements.txt, not the installed packages: Flex must build."""
    built = build_zip(
        tmp_path / "dist", max_batch_size=SPEC.function.max_batch_size if SPEC.function else None
    )
    with zipfile.ZipFile(built.path) as zf:
        assert "requirements.txt" in zf.namelist()
    clients, _ = _clients(site=flex_site())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=built.path)
    assert the_plan.remote_build and "RemoteBuild=true" in the_plan.upload
    assert not the_plan.warnings  # the package's batch size is the spec's


# ----------------------------------------------------------------------------- detection via ARM


def test_without_the_sites_sku_the_server_farm_is_read(kudu: Kudu, package: Path) -> None:
    site = linux_consumption_site()
    del site["properties"]["sku"]
    transport = DryRunTransport()
    transport.store[FARM.lower()] = {
        "id": FARM,
        "sku": {"name": "EP1", "tier": "ElasticPremium"},
        "properties": {"reserved": True},
    }
    clients, _ = _clients(site=site, transport=transport)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    farm = [r for r in transport.requests if "serverfarms" in r.path]
    assert [(r.method, r.path, r.api_version) for r in farm] == [("GET", FARM, "2025-05-01")]
    assert (
        "hosting plan: Elastic Premium (ElasticPremium/EP1) — from the server farm's sku"
        in the_plan.render()
    )
    _deploy(the_plan, clients, kudu)
    assert [p for p, _ in kudu.posts] == ["/api/zipdeploy?isAsync=true"]


@pytest.mark.parametrize(
    ("site", "said"),
    [
        (
            linux_consumption_site(
                managedEnvironmentId="/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/managedEnvironments/e"
            ),
            "Azure Container Apps",
        ),
        ({**linux_consumption_site(), "kind": "functionapp"}, "Linux only"),
        ({**linux_consumption_site(), "identity": {"type": "None"}}, "no system-assigned identity"),
    ],
)
def test_a_plan_with_a_problem_changes_nothing(
    kudu: Kudu, package: Path, site: dict[str, Any], said: str
) -> None:
    clients, transport = _clients(site=site)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert the_plan.problems and said in the_plan.render()
    with pytest.raises(DeployError, match=f"cannot deploy: .*{said}"):
        _deploy(the_plan, clients, kudu)
    assert not [r for r in transport.requests if r.method == "PUT"] and not kudu.uploads


def test_a_missing_app_is_a_problem(package: Path) -> None:
    clients, transport = _clients()
    del transport.store[SITE.lower()]
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert the_plan.problems == [
        "function app func-aoai-ingest was not found in resource group rg-aoai-gateway "
        "(GET …/sites/func-aoai-ingest: 404): create it first"
    ]


def test_a_user_assigned_identity_must_be_attached_and_is_the_one_checked(package: Path) -> None:
    data = SPEC.model_dump()
    data["function"]["identity_client_id"] = "5b0e1c2d-0000-4000-8000-0000000000ab"
    spec = parse_spec(data)
    clients, _ = _clients()  # the site has only its system-assigned identity
    the_plan = plan_deploy(spec, clients=clients, db_url=DB, zip_path=package)
    assert any(
        "5b0e1c2d-0000-4000-8000-0000000000ab" in p and "not attached" in p
        for p in the_plan.problems
    )
    site = linux_consumption_site()
    site["identity"] = {
        "type": "UserAssigned",
        "userAssignedIdentities": {
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ingest": {
                "clientId": "5b0e1c2d-0000-4000-8000-0000000000ab",
                "principalId": "uai-principal-0001",
            }
        },
    }
    clients, transport = _clients(site=site, granted=False)
    the_plan = plan_deploy(spec, clients=clients, db_url=DB, zip_path=package)
    assert not the_plan.problems
    lookups = [r for r in transport.requests if "roleAssignments" in r.path]
    assert {r.query["$filter"][0] for r in lookups} == {"principalId eq 'uai-principal-0001'"}


# ----------------------------------------------------------------------------- roles


def test_a_role_not_seen_is_a_loud_warning_with_the_command_not_a_silent_success(
    kudu: Kudu, package: Path
) -> None:
    clients, _ = _clients(granted=False)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    command = (
        f"az role assignment create --assignee-object-id {PRINCIPAL} --assignee-principal-type "
        f"ServicePrincipal --role {EVENT_HUBS_DATA_RECEIVER} --scope {HUB}"
    )
    text = the_plan.render()
    assert "WARNING: no 'Azure Event Hubs Data Receiver' assignment" in text and command in text
    assert "APIM's roles: see `python -m aoai_helpers provision plan`" in text
    assert len(the_plan.warnings) == 2  # the receiver on the hub, the reader on the workspace
    steps: list[str] = []
    result = _deploy(
        the_plan,
        clients,
        kudu,
        on_progress=steps.append,
    )
    assert result.warnings == the_plan.warnings
    assert any(s.startswith("WARNING: ") and command in s for s in steps)


class RefusingArm(DryRunTransport):
    """ARM that refuses to list role assignments (the caller lacks roleAssignments/read)."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        if "/providers/Microsoft.Authorization/roleAssignments" in request.url:
            return memory_response(
                request, 403, {"error": {"code": "AuthorizationFailed", "message": "no"}}
            )
        return super().send(request, **kwargs)


def test_a_refused_role_read_says_it_could_not_check(package: Path) -> None:
    clients, _ = _clients(transport=RefusingArm())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert {c.state for c in the_plan.roles} == {"unknown"}
    assert all("could not check" in w and "HTTP 403" in w for w in the_plan.warnings)
    assert "unchecked" in the_plan.render()


def test_a_package_built_for_another_batch_size_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "old.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "host.json", json.dumps({"extensions": {"eventHubs": {"maxEventBatchSize": 64}}})
        )
    the_plan = plan_deploy(SPEC, clients=None, db_url=DB, zip_path=path)
    assert any(
        "maxEventBatchSize 64" in w and "max_batch_size is 500" in w for w in the_plan.warnings
    )


def test_the_offline_plan_says_the_hosting_plan_is_unknown_and_what_would_differ(
    package: Path,
) -> None:
    text = plan_deploy(SPEC, clients=None, db_url=DB, zip_path=package).render()
    assert "hosting plan: unknown (offline" in text
    assert "https://func-aoai-ingest.scm.azurewebsites.net/api/zipdeploy?isAsync=true" in text
    assert "https://func-aoai-ingest.scm.azurewebsites.net/api/publish?RemoteBuild=true" in text
    assert "Azure Event Hubs Data Receiver" in text and "not checked (offline)" in text
    assert f"--scope {HUB}" in text  # the spec's subscription: the scope is known offline


# ----------------------------------------------------------------------------- secrets of others

#: Values of settings `function deploy` does not own, as real apps hold them: a storage key in
#: the content share's connection string, a SAS URL to run from, a host storage connection string.
ACCOUNT_KEY = "SUPERSECRETKEY123abcdefghijklmnopqrstuvwxyz0123456789+/=="
CONTENT_CONNECTION = (
    "DefaultEndpointsProtocol=https;AccountName=stfuncdata;"
    f"AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
SAS_SIG = "sv2022Zq8Xs3cr3tS1gnatur3Value%3D"
PACKAGE_SAS_URL = (
    "https://stfuncdata.blob.core.windows.net/function-releases/pkg.zip"
    f"?sv=2022-11-02&se=2030-01-01&sr=b&sp=r&sig={SAS_SIG}"
)
HOST_KEY = "HostStorageKey0987654321zyxwvutsrqponmlkjihgfedcba=="
HOST_CONNECTION = f"DefaultEndpointsProtocol=https;AccountName=sthost;AccountKey={HOST_KEY}"
register_secret(
    ACCOUNT_KEY, CONTENT_CONNECTION, SAS_SIG, PACKAGE_SAS_URL, HOST_KEY, HOST_CONNECTION
)
SETTINGS_OF_OTHERS = {
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING": CONTENT_CONNECTION,  # removed on Flex
    "WEBSITE_CONTENTSHARE": "func-aoai-ingest-share",  # removed on Flex
    "WEBSITE_RUN_FROM_PACKAGE": PACKAGE_SAS_URL,  # removed, or kept with --keep-setting
    "AzureWebJobsStorage": HOST_CONNECTION,  # not ours: kept, never shown
}
SECRETS_OF_OTHERS = (ACCOUNT_KEY, SAS_SIG, HOST_KEY)


def _leaked(text: str) -> list[str]:
    return [s[-6:] for s in SECRETS_OF_OTHERS if s in text or s[:12] in text]


@pytest.mark.parametrize("keep", [(), ("WEBSITE_RUN_FROM_PACKAGE",)])
def test_the_plan_never_shows_values_of_settings_it_removes_or_keeps(
    kudu: Kudu, package: Path, keep: tuple[str, ...]
) -> None:
    clients, transport = _clients(site=flex_site(), existing=dict(SETTINGS_OF_OTHERS))
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package, keep_settings=keep)
    text = the_plan.render()
    record_output("function deploy plan (Flex, settings of others)", text)
    expected = {"WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE"} | (
        set() if keep else {"WEBSITE_RUN_FROM_PACKAGE"}
    )
    assert set(the_plan.removed) == expected  # the rows are there, their values are not
    assert "remove WEBSITE_CONTENTAZUREFILECONNECTIONSTRING (set; value not shown)" in " ".join(
        text.split()
    )
    assert _leaked(text) == [] and "func-aoai-ingest-share" not in text
    assert all(c.old is None for c in the_plan.changes if c.action == "remove")
    assert _leaked(repr(the_plan)) == [] and _leaked(repr(the_plan.changes)) == []
    steps: list[str] = []
    _deploy(
        the_plan,
        clients,
        kudu,
        on_progress=steps.append,
    )
    progress = "\n".join(steps)
    record_output("function deploy progress (Flex, settings of others)", progress)
    assert "removed" in progress and _leaked(progress) == []
    put = next(r for r in transport.requests if r.method == "PUT").body["properties"]
    assert put["AzureWebJobsStorage"] == HOST_CONNECTION  # kept as it was, only not shown
    assert ("WEBSITE_RUN_FROM_PACKAGE" in put) == bool(keep)


def test_a_secret_looking_old_value_of_a_setting_we_own_is_masked(package: Path) -> None:
    """A setting of ours that someone set to a connection string: its old value is masked."""
    clients, _ = _clients(existing={"AOAI_EVENTHUB_NAME": CONTENT_CONNECTION})
    text = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package).render()
    record_output("function deploy plan (owned setting, secret value)", text)
    assert _leaked(text) == [] and "AOAI_EVENTHUB_NAME" in text and "-> aoai-usage" in text


# ----------------------------------------------------------------------------- storage roles

STORAGE_RG = "rg-storage"
HOST_ACCOUNT = (
    f"/subscriptions/{SUB}/resourceGroups/{STORAGE_RG}/providers/Microsoft.Storage"
    "/storageAccounts/sthost"
)
DEPLOY_ACCOUNT = HOST_ACCOUNT.replace("/sthost", "/stdeploy")
DEPLOY_CONTAINER = f"{DEPLOY_ACCOUNT}/blobServices/default/containers/app-package"
SUBSCRIPTION = f"/subscriptions/{SUB}"


def _storage_checks(the_plan: Any) -> dict[str, Any]:
    return {c.need.role_id: c for c in the_plan.roles if "storage account" in c.need.scope}


@pytest.mark.parametrize(
    "setting",
    [
        {"AzureWebJobsStorage__accountName": "sthost"},
        {"AzureWebJobsStorage__blobServiceUri": "https://sthost.blob.core.chinacloudapi.cn"},
        {"AzureWebJobsStorage__serviceUri": "https://sthost.blob.core.usgovcloudapi.net/"},
    ],
)
def test_identity_based_host_storage_needs_blob_data_owner_on_the_account(
    package: Path, setting: dict[str, str]
) -> None:
    # granted on the account: found in the identity's assignments listed at the subscription
    clients, transport = _clients(existing=setting)
    _grant(transport, HOST_ACCOUNT, STORAGE_BLOB_DATA_OWNER, listed_at=SUBSCRIPTION)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_OWNER]
    assert (check.state, check.scope) == ("seen", HOST_ACCOUNT)
    assert "'Storage Blob Data Owner' (role b7e6dc6d-f1e8-4753-8033-0f276bb0955b)" in (
        the_plan.render()
    )
    assert not the_plan.warnings
    lookups = [
        r
        for r in transport.requests
        if r.path == f"{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments"
    ]
    assert [r.query["$filter"] for r in lookups] == [[f"principalId eq '{PRINCIPAL}'"]]


def test_host_storage_with_another_role_on_the_account_is_missing_and_warned(
    package: Path,
) -> None:
    clients, transport = _clients(existing={"AzureWebJobsStorage__accountName": "STHOST"})
    # Contributor is not enough for the host (Owner is what the page names)
    _grant(transport, HOST_ACCOUNT, STORAGE_BLOB_DATA_CONTRIBUTOR, listed_at=SUBSCRIPTION)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_OWNER]
    assert (check.state, check.scope) == ("not_seen", HOST_ACCOUNT)
    command = (
        f"az role assignment create --assignee-object-id {PRINCIPAL} --assignee-principal-type "
        f"ServicePrincipal --role {STORAGE_BLOB_DATA_OWNER} --scope {HOST_ACCOUNT}"
    )
    assert any("no 'Storage Blob Data Owner'" in w and command in w for w in the_plan.warnings)


def test_host_storage_whose_account_id_cannot_be_derived_says_it_was_not_checked(
    package: Path,
) -> None:
    clients, _ = _clients(existing={"AzureWebJobsStorage__accountName": "sthost"})
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_OWNER]
    assert check.state == "unknown" and check.scope is None
    assert "could not be checked: the ARM id of storage account sthost could not be derived" in (
        check.detail
    )
    assert any(
        "'Storage Blob Data Owner'" in w and "--scope <ARM id of storage account sthost" in w
        for w in the_plan.warnings
    )
    # a subscription-wide assignment covers the account wherever it is in the subscription
    clients, transport = _clients(existing={"AzureWebJobsStorage__accountName": "sthost"})
    _grant(transport, SUBSCRIPTION, STORAGE_BLOB_DATA_OWNER)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert _storage_checks(the_plan)[STORAGE_BLOB_DATA_OWNER].state == "seen"


@pytest.mark.parametrize(
    "existing",
    [
        {},  # no identity-based host storage
        {"AzureWebJobsStorage": HOST_CONNECTION, "AzureWebJobsStorage__accountName": "sthost"},
    ],
)
def test_host_storage_by_connection_string_needs_no_storage_role(
    package: Path, existing: dict[str, str]
) -> None:
    clients, _ = _clients(existing=existing)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert _storage_checks(the_plan) == {}


def test_host_storage_with_a_named_user_assigned_identity_checks_that_identity(
    package: Path,
) -> None:
    site = linux_consumption_site()
    site["identity"] = {
        "type": "SystemAssigned, UserAssigned",
        "principalId": PRINCIPAL,
        "userAssignedIdentities": {
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-host": {
                "clientId": "c0ffee00-0000-4000-8000-000000000001",
                "principalId": "host-principal-0001",
            }
        },
    }
    clients, transport = _clients(
        site=site,
        existing={
            "AzureWebJobsStorage__accountName": "sthost",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "c0ffee00-0000-4000-8000-000000000001",
        },
    )
    _grant(transport, HOST_ACCOUNT, STORAGE_BLOB_DATA_OWNER, listed_at=SUBSCRIPTION)  # to PRINCIPAL
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_OWNER]
    assert check.principal_id == "host-principal-0001" and check.state == "unknown"
    filters = {
        r.query["$filter"][0]
        for r in transport.requests
        if r.path.startswith(SUBSCRIPTION + "/providers/")
    }
    assert filters == {"principalId eq 'host-principal-0001'"}


def _flex_with_deployment_storage(auth: dict[str, str]) -> dict[str, Any]:
    site = flex_site()
    site["properties"]["functionAppConfig"]["deployment"] = {
        "storage": {
            "type": "blobContainer",
            "value": "https://stdeploy.blob.core.windows.net/app-package",
            "authentication": auth,
        }
    }
    return site


@pytest.mark.parametrize("role", [STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_BLOB_DATA_OWNER])
def test_flex_deployment_storage_with_an_identity_needs_blob_data_access(
    package: Path, role: str
) -> None:
    site = _flex_with_deployment_storage({"type": "SystemAssignedIdentity"})
    clients, transport = _clients(site=site)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_CONTRIBUTOR]
    assert check.state == "unknown" and "stdeploy" in check.detail  # no assignment names it
    text = the_plan.render()
    assert "container app-package" in text and "NOT CONFIRMED" in text
    # on the container (Contributor, or Owner: either counts)
    _grant(transport, DEPLOY_CONTAINER, role, listed_at=SUBSCRIPTION)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_CONTRIBUTOR]
    assert (check.state, check.scope) == ("seen", DEPLOY_CONTAINER)


def test_flex_deployment_storage_granted_on_another_container_is_missing(package: Path) -> None:
    site = _flex_with_deployment_storage({"type": "SystemAssignedIdentity"})
    clients, transport = _clients(site=site)
    other = DEPLOY_CONTAINER.replace("app-package", "other")
    _grant(transport, other, STORAGE_BLOB_DATA_CONTRIBUTOR, listed_at=SUBSCRIPTION)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_CONTRIBUTOR]
    assert (check.state, check.scope) == ("not_seen", DEPLOY_CONTAINER)


def test_flex_deployment_storage_with_a_user_assigned_identity_and_a_connection_string(
    package: Path,
) -> None:
    rid = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-deploy"
    site = _flex_with_deployment_storage(
        {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": rid}
    )
    site["identity"]["userAssignedIdentities"] = {rid: {"clientId": "c", "principalId": "deploy-p"}}
    clients, transport = _clients(site=site)
    _grant(transport, DEPLOY_ACCOUNT, STORAGE_BLOB_DATA_CONTRIBUTOR, "deploy-p", SUBSCRIPTION)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    check = _storage_checks(the_plan)[STORAGE_BLOB_DATA_CONTRIBUTOR]
    assert (check.state, check.principal_id) == ("seen", "deploy-p")
    # a connection string: no role
    site = _flex_with_deployment_storage(
        {"type": "StorageAccountConnectionString", "storageAccountConnectionStringName": "X"}
    )
    clients, _ = _clients(site=site)
    assert _storage_checks(plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)) == {}


# ----------------------------------------------------------------------------- paging


class PagingArm(DryRunTransport):
    """ARM that lists role assignments in pages: an empty first page with a ``nextLink`` (on
    ``link_host``), then the stored assignments."""

    link_host = "management.azure.com"
    pages_before = 1

    def send(self, request: Any, **kwargs: Any) -> Any:
        url = request.url
        if "/providers/Microsoft.Authorization/roleAssignments" in url:
            page = int(re.search(r"skipToken=p(\d+)", url).group(1)) if "skipToken" in url else 0
            if page < self.pages_before:
                self.requests.append(RecordedRequest(request.method, url, None, {}))
                path = url.split("?", 1)[0].split("/", 3)[3]
                link = (
                    f"https://{self.link_host}/{path}?api-version=2022-04-01"
                    f"&$filter=principalId%20eq%20'{PRINCIPAL}'&$skipToken=p{page + 1}"
                )
                return memory_response(request, 200, {"value": [], "nextLink": link})
        return super().send(request, **kwargs)


def test_role_assignments_are_read_across_pages(package: Path) -> None:
    clients, transport = _clients(transport=PagingArm())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert {c.state for c in the_plan.roles} == {"seen"}  # both were on the second page
    lookups = [r for r in transport.requests if "roleAssignments" in r.path]
    assert [r.query.get("$skipToken") for r in lookups] == [None, ["p1"]] * 2


def test_a_next_link_elsewhere_is_asked_of_arm_and_pages_are_bounded(package: Path) -> None:
    transport = PagingArm()
    transport.link_host = "attacker.example"
    clients, _ = _clients(transport=transport)
    plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert {r.host for r in transport.requests} == {"management.azure.com"}
    transport = PagingArm()
    transport.pages_before = MAX_PAGES + 5
    clients, _ = _clients(transport=transport)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert {c.state for c in the_plan.roles} == {"unknown"}
    assert all(f"more than {MAX_PAGES} pages" in c.detail for c in the_plan.roles)


# ----------------------------------------------------------------------------- One Deploy answer


@pytest.mark.parametrize("body", [b"", b'{"status": "accepted"}', b"Deployment accepted"])
def test_a_publish_answer_that_is_no_deployment_id_takes_the_first_final_status(
    kudu: Kudu, package: Path, body: bytes
) -> None:
    kudu.publish_body = body
    clients, _ = _clients(site=flex_site())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    steps: list[str] = []
    result = _deploy(
        the_plan,
        clients,
        kudu,
        timeout=5,
        on_progress=steps.append,
    )
    # the first poll already shows a final status: taken, without waiting for an id
    assert kudu.polls == 1 and result.deployment_status["status"] == 4
    assert any("is taken as this deployment's" in s for s in steps)


def test_a_bare_or_quoted_deployment_id_is_waited_for() -> None:
    from aoai_helpers.azure.functions.upload import deployment_id

    assert deployment_id(b'"d-new"\n') == "d-new" and deployment_id(b"4f2c9a1e-77") == "4f2c9a1e-77"
    assert deployment_id(b"") is None and deployment_id(b'{"id": "x"}') is None
    assert deployment_id(b"Deployment accepted") is None
