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

Bar (issue #3): pass-through adds ≤ 5 ms to p50 TTFT and ≤ 10 % to p50 total time against the
direct calls of the same run; buffered capture shows TTFT ≈ total time (reported, not a target).
Results are printed and written to ``bench-results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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

    sim = ServerThread(
        Simulator(_spec(ttft_ms, tps, tokens), keys=[BACKEND]), name="simulator"
    ).start()
    conn.send(sim.url)
    conn.recv()  # stop
    sim.stop()
    conn.send(None)


def _serve_gateways(conn: Connection, sim_url: str, state: str) -> None:
    """Gateway process: a pass-through and a buffered gateway, both logging to one event log."""
    from aoai_helpers.eventhub import LocalEventLog
    from aoai_helpers.local.gateway import Gateway
    from aoai_helpers.local.stack import EventWriter, ServerThread

    spec = _spec(0, 0, 1)
    log = LocalEventLog(Path(state) / "events")
    writers, servers = [], []
    for mode in ("passthrough", "buffered"):
        writer = EventWriter(log.producer())
        gateway = Gateway(
            spec,
            keys={spec.subscriptions[0].id: KEY},
            backend_secret=BACKEND,
            sink=writer,
            backend_urls={b.name: sim_url for b in spec.backends},
            capture=mode,  # type: ignore[arg-type]
        )
        writers.append(writer)
        servers.append(ServerThread(gateway, name=f"gateway-{mode}").start())
    conn.send([s.url for s in servers])
    conn.recv()  # stop
    for server in servers:
        server.stop()
    for writer in writers:
        writer.close()
    conn.send(log.last_sequence_number() + 1)


def _stream_once(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, float]:
    body = {**BODY, "stream": True}
    start = time.perf_counter()
    ttft = None
    with client.stream("POST", url + PATH, json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if (
                ttft is None
                and line.startswith("data: ")
                and '"content":"' in line
                and '"content":""' not in line
            ):
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    if ttft is None:
        raise RuntimeError(f"no content in the stream from {url}")
    return ttft, total


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(urls: dict[str, str], calls: int) -> dict[str, Any]:
    headers = {"direct": {"api-key": BACKEND}}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
    with httpx.Client(timeout=60) as client:
        for name, url in urls.items():  # warm-up: connections, imports, tokenizer caches
            for _ in range(3):
                _stream_once(client, url, headers.get(name, {"api-key": KEY}))
        for _ in range(calls):
            for name, url in urls.items():
                samples[name].append(_stream_once(client, url, headers.get(name, {"api-key": KEY})))
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


async def _throughput_one(
    url: str, headers: dict[str, str], concurrency: int, seconds: float
) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                r = await client.post(url + PATH, json=BODY, headers=headers)
                r.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="streamed calls per target")
    parser.add_argument("--ttft-ms", type=float, default=60.0)
    parser.add_argument("--tps", type=float, default=400.0, help="simulated tokens per second")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per reply")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput target")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "gateway.json"))
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as state:
        results: dict[str, Any] = {}
        for phase, (ttft, tps) in {
            "latency": (args.ttft_ms, args.tps),
            "throughput": (0.0, 0.0),
        }.items():
            sim_parent, sim_child = ctx.Pipe()
            gw_parent, gw_child = ctx.Pipe()
            sim_proc = ctx.Process(
                target=_serve_simulator, args=(sim_child, ttft, tps, args.tokens)
            )
            sim_proc.start()
            sim = sim_parent.recv()
            gw_proc = ctx.Process(target=_serve_gateways, args=(gw_child, sim, f"{state}/{phase}"))
            gw_proc.start()
            passthrough, buffered = gw_parent.recv()
            urls = {"direct": sim, "passthrough": passthrough, "buffered": buffered}
            try:
                if phase == "latency":
                    print(
                        f"latency: {args.calls} streamed calls per target, interleaved …",
                        flush=True,
                    )
                    results["latency"] = latency(urls, args.calls)
                else:
                    rates = {}
                    for name, url in urls.items():
                        headers = {"api-key": BACKEND if name == "direct" else KEY}
                        print(
                            f"throughput: {name}, {args.concurrency} in flight, {args.seconds:.0f} s …",
                            flush=True,
                        )
                        rates[name] = round(
                            asyncio.run(
                                _throughput_one(url, headers, args.concurrency, args.seconds)
                            ),
                            1,
                        )
                    results["throughput_rps"] = rates
            finally:
                gw_parent.send("stop")
                results.setdefault("events_logged", {})[phase] = gw_parent.recv()
                sim_parent.send("stop")
                sim_parent.recv()
                gw_proc.join(30)
                sim_proc.join(30)

    lat = results["latency"]
    d, p, b = lat["direct"], lat["passthrough"], lat["buffered"]
    added_ttft = p["ttft_p50_ms"] - d["ttft_p50_ms"]
    added_total = (p["total_p50_ms"] - d["total_p50_ms"]) / d["total_p50_ms"] * 100
    results["bar"] = {
        "passthrough_added_ttft_p50_ms": round(added_ttft, 2),
        "passthrough_added_total_p50_pct": round(added_total, 2),
        "ttft_ok": added_ttft <= 5.0,
        "total_ok": added_total <= 10.0,
        "buffered_ttft_over_total_p50": round(b["ttft_p50_ms"] / b["total_p50_ms"], 3),
    }
    results["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}

    print()
    print(
        f"{'target':<12} {'TTFT p50':>9} {'TTFT p95':>9} {'total p50':>10} {'total p95':>10} {'req/s':>8}"
    )
    for name in ("direct", "passthrough", "buffered"):
        r = lat[name]
        rps = results["throughput_rps"][name]
        print(
            f"{name:<12} {r['ttft_p50_ms']:>7.1f}ms {r['ttft_p95_ms']:>7.1f}ms "
            f"{r['total_p50_ms']:>8.1f}ms {r['total_p95_ms']:>8.1f}ms {rps:>8.1f}"
        )
    bar = results["bar"]
    print(
        f"\npass-through adds {bar['passthrough_added_ttft_p50_ms']:+.2f} ms to p50 TTFT (bar ≤ 5 ms: "
        f"{'met' if bar['ttft_ok'] else 'MISSED'}) and {bar['passthrough_added_total_p50_pct']:+.1f} % "
        f"to p50 total (bar ≤ 10 %: {'met' if bar['total_ok'] else 'MISSED'}); "
        f"buffered TTFT / total = {bar['buffered_ttft_over_total_p50']:.2f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"written to {out}")
    return 0 if bar["ttft_ok"] and bar["total_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
