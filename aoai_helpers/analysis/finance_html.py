"""The finance report as one self-contained, offline HTML page (``report --html FILE``).

:func:`write_finance_report` builds the figures of every month with calls
(:func:`~aoai_helpers.analysis.finance_report.build_finance_report`) and writes
:func:`render_finance_report`'s page atomically (a temporary file beside it, then a rename).

The page is for finance, not the engineer: its own template (not notebook 04), no setup
details, no commands but the one that imports the Azure invoice. It holds every month — a
selector switches between them with a few lines of plain JavaScript (without JavaScript every
month shows, one after the other) — and per month: the headline figures, the per-BU statement
with its totals row, a drill-down per BU (``<details>``: models and deployments, daily trend,
top users), budgets, the allocation of a fixed amount, and the data quality. Charts are inline
SVG (:mod:`aoai_helpers.analysis.svg`); CSS and script are inline; nothing is fetched
(checked before writing by :func:`aoai_helpers.analysis.html_report.network_references`).

Money goes through :func:`aoai_helpers.core.money.format_money` (the currency's minor unit;
unpriced is the word "unpriced", never 0); text columns are left-aligned, numbers right-aligned.
Every name (business units, users, models) is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from html import escape
from pathlib import Path

from sqlalchemy.engine import Engine

from aoai_helpers.analysis.export import atomic_write
from aoai_helpers.analysis.finance_invoice import BILL_IMPORT_HINT, coverage_text, invoice_section
from aoai_helpers.analysis.finance_report import (
    MIN_CONFIDENT_DAYS,
    CoverageFigure,
    FinanceReport,
    LineItem,
    MonthView,
    build_finance_report,
)
from aoai_helpers.analysis.html_report import ReportError, network_references
from aoai_helpers.analysis.svg import budget_burn_chart, daily_cost_chart
from aoai_helpers.core.money import format_money as _money

__all__ = ["BILL_IMPORT_HINT", "render_finance_report", "write_finance_report"]

#: What to run when a month has no invoice to compare with (the page's one command).
_TITLE = "Azure OpenAI chargeback"

_CSS = """

body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
header.page{background:#fff;border-bottom:1px solid #d0d7de;padding:14px 32px;display:flex;flex-wrap:wrap;align-items:center;gap:6px 28px}
header.page h1{font-size:20px;margin:0;flex:1 1 auto}header.page .org{color:#0969da}
header.page select{font:inherit;padding:3px 6px}
header.page .prepared{color:#57606a;margin:0;flex-basis:100%}
main{max-width:1120px;margin:0 auto;padding:4px 32px 48px}
section.month>h2{font-size:18px;margin:18px 0 4px}
section.part{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 20px 14px;margin:14px 0}
section.part>h3{font-size:15px;margin:6px 0 10px}p.status{color:#57606a;margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 16px}
.card .what{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:21px;font-weight:600;font-variant-numeric:tabular-nums}
.card .more{color:#57606a;font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin:4px 0 10px}
th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{font-weight:600;color:#57606a;font-size:12px}th.num,td.num{text-align:right;white-space:nowrap}
tfoot td{font-weight:600;border-top:2px solid #1f2328;border-bottom:none}
.unpriced{color:#9a6700;font-style:italic}
.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:6px 12px;margin:6px 0 10px}
.quiet{color:#57606a}
details.bu{border:1px solid #d0d7de;border-radius:6px;margin:8px 0;padding:0 14px}
details.bu>summary{cursor:pointer;padding:8px 0;font-weight:600}
details.bu h4{font-size:13px;margin:10px 0 4px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.status-over{color:#cf222e;font-weight:600}.status-at-risk{color:#bc4c00;font-weight:600}
.status-on-track{color:#1a7f37}figure.aoai-svg-chart{margin:6px 0 10px}
figure.aoai-svg-chart figcaption{font-size:12px;color:#57606a;margin-bottom:2px}
svg text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:#57606a}
svg .tick.y{text-anchor:end}svg .tick.x{text-anchor:middle}
svg .row-label{text-anchor:end;fill:#1f2328}svg .row-value{fill:#1f2328}
svg .legend-text{fill:#1f2328}svg .grid{stroke:#eaeef2}svg .axis{stroke:#8c959f}
code{background:#eff1f3;padding:1px 4px;border-radius:4px}ul.plain{margin:4px 0;padding-left:20px}
@media print{header.page select,header.page label{display:none}body{background:#fff}}
"""

_JS = """(function () {
  var select = document.getElementById('month-select'), heading = document.getElementById('title-month');
  var sections = [].slice.call(document.querySelectorAll('section.month'));
  function show(month) {
    var target = sections.filter(function (s) { return s.getAttribute('data-month') === month; })[0];
    if (!target) { return; }
    sections.forEach(function (s) { s.hidden = s !== target; });
    select.value = month;
    heading.textContent = target.getAttribute('data-label');
    document.title = select.getAttribute('data-title') + ' \\u00b7 ' + target.getAttribute('data-label');
  }
  select.addEventListener('change', function () {
    show(select.value);
    try { history.replaceState(null, '', '#' + select.value); } catch (e) { /* not allowed here */ }
  });
  if (location.hash.length > 1) { show(decodeURIComponent(location.hash.slice(1))); }
  window.addEventListener('beforeprint', function () {  // print a month with its drill-downs
    [].forEach.call(document.querySelectorAll('section.month details'), function (d) { d.open = true; });
  });
})();"""


def write_finance_report(
    path: str | Path,
    engine: Engine,
    *,
    month: str | None = None,
    organisation: str | None = None,
    coverage: Mapping[str, CoverageFigure] | None = None,
    as_of: datetime | None = None,
    allocate_amount: Decimal | float | str | None = None,
    allocate_currency: str | None = None,
    top: int = 10,
) -> Path:
    """Write the finance report of every month in ``engine`` to ``path``; ``month`` (default
    the latest up to ``as_of``) shows first. ``coverage``: the Azure invoice beside the
    recorded usage, per ``YYYY-MM``. See :func:`~aoai_helpers.analysis.finance_report.build_finance_report`
    for the rest. ConfigError for a month without calls or a file that cannot be written."""
    report = build_finance_report(
        engine,
        month=month,
        organisation=organisation,
        coverage=coverage,
        as_of=as_of,
        allocate_amount=allocate_amount,
        allocate_currency=allocate_currency,
        top=top,
    )
    page = render_finance_report(report)
    found = network_references(page)
    if found:  # a bug here, not the data's: every resource is inline
        raise ReportError(f"the finance report would load from the network: {found[:3]}")
    return atomic_write(path, page.encode("utf-8"))


def render_finance_report(report: FinanceReport) -> str:
    """The whole page (``<!DOCTYPE html>`` …) of ``report``; the selected month shows first."""
    title = " \u00b7 ".join(p for p in (report.organisation, _TITLE) if p)
    selected = report.month(report.selected)
    options = "".join(
        f'<option value="{m.month}" data-label="{m.label}"'
        f"{' selected' if m.month == report.selected else ''}>{m.label}</option>"
        for m in reversed(report.months)
    )
    org = (
        f'<span class="org">{escape(report.organisation)}</span> \u00b7 '
        if report.organisation
        else ""
    )
    sections = "".join(
        _month(m, m.month != report.selected, report.allocation_asked) for m in report.months
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} \u00b7 {selected.label}</title><style>{_CSS}</style>"
        "<noscript><style>section.month[hidden]{display:block}header.page label{display:none}"
        "</style></noscript></head><body>"
        f'<header class="page"><h1>{org}{_TITLE} \u00b7 <span id="title-month">{selected.label}'
        f'</span></h1><label>Month <select id="month-select" data-title="{escape(title)}">'
        f"{options}</select></label>"
        f'<p class="prepared">Prepared {report.as_of:%Y-%m-%d %H:%M} UTC from the calls recorded '
        "by the Azure OpenAI gateway. Amounts are in each rate's currency.</p></header>"
        f"<main>{sections}</main><script>{_JS}</script></body></html>"
    )


# ----------------------------------------------------------------------------- formatting


def _part(title: str, body: str, kind: str = "") -> str:
    return f'<section class="part {kind}"><h3>{title}</h3>{body}</section>'


def _cost_cell(item: LineItem, code: bool) -> str:
    if item.cost is None:
        return '<td class="num cost unpriced">unpriced</td>'
    return f'<td class="num cost">{_money(item.cost, item.currency, code=code)}</td>'


def _provisional_cell(item: LineItem, code: bool) -> str:
    if item.provisional is None:
        return '<td class="num provisional quiet">\u2013</td>'
    return f'<td class="num provisional">{_money(item.provisional, item.currency, code=code)}</td>'


def _count(n: int) -> str:
    return f"{n:,}" if n else "\u2013"


def _share(value: Decimal | float) -> str:
    return f"{Decimal(value) * 100:.1f} %"


def _unpriced_state(item: LineItem) -> str:
    return "all" if item.cost is None else ("some" if item.unpriced_calls else "none")


def _head(cells: Sequence[tuple[str, bool]]) -> str:
    ths = (
        f'<th class="num">{escape(t)}</th>' if num else f"<th>{escape(t)}</th>" for t, num in cells
    )
    return f"<thead><tr>{''.join(ths)}</tr></thead>"


def _cost_header(view: MonthView) -> tuple[str, bool]:
    """The cost columns' header word and whether cells carry their currency code."""
    cur = view.currency
    return (f"Cost ({cur})", False) if cur else ("Cost", True)


# ----------------------------------------------------------------------------- a month


def _month(view: MonthView, hidden: bool, allocation_asked: bool) -> str:
    parts = [_headline(view), _bu_table(view), _daily(view), _drill_down(view), _budgets(view)]
    parts += [
        _allocation(view),
        invoice_section(view.quality.coverage),
        _quality(view, allocation_asked),
    ]
    return (
        f'<section class="month" id="month-{view.month}" data-month="{view.month}" '
        f'data-label="{view.label}"{" hidden" if hidden else ""}><h2>{view.label}</h2>'
        f'<p class="status">{_status(view)}</p>{"".join(parts)}</section>'
    )


def _status(view: MonthView) -> str:
    issued = (
        f"Statement issued {view.issued_at:%Y-%m-%d %H:%M} UTC."
        if view.issued_at
        else "Live figures: this month's statement has not been issued."
    )
    days = f" Month to date: {view.elapsed_days:.1f} of {len(view.days)} days elapsed."
    return issued + (" The month is closed." if view.closed else days)


def _card(figure: str, what: str, value: str, more: str = "") -> str:
    extra = f'<div class="more">{more}</div>' if more else ""
    return (
        f'<div class="card" data-figure="{figure}"><div class="what">{what}</div>'
        f'<div class="value">{value}</div>{extra}</div>'
    )


def _headline(view: MonthView) -> str:
    q = view.quality
    totals = view.totals
    total = "<br>".join(_money(t.cost, t.currency) for t in totals) or "unpriced"
    exact = "<br>".join(_money(t.exact, t.currency) for t in totals) or "unpriced"
    provisional = "; ".join(_money(t.provisional, t.currency) for t in totals if q.estimated_calls)
    unpriced = f"{q.unpriced_calls:,}" if q.unpriced_calls else "none"
    cards = [
        _card("total", "Total cost", total, f"{q.calls:,} calls"),
        _card("exact", "Exact", exact, f"provisional {provisional or 'none'}"),
        _card("unpriced", "Unpriced calls", unpriced, f"of {q.calls:,} calls, not costed"),
        _card("change", f"Change vs {view.previous_label}", *_change(view)),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _change(view: MonthView) -> tuple[str, str]:
    if not view.has_previous:
        return "no data last month", ""
    if not view.closed:  # a part of a month against a whole one says nothing yet
        last = "; ".join(
            _money(t.previous, t.currency) for t in view.totals if t.previous is not None
        )
        return (
            "month not over yet",
            f"last month {last or 'no priced cost'}; compared once it closes",
        )
    values, mores = [], []
    for t in view.totals:
        if t.previous is None or t.change is None:
            values.append(f"no {escape(t.currency)} cost last month")
            continue
        sign = "+" if t.change > 0 else ""
        pct = "" if t.change_share is None else f" ({sign}{_share(t.change_share)})"
        values.append(f"{sign}{_money(t.change, t.currency)}{pct}")
        mores.append(f"last month {_money(t.previous, t.currency)}")
    return "<br>".join(values) or "no priced cost", "; ".join(mores)


def _line_row(item: LineItem, code: bool, *, provisional: bool = True, color: str = "",
              total: bool = False) -> str:  # fmt: skip
    """A table row of ``item``: name, detail, calls, tokens, cost, [provisional,] unpriced."""
    swatch = f'<span class="swatch" style="background:{color}"></span>' if color else ""
    attrs = f'class="total" data-currency="{escape(item.currency or "")}"' if total else (
        f'data-unpriced="{_unpriced_state(item)}"'
    )  # fmt: skip
    return (
        f"<tr {attrs}><td>{swatch}{escape(item.name)}</td><td>{escape(item.detail or '')}</td>"
        f'<td class="num">{item.calls:,}</td><td class="num">{item.tokens:,}</td>'
        f"{_cost_cell(item, code)}{_provisional_cell(item, code) if provisional else ''}"
        f'<td class="num">{_count(item.unpriced_calls)}</td></tr>'
    )


def _bu_table(view: MonthView) -> str:
    word, code = _cost_header(view)
    head = _head(
        [("Business unit", False), ("Cost centre", False), ("Calls", True), ("Tokens", True),
         (word, True), ("of which provisional", True), ("Unpriced calls", True)]
    )  # fmt: skip
    body = "".join(_line_row(r.line, code, color=r.color) for r in view.rows)
    lines = [r.line for r in view.rows]
    calls, tokens = sum(x.calls for x in lines), sum(x.tokens for x in lines)
    unpriced, estimated = view.quality.unpriced_calls, view.quality.estimated_calls
    totals = [
        LineItem("Total" + ("" if view.currency else f" {t.currency}"), None, calls, tokens,
                 t.cost, t.currency, unpriced, t.provisional if estimated else None)
        for t in view.totals
    ] or [LineItem("Total", None, calls, tokens, None, None, unpriced)]  # fmt: skip
    feet = "".join(_line_row(t, code, total=True) for t in totals)
    return _part(
        "Business units",
        f'<table class="bu-table">{head}<tbody>{body}</tbody><tfoot>{feet}</tfoot></table>',
    )


def _daily(view: MonthView) -> str:
    charts = []
    for t in view.totals:
        rows = [r for r in view.rows if r.line.currency == t.currency]
        title = f"Cost per day (UTC) by business unit, {t.currency}"
        charts.append(daily_cost_chart(view, rows, f"chart-{view.month}-daily-{t.currency}", title))
    unpriced = view.quality.unpriced_calls
    note = f'<p class="quiet">{unpriced:,} unpriced call(s) are not drawn.</p>' if unpriced else ""
    body = "".join(charts) or '<p class="quiet">No priced cost to draw.</p>'
    return _part("Daily cost", body + note)


def _items_table(kind: str, items: Sequence[LineItem], names: tuple[str, str], code: bool,
                 word: str) -> str:  # fmt: skip
    provisional = kind == "models"
    cols = [(names[0], False), (names[1], False), ("Calls", True), ("Tokens", True), (word, True)]
    cols += [("of which provisional", True)] if provisional else []
    rows = "".join(_line_row(i, code, provisional=provisional) for i in items)
    head = _head([*cols, ("Unpriced calls", True)])
    return f'<table class="{kind}-table">{head}<tbody>{rows}</tbody></table>'


def _drill_down(view: MonthView) -> str:
    word, code = _cost_header(view)
    blocks = []
    for n, r in enumerate(view.rows, start=1):
        total = "unpriced" if r.line.cost is None else _money(r.line.cost, r.line.currency)
        chart = daily_cost_chart(
            view, [r], f"chart-{view.month}-bu{n}-daily", f"{r.line.name}: cost per day (UTC)"
        )
        blocks.append(
            f'<details class="bu" data-bu="{escape(r.line.name)}"><summary>'
            f'<span class="swatch" style="background:{r.color}"></span>{escape(r.line.name)} '
            f"\u00b7 {total}</summary><h4>Models and deployments</h4>"
            f"{_items_table('models', r.models, ('Model', 'Deployment'), code, word)}"
            f"<h4>Daily trend</h4>{chart}<h4>Top users</h4>"
            f"{_items_table('users', r.users, ('User', 'E-mail'), code, word)}</details>"
        )
    intro = "Open a business unit for its models, deployments, daily trend and top users."
    return _part("By business unit", f'<p class="quiet">{intro}</p>{"".join(blocks)}')


def _budgets(view: MonthView) -> str:
    if not view.budgets:
        return _part("Budgets", '<p class="quiet">No business unit has a monthly budget.</p>')
    note = "" if view.confident else (
        f'<p class="note confidence-note">Only {view.elapsed_days:.1f} day(s) of {view.label} '
        "have elapsed: a projection to month end from so little data is low-confidence, so "
        "none is shown and no business unit is flagged at risk before day "
        f"{MIN_CONFIDENT_DAYS}. Over budget means spent more than the budget already.</p>"
    )  # fmt: skip
    head = _head([("Business unit", False), ("Budget", True), ("Spent", True), ("Used", True),
                  ("Projected to month end", True), ("Status", False)])  # fmt: skip
    rows = []
    for b in view.budgets:
        spent = _money(b.spent, b.currency)
        used = "\u2013" if b.used is None else _share(b.used)
        projected = "\u2013" if b.projected is None else _money(b.projected, b.currency)
        css = "status-" + b.status.replace(" ", "-")
        rows.append(
            f"<tr><td>{escape(b.business_unit)}</td>"
            f'<td class="num">{_money(b.budget, b.currency)}</td>'
            f'<td class="num{" unpriced" if b.spent is None else ""}">{spent}</td>'
            f'<td class="num">{used}</td><td class="num">{projected}</td>'
            f'<td class="{css}">{escape(b.status)}</td></tr>'
        )
    missing = (
        f'<p class="quiet">No budget: {escape(", ".join(view.no_budget))}.</p>'
        if view.no_budget
        else ""
    )
    table = f'<table class="budget-table">{head}<tbody>{"".join(rows)}</tbody></table>'
    return _part("Budgets", note + table + budget_burn_chart(view) + missing)


def _allocation(view: MonthView) -> str:
    a = view.allocation
    if a is None:
        return ""
    head = _head([("Business unit", False), ("Tokens", True), ("Token share", True),
                  (f"Amount ({a.currency})", True)])  # fmt: skip
    tokens = sum(t for _, t, _ in a.rows)
    rows = "".join(
        f'<tr><td>{escape(name)}</td><td class="num">{t:,}</td>'
        f'<td class="num">{_share(Decimal(t) / tokens)}</td>'
        f'<td class="num cost">{_money(x, a.currency, code=False)}</td></tr>'
        for name, t, x in a.rows
    )
    foot = (
        f'<tr class="total"><td>Total</td><td class="num">{tokens:,}</td>'
        f'<td class="num">100.0 %</td><td class="num cost">{_money(a.amount, a.currency, code=False)}'
        "</td></tr>"
    )
    return (
        f'<section class="part"><h3>Allocation of {_money(a.amount, a.currency)}</h3>'
        '<p class="quiet">A fixed amount split across the business units by their share of '
        "the month's tokens, rounded so that the parts add up to it exactly.</p>"
        f'<table class="allocation-table">{head}<tbody>{rows}</tbody><tfoot>{foot}</tfoot>'
        "</table></section>"
    )


def _quality(view: MonthView, allocation_asked: bool) -> str:
    q = view.quality
    share = "; ".join(
        f"{_share(t.provisional / t.cost)} of the {escape(t.currency)} cost"
        for t in view.totals
        if t.cost
    )
    items = [
        ("Provisional", f"{q.estimated_calls:,} call(s) ({share or 'no cost'}) are provisional: the "
         "gateway counted their tokens because Azure OpenAI did not report them; they may still "
         "be corrected." if q.estimated_calls else "None: every call's tokens were reported by "
         "Azure OpenAI."),
        ("Unpriced", _unpriced_text(view)),
        ("Unreadable events", _dead_letter_text(view)),
        ("Coverage vs invoice", coverage_text(view.quality.coverage)),
    ]  # fmt: skip
    if q.mixed:
        items.append(("Several currencies", f"{escape(', '.join(q.mixed))}: calls priced in "
                      "several currencies; their cost is not one amount."))  # fmt: skip
    if allocation_asked and view.allocation is None:
        items.append(("Allocation", "Not allocated: the month has no tokens, or no single "
                      "currency and the amount's currency was not given."))  # fmt: skip
    body = "".join(f"<dt>{what}</dt><dd>{text}</dd>" for what, text in items)
    return _part("Data quality", f"<dl>{body}</dl>", "quality")


def _unpriced_text(view: MonthView) -> str:
    q = view.quality
    if not q.unpriced_calls:
        return "None: every call has a rate."
    models = "".join(
        f"<li>{escape(model)}: {calls:,} call(s)</li>" for model, calls in q.unpriced_models
    )
    return (
        f"{q.unpriced_calls:,} call(s) have no rate for their model and are not costed (shown "
        f'as "unpriced", never as 0):<ul class="plain unpriced-models">{models}</ul>'
    )


def _dead_letter_text(view: MonthView) -> str:
    d = view.quality.dead_letters
    if not d.count:
        return "None: every event received this month was read."
    # the reasons are the engineers' (event formats, logger limits): finance gets the count
    return (
        f'<span class="dead-letters">{d.count:,}</span> event(s) received this month could not be '
        "read and are not in these figures; they are kept as they arrived, for the team that "
        "runs the gateway to correct and load."
    )
