"""CLI commands of the ingestion function and the consumer: ``function build|deploy``, ``consume``.

``function deploy`` plans first (the hosting plan detected, settings diff with secrets masked,
the package, the upload endpoint, the roles of the function's identity) and asks before
changing anything (``--yes``); ``--plan`` stops after the plan (``--offline``: no credentials,
assuming the app has no settings yet). A plan with a problem (no such app, no identity,
Container Apps or Windows hosting) exits non-zero with one line, also under ``--plan``.
``function build`` writes the spec's ``function.max_batch_size`` into ``host.json``. ``consume`` reads Event Hubs (or the
local event log with ``--local``) into the database with the same ingest code as the
function, until Ctrl-C / SIGTERM: the batch in flight is committed and checkpointed first.
A database that cannot be opened at the start is retried with the backoff of a failing batch
(one line on stderr per failed attempt) until it opens or Ctrl-C / SIGTERM stops the wait.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aoai_helpers.cli._argtypes import whole
from aoai_helpers.cli._options import database_url
from aoai_helpers.cli.azure import azure_target_args, spec_from_args
from aoai_helpers.config import secret_from_env
from aoai_helpers.exceptions import ConfigError

if TYPE_CHECKING:
    from aoai_helpers.spec import Spec

__all__ = ["add_function_parsers"]


def _batch_size(spec: Spec) -> int | None:
    return spec.function.max_batch_size if spec.function is not None else None


def cmd_function_build(args: argparse.Namespace) -> int:
    from aoai_helpers.azure.functions.build import build_zip

    spec = spec_from_args(args)
    batch = _batch_size(spec)
    result = build_zip(Path(args.out), max_batch_size=batch)
    print(
        f"built {result.path} ({result.size_bytes:,} bytes, {len(result.files)} files, sha256 {result.sha256})"
    )
    print(
        f"host.json: maxEventBatchSize {batch if batch is not None else 'as the template (500)'}"
        + (
            " (the spec's function.max_batch_size)"
            if batch is not None
            else " (the spec has no function section)"
        )
    )
    print(
        "the same sources always give the same bytes; tokenizer files are inside (no download at cold start)"
    )
    return 0


def _function_db_url(args: argparse.Namespace, spec: Spec) -> str:
    from aoai_helpers.db.engine import masked_url

    url = database_url(args, spec)
    if url.startswith("sqlite"):
        raise ConfigError(
            f"the function needs a server database, not {masked_url(url)}: pass --db "
            "mssql+pyodbc://… (Azure SQL) or postgresql+psycopg://…, or set AOAI_DB_URL"
        )
    return url


def _package(args: argparse.Namespace, spec: Spec) -> tuple[Path, str | None]:
    """The zip to deploy (``--zip``, or built into ``--out``) and its sha256 when built."""
    from aoai_helpers.azure.functions.build import build_zip

    if args.zip:
        zip_path = Path(args.zip)
        if not zip_path.is_file():
            raise ConfigError(f"no such package: {zip_path}")
        return zip_path, None
    assert spec.function is not None
    built = build_zip(Path(args.out), max_batch_size=spec.function.max_batch_size)
    return built.path, built.sha256


def _confirmed(args: argparse.Namespace, question: str) -> bool:
    """``--yes``, else the answer on a terminal (``ConfigError`` when stdin is not one)."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError("not a terminal: review the plan above, then run again with --yes")
    return input(question).strip().lower() in ("y", "yes")


def cmd_function_deploy(args: argparse.Namespace) -> int:
    from aoai_helpers.azure.functions.deploy import (
        DeployError,
        deploy,
        make_web_clients,
        plan_deploy,
    )
    from aoai_helpers.cli.azure import azure_errors, sign_in

    spec = spec_from_args(args)
    if spec.function is None:
        raise ConfigError("the spec has no function section (function: name: …)")
    url = _function_db_url(args, spec)
    listen = secret_from_env("AOAI_EVENTHUB_LISTEN_CONNECTION")
    zip_path, sha = _package(args, spec)
    clients = credential = None
    with azure_errors():
        if not args.offline:
            cloud, subscription, credential = sign_in(spec, args)
            clients = make_web_clients(spec, cloud, subscription, credential)
        the_plan = plan_deploy(
            spec,
            clients=clients,
            db_url=url,
            eventhub_connection=listen,
            zip_path=zip_path,
            zip_sha256=sha,
            keep_settings=args.keep_setting or (),
        )
    print(the_plan.render())
    if the_plan.problems:
        raise DeployError(f"cannot deploy: {'; '.join(the_plan.problems)}")
    if args.plan:
        return 0
    if clients is None:
        raise ConfigError("--offline only plans: add --plan, or drop --offline to deploy")
    if not _confirmed(args, "deploy? [y/N] "):
        print("nothing changed")
        return 1
    with azure_errors():
        result = deploy(
            the_plan, clients, credential=credential, on_progress=lambda m: print(m, flush=True)
        )
    if result.warnings:
        print(
            f"deployed and indexed, with {len(result.warnings)} warning(s) above: the function "
            "may still be refused by Event Hubs or Log Analytics until the roles are granted"
        )
        return 0
    print("deployed and indexed")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return _consume(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open(engine: Any, shown: str, stop: threading.Event) -> bool:
    """Create or upgrade the schema, retried while the database is down (one line on stderr per
    failed attempt); False when ``stop`` was set first."""
    from aoai_helpers.pipeline.consume import retry_until_open
    from aoai_helpers.pipeline.service import ensure_db

    def failed(line: str) -> None:
        print(
            f"database {shown} cannot be opened: {line} (Ctrl-C stops)", file=sys.stderr, flush=True
        )

    return retry_until_open(lambda: ensure_db(engine), stop=stop, on_failure=failed) is not None


def _event_source(
    args: argparse.Namespace, spec: Spec, engine: Any
) -> tuple[Any, str, Path | None]:
    """The consumer (local event log with ``--local``, else Event Hubs), its description, and
    where the local log sets damaged regions aside (None for Event Hubs)."""
    if args.local:
        from aoai_helpers.eventlog.eventhub import LocalEventLog

        log = LocalEventLog(Path(args.state_dir or spec.local.state_dir) / "events")
        return (
            log.consumer(spec.event_hub.consumer_group),
            f"local event log {log.directory}",
            log.damaged_path,
        )
    from aoai_helpers.auth import credential as make_credential
    from aoai_helpers.clouds import get_cloud
    from aoai_helpers.eventlog.azure import AzureEventHubConsumer

    listen = secret_from_env("AOAI_EVENTHUB_LISTEN_CONNECTION")
    cred = None if listen else make_credential(get_cloud(spec.cloud), args.credential)
    consumer = AzureEventHubConsumer.from_spec(
        spec, credential=cred, connection_string=listen, engine=engine
    )
    hub = spec.event_hub
    return consumer, f"Event Hub {hub.namespace}/{hub.name} ({hub.consumer_group})", None


def _consume(args: argparse.Namespace, stop: threading.Event) -> int:
    """``consume`` with Ctrl-C / SIGTERM setting ``stop``: the database is opened (retried
    while it is down, one line per failed attempt), then the log is consumed until ``stop``."""
    from aoai_helpers.db.engine import engine_from_url, masked_url
    from aoai_helpers.pipeline.consume import consume
    from aoai_helpers.pipeline.ingest import Ingestor

    spec = spec_from_args(args)
    url = database_url(args, spec)
    engine = engine_from_url(url)
    if not _open(engine, masked_url(url), stop):
        print("stopped before the database could be opened: nothing consumed", flush=True)
        return 0
    consumer, source, damaged = _event_source(args, spec, engine)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(
        f"consuming {source} into {masked_url(url)}; Ctrl-C stops after the batch in flight",
        flush=True,
    )
    try:
        stats = consume(
            consumer,
            Ingestor(engine, deployment_models=spec.deployment_models()),
            batch_size=args.batch_size or spec.consumer.batch_size,
            stop=stop,
            idle_exit=args.until_idle,
            on_batch=lambda r: print(r.summary(), flush=True),
        )
    finally:
        consumer.close()
    print(f"stopped: {stats.batches} batches, {stats.result.summary()}")
    skipped = getattr(consumer, "skipped", None)  # the local log's damaged regions
    if skipped:
        print(
            f"{len(skipped)} damaged region(s) of the event log skipped "
            f"({sum(r.lost for r in skipped)} event(s) lost); their bytes are in {damaged}"
        )
    return 0


def add_function_parsers(sub: Any, with_db: Any) -> None:
    """Register ``function build|deploy`` and ``consume``."""
    fn = sub.add_parser(
        "function", help="the ingestion Azure Function: build and deploy"
    ).add_subparsers(dest="function_command", required=True, metavar="ACTION")
    p = fn.add_parser("build", help="build the deployable zip (reproducible)")
    p.add_argument("--out", default="dist", help="output directory (default: dist/)")
    p.add_argument(
        "--spec",
        metavar="FILE",
        help="spec whose function.max_batch_size goes into host.json (default: $AOAI_SPEC, "
        "./gateway.yaml, else the bundled sample)",
    )
    p.set_defaults(func=cmd_function_build)
    p = with_db(
        azure_target_args(
            fn.add_parser("deploy", help="set app settings, upload the zip, verify indexing")
        )
    )
    p.add_argument("--plan", action="store_true", help="show what would change, change nothing")
    p.add_argument(
        "--offline",
        action="store_true",
        help="with --plan: no credentials, assume no settings exist",
    )
    p.add_argument("--zip", metavar="FILE", help="deploy this package instead of building one")
    p.add_argument("--out", default="dist", help="where to build the package (default: dist/)")
    p.add_argument("--yes", action="store_true", help="deploy without asking")
    p.add_argument(
        "--keep-setting",
        action="append",
        metavar="NAME",
        help="on Flex Consumption: keep this app setting although Flex rejects it (repeatable)",
    )
    p.set_defaults(func=cmd_function_deploy)
    p = with_db(
        sub.add_parser(
            "consume", help="ingest from Event Hubs (or the local event log) until stopped"
        )
    )
    azure_target_args(p)
    p.add_argument("--local", action="store_true", help="read the local event log (local mode)")
    p.add_argument(
        "--state-dir", metavar="DIR", help="local mode state directory (default: the spec's)"
    )
    p.add_argument(
        "--batch-size",
        type=whole(1),
        help="events per transaction (default: the spec's consumer.batch_size)",
    )
    p.add_argument("--until-idle", action="store_true", help="stop when no event is waiting")
    p.set_defaults(func=cmd_consume)
