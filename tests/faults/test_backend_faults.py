"""Backend faults through the local gateway, over real loopback sockets with the real ``openai``
SDK (``LocalStack``: simulator → gateway → event log → consumer → SQLite), in both capture modes.

One deployment per fault (the simulator's faults are configured per deployment):

=================  =============================  ============================================
call               the client sees                recorded (one row each)
=================  =============================  ============================================
429 (throttled)    ``RateLimitError``             status 429, ``unbilled``: 0 tokens, cost 0
500                ``InternalServerError``        status 500, ``unbilled``
400 content filter ``BadRequestError``            status 400, ``unbilled``
stream cut after   passthrough: the stream breaks passthrough: status 200, ``prompt_only``: the
3 content chunks   mid-way (connection dropped);  prompt the simulator counted, 0 completion
                   buffered: a 500 from the       tokens; buffered: status 500 (what the client
                   gateway, no stream at all      got), ``unbilled``
client hangs up    passthrough: (it hung up)      status 200, ``prompt_only`` (as the cut);
after the first                                   the backend stopped generating early
content chunk      buffered: (it timed out        status 200, ``reported``: the gateway kept
                   waiting for the buffered       reading, the backend generated everything
                   response)                      and all of it is billed
=================  =============================  ============================================

Streamed 429/400 answers are the same (the fault answers before any stream starts). What the
row bills is checked against what the simulator says the call consumed (``SimCall.usage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from secrets_registry import record_event_log, register_secret
from sqlalchemy import select
from waiting import wait_until

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.tables import token_table
from aoai_helpers.local.simulator import SimCall
from aoai_helpers.local.stack import LocalStack
from aoai_helpers.spec import CaptureMode, Spec, load_spec, parse_spec
from aoai_helpers.synthetic.traffic import azure_client

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-2024-11-20"
FAULTY: dict[str, dict[str, Any]] = {
    "throttled": {"kind": "rate_limit", "retry_after_ms": 1500},
    "broken": {"kind": "server_error"},
    "filtered": {"kind": "content_filter"},
    "cutting": {"kind": "stream_cut", "cut_after_chunks": 3},
}
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Summarise the quarterly travel expenses please."}
]


def _spec() -> Spec:
    data = load_spec(ROOT / "examples" / "gateway.yaml").model_dump()
    data["backends"][0]["deployments"].update({name: MODEL for name in FAULTY})
    data["local"]["simulator"].update(
        tokens_per_second=100,  # 40 tokens: a 0.4 s stream, time to hang up mid-way
        max_reply_tokens=40,
        faults=[{**fault, "deployments": [name]} for name, fault in FAULTY.items()],
    )
    return parse_spec(data)


@dataclass(frozen=True)
class Seen:
    """One call as the client saw it."""

    deployment: str
    stream: bool
    outcome: str  # "ok", an exception class name, or "hung-up"
    status: int | None


def _call(client: openai.AzureOpenAI, deployment: str, *, stream: bool) -> Seen:
    try:
        if stream:
            chunks = client.chat.completions.create(
                model=deployment,
                messages=MESSAGES,
                stream=True,
            )
            for _ in chunks:
                pass
        else:
            client.chat.completions.create(model=deployment, messages=MESSAGES)
    except openai.APIStatusError as exc:
        return Seen(deployment, stream, type(exc).__name__, exc.status_code)
    except (openai.APIError, httpx.HTTPError) as exc:
        return Seen(deployment, stream, type(exc).__name__, None)
    return Seen(deployment, stream, "ok", 200)


def _hang_up(client: openai.AzureOpenAI, capture: str) -> Seen:
    """Start a streamed call on the healthy deployment and go away mid-way."""
    if capture == "passthrough":
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # the first token: hang up
        stream.close()
        return Seen("gpt-4o", True, "hung-up", 200)
    # buffered: nothing arrives before the end; the client gives up waiting
    impatient = client.with_options(timeout=0.15)
    try:
        for _ in impatient.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
        ):
            pass
    except openai.APITimeoutError:
        return Seen("gpt-4o", True, "hung-up", None)
    raise AssertionError("the buffered stream came back before the client's timeout")


def _rows(db_url: str) -> list[dict[str, Any]]:
    engine = engine_from_url(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(token_table).order_by(token_table.c.Id)).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def _one(items: list[Any], **match: Any) -> Any:
    found = [i for i in items if all(_get(i, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def _get(item: Any, key: str) -> Any:
    return item[key] if isinstance(item, dict) else getattr(item, key)


@pytest.mark.parametrize("capture", ["passthrough", "buffered"])
def test_backend_faults_are_recorded_once_and_billed_for_what_was_served(
    capture: CaptureMode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'usage.db'}"
    state = tmp_path / "state"
    with LocalStack(_spec(), db_url=db_url, capture=capture, state_dir=state) as stack:
        register_secret(*stack.info.keys.values(), stack.info.backend_key)
        client = azure_client(stack.info, stack.info.keys["bu-finance"])
        seen = [
            _call(client, "throttled", stream=False),
            _call(client, "throttled", stream=True),
            _call(client, "broken", stream=False),
            _call(client, "filtered", stream=False),
            _call(client, "filtered", stream=True),
            _call(client, "cutting", stream=True),
            _hang_up(client, capture),
            _call(client, "gpt-4o", stream=False),
        ]
        client.close()
        sim = stack.simulator
        assert sim is not None
        wait_until(lambda: len(sim.records) == len(seen), 60, "the simulator's records")
        # every event stored, then reconciled with the language-model log the gateway wrote
        assert stack.wait_reconciled(timeout=60) is not None
        records: list[SimCall] = list(sim.records)
    record_event_log(state / "events", f"backend faults {capture}")
    rows = _rows(db_url)

    # every call reached the backend once and is recorded once, with its own status
    assert len(records) == len(rows) == len(seen) == 8
    assert len({r["RequestId"] for r in rows}) == len(rows)
    outcomes = {(s.deployment, s.stream): (s.outcome, s.status) for s in seen}
    assert (
        outcomes[("throttled", False)] == outcomes[("throttled", True)] == ("RateLimitError", 429)
    )
    assert outcomes[("broken", False)] == ("InternalServerError", 500)
    assert outcomes[("filtered", False)] == outcomes[("filtered", True)] == ("BadRequestError", 400)
    assert outcomes[("gpt-4o", False)] == ("ok", 200)
    if capture == "passthrough":  # the connection is dropped mid-stream, as the backend's was
        assert outcomes[("cutting", True)][0] in {"APIConnectionError", "RemoteProtocolError"}
    else:  # buffered: the gateway saw the cut before sending anything and answers 500
        assert outcomes[("cutting", True)] == ("InternalServerError", 500)

    # not served (429/500/400): nothing billed
    for deployment, status in (("throttled", 429), ("broken", 500), ("filtered", 400)):
        for row in [r for r in rows if r["DeploymentName"] == deployment]:
            assert row["StatusCode"] == status and row["UsageSource"] == "unbilled"
            assert (row["PromptTokens"], row["CompletionTokens"], row["TotalTokens"]) == (0, 0, 0)
            assert row["Cost"] == 0.0
    assert sorted(r.status for r in records if r.usage is None) == [400, 400, 429, 429, 500]

    # the cut stream: the backend served the prompt and 3 chunks
    cut_row = _one(rows, DeploymentName="cutting")
    cut_sim = _one(records, deployment="cutting")
    assert cut_sim.cut and cut_sim.usage is not None and cut_sim.usage["completion_tokens"] > 0
    if capture == "passthrough":  # the client got a 200 and part of the stream: all of it billed
        assert (cut_row["StatusCode"], cut_row["UsageSource"]) == (200, "reconciled")
        assert cut_row["PromptTokens"] == cut_sim.usage["prompt_tokens"] > 0
        # the chunks served before the cut, as the language-model log saw them go by
        assert cut_row["CompletionTokens"] == cut_sim.usage["completion_tokens"]
    else:  # buffered: the client got the gateway's 500 and nothing else; the row says so
        assert (cut_row["StatusCode"], cut_row["UsageSource"]) == (500, "unbilled")
        assert cut_row["TotalTokens"] == 0

    # the client that hung up
    gone_row = _one(rows, DeploymentName="gpt-4o", IsStreaming=1)
    gone_sim = _one(records, deployment="gpt-4o", stream=True)
    assert gone_sim.usage is not None and gone_row["StatusCode"] == 200
    if capture == "passthrough":  # the gateway stopped reading: the backend stopped early
        assert gone_sim.cut and gone_sim.usage["completion_tokens"] < 40
        assert gone_row["UsageSource"] == "reconciled"
        assert gone_row["PromptTokens"] == gone_sim.usage["prompt_tokens"]
        # at least the token the client got; at most what the backend sent before it noticed
        assert 1 <= gone_row["CompletionTokens"] <= gone_sim.usage["completion_tokens"]
    else:  # buffered: the gateway read the whole stream regardless; all of it is billed
        assert not gone_sim.cut and gone_sim.usage["completion_tokens"] == 40
        assert gone_row["UsageSource"] == "reported"
        assert gone_row["PromptTokens"] == gone_sim.usage["prompt_tokens"]
        assert gone_row["CompletionTokens"] == gone_sim.usage["completion_tokens"]

    # the healthy call: billed as reported
    ok_row = _one(rows, DeploymentName="gpt-4o", IsStreaming=0)
    ok_sim = _one(records, deployment="gpt-4o", stream=False)
    assert ok_row["UsageSource"] == "reported" and ok_sim.usage is not None
    assert ok_row["TotalTokens"] == ok_sim.usage["total_tokens"] and ok_row["Cost"] > 0

    # what the backend served to streams that did not finish, less what their rows bill
    unbilled_served = sum(
        max(
            0,
            r.usage["completion_tokens"]
            - _one(rows, DeploymentName=r.deployment, IsStreaming=1)["CompletionTokens"],
        )
        for r in records
        if r.cut and r.usage is not None
    )
    with capsys.disabled():
        print(
            f"\n[backend faults {capture}] {len(rows)} rows: "
            + ", ".join(
                f"{r['DeploymentName']}{'/stream' if r['IsStreaming'] else ''}="
                f"{r['StatusCode']}:{r['UsageSource']}:{r['PromptTokens']}+{r['CompletionTokens']}"
                for r in rows
            )
            + f"; completion tokens served but not billed: {unbilled_served}; client saw: "
            + ", ".join(f"{s.deployment}{'/stream' if s.stream else ''}={s.outcome}" for s in seen)
        )
