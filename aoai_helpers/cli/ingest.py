"""CLI: ``ingest FILE…`` — usage events from JSONL/JSON files into the database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aoai_helpers.cli._argtypes import mapping, whole
from aoai_helpers.cli._options import open_engine, with_db
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_ingest_parser"]


def _checked_files(names: list[str]) -> list[Path]:
    paths = [Path(p) for p in names]
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise ConfigError(
            "a folder, not a file: " + ", ".join(folders) + " (name the files, e.g. DIR/*.jsonl)"
        )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError("no such file: " + ", ".join(missing))
    return paths


def _progress_bar(paths: list[Path]) -> Any:
    from tqdm import tqdm

    compressed = any(p.suffix == ".gz" for p in paths)  # progress counts decompressed bytes
    return tqdm(
        total=None if compressed else sum(p.stat().st_size for p in paths),
        unit="B",
        unit_scale=True,
        desc="ingest",
        file=sys.stderr,
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from aoai_helpers.pipeline.service import ensure_db, ingest_files

    paths = _checked_files(args.files)
    engine = open_engine(args)
    ensure_db(engine)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = _progress_bar(paths) if show else None
    try:
        result = ingest_files(
            engine,
            paths,
            batch_size=args.batch_size,
            on_bytes=bar.update if bar else None,
            workers=args.workers,
            deployment_models=dict(args.model_map or []),
            default_model=args.default_model,
        )
    finally:
        if bar:
            bar.close()
    print(result.summary())
    if result.unknown_models:
        print(
            "unknown models (estimated with o200k_base, priced only if a rate exists): "
            + ", ".join(sorted(result.unknown_models))
        )
    return 0


def add_ingest_parser(sub: Any) -> None:
    """Register ``ingest``."""
    p = with_db(sub.add_parser("ingest", help="ingest usage events from JSONL/JSON files"))
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSONL (one event per line), JSON array or object; .gz ok",
    )
    p.add_argument(
        "--batch-size", type=whole(1), default=5000, help="events per transaction (default 5000)"
    )
    p.add_argument(
        "--model-map",
        action="append",
        type=mapping,
        metavar="DEPLOYMENT=MODEL",
        help="the model behind a deployment name, for events whose response names none (repeatable)",
    )
    p.add_argument(
        "--default-model",
        metavar="MODEL",
        help="model of events that name none at all (v1 streams whose requests carry no model)",
    )
    p.add_argument(
        "--workers",
        type=whole(0),
        default=None,
        help="processes preparing batches while one writes (default: one per spare core for inputs of 16 MB or more; 0 = in-process)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    p.set_defaults(func=cmd_ingest)
