"""Gateway benchmark: what the local APIM-emulating gateway costs a streamed call (``make bench``).

Set-up (not timed): one process runs the AOAI simulator (standing in for AOAI on its own
machine), another runs two gateways in front of it, one in pass-through mode and one in
buffered-capture mode, each on its own loopback port, thread and event loop; both gateways
append their events to an on-disk event log (fsync on). The machine has 2 cores: client,
gateway and simulator share them.
The simulator answers with a latency model (``--ttft-ms`` before the first token, then
``--tps`` tokens/s, ``--tokens`` tokens per reply). The client is this process.

1. ``latency``: ``--calls`` streamed chat calls per target, interleaved (direct, pass-through,
   buffered, direct, …, so drift hits all three alike), one at a time, over real sockets with a
   keep-alive httpx client. Per call: time to first token (TTFT: the first SSE chunk carrying
   content) and total time (until the body ends). p50 / p95 per target.
2. ``throughput``: non-streamed chat calls, no simulated latency (pure overhead), ``--concurrency``
   calls in flight for ``--seconds`` per target: requests/s direct vs through each gateway.

3. ``billing``: the latency phase's streamed calls, ingested from each gateway's event log into a
   fresh database and reconciled with that gateway's language-model log (what APIM's
   ``GatewayLlmLogs`` records): the cost billed at ingest and after reconciliation, as a share of
   the true cost — the usage the simulator served, priced at the same rates.

Bars (issue 17), each against the direct calls of the same run: pass-through adds ≤ 1 ms to
p50 TTFT (:data:`TTFT_LIMIT_MS`) and ≤ 10 % to p50 total time, non-streamed requests/s through
the pass-through gateway are ≥ 0.7 of direct (:data:`RPS_LIMIT`), and every streamed call is
billed 100 % of its true cost after reconciliation; buffered capture's TTFT / total and its
requests/s ratio, and LiteLLM's figures with ``--peers`` (latency and throughput phases alike),
are reported beside them, not barred. Each figure is printed beside its limit; the exit status
is 1 when a bar is missed (``--no-fail`` to only report). Results are written to
``bench-results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from aoai_helpers.spec import Spec, load_spec, parse_spec  # noqa: E402

KEY = "bench-subscription-key-000000"
BACKEND = "bench-backend-secret-0000000"
BODY = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a short paragraph about quarterly planning."},
    ],
}
PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def _spec(ttft_ms: float, tps: float, tokens: int) -> Spec:
    data = load_spec(ROOT / "examples" / "gateway.yaml").model_dump()
    data["local"]["simulator"].update(
        ttft_ms=ttft_ms, tokens_per_second=tps, max_reply_tokens=tokens
    )
    return parse_spec(data)


def _serve_simulator(conn: Connection, ttft_ms: float, tps: float, tokens: int) -> None:
    """Simulator process (AOAI stands on its own machine; it must not share our GIL)."""
    from aoai_helpers.local.simulator import Simulator
    from aoai_helpers.local.stack import ServerThread

    simulator = Simulator(_spec(ttft_ms, tps, tokens), keys=[BACKEND])
    sim = ServerThread(simulator, name="simulator").start()
    conn.send(sim.url)
    conn.recv()  # stop
    sim.stop()
    # what it served to streamed calls (every benchmark call has the same body, so the same reply)
    served = [r.usage for r in simulator.records if r.stream and r.usage is not None]
    conn.send(served)


MODES = ("passthrough", "buffered")


def _serve_gateways(conn: Connection, sim_url: str, state: str) -> None:
    """Gateway process: a pass-through and a buffered gateway, each with its own event log and
    language-model log (what APIM's GatewayLlmLogs diagnostic records), as in local mode."""
    from aoai_helpers.eventlog.eventhub import LocalEventLog
    from aoai_helpers.eventlog.llmlog import LocalLlmLog
    from aoai_helpers.local.gateway import Gateway
    from aoai_helpers.local.stack import EventWriter, LlmLogWriter, ServerThread

    spec = _spec(0, 0, 1)
    logs = {mode: LocalEventLog(Path(state) / mode / "events") for mode in MODES}
    writers: list[Any] = []
    servers = []
    for mode in MODES:
        writer = EventWriter(logs[mode].producer())
        llm = LlmLogWriter(LocalLlmLog(Path(state) / mode / "llm-log"), spec.deployment_models())
        gateway = Gateway(
            spec,
            keys={spec.subscriptions[0].id: KEY},
            backend_secret=BACKEND,
            sink=writer,
            backend_urls={b.name: sim_url for b in spec.backends},
            capture=mode,  # type: ignore[arg-type]
            llm_sink=llm,
        )
        writers += [writer, llm]
        servers.append(ServerThread(gateway, name=f"gateway-{mode}").start())
    conn.send([s.url for s in servers])
    conn.recv()  # stop
    for server in servers:
        server.stop()
    for writer in writers:
        writer.close()
    conn.send({mode: log.last_sequence_number() + 1 for mode, log in logs.items()})


def billed(state: str, served: dict[str, int], calls: int) -> dict[str, Any]:
    """Per capture mode: the latency phase's streamed calls ingested from the gateway's event log
    into a fresh database, then reconciled with its language-model log — the cost billed at
    ingest and after reconciliation, as a share of the true cost (``calls`` times the cost of the
    usage the simulator served for one call, at the same rates)."""
    from sqlalchemy import func, select

    from aoai_helpers.core.events import Usage
    from aoai_helpers.core.pricing import RateBook, cost_of, default_rates
    from aoai_helpers.db.engine import engine_from_url, transaction
    from aoai_helpers.db.tables import token_table
    from aoai_helpers.eventlog.eventhub import LocalEventLog
    from aoai_helpers.eventlog.llmlog import LocalLlmLog
    from aoai_helpers.pipeline.consume import drain
    from aoai_helpers.pipeline.ingest import Ingestor
    from aoai_helpers.pipeline.reconcile import reconcile
    from aoai_helpers.pipeline.service import ensure_db
    from aoai_helpers.spec import Reconcile

    rate = RateBook(default_rates()).lookup("gpt-4o", datetime(2026, 11, 1))
    assert rate is not None
    one = cost_of(
        Usage(served["prompt_tokens"], served["completion_tokens"], served["total_tokens"]), rate
    )
    out: dict[str, Any] = {"true_cost_per_call": one}
    t = token_table.c
    for mode in MODES:
        engine = engine_from_url(f"sqlite:///{state}/{mode}/billing.db")
        ensure_db(engine)
        with LocalEventLog(Path(state) / mode / "events").consumer() as consumer:
            drain(consumer, Ingestor(engine))

        def streamed_cost(engine: Any = engine) -> float:
            with transaction(engine) as conn:
                return float(
                    conn.execute(select(func.sum(t.Cost)).where(t.IsStreaming == 1)).scalar() or 0.0
                )

        at_ingest = streamed_cost()
        result = reconcile(engine, LocalLlmLog(Path(state) / mode / "llm-log"), Reconcile())
        after = streamed_cost()
        engine.dispose()
        true = one * calls
        out[mode] = {
            "billed_at_ingest_pct": round(at_ingest / true * 100, 2),
            "billed_after_reconcile_pct": round(after / true * 100, 2),
            "reconciled_rows": result.upgraded,
        }
    return out


Target = tuple[str, dict[str, str], dict[str, Any]]  # URL, headers, extra body fields


def _has_content(line: str) -> bool:
    if not line.startswith("data:") or '"content"' not in line:
        return False
    try:
        chunk = json.loads(line[5:])
    except ValueError:
        return False
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def _stream_once(client: httpx.Client, target: Target) -> tuple[float, float]:
    url, headers, extra = target
    body = {**BODY, **extra, "stream": True}
    start = time.perf_counter()
    ttft = None
    with client.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if ttft is None and _has_content(line):
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    if ttft is None:
        raise RuntimeError(f"no content in the stream from {url}")
    return ttft, total


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


WARM_UP: Final = 3


def latency(targets: dict[str, Target], calls: int) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    with httpx.Client(timeout=60) as client:
        for target in targets.values():  # warm-up: connections, imports, tokenizer caches
            for _ in range(WARM_UP):
                _stream_once(client, target)
        for _ in range(calls):
            for name, target in targets.items():
                samples[name].append(_stream_once(client, target))
    out: dict[str, Any] = {}
    for name, values in samples.items():
        ttfts, totals = [v[0] * 1000 for v in values], [v[1] * 1000 for v in values]
        out[name] = {
            "ttft_p50_ms": round(statistics.median(ttfts), 2),
            "ttft_p95_ms": round(_pct(ttfts, 0.95), 2),
            "total_p50_ms": round(statistics.median(totals), 2),
            "total_p95_ms": round(_pct(totals, 0.95), 2),
        }
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used, from ``/proc`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _throughput_cpu(
    target: Target, args: argparse.Namespace, pids: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """Requests/s of one throughput run, and the CPU each process spent per request (ms):
    the benchmark's client (this process), the gateways' process and the simulator's. A
    client near one core-second per second is the bound, not the gateway."""
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    client_before, started = time.process_time(), time.perf_counter()
    requests, calling = asyncio.run(_throughput_one(target, args.concurrency, args.seconds))
    client, wall = time.process_time() - client_before, time.perf_counter() - started
    cpu = {name: (_cpu_seconds(pid) - before[name]) / requests * 1000 for name, pid in pids.items()}
    cpu["client"] = client / requests * 1000
    cpu["client_cores"] = client / wall
    return requests / calling, {k: round(v, 3) for k, v in cpu.items()}


async def _throughput_one(target: Target, concurrency: int, seconds: float) -> tuple[int, float]:
    """Non-streamed calls to ``target`` for ``seconds``, ``concurrency`` in flight: how many
    completed, and in how many seconds (from the first call's start)."""
    url, headers, extra = target
    body = {**BODY, **extra}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                r = await client.post(url, json=body, headers=headers)
                r.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.perf_counter() - start


def _peer_billing(
    records: list[dict[str, Any]], served: dict[str, int], calls: int
) -> dict[str, Any]:
    """What LiteLLM's spend tracking recorded for the streamed calls, priced at our rates, as a
    share of the true cost (and its own ``response_cost`` beside it)."""
    from aoai_helpers.core.events import Usage
    from aoai_helpers.core.pricing import RateBook, cost_of, default_rates

    rate = RateBook(default_rates()).lookup("gpt-4o", datetime(2026, 11, 1))
    assert rate is not None
    true = calls * cost_of(Usage(served["prompt_tokens"], served["completion_tokens"]), rate)
    streamed = [r for r in records if r.get("stream")]
    billed_cost = sum(
        cost_of(Usage(r.get("prompt_tokens") or 0, r.get("completion_tokens") or 0), rate)
        for r in streamed
    )
    return {
        "recorded_calls": len(streamed),
        "billed_pct": round(billed_cost / true * 100, 2),
        "own_response_cost_usd": round(sum(r.get("response_cost") or 0.0 for r in streamed), 6),
    }


#: The bars (issue 17), each judged against the direct calls of the same run.
TTFT_LIMIT_MS: Final = 1.0  # pass-through's added p50 time to first token
TOTAL_LIMIT_PCT: Final = 10.0  # pass-through's added p50 total time
RPS_LIMIT: Final = 0.7  # non-streamed requests/s through the pass-through gateway / direct


def _targets(sim: str, passthrough: str, buffered: str) -> dict[str, Target]:
    return {
        "direct": (sim + PATH, {"api-key": BACKEND}, {}),
        "passthrough": (passthrough + PATH, {"api-key": KEY}, {}),
        "buffered": (buffered + PATH, {"api-key": KEY}, {}),
    }


def _litellm(
    stack: contextlib.ExitStack, args: argparse.Namespace, sim: str
) -> tuple[Target, Path]:
    """LiteLLM's proxy in front of ``sim`` (closed with ``stack``): its target and spend file."""
    from peers import MASTER_KEY, litellm_proxy

    url, spend = stack.enter_context(
        litellm_proxy(Path(args.peers_dir), sim, BACKEND, "2024-10-21")
    )
    target = (
        f"{url}/chat/completions",
        {"authorization": f"Bearer {MASTER_KEY}"},
        {"model": "gpt-4o"},
    )
    return target, spend


def _phase(
    phase: str,
    sim: str,
    targets: dict[str, Target],
    args: argparse.Namespace,
    results: dict[str, Any],
    pids: dict[str, int],
) -> None:
    """One phase's measurements, LiteLLM's proxy beside the gateways with ``--peers``;
    ``pids``: the gateways' and the simulator's processes (their CPU per request is taken)."""
    with contextlib.ExitStack() as stack:
        spend = None
        if args.peers:
            targets["litellm"], spend = _litellm(stack, args, sim)
        if phase == "latency":
            print(
                f"latency: {args.calls} streamed calls per target ({', '.join(targets)}), "
                "interleaved …",
                flush=True,
            )
            results["latency"] = latency(targets, args.calls)
            if spend is not None:
                from peers import spend_records

                results["peer_spend"] = spend_records(spend, args.calls + WARM_UP)
            return
        rates: dict[str, float] = {}
        cpu: dict[str, dict[str, float]] = {}
        for name, target in targets.items():
            print(
                f"throughput: {name}, {args.concurrency} in flight, {args.seconds:.0f} s …",
                flush=True,
            )
            rate, cpu[name] = _throughput_cpu(target, args, pids)
            rates[name] = round(rate, 1)
        results["throughput_rps"] = rates
        results["throughput_cpu_ms_per_request"] = cpu


def _measure(args: argparse.Namespace, state: str) -> dict[str, Any]:
    """Both phases, each with a simulator and the two gateways of its own; then billing."""
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {}
    for phase, (ttft, tps) in {
        "latency": (args.ttft_ms, args.tps),
        "throughput": (0.0, 0.0),
    }.items():
        sim_parent, sim_child = ctx.Pipe()
        gw_parent, gw_child = ctx.Pipe()
        sim_proc = ctx.Process(target=_serve_simulator, args=(sim_child, ttft, tps, args.tokens))
        sim_proc.start()
        sim = sim_parent.recv()
        gw_proc = ctx.Process(target=_serve_gateways, args=(gw_child, sim, f"{state}/{phase}"))
        gw_proc.start()
        passthrough, buffered = gw_parent.recv()
        try:
            pids = {"gateway": gw_proc.pid or 0, "simulator": sim_proc.pid or 0}
            _phase(phase, sim, _targets(sim, passthrough, buffered), args, results, pids)
        finally:
            gw_parent.send("stop")
            results.setdefault("events_logged", {})[phase] = gw_parent.recv()
            sim_parent.send("stop")
            served = sim_parent.recv()
            gw_proc.join(30)
            sim_proc.join(30)
        if phase == "latency":
            # every streamed call was answered alike; the usage one call really consumed
            distinct = {tuple(sorted(u.items())) for u in served}
            if len(distinct) != 1:
                raise RuntimeError(f"the simulator served {len(distinct)} different usages")
            calls_per_mode = args.calls + WARM_UP
            results["billing"] = billed(f"{state}/{phase}", served[0], calls_per_mode)
            if "peer_spend" in results:
                results["billing"]["litellm"] = _peer_billing(
                    results.pop("peer_spend"), served[0], calls_per_mode
                )
    return results


def _bar(what: str, shown: str, limit: str, met: bool | None, value: float) -> dict[str, Any]:
    return {"what": what, "shown": shown, "limit": limit, "met": met, "value": value}


def _bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure of the run beside its limit (``met`` None: reported, not a bar)."""
    lat, rps, bill = results["latency"], results["throughput_rps"], results["billing"]
    d, p, b = lat["direct"], lat["passthrough"], lat["buffered"]
    ttft = round(p["ttft_p50_ms"] - d["ttft_p50_ms"], 3)
    total = round((p["total_p50_ms"] - d["total_p50_ms"]) / d["total_p50_ms"] * 100, 2)
    bars = [
        _bar("passthrough: added TTFT p50", f"{ttft:+.2f} ms", f"<= +{TTFT_LIMIT_MS:.2f} ms",
             ttft <= TTFT_LIMIT_MS, ttft),
        _bar("passthrough: added total p50", f"{total:+.1f} %", f"<= +{TOTAL_LIMIT_PCT:.0f} %",
             total <= TOTAL_LIMIT_PCT, total),
    ]  # fmt: skip
    for mode in ("passthrough", "buffered", "litellm"):
        if mode in rps:
            ratio = round(rps[mode] / rps["direct"], 4)
            met = ratio >= RPS_LIMIT if mode == "passthrough" else None
            limit = f">= {RPS_LIMIT:.2f}" if met is not None else "(reported)"
            bars.append(
                _bar(f"{mode}: non-streamed req/s / direct", f"{ratio:.3f}", limit, met, ratio)
            )
    for mode in MODES:
        pct = bill[mode]["billed_after_reconcile_pct"]
        what = f"{mode}: streamed cost billed, reconciled"
        bars.append(_bar(what, f"{pct:.2f} %", "= 100 %", abs(pct - 100.0) < 0.01, pct))
    ratio = round(b["ttft_p50_ms"] / b["total_p50_ms"], 3)
    bars.append(_bar("buffered: TTFT / total p50", f"{ratio:.2f}", "(reported)", None, ratio))
    if "litellm" in lat:
        peer = round(lat["litellm"]["ttft_p50_ms"] - d["ttft_p50_ms"], 3)
        bars.append(_bar("litellm: added TTFT p50", f"{peer:+.2f} ms", "(peer)", None, peer))
    return bars


def _print(results: dict[str, Any]) -> None:
    lat, rps_of = results["latency"], results["throughput_rps"]
    print()
    print(
        f"{'target':<12} {'TTFT p50':>9} {'TTFT p95':>9} {'total p50':>10} {'total p95':>10} {'req/s':>8}"
    )
    for name, r in lat.items():
        rps = rps_of.get(name)
        print(
            f"{name:<12} {r['ttft_p50_ms']:>7.1f}ms {r['ttft_p95_ms']:>7.1f}ms "
            f"{r['total_p50_ms']:>8.1f}ms {r['total_p95_ms']:>8.1f}ms "
            + (f"{rps:>8.1f}" if rps is not None else f"{'-':>8}")
        )
    cpu_of = results.get("throughput_cpu_ms_per_request", {})
    if cpu_of:
        print("\nthroughput: CPU per request (ms) of each process, and the client's cores in use:")
        print(f"{'target':<12} {'client':>8} {'gateway':>8} {'simulator':>10} {'client cores':>13}")
        for name, c in cpu_of.items():
            print(
                f"{name:<12} {c['client']:>8.3f} {c['gateway']:>8.3f} {c['simulator']:>10.3f} "
                f"{c['client_cores']:>13.2f}"
            )
        if any(c["client_cores"] >= 0.9 for c in cpu_of.values()):
            print(
                "  the client used ~one core: requests/s are bounded by it, and the ratios "
                "below by the client too; the gateway's own cost is its CPU per request above"
            )
    bill = results["billing"]
    print(
        f"\nstreamed calls billed, as a share of the cost the simulator served "
        f"({bill['true_cost_per_call']:.6f} USD a call):"
    )
    print(f"{'target':<12} {'at ingest':>10} {'after reconcile':>16}")
    for mode in MODES:
        b = bill[mode]
        print(
            f"{mode:<12} {b['billed_at_ingest_pct']:>9.1f}% {b['billed_after_reconcile_pct']:>15.1f}%"
        )
    if "litellm" in bill:
        peer = bill["litellm"]
        print(
            f"{'litellm':<12} {peer['billed_pct']:>9.1f}% {'(no reconciliation)':>16}  "
            f"(its own response_cost: {peer['own_response_cost_usd']:.6f} USD for "
            f"{peer['recorded_calls']} calls)"
        )
    print("\nthis run against its bars (direct calls of the same run):")
    for bar in results["bars"]:
        verdict = {True: "met", False: "MISSED", None: ""}[bar["met"]]
        print(f"  {bar['what']:<52} {bar['shown']:>10}   {bar['limit']:<16} {verdict}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="streamed calls per target")
    parser.add_argument("--ttft-ms", type=float, default=60.0)
    parser.add_argument("--tps", type=float, default=400.0, help="simulated tokens per second")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per reply")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput target")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "gateway.json"))
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also measure LiteLLM's proxy in front of the same simulator (installs it into "
        "its own virtualenv: make bench-peers)",
    )
    parser.add_argument("--peers-dir", default=str(ROOT / "bench-results" / ".peers"))
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a bar is missed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-gw-") as state:
        results = _measure(args, state)
    results["bars"] = _bars(results)
    results["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    _print(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"written to {out}")
    missed = [bar["what"] for bar in results["bars"] if bar["met"] is False]
    if missed and not args.no_fail:
        print("bars missed: " + "; ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
