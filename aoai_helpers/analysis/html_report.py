"""An executed notebook as a self-contained, offline HTML report (for finance).

``render_html(executed, out_html)`` converts with nbconvert's ``HTMLExporter`` and the
``lab`` template, keeping markdown and outputs and dropping every code cell's source and
prompt. The page must open from a file share or an e-mail attachment with no network, so:

* a small template (below, loaded from memory: no template files to package) extends
  ``lab/index.html.j2`` and empties the blocks that would reference a CDN: require.js
  (``html_head_js``), MathJax, mermaid.js and the Jupyter widgets renderer. With MathJax gone,
  ``$`` in markdown stays a dollar sign (a finance report has many; MathJax would have turned
  ``$1,200 and $300`` into italic maths). The lab CSS is inlined by nbconvert as usual;
* charts carry plotly.js inline (:mod:`aoai_helpers.notebook_steps.display`); images in outputs are base64
  already, and local images referenced from markdown are embedded (``embed_images``);
* before anything is written, :func:`network_references` scans the page for a resource the
  browser would fetch over the network (``src``/``href``/``srcset``/… of ``script``, ``link``,
  ``img``, ``iframe``…, CSS ``url()``/``@import``) and :class:`ReportError` lists them. Plain
  ``<a href>`` links are navigation, not loads, and are allowed. Script *bodies* are not
  parsed (plotly.min.js mentions URLs it never loads); the browser check in the tests
  (``tests/browser.py``) blocks and reports any request the page really makes.

Cells tagged ``remove-cell`` are left out; cells tagged ``remove-output`` lose their outputs.
A notebook with an error output, or never executed, is refused: finance must not get a
report with a traceback or without numbers.

The page is written atomically (temporary file in the same directory, then rename), so a
reader never sees half a report.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aoai_helpers.exceptions import InputError, ReportError

__all__ = ["ReportError", "check_offline", "network_references", "render_html"]


#: Extends nbconvert's lab template; every block that references a CDN is emptied.
REPORT_TEMPLATE_NAME = "aoai_report.html.j2"
REPORT_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
  body.jp-Notebook { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem; }
  .jp-CodeCell.jp-mod-noOutputs { display: none; }
  .aoai-chart { margin: 0.5rem 0; }
</style>
{%- endblock extra_css -%}
"""

# Attributes whose URL the browser fetches by itself (``a``/``area`` ``href`` excluded:
# following a link is the reader's choice, not a load).
_FETCH_ATTRS = frozenset({"src", "href", "srcset", "data", "poster", "xlink:href", "background"})
_NAVIGATION_TAGS = frozenset({"a", "area"})
_NETWORK_URL = re.compile(r"^\s*(?:(?:https?|wss?|ftp):)?//", re.IGNORECASE)
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:(?:https?:)?//)[^'")\s]*)""", re.I)


class _ReferenceScanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if not value:
                continue
            if name == "style":
                self._css(value, f"<{tag} style>")
            elif name in _FETCH_ATTRS and tag not in _NAVIGATION_TAGS:
                urls = [value]
                if name == "srcset":
                    urls = [u.split()[0] for u in value.split(",") if u.strip()]
                for url in urls:
                    if _NETWORK_URL.match(url):
                        self.found.append(f"<{tag} {name}={url.strip()!r}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._css(data, "<style>")

    def _css(self, css: str, where: str) -> None:
        self.found.extend(f"{where} {m.group(1)!r}" for m in _CSS_URL.finditer(css))


def network_references(html: str) -> list[str]:
    """Every resource in ``html`` the browser would fetch from the network, as readable
    strings (``"<script src='https://…'>"``); empty for a self-contained page."""
    scanner = _ReferenceScanner()
    scanner.feed(html)
    scanner.close()
    return scanner.found


def check_offline(html_path: Path) -> None:
    """Raise :class:`ReportError` if the page at ``html_path`` references the network.

    :class:`~aoai_helpers.exceptions.InputError` if it cannot be read.
    """
    try:
        html = html_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read report {html_path}: {exc.strerror or exc}") from exc
    _raise_on_references(network_references(html), html_path)


def _raise_on_references(found: list[str], where: Path) -> None:
    if found:
        shown = "; ".join(found[:5]) + (f"; … {len(found) - 5} more" if len(found) > 5 else "")
        raise ReportError(
            f"{where}: the report would load {len(found)} resource(s) from the network "
            f"and must be self-contained: {shown}"
        )


def _check_executed(nb: Any, path: Path) -> None:
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    for index, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise ReportError(
                    f"{path}: cell {index} raised {output.get('ename', 'an error')}: "
                    f"{output.get('evalue', '')}"
                )
    if code and all(c.get("execution_count") is None for c in code):
        raise ReportError(f"{path}: the notebook was never executed (no code cell has run)")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def render_html(executed_notebook: Path, out_html: Path, *, title: str | None = None) -> Path:
    """Render ``executed_notebook`` (.ipynb, already run) to the offline page ``out_html``.

    Markdown and outputs are kept, code and prompts are not. ``title`` (default: the
    notebook's ``metadata.title``, else the output file's stem) becomes the page's
    ``<title>``. Returns ``out_html``.

    Raises :class:`~aoai_helpers.exceptions.InputError` when the notebook cannot be read,
    :class:`ReportError` when it holds an error output, was never executed, or the page
    would reference the network (nothing is written then).
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    try:
        nb = nbformat.read(executed_notebook, as_version=4)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise InputError(
            f"cannot read notebook {executed_notebook}: {exc.strerror or exc}"
        ) from exc
    except Exception as exc:  # NotJSONError, jsonschema's ValidationError, even AttributeError
        raise InputError(f"{executed_notebook} is not a notebook: {exc}") from exc
    _check_executed(nb, executed_notebook)
    if title is not None:
        nb.metadata["title"] = title

    exporter = HTMLExporter(  # type: ignore[no-untyped-call]
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({REPORT_TEMPLATE_NAME: REPORT_TEMPLATE})],
        template_file=REPORT_TEMPLATE_NAME,
        theme="light",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.register_preprocessor(  # type: ignore[no-untyped-call]
        TagRemovePreprocessor(  # type: ignore[no-untyped-call]
            remove_cell_tags={"remove-cell"},
            remove_all_outputs_tags={"remove-output"},
            enabled=True,
        ),
        enabled=True,
    )
    resources = {
        "metadata": {
            "name": out_html.stem,
            "path": str(executed_notebook.parent),  # embed_images resolves from here
        }
    }
    html, _ = exporter.from_notebook_node(nb, resources=resources)
    _raise_on_references(network_references(html), out_html)
    _write_atomic(out_html, html)
    return out_html
