"""Local mode end to end over real loopback sockets: the real ``openai`` SDK → gateway →
simulator, events → on-disk log → consumer → SQLite; and the ``local up|status|down`` CLI.
"""

from __future__ import annotations

import stat
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import orjson
import pytest
from cli_run import run_cli
from secrets_registry import record_event_log, record_output, register_secret
from sqlalchemy import func, select
from streams import hang_up_at_first_token
from waiting import wait_until

from aoai_helpers.core.events import V2_FIELDS, load_v2_schema
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.tables import token_table
from aoai_helpers.local.control import read_state
from aoai_helpers.local.stack import LocalStack
from aoai_helpers.spec import Spec, load_spec, parse_spec
from aoai_helpers.synthetic.traffic import azure_client, drive_traffic, v1_client

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")


def _rows(db_url: str) -> list[dict[str, Any]]:
    engine = engine_from_url(db_url)
    try:
        with engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(select(token_table).order_by(token_table.c.Id))
            ]
    finally:
        engine.dispose()


def _with_faults(*faults: dict[str, Any]) -> Spec:
    data = SPEC.model_dump()
    data["local"]["simulator"]["faults"] = list(faults)
    return parse_spec(data)


@pytest.fixture(autouse=True)
def _scan_for_secrets(tmp_path: Path) -> Iterator[None]:
    """After each test: register the keys its stacks used, keep the events they logged."""
    yield
    for keys in tmp_path.rglob("keys.json"):
        data = orjson.loads(keys.read_bytes())
        register_secret(data.get("backend"), *data.get("subscriptions", {}).values())
    for log in tmp_path.rglob("events.log"):
        record_event_log(log.parent, f"{log.parent}")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'usage.db'}"


@pytest.mark.parametrize("capture", ["passthrough", "passthrough_usage", "buffered"])
def test_every_call_is_stored_exactly_once_with_the_right_source(
    capture: str, tmp_path: Path, db_url: str
) -> None:
    with LocalStack(SPEC, db_url=db_url, capture=capture, state_dir=tmp_path / "state") as stack:  # type: ignore[arg-type]
        calls = drive_traffic(stack.info, SPEC, rounds=1)
        assert stack.wait_reconciled(timeout=60) is not None
        records = list(stack.simulator.records)  # type: ignore[union-attr]
        audit = stack.event_log.consumer("audit")  # a second consumer group sees every event
        logged = audit.receive(1000, 1.0)
        audit.close()
    schema = load_v2_schema()
    for event in logged:  # what the gateway logged is exactly the contract (§3)
        parsed = orjson.loads(event.body)
        jsonschema.validate(parsed, schema)
        assert tuple(parsed) == V2_FIELDS
    rows = _rows(db_url)
    assert len(logged) == len(rows)
    assert len(calls) == len(records) == len(rows) == 7 * len(SPEC.subscriptions)
    assert len({r["RequestId"] for r in rows}) == len(rows)
    expected = Counter()
    for call in calls:
        if call.stream and capture != "buffered":  # the event cannot carry a streamed usage
            expected["reconciled"] += 1
        else:
            expected["reported"] += 1
    assert Counter(r["UsageSource"] for r in rows) == expected
    # row by row (calls are sequential, so rows and simulator records are in the same order):
    # the tokens billed equal what the simulator served, in every capture mode
    for row, record in zip(rows, records, strict=True):
        usage = record.usage
        assert usage is not None and row["DeploymentName"] == record.deployment
        assert row["PromptTokens"] == usage["prompt_tokens"], (row, record)
        assert row["CompletionTokens"] == usage["completion_tokens"], (row, record)
        if row["UsageSource"] == "reconciled":  # what it had before is kept beside
            assert (row["PriorUsageSource"], row["PriorCompletionTokens"]) == ("prompt_only", 0)
            assert row["PriorPromptTokens"] == usage["prompt_tokens"]
            assert row["ReconciledAtUTC"] is not None
        else:
            assert row["PriorUsageSource"] is None and row["ReconciledAtUTC"] is None
    # the usage the client saw is the usage billed (streams: when the client got a usage chunk)
    client_seen = sorted(c.usage["total_tokens"] for c in calls if c.usage)
    assert set(client_seen) <= {r["TotalTokens"] for r in rows}
    by_sub = Counter(r["SubscriptionId"] for r in rows)
    assert by_sub == {s.id: 7 for s in SPEC.subscriptions}
    # every row is priced under the deployment's model (normalised: gpt-4o-2024-11-20 → gpt-4o)
    models = {d: normalize_model(m).name for d, m in SPEC.deployment_models().items()}
    assert all(r["ModelName"] == models[r["DeploymentName"]] for r in rows)
    assert all(r["Cost"] is not None and r["Cost"] > 0 for r in rows if r["TotalTokens"])


def test_a_wrong_key_stores_nothing(tmp_path: Path, db_url: str) -> None:
    with LocalStack(SPEC, db_url=db_url, state_dir=tmp_path / "state") as stack:
        client = azure_client(stack.info, "x" * 32)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        client.close()
        assert stack.wait_ingested()
        assert stack.simulator.records == []  # type: ignore[union-attr]
    assert _rows(db_url) == []


def test_state_file_is_private_and_keys_survive_a_restart(tmp_path: Path, db_url: str) -> None:
    state = tmp_path / "state"
    with LocalStack(SPEC, db_url=db_url, state_dir=state) as stack:
        path = state / "stack.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((state / "keys.json").stat().st_mode) == 0o600
        info = read_state(state)
        assert info == stack.info and set(info.keys) == {s.id for s in SPEC.subscriptions}
        first = stack.info.keys
    assert not (state / "stack.json").exists()
    with LocalStack(SPEC, db_url=db_url, state_dir=state) as stack:
        assert stack.info.keys == first


def test_a_consumer_restart_neither_loses_nor_duplicates(tmp_path: Path, db_url: str) -> None:
    state = tmp_path / "state"
    # calls made while no consumer runs stay in the log …
    with LocalStack(SPEC, db_url=db_url, state_dir=state, consumer=False) as stack:
        calls = drive_traffic(stack.info, SPEC)
        assert stack.flush()
    assert _rows(db_url) == []
    # … and are stored by the next consumer, once
    with LocalStack(SPEC, db_url=db_url, state_dir=state) as stack:
        assert stack.wait_ingested()
        more = drive_traffic(stack.info, SPEC)
        assert stack.wait_ingested()
    # a third start finds nothing new; rewinding the checkpoint redelivers, and stores nothing twice
    (state / "events" / "checkpoints").mkdir(exist_ok=True)
    for checkpoint in (state / "events" / "checkpoints").iterdir():
        checkpoint.unlink()
    with LocalStack(SPEC, db_url=db_url, state_dir=state) as stack:
        assert stack.wait_ingested()
        assert stack.event_log.last_sequence_number() + 1 == len(calls) + len(more)
    stats = stack.consumed
    assert stats is not None and stats.result.duplicates == len(calls) + len(more)
    rows = _rows(db_url)
    assert len(rows) == len(calls) + len(more) == len({r["RequestId"] for r in rows})


def test_faults_are_recorded_once_with_their_status(tmp_path: Path, db_url: str) -> None:
    spec = _with_faults({"kind": "rate_limit", "every": 2, "deployments": ["gpt-4o-mini"]})
    with LocalStack(spec, db_url=db_url, state_dir=tmp_path / "state") as stack:
        client = azure_client(stack.info, stack.info.keys["bu-finance"])
        statuses = []
        for _ in range(4):
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
                statuses.append(200)
            except openai.RateLimitError as exc:
                assert exc.response.headers["retry-after-ms"] == "1000"
                statuses.append(429)
        client.close()
        assert stack.wait_ingested()
    rows = _rows(db_url)
    assert sorted(statuses) == sorted(r["StatusCode"] for r in rows) == [200, 200, 429, 429]
    throttled = [r for r in rows if r["StatusCode"] == 429]
    assert all(r["TotalTokens"] == 0 and r["UsageSource"] == "unbilled" for r in throttled)


def test_a_stream_cut_by_the_backend_is_cut_for_the_client_and_logged(
    tmp_path: Path, db_url: str
) -> None:
    spec = _with_faults({"kind": "stream_cut", "cut_after_chunks": 2})
    with LocalStack(spec, db_url=db_url, state_dir=tmp_path / "state") as stack:
        client = azure_client(stack.info, stack.info.keys["bu-finance"])
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for _ in stream:
                pass
        client.close()
        assert stack.wait_reconciled() is not None
        (record,) = stack.simulator.records  # type: ignore[union-attr]
    (row,) = _rows(db_url)
    # what was served before the cut is billed: the prompt and the two chunks' tokens
    assert row["StatusCode"] == 200 and row["UsageSource"] == "reconciled" and record.cut
    assert row["PromptTokens"] == record.usage["prompt_tokens"] > 0  # type: ignore[index]
    assert row["CompletionTokens"] == record.usage["completion_tokens"] > 0  # type: ignore[index]


def test_a_client_that_disconnects_mid_stream_is_still_logged(tmp_path: Path, db_url: str) -> None:
    data = SPEC.model_dump()
    data["local"]["simulator"].update(tokens_per_second=50, max_reply_tokens=40)
    spec = parse_spec(data)
    with LocalStack(spec, db_url=db_url, state_dir=tmp_path / "state") as stack:
        hang_up_at_first_token(stack.info.gateway_url, stack.info.keys["bu-marketing"])
        assert stack.wait_reconciled() is not None
        # the simulator notices the hang-up at its next token
        sim = stack.simulator
        assert sim is not None
        wait_until(lambda: bool(sim.records), 60, "the simulator to record the hung-up stream")
        (record,) = sim.records
    (row,) = _rows(db_url)
    assert row["SubscriptionId"] == "bu-marketing" and row["IsStreaming"] == 1
    assert (
        row["UsageSource"] == "reconciled" and row["PromptTokens"] == record.usage["prompt_tokens"]
    )  # type: ignore[index]
    # billed: at least the token the client got, at most what the simulator sent (the gateway
    # stops reading when the client leaves; a chunk still in flight is not counted)
    assert 1 <= row["CompletionTokens"] <= record.usage["completion_tokens"] < 40  # type: ignore[index]


def test_the_v1_client_with_api_key_header(tmp_path: Path, db_url: str) -> None:
    with LocalStack(SPEC, db_url=db_url, capture="buffered", state_dir=tmp_path / "state") as stack:
        client = v1_client(stack.info, stack.info.keys["bu-rnd"])
        out = client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )
        client.close()
        assert stack.wait_ingested()
    (row,) = _rows(db_url)
    assert row["DeploymentName"] == "gpt-4.1" and row["ApiVersion"] is None
    assert (row["PromptTokens"], row["CompletionTokens"]) == (
        out.usage.prompt_tokens,
        out.usage.completion_tokens,
    )  # type: ignore[union-attr]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    out = run_cli(*args, cwd=cwd)
    for log in cwd.rglob("stack.log"):
        record_output(f"{log}", log.read_bytes())
    return out


def test_local_up_status_down(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    spec = str(ROOT / "examples" / "gateway.yaml")
    up = _cli("local", "up", "--spec", spec, "--db", db, "--capture", "buffered", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        state = tmp_path / ".aoai-local"
        info = read_state(state)
        assert info is not None and info.capture == "buffered"
        for key in info.keys.values():
            assert key not in up.stdout and "****" + key[-4:] in up.stdout
        assert (state / ".gitignore").read_text().strip().endswith("*")
        again = _cli("local", "up", "--spec", spec, cwd=tmp_path)
        assert again.returncode == 1 and "already running" in again.stderr
        client = azure_client(info, info.keys["bu-finance"])
        client.embeddings.create(model="text-embedding-3-small", input="hello")
        client.close()
        status = _cli("local", "status", "--spec", spec, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "gateway up, simulator up" in status.stdout
    finally:
        down = _cli("local", "down", "--spec", spec, cwd=tmp_path)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert read_state(tmp_path / ".aoai-local") is None
    (row,) = _rows(db)  # the call made just before `down` was stored on the way out
    assert row["Operation"] == "embeddings" and row["SubscriptionId"] == "bu-finance"
    after = _cli("local", "status", "--spec", spec, cwd=tmp_path)
    assert (
        "not running" in after.stdout
        and "events logged 1, stored and checkpointed 1" in after.stdout
    )


def test_local_commands_report_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(orjson.dumps({"cloud": "Mars"}).decode(), "utf-8")
    out = _cli("local", "up", "--spec", str(bad), cwd=tmp_path)
    assert out.returncode == 1
    assert (
        out.stderr.startswith("error: ") and "cloud" in out.stderr and "Traceback" not in out.stderr
    )
    assert not (tmp_path / ".aoai-local").exists()


def test_stack_counts(tmp_path: Path, db_url: str) -> None:
    """The database holds the spec's BU map after start (reports group by BU at once)."""
    from aoai_helpers.db.business_units import read_bu_map

    with LocalStack(SPEC, db_url=db_url, state_dir=tmp_path / "s"):
        pass
    engine = engine_from_url(db_url)
    with engine.connect() as conn:
        units = {u.subscription_id: u.business_unit for u in read_bu_map(conn)}
        assert conn.execute(select(func.count()).select_from(token_table)).scalar() == 0
    engine.dispose()
    assert units == {s.id: s.business_unit for s in SPEC.subscriptions}


def test_server_sockets_are_tcp_so_asyncio_sets_nodelay() -> None:
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP; with the
    default proto 0 every keep-alive response waited ~40 ms for the client's delayed ACK."""
    import socket

    from aoai_helpers.local.stack import ServerThread

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    server = ServerThread(app)
    try:
        assert server.sock.proto == socket.IPPROTO_TCP
        accepted_like = socket.socket(server.sock.family, server.sock.type, server.sock.proto)
        try:
            import asyncio.base_events as base

            base._set_nodelay(accepted_like)  # what asyncio does to every accepted socket
            assert accepted_like.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            accepted_like.close()
    finally:
        server.sock.close()
