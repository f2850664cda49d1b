"""The packaged policy templates (``templates/*.xml``) and their ``{%NAME%}`` placeholders,
filled by :func:`render`; APIM's own ``{{name}}`` named values are left untouched. Imports the
top level only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Literal

from aoai_helpers.exceptions import ConfigError

__all__ = [
    "render",
    "template",
]

_PLACEHOLDER = re.compile(r"\{%([A-Z][A-Z0-9_]*)%\}")


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``{%NAME%}`` replaced by ``values[NAME]`` (one pass).

    ``ConfigError`` names every placeholder without a value, every value no placeholder uses
    and any ``{%`` left after rendering (a malformed placeholder, or one inside a value).
    APIM named values (``{{name}}``) are not touched.
    """
    wanted = set(_PLACEHOLDER.findall(template))
    problems: list[str] = []
    if missing := sorted(wanted - set(values)):
        problems.append("no value for " + ", ".join(f"{{%{n}%}}" for n in missing))
    if unused := sorted(set(values) - wanted):
        problems.append("values not used by the template: " + ", ".join(unused))
    if problems:
        raise ConfigError("cannot render policy template: " + "; ".join(problems))
    out = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if "{%" in out:
        left = sorted({out[m.start() :][:24].split("\n")[0] for m in re.finditer("{%", out)})
        raise ConfigError("placeholder syntax left after rendering: " + ", ".join(left))
    return out


def template(name: Literal["api-policy.xml", "product-policy.xml"]) -> str:
    """The text of a packaged policy template."""
    return (
        resources.files("aoai_helpers.azure.apim")
        .joinpath("templates", name)
        .read_text(encoding="utf-8")
    )
