"""Function deploy, offline: ARM through the recording transport (per cloud), Kudu through a local
HTTP server standing in for the SCM endpoint (upload, polling, failures), indexing checks.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from secrets_registry import record_output, register_secret

from aoai_helpers.azure_dryrun import DryRunCredential, DryRunTransport
from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.functions.deploy import (
    DeployError,
    deploy,
    make_web_clients,
    plan_deploy,
    scm_url,
)
from aoai_helpers.functions.settings import (
    FUNCTION_NAME,
    RECONCILE_FUNCTION_NAME,
    app_settings,
    reconcile_config,
    secret_settings,
)
from aoai_helpers.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SUB = "00000000-0000-0000-0000-000000000000"
SITE = f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway/providers/Microsoft.Web/sites/func-aoai-ingest"
DB = "mssql+pyodbc://ingest:P4ssw0rd-very-secret@sql-aoai.database.windows.net/aoai?driver=ODBC+Driver+18+for+SQL+Server"
register_secret("P4ssw0rd-very-secret")

HOSTS = {
    "AzureCloud": "management.azure.com",
    "AzureChinaCloud": "management.chinacloudapi.cn",
    "AzureUSGovernment": "management.usgovcloudapi.net",
}


@dataclass
class Kudu:
    """What the fake SCM endpoint saw and how it answers."""

    outcome: str = "success"  # success | failed | unauthorized
    polls_before_done: int = 2
    uploads: list[bytes] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    polls: int = 0
    url: str = ""


@pytest.fixture
def kudu() -> Iterator[Kudu]:
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
            if state.outcome == "unauthorized":
                self._json(401, {"message": "Unauthorized"})
                return
            assert self.path == "/api/zipdeploy?isAsync=true", self.path
            assert self.headers.get("Content-Type") == "application/zip"
            state.uploads.append(body)
            self._json(202, {}, {"Location": f"{state.url}/api/deployments/latest?deployer=Push"})

        def do_GET(self) -> None:
            state.auth.append(self.headers.get("Authorization", ""))
            state.polls += 1
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


def _clients(
    cloud: str = "AzureCloud",
    indexed: tuple[str, ...] = (FUNCTION_NAME, RECONCILE_FUNCTION_NAME),
    existing: dict[str, str] | None = None,
) -> tuple[Any, DryRunTransport]:
    transport = DryRunTransport()
    if existing is not None:
        transport.store[f"{SITE}/config/appsettings".lower()] = {"properties": dict(existing)}
    for name in indexed:
        transport.store[f"{SITE}/functions/{name}".lower()] = {
            "id": f"{SITE}/functions/{name}",
            "name": f"func-aoai-ingest/{name}",
            "properties": {"config": {}},
        }
    return make_web_clients(SPEC, get_cloud(cloud), SUB, DryRunCredential(), transport), transport


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
    result = deploy(
        the_plan,
        clients,
        credential=DryRunCredential(),
        scm=kudu.url,
        poll_interval=0,
        on_progress=steps.append,
    )
    assert result.settings_updated and result.deployment_status["status"] == 4
    assert any(FUNCTION_NAME in f for f in result.functions)
    # ARM: the cloud's endpoint, the documented paths, the app's other settings kept
    assert {r.host for r in transport.requests} == {HOSTS[cloud]}
    calls = [(r.method, r.path.removeprefix(SITE)) for r in transport.requests]
    assert calls == [
        ("POST", "/config/appsettings/list"),
        ("PUT", "/config/appsettings"),
        ("GET", "/functions"),
    ]
    assert {r.api_version for r in transport.requests} == {"2025-05-01"}
    put = transport.requests[1].body["properties"]
    assert put["MY_OWN_SETTING"] == "keep me" and put["AOAI_EVENTHUB_NAME"] == "aoai-usage"
    assert put["AOAI_DB_URL"] == DB and put["AOAI_EVENTHUB_CONSUMER_GROUP"] == "$Default"
    ns = get_cloud(cloud).eventhub_host("evhns-aoai-usage")
    assert put["AOAI_EVENTHUB__fullyQualifiedNamespace"] == ns
    assert json.loads(put["AOAI_DEPLOYMENT_MODELS"])["gpt-4o"] == "gpt-4o-2024-11-20"
    # Kudu: one upload of exactly the package, with a bearer token, polled until complete
    assert kudu.uploads == [package.read_bytes()]
    assert set(kudu.auth) == {"Bearer dry-run-token"}
    assert kudu.polls == 3 and "deployment succeeded" in steps
    assert (
        scm_url(SPEC, get_cloud(cloud))
        == f"https://func-aoai-ingest.scm.{get_cloud(cloud).scm_suffix}"
    )


def test_unchanged_settings_are_not_written_again(kudu: Kudu, package: Path) -> None:
    clients, transport = _clients()
    first = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    deploy(first, clients, credential=DryRunCredential(), scm=kudu.url, poll_interval=0)
    transport.requests.clear()
    again = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    assert not again.settings_changed and "(no change)" in again.render()
    deploy(again, clients, credential=DryRunCredential(), scm=kudu.url, poll_interval=0)
    assert [r.method for r in transport.requests] == [
        "POST",
        "GET",
    ]  # list settings, list functions


def test_a_failed_deployment_is_a_clear_error(kudu: Kudu, package: Path) -> None:
    kudu.outcome = "failed"
    clients, _ = _clients()
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(
        DeployError,
        match=r"the deployment failed: pip install failed \(log: http://127\.0\.0\.1:\d+/api/deployments/d1/log\)",
    ):
        deploy(the_plan, clients, credential=DryRunCredential(), scm=kudu.url, poll_interval=0)


def test_an_unauthorized_upload_says_what_is_missing(kudu: Kudu, package: Path) -> None:
    kudu.outcome = "unauthorized"
    clients, _ = _clients()
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match=r"refused the upload \(HTTP 401\).*Contributor"):
        deploy(the_plan, clients, credential=DryRunCredential(), scm=kudu.url, poll_interval=0)


def test_a_function_that_is_not_indexed_fails_the_deploy(kudu: Kudu, package: Path) -> None:
    clients, _ = _clients(indexed=())
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match="ingest_usage, reconcile_usage are not indexed"):
        deploy(
            the_plan,
            clients,
            credential=DryRunCredential(),
            scm=kudu.url,
            poll_interval=0,
            index_attempts=2,
        )
    clients, _ = _clients(indexed=(FUNCTION_NAME,))
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match=r"reconcile_usage is not indexed \(functions: "):
        deploy(
            the_plan,
            clients,
            credential=DryRunCredential(),
            scm=kudu.url,
            poll_interval=0,
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
