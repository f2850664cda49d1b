"""Notebook 03: calls through the gateway with the ``openai`` SDK, their rows, and capture cost.

:func:`smoke_test` makes one call of every kind a BU makes (chat, streamed chat with and
without ``stream_options.include_usage``, a legacy completion, an embedding, a Responses call
streamed and not) with one BU's subscription key. :func:`rows_beside_usage` waits until the
pipeline has stored them and shows each row beside the usage the API returned to the client —
the proof that billing matches what the caller saw, and where it could not (streams without a
usage chunk) which estimate was stored. :func:`compare_capture` measures time to first token
through pass-through and buffered capture and shows what buffering costs a streaming caller.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from aoai_helpers import clock
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.notebook_steps.shown import Shown, Status
from aoai_helpers.notebook_steps.target import Target
from aoai_helpers.pipeline.reconcile import PROVISIONAL_SOURCES
from aoai_helpers.spec import CaptureMode
from aoai_helpers.synthetic.traffic import (
    CALL_KINDS,
    CallResult,
    azure_client,
    chat_and_embedding_deployments,
    make_call,
    v1_client,
)

__all__ = ["SmokeRun", "compare_capture", "rows_beside_usage", "smoke_test"]


@dataclass(frozen=True)
class SmokeRun:
    """The calls :func:`smoke_test` made: whose key, when it started, what each returned."""

    subscription: str
    started: datetime
    kinds: tuple[str, ...]
    calls: tuple[CallResult, ...]


def _subscription(target: Target, subscription: str | None) -> str:
    ids = [s.id for s in target.spec.subscriptions]
    if subscription is None:
        return ids[0]
    if subscription not in ids:
        raise ConfigError(f"no subscription {subscription!r} in the spec (have: {', '.join(ids)})")
    return subscription


def _usage_cells(usage: dict[str, int] | None) -> str:
    if usage is None:
        return "(none returned)"
    return f"{usage['prompt_tokens']} + {usage['completion_tokens']} = {usage['total_tokens']}"


def smoke_test(target: Target, subscription: str | None = None, seed: int = 3) -> Shown:
    """One call of each kind through the gateway with ``subscription``'s key (default: the first BU)."""
    sid = _subscription(target, subscription)
    key = target.subscription_keys()[sid]
    gateway = target.gateway_url()
    chat, embed = chat_and_embedding_deployments(target.spec)
    rng = random.Random(seed)
    # The rows carry the gateway's times: the local gateway's are the business clock's
    # (AOAI_NOW, if set), APIM's are the real ones.
    started = clock.now() if target.mode == "local" else clock.system_now()
    az, v1 = azure_client(gateway, key), v1_client(gateway, key)
    try:
        calls = tuple(
            CallResult(sid, *make_call(kind, az, v1, rng, chat[0], embed)) for kind in CALL_KINDS
        )
    finally:
        az.close()
        v1.close()
    run = SmokeRun(sid, started, CALL_KINDS, calls)
    table = pd.DataFrame(
        [
            {
                "call": kind,
                "deployment": c.deployment,
                "status": c.status,
                "usage returned (prompt + completion = total)": _usage_cells(c.usage),
                "time to first token": f"{c.ttft_s * 1000:.0f} ms" if c.ttft_s is not None else "-",
                "total": f"{c.total_s * 1000:.0f} ms",
            }
            for kind, c in zip(CALL_KINDS, calls, strict=True)
        ]
    )
    failed = [k for k, c in zip(CALL_KINDS, calls, strict=True) if c.status != 200]
    return Shown(
        f"{len(calls)} calls through {gateway} with {sid}'s key"
        + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ", all answered 200"),
        "fail" if failed else "ok",
        ["a streamed chat without stream_options.include_usage returns no usage to the client"],
        tables=[("", table)],
        data=run,
    )


def _rows_since(engine: Engine, run: SmokeRun) -> list[Any]:
    t = token_table.c
    since = run.started.replace(tzinfo=None) - timedelta(seconds=5)
    stmt = (
        select(
            t.Operation,
            t.IsStreaming,
            t.StatusCode,
            t.ModelName,
            t.PromptTokens,
            t.CompletionTokens,
            t.TotalTokens,
            t.UsageSource,
            t.Cost,
            t.Currency,
            t.PriorUsageSource,
            t.PriorPromptTokens,
            t.PriorCompletionTokens,
            t.PriorTotalTokens,
        )
        .where(t.SubscriptionId == run.subscription, t.ExecTimeUTC >= since)
        .order_by(t.ExecTimeUTC, t.Id)
    )
    with transaction(engine) as conn:
        return list(conn.execute(stmt))


def rows_beside_usage(target: Target, smoke: Shown, timeout: float = 120.0) -> Shown:
    """Wait until the smoke test's calls are stored; show each row beside the API's usage.

    Rows are matched to calls by subscription, time (from the smoke test's start) and kind
    (operation, streamed), in order. In Azure mode other traffic of the same BU in that
    window would be matched too: use a BU key nobody else uses for the smoke test.
    """
    run = smoke.data
    if not isinstance(run, SmokeRun):
        raise ConfigError("pass the result of smoke_test(…) (the previous cell)")
    rows = _wait_for_rows(target, run, timeout)
    out, matched = _beside(run, rows)
    complete = matched == len(run.calls)
    disagreeing = [r["call"] for r in out if r["agrees"] == "NO"]
    unseen = [r["call"] for r in out if r["agrees"] == "not yet reconciled"]
    lines = [
        "reported: the API's own usage, in the event; reconciled: a pass-through stream, billed "
        "by its prompt at ingest ('at ingest'), then given its exact usage by APIM's "
        "language-model log; prompt_only / estimated: counted by us, still provisional",
    ]
    if unseen:
        lines.append(
            f"{', '.join(unseen)}: still provisional — APIM's language-model log reaches Log "
            "Analytics minutes after a call, and the function's reconcile timer (or `python -m "
            "aoai_helpers reconcile`) then gives these rows their exact usage"
        )
    status: Status = "fail" if not complete or disagreeing else ("warn" if unseen else "ok")
    title = (
        f"all {len(run.calls)} calls stored"
        if complete
        else f"{matched} of {len(run.calls)} calls stored after {timeout:.0f} s"
    )
    if disagreeing:
        title += f"; stored usage differs from the API's for {', '.join(disagreeing)}"
    return Shown(title, status, lines, tables=[("", pd.DataFrame(out))], data=rows)


def _wait_for_rows(target: Target, run: SmokeRun, timeout: float) -> list[Any]:
    """The smoke test's rows, once all are stored (and, locally, reconciled) or at ``timeout``."""
    deadline = time.monotonic() + timeout
    engine = engine_from_url(target.db_url)  # one engine (and pool) for every poll
    # local mode reconciles within a second (the stack's reconciler); on Azure the language-
    # model log takes minutes and the function's timer runs every few: show what is there
    local = target.mode == "local"

    def done(found: list[Any]) -> bool:
        if len(found) < len(run.calls):
            return False
        return not local or not any(r.UsageSource in PROVISIONAL_SOURCES for r in found)

    try:
        rows = _rows_since(engine, run)
        while not done(rows) and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = _rows_since(engine, run)
    finally:
        engine.dispose()
    return rows


def _beside(run: SmokeRun, rows: list[Any]) -> tuple[list[dict[str, str]], int]:
    """One table row per call (its row matched by operation and streaming, in order) and how
    many calls found their row."""
    pending = list(rows)
    out = []
    matched = 0
    for kind, call in zip(run.kinds, run.calls, strict=True):
        row = next(
            (
                r
                for r in pending
                if r.Operation == call.operation and bool(r.IsStreaming) == call.stream
            ),
            None,
        )
        if row is not None:
            pending.remove(row)
            matched += 1
        api = call.usage
        out.append(
            {
                "call": kind,
                "API returned": _usage_cells(api),
                "at ingest": _at_ingest(row),
                "billed now": "(not yet)"
                if row is None
                else f"{row.PromptTokens} + {row.CompletionTokens} = {row.TotalTokens}",
                "usage source": row.UsageSource if row is not None else "-",
                "cost": "-"
                if row is None
                else ("unpriced" if row.Cost is None else f"{row.Cost:.6f} {row.Currency}"),
                "agrees": _agreement(row, api),
            }
        )
    return out, matched


def _at_ingest(row: Any) -> str:
    """What a row billed when it was ingested (before reconciliation, if it was reconciled)."""
    if row is None:
        return "-"
    if row.PriorUsageSource is None:
        return "(as now)"
    return (
        f"{row.PriorPromptTokens} + {row.PriorCompletionTokens} = {row.PriorTotalTokens}"
        f" ({row.PriorUsageSource})"
    )


def _agreement(row: Any, api: dict[str, int] | None) -> str:
    """How a stored row compares with the usage the API returned to the client."""
    if row is None:
        return "-"
    provisional = row.UsageSource in PROVISIONAL_SOURCES
    if api is None:  # nothing to compare with: the client got no usage
        if row.UsageSource == "reconciled":
            return "from APIM's log"
        return "not yet reconciled" if provisional else "client got none"
    if provisional:
        if api["completion_tokens"]:
            return "not yet reconciled"  # the reply's tokens are not billed yet
        return "yes" if row.PromptTokens == api["prompt_tokens"] else "NO"
    stored = (row.PromptTokens, row.CompletionTokens, row.TotalTokens)
    return (
        "yes"
        if stored == (api["prompt_tokens"], api["completion_tokens"], api["total_tokens"])
        else "NO"
    )


def _measure(
    gateway: str, key: str, deployment: str, calls: int
) -> tuple[list[float], list[float]]:
    rng = random.Random(5)
    az, v1 = azure_client(gateway, key), v1_client(gateway, key)
    ttfts: list[float] = []
    totals: list[float] = []
    try:
        for _ in range(calls):
            result = make_call("chat_stream_usage", az, v1, rng, deployment, deployment)
            if result[3] != 200 or result[5] is None:
                raise ConfigError(
                    f"a streamed call through {gateway} failed with status {result[3]}"
                )
            ttfts.append(result[5])
            totals.append(result[6])
    finally:
        az.close()
        v1.close()
    return ttfts, totals


def _local_measure(
    target: Target, mode: CaptureMode, calls: int
) -> tuple[list[float], list[float]]:
    """Through a throwaway local stack in ``mode`` with a realistic latency model."""
    import tempfile

    from aoai_helpers.local.stack import LocalStack

    spec = target.spec
    sim = spec.local.simulator
    if sim.ttft_ms == 0 and sim.tokens_per_second == 0:  # instant replies show no difference
        spec = spec.with_simulator(ttft_ms=250.0, tokens_per_second=50.0)
    chat, _ = chat_and_embedding_deployments(spec)
    sid = spec.subscriptions[0].id
    with (
        tempfile.TemporaryDirectory(prefix="aoai-ttft-") as state,
        LocalStack(
            spec, db_url=target.db_url, capture=mode, state_dir=state, write_state=False
        ) as stack,
    ):
        measured = _measure(stack.info.gateway_url, stack.info.keys[sid], chat[0], calls)
        stack.wait_ingested(timeout=60)
    return measured


def compare_capture(target: Target, calls: int = 5) -> Shown:
    """Median time to first token and total time of streamed chats, pass-through vs buffered.

    Local mode measures both, each through its own throwaway stack (the simulator at 250 ms
    to first token and 50 tokens/s unless the spec sets a latency). Azure mode measures the
    capture mode APIM runs now and keeps the result in the state directory: switch
    ``capture.streaming`` in the spec, apply notebook 01 again (one named value changes) and
    re-run this cell to see both.
    """
    if calls < 1:
        raise ConfigError("calls must be at least 1")
    results: dict[str, dict[str, float]] = {}
    store = target.state_dir / "ttft.json"
    if target.mode == "local":
        modes: tuple[CaptureMode, ...] = ("passthrough", "buffered")
        for mode in modes:
            ttft, total = _local_measure(target, mode, calls)
            results[mode] = {"ttft": statistics.median(ttft), "total": statistics.median(total)}
    else:
        if store.exists():
            results.update(json.loads(store.read_text("utf-8")))
        sid = target.spec.subscriptions[0].id
        chat, _ = chat_and_embedding_deployments(target.spec)
        ttft, total = _measure(
            target.gateway_url(), target.subscription_keys()[sid], chat[0], calls
        )
        results[target.spec.capture.streaming] = {
            "ttft": statistics.median(ttft),
            "total": statistics.median(total),
        }
        target.state_dir.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(results, indent=2), "utf-8")
    table = pd.DataFrame(
        [
            {
                "capture": mode,
                "median time to first token": f"{r['ttft'] * 1000:.0f} ms",
                "median total": f"{r['total'] * 1000:.0f} ms",
                "first token at % of total": f"{r['ttft'] / r['total'] * 100:.0f} %",
            }
            for mode, r in results.items()
        ]
    )
    lines = [f"{calls} streamed chat(s) per mode"]
    if {"passthrough", "buffered"} <= results.keys():
        delta = results["buffered"]["ttft"] - results["passthrough"]["ttft"]
        lines.append(
            f"buffered capture delays the first token by {delta * 1000:.0f} ms: the gateway "
            "holds the stream until the reply is complete, in exchange for exact usage"
        )
    else:
        lines.append("only one mode measured so far (see this function's help for the other)")
    return Shown(
        "time to first token by capture mode", "info", lines, tables=[("", table)], data=results
    )
