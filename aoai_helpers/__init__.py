"""apim-aoai-proxy: capture Azure OpenAI token usage behind APIM and bill it to business units.

The public surface is re-exported here; modules are private in spirit (import from here).
Heavy modules (tokenizer, database) are imported lazily by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from aoai_helpers.analysis.budget import allocate, budget_burn
from aoai_helpers.analysis.report import BuCharge, chargeback_by_bu
from aoai_helpers.analysis.statement import issue_statement, month_report, statement
from aoai_helpers.core.events import EventError, Usage, UsageEvent, parse_event
from aoai_helpers.core.pricing import Rate, RateBook, cost_of, default_rates
from aoai_helpers.core.usage import ResolvedUsage, resolve_usage
from aoai_helpers.db.store import engine_from_url, init_db
from aoai_helpers.exceptions import (
    AoaiHelpersError,
    ConfigError,
    DatabaseError,
    InputError,
    ReconcileError,
    ReportError,
    TokenizerError,
)
from aoai_helpers.pipeline.files import iter_file_events
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent
from aoai_helpers.pipeline.service import ensure_db, ingest_files, run_demo
from aoai_helpers.spec import Spec, load_spec

__all__ = [
    "AoaiHelpersError",
    "BatchResult",
    "BuCharge",
    "ConfigError",
    "DatabaseError",
    "EventError",
    "Ingestor",
    "InputError",
    "Rate",
    "RateBook",
    "RawEvent",
    "ReconcileError",
    "ReportError",
    "ResolvedUsage",
    "Spec",
    "TokenizerError",
    "Usage",
    "UsageEvent",
    "__version__",
    "allocate",
    "budget_burn",
    "chargeback_by_bu",
    "cost_of",
    "default_rates",
    "engine_from_url",
    "ensure_db",
    "ingest_files",
    "init_db",
    "issue_statement",
    "iter_file_events",
    "load_spec",
    "month_report",
    "parse_event",
    "resolve_usage",
    "run_demo",
    "statement",
]
