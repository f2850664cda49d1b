"""Pipeline entry points shared by the CLI, the notebooks and the function host.

:func:`ensure_db` (schema, default rates), :func:`ingest_files` and the bundled sample files.
Each opens what it needs (engine, files) and returns plain results; none prints. The demo
(sample in, chargeback out) is :mod:`aoai_helpers.synthetic.demo`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from aoai_helpers.core.pricing import default_rates
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.rates import store_rates
from aoai_helpers.db.schema import init_db
from aoai_helpers.db.tables import rate_table
from aoai_helpers.pipeline.files import iter_file_events
from aoai_helpers.pipeline.ingest import DEFAULT_BATCH_SIZE, BatchResult, Ingestor

__all__ = [
    "PARALLEL_THRESHOLD",
    "SAMPLE_MONTH",
    "auto_workers",
    "ensure_db",
    "ingest_files",
    "sample_path",
]


def ensure_db(engine: Engine, *, seed_default_rates: bool = True) -> list[str]:
    """Create or upgrade the schema; seed the default rates into a newly created rate table."""
    changes = init_db(engine)
    if seed_default_rates and "created table AoaiTokenRate" in changes:
        with transaction(engine) as conn:
            if not conn.execute(select(func.count()).select_from(rate_table)).scalar():
                defaults = default_rates()
                store_rates(conn, defaults)
                changes.append(
                    f"seeded {len(defaults)} default rates (edit them: rates list / rates set)"
                )
    return changes


def ingest_files(
    engine: Engine,
    paths: Sequence[str | Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_bytes: Callable[[int], None] | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    workers: int | None = None,
    deployment_models: dict[str, str] | None = None,
    default_model: str | None = None,
) -> BatchResult:
    """Ingest JSONL/JSON files (batches of ``batch_size``, one transaction each).

    ``workers``: processes that prepare batches while this one writes; ``None`` picks one per
    spare core for inputs of :data:`PARALLEL_THRESHOLD` bytes or more, none for small inputs.
    """
    if workers is None:
        workers = auto_workers(sum(Path(p).stat().st_size for p in paths if Path(p).is_file()))
    ingestor = Ingestor(engine, deployment_models=deployment_models, default_model=default_model)
    # One stream over all files: batches span file boundaries, and one worker pool serves all.
    events = itertools.chain.from_iterable(iter_file_events(p, on_bytes=on_bytes) for p in paths)
    return ingestor.ingest(events, batch_size=batch_size, on_batch=on_batch, workers=workers)


#: Inputs smaller than this are ingested in-process (a worker's start-up would not pay off).
PARALLEL_THRESHOLD: Final = 16 * 2**20


def auto_workers(input_bytes: int, cpus: int | None = None) -> int:
    """Worker processes for an input of ``input_bytes``: one per spare core (at most 3) when large."""
    cpus = os.cpu_count() if cpus is None else cpus
    if input_bytes < PARALLEL_THRESHOLD or not cpus or cpus < 2:
        return 0
    return min(cpus - 1, 3)


#: The month of the bundled sample history (``sample_events.jsonl``): the month ``make demo``
#: reports, whatever the date (a test holds every sample event to it).
SAMPLE_MONTH: Final = "2026-11"


def sample_path(name: str) -> Path:
    """Path of a bundled sample file (``sample_events.jsonl``, ``sample_bu.csv``)."""
    return Path(__file__).resolve().parents[1] / "data" / name
