"""Plotly charts for notebooks that also work in the offline HTML report.

``chart(fig)`` wraps a plotly figure for display. Its MIME bundle carries

* ``application/vnd.plotly.v1+json``: the figure as JSON, which JupyterLab (and VS Code)
  render natively with their own plotly.js;
* ``text/html``: what nbconvert puts in the finance report (:mod:`aoai_helpers.analysis.html_report`).
  The page must work offline and self-contained, so plotly.js is **inlined** from the
  installed ``plotly`` package (never a CDN), once per process: the first chart displayed
  carries the ~5 MB bundle, every later one is a ``<div>`` and a small ``Plotly.newPlot``
  script. The report is rendered from a notebook executed top to bottom in one fresh kernel,
  so the first chart's output, earlier in the page, defines ``window.Plotly`` for the rest.
* ``text/plain``: a one-line description for consoles.

require.js / AMD: some plotly.js builds (plotly.py 5.x) wrap themselves in a UMD header that
calls ``define()`` instead of setting ``window.Plotly`` when an AMD loader is on the page. The
report template never loads require.js (see :mod:`aoai_helpers.analysis.html_report`), *and* the inline
bundle is loaded with ``define`` hidden (restored right after), so ``window.Plotly`` is set
either way.

A chart script that runs before plotly.js exists (a cell re-run out of order in an
interactive session) waits for the page to finish loading and tries again; if plotly.js is
still missing it writes a message into the chart's box and logs a console error, which the
browser check of the report turns into a failure.

Import the function, not the module (``from aoai_helpers.notebook_steps.display import chart``): a module
named ``display`` would shadow IPython's ``display()`` in a notebook.

No I/O beyond plotly's own read of its bundled ``plotly.min.js``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PLOTLY_MIME", "Chart", "chart", "inline_script_without_amd", "reset_plotlyjs"]

#: The MIME type JupyterLab's plotly renderer handles.
PLOTLY_MIME = "application/vnd.plotly.v1+json"

#: Height of a chart whose layout sets none (plotly.js's own default).
DEFAULT_HEIGHT_PX = 450

#: Passed to ``Plotly.newPlot``: resize with the page, no plotly logo in the mode bar.
PLOT_CONFIG: dict[str, Any] = {"responsive": True, "displaylogo": False}

_lock = threading.Lock()
_plotlyjs_emitted = False


def reset_plotlyjs() -> None:
    """Forget that plotly.js was emitted: the next chart displayed inlines it again.

    For a process that builds a second, separate HTML document (tests); a notebook kernel
    never needs it.
    """
    global _plotlyjs_emitted
    with _lock:
        _plotlyjs_emitted = False


def _take_plotlyjs() -> bool:
    """True exactly once per process (until :func:`reset_plotlyjs`)."""
    global _plotlyjs_emitted
    with _lock:
        first = not _plotlyjs_emitted
        _plotlyjs_emitted = True
        return first


def _script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside ``<script>``: no ``<`` can close the element."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def inline_script_without_amd(js: str) -> str:
    """``<script>`` elements that run ``js`` with any AMD ``define`` hidden, then restore it.

    A UMD bundle then takes its browser-global branch (``window.Plotly = …``) even on a page
    that loaded require.js.
    """
    body = js.replace("</script", "<\\/script")
    return (
        "<script>window.__aoaiSavedDefine = window.define; window.define = undefined;</script>\n"
        f"<script>{body}</script>\n"
        "<script>window.define = window.__aoaiSavedDefine; delete window.__aoaiSavedDefine;"
        "</script>\n"
    )


def _plotlyjs_html() -> str:
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return inline_script_without_amd(str(get_plotlyjs()))


_DRAW_JS = """\
(function () {
  var id = %(id)s, fig = %(fig)s, config = %(config)s;
  function draw(late) {
    var el = document.getElementById(id);
    if (!el) { return; }
    if (!window.Plotly) {
      if (!late) { document.addEventListener("DOMContentLoaded", function () { draw(true); }); return; }
      el.textContent = "Chart not drawn: plotly.js is not on this page (re-run the notebook from the top).";
      console.error("aoai chart " + id + ": plotly.js is not loaded");
      return;
    }
    window.Plotly.newPlot(el, fig.data || [], fig.layout || {}, config).then(
      function () { el.setAttribute("data-aoai-rendered", "true"); },
      function (err) { console.error("aoai chart " + id + ": " + err); }
    );
  }
  draw(document.readyState !== "loading");
})();"""


@dataclass(frozen=True)
class Chart:
    """A plotly figure frozen as JSON, displayed by Jupyter through ``_repr_mimebundle_``.

    ``figure`` is the plain-JSON figure (``data``, ``layout``, maybe ``frames``); build one
    with :func:`chart`.
    """

    figure: Mapping[str, Any]
    height_px: int = DEFAULT_HEIGHT_PX

    @property
    def title(self) -> str:
        """The layout's title text, or ``""``."""
        title = self.figure.get("layout", {}).get("title", "")
        if isinstance(title, Mapping):
            title = title.get("text", "")
        return str(title or "")

    def to_html(self, *, include_plotlyjs: bool, div_id: str | None = None) -> str:
        """The chart as an HTML fragment: (plotly.js inline,) a ``<div>`` and its script."""
        div_id = div_id or f"aoai-chart-{uuid.uuid4().hex}"
        script = _DRAW_JS % {
            "id": _script_json(div_id),
            "fig": _script_json(self.figure),
            "config": _script_json(PLOT_CONFIG),
        }
        div = (
            f'<div id="{div_id}" class="aoai-chart" '
            f'style="width:100%; height:{self.height_px}px;"></div>\n'
            f"<script>\n{script}\n</script>"
        )
        return (_plotlyjs_html() if include_plotlyjs else "") + div

    def _repr_mimebundle_(
        self,
        include: Container[str] | None = None,
        exclude: Container[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        def wanted(mime: str) -> bool:
            return (include is None or mime in include) and (exclude is None or mime not in exclude)

        bundle: dict[str, Any] = {}
        if wanted(PLOTLY_MIME):
            bundle[PLOTLY_MIME] = {**self.figure, "config": dict(PLOT_CONFIG)}
        if wanted("text/html"):
            bundle["text/html"] = self.to_html(include_plotlyjs=_take_plotlyjs())
        if wanted("text/plain"):
            n = len(self.figure.get("data", []))
            bundle["text/plain"] = f"<Chart {self.title!r}: {n} trace{'s' if n != 1 else ''}>"
        return bundle


def chart(fig: Any) -> Chart:
    """Wrap a plotly figure (``plotly.graph_objects.Figure`` or a figure dict) for display.

    The figure is validated and copied to plain JSON now (numpy and pandas values converted
    by plotly's encoder); later changes to ``fig`` do not change the chart. The last
    expression of a cell, ``chart(fig)``, displays it.
    """
    from plotly.io import to_json  # type: ignore[import-untyped]

    figure = json.loads(to_json(fig, validate=True, remove_uids=True))
    height = figure.get("layout", {}).get("height")
    return Chart(
        figure=figure,
        height_px=int(height) if isinstance(height, int | float) else DEFAULT_HEIGHT_PX,
    )
