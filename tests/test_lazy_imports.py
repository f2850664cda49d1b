"""What a command imports: start-up time is import time (``benchmarks/startup.py`` times it).

Not a timing test: a subprocess runs the command and lists the heavy packages it loaded. The
parser (``--help``) loads neither SQLAlchemy nor pydantic; ``report`` needs SQLAlchemy but not
the spec's pydantic models (~140 ms of imports on the benchmark machine) nor pandas.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, sys
from aoai_helpers.cli.main import main
status = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "pydantic", "pandas"})
statement = sorted(
    m for m in sys.modules
    if m in {"aoai_helpers.analysis.statement", "aoai_helpers.pipeline.reconcile"}
)
print(json.dumps({"status": status, "heavy": heavy, "statement": statement}))
"""


def _loaded(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_report_on_an_empty_database_loads_no_pydantic_and_no_pandas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert _loaded("db", "init", "--db", url)["status"] == 0
    assert _loaded("report", "--db", url) == {"status": 0, "heavy": ["sqlalchemy"], "statement": []}


def test_report_loads_the_statement_modules_only_once_there_are_calls(tmp_path: Path) -> None:
    """An empty database answers before the statement modules (and reconciliation, which they
    import) are loaded; a month with calls needs them."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    sample = Path(__file__).resolve().parents[1] / "aoai_helpers" / "data" / "sample_events.jsonl"
    assert _loaded("ingest", str(sample), "--db", url, "--no-progress")["status"] == 0
    loaded = _loaded("report", "--db", url, "--month", "2026-11")
    assert loaded["status"] == 0
    assert loaded["statement"] == [
        "aoai_helpers.analysis.statement",
        "aoai_helpers.pipeline.reconcile",
    ]
