"""``function deploy --plan`` and ``consume`` from the command line (subprocesses, no network)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from cli_run import clean_env, run_cli
from conftest import new_v2
from secrets_registry import register_secret
from sqlalchemy import func, select
from waiting import stored_rows, wait_until

from aoai_helpers.eventhub import LocalEventLog
from aoai_helpers.store import engine_from_url, token_table

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
    assert (
        "AOAI_EVENTHUB__fullyQualifiedNamespace" in out.stdout
        and "evhns-aoai-usage.servicebus.windows.net" in out.stdout
    )
    assert list((tmp_path / "dist").glob("aoai-ingest-*.zip"))


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
