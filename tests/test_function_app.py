"""The ingestion function: its handler in-process, and the built zip run as the host would.

The bar: *the built zip imports and runs with no network and an empty tiktoken cache*. The zip
is built and unpacked into a temporary ``wwwroot``; a child interpreter runs with ``cwd`` and
``PYTHONPATH`` set to that folder only (the venv's site-packages provide azure-functions,
SQLAlchemy, tiktoken…), sockets disabled before anything is imported, and
``TIKTOKEN_CACHE_DIR`` pointing at an empty folder. The child imports ``function_app``,
inspects what the worker would index, then invokes the user function with real
``azure.functions.EventHubEvent`` batches and reports JSON on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CHAT_MESSAGES, MODEL, encode, new_v2
from sqlalchemy import func as sql_func
from sqlalchemy import select
from sqlalchemy.engine import Engine

from aoai_helpers.azure.functions import build_zip, handle, reset, unpack
from aoai_helpers.azure.functions.handler import event_source
from aoai_helpers.azure.functions.settings import FUNCTION_NAME, RECONCILE_FUNCTION_NAME
from aoai_helpers.core.tokens import count_chat_prompt
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import dead_letter, token_table
from aoai_helpers.exceptions import ConfigError, DatabaseError

func = pytest.importorskip("azure.functions")

ROOT = Path(__file__).resolve().parent.parent

# ============================================================================= in-process


def _hub_events(bodies: list[bytes], *, first_seq: int = 100) -> list[Any]:
    meta = func.meta.Datum(
        json.dumps({"EventHubName": "aoai-usage", "PartitionId": "3", "ConsumerGroup": "ingest"}),
        "json",
    )
    return [
        func.EventHubEvent(
            body=body,
            trigger_metadata={"PartitionContext": meta},
            sequence_number=first_seq + i,
            offset=str(4096 * (first_seq + i)),
            enqueued_time=datetime(2026, 11, 5, 10, 0, tzinfo=UTC),
            partition_key=None,
        )
        for i, body in enumerate(bodies)
    ]


@pytest.fixture
def fresh_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    db = tmp_path / "fn" / "usage.db"
    monkeypatch.setenv("AOAI_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("AOAI_DEPLOYMENT_MODELS", json.dumps({"chat-prod": "gpt-4o"}))
    reset()
    yield db
    reset()


def _count(engine: Engine, table: Any) -> int:
    with transaction(engine) as conn:
        return int(conn.execute(select(sql_func.count()).select_from(table)).scalar_one())


def test_handle_creates_the_schema_stores_the_batch_and_logs_one_line(
    fresh_handler: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = [new_v2() for _ in range(3)]
    bodies = [encode(e) for e in events] + [b"not json"]
    caplog.set_level(logging.INFO, logger="aoai_helpers.azure.functions.handler")
    result = handle(_hub_events(bodies))
    assert (result.received, result.stored, result.dead_lettered) == (4, 3, 1)
    engine = engine_from_url(str(fresh_handler))
    try:
        assert _count(engine, token_table) == 3
        with transaction(engine) as conn:
            source = conn.execute(select(dead_letter.c.Source)).scalar_one()
    finally:
        engine.dispose()
    assert source == "eventhub aoai-usage partition 3 seq 103 offset 421888"
    summaries = [r.getMessage() for r in caplog.records if "received" in r.getMessage()]
    assert summaries == [
        f"{FUNCTION_NAME}: {result.summary()}; partition 3 seq 100..103; "
        + summaries[0].rsplit("; ", 1)[1]
    ]
    assert summaries[0].endswith(" ms")
    schema = [r.getMessage() for r in caplog.records if "created table" in r.getMessage()]
    assert len(schema) == 1 and "seeded" in schema[0], "a new database gets schema and rates"
    for content in ("not json", "test.user@example.com", events[0]["RequestId"]):
        assert content not in caplog.text


def test_handle_reuses_one_ingestor_and_reset_drops_it(fresh_handler: Path) -> None:
    from aoai_helpers.azure.functions import handler

    handle(_hub_events([encode(new_v2())]))
    first = handler._WORKER
    handle(_hub_events([encode(new_v2())], first_seq=200))
    assert handler._WORKER is first is not None
    reset()
    assert handler._WORKER is None
    assert handle([]).received == 0
    assert handler._WORKER is None, "an empty batch opens nothing"


def test_a_bad_database_url_raises_and_is_not_cached(
    fresh_handler: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aoai_helpers.azure.functions import handler

    monkeypatch.setenv("AOAI_DB_URL", "nosuchdialect://user:s3cret@host/db")
    with pytest.raises(ConfigError) as info:
        handle(_hub_events([encode(new_v2())]))
    assert "s3cret" not in str(info.value)
    assert handler._WORKER is None
    monkeypatch.setenv("AOAI_DB_URL", f"sqlite:///{fresh_handler}")
    assert handle(_hub_events([encode(new_v2())])).stored == 1


def test_a_database_failure_raises_without_the_driver_details(
    fresh_handler: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handle(_hub_events([encode(new_v2())]))
    engine = engine_from_url(str(fresh_handler))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER db_down BEFORE INSERT ON ApimAoaiToken "
                "BEGIN SELECT RAISE(ABORT, 'db down'); END"
            )
        event = new_v2(UserEmail="private.person@example.com")
        with pytest.raises(DatabaseError, match="db down") as info:
            handle(_hub_events([encode(event), b"{broken"], first_seq=500))
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert _count(engine, token_table) == 1
        assert _count(engine, dead_letter) == 0
    finally:
        engine.dispose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "NOT stored" in errors[0].getMessage()
    assert "seq 500..501" in errors[0].getMessage()
    assert "private.person" not in caplog.text and "{broken" not in caplog.text


def test_event_source_leaves_out_what_the_host_did_not_give() -> None:
    bare = func.EventHubEvent(body=b"{}")
    assert event_source(bare) == "eventhub"
    one = func.EventHubEvent(body=b"{}", sequence_number=7, offset="99")
    assert event_source(one, partition="0") == "eventhub partition 0 seq 7 offset 99"
    assert len(event_source(one, hub="h" * 300)) == 200


# ============================================================================= the reconcile timer

WORKSPACE_GUID = "2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11"


def _timer_env(db: Path, **extra: str) -> dict[str, str]:
    """The reconcile app settings (the database is the worker's: AOAI_DB_URL, fresh_handler)."""
    return {
        "AOAI_CLOUD": "AzureChinaCloud",
        "AOAI_LLM_LOG_WORKSPACE_ID": WORKSPACE_GUID,
        "AOAI_LLM_LOG_CORRELATION_COLUMN": "CorrelationId",
        "AOAI_RECONCILE_SCHEDULE": "0 */10 * * * *",
        "AOAI_RECONCILE_GRACE_HOURS": "6.0",
        "AOAI_RECONCILE_LOOKBACK_MINUTES": "60",
        **extra,
    }


def _prompt_only_call(db: Path) -> dict[str, Any]:
    """One pass-through stream ingested by the function (prompt-only), ten minutes ago."""
    from aoai_helpers import clock

    started = clock.utcnow() - timedelta(minutes=10)
    event = new_v2(
        ExecTimeUTC=started.strftime("%Y-%m-%dT%H:%M:%S.") + f"{started.microsecond // 1000:03d}Z",
        IsStreaming=True,
        Usage=None,
        Request={"messages": CHAT_MESSAGES, "stream": True},
    )
    assert handle(_hub_events([encode(event)])).stored == 1
    return event


def _row(db: Path, request_id: str) -> dict[str, Any]:
    engine = engine_from_url(f"sqlite:///{db}")
    try:
        with transaction(engine) as conn:
            return dict(
                conn.execute(select(token_table).where(token_table.c.RequestId == request_id))
                .mappings()
                .one()
            )
    finally:
        engine.dispose()


def test_the_reconcile_timer_upgrades_a_prompt_only_row(
    fresh_handler: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from loganalytics_fake import FakeCredential, LogAnalyticsFake, llm_row

    from aoai_helpers.azure.functions.handler import reconcile_timer

    event = _prompt_only_call(fresh_handler)
    assert _row(fresh_handler, event["RequestId"])["UsageSource"] == "prompt_only"
    # AOAI_CLOUD=AzureChinaCloud: the fake only answers on that cloud's endpoint
    fake = LogAnalyticsFake("https://api.loganalytics.azure.cn", WORKSPACE_GUID)
    started = datetime.fromisoformat(event["ExecTimeUTC"].replace("Z", "+00:00"))
    fake.add([llm_row(event["RequestId"], started, prompt=9, completion=321, total=330)])
    credential = FakeCredential()
    caplog.set_level(logging.INFO, logger="aoai_helpers.azure.functions.handler")
    result = reconcile_timer(env=_timer_env(fresh_handler), credential=credential, transport=fake)
    assert result is not None and result.upgraded == 1
    row = _row(fresh_handler, event["RequestId"])
    assert (row["UsageSource"], row["CompletionTokens"], row["TotalTokens"]) == (
        "reconciled",
        321,
        330,
    )
    assert set(credential.scopes) == {("https://api.loganalytics.azure.cn/.default",)}
    assert fake.problems == []
    lines = [
        r.getMessage() for r in caplog.records if r.name == "aoai_helpers.azure.functions.handler"
    ]
    summary = [m for m in lines if m.startswith(f"{RECONCILE_FUNCTION_NAME}: ")]
    assert len(summary) == 1 and result.summary() in summary[0]
    assert credential.token not in caplog.text


def test_the_reconcile_timer_without_a_workspace_does_nothing(
    fresh_handler: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aoai_helpers.azure.functions.handler import reconcile_timer

    env = _timer_env(fresh_handler)
    del env["AOAI_LLM_LOG_WORKSPACE_ID"]
    caplog.set_level(logging.INFO, logger="aoai_helpers.azure.functions.handler")
    assert reconcile_timer(env=env, credential=object(), transport=object()) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "AOAI_LLM_LOG_WORKSPACE_ID is not set" in warnings[0].getMessage()


def test_a_failing_reconcile_run_raises_one_line_and_changes_nothing(
    fresh_handler: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from loganalytics_fake import FakeCredential, LogAnalyticsFake

    from aoai_helpers.azure.functions.handler import reconcile_timer
    from aoai_helpers.exceptions import ReconcileError

    event = _prompt_only_call(fresh_handler)
    fake = LogAnalyticsFake("https://api.loganalytics.azure.cn", WORKSPACE_GUID)
    fake.fail_next(1, "forbidden")
    with pytest.raises(ReconcileError, match="Log Analytics Reader") as err:
        reconcile_timer(env=_timer_env(fresh_handler), credential=FakeCredential(), transport=fake)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert _row(fresh_handler, event["RequestId"])["UsageSource"] == "prompt_only"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(
        f"{RECONCILE_FUNCTION_NAME}: nothing reconciled"
    )


def test_bad_reconcile_settings_are_one_line(fresh_handler: Path) -> None:
    from aoai_helpers.azure.functions.handler import reconcile_timer

    env = _timer_env(fresh_handler, AOAI_RECONCILE_GRACE_HOURS="soon")
    with pytest.raises(ConfigError, match="AOAI_RECONCILE_GRACE_HOURS"):
        reconcile_timer(env=env, credential=object(), transport=object())
    with pytest.raises(ConfigError, match="unknown cloud"):
        reconcile_timer(env=_timer_env(fresh_handler, AOAI_CLOUD="Mars"), credential=object())


# ============================================================================= the built zip

CHILD_SCRIPT = r"""
import json
import socket
import sys

NETWORK_ATTEMPTS = []


def _no_network(*args, **kwargs):
    NETWORK_ATTEMPTS.append(repr(args[1:] if args else kwargs)[:200])
    raise OSError("network access is disabled in this test")


socket.socket.connect = _no_network
socket.socket.connect_ex = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network

import inspect
import logging
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

LOG_LINES = []


class _Capture(logging.Handler):
    def emit(self, record):
        if record.name.startswith("aoai_helpers"):
            LOG_LINES.append([record.levelname, record.getMessage()])


logging.getLogger().addHandler(_Capture())
logging.getLogger().setLevel(logging.INFO)

import azure.functions as func
from azure.functions.eventhub import EventHubConverter
from azure.functions.timer import TimerRequest, TimerRequestConverter

import function_app  # the file at the root of the unpacked build
import aoai_helpers

PLAN = json.loads(Path(sys.argv[1]).read_text("utf-8"))
DB = PLAN["db"]
report = {
    "aoai_helpers_file": aoai_helpers.__file__,
    "function_app_file": function_app.__file__,
}

# ------------------------------------------------------------------ what the worker indexes
functions = function_app.app.get_functions()
report["functions"] = [f.get_function_name() for f in functions]
by_name = {f.get_function_name(): f for f in functions}
fn = by_name["ingest_usage"]
report["function_json"] = json.loads(fn.get_function_json())
report["retry"] = fn.get_settings_dict("retry_policy")
user = fn.get_user_function()
annotation = inspect.signature(user).parameters["events"].annotation
report["annotation_is_batch"] = EventHubConverter.check_input_type_annotation(annotation)
timer_fn = by_name["reconcile_usage"]
report["timer_json"] = json.loads(timer_fn.get_function_json())
report["timer_retry"] = timer_fn.get_settings_dict("retry_policy")
timer_annotation = inspect.signature(timer_fn.get_user_function()).parameters["timer"].annotation
report["timer_annotation_ok"] = TimerRequestConverter.check_input_type_annotation(timer_annotation)

# ------------------------------------------------------------------ events
CALLER = {
    "GatewayRegion": "West Europe",
    "GatewayServiceName": "apim-test",
    "SubscriptionId": "sub-test-01",
    "SubscriptionName": "test-subscription",
    "ProductName": "openai-product",
    "UserName": "Test User",
    "UserEmail": "test.user@example.com",
    "ApiName": "Azure OpenAI",
}
MESSAGES = PLAN["messages"]


def v2(**overrides):
    event = {
        "EventVersion": 2,
        "RequestId": str(uuid.uuid4()),
        "ExecTimeUTC": "2026-11-05T10:00:00.123Z",
        **CALLER,
        "OperationId": "ChatCompletions_Create",
        "Operation": "chat",
        "DeploymentName": "gpt-4o",
        "ApiVersion": "2024-10-21",
        "IsStreaming": False,
        "StatusCode": 200,
        "Model": "gpt-4o-2024-11-20",
        "Usage": {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        },
        "Request": None,
        "ResponseString": None,
    }
    event.update(overrides)
    return event


def sse(*texts):
    def chunk(delta):
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-2024-11-20",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        return "data: " + json.dumps(body) + "\n\n"

    parts = [chunk({"role": "assistant", "content": ""})]
    parts += [chunk({"content": t}) for t in texts]
    return "".join(parts) + "data: [DONE]\n\n"


def estimated_stream():  # pass-through stream, body captured, no usage chunk
    request = {"messages": MESSAGES, "stream": True}
    return v2(IsStreaming=True, Usage=None, Request=request,
              ResponseString=sse("Hello! How can", " I help you today?"))


def prompt_only_stream():  # pass-through stream, nothing of the response, model from the map
    request = {"messages": MESSAGES, "stream": True}
    return v2(IsStreaming=True, Usage=None, Request=request, Model=None,
              DeploymentName="chat-prod")


def body(event):
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


PARTITION = func.meta.Datum(
    json.dumps({"EventHubName": "aoai-usage", "PartitionId": "0", "ConsumerGroup": "ingest"}),
    "json",
)
SEQ = [0]


def hub_batch(bodies):
    out = []
    for raw in bodies:
        seq = SEQ[0]
        SEQ[0] += 1
        out.append(func.EventHubEvent(
            body=raw,
            trigger_metadata={"PartitionContext": PARTITION},
            sequence_number=seq,
            offset=str(1000 + 512 * seq),
            enqueued_time=datetime.now(timezone.utc),
            partition_key=None,
        ))
    return out


def rows():
    con = sqlite3.connect(DB)
    try:
        return [list(r) for r in con.execute("SELECT * FROM ApimAoaiToken ORDER BY Id")]
    finally:
        con.close()


def dead():
    con = sqlite3.connect(DB)
    try:
        cur = con.execute("SELECT Source, Reason, RequestId, RawBody FROM IngestDeadLetter ORDER BY Id")
        return [[s, r, q, b.decode("utf-8", "replace")] for s, r, q, b in cur]
    finally:
        con.close()


def by_request():
    con = sqlite3.connect(DB)
    con.row_factory = sqlite3.Row
    try:
        return {r["RequestId"]: dict(r) for r in con.execute("SELECT * FROM ApimAoaiToken")}
    finally:
        con.close()


# ------------------------------------------------------------------ 1. a batch, and its redelivery
reported = [v2() for _ in range(12)]
estimated = [estimated_stream() for _ in range(3)]
prompt_only = [prompt_only_stream() for _ in range(3)]
calls = reported + estimated + prompt_only
first = [body(e) for e in calls] + [body(reported[0]), body(estimated[0])]  # 2 in-batch dups
batch1 = hub_batch(first)
user(batch1)
rows1 = rows()
stored = by_request()
report["batch1"] = {
    "events": len(first),
    "distinct_calls": len(calls),
    "rows": len(rows1),
    "request_ids_match": sorted(stored) == sorted(e["RequestId"] for e in calls),
    "estimated": [[stored[e["RequestId"]][k] for k in ("UsageSource", "PromptTokens",
                   "CompletionTokens", "EstimateEncoding", "ModelName")] for e in estimated],
    "prompt_only": [[stored[e["RequestId"]][k] for k in ("UsageSource", "PromptTokens",
                     "CompletionTokens", "EstimateEncoding", "ModelName")] for e in prompt_only],
    "reported_sources": sorted({stored[e["RequestId"]]["UsageSource"] for e in reported}),
}
user(batch1)  # redelivered: a crash between commit and checkpoint
report["redelivery_unchanged"] = rows() == rows1
report["rows_after_redelivery"] = len(rows())

# ------------------------------------------------------------------ 2. poison bodies
good = [v2() for _ in range(5)]
truncated = body(v2())[:60]
wrong_types = [
    body(v2(IsStreaming="yes")),
    body(v2(Usage={"prompt_tokens": "many"})),
    body(v2(RequestId=12345)),
]
poison = [b"this is not JSON", truncated] + wrong_types
mixed = [body(good[0]), poison[0], body(good[1]), poison[1], body(good[2])]
mixed += [poison[2], body(good[3]), poison[3], poison[4], body(good[4])]
before = len(rows())
user(hub_batch(mixed))
stored = by_request()
letters = dead()
report["poison"] = {
    "new_rows": len(rows()) - before,
    "good_stored": all(e["RequestId"] in stored for e in good),
    "dead_letters": len(letters),
    "poison_count": len(poison),
    "bodies_kept": sorted(d[3] for d in letters) == sorted(p.decode() for p in poison),
    "reasons": [d[1] for d in letters],
    "sources": [d[0] for d in letters],
}

# ------------------------------------------------------------------ 3. the database fails
con = sqlite3.connect(DB)
con.execute("CREATE TRIGGER db_down BEFORE INSERT ON ApimAoaiToken "
            "BEGIN SELECT RAISE(ABORT, 'db down'); END")
con.commit()
con.close()
rows_before, dead_before = rows(), dead()
failing = hub_batch([body(v2()) for _ in range(4)] + [b"{also poison"])
try:
    user(failing)
except Exception as exc:
    report["failure"] = {"raised": type(exc).__name__, "message": str(exc)}
else:
    report["failure"] = {"raised": None}
report["failure"]["rows_unchanged"] = rows() == rows_before
report["failure"]["dead_unchanged"] = dead() == dead_before
con = sqlite3.connect(DB)
con.execute("DROP TRIGGER db_down")
con.commit()
con.close()
user(failing)  # the retry policy runs the same batch again once the database is back
report["failure"]["retry_new_rows"] = len(rows()) - len(rows_before)
report["failure"]["retry_new_dead"] = len(dead()) - len(dead_before)

# ------------------------------------------------------------------ 4. CPU for 1,000 events
user(hub_batch([body(v2()) for _ in range(1000)]))  # warm-up
timed = hub_batch([body(v2()) for _ in range(1000)])
count_before = len(rows())
cpu0, wall0 = time.process_time(), time.perf_counter()
user(timed)
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
report["perf"] = {"events": len(timed), "stored": len(rows()) - count_before,
                  "cpu_s": cpu, "wall_s": wall}

# ------------------------------------------------------------------ 5. the timer, no workspace set
before_timer = len(LOG_LINES)
report["timer_returned"] = repr(timer_fn.get_user_function()(TimerRequest(past_due=False)))
report["timer_log_lines"] = LOG_LINES[before_timer:]

report["log_lines"] = LOG_LINES
report["network_attempts"] = NETWORK_ATTEMPTS
print(json.dumps(report))
"""


def _child_env(app_dir: Path, tiktoken_cache: Path, db: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AOAI_", "AZURE_", "PYTHON", "TIKTOKEN_", "DATA_GYM_"))
    }
    env.update(
        PYTHONPATH=str(app_dir),  # the unpacked build only: not the repository
        PYTHONDONTWRITEBYTECODE="1",
        TIKTOKEN_CACHE_DIR=str(tiktoken_cache),
        AOAI_DB_URL=f"sqlite:///{db}",
        AOAI_EVENTHUB_NAME="aoai-usage",
        AOAI_EVENTHUB_CONSUMER_GROUP="ingest",
        AOAI_DEPLOYMENT_MODELS=json.dumps({"chat-prod": "gpt-4o"}),
    )
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build, unpack and run the function once; the tests below read its report."""
    base = tmp_path_factory.mktemp("function")
    built = build_zip(base / "dist")
    app_dir = unpack(built.path, base / "wwwroot")
    cache = base / "tiktoken-cache"
    cache.mkdir()
    db = base / "data" / "f.db"
    script = base / "child" / "run_function.py"
    script.parent.mkdir()
    script.write_text(CHILD_SCRIPT, "utf-8")
    plan = base / "child" / "plan.json"
    plan.write_text(json.dumps({"db": str(db), "messages": CHAT_MESSAGES}), "utf-8")
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), str(plan)],
        cwd=app_dir,
        env=_child_env(app_dir, cache, db),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["_app_dir"] = str(app_dir)
    report["_cache_after"] = sorted(p.name for p in cache.iterdir())
    report["_pycache"] = [str(p) for p in app_dir.rglob("__pycache__")]
    print(f"\nfunction: CPU for 1,000 v2 events: {report['perf']['cpu_s'] * 1000:.0f} ms")
    return report


def test_the_build_is_what_runs_offline(run: dict[str, Any]) -> None:
    app_dir = Path(run["_app_dir"])
    assert Path(run["aoai_helpers_file"]).resolve().is_relative_to(app_dir)
    assert not Path(run["aoai_helpers_file"]).resolve().is_relative_to(ROOT)
    assert Path(run["function_app_file"]).resolve() == app_dir / "function_app.py"
    assert run["network_attempts"] == []
    assert run["_cache_after"] == [], "tiktoken must not download or cache anything"
    assert run["_pycache"] == []


def test_the_worker_indexes_one_event_hubs_function_with_a_retry_policy(
    run: dict[str, Any],
) -> None:
    assert run["functions"] == [FUNCTION_NAME, RECONCILE_FUNCTION_NAME]
    (binding,) = run["function_json"]["bindings"]
    assert binding["type"] == "eventHubTrigger"
    assert binding["direction"].lower() == "in"
    assert binding["name"] == "events"
    assert binding["cardinality"].lower() == "many"
    assert binding["dataType"].lower() == "binary"
    assert binding["eventHubName"] == "%AOAI_EVENTHUB_NAME%"
    assert binding["consumerGroup"] == "%AOAI_EVENTHUB_CONSUMER_GROUP%"
    assert binding["connection"] == "AOAI_EVENTHUB"
    assert run["retry"] == {
        "setting_name": "retry_policy",
        "strategy": "exponential_backoff",
        "max_retry_count": "-1",
        "minimum_interval": "00:00:05",
        "maximum_interval": "00:15:00",
    }
    assert run["annotation_is_batch"] is True


def test_rows_stored_are_the_distinct_calls(run: dict[str, Any]) -> None:
    b = run["batch1"]
    assert b["events"] == b["distinct_calls"] + 2
    assert b["rows"] == b["distinct_calls"]
    assert b["request_ids_match"]
    assert b["reported_sources"] == ["reported"]


def test_streams_without_usage_are_counted_offline_with_tiktoken(run: dict[str, Any]) -> None:
    prompt = count_chat_prompt({"messages": CHAT_MESSAGES}, MODEL).tokens
    assert prompt > 0
    for source, p, c, enc, model in run["batch1"]["estimated"]:
        assert (source, p, enc, model) == ("estimated", prompt, "o200k_base", "gpt-4o")
        assert c > 0
    for source, p, c, enc, model in run["batch1"]["prompt_only"]:
        # No model in the event: AOAI_DEPLOYMENT_MODELS maps chat-prod to gpt-4o.
        assert (source, p, c, enc, model) == ("prompt_only", prompt, 0, "o200k_base", "gpt-4o")


def test_a_redelivered_batch_stores_nothing_new(run: dict[str, Any]) -> None:
    assert run["redelivery_unchanged"] is True
    assert run["rows_after_redelivery"] == run["batch1"]["rows"]


def test_poison_bodies_are_dead_lettered_and_the_good_events_stored(run: dict[str, Any]) -> None:
    p = run["poison"]
    assert p["good_stored"] and p["new_rows"] == 5
    assert p["dead_letters"] == p["poison_count"] == 5
    assert p["bodies_kept"]
    reasons = " | ".join(p["reasons"])
    for expected in ("not JSON", "IsStreaming", "prompt_tokens", "RequestId"):
        assert expected in reasons
    assert all(r for r in p["reasons"])
    assert all(s.startswith("eventhub aoai-usage partition 0 seq ") for s in p["sources"])


def test_a_database_failure_raises_and_rolls_the_whole_batch_back(run: dict[str, Any]) -> None:
    f = run["failure"]
    assert f["raised"] == "DatabaseError"
    assert "db down" in f["message"]
    assert f["rows_unchanged"] and f["dead_unchanged"]
    # Once the database is back, the retried batch goes through in full.
    assert (f["retry_new_rows"], f["retry_new_dead"]) == (4, 1)


def test_each_batch_logs_one_summary_line_and_no_event_content(run: dict[str, Any]) -> None:
    lines = run["log_lines"]
    summaries = [m for level, m in lines if level == "INFO" and " received: " in m]
    # batch 1, its redelivery, the poison batch, the retry, warm-up, timed batch
    assert len(summaries) == 6
    assert all(m.startswith(f"{FUNCTION_NAME}: ") and m.endswith(" ms") for m in summaries)
    assert "20 received: 18 stored, 2 duplicates, 0 dead-lettered" in summaries[0]
    assert "partition 0 seq 0..19" in summaries[0]
    assert "20 received: 0 stored, 20 duplicates" in summaries[1]
    errors = [m for level, m in lines if level == "ERROR"]
    assert len(errors) == 1 and "NOT stored" in errors[0] and "db down" in errors[0]
    text = json.dumps(lines)
    for leaked in ("test.user@example.com", "Hello! How can", "this is not JSON", "sk-"):
        assert leaked not in text


def test_a_batch_of_1000_events_is_stored_in_one_call(run: dict[str, Any]) -> None:
    # its CPU time is measured by benchmarks/function.py (make bench), not asserted here
    perf = run["perf"]
    assert perf["stored"] == perf["events"] == 1000


def test_the_template_only_declares(run: dict[str, Any]) -> None:
    source = (ROOT / "aoai_helpers/azure/functions/template/function_app.py").read_text("utf-8")
    ingest = source.split("def ingest_usage", 1)[1].split("\n\n\n", 1)[0]
    assert [line.strip() for line in ingest.strip().splitlines()[1:]] == ["handle(events)"]
    timer = source.split("def reconcile_usage", 1)[1]
    assert [line.strip() for line in timer.strip().splitlines()[1:]] == ["reconcile_timer()"]


def test_the_timer_binding_is_what_the_timer_trigger_docs_describe(run: dict[str, Any]) -> None:
    # Timer trigger for Azure Functions (functions-bindings-timer): type timerTrigger, direction
    # in, schedule (an NCRONTAB, or "%AppSetting%" naming an app setting holding one),
    # runOnStartup ("should rarely if ever be set to true"), useMonitor.
    (binding,) = run["timer_json"]["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["direction"].lower() == "in"
    assert binding["name"] == "timer"
    assert binding["schedule"] == "%AOAI_RECONCILE_SCHEDULE%"
    assert binding["runOnStartup"] is False
    assert binding["useMonitor"] is True
    assert run["timer_retry"] is None  # a failed run changed nothing; the next tick retries
    assert run["timer_annotation_ok"] is True


def test_the_timer_without_a_workspace_warns_once_and_returns(run: dict[str, Any]) -> None:
    assert run["timer_returned"] == "None"
    assert run["timer_log_lines"] == [
        [
            "WARNING",
            f"{RECONCILE_FUNCTION_NAME}: AOAI_LLM_LOG_WORKSPACE_ID is not set: no language-model "
            "log to reconcile (set llm_log.workspace_id in the spec and run function deploy)",
        ]
    ]
    assert run["network_attempts"] == []
