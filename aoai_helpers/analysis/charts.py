"""Plotly figures of the month's chargeback, built from the :mod:`aoai_helpers.analysis.report` rows.

Pure functions: rows in, a ``plotly.graph_objects.Figure`` out — no database, no files, no
display (:func:`aoai_helpers.notebook_steps.display.chart` shows a figure in a notebook and in the offline
HTML report). Needs ``plotly`` (the ``notebooks`` extra); nothing else imports this module.

============================  ==========================================================
:func:`cost_by_bu_chart`      cost per business unit (bars), calls/tokens/unpriced on hover
:func:`daily_trend_chart`     cost or tokens per day, stacked bars per BU (or lines)
:func:`model_mix_chart`       cost or tokens per BU split by model (stacked bars)
:func:`budget_burn_chart`     month-to-date and projected cost against each BU's budget
:func:`allocation_chart`      a fixed amount split across BUs by token share
============================  ==========================================================

A business unit keeps its colour in every chart (:func:`bu_colors`: BU names in sorted
order over one palette). Unpriced calls are never drawn as cost 0: a chart says how many
calls it leaves out; a day or model with nothing priced has no bar.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

import plotly.graph_objects as go  # type: ignore[import-untyped]

from aoai_helpers.analysis.budget import Allocation, BudgetBurn
from aoai_helpers.analysis.report import MIXED, BuCharge, DailyUsage, ModelUsage

__all__ = [
    "PALETTE",
    "STATUS_COLORS",
    "allocation_chart",
    "bu_colors",
    "budget_burn_chart",
    "cost_by_bu_chart",
    "daily_trend_chart",
    "model_mix_chart",
]

#: Colours for business units (plotly's qualitative "Plotly" palette), assigned in name order.
PALETTE: Final = (
    "#636EFA",
    "#EF553B",
    "#00CC96",
    "#AB63FA",
    "#FFA15A",
    "#19D3F3",
    "#FF6692",
    "#B6E880",
    "#FF97FF",
    "#FECB52",
)
#: Colours of the budget statuses of :class:`~aoai_helpers.analysis.budget.BudgetBurn`.
STATUS_COLORS: Final = {
    "over": "#D62728",
    "at risk": "#FF7F0E",
    "on track": "#2CA02C",
    "no budget": "#7F7F7F",
}
_TEMPLATE: Final = "plotly_white"
Metric = Literal["cost", "tokens"]


def bu_colors(names: Iterable[str]) -> dict[str, str]:
    """A colour per business unit, stable for the same set of names (sorted, then the palette)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(set(names)))}


def _currency(currencies: Iterable[str | None]) -> str:
    found = {c for c in currencies if c}
    if not found:
        return ""
    return next(iter(found)) if len(found) == 1 and MIXED not in found else MIXED


def _title(text: str, month: str | None, currency: str = "") -> str:
    unit = f" ({currency})" if currency and currency != MIXED else ""
    mixed = " — currencies differ, amounts not comparable" if currency == MIXED else ""
    return f"{text}{unit}{' — ' + month if month else ''}{mixed}"


def _figure(title: str, *, empty: bool, **layout: Any) -> Any:
    fig = go.Figure()
    fig.update_layout(title=title, template=_TEMPLATE, **layout)
    if empty:
        fig.add_annotation(
            text="No calls in this month",
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            font={"size": 16},
        )
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    return fig


def _unpriced_note(fig: Any, unpriced: int) -> None:
    if unpriced:
        fig.add_annotation(
            text=f"{unpriced:,} unpriced call(s) not in the cost (no rate)",
            showarrow=False,
            x=1,
            y=1.06,
            xref="paper",
            yref="paper",
            xanchor="right",
            font={"size": 11, "color": STATUS_COLORS["over"]},
        )


def cost_by_bu_chart(lines: Sequence[BuCharge], *, month: str | None = None) -> Any:
    """Cost per business unit (most first), with calls, tokens and unpriced calls on hover."""
    currency = _currency(line.currency for line in lines)
    fig = _figure(
        _title("Cost per business unit", month, currency),
        empty=not lines,
        yaxis_title="Cost",
        xaxis_title="Business unit",
    )
    if not lines:
        return fig
    ordered = sorted(lines, key=lambda line: (-line.cost, line.business_unit))
    colors = bu_colors(line.business_unit for line in lines)
    fig.add_bar(
        x=[line.business_unit for line in ordered],
        y=[line.cost for line in ordered],
        marker_color=[colors[line.business_unit] for line in ordered],
        text=[f"{line.cost:,.2f} {line.currency or ''}".strip() for line in ordered],
        textposition="outside",
        customdata=[
            [line.calls, line.total_tokens, line.unpriced_calls, line.cost_centre or "-"]
            for line in ordered
        ],
        hovertemplate=(
            "<b>%{x}</b> (cost centre %{customdata[3]})<br>cost %{y:,.4f}<br>"
            "calls %{customdata[0]:,}<br>tokens %{customdata[1]:,}<br>"
            "unpriced calls %{customdata[2]:,}<extra></extra>"
        ),
        showlegend=False,
    )
    _unpriced_note(fig, sum(line.unpriced_calls for line in lines))
    return fig


def daily_trend_chart(
    rows: Sequence[DailyUsage],
    *,
    metric: Metric = "cost",
    stacked: bool = True,
    month: str | None = None,
) -> Any:
    """Cost (or tokens) per day (UTC), one series per BU: stacked bars, or lines."""
    currency = _currency(r.currency for r in rows) if metric == "cost" else ""
    label = "Cost" if metric == "cost" else "Tokens"
    fig = _figure(
        _title(f"{label} per day", month, currency),
        empty=not rows,
        barmode="stack",
        yaxis_title=label,
        xaxis_title="Day (UTC)",
        legend_title="Business unit",
    )
    if not rows:
        return fig
    colors = bu_colors(r.business_unit for r in rows)
    for bu in colors:
        mine = sorted((r for r in rows if r.business_unit == bu), key=lambda r: r.day)
        x = [r.day for r in mine]
        y = [r.cost if metric == "cost" else r.total_tokens for r in mine]
        hover = "<b>" + bu + "</b> %{x|%a %Y-%m-%d}<br>" + label.lower() + " %{y:,.4~f}"
        if stacked:
            fig.add_bar(x=x, y=y, name=bu, marker_color=colors[bu], hovertemplate=hover)
        else:
            fig.add_scatter(
                x=x, y=y, name=bu, mode="lines+markers", line_color=colors[bu], hovertemplate=hover
            )
    if metric == "cost":
        _unpriced_note(fig, sum(r.unpriced_calls for r in rows))
    return fig


def model_mix_chart(
    rows: Sequence[ModelUsage], *, metric: Metric = "cost", month: str | None = None
) -> Any:
    """Each BU's cost (or tokens) split by model (deployments of a model added up)."""
    currency = _currency(r.currency for r in rows) if metric == "cost" else ""
    label = "Cost" if metric == "cost" else "Tokens"
    fig = _figure(
        _title(f"{label} by model", month, currency),
        empty=not rows,
        barmode="stack",
        xaxis_title=label,
        yaxis_title="Business unit",
        legend_title="Model",
    )
    if not rows:
        return fig
    totals: dict[tuple[str, str], float] = {}
    priced: set[tuple[str, str]] = set()
    for r in rows:
        key = (r.business_unit, r.model)
        value = (r.cost or 0.0) if metric == "cost" else float(r.total_tokens)
        totals[key] = totals.get(key, 0.0) + value
        if metric == "tokens" or r.cost is not None:
            priced.add(key)
    by_bu: dict[str, float] = {}
    for (bu, _), value in totals.items():
        by_bu[bu] = by_bu.get(bu, 0.0) + value
    bus = sorted(by_bu, key=lambda b: (by_bu[b], b))  # largest at the top of the chart
    models = sorted(
        {m for _, m in priced},  # a model with nothing priced has no cost bar (see the note)
        key=lambda m: (-sum(totals.get((b, m), 0) for b in bus), m),
    )
    for i, model in enumerate(models):
        fig.add_bar(
            y=bus,
            x=[totals[(b, model)] if (b, model) in priced else None for b in bus],
            name=model,
            orientation="h",
            marker_color=PALETTE[(i + 3) % len(PALETTE)],
            hovertemplate="<b>%{y}</b> "
            + model
            + "<br>"
            + label.lower()
            + " %{x:,.4~f}<extra></extra>",
        )
    if metric == "cost":
        _unpriced_note(fig, sum(r.unpriced_calls for r in rows))
    return fig


def budget_burn_chart(rows: Sequence[BudgetBurn], *, month: str | None = None) -> Any:
    """Per BU: cost so far (coloured by status), projected month-end cost, and the budget."""
    currency = _currency(r.currency for r in rows)
    fig = _figure(
        _title("Budget burn", month, currency),
        empty=not rows,
        barmode="overlay",
        yaxis_title="Cost",
        xaxis_title="Business unit",
    )
    if not rows:
        return fig
    ordered = sorted(rows, key=lambda r: (-r.cost, r.business_unit))
    x = [r.business_unit for r in ordered]
    fig.add_bar(
        x=x,
        y=[r.projected for r in ordered],
        name="projected to month end",
        marker_color="rgba(127,127,127,0.25)",
        marker_line_color="rgba(127,127,127,0.8)",
        marker_line_width=1,
        hovertemplate="<b>%{x}</b><br>projected %{y:,.2f}<extra></extra>",
    )
    fig.add_bar(
        x=x,
        y=[r.cost for r in ordered],
        name="month to date",
        marker_color=[STATUS_COLORS[r.status] for r in ordered],
        text=[
            r.status if r.used is None else f"{r.used:.0%} of budget ({r.status})" for r in ordered
        ],
        textposition="inside",
        textangle=0,
        insidetextanchor="end",
        hovertemplate="<b>%{x}</b><br>cost %{y:,.2f}<br>%{text}<extra></extra>",
        width=0.5,
    )
    budgeted = [r for r in ordered if r.budget is not None]
    if budgeted:
        fig.add_scatter(
            x=[r.business_unit for r in budgeted],
            y=[r.budget for r in budgeted],
            name="budget",
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 40, "line": {"width": 3}, "color": "black"},
            hovertemplate="<b>%{x}</b><br>budget %{y:,.2f}<extra></extra>",
        )
    elapsed = ordered[0].elapsed
    if elapsed < 1.0:
        fig.add_annotation(
            text=f"{elapsed:.0%} of the month elapsed",
            showarrow=False,
            x=0,
            y=1.06,
            xref="paper",
            yref="paper",
            xanchor="left",
            font={"size": 11},
        )
    return fig


def allocation_chart(
    parts: Sequence[Allocation], *, month: str | None = None, what: str = "Allocated amount"
) -> Any:
    """A fixed amount split across BUs (bars with amount and share)."""
    fig = _figure(
        _title(what + " by token share", month),
        empty=not parts,
        yaxis_title="Amount",
        xaxis_title="Business unit",
    )
    if not parts:
        return fig
    ordered = sorted(parts, key=lambda a: (-a.amount, a.business_unit))
    colors = bu_colors(a.business_unit for a in parts)
    fig.add_bar(
        x=[a.business_unit for a in ordered],
        y=[float(a.amount) for a in ordered],
        marker_color=[colors[a.business_unit] for a in ordered],
        text=[f"{a.amount:,.2f} ({a.share:.1%})" for a in ordered],
        textposition="outside",
        hovertemplate="<b>%{x}</b><br>%{y:,.2f}<extra></extra>",
        showlegend=False,
    )
    return fig
