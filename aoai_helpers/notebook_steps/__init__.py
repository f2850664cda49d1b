"""The helpers behind the guide notebooks (``notebooks/00…04, 99``): one call per cell.

Each notebook builds a :class:`Target` from its parameters cell, then every cell calls one
function here and shows what it returns (a :class:`Shown`: a titled result with lines and
tables, HTML in Jupyter, text elsewhere). No business logic lives in the notebooks; no state
passes between them except through files — the spec, the database and the state directory.

- 00 :func:`check_environment`, :func:`choose_cloud`, :func:`start`
- 01 :func:`plan_apim`, :func:`apply_apim`
- 02 :func:`build_function`, :func:`plan_function`, :func:`deploy_function`
- 03 :func:`smoke_test`, :func:`rows_beside_usage`, :func:`compare_capture`
- 04 :class:`CostReport`
- 99 :func:`plan_clean_up`, :func:`apply_clean_up`

:mod:`aoai_helpers.notebook_steps.runner` runs the notebooks with papermill (``make demo``, CI).
Needs the ``notebooks`` extra (pandas, plotly, openpyxl) and, for the steps that call the
gateway, the ``local`` extra (openai, httpx).
"""

from __future__ import annotations

from typing import Any

from aoai_helpers.exceptions import AoaiHelpersError
from aoai_helpers.notebook_steps.analysis import CostReport
from aoai_helpers.notebook_steps.setup import (
    apply_apim,
    build_function,
    check_environment,
    choose_cloud,
    deploy_function,
    plan_apim,
    plan_function,
    start,
)
from aoai_helpers.notebook_steps.shown import Shown
from aoai_helpers.notebook_steps.smoke import compare_capture, rows_beside_usage, smoke_test
from aoai_helpers.notebook_steps.target import Target
from aoai_helpers.notebook_steps.teardown import apply_clean_up, plan_clean_up

__all__ = [
    "CostReport",
    "Shown",
    "Target",
    "apply_apim",
    "apply_clean_up",
    "brief_errors",
    "build_function",
    "check_environment",
    "choose_cloud",
    "compare_capture",
    "deploy_function",
    "plan_apim",
    "plan_clean_up",
    "plan_function",
    "rows_beside_usage",
    "smoke_test",
    "start",
]


def brief_errors() -> None:
    """In IPython/Jupyter: show this toolkit's errors (bad parameters, missing files, Azure
    refusals) as one line instead of a traceback. The cell still fails, so papermill stops."""
    try:
        from IPython import get_ipython
    except ModuleNotFoundError:  # not in IPython: nothing to set up
        return
    shell = get_ipython()
    if shell is None:
        return

    def one_line(
        shell: Any, etype: type, value: BaseException, _tb: Any, tb_offset: Any = None
    ) -> list[str]:
        stb = [f"✘ {value}"]
        # As an error output (ename, evalue, this one line): Jupyter shows it, papermill and
        # nbclient see the cell failed and why.
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((AoaiHelpersError,), one_line)
