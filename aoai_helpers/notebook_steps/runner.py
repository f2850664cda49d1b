"""Run the guide notebooks with papermill; the notebook demo (``make demo``) and report.

:func:`run_notebook` executes one notebook in a fresh kernel with the given parameters and
writes the executed copy to ``out_dir`` (never over the committed notebook). A failing cell
becomes a :class:`~aoai_helpers.exceptions.AoaiHelpersError` naming the notebook, the cell and
the error, with the path of the executed copy to look at.

:func:`run_notebook_demo` is ``make demo``: the bundled sample history of an existing deployment (v1 and
v2 events, ingested from file), a month of mixed traffic from every BU through a throwaway
local gateway (:mod:`aoai_helpers.synthetic.history`), then notebooks 00→04 in local mode against
a fresh database, then the HTML report; whatever it started is stopped at the end, failed or
not. :func:`render_report` is ``make report``: notebook 04 on an existing database, rendered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aoai_helpers import clock
from aoai_helpers.clock import month_bounds
from aoai_helpers.db.engine import engine_from_url, sqlite_path
from aoai_helpers.db.schema import require_schema
from aoai_helpers.exceptions import AoaiHelpersError, ConfigError
from aoai_helpers.pipeline.service import SAMPLE_MONTH

__all__ = [
    "CLEAN_UP",
    "GUIDE",
    "DemoRun",
    "notebooks_dir",
    "render_report",
    "run_notebook",
    "run_notebook_demo",
]

GUIDE: Final = (
    "00_prerequisites",
    "01_provision_apim",
    "02_deploy_function",
    "03_smoke_test",
    "04_cost_analysis",
)
CLEAN_UP: Final = "99_clean_up"
REPORT_NOTEBOOK: Final = "04_cost_analysis"
#: The organisation the demo's finance report is titled with.
DEMO_ORGANISATION: Final = "Contoso"
#: A fixed monthly amount the demo's report allocates across BUs (notebook 04's allocate_amount).
DEMO_ALLOCATION: Final = 500.0


def notebooks_dir() -> Path:
    """The committed notebooks (``notebooks/`` of a source checkout)."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if not (here / f"{GUIDE[0]}.ipynb").exists():
        raise ConfigError(
            f"the guide notebooks are not at {here}: run from a clone of the apim-aoai-proxy repository"
        )
    return here


def run_notebook(
    name: str,
    out_dir: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    *,
    source_dir: Path | None = None,
    timeout: float = 600.0,
) -> Path:
    """Execute ``<name>.ipynb`` with ``parameters``; return the executed copy in ``out_dir``.

    papermill runs in a child process (``_execute.py``) that returns only once its kernel is
    shut down; what the kernel printed on stderr is passed on to this process's stderr.
    ``timeout`` bounds each cell.
    """
    try:
        import papermill  # noqa: F401  (the child imports it; a missing extra is one line here)
    except ModuleNotFoundError:
        raise ConfigError(
            "papermill is not installed: pip install 'apim-aoai-proxy[notebooks]'"
        ) from None
    source = (source_dir or notebooks_dir()) / f"{name}.ipynb"
    if not source.exists():
        raise ConfigError(f"no notebook {source}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    executed = out / source.name
    request = {
        "source": str(source),
        "executed": str(executed),
        "parameters": dict(parameters),
        "cwd": str(source.parent),
        "timeout": timeout,
    }
    done = subprocess.run(
        [sys.executable, "-I", str(Path(__file__).with_name("_execute.py"))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.stderr:
        sys.stderr.write(done.stderr)
        sys.stderr.flush()
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AoaiHelpersError(f"notebook {name} could not run (exit {done.returncode}): {last}")
    if not report.get("ok"):
        raise AoaiHelpersError(
            f"notebook {name} failed in cell {report.get('cell')}: {report.get('ename')}: "
            f"{report.get('evalue')} (executed copy: {executed})"
        )
    return executed


@dataclass
class DemoRun:
    """What :func:`run_notebook_demo` produced."""

    month: str
    db_url: str
    sample_summary: str = ""
    history_calls: int = 0
    history_stored: int = 0
    notebooks: list[Path] = field(default_factory=list)
    report: Path | None = None
    bill: Path | None = None
    statement_xlsx: Path | None = None
    statement_csv: Path | None = None


def _fresh_sqlite(db_url: str) -> None:
    """Remove a demo SQLite file (and its WAL files) so each demo starts empty."""
    path = sqlite_path(db_url)
    if path is not None:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)


def _check_demo_month(month: str) -> None:
    """The demo never makes calls dated in the future: its month must be over by the clock."""
    if not clock.is_complete(month):
        _, end = month_bounds(month)
        raise ConfigError(
            f"the demo reports {month}, the month of its bundled history, and the clock "
            f"({clock.now():%Y-%m-%dT%H:%M:%SZ}) is before its end: set {clock.ENV_VAR} to "
            f"{end:%Y-%m-%d} or later, or unset it"
        )


def _demo_traffic(spec: Any, run: DemoRun, say: Callable[[str], None]) -> None:
    """The bundled sample history, then a month of traffic through a throwaway gateway."""
    from aoai_helpers.synthetic.demo import run_demo as ingest_sample
    from aoai_helpers.synthetic.history import drive_history, plan_history

    say("sample: the history of an existing deployment (original-policy v1 and v2 events)")
    engine = engine_from_url(run.db_url)
    try:
        sample = ingest_sample(engine)
    finally:
        engine.dispose()
    run.sample_summary = sample.ingest.summary()
    say(f"  {run.sample_summary}")
    planned = plan_history(spec, run.month, now=clock.now())
    say(
        f"history: {len(planned)} calls from {len(spec.subscriptions)} BUs over {run.month} through a throwaway local gateway"
    )
    step = max(1, len(planned) // 5)
    history = drive_history(
        spec,
        run.db_url,
        planned,
        progress=lambda n, total: (
            say(f"  {n}/{total} calls") if n % step == 0 or n == total else None
        ),
    )
    run.history_calls, run.history_stored = len(history.calls), history.stored


def _demo_notebooks(
    run: DemoRun, spec_file: Path, out: Path, state: Path, say: Callable[[str], None]
) -> None:
    """Notebooks 00→04 in local mode on the demo's database; the finance files checked."""
    parameters = {
        "mode": "local",
        "spec_path": str(spec_file),
        "db_url": run.db_url,
        "state_dir": str(state),
        "out_dir": str(out),
        "month": run.month,
    }
    # The demo's finance report also splits a month of provisioned throughput by token share.
    extra = {
        REPORT_NOTEBOOK: {"allocate_amount": DEMO_ALLOCATION, "organisation": DEMO_ORGANISATION}
    }
    for name in GUIDE:
        say(f"notebook {name} (local mode)")
        run.notebooks.append(
            run_notebook(name, out / "notebooks", {**parameters, **extra.get(name, {})})
        )


def _demo_bill(run: DemoRun, out: Path, say: Callable[[str], None]) -> Path:
    """The month's Azure bill as Cost Management would export it
    (:mod:`aoai_helpers.synthetic.azure_bill`), imported like a real one (``bill import``)."""
    from aoai_helpers.billing.store import import_cost_details
    from aoai_helpers.billing.text import import_line
    from aoai_helpers.db.engine import engine_from_url
    from aoai_helpers.synthetic.azure_bill import write_demo_bill

    engine = engine_from_url(run.db_url)
    try:
        path = write_demo_bill(engine, run.month, out / f"azure-costdetails-{run.month}.csv")
        say(f"Azure bill: {import_line(import_cost_details(engine, path))}")
    finally:
        engine.dispose()
    return path


def run_notebook_demo(
    out_dir: str | os.PathLike[str],
    *,
    spec_path: str | os.PathLike[str],
    db_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoRun:
    """``make demo``: history traffic, notebooks 00→04 in local mode, the HTML report.

    The demo reports one fixed, complete month whatever the date: :data:`SAMPLE_MONTH`, the
    month of the bundled sample history, with the month's traffic planned by a fixed seed, so
    its table is the same every day (the README shows it). A clock before that month's end
    (``AOAI_NOW``) is refused: the demo never makes calls dated in the future.

    ``db_url`` defaults to ``<out_dir>/demo.db``, recreated on every run; a database given
    explicitly is used as it is (the demo adds to it). (Not
    :func:`aoai_helpers.synthetic.demo.run_demo`, which only ingests the bundled sample.)
    """
    from aoai_helpers.local.control import down
    from aoai_helpers.spec import load_spec

    say = progress or (lambda _line: None)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec_file = Path(spec_path).resolve()
    spec = load_spec(spec_file)
    _check_demo_month(SAMPLE_MONTH)
    if db_url is None:
        db_url = f"sqlite:///{out / 'demo.db'}"
        _fresh_sqlite(db_url)
    state = out / ".aoai-local"
    run = DemoRun(SAMPLE_MONTH, db_url)
    down(spec, str(state))  # a stack left running by an interrupted demo
    _demo_traffic(spec, run, say)
    run.bill = _demo_bill(run, out, say)
    try:
        _demo_notebooks(run, spec_file, out, state, say)
    finally:
        down(spec, str(state))
    run.report = out / "report.html"  # finance's report, written by notebook 04
    run.statement_xlsx = out / f"chargeback-{run.month}.xlsx"
    run.statement_csv = out / f"chargeback-{run.month}.csv"
    for produced in (run.report, run.statement_xlsx, run.statement_csv):
        if not produced.exists():
            raise AoaiHelpersError(f"notebook {REPORT_NOTEBOOK} did not write {produced}")
    return run


def render_report(
    out_dir: str | os.PathLike[str],
    *,
    db_url: str,
    month: str | None = None,
    spec_path: str | os.PathLike[str] | None = None,
) -> Path:
    """``notebooks report``: run notebook 04 on ``db_url`` and render it, without its code, to
    ``<out_dir>/04_cost_analysis.html`` (the engineer's page; the notebook itself writes
    finance's ``<out_dir>/report.html``)."""
    from aoai_helpers.analysis.html_report import render_html
    from aoai_helpers.config import spec_path as resolve_spec_path

    require_schema(db_url).dispose()  # a missing database is one line here, not a failed cell
    out = Path(out_dir).resolve()
    executed = run_notebook(
        REPORT_NOTEBOOK,
        out / "notebooks",
        {
            "mode": "local",
            "spec_path": str(resolve_spec_path(str(spec_path) if spec_path else None).resolve()),
            "db_url": db_url,
            "out_dir": str(out),
            "month": month or "",
        },
    )
    return render_html(executed, out / f"{REPORT_NOTEBOOK}.html")
