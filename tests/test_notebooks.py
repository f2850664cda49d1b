"""The guide notebooks: committed clean, shaped as the style asks, and run end to end in local mode.

The end-to-end test is what CI relies on to keep the notebooks from rotting: notebooks 00→04 and
99 run with papermill against a fresh SQLite database, fresh ports and a fresh state directory;
the executed copies go to ``out/test-artifacts/notebooks`` (git-ignored); the report rendered
from 04 is opened in headless Chromium; every output is scanned for the stack's secrets.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import browser
import nbformat
import openpyxl
import pytest
from cli_run import run_cli
from secrets_registry import record_output, register_secret
from sqlalchemy import func, select

from aoai_helpers.clock import month_bounds
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.local.control import status
from aoai_helpers.notebook_steps.runner import CLEAN_UP, GUIDE, run_notebook
from aoai_helpers.pipeline.service import SAMPLE_MONTH
from aoai_helpers.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SPEC = ROOT / "examples" / "gateway.yaml"
README = ROOT / "README.md"


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_the_guide_is_complete() -> None:
    assert [p.stem for p in NOTEBOOKS] == [*GUIDE, CLEAN_UP]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    book = _read(path)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: outputs committed"
            assert cell.execution_count is None, f"{path.name}: execution count committed"
    assert "widgets" not in book.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_first(path: Path) -> None:
    code = [c for c in _read(path).cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [0], f"{path.name}: exactly one parameters cell, the first code cell"
    names = {t.targets[0].id for t in ast.parse(code[0].source).body if isinstance(t, ast.Assign)}  # type: ignore[attr-defined]
    assert {"mode", "spec_path", "db_url"} <= names


_LOGIC = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.For,
    ast.While,
    ast.With,
    ast.Lambda,
    ast.Try,
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_call_helpers_and_hold_no_logic(path: Path) -> None:
    """Every cell but the parameters: at most one helper call, no definitions, loops or clients."""
    for cell in [c for c in _read(path).cells if c.cell_type == "code"][1:]:
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, _LOGIC), f"{path.name}: logic in a cell:\n{cell.source}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                assert isinstance(node, ast.ImportFrom) and node.module == "aoai_helpers", (
                    cell.source
                )
        calls = [
            n
            for stmt in tree.body
            for n in ast.walk(stmt)
            if isinstance(n, ast.Call) and not isinstance(getattr(n, "func", None), ast.Name)
        ]
        helper_calls = {ast.unparse(c.func) for c in calls}
        assert len(helper_calls) <= 2, f"{path.name}: one helper per cell:\n{cell.source}"


def _table(text: str, month: str) -> list[str]:
    """The chargeback table in ``text``: from its title to the unpriced models, stripped."""
    lines = [line.rstrip() for line in text.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith(f"Chargeback {month} "))
    last = next(i for i in range(first, len(lines)) if lines[i].startswith("Unpriced models:"))
    return lines[first : last + 1]


@pytest.mark.notebooks
def test_demo_runs_the_guide_end_to_end_then_99_cleans_up() -> None:
    """``make demo``: sample + history + notebooks 00→04 in local mode + report; then 99.

    It reports the bundled sample's month whatever the date, so what it prints is the table
    the README shows, character for character: on the real date in ``make test``, on the
    first minutes of a month in ``make test-stress`` (``AOAI_NOW``).
    """
    spec = load_spec(SPEC)
    out = browser.ARTIFACTS / "demo"
    shutil.rmtree(out, ignore_errors=True)
    done = run_cli("demo", "--out", str(out), "--spec", str(SPEC), timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # kernel shutdown notices are not errors; anything else would be
    month = SAMPLE_MONTH
    assert _table(done.stdout, month) == _table(README.read_text("utf-8"), month)
    assert "everything it started is stopped" in done.stdout
    state = out / ".aoai-local"
    keys = json.loads((state / "keys.json").read_text("utf-8"))
    register_secret(*keys["subscriptions"].values(), keys["backend"])
    assert not status(spec, str(state)).alive, "the demo stops the local stack it started"

    executed = sorted((out / "notebooks").glob("*.ipynb"))
    assert [p.stem for p in executed] == list(GUIDE)
    params = {
        "mode": "local",
        "spec_path": str(SPEC),
        "db_url": f"sqlite:///{out / 'demo.db'}",
        "state_dir": str(state),
        "out_dir": str(out),
    }
    executed.append(run_notebook(CLEAN_UP, out / "notebooks", params))
    for path in executed:
        for cell in _read(path).cells:
            for output in cell.get("outputs", []):
                assert output.output_type != "error", f"{path.name}: {output}"
        record_output(f"notebook {path.name}", path.read_text("utf-8"))

    start, end = month_bounds(month)
    engine = engine_from_url(params["db_url"])
    try:
        with transaction(engine) as conn:
            t = token_table.c
            live = t.SubscriptionId.like("bu-%")
            in_month = live & (t.ExecTimeUTC >= start) & (t.ExecTimeUTC < end)
            history = conn.execute(
                select(func.count()).select_from(token_table).where(in_month)
            ).scalar_one()
            days = conn.execute(
                select(func.count(func.distinct(t.ExecDateUTC))).where(in_month)
            ).scalar_one()
            smoke = conn.execute(
                select(func.count()).select_from(token_table).where(live & (t.ExecTimeUTC >= end))
            ).scalar_one()
    finally:
        engine.dispose()
    assert history > 600 and days == (end - start).days  # calls on every day of the month
    assert smoke >= 7  # the smoke test's calls: dated now, after the reported month

    workbook = openpyxl.load_workbook(out / f"chargeback-{month}.xlsx")
    assert workbook.sheetnames[0] == "Summary"
    assert {"Finance", "Marketing", "R&D"} <= set(workbook.sheetnames)
    workbook.close()
    assert (out / f"chargeback-{month}.csv").read_text("utf-8").count("\n") >= 4

    html = out / "report.html"
    text = html.read_text("utf-8")
    assert "report.chargeback()" not in text, "code cells are left out of the report"
    record_output("report.html", text)
    browser.chromium_or_skip()
    check = browser.check_report(html, browser.ARTIFACTS / "demo-report.png")
    check.assert_ok(expect_charts=6)  # daily cost, each of the 4 BUs' daily trend, budgets
