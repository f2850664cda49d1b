"""apim-aoai-proxy: capture Azure OpenAI token usage behind APIM and bill it to business units.

The public surface is re-exported here, lazily (PEP 562): ``import aoai_helpers`` imports
nothing heavy, and ``aoai_helpers.ingest_files`` imports its module on first use — so
``python -m aoai_helpers --help`` pays for no database, tokenizer or pydantic import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from aoai_helpers.analysis.budget import allocate, budget_burn
    from aoai_helpers.analysis.report import BuCharge, chargeback_by_bu
    from aoai_helpers.analysis.statement import issue_statement, month_report, statement
    from aoai_helpers.core.events import EventError, Usage, UsageEvent, parse_event
    from aoai_helpers.core.pricing import Rate, RateBook, cost_of, default_rates
    from aoai_helpers.core.usage import ResolvedUsage, resolve_usage
    from aoai_helpers.db.engine import engine_from_url
    from aoai_helpers.db.schema import init_db
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
    from aoai_helpers.pipeline.service import ensure_db, ingest_files
    from aoai_helpers.spec import Spec, load_spec
    from aoai_helpers.synthetic.demo import run_demo

#: Public name → the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "AoaiHelpersError": "aoai_helpers.exceptions",
    "BatchResult": "aoai_helpers.pipeline.ingest",
    "BuCharge": "aoai_helpers.analysis.report",
    "ConfigError": "aoai_helpers.exceptions",
    "DatabaseError": "aoai_helpers.exceptions",
    "EventError": "aoai_helpers.core.events",
    "Ingestor": "aoai_helpers.pipeline.ingest",
    "InputError": "aoai_helpers.exceptions",
    "Rate": "aoai_helpers.core.pricing",
    "RateBook": "aoai_helpers.core.pricing",
    "RawEvent": "aoai_helpers.pipeline.ingest",
    "ReconcileError": "aoai_helpers.exceptions",
    "ReportError": "aoai_helpers.exceptions",
    "ResolvedUsage": "aoai_helpers.core.usage",
    "Spec": "aoai_helpers.spec",
    "TokenizerError": "aoai_helpers.exceptions",
    "Usage": "aoai_helpers.core.events",
    "UsageEvent": "aoai_helpers.core.events",
    "allocate": "aoai_helpers.analysis.budget",
    "budget_burn": "aoai_helpers.analysis.budget",
    "chargeback_by_bu": "aoai_helpers.analysis.report",
    "cost_of": "aoai_helpers.core.pricing",
    "default_rates": "aoai_helpers.core.pricing",
    "engine_from_url": "aoai_helpers.db.engine",
    "ensure_db": "aoai_helpers.pipeline.service",
    "ingest_files": "aoai_helpers.pipeline.service",
    "init_db": "aoai_helpers.db.schema",
    "issue_statement": "aoai_helpers.analysis.statement",
    "iter_file_events": "aoai_helpers.pipeline.files",
    "load_spec": "aoai_helpers.spec",
    "month_report": "aoai_helpers.analysis.statement",
    "parse_event": "aoai_helpers.core.events",
    "resolve_usage": "aoai_helpers.core.usage",
    "run_demo": "aoai_helpers.synthetic.demo",
    "statement": "aoai_helpers.analysis.statement",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
