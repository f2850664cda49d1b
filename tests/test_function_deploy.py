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
from aoai_helpers.functions.settings import FUNCTION_NAME
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
    cloud: str = "AzureCloud", indexed: bool = True, existing: dict[str, str] | None = None
) -> tuple[Any, DryRunTransport]:
    transport = DryRunTransport()
    if existing is not None:
        transport.store[f"{SITE}/config/appsettings".lower()] = {"properties": dict(existing)}
    if indexed:
        transport.store[f"{SITE}/functions/{FUNCTION_NAME}".lower()] = {
            "id": f"{SITE}/functions/{FUNCTION_NAME}",
            "name": f"func-aoai-ingest/{FUNCTION_NAME}",
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
    clients, _ = _clients(indexed=False)
    the_plan = plan_deploy(SPEC, clients=clients, db_url=DB, zip_path=package)
    with pytest.raises(DeployError, match="ingest_usage is not indexed"):
        deploy(
            the_plan,
            clients,
            credential=DryRunCredential(),
            scm=kudu.url,
            poll_interval=0,
            index_attempts=2,
        )


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
