"""Inline SVG charts for the finance report (:mod:`aoai_helpers.analysis.finance_html`). Pure.

:func:`column_chart` (stacked columns) and :func:`budget_chart` (bars against a marker) draw
any figures; :func:`daily_cost_chart` and :func:`budget_burn_chart` draw a
:class:`~aoai_helpers.analysis.finance_report.MonthView`'s.

The finance report is one offline file that must open from a share or an e-mail attachment, so
its charts are SVG markup drawn here — no chart library, no script, no fonts or images to load.
Each chart is a ``<figure class="aoai-svg-chart">`` whose drawn marks (bars, markers) carry the
class ``mark``; ``tests/browser.py`` counts them in headless Chromium.

Rules the charts keep (each was a defect of the notebook's plotly charts):

* a legend swatch is drawn from the same :class:`Series` as its bars, so its colour is the bars'
  colour by construction (``data-series`` ties the two together for the tests);
* axis ticks are "nice" steps (1, 2, 5 x 10^n) labelled with as many decimals as the step needs,
  never fewer than the currency's minor unit: two ticks never read the same;
* a value label shows the currency's minor unit unless two different values would then read the
  same, or a positive value would read 0: :func:`distinct_labels` adds decimals until they differ;
* a value that is ``None`` (unpriced) draws nothing — it is never a bar of height 0 labelled 0;
* every text (business unit names are the callers') goes through :func:`html.escape`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from typing import Final

from aoai_helpers.analysis.finance_report import BuRow, MonthView, day_label
from aoai_helpers.core.money import format_money, minor_units

__all__ = [
    "BudgetBar",
    "Series",
    "budget_burn_chart",
    "budget_chart",
    "column_chart",
    "daily_cost_chart",
    "distinct_labels",
    "nice_ticks",
    "tick_labels",
]

#: Budget chart colours: month to date, projection to month end, the budget marker.
SPENT_COLOR: Final = "#4e79a7"
PROJECTED_COLOR: Final = "#a0cbe8"
BUDGET_COLOR: Final = "#e15759"
#: Most decimals :func:`distinct_labels` adds beyond the minor unit.
_MAX_EXTRA_DECIMALS: Final = 2
_CHAR_PX: Final = 6.5  # rough width of one 11px sans-serif character, for legend layout


@dataclass(frozen=True, slots=True)
class Series:
    """One named, coloured series: a value per category (None: nothing to draw)."""

    name: str
    color: str
    values: Sequence[Decimal | None]


@dataclass(frozen=True, slots=True)
class BudgetBar:
    """One business unit's row of :func:`budget_chart` (amounts in one currency)."""

    label: str
    spent: Decimal | None  # None: unpriced
    projected: Decimal | None  # None: not drawn (a low-confidence or no projection)
    budget: Decimal
    text: str  # the value label at the end of the row


# ----------------------------------------------------------------------------- numbers


def nice_ticks(top: Decimal, count: int = 4) -> list[Decimal]:
    """Ticks from 0 to at least ``top`` in a step of 1, 2 or 5 x 10^n (about ``count`` steps)."""
    if top <= 0:
        return [Decimal(0), Decimal(1)]
    raw = top / count
    exponent = raw.adjusted()
    base = Decimal(1).scaleb(exponent)
    step = next(
        m * base for m in (Decimal(1), Decimal(2), Decimal(5), Decimal(10)) if m * base >= raw
    )
    steps = int((top / step).to_integral_value(rounding="ROUND_CEILING"))
    return [step * i for i in range(steps + 1)]


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def tick_labels(ticks: Sequence[Decimal], min_decimals: int) -> list[str]:
    """Grouped tick labels, with the decimals the step needs (at least ``min_decimals``)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else Decimal(1)
    places = max(min_decimals, _decimals(step))
    return [f"{t:,.{places}f}" for t in ticks]


def _round(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def distinct_labels(values: Sequence[Decimal | None], minor: int) -> list[str | None]:
    """Labels in ``minor`` decimals, up to :data:`_MAX_EXTRA_DECIMALS` more where two different
    values (or a positive value and zero) would read the same; a positive value too small for
    that reads ``< 0.01`` (in the decimals chosen). None stays None (the caller says
    "unpriced")."""
    finest = Decimal(1).scaleb(-(minor + _MAX_EXTRA_DECIMALS)) / 2  # below: "< 0.01"
    priced = sorted({v for v in values if v is not None and not 0 < v < finest})
    places = minor
    while places < minor + _MAX_EXTRA_DECIMALS:
        shown = [_round(v, places) for v in priced]
        collide = len(set(shown)) < len(priced) or any(
            s == 0 and v > 0 for s, v in zip(shown, priced, strict=True)
        )
        if not collide:
            break
        places += 1
    floor = Decimal(1).scaleb(-places)

    def label(v: Decimal) -> str:
        return f"< {floor:,.{places}f}" if 0 < v < finest else f"{_round(v, places):,.{places}f}"

    return [None if v is None else label(v) for v in values]


# ----------------------------------------------------------------------------- markup


def _figure(chart_id: str, title: str, width: int, height: int, body: list[str]) -> str:
    label = escape(title)
    return (
        f'<figure class="aoai-svg-chart" id="{escape(chart_id)}">'
        f"<figcaption>{label}</figcaption>"
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{label}" '
        f'preserveAspectRatio="xMinYMin meet">{"".join(body)}</svg></figure>'
    )


def _legend(items: Sequence[tuple[str, str, str]], y: float, x0: float, right: float) -> list[str]:
    """Swatch and name per (series key, name, colour), wrapped within ``right``."""
    out: list[str] = []
    x = x0
    for key, name, color in items:
        width = 16 + len(name) * _CHAR_PX + 14
        if x + width > right and x > x0:
            x, y = x0, y + 16
        out.append(
            f'<rect class="legend-swatch" data-series="{escape(key)}" x="{x:.1f}" y="{y - 9:.1f}" '
            f'width="10" height="10" fill="{color}"/>'
            f'<text class="legend-text" x="{x + 14:.1f}" y="{y:.1f}">{escape(name)}</text>'
        )
        x += width
    return out


def _legend_rows(names: Sequence[str], x0: float, right: float) -> int:
    rows, x = 1, x0
    for name in names:
        width = 16 + len(name) * _CHAR_PX + 14
        if x + width > right and x > x0:
            rows, x = rows + 1, x0
        x += width
    return rows


def _y_axis(ticks: Sequence[Decimal], labels: Sequence[str], scale: Callable[[Decimal], float],
            left: float, right: float) -> list[str]:  # fmt: skip
    out = []
    for tick, text in zip(ticks, labels, strict=True):
        y = scale(tick)
        out.append(
            f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick y" x="{left - 6}" y="{y + 4:.1f}">{text}</text>'
        )
    return out


def column_chart(
    *,
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    unit: str,
    minor: int,
    tooltip: Callable[[int, str, Decimal], str],
    width: int = 760,
    height: int = 240,
) -> str:
    """Stacked columns, one per category (``categories`` are the x labels, "" for none), one
    colour per series, a legend when there is more than one series, ticks in ``unit``.
    ``tooltip(category index, series name, value)`` is each column part's hover text."""
    left, right, top = 70.0, float(width - 10), 8.0
    legend = [(s.name, s.name, s.color) for s in series] if len(series) > 1 else []
    if legend:
        top += 16 * _legend_rows([s.name for s in series], left, right) + 4
    bottom = float(height - 24)
    totals = [
        sum((s.values[i] or Decimal(0) for s in series), Decimal(0)) for i in range(len(categories))
    ]
    ticks = nice_ticks(max(totals, default=Decimal(0)))
    span = ticks[-1]

    def scale(v: Decimal) -> float:
        return bottom - float(v / span) * (bottom - top)

    body = _y_axis(ticks, tick_labels(ticks, minor), scale, left, right)
    body.append(f'<text class="unit" x="4" y="{top + 4:.1f}">{escape(unit)}</text>')
    slot = (right - left) / max(1, len(categories))
    bar = max(1.0, slot * 0.7)
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar) / 2
        base = Decimal(0)
        for s in series:
            value = s.values[i]
            if value is None or value <= 0:
                continue
            y0, y1 = scale(base), scale(base + value)
            h = max(1.0, y0 - y1)
            tip = escape(tooltip(i, s.name, value))
            body.append(
                f'<rect class="mark" data-series="{escape(s.name)}" x="{x:.1f}" y="{y0 - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{s.color}"><title>{tip}</title></rect>'
            )
            base += value
        if category:
            body.append(
                f'<text class="tick x" x="{x + bar / 2:.1f}" y="{bottom + 16:.1f}">'
                f"{escape(category)}</text>"
            )
    body.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    body += _legend(legend, 16.0, left, right)
    return _figure(chart_id, title, width, height, body)


def budget_chart(
    *, chart_id: str, title: str, rows: Sequence[BudgetBar], minor: int, width: int = 760
) -> str:
    """One row per business unit: spent to date, the projection to month end (where drawn) and
    the budget as a marker, with a legend of exactly the three."""
    left, right, top, row_h = 150.0, float(width - 190), 30.0, 26.0
    height = int(top + row_h * len(rows) + 28)
    peak = max(
        (max(r.budget, r.spent or Decimal(0), r.projected or Decimal(0)) for r in rows),
        default=Decimal(0),
    )
    ticks = nice_ticks(peak)
    span = ticks[-1]

    def scale(v: Decimal) -> float:
        return left + float(v / span) * (right - left)

    body: list[str] = []
    bottom = top + row_h * len(rows)
    for tick, text in zip(ticks, tick_labels(ticks, minor), strict=True):
        x = scale(tick)
        body.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{bottom}"/>'
            f'<text class="tick x" x="{x:.1f}" y="{bottom + 14:.1f}">{text}</text>'
        )
    for i, r in enumerate(rows):
        y = top + row_h * i + 5
        body.append(
            f'<text class="row-label" x="{left - 8}" y="{y + 12:.1f}">{escape(r.label)}</text>'
        )
        if r.projected is not None and r.spent is not None and r.projected > r.spent:
            body.append(
                _hbar("projected", PROJECTED_COLOR, scale(Decimal(0)), scale(r.projected), y)
            )
        if r.spent is not None and r.spent > 0:
            body.append(_hbar("spent", SPENT_COLOR, scale(Decimal(0)), scale(r.spent), y))
        bx = scale(r.budget)
        body.append(
            f'<rect class="mark" data-series="budget" x="{bx - 1.5:.1f}" y="{y - 3:.1f}" '
            f'width="3" height="22" fill="{BUDGET_COLOR}"/>'
            f'<text class="row-value" x="{right + 8:.1f}" y="{y + 12:.1f}">{escape(r.text)}</text>'
        )
    legend = [
        ("spent", "Spent to date", SPENT_COLOR),
        ("projected", "Projected to month end", PROJECTED_COLOR),
        ("budget", "Budget", BUDGET_COLOR),
    ]
    body += _legend(legend, 14.0, left, float(width))
    return _figure(chart_id, title, width, height, body)


def _hbar(key: str, color: str, x0: float, x1: float, y: float) -> str:
    return (
        f'<rect class="mark" data-series="{key}" x="{x0:.1f}" y="{y:.1f}" '
        f'width="{max(1.0, x1 - x0):.1f}" height="16" fill="{color}"/>'
    )


# ----------------------------------------------------------------------------- the report's


def _day_series(view: MonthView, rows: Sequence[BuRow]) -> list[Series]:
    index = {d: i for i, d in enumerate(view.days)}
    out = []
    for r in rows:
        values: list[Decimal | None] = [None] * len(view.days)
        for day in r.days:
            if day.day is not None and day.day in index and day.cost is not None:
                values[index[day.day]] = day.exact if day.exact is not None else day.cost
        out.append(Series(r.line.name, r.color, values))
    return out


def daily_cost_chart(view: MonthView, rows: Sequence[BuRow], chart_id: str, title: str) -> str:
    """Cost per day of ``rows`` (stacked, the BUs' colours) over every day of the month, the
    axis labelled by date (``Dec 1``, ``Dec 8``…); a sentence when nothing priced is there."""
    currency = next((r.line.currency for r in rows if r.line.currency), None)
    series = _day_series(view, rows)
    if currency is None or not any(v for s in series for v in s.values):
        return '<p class="quiet">No priced cost to draw.</p>'
    days, minor = view.days, minor_units(currency)
    values = sorted({v for s in series for v in s.values if v is not None})
    labels = dict(zip(values, distinct_labels(values, minor), strict=True))

    def tip(i: int, name: str, value: Decimal) -> str:
        return f"{day_label(days[i])} \u00b7 {name}: {labels[value]} {currency}"

    return column_chart(
        chart_id=chart_id,
        title=title,
        categories=[day_label(d) if (d.day - 1) % 7 == 0 else "" for d in days],
        series=series,
        unit=currency,
        minor=minor,
        tooltip=tip,
    )


def budget_burn_chart(view: MonthView) -> str:
    """The month's budgets (one currency), or "" when they are in several."""
    currencies = {b.currency for b in view.budgets}
    if len(currencies) != 1 or None in currencies:
        return ""
    (currency,) = currencies
    assert currency is not None
    bars = [
        BudgetBar(
            b.business_unit,
            b.spent,
            b.projected,
            b.budget,
            f"{format_money(b.spent, currency, code=False)} of {format_money(b.budget, currency)}",
        )
        for b in view.budgets
    ]
    return budget_chart(
        chart_id=f"chart-{view.month}-budget",
        title=f"Spent to date against each budget, {currency}",
        rows=bars,
        minor=minor_units(currency),
    )
