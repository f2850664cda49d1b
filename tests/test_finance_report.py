"""The finance report: figures (aoai_helpers.analysis.finance_report), page (finance_html), charts (svg).

The database is built through the real ingest path from hand-made events over three months
(default rates, USD per 1M tokens: gpt-4o 2.50 / cached 1.25 / 10.00, gpt-4.1-mini 0.40 / 1.60):

=========  ======================================================================  ==========
month      calls                                                                   cost
=========  ======================================================================  ==========
2026-10    Finance 100k/50k (0.75), legal-review 1M/200k (4.50)                    5.25
2026-11    Finance: 1M/200k (4.50), 2M/100k with 1,024k cached (1.28 + 2.44 +      11.20
           1.00 = 4.72), gpt-4.1-mini 500k/500k (1.00), a model without rate, a
           prompt-only call (8 tokens, 0.00002, provisional) → 10.22002;
           legal-review 100k/50k (0.75); Research: two unpriced calls only;
           "<b>R&D</b>" and "ops" 33,333/3,333 each (0.0833325 + 0.03333 =
           0.1166625: rounded one by one 0.12 + 0.12, but the month's exact total
           11.203345 is 11.20, so one of them shows 0.11 — by largest remainder,
           the later in name order)
2026-12    Finance on Dec 1 08:00, 1M/200k (4.50)                                 4.50
=========  ======================================================================  ==========

Finance has a budget of 12.00: on Dec 1 at noon half a day has elapsed (budget_burn projects
4.50 / (0.5/31) = 279 → "at risk"); on Dec 10 nine days (15.50 → at risk, confidently); at
23:00 on Dec 31 the projection is ~4.51 (on track). One unreadable event is dead-lettered and
its receipt moved to 2026-11-20 (dead letters are stamped with the system clock).

Pages are parsed with :mod:`html.parser`; the browser tests open them in headless Chromium
(``tests/browser.py``), screenshots under ``out/test-artifacts/finance_report/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import browser
import pytest
from playwright.sync_api import BrowserContext, Page
from sqlalchemy import update
from sqlalchemy.engine import Engine
from usage_events import HELLO, usage

from aoai_helpers.analysis.finance_data import CoverageFigure, dead_letters, months_with_calls
from aoai_helpers.analysis.finance_html import (
    BILL_IMPORT_HINT,
    render_finance_report,
    write_finance_report,
)
from aoai_helpers.analysis.finance_report import build_finance_report
from aoai_helpers.analysis.html_report import network_references
from aoai_helpers.analysis.svg import distinct_labels, nice_ticks, tick_labels
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import dead_letter
from aoai_helpers.exceptions import ConfigError

#: the figures' tests run on SQLite and PostgreSQL; the page's and the browser's on SQLite
BOTH_DATABASES = True

ARTIFACTS = browser.ARTIFACTS / "finance_report"
HOSTILE = "<b>R&D</b>"
DAY_1 = datetime(2026, 12, 1, 12, 0)
DAY_10 = datetime(2026, 12, 10, 0, 0)
MONTH_END = datetime(2026, 12, 31, 23, 0)


def sub(sid: str, name: str) -> dict[str, str]:
    return {"SubscriptionId": sid, "SubscriptionName": name}


A, B, C, D, E, F = (
    sub("sub-a", "fin-a"),
    sub("sub-b", "fin-b"),
    sub("sub-c", "legal-review"),
    sub("sub-d", "research"),
    sub("sub-e", "hostile"),
    sub("sub-f", "ops"),
)


@pytest.fixture
def billed(engine: Engine, make_v2: Any, ingest_events: Any) -> Engine:
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", "fin-a", "CC-1", 12.0),
                BusinessUnit("sub-b", "Finance", "fin-b", "CC-1"),
                BusinessUnit("sub-d", "Research", "research", "CC-9"),
                BusinessUnit("sub-e", HOSTILE, "hostile", "CC-<7>"),
            ],
        )
    finetune = {"Model": "my-finetune", "DeploymentName": "ft"}
    events = [
        make_v2(**A, ExecTimeUTC="2026-10-31T23:59:59.999Z", Usage=usage(100_000, 50_000)),
        make_v2(**C, ExecTimeUTC="2026-10-15T08:00:00.000Z", Usage=usage(1_000_000, 200_000)),
        make_v2(**A, ExecTimeUTC="2026-11-01T00:00:00.000Z", Usage=usage(1_000_000, 200_000)),
        make_v2(**A, ExecTimeUTC="2026-11-10T12:00:00.000Z",
                Usage=usage(2_000_000, 100_000, 1_024_000)),
        make_v2(**B, ExecTimeUTC="2026-11-15T09:00:00.000Z", DeploymentName="gpt-4.1-mini",
                Model="gpt-4.1-mini-2025-04-14", Usage=usage(500_000, 500_000)),
        make_v2(**B, **finetune, ExecTimeUTC="2026-11-16T09:00:00.000Z", Usage=usage(10, 10)),
        make_v2(**B, ExecTimeUTC="2026-11-17T09:00:00.000Z", IsStreaming=True, Usage=None,
                Request=HELLO),
        make_v2(**C, ExecTimeUTC="2026-11-30T23:59:59.999Z", Usage=usage(100_000, 50_000)),
        make_v2(**D, **finetune, ExecTimeUTC="2026-11-20T10:00:00.000Z", Usage=usage(300, 100)),
        make_v2(**D, **finetune, ExecTimeUTC="2026-11-21T10:00:00.000Z", Usage=usage(300, 100)),
        make_v2(**E, ExecTimeUTC="2026-11-21T11:00:00.000Z", Usage=usage(33_333, 3_333)),
        make_v2(**F, ExecTimeUTC="2026-11-22T11:00:00.000Z", Usage=usage(33_333, 3_333)),
        make_v2(**A, ExecTimeUTC="2026-12-01T08:00:00.000Z", Usage=usage(1_000_000, 200_000)),
        b"{not json",
    ]  # fmt: skip
    result = ingest_events(engine, *events)
    assert (result.stored, result.unpriced, result.prompt_only, result.dead_lettered) == (
        13,
        3,
        1,
        1,
    )
    with transaction(engine) as conn:  # the system clock stamped it: move it into November
        conn.execute(update(dead_letter).values(ReceivedAtUTC=datetime(2026, 11, 20, 10)))
    return engine


# ----------------------------------------------------------------------------- an HTML tree


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(
                    (v in c.attrs.get(k.rstrip("_"), "").split())
                    if k.endswith("_")
                    else c.attrs.get(k.replace("_", "-")) == v
                    for k, v in attrs.items()
                ):
                    out.append(c)
                out += c.find_all(tag, **attrs)
        return out

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        (found,) = self.find_all(tag, **attrs)
        return found


_VOID = {"meta", "br", "link", "img", "input", "hr"}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    assert tree.stack == [tree.root], "unclosed elements"
    return tree.root


def section(page: Node, month: str) -> Node:
    return page.one("section", data_month=month)


def amount(text: str) -> Decimal:
    return Decimal(text.split()[0].replace(",", ""))


def page_of(engine: Engine, **options: Any) -> Node:
    return parse(render_finance_report(build_finance_report(engine, **options)))


# ----------------------------------------------------------------------------- the figures


def test_november_figures(billed: Engine) -> None:
    report = build_finance_report(billed, month="2026-11", as_of=DAY_1)
    nov = report.month("2026-11")
    assert [m.month for m in report.months] == ["2026-10", "2026-11", "2026-12"]
    lines = {r.line.name: r.line for r in nov.rows}
    assert lines["Finance"].cost == Decimal("10.22")
    assert lines["legal-review"].cost == Decimal("0.75")
    assert (lines[HOSTILE].cost, lines["ops"].cost) == (Decimal("0.12"), Decimal("0.11"))
    assert lines["Research"].cost is None and lines["Research"].unpriced_calls == 2
    (total,) = nov.totals
    assert (total.currency, total.cost, total.previous) == (
        "USD",
        Decimal("11.20"),
        Decimal("5.25"),
    )
    assert total.change == Decimal("5.95")
    assert total.provisional == Decimal("0.00")  # 0.00002 of provisional cost
    assert nov.quality.estimated_calls == 1 and nov.quality.unpriced_calls == 3
    assert nov.quality.unpriced_models == [("my-finetune", 3)]
    assert nov.quality.dead_letters.count == 1
    finance = next(r for r in nov.rows if r.line.name == "Finance")
    assert sum(m.cost or 0 for m in finance.models) == Decimal("10.22")  # models add up to the BU
    assert sum(d.cost or 0 for d in finance.days) == Decimal("10.22")
    assert next(m for m in finance.models if m.name == "my-finetune").cost is None
    assert report.month("2026-10").has_previous is False


def test_default_month_is_the_latest_up_to_as_of(billed: Engine) -> None:
    assert build_finance_report(billed, as_of=DAY_1).selected == "2026-12"
    assert build_finance_report(billed, as_of=datetime(2026, 11, 25)).selected == "2026-11"


@pytest.mark.parametrize("month", ["2025-01", "2026-09"])
def test_a_month_without_calls_is_an_error(billed: Engine, month: str) -> None:
    with pytest.raises(ConfigError, match=f"no calls in {month}"):
        build_finance_report(billed, month=month)


def test_an_empty_database_is_an_error(engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    with pytest.raises(ConfigError, match="no calls in the database"):
        write_finance_report(out, engine)
    assert not out.exists()


def test_months_and_dead_letters_queries(billed: Engine) -> None:
    assert months_with_calls(billed) == ["2026-10", "2026-11", "2026-12"]
    november = dead_letters(billed, "2026-11")
    assert november.count == 1 and november.reasons[0][1] == 1 and november.other_reasons == 0
    assert dead_letters(billed, "2026-12").count == 0


def test_budget_projection_waits_for_enough_days(billed: Engine) -> None:
    def finance(as_of: datetime) -> tuple[str, Decimal | None, bool]:
        dec = build_finance_report(billed, as_of=as_of).month("2026-12")
        (row,) = [b for b in dec.budgets if b.business_unit == "Finance"]
        return row.status, row.projected, dec.confident

    assert finance(DAY_1) == ("too early to tell", None, False)
    assert finance(DAY_10) == ("at risk", Decimal("15.50"), True)
    assert finance(MONTH_END) == ("on track", Decimal("4.51"), True)


def test_allocation_in_the_months_currency(billed: Engine) -> None:
    report = build_finance_report(billed, as_of=DAY_1, allocate_amount="1000.00")
    alloc = report.month("2026-11").allocation
    assert alloc is not None and alloc.currency == "USD" and alloc.amount == Decimal("1000.00")
    assert sum(x for _, _, x in alloc.rows) == Decimal("1000.00")
    with pytest.raises(ConfigError, match="more than 0 decimal"):
        build_finance_report(billed, allocate_amount="1000.50", allocate_currency="JPY")


# ----------------------------------------------------------------------------- the page


@pytest.mark.sqlite_only
def test_totals_row_is_the_sum_of_the_bu_rows_to_the_cent(billed: Engine) -> None:
    page = page_of(billed, as_of=DAY_1)
    for month, expected in [("2026-10", "5.25"), ("2026-11", "11.20"), ("2026-12", "4.50")]:
        table = section(page, month).one("table", class_="bu-table")
        rows = table.one("tbody").find_all("tr")
        costs = [c.text() for r in rows for c in r.find_all("td", class_="cost")]
        total = table.one("tr", class_="total").one("td", class_="cost").text()
        priced = [amount(c) for c in costs if c != "unpriced"]
        assert sum(priced) == amount(total) == Decimal(expected), (month, costs, total)


@pytest.mark.sqlite_only
def test_unpriced_groups_read_unpriced_never_zero(billed: Engine) -> None:
    nov = section(page_of(billed, as_of=DAY_1), "2026-11")
    unpriced_rows = nov.find_all("tr", data_unpriced="all")
    names = sorted(r.find_all("td")[0].text() for r in unpriced_rows)
    # the BU, its one user, and the model in both BUs that call it
    assert names == ["Research", "Test User", "my-finetune", "my-finetune"], names
    for row in unpriced_rows:
        assert row.one("td", class_="cost").text() == "unpriced"
        assert not [c.text() for c in row.find_all("td") if c.text().startswith("0.0")], row
    budgets = nov.one("table", class_="budget-table")
    assert "0.0000" not in render_finance_report(build_finance_report(billed, as_of=DAY_1))
    assert "Research" not in budgets.text()  # no budget: not a row of 0.00 spent


@pytest.mark.sqlite_only
def test_month_selector_lists_exactly_the_months_in_the_database(billed: Engine) -> None:
    page = page_of(billed, month="2026-11", as_of=DAY_1)
    options = page.one("select", id="month-select").find_all("option")
    assert [o.attrs["value"] for o in options] == ["2026-12", "2026-11", "2026-10"]
    assert [o.attrs["value"] for o in options if "selected" in o.attrs] == ["2026-11"]
    sections = page.find_all("section", class_="month")
    assert sorted(s.attrs["data-month"] for s in sections) == months_with_calls(billed)
    assert [s.attrs["data-month"] for s in sections if "hidden" not in s.attrs] == ["2026-11"]
    assert page.one("head").one("title").text() == "Azure OpenAI chargeback \u00b7 November 2026"


@pytest.mark.sqlite_only
def test_title_headline_and_change(billed: Engine) -> None:
    page = page_of(billed, month="2026-11", as_of=DAY_1, organisation="Contoso <Ltd>")
    assert (
        page.one("h1").text() == "Contoso <Ltd> \u00b7 Azure OpenAI chargeback \u00b7 November 2026"
    )
    nov = section(page, "2026-11")
    card = {
        c.attrs["data-figure"]: c.one(class_="value").text() for c in nov.find_all(class_="card")
    }
    assert card == {
        "total": "11.20 USD",
        "exact": "11.20 USD",
        "unpriced": "3",
        "change": "+5.95 USD (+113.3 %)",
    }
    oct_change = section(page, "2026-10").one("div", data_figure="change").text()
    assert "no data last month" in oct_change


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("as_of", "note", "at_risk"),
    [(DAY_1, True, False), (DAY_10, False, True), (MONTH_END, False, False)],
)
def test_confidence_note_early_in_the_month(
    billed: Engine, as_of: datetime, note: bool, at_risk: bool
) -> None:
    dec = section(page_of(billed, as_of=as_of), "2026-12")
    notes = dec.find_all("p", class_="confidence-note")
    assert bool(notes) is note
    if note:
        assert "Only 0.5 day(s) of December 2026" in notes[0].text()
    statuses = [
        r.find_all("td")[-1].text()
        for r in dec.one("table", class_="budget-table").find_all("tr")[1:]
    ]
    assert ("at risk" in statuses) is at_risk, statuses


@pytest.mark.sqlite_only
def test_no_jargon_and_one_command(billed: Engine) -> None:
    html = render_finance_report(build_finance_report(billed, as_of=DAY_1))
    text = parse(html).one("body").text()
    for word in ("local mode", "AzureCloud", ".yaml", "python -m", "aoai_helpers", "--month",
                 "allocate_amount", "notebook", "00:00:00"):  # fmt: skip
        assert word not in text, word
    codes = {c.text() for c in parse(html).find_all("code")}
    assert codes == {BILL_IMPORT_HINT}
    assert network_references(html) == []


@pytest.mark.sqlite_only
def test_coverage_against_the_invoice(billed: Engine) -> None:
    figure = CoverageFigure(2_000_000, 1_500_000, Decimal("12.345"), "USD", Decimal("2.5"))
    page = page_of(billed, as_of=DAY_1, coverage={"2026-11": figure})
    nov = section(page, "2026-11").one("span", class_="coverage").text()
    assert "Azure billed 2,000,000 tokens; the gateway recorded 1,500,000 of them (75.0 %)" in nov
    assert "Invoiced cost 12.35 USD" in nov and "2.50 USD" in nov
    october = section(page, "2026-10").one("span", class_="coverage-missing").text()
    assert october == f"No Azure invoice imported for this month \u2014 {BILL_IMPORT_HINT}"


@pytest.mark.sqlite_only
def test_allocation_and_dead_letters_on_the_page(billed: Engine) -> None:
    nov = section(page_of(billed, as_of=DAY_1, allocate_amount="1,000"), "2026-11")
    table = nov.one("table", class_="allocation-table")
    parts = [amount(td.text()) for td in table.one("tbody").find_all("td", class_="cost")]
    assert sum(parts) == amount(table.one("tr", class_="total").one("td", class_="cost").text())
    assert "Amount (USD)" in table.one("thead").text()
    assert nov.one("span", class_="dead-letters").text() == "1"


@pytest.mark.sqlite_only
def test_names_are_escaped(billed: Engine) -> None:
    html = render_finance_report(build_finance_report(billed, as_of=DAY_1))
    assert "<b>R&D</b>" not in html and "&lt;b&gt;R&amp;D&lt;/b&gt;" in html
    nov = section(parse(html), "2026-11")
    rows = nov.one("table", class_="bu-table").one("tbody").find_all("tr")
    assert HOSTILE in [r.find_all("td")[0].text() for r in rows]


@pytest.mark.sqlite_only
def test_charts_legends_match_bars_and_days_read_as_dates(billed: Engine) -> None:
    nov = section(page_of(billed, as_of=DAY_1), "2026-11")
    charts = nov.find_all("figure", class_="aoai-svg-chart")
    assert len(charts) == 1 + 5 - 1 + 1  # daily, each priced BU's (Research has none), budget
    for chart in charts:
        legend = {
            s.attrs["data-series"]: s.attrs["fill"] for s in chart.find_all(class_="legend-swatch")
        }
        marks = {(m.attrs["data-series"], m.attrs["fill"]) for m in chart.find_all(class_="mark")}
        assert {series for series, _ in marks} <= set(legend) or not legend, chart.attrs
        assert all(legend[s] == fill for s, fill in marks if legend), (legend, marks)
    daily = nov.one("figure", id="chart-2026-11-daily-USD")
    ticks = [t.text() for t in daily.find_all("text", class_="x")]
    assert ticks == ["Nov 1", "Nov 8", "Nov 15", "Nov 22", "Nov 29"]
    y = [t.text() for t in daily.find_all("text", class_="y")]
    assert len(set(y)) == len(y), y  # no two ticks read the same


def test_write_is_atomic_and_refuses_an_unwritable_path(billed: Engine, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("OLD")
    write_finance_report(out, billed, as_of=DAY_1)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "dir.html").mkdir()
    with pytest.raises(ConfigError, match="cannot write"):
        write_finance_report(tmp_path / "dir.html", billed, as_of=DAY_1)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- svg numbers


def test_ticks_are_nice_and_never_read_the_same() -> None:
    assert nice_ticks(Decimal("0.0108")) == [Decimal(x) for x in ("0", "0.005", "0.010", "0.015")]
    assert tick_labels(nice_ticks(Decimal("0.0108")), 2) == ["0.000", "0.005", "0.010", "0.015"]
    assert tick_labels(nice_ticks(Decimal("1234")), 2) == ["0.00", "500.00", "1,000.00", "1,500.00"]
    assert nice_ticks(Decimal(0)) == [Decimal(0), Decimal(1)]


def test_labels_get_decimals_only_where_they_would_collide() -> None:
    assert distinct_labels([Decimal("0.0108"), Decimal("0.0065")], 2) == ["0.011", "0.007"]
    assert distinct_labels([Decimal("1.50"), Decimal("2.25"), None], 2) == ["1.50", "2.25", None]
    assert distinct_labels([Decimal("0.004")], 2) == ["0.004"]  # not "0.00"
    assert distinct_labels([Decimal("0.00002"), Decimal("1")], 2) == ["< 0.01", "1.00"]
    assert distinct_labels([Decimal("12"), Decimal("7")], 0) == ["12", "7"]


# ----------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserContext]:
    with browser.launch() as context:
        yield context


def _open_every_month(seen: dict[str, list[browser.ChartCheck]]) -> Any:
    def interact(page: Page) -> None:
        for month in ("2026-10", "2026-11", "2026-12"):
            page.select_option("#month-select", month)
            visible = page.eval_on_selector_all(
                "section.month", "s => s.filter(x => !x.hidden).map(x => x.dataset.month)"
            )
            assert visible == [month]
            assert page.text_content("#title-month") == {
                "2026-10": "October 2026", "2026-11": "November 2026", "2026-12": "December 2026"
            }[month]  # fmt: skip
            page.eval_on_selector_all(
                f'section[data-month="{month}"] details', "ds => ds.forEach(d => d.open = true)"
            )
            seen[month] = browser.charts_on(page)
            if month == "2026-11":
                page.screenshot(path=ARTIFACTS / "november-open.png", full_page=True)
        align = page.eval_on_selector_all(
            'section[data-month="2026-12"] table.bu-table tbody td',
            "tds => tds.map(td => getComputedStyle(td).textAlign)",
        )
        seen["align"] = align  # type: ignore[assignment]

    return interact


@pytest.mark.sqlite_only
def test_report_in_chromium(billed: Engine, chromium: BrowserContext) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    html = write_finance_report(
        ARTIFACTS / "finance_report.html", billed, month="2026-11", as_of=DAY_1,
        organisation="Contoso", allocate_amount="1000",
    )  # fmt: skip
    seen: dict[str, list[browser.ChartCheck]] = {}

    result = browser.check_report(
        html, ARTIFACTS / "finance_report.png", context=chromium, interact=_open_every_month(seen)
    )

    result.assert_ok(expect_charts=6)  # November: daily, 4 priced BUs' (in details), budget
    assert not result.plotly_loaded and {c.kind for c in result.charts} == {"svg"}
    counts = {m: len(seen[m]) for m in ("2026-10", "2026-11", "2026-12")}
    # daily, each BU's, budget
    assert counts == {"2026-10": 1 + 2 + 1, "2026-11": 6, "2026-12": 1 + 1 + 1}, counts
    for month in counts:
        assert all(c.rendered for c in seen[month]), seen[month]
    assert seen["align"] == ["left", "left", "right", "right", "right", "right", "right"]
    assert result.screenshot.stat().st_size > 20_000


def test_checker_reports_an_undrawn_svg_chart(tmp_path: Path, chromium: BrowserContext) -> None:
    page = tmp_path / "empty.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        '<figure class="aoai-svg-chart" id="empty"><svg viewBox="0 0 10 10" width="100"></svg>'
        '</figure><figure class="aoai-svg-chart" id="drawn"><svg viewBox="0 0 10 10" width="100">'
        '<rect class="mark" x="0" y="0" width="5" height="5"/></svg></figure>'
        '<details><figure class="aoai-svg-chart" id="folded"></figure></details>'
        "</body></html>"
    )

    result = browser.check_report(page, ARTIFACTS / "negative_svg.png", context=chromium)

    assert [(c.id, c.kind, c.rendered) for c in result.charts if c.id != "folded"] == [
        ("empty", "svg", False),
        ("drawn", "svg", True),
    ]
    assert any("chart empty not rendered" in p for p in result.problems())
    assert not any("plotly" in p for p in result.problems())
