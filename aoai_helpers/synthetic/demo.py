"""The bundled demo: the sample history ingested, the chargeback of its month (``make demo``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from aoai_helpers.analysis.report import BuCharge, chargeback_by_bu, unpriced_models
from aoai_helpers.db.business_units import BusinessUnit, import_bu_csv, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.pipeline.ingest import BatchResult
from aoai_helpers.pipeline.service import SAMPLE_MONTH, ensure_db, ingest_files, sample_path

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What :func:`run_demo` did and the chargeback it produced."""

    schema_changes: list[str]
    ingest: BatchResult
    month: str | None
    charges: list[BuCharge]
    unpriced: list[tuple[str, int]]


def run_demo(engine: Engine) -> DemoResult:
    """Ingest the bundled sample (v1 and v2 events); the chargeback of its month (:data:`SAMPLE_MONTH`)."""
    changes = ensure_db(engine)
    units: list[BusinessUnit] = import_bu_csv(sample_path("sample_bu.csv").read_text("utf-8"))
    with transaction(engine) as conn:
        set_bu(conn, units)
    result = ingest_files(engine, [sample_path("sample_events.jsonl")])
    month = SAMPLE_MONTH
    return DemoResult(
        changes, result, month, chargeback_by_bu(engine, month), unpriced_models(engine, month)
    )
