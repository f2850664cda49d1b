"""What a notebook cell shows: a titled result with lines of text and tables.

Every guide helper returns a :class:`Shown` (or something carrying one), so a cell is one call
and its output explains itself — as HTML in Jupyter and in the rendered report, as text in a
terminal or a log. Values are formatted by the helpers; secrets are masked before they get
here (nothing in this module knows what a secret is, so nothing secret may be passed in).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Shown", "Status"]

Status = Literal["ok", "warn", "fail", "info"]
_MARK = {"ok": "✔", "warn": "⚠", "fail": "✘", "info": "•"}
_COLOUR = {"ok": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "info": "#57606a"}


@dataclass
class Shown:
    """A step's result: ``title``, ``status``, explanatory ``lines`` and named ``tables``.

    ``data`` carries the plain result for code that wants it (a plan, a list of calls…);
    it is not displayed.
    """

    title: str
    status: Status = "ok"
    lines: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    data: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def text(self) -> str:
        """Plain text: the title line, the lines indented, each table under its caption."""
        out = [f"{_MARK[self.status]} {self.title}"]
        out += [f"  {line}" for line in self.lines]
        for caption, frame in self.tables:
            if caption:
                out.append(f"  {caption}:")
            body = frame.to_string(index=False) if len(frame) else "(none)"
            out += [f"    {row}" for row in body.splitlines()]
        return "\n".join(out)

    __str__ = text

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        colour = _COLOUR[self.status]
        parts = [
            f'<div class="aoai-step"><p style="margin:0.2em 0"><b style="color:{colour}">'
            f"{_MARK[self.status]}</b> <b>{html.escape(self.title)}</b></p>"
        ]
        if self.lines:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines)
            parts.append(f'<ul style="margin:0.2em 0">{items}</ul>')
        for caption, frame in self.tables:
            if caption:
                parts.append(f'<p style="margin:0.4em 0 0.1em"><i>{html.escape(caption)}</i></p>')
            if len(frame):
                parts.append(frame.to_html(index=False, border=0, escape=True))
            else:
                parts.append("<p>(none)</p>")
        parts.append("</div>")
        return "".join(parts)
