"""The language-model log on Azure (aoai_helpers.eventlog.llmlog_azure), against an in-memory Log Analytics.

The real azure-monitor-query ``LogsQueryClient`` sends its requests through
``tests/loganalytics_fake.py``: an azure-core transport that checks each request against the
documented REST shape and answers with the documented response shape from a list of rows (it
reads only the request's ``timespan``; the KQL text is recorded, not interpreted). The tests
check what the client *sent* — host, path, body, timespan bounds, the token's scope — against
the pages below, written out as constants here, not derived from the code under test:

- request-format: https://learn.microsoft.com/azure/azure-monitor/logs/api/request-format
  (``POST https://{endpoint}/v1/workspaces/{workspaceId}/query``, JSON body ``query`` +
  ``timespan``, ``Content-Type: application/json``);
- response-format: https://learn.microsoft.com/azure/azure-monitor/logs/api/response-format
  (``tables`` → ``columns`` / ``rows``; ``PartialError`` in a 200 answer);
- access-api: https://learn.microsoft.com/azure/azure-monitor/logs/api/access-api
  (``resource=https://api.loganalytics.io``; the Azure China copy on docs.azure.cn gives
  ``https://api.loganalytics.azure.cn``); US Government ``https://api.loganalytics.us`` comes
  from the Azure SDKs' cloud configuration (no Learn page gives it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loganalytics_fake import FakeCredential, LogAnalyticsFake, llm_row
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from aoai_helpers.clouds import CLOUDS, get_cloud
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import reconcile_state
from aoai_helpers.eventlog.llmlog import TABLE, LlmLogRecord
from aoai_helpers.eventlog.llmlog_azure import LogAnalyticsLlmLog
from aoai_helpers.exceptions import ConfigError, ReconcileError
from aoai_helpers.pipeline.reconcile import reconcile
from aoai_helpers.spec import Reconcile, load_spec, parse_spec

pytest.importorskip("azure.monitor.query")

WORKSPACE = "2bb5a7a0-4c6f-4a0e-8d0a-0f4e3c1b9e11"
#: Query host and token scope per cloud, as the pages above give them.
DOCUMENTED = {
    "AzureCloud": ("api.loganalytics.io", "https://api.loganalytics.io/.default"),
    "AzureChinaCloud": ("api.loganalytics.azure.cn", "https://api.loganalytics.azure.cn/.default"),
    "AzureUSGovernment": ("api.loganalytics.us", "https://api.loganalytics.us/.default"),
}
T0 = datetime(2026, 11, 5, 10, 0, 0)


def _source(
    cloud: str = "AzureCloud", **kw: Any
) -> tuple[LogAnalyticsLlmLog, LogAnalyticsFake, FakeCredential, list[float]]:
    c = get_cloud(cloud)
    fake = LogAnalyticsFake(c.log_analytics_endpoint, WORKSPACE)
    credential = FakeCredential()
    sleeps: list[float] = []
    kw.setdefault("sleep", sleeps.append)
    source = LogAnalyticsLlmLog(WORKSPACE, c, credential, transport=fake, **kw)
    return source, fake, credential, sleeps


# ----------------------------------------------------------------------------- the request


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_the_query_is_the_documented_request_on_each_cloud(cloud: str) -> None:
    source, fake, credential, _ = _source(cloud)
    start, end = T0, T0 + timedelta(hours=1)
    source.fetch(start, end)
    host, scope = DOCUMENTED[cloud]
    (sent,) = fake.requests
    assert fake.problems == []
    assert sent.method == "POST"
    assert sent.host == host and sent.url.startswith(f"https://{host}/")
    assert sent.path == f"/v1/workspaces/{WORKSPACE}/query"  # request-format
    assert (sent.header("Content-Type") or "").startswith("application/json")
    assert sent.header("Authorization") == "Bearer <redacted>"
    assert set(sent.body) <= {"query", "timespan", "workspaces"}
    # the window, in the request's timespan (Basic tables need it there) and in the query
    assert sent.timespan == (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
    query = sent.body["query"]
    assert query.startswith(TABLE + "\n")
    assert "TimeGenerated >= datetime(2026-11-05T10:00:00.000000Z)" in query
    assert "TimeGenerated < datetime(2026-11-05T11:00:00.000000Z)" in query
    assert "| project TimeGenerated, CorrelationId, RequestId, SequenceNumber" in query
    # the token is asked for the cloud's Log Analytics audience (access-api), never ARM's
    assert credential.scopes and set(credential.scopes) == {(scope,)}
    assert source.name == f"log-analytics:{WORKSPACE}"


def test_the_token_is_never_recorded_or_shown() -> None:
    source, fake, credential, _ = _source()
    source.fetch(T0, T0 + timedelta(minutes=10))
    fake.fail_next(1, "forbidden")
    with pytest.raises(ReconcileError) as err:
        source.fetch(T0, T0 + timedelta(minutes=10))
    seen = repr([r.headers for r in fake.requests]) + str(err.value)
    assert credential.token not in seen


def test_a_custom_correlation_column_is_projected_as_correlation_id() -> None:
    source, fake, _, _ = _source(correlation_column="RequestId")
    source.fetch(T0, T0 + timedelta(minutes=10))
    assert "CorrelationId = RequestId" in fake.requests[0].body["query"]
    with pytest.raises(ConfigError, match="not a column name"):
        _source(correlation_column="CorrelationId | take 1")


def test_a_server_timeout_is_the_documented_prefer_header() -> None:
    source, fake, _, _ = _source(server_timeout=120)
    source.fetch(T0, T0 + timedelta(minutes=10))
    assert fake.requests[0].header("Prefer") == "wait=120"  # timeouts: Prefer: wait=…


def test_a_long_window_is_read_in_contiguous_slices() -> None:
    source, fake, _, _ = _source(max_window=timedelta(days=1))
    fake.add(
        [
            llm_row("aaaaaaaa-0000-4000-8000-000000000001", T0, prompt=1, total=1),
            llm_row("aaaaaaaa-0000-4000-8000-000000000002", T0 + timedelta(days=1), prompt=2),
            llm_row("aaaaaaaa-0000-4000-8000-000000000003", T0 + timedelta(hours=59), prompt=3),
        ]
    )
    records = source.fetch(T0, T0 + timedelta(hours=60))
    spans = [r.timespan for r in fake.requests]
    assert [(a.replace(tzinfo=None), b.replace(tzinfo=None)) for a, b in spans] == [
        (T0, T0 + timedelta(days=1)),
        (T0 + timedelta(days=1), T0 + timedelta(days=2)),
        (T0 + timedelta(days=2), T0 + timedelta(hours=60)),
    ]
    assert sorted(r.prompt_tokens or 0 for r in records) == [1, 2, 3]  # each once


# ----------------------------------------------------------------------------- the answer


def test_rows_become_records_through_record_from_row() -> None:
    source, fake, _, _ = _source()
    cid = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    fake.add(
        [
            llm_row(cid, "2026-11-05T10:00:01.250Z", prompt=120, completion=45, total=165),
            llm_row("in-the-next-window", T0 + timedelta(hours=1), prompt=1),  # end: excluded
            llm_row("before-the-window", T0 - timedelta(seconds=1), prompt=1),
        ]
    )
    records = source.fetch(T0, T0 + timedelta(hours=1))
    assert records == [
        LlmLogRecord(
            correlation_id=cid.lower(),  # the event's RequestId (context.RequestId) form
            time_generated=datetime(2026, 11, 5, 10, 0, 1, 250000),  # naive UTC
            sequence_number=0,
            prompt_tokens=120,
            completion_tokens=45,
            total_tokens=165,
            model_name="gpt-4o-2024-11-20",
            deployment_name="gpt-4o",
            is_stream=True,
        )
    ]


def test_multi_part_records_are_returned_as_they_are() -> None:
    source, fake, _, _ = _source()
    cid = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    fake.add(
        [
            llm_row(cid, T0, prompt=900, completion=300, total=1200, sequence=0),
            llm_row(cid, T0, sequence=1, model=None, deployment=None),  # a message part
            llm_row(cid, T0 + timedelta(seconds=2), completion=310, sequence=2),
        ]
    )
    records = source.fetch(T0, T0 + timedelta(minutes=5))
    assert [(r.correlation_id, r.sequence_number) for r in records] == [
        (cid, 0),
        (cid, 1),
        (cid, 2),
    ]
    assert [r.completion_tokens for r in records] == [300, None, 310]  # assembly is reconcile's


def test_rows_that_are_not_records_are_skipped() -> None:
    source, fake, _, _ = _source()
    fake.add(
        [
            llm_row("", T0, prompt=1),  # no correlation id
            llm_row("5d2a1b9e-1111-4a0e-8d0a-0f4e3c1b9e11", T0, prompt=-3),  # not a count
            llm_row("5d2a1b9e-2222-4a0e-8d0a-0f4e3c1b9e11", T0, prompt=7),
        ]
    )
    assert [r.prompt_tokens for r in source.fetch(T0, T0 + timedelta(minutes=1))] == [7]


def test_a_workspace_without_data_answers_204_and_that_is_no_records() -> None:
    source, fake, _, sleeps = _source()
    fake.fail_next(1, "empty")
    assert source.fetch(T0, T0 + timedelta(minutes=1)) == []
    assert len(fake.requests) == 1 and sleeps == []


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("kind", "sleeps_wanted"),
    [
        ("throttle", [2.0, 2.0, 4.0]),  # Retry-After: 2 wins over 1 s and 2 s, not over 4 s
        ("server", [1.0, 2.0, 4.0]),
        ("connection", [1.0, 2.0, 4.0]),
    ],
)
def test_transient_failures_are_retried_with_exponential_backoff(
    kind: str, sleeps_wanted: list[float]
) -> None:
    source, fake, _, sleeps = _source()
    fake.add([llm_row("6f1c2d3e-0000-4000-8000-00000000000a", T0, prompt=5)])
    fake.fail_next(3, kind)
    records = source.fetch(T0, T0 + timedelta(minutes=1))
    assert [r.prompt_tokens for r in records] == [5]
    assert len(fake.requests) == 4 and sleeps == sleeps_wanted


def test_a_partial_result_is_retried_never_used() -> None:
    source, fake, _, sleeps = _source()
    ids = [f"6f1c2d3e-0000-4000-8000-00000000000{i}" for i in range(4)]
    fake.add([llm_row(cid, T0 + timedelta(seconds=i), prompt=i + 1) for i, cid in enumerate(ids)])
    fake.fail_next(1, "partial")  # 200 with half of the rows and an error PartialError
    records = source.fetch(T0, T0 + timedelta(minutes=1))
    assert sorted(r.correlation_id for r in records) == ids  # all of them, from the retry
    assert len(fake.requests) == 2 and sleeps == [1.0]


def test_failing_past_the_attempts_is_one_line_naming_the_workspace() -> None:
    source, fake, _, sleeps = _source(max_attempts=4)
    fake.fail_next(4, "server")
    with pytest.raises(ReconcileError) as err:
        source.fetch(T0, T0 + timedelta(minutes=1))
    message = str(err.value)
    assert "\n" not in message and WORKSPACE in message
    assert "HTTP 500" in message and "nothing was changed" in message
    assert len(fake.requests) == 4 and sleeps == [1.0, 2.0, 4.0]
    source, fake, _, _ = _source(max_attempts=2)
    fake.fail_next(2, "partial")
    with pytest.raises(
        ReconcileError, match=r"\(last: partial result PartialError\); nothing was changed"
    ):
        source.fetch(T0, T0 + timedelta(minutes=1))


@pytest.mark.parametrize("kind", ["forbidden", "unauthorized"])
def test_a_refused_query_names_the_role_and_is_not_retried(kind: str) -> None:
    source, fake, _, sleeps = _source()
    fake.fail_next(1, kind)
    with pytest.raises(ReconcileError) as err:
        source.fetch(T0, T0 + timedelta(minutes=1))
    message = str(err.value)
    assert "\n" not in message and WORKSPACE in message
    assert "the identity needs 'Log Analytics Reader'" in message
    assert "73c42c96-874c-492b-b04d-ab87d138a893" in message
    assert len(fake.requests) == 1 and sleeps == []
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no SDK response


def test_a_request_the_service_rejects_is_not_retried() -> None:
    source, fake, _, sleeps = _source()
    fake.fail_next(1, "bad_request")
    with pytest.raises(ReconcileError, match=r"failed \(HTTP 400 BadArgumentError\); nothing"):
        source.fetch(T0, T0 + timedelta(minutes=1))
    assert len(fake.requests) == 1 and sleeps == []


def test_from_spec_needs_the_workspace_guid() -> None:
    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "gateway.yaml")
    data = spec.model_dump()
    # without a language-model log, or with a workspace but not its GUID
    for llm_log in ({}, {**data["llm_log"], "workspace_id": None}):
        without = parse_spec({**data, "llm_log": llm_log})
        assert without.llm_log.workspace_id is None
        with pytest.raises(ConfigError, match=r"llm_log\.workspace_id is not set"):
            LogAnalyticsLlmLog.from_spec(without, FakeCredential())
    # the example names its workspace's GUID: that is the workspace queried
    example_guid = "11111111-2222-3333-4444-555555555555"
    fake = LogAnalyticsFake("https://api.loganalytics.io", example_guid)
    source = LogAnalyticsLlmLog.from_spec(spec, FakeCredential(), transport=fake)
    assert source.name == f"log-analytics:{example_guid}"
    source.fetch(T0, T0 + timedelta(minutes=1))
    assert fake.requests[0].path == f"/v1/workspaces/{example_guid}/query"
    assert fake.problems == []
    data["cloud"] = "AzureUSGovernment"
    data["llm_log"].update(workspace_id=WORKSPACE.upper(), correlation_column="RequestId")
    fake = LogAnalyticsFake("https://api.loganalytics.us", WORKSPACE)
    source = LogAnalyticsLlmLog.from_spec(parse_spec(data), FakeCredential(), transport=fake)
    assert source.name == f"log-analytics:{WORKSPACE}"  # one watermark, however it is spelled
    source.fetch(T0, T0 + timedelta(minutes=1))
    assert fake.requests[0].host == "api.loganalytics.us"
    assert "CorrelationId = RequestId" in fake.requests[0].body["query"]


# ----------------------------------------------------------------------------- end to end


def _state_rows(engine: Engine) -> int:
    with transaction(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(reconcile_state)).scalar_one())


def test_reconcile_upgrades_a_prompt_only_row_with_the_logs_numbers(
    engine: Engine,
    make_v2: Callable[..., dict[str, Any]],
    ingest_events: Callable[..., Any],
    token_rows: Callable[[Engine], list[dict[str, Any]]],
) -> None:
    event = make_v2(
        IsStreaming=True,
        Usage=None,
        Model=None,
        Request={"messages": [{"role": "user", "content": "Hello"}], "stream": True},
        StatusCode=200,
    )
    ingest_events(engine, event)
    (before,) = token_rows(engine)
    assert before["UsageSource"] == "prompt_only" and before["CompletionTokens"] == 0
    source, fake, _, _ = _source()
    when = datetime(2026, 11, 5, 10, 0, 0, 100000)  # the event's ExecTimeUTC is 10:00:00.123
    fake.add([llm_row(event["RequestId"], when, prompt=17, completion=230, total=247)])
    result = reconcile(engine, source, Reconcile(), until=datetime(2026, 11, 5, 11, 0))
    assert (result.records, result.upgraded, result.from_prompt_only) == (1, 1, 1)
    (after,) = token_rows(engine)
    assert after["UsageSource"] == "reconciled"
    assert (after["PromptTokens"], after["CompletionTokens"], after["TotalTokens"]) == (
        17,
        230,
        247,
    )
    assert after["PriorUsageSource"] == "prompt_only"
    assert after["PriorPromptTokens"] == before["PromptTokens"]
    assert after["Cost"] is not None and after["Cost"] > (before["Cost"] or 0)
    assert _state_rows(engine) == 1
    # the query window covered the row (with the clock margin) and was in the request
    start, end = fake.requests[0].timespan
    assert start <= when.replace(tzinfo=UTC) < end
    assert fake.problems == []


def test_a_failing_query_changes_nothing(
    engine: Engine,
    make_v2: Callable[..., dict[str, Any]],
    ingest_events: Callable[..., Any],
    token_rows: Callable[[Engine], list[dict[str, Any]]],
) -> None:
    event = make_v2(IsStreaming=True, Usage=None, Request={"messages": [], "stream": True})
    ingest_events(engine, event)
    before = token_rows(engine)
    source, fake, _, sleeps = _source(max_attempts=3)
    fake.add([llm_row(event["RequestId"], T0, prompt=17, completion=230, total=247)])
    fake.fail_next(3, "throttle")
    with pytest.raises(ReconcileError, match="still failing after 3 attempts"):
        reconcile(engine, source, Reconcile(), until=datetime(2026, 11, 5, 11, 0))
    assert token_rows(engine) == before and before[0]["UsageSource"] == "prompt_only"
    assert _state_rows(engine) == 0  # no watermark either
    assert len(sleeps) == 2
