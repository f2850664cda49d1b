"""Open an HTML report in a real headless Chromium and check that it works offline.

Chromium is the system's (``$CHROMIUM``, ``/usr/bin/chromium``, ``chromium-browser``,
``google-chrome``), driven by the ``playwright`` package through ``executable_path``:
``playwright install`` downloads browsers, which this project never does. No Chromium →
``pytest.skip`` with the reason, except in CI (``CI`` set; ``.ci/run`` installs Debian's
``chromium``) where it fails.

``check_report(html, screenshot)`` loads the page from ``file://`` in a context whose every
request that is not ``file:``/``data:``/``blob:`` is blocked and recorded, collects console
errors, uncaught page errors and failed requests, waits for plotly.js and for every chart
(``.aoai-chart`` of :mod:`aoai_helpers.notebook_steps.display`, or plotly's own ``.plotly-graph-div``) to
draw, counts each chart's drawn marks (non-empty ``path`` in ``svg.main-svg g.trace``, or a
non-empty WebGL ``canvas``) and takes a full-page screenshot.

Inline SVG charts (``figure.aoai-svg-chart`` of :mod:`aoai_helpers.analysis.svg`, the finance
report's) need no script: each is counted with ``kind="svg"`` and its marks are the ``.mark``
elements the browser laid out with a non-empty box. Only charts that are laid out are counted
(one inside a ``hidden`` element, such as a month the page is not showing, has no box):
:func:`charts_on` reads them again after the page changed, and ``check_report(...,
interact=fn)`` runs ``fn(page)`` on the loaded page — console errors and requests are still
recorded — before it is closed.

Typical use (a module-scoped context saves a second per check)::

    @pytest.fixture(scope="module")
    def chromium() -> Iterator[BrowserContext]:
        with browser.launch() as context:
            yield context

    result = browser.check_report(html, ARTIFACTS / "report.png", context=chromium)
    result.assert_ok(expect_charts=3)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Route,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

#: Repo-relative home of screenshots and other test artefacts (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts"

#: Flags this machine needs (a container: no sandbox, no GPU) plus no background traffic.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: The bound on loading a page from disk: far above what a loaded 2-core machine takes.
LOAD_TIMEOUT_S = 120.0
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

# Every chart container and what it drew; runs in the page. Plotly charts: all of them;
# inline SVG charts: those on screen (the others have no layout box to check).
_CHARTS_JS = """() => {
  const plotly = [...new Set(document.querySelectorAll('.aoai-chart, .plotly-graph-div'))];
  const svg = [...document.querySelectorAll('figure.aoai-svg-chart')]
    .filter((el) => el.getClientRects().length > 0);
  const plotlyCharts = plotly.map((el, i) => {
    const drawn = [...el.querySelectorAll('svg.main-svg g.trace path')].filter((p) => {
      const d = (p.getAttribute('d') || '').trim();
      return d !== '' && d !== 'M0,0Z';
    });
    const canvases = [...el.querySelectorAll('canvas')].filter((c) => c.width > 0 && c.height > 0);
    const box = el.getBoundingClientRect();
    return {
      id: el.id || `chart #${i + 1}`,
      svgs: el.querySelectorAll('svg.main-svg').length,
      marks: drawn.length + canvases.length,
      width: box.width,
      height: box.height,
      text: (el.textContent || '').trim().slice(0, 200),
      kind: 'plotly',
    };
  });
  const svgCharts = svg.map((el, i) => {
    const marks = [...el.querySelectorAll('svg .mark')].filter((m) => {
      const b = m.getBoundingClientRect();
      return b.width > 0 && b.height > 0;
    });
    const box = el.getBoundingClientRect();
    return {
      id: el.id || `svg chart #${i + 1}`,
      svgs: el.querySelectorAll('svg').length,
      marks: marks.length,
      width: box.width,
      height: box.height,
      text: (el.textContent || '').trim().slice(0, 200),
      kind: 'svg',
    };
  });
  return plotlyCharts.concat(svgCharts);
}"""
_HAS_PLOTLY_JS = "() => document.querySelector('.aoai-chart, .plotly-graph-div') !== null"
_ALL_DRAWN_JS = f"""() => {{
  const charts = ({_CHARTS_JS})();
  return charts.every((c) => c.svgs > 0 && c.marks > 0);
}}"""


def find_chromium() -> str | None:
    """The Chromium to use: ``$CHROMIUM``, ``/usr/bin/chromium``, then the PATH; or None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if (Path(env).is_file() and os.access(env, os.X_OK)) else shutil.which(env)
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    """:func:`find_chromium`, or skip the test (fail under ``CI``, where it must exist)."""
    path = find_chromium()
    if path is None:
        env = os.environ.get("CHROMIUM")
        reason = (
            f"no Chromium: $CHROMIUM={env!r} is not an executable"
            if env
            else "no Chromium ($CHROMIUM, /usr/bin/chromium, chromium-browser, google-chrome): "
            "apt-get install chromium"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason} (.ci/run installs it)")
        pytest.skip(reason)
    return path


@contextmanager
def launch(*, width: int = 1280, height: int = 900) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh, throw-away profile; closed on exit."""
    executable = chromium_or_skip()
    with (
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": width, "height": height},
            offline=True,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass(frozen=True)
class ChartCheck:
    """One chart container as the browser drew it."""

    id: str
    svgs: int
    marks: int
    width: float
    height: float
    text: str
    kind: str = "plotly"  # or "svg": an inline SVG chart (``figure.aoai-svg-chart``)

    @property
    def rendered(self) -> bool:
        """An SVG (plotly's, or inline) with at least one drawn mark (or a WebGL canvas), visible."""
        return self.svgs > 0 and self.marks > 0 and self.width > 0 and self.height > 0


@dataclass
class ReportCheck:
    """What the browser saw while loading a report."""

    url: str
    screenshot: Path
    seconds: float = 0.0
    plotly_loaded: bool = False
    charts: list[ChartCheck] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)

    def problems(self, *, expect_charts: int | None = None) -> list[str]:
        """Everything wrong with the page, one line each; empty when it is fine."""
        found = [f"console error: {e}" for e in self.console_errors]
        found += [f"page error: {e}" for e in self.page_errors]
        found += [f"network request blocked: {u}" for u in self.blocked_requests]
        found += [f"request failed: {u}" for u in self.failed_requests]
        if any(c.kind == "plotly" for c in self.charts) and not self.plotly_loaded:
            found.append("plotly.js never loaded (window.Plotly undefined)")
        found += [
            f"chart {c.id} not rendered (svgs={c.svgs}, marks={c.marks}, "
            f"size={c.width:.0f}x{c.height:.0f}, text={c.text!r})"
            for c in self.charts
            if not c.rendered
        ]
        if expect_charts is not None and len(self.charts) != expect_charts:
            found.append(f"expected {expect_charts} charts, found {len(self.charts)}")
        return found

    def ok(self, *, expect_charts: int | None = None) -> bool:
        """No :meth:`problems`."""
        return not self.problems(expect_charts=expect_charts)

    def assert_ok(self, *, expect_charts: int | None = None) -> None:
        """Fail with every problem listed (and where the screenshot is)."""
        found = self.problems(expect_charts=expect_charts)
        if found:
            lines = "\n  ".join(found)
            pytest.fail(
                f"{self.url}: {len(found)} problem(s):\n  {lines}\nscreenshot: {self.screenshot}"
            )


def check_report(
    html_path: Path,
    screenshot_path: Path,
    *,
    context: BrowserContext | None = None,
    timeout_s: float = 20.0,
    load_timeout_s: float = LOAD_TIMEOUT_S,
    interact: Callable[[Page], None] | None = None,
) -> ReportCheck:
    """Load ``html_path`` in Chromium (``context``, or one launched for this call) and report.

    The page is waited for until it has loaded (``load_timeout_s`` only bounds a hung
    browser); ``timeout_s`` is how long a loaded page's charts may take to draw — the one wait
    that has to end for a broken page, whose charts never draw. ``interact(page)`` runs after
    the charts were counted and the screenshot taken, while errors and requests are still
    recorded into the result (use :func:`charts_on` there).

    Never raises for a broken page (the :class:`ReportCheck` says what is wrong); skips or
    fails like :func:`chromium_or_skip` when there is no Chromium.
    """
    if context is None:
        with launch() as own:
            return check_report(
                html_path,
                screenshot_path,
                context=own,
                timeout_s=timeout_s,
                load_timeout_s=load_timeout_s,
                interact=interact,
            )

    started = time.perf_counter()
    result = ReportCheck(url=html_path.resolve().as_uri(), screenshot=screenshot_path)
    blocked: set[str] = set()

    def on_route(route: Route) -> None:
        url = route.request.url
        if url.startswith(_LOCAL_SCHEMES):
            route.continue_()
        else:
            blocked.add(url)
            result.blocked_requests.append(url)
            route.abort("blockedbyclient")

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            loc = msg.location
            where = f" ({loc.get('url', '')[-60:]}:{loc.get('lineNumber', '?')})" if loc else ""
            result.console_errors.append(f"{msg.text}{where}")

    def on_failed(request: Request) -> None:
        if request.url not in blocked:
            result.failed_requests.append(f"{request.url}: {request.failure}")

    page = context.new_page()
    page.route("**/*", on_route)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: result.page_errors.append(str(exc)))
    page.on("requestfailed", on_failed)
    timeout_ms = timeout_s * 1000
    try:
        page.goto(result.url, wait_until="load", timeout=load_timeout_s * 1000)
        plotly_present = bool(page.evaluate(_HAS_PLOTLY_JS))
        if plotly_present and _wait(page, "() => window.Plotly !== undefined", timeout_ms):
            _wait(page, _ALL_DRAWN_JS, timeout_ms)
        result.plotly_loaded = bool(page.evaluate("() => window.Plotly !== undefined"))
        result.charts = charts_on(page)
        screenshot_path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot_path, full_page=True)
        if interact is not None:
            interact(page)
    finally:
        page.close()
    result.seconds = time.perf_counter() - started
    return result


def charts_on(page: Page) -> list[ChartCheck]:
    """The charts of ``page`` as drawn now (inline SVG charts: those on screen)."""
    return [ChartCheck(**c) for c in page.evaluate(_CHARTS_JS)]


def _wait(page: Page, predicate: str, timeout_ms: float) -> bool:
    """Wait for ``predicate`` to hold; False on timeout (not an error: the check reports it)."""
    try:
        page.wait_for_function(predicate, timeout=timeout_ms)
    except PlaywrightError:
        return False
    return True
