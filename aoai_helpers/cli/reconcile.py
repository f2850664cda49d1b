"""``reconcile``: provisional rows take the exact usage APIM's language-model log recorded.

``python -m aoai_helpers reconcile [--since T] [--until T]`` queries the Log Analytics
workspace of the spec (``llm_log.workspace_id``) with the cloud's query endpoint and the
credential of ``--credential``; ``--local`` reads the local gateway's log
(``<state_dir>/llm-log/``) instead. Both run :func:`aoai_helpers.pipeline.reconcile.reconcile` once and
print its summary; rows still unmatched past the grace window are listed by count and cost.
Exit status: 0, also with pending or unmatched rows (they are reported, not errors); 1 for a
bad argument or configuration, or a query that kept failing (nothing was changed); 3 when the
database is unreachable.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from aoai_helpers import clock
from aoai_helpers.cli._options import DB_HELP, database_url
from aoai_helpers.cli.azure import azure_errors, azure_target_args, spec_from_args
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_reconcile_parser", "cmd_reconcile"]


def _instant(text: str) -> datetime:
    """``--since`` / ``--until``: an ISO 8601 time (``Z``, an offset, none = UTC, or a date)."""
    try:
        return clock.parse_instant(text).replace(tzinfo=None)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-30T18:00:00Z, not {text!r}"
        ) from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    from aoai_helpers.db.engine import masked_url
    from aoai_helpers.db.schema import require_schema
    from aoai_helpers.eventlog.llmlog import LlmLogSource, LocalLlmLog
    from aoai_helpers.pipeline.reconcile import reconcile

    spec = spec_from_args(args)
    if args.since and args.until and args.since >= args.until:
        raise ConfigError("--since must be before --until")
    url = database_url(args, spec)
    engine = require_schema(url)
    source: LlmLogSource
    try:
        if args.local:
            state = Path(args.state_dir or spec.local.state_dir)
            source = LocalLlmLog(state / "llm-log")
            print(f"reconciling {masked_url(url)} with the local language-model log {source.path}")
            result = reconcile(engine, source, spec.reconcile, since=args.since, until=args.until)
        else:
            with azure_errors():
                source = _workspace_source(spec, args)
                print(
                    f"reconciling {masked_url(url)} with {spec.llm_log.workspace_id} "
                    f"(Log Analytics, {spec.cloud})"
                )
                result = reconcile(
                    engine, source, spec.reconcile, since=args.since, until=args.until
                )
    finally:
        engine.dispose()
    print(result.summary())
    if result.unmatched.calls:
        print(
            f"unmatched: {result.unmatched.calls} provisional call(s) older than "
            f"{spec.reconcile.grace_hours:g} h are not in the language-model log; they stay "
            "prompt_only/estimated (reported as provisional, never as exact)"
        )
    return 0


def _workspace_source(spec: Any, args: argparse.Namespace) -> Any:
    from aoai_helpers.auth import credential
    from aoai_helpers.clouds import get_cloud
    from aoai_helpers.eventlog.llmlog_azure import LogAnalyticsLlmLog

    if not spec.llm_log.workspace_id:
        raise ConfigError(
            "the spec has no llm_log.workspace_id (the Log Analytics workspace's GUID); "
            "use --local for the local gateway's log"
        )
    cloud = get_cloud(spec.cloud)
    return LogAnalyticsLlmLog.from_spec(spec, credential(cloud, args.credential))


def add_reconcile_parser(sub: Any) -> None:
    """Register ``reconcile`` on the top-level subparsers ``sub``."""
    p = azure_target_args(
        sub.add_parser(
            "reconcile",
            help="give pass-through streams their exact usage from APIM's language-model log",
        )
    )
    p.add_argument("--db", metavar="URL", help=DB_HELP)
    p.add_argument(
        "--since",
        type=_instant,
        metavar="TIME",
        help="start of the window (default: the last run's end, less the lookback)",
    )
    p.add_argument(
        "--until", type=_instant, metavar="TIME", help="end of the window (default: now)"
    )
    p.add_argument("--local", action="store_true", help="read the local gateway's log (local mode)")
    p.add_argument(
        "--state-dir", metavar="DIR", help="local mode's state directory (default: the spec's)"
    )
    p.set_defaults(func=cmd_reconcile)
