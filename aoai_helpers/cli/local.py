"""CLI commands of local mode: ``local up|down|status|serve|generate`` (registered by
:mod:`aoai_helpers.cli.main`). The database is the one rule's (:mod:`aoai_helpers.cli._options`):
``report`` with the same ``--spec`` (or none) reads what ``local up`` and ``generate`` wrote.

Keys are printed masked; the full keys are in the owner-only state file ``stack.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aoai_helpers.cli._argtypes import whole
from aoai_helpers.cli._options import SPEC_HELP, database_url
from aoai_helpers.config import spec_path

if TYPE_CHECKING:
    from aoai_helpers.spec import Spec

__all__ = ["add_local_parser"]


def _spec(args: argparse.Namespace) -> tuple[Spec, str]:
    from aoai_helpers.spec import load_spec

    path = spec_path(getattr(args, "spec", None))
    return load_spec(path), str(path)


def _db(args: argparse.Namespace, spec: Spec) -> str:
    """--db, else $AOAI_DB_URL / $AOAI_DB_STORE_CONNECTION, else the spec's database."""
    return database_url(args, spec)


def _print_info(info: Any, spec: Spec) -> None:
    from aoai_helpers.core.masking import mask
    from aoai_helpers.core.terminal import safe
    from aoai_helpers.db.engine import masked_url

    print(f"  gateway    {info.gateway_url}   (capture: {info.capture})")
    print(f"  simulator  {info.simulator_url}")
    print(f"  database   {masked_url(info.database_url)}")
    print(f"  event log  {info.event_log}")
    for sub in spec.subscriptions:  # escaped before padding: the widths are those printed
        key = info.keys.get(sub.id, "")
        print(f"  key  {safe(sub.id):<24} {safe(sub.business_unit):<20} {safe(mask(key))}")


def cmd_local_up(args: argparse.Namespace) -> int:
    from aoai_helpers.local.control import up

    spec, path = _spec(args)
    info = up(
        spec, spec_path=path, db_url=_db(args, spec), capture=args.capture, state_dir=args.state_dir
    )
    state = f"{args.state_dir or spec.local.state_dir}/stack.json"
    print(f"local stack up (pid {info.pid}); clients read {state} (owner-only: full keys)")
    _print_info(info, spec)
    return 0


def cmd_local_serve(args: argparse.Namespace) -> int:
    from aoai_helpers.local.control import serve

    spec, path = _spec(args)
    serve(
        spec, spec_path=path, db_url=_db(args, spec), capture=args.capture, state_dir=args.state_dir
    )
    print("local stack stopped; every event logged was stored and checkpointed")
    return 0


def cmd_local_down(args: argparse.Namespace) -> int:
    from aoai_helpers.local.control import down

    spec, _ = _spec(args)
    info = down(spec, args.state_dir)
    print("no local stack running" if info is None else f"local stack (pid {info.pid}) stopped")
    return 0


def cmd_local_status(args: argparse.Namespace) -> int:
    from aoai_helpers.local.control import status

    spec, _ = _spec(args)
    st = status(spec, args.state_dir)
    if st.info is None or not st.alive:
        print(
            "local stack: not running"
            + (" (stale state file from a stopped stack; local down removes it)" if st.info else "")
        )
    else:
        up_down = {True: "up", False: "NOT RESPONDING"}
        print(f"local stack: running (pid {st.info.pid}), started {st.info.started}")
        print(f"  gateway {up_down[st.gateway_up]}, simulator {up_down[st.simulator_up]}")
        _print_info(st.info, spec)
    lag = st.events - (st.checkpoint + 1)
    print(
        f"  events logged {st.events}, stored and checkpointed {st.checkpoint + 1}, waiting {lag}"
    )
    return 0 if st.info is None or (st.alive and st.gateway_up and st.simulator_up) else 1


def cmd_local_generate(args: argparse.Namespace) -> int:
    import sys

    from aoai_helpers.analysis.report import month_bounds
    from aoai_helpers.clock import previous_month
    from aoai_helpers.db.engine import engine_from_url, masked_url
    from aoai_helpers.synthetic.rows import GenerateProgress, generate

    month = args.month or previous_month()
    month_bounds(month)  # a bad month before anything is opened
    spec, _ = _spec(args)
    url = _db(args, spec)
    print(f"generating {args.rows:,} calls of {month} (seed {args.seed}) into {masked_url(url)}")
    tty = sys.stderr.isatty()
    shown = [0]

    def progress(p: GenerateProgress) -> None:
        rate = p.done / p.seconds if p.seconds else 0.0
        line = f"  {p.done:,}/{p.total:,} rows, {p.stored:,} new ({rate:,.0f} rows/s)"
        if tty:
            print("\r" + line, end="" if p.done < p.total else "\n", file=sys.stderr, flush=True)
        elif p.done == p.total or p.done * 10 // max(p.total, 1) > shown[0]:
            shown[0] = p.done * 10 // max(p.total, 1)
            print(line, file=sys.stderr, flush=True)

    result = generate(
        engine_from_url(url),
        spec,
        rows=args.rows,
        month=month,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=progress,
    )
    print(result.summary())
    if result.mapped:
        print(
            f"  mapped {len(result.mapped)} subscription(s) to their business units, "
            "with synthetic budgets near their generated cost"
        )
    same = (f" --spec {args.spec}" if args.spec else "") + (f" --db {args.db}" if args.db else "")
    print(f"next: python -m aoai_helpers report --month {month}{same}")
    return 0


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--spec", metavar="FILE", help=SPEC_HELP)
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (default: the spec's local.state_dir, .aoai-local)",
    )
    return p


def _add_generate(local: Any, with_db: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = with_db(
        local.add_parser(
            "generate",
            help="write N synthetic priced calls for a month straight into the database (demos, benchmarks)",
        )
    )
    p.add_argument(
        "--spec",
        metavar="FILE",
        help="deployment spec: BUs, subscriptions, deployments (default: $AOAI_SPEC, ./gateway.yaml, else the bundled sample)",
    )
    p.add_argument("--rows", type=whole(0), required=True, help="calls to write")
    p.add_argument(
        "--month",
        help="YYYY-MM (default: the last complete month; months not over yet are refused)",
    )
    p.add_argument(
        "--seed",
        type=whole(0),
        default=0,
        help="random seed; the same seed, month and rows again store nothing new (default 0)",
    )
    p.add_argument(
        "--batch-size", type=whole(1), default=50_000, help="rows per transaction (default 50000)"
    )
    p.set_defaults(func=cmd_local_generate)


def add_local_parser(
    sub: Any, with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    """Register ``local`` and its actions on the top-level subparsers ``sub``."""
    local = sub.add_parser(
        "local", help="local mode: AOAI simulator, gateway, event log, consumer"
    ).add_subparsers(dest="local_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("up", cmd_local_up, "start the local stack in the background"),
        ("serve", cmd_local_serve, "run the local stack in the foreground until Ctrl-C"),
    ):
        p = with_db(_common(local.add_parser(name, help=text)))
        p.add_argument(
            "--capture",
            choices=["passthrough", "passthrough_usage", "buffered"],
            help="streaming capture mode (overrides the spec)",
        )
        p.set_defaults(func=func)
    _add_generate(local, with_db)
    _common(local.add_parser("down", help="stop the local stack")).set_defaults(func=cmd_local_down)
    _common(local.add_parser("status", help="show the local stack")).set_defaults(
        func=cmd_local_status
    )
