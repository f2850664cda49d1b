"""``function deploy --plan`` and ``consume`` from the command line (subprocesses, no network)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_run import clean_env, run_cli
from conftest import new_v2
from secrets_registry import record_output, register_secret
from sqlalchemy import func, select
from waiting import stored_rows, wait_until

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.tables import token_table
from aoai_helpers.eventlog.eventhub import LocalEventLog

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "examples" / "gateway.yaml")


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env=env, timeout=180)


def _count(db: str) -> int:
    engine = engine_from_url(db)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(token_table)).scalar_one())
    finally:
        engine.dispose()


def test_function_deploy_plan_offline_masks_the_database_password(tmp_path: Path) -> None:
    db = "postgresql+psycopg://ingest:Sup3rSecretPassw0rd@pg.example.org/aoai"
    register_secret("Sup3rSecretPassw0rd")
    out = _cli(
        "function",
        "deploy",
        "--plan",
        "--offline",
        "--spec",
        SPEC,
        "--db",
        db,
        "--out",
        str(tmp_path / "dist"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "Sup3rSecret" not in out.stdout and "AOAI_DB_URL" in out.stdout
    assert "func-aoai-ingest.scm.azurewebsites.net/api/zipdeploy?isAsync=true" in out.stdout
    # offline, the hosting plan is unknown: the plan says what Flex Consumption would change
    assert "hosting plan: unknown (offline" in out.stdout
    assert "func-aoai-ingest.scm.azurewebsites.net/api/publish?RemoteBuild=true" in out.stdout
    # the function identity's role, with the command that grants it
    assert "'Azure Event Hubs Data Receiver'" in out.stdout
    assert "az role assignment create --assignee-object-id <principal id>" in out.stdout
    assert (
        "AOAI_EVENTHUB__fullyQualifiedNamespace" in out.stdout
        and "evhns-aoai-usage.servicebus.windows.net" in out.stdout
    )
    assert list((tmp_path / "dist").glob("aoai-ingest-*.zip"))


def test_function_build_writes_the_specs_max_batch_size(tmp_path: Path) -> None:
    spec = tmp_path / "gateway.yaml"
    text = Path(SPEC).read_text("utf-8")
    assert "  max_batch_size: 500\n" in text
    spec.write_text(text.replace("  max_batch_size: 500\n", "  max_batch_size: 64\n"), "utf-8")
    out = _cli(
        "function", "build", "--spec", str(spec), "--out", str(tmp_path / "dist"), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "maxEventBatchSize 64 (the spec's function.max_batch_size)" in out.stdout
    (built,) = (tmp_path / "dist").glob("aoai-ingest-*.zip")
    with zipfile.ZipFile(built) as zf:
        host = json.loads(zf.read("host.json"))
    assert host["extensions"]["eventHubs"]["maxEventBatchSize"] == 64


def test_function_deploy_refuses_a_sqlite_database(tmp_path: Path) -> None:
    out = _cli("function", "deploy", "--plan", "--offline", "--spec", SPEC, cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.startswith(
        "error: the function needs a server database"
    )
    assert "Traceback" not in out.stderr


def _events(n: int) -> list[bytes]:
    """``n`` distinct v2 calls (conftest's factory: reported usage 100/50/150)."""
    return [json.dumps(new_v2()).encode() for _ in range(n)]


def test_consume_local_until_idle(tmp_path: Path) -> None:
    state = tmp_path / "state"
    producer = LocalEventLog(state / "events").producer()
    producer.send(_events(120))
    producer.close()
    db = f"sqlite:///{tmp_path / 'c.db'}"
    args = (
        "consume",
        "--local",
        "--until-idle",
        "--spec",
        SPEC,
        "--state-dir",
        str(state),
        "--db",
        db,
        "--batch-size",
        "50",
    )
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "stopped: 3 batches, 120 received: 120 stored" in out.stdout
    assert _count(db) == 120
    again = _cli(*args, cwd=tmp_path)  # checkpointed: nothing is read twice
    assert "stopped: 0 batches" in again.stdout and _count(db) == 120


def test_consume_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = f"sqlite:///{tmp_path / 'c.db'}"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aoai_helpers",
            "consume",
            "--local",
            "--spec",
            SPEC,
            "--state-dir",
            str(state),
            "--db",
            db,
        ],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            producer = LocalEventLog(state / "events").producer()
            producer.send(_events(40))
            producer.close()
            # the table exists *and* holds every event (the file exists before its tables)
            wait_until(lambda: stored_rows(db) == 40, 120, "the consumer to store 40 rows")
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
    assert "stopped:" in stdout and _count(db) == 40
    log: Any = LocalEventLog(state / "events")
    assert log.checkpoint_of() == 39 and log.lag() == 0


def _consume_process(state: Path, db: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aoai_helpers",
            "consume",
            "--local",
            "--spec",
            SPEC,
            "--state-dir",
            str(state),
            "--db",
            db,
            *extra,
        ],
        cwd=state.parent,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_consume_holds_and_retries_while_the_database_cannot_be_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    producer = LocalEventLog(state / "events").producer()
    producer.send(_events(25))
    producer.close()
    blocker = tmp_path / "c.db"
    blocker.mkdir()  # SQLite cannot open a directory: "unable to open database file"
    db = f"sqlite:///{blocker}"
    with _consume_process(state, db, "--until-idle") as proc:
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # one line per failed attempt, the first one now
            assert first.startswith(f"database {db} cannot be opened: attempt 1 failed"), first
            assert "DatabaseError" in first and "(Ctrl-C stops)" in first
            blocker.rmdir()  # the database comes back
            stdout, rest = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    stderr = first + rest
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    failures = [line for line in stderr.splitlines() if "cannot be opened" in line]
    assert len(failures) == len(stderr.splitlines())  # nothing else on stderr
    assert "stopped: 1 batches, 25 received: 25 stored" in stdout
    assert _count(db) == 25


def test_sigterm_stops_the_wait_for_the_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    blocker = tmp_path / "c.db"
    blocker.mkdir()
    with _consume_process(state, f"sqlite:///{blocker}") as proc:
        try:
            assert proc.stderr is not None
            assert "cannot be opened" in proc.stderr.readline()
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=30)  # not after the backoff: at once
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stdout == "stopped before the database could be opened: nothing consumed\n"


@pytest.fixture
def kudu() -> Iterator[Any]:
    import test_function_deploy as fd

    yield from fd.kudu_server()


def test_function_deploy_never_prints_values_of_settings_it_does_not_own(
    tmp_path: Path, monkeypatch: Any, capsys: Any, kudu: Any
) -> None:
    """`function deploy --plan`, then `--yes`, on a Flex app holding a storage key and a SAS
    URL in settings it removes or keeps: the CLI's whole output (plan, progress, result) has
    none of them. The registered secrets are also scanned at the end of the session."""
    import test_function_deploy as fd

    from aoai_helpers.azure.dryrun import DryRunCredential
    from aoai_helpers.azure.functions import deploy as deploy_mod
    from aoai_helpers.cli import azure as cli_azure
    from aoai_helpers.cli import main as cli
    from aoai_helpers.clouds import get_cloud

    _, transport = fd._clients(site=fd.flex_site(), existing=dict(fd.SETTINGS_OF_OTHERS))
    real = deploy_mod.make_web_clients
    monkeypatch.setattr(
        cli_azure,
        "sign_in",
        lambda spec, args: (get_cloud("AzureCloud"), fd.SUB, DryRunCredential()),
    )
    monkeypatch.setattr(
        deploy_mod,
        "make_web_clients",
        lambda spec, cloud, sub, cred: real(spec, cloud, sub, cred, transport),
    )
    monkeypatch.setattr(deploy_mod, "scm_url", lambda *a, **k: kudu.url)
    package = tmp_path / "aoai-ingest.zip"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("function_app.py", "# test package\n")
    base = ("function", "deploy", "--spec", SPEC, "--db", fd.DB, "--zip", str(package))
    outputs = []
    for extra in (
        ("--plan",),
        ("--plan", "--keep-setting", "WEBSITE_RUN_FROM_PACKAGE"),
        ("--yes",),
    ):
        status = cli.main([*base, *extra])
        out = capsys.readouterr()
        outputs.append(out.out + out.err)
        assert status == 0, out.err
    text = "\n".join(outputs)
    record_output("cli function deploy (Flex, settings of others)", text)
    assert "remove WEBSITE_CONTENTAZUREFILECONNECTIONSTRING" in " ".join(text.split())
    assert "WEBSITE_RUN_FROM_PACKAGE is kept" in text and "deployed and indexed" in text
    for secret in fd.SECRETS_OF_OTHERS:
        assert secret not in text and secret[:12] not in text
    assert "func-aoai-ingest-share" not in text and "P4ssw0rd" not in text
    assert any(r.method == "PUT" for r in transport.requests) and kudu.uploads
