"""aoai_helpers.analysis.html_report: an executed notebook → an offline HTML page that works in Chromium.

The end-to-end tests execute ``tests/data/notebooks/report_fixture.ipynb`` (markdown, a
pandas table, three ``display.chart`` charts) with papermill, render it and open the page in
headless Chromium (``tests/browser.py``); the screenshot is kept under
``out/test-artifacts/html_report/``. The other tests build small notebooks in memory.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import browser
import nbformat
import plotly.graph_objects as go
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from playwright.sync_api import BrowserContext

from aoai_helpers.analysis.html_report import (
    ReportError,
    check_offline,
    network_references,
    render_html,
)
from aoai_helpers.exceptions import InputError
from aoai_helpers.notebook_steps.display import chart, reset_plotlyjs

FIXTURE = Path(__file__).parent / "data" / "notebooks" / "report_fixture.ipynb"
ARTIFACTS = browser.ARTIFACTS / "html_report"


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserContext]:
    with browser.launch() as context:
        yield context


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture notebook executed by papermill in a fresh ``python3`` kernel."""
    import papermill

    work = tmp_path_factory.mktemp("executed")
    out = work / "report_fixture.ipynb"
    papermill.execute_notebook(
        str(FIXTURE),
        str(out),
        parameters={"month": "2026-10"},
        kernel_name="python3",
        cwd=str(work),
        progress_bar=False,
    )
    return out


def executed_notebook(tmp_path: Path, *cells: Any, name: str = "nb.ipynb") -> Path:
    """An already "executed" notebook file (execution counts set) made of ``cells``."""
    for count, cell in enumerate((c for c in cells if c.cell_type == "code"), start=1):
        cell.execution_count = count
    path = tmp_path / name
    nbformat.write(new_notebook(cells=list(cells)), path)
    return path


def chart_output(fig: go.Figure) -> Any:
    bundle = chart(fig)._repr_mimebundle_()
    return new_output("display_data", data=bundle)


# ----------------------------------------------------------------------------- the fixture notebook


def test_committed_fixture_has_no_outputs() -> None:
    nb = nbformat.read(FIXTURE, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.notebooks
def test_report_keeps_markdown_and_outputs_and_drops_code(executed: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    out = render_html(executed, tmp_path / "report.html", title="Fixture cost report")
    seconds = time.perf_counter() - started
    html = out.read_text(encoding="utf-8")

    assert "CODE-SENTINEL" not in html and "import pandas" not in html
    assert "<title>Fixture cost report</title>" in html
    assert "Spend this month was $1,234.50 and $56.70" in html  # no MathJax eating the dollars
    assert '<table border="1" class="dataframe">' in html and "Finance" in html
    assert html.count('class="aoai-chart"') == 3
    assert html.count("window.__aoaiSavedDefine = window.define") == 1  # plotly.js inlined once
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert network_references(html) == []
    check_offline(out)
    assert seconds < 10, f"render took {seconds:.1f}s"


@pytest.mark.notebooks
def test_report_renders_in_chromium(executed: Path, chromium: BrowserContext) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    html = render_html(executed, ARTIFACTS / "fixture_report.html", title="Fixture cost report")

    result = browser.check_report(html, ARTIFACTS / "fixture_report.png", context=chromium)

    result.assert_ok(expect_charts=3)
    assert result.plotly_loaded
    assert result.screenshot.stat().st_size > 20_000
    print(f"chromium check: {result.seconds:.2f}s, charts: {[c.marks for c in result.charts]}")


# ----------------------------------------------------------------------------- the checker can fail


def test_checker_reports_script_errors_and_undrawn_charts(
    tmp_path: Path, chromium: BrowserContext
) -> None:
    reset_plotlyjs()
    good = chart(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))._repr_mimebundle_()["text/html"]
    empty = chart(go.Figure(go.Bar(x=[], y=[])))._repr_mimebundle_()["text/html"]
    page = tmp_path / "broken.html"
    page.write_text(
        f"<!DOCTYPE html><html><body>{good}{empty}"
        '<div class="aoai-chart" id="broken-data"></div>'
        "<script>Plotly.newPlot('broken-data', JSON.parse('{not json'));</script>"
        "</body></html>"
    )

    result = browser.check_report(
        page, ARTIFACTS / "negative_broken.png", context=chromium, timeout_s=3
    )

    problems = result.problems(expect_charts=3)
    assert any(p.startswith("page error:") and "JSON" in p for p in problems), problems
    not_rendered = [c.id for c in result.charts if not c.rendered]
    assert len(not_rendered) == 2 and "broken-data" in not_rendered, result.charts
    assert sum(c.rendered for c in result.charts) == 1
    with pytest.raises(pytest.fail.Exception, match="not rendered"):
        result.assert_ok()


def test_checker_reports_a_page_without_plotlyjs(tmp_path: Path, chromium: BrowserContext) -> None:
    reset_plotlyjs()
    chart(go.Figure(go.Bar(x=["a"], y=[1])))._repr_mimebundle_()  # plotly.js used up here
    orphan = chart(go.Figure(go.Bar(x=["a"], y=[1])))._repr_mimebundle_()["text/html"]
    page = tmp_path / "orphan.html"
    page.write_text(f"<!DOCTYPE html><html><body>{orphan}</body></html>")

    result = browser.check_report(
        page, ARTIFACTS / "negative_no_plotly.png", context=chromium, timeout_s=3
    )

    assert not result.plotly_loaded
    assert any("plotly.js is not loaded" in e for e in result.console_errors), result
    assert not result.charts[0].rendered
    assert "plotly.js is not on this page" in result.charts[0].text


def test_checker_blocks_and_reports_network_requests(
    tmp_path: Path, chromium: BrowserContext
) -> None:
    page = tmp_path / "online.html"
    page.write_text(
        "<!DOCTYPE html><html><head>"
        '<script src="https://cdn.example.invalid/require.min.js"></script>'
        '</head><body><img src="http://example.invalid/logo.png"></body></html>'
    )

    result = browser.check_report(
        page, ARTIFACTS / "negative_network.png", context=chromium, timeout_s=2
    )

    assert sorted(result.blocked_requests) == [
        "http://example.invalid/logo.png",
        "https://cdn.example.invalid/require.min.js",
    ]
    assert not result.ok()


def test_no_chromium_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        browser.chromium_or_skip()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"CI: no Chromium.*\.ci/run installs it"):
        browser.chromium_or_skip()


# ----------------------------------------------------------------------------- render_html


def test_render_refuses_a_network_reference_and_writes_nothing(tmp_path: Path) -> None:
    nb = executed_notebook(
        tmp_path,
        new_markdown_cell('Logo: <img src="https://example.com/logo.png">'),
        new_code_cell("1 + 1", outputs=[new_output("execute_result", data={"text/plain": "2"})]),
    )
    out = tmp_path / "out" / "report.html"

    with pytest.raises(ReportError, match=r"1 resource.*<img src='https://example.com/logo.png'>"):
        render_html(nb, out)
    assert not out.exists()
    assert not list(tmp_path.glob("out/.*.tmp"))


def test_render_drops_tagged_cells_and_outputs(tmp_path: Path) -> None:
    nb = executed_notebook(
        tmp_path,
        new_code_cell(
            "secret_setup()",
            metadata={"tags": ["remove-cell"]},
            outputs=[new_output("stream", name="stdout", text="HIDDEN-CELL\n")],
        ),
        new_code_cell(
            "noisy()",
            metadata={"tags": ["remove-output"]},
            outputs=[new_output("stream", name="stdout", text="HIDDEN-OUTPUT\n")],
        ),
        new_code_cell(
            "shown()", outputs=[new_output("stream", name="stdout", text="SHOWN-OUTPUT\n")]
        ),
    )

    html = render_html(nb, tmp_path / "r.html").read_text(encoding="utf-8")

    assert "SHOWN-OUTPUT" in html
    assert "HIDDEN-CELL" not in html and "HIDDEN-OUTPUT" not in html
    assert "shown()" not in html
    assert "<title>r</title>" in html


def test_render_refuses_a_notebook_with_an_error(tmp_path: Path) -> None:
    error = new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])
    nb = executed_notebook(tmp_path, new_code_cell("1/0", outputs=[error]))

    with pytest.raises(ReportError, match="cell 1 raised ZeroDivisionError: division by zero"):
        render_html(nb, tmp_path / "r.html")


def test_render_refuses_a_notebook_never_executed(tmp_path: Path) -> None:
    path = tmp_path / "fresh.ipynb"
    shutil.copy(FIXTURE, path)

    with pytest.raises(ReportError, match="never executed"):
        render_html(path, tmp_path / "r.html")


def test_render_reports_unreadable_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read notebook"):
        render_html(tmp_path / "missing.ipynb", tmp_path / "r.html")
    (tmp_path / "bad.ipynb").write_text("not json")
    with pytest.raises(InputError, match="is not a notebook"):
        render_html(tmp_path / "bad.ipynb", tmp_path / "r.html")


def test_render_replaces_an_existing_report(tmp_path: Path) -> None:
    nb = executed_notebook(
        tmp_path, new_code_cell("x", outputs=[new_output("stream", name="stdout", text="NEW\n")])
    )
    out = tmp_path / "r.html"
    out.write_text("OLD")

    render_html(nb, out)

    assert "NEW" in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb", "r.html"]


# ----------------------------------------------------------------------------- network_references


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            '<script src="https://cdn.x/require.js"></script>',
            ["<script src='https://cdn.x/require.js'>"],
        ),
        ('<link rel="stylesheet" href="//cdn.x/a.css">', ["<link href='//cdn.x/a.css'>"]),
        ('<img srcset="a.png 1x, http://x/b.png 2x">', ["<img srcset='http://x/b.png'>"]),
        ('<iframe src="HTTP://x/"></iframe>', ["<iframe src='HTTP://x/'>"]),
        (
            "<style>@import 'https://x/f.css'; p { color: red }</style>",
            ["<style> 'https://x/f.css'"],
        ),
        (
            '<div style="background: url(https://x/bg.png)"></div>',
            ["<div style> 'https://x/bg.png'"],
        ),
        ('<a href="https://learn.microsoft.com/azure/">docs</a>', []),
        ('<img src="data:image/png;base64,AAAA"><script src="local.js"></script>', []),
        ("<script>var u = 'https://cdn.plot.ly/x.js';</script>", []),
        ('<svg xmlns="http://www.w3.org/2000/svg"></svg>', []),
    ],
)
def test_network_references(html: str, expected: list[str]) -> None:
    assert network_references(html) == expected


def test_check_offline_reads_the_file(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text('<script src="https://x/y.js"></script>')
    with pytest.raises(ReportError, match="must be self-contained"):
        check_offline(page)
    with pytest.raises(InputError):
        check_offline(tmp_path / "missing.html")
