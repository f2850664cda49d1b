"""aoai_helpers.notebook_steps.display: the MIME bundle, plotly.js inlined once, and charts drawn in Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import browser
import plotly.graph_objects as go
import pytest
from playwright.sync_api import BrowserContext

from aoai_helpers.analysis.html_report import network_references
from aoai_helpers.notebook_steps.display import (
    PLOTLY_MIME,
    Chart,
    chart,
    inline_script_without_amd,
    reset_plotlyjs,
)

ARTIFACTS = browser.ARTIFACTS / "display"


@pytest.fixture(autouse=True)
def _fresh_plotlyjs() -> Iterator[None]:
    """Each test starts as a fresh kernel would: plotly.js not emitted yet."""
    reset_plotlyjs()
    yield
    reset_plotlyjs()


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserContext]:
    with browser.launch() as context:
        yield context


def bar() -> go.Figure:
    return go.Figure(go.Bar(x=["Finance", "HR"], y=[12.5, 3.25]), layout={"title": "Cost by BU"})


def page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"
    )
    return path


# ----------------------------------------------------------------------------- the bundle


def test_bundle_has_plotly_json_html_and_text() -> None:
    bundle = chart(bar())._repr_mimebundle_()

    assert set(bundle) == {PLOTLY_MIME, "text/html", "text/plain"}
    figure = json.loads(json.dumps(bundle[PLOTLY_MIME]))  # plain JSON, as Jupyter stores it
    assert figure["data"][0]["type"] == "bar"
    assert figure["layout"]["title"]["text"] == "Cost by BU"
    assert figure["config"] == {"responsive": True, "displaylogo": False}
    assert bundle["text/plain"] == "<Chart 'Cost by BU': 1 trace>"


def test_plotlyjs_is_inlined_by_the_first_chart_only() -> None:
    first = chart(bar())._repr_mimebundle_()["text/html"]
    second = chart(bar())._repr_mimebundle_()["text/html"]

    assert "plotly.js v" in first and len(first) > 1_000_000
    assert "plotly.js v" not in second and len(second) < 50_000
    assert network_references(first) == [] and network_references(second) == []
    assert "cdn.plot.ly" not in second and "<script src" not in first


def test_excluding_html_does_not_use_up_plotlyjs() -> None:
    bundle = chart(bar())._repr_mimebundle_(exclude={"text/html"})
    assert "text/html" not in bundle

    assert "plotly.js v" in chart(bar())._repr_mimebundle_()["text/html"]


def test_reset_inlines_plotlyjs_again() -> None:
    chart(bar())._repr_mimebundle_()
    reset_plotlyjs()
    assert "plotly.js v" in chart(bar())._repr_mimebundle_()["text/html"]


def test_chart_is_a_snapshot_of_the_figure() -> None:
    fig = bar()
    c = chart(fig)
    fig.update_layout(title="changed")
    assert c.title == "Cost by BU"


def test_height_comes_from_the_layout() -> None:
    assert chart(bar()).height_px == 450
    tall = chart(go.Figure(go.Bar(x=[1], y=[1]), layout={"height": 600}))
    assert tall.height_px == 600
    assert "height:600px" in tall.to_html(include_plotlyjs=False)


def test_dict_figures_are_validated() -> None:
    assert (
        chart({"data": [{"type": "scatter", "y": [1, 2]}]}).figure["data"][0]["type"] == "scatter"
    )
    with pytest.raises(ValueError):
        chart({"data": [{"type": "no-such-trace"}]})


def test_text_cannot_close_the_script_element() -> None:
    evil = "</script><script>window.pwned = 1</script>"
    html = chart(go.Figure(go.Bar(x=[evil], y=[1]))).to_html(include_plotlyjs=False)
    assert evil not in html
    assert html.count("<script") == html.count("</script>") == 1


def test_chart_html_for_a_div_id() -> None:
    html = Chart(figure={"data": []}).to_html(include_plotlyjs=False, div_id="fixed")
    assert '<div id="fixed" class="aoai-chart"' in html


# ----------------------------------------------------------------------------- in Chromium


def test_charts_draw_in_chromium(tmp_path: Path, chromium: BrowserContext) -> None:
    evil = "</script><script>window.pwned = 1</script>"
    body = "\n".join(
        [
            chart(bar())._repr_mimebundle_()["text/html"],
            chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[2, 1, 3], name=evil)))._repr_mimebundle_()[
                "text/html"
            ],
        ]
    )
    result = browser.check_report(
        page(tmp_path, body), ARTIFACTS / "two_charts.png", context=chromium
    )

    result.assert_ok(expect_charts=2)
    assert all(c.marks > 0 for c in result.charts)


def test_charts_draw_when_requirejs_define_is_on_the_page(
    tmp_path: Path, chromium: BrowserContext
) -> None:
    """A page with an AMD loader (as nbconvert's stock template adds): plotly still global."""
    fake_requirejs = (
        "<script>window.defined = [];"
        "function define(a, b) { window.defined.push(a); }; define.amd = {};</script>"
    )
    body = fake_requirejs + chart(bar())._repr_mimebundle_()["text/html"]
    result = browser.check_report(page(tmp_path, body), ARTIFACTS / "amd.png", context=chromium)

    result.assert_ok(expect_charts=1)


def test_inline_script_hides_define_from_a_umd_bundle(
    tmp_path: Path, chromium: BrowserContext
) -> None:
    """The UMD header of plotly.py 5.x's bundle takes the AMD branch when ``define`` exists;
    inside ``inline_script_without_amd`` it takes the browser-global one."""
    umd = (
        "(function (root, factory) {"
        " if (typeof define === 'function' && define.amd) { define([], factory); }"
        " else { root.UmdLib = factory(); } }(this, function () { return {ok: true}; }));"
    )
    body = (
        "<script>function define(f) { window.viaAmd = true; }; define.amd = {};</script>"
        + inline_script_without_amd(umd)
        + "<script>if (!window.UmdLib || window.viaAmd) { throw new Error('took the AMD branch'); }"
        "if (typeof define !== 'function') { throw new Error('define not restored'); }</script>"
    )
    result = browser.check_report(page(tmp_path, body), ARTIFACTS / "umd.png", context=chromium)

    assert result.problems() == []
