"""Tests for aoai_helpers.analysis.workbook (and the CSV beside it): a statement finance can
file, read back with openpyxl.

The month is built through the real ingest path on a database with hand-set rates:

* ``Tokyo`` (sub-t) calls gpt-4.1-mini, priced in JPY at 0.01 JPY a token (10,000 per 1M):
  123,450 prompt tokens → 1,234.5 JPY, shown 1,235 JPY (no minor unit);
* ``Finance`` (sub-f) calls gpt-4o in USD: 2.50 / 10.00 per 1M until 2026-11-15, 5.00 / 20.00
  from then (two rates, both used): 1000/200 on the 5th → 0.0045, 1000/200 on the 20th →
  0.009; one call of ``my-finetune`` (no rate: unpriced); and a streamed call on the 30th at
  23:30 whose usage was not reported (8 prompt tokens counted: provisional, 0.00004, still
  inside the 6 h reconcile window at 2026-12-01 00:05);
* ``Lab`` (sub-l) calls only ``my-finetune``: nothing of it priced.

The statement is issued at 2026-12-01 00:05 (``allow_provisional``), so its id is
``CS-2026-11-20261201T000500Z``.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

import openpyxl
import pytest
import rfc4180
from openpyxl.utils import get_column_letter, range_boundaries
from usage_events import usage

from aoai_helpers.analysis.export import write_csv, write_xlsx
from aoai_helpers.analysis.statement import issue_statement, month_report
from aoai_helpers.analysis.text import render_table
from aoai_helpers.core.pricing import Rate
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.pipeline.reprice import set_rates

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

ISSUED = datetime(2026, 12, 1, 0, 5)
USD = '#,##0.00 "USD";-#,##0.00 "USD"'
JPY = '#,##0 "JPY";-#,##0 "JPY"'
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "stream": True}  # 8 prompt tokens
MONEY_HEADERS = {"Cost", "Provisional cost", "Projected cost", "Cost at this rate"}
SHARE_HEADERS = {"Provisional share", "Budget used"}


@pytest.fixture
def month(empty_engine, make_v2, ingest_events):
    engine = empty_engine
    with transaction(engine) as conn:
        set_rates(
            conn,
            [
                Rate("gpt-4o", 2.5e-6, 1e-5, currency="USD", source="price list 2026-01",
                     effective_from=datetime(2026, 1, 1)),
                Rate("gpt-4o", 5e-6, 2e-5, currency="USD", source="price list 2026-11",
                     effective_from=datetime(2026, 11, 15)),
                Rate("gpt-4.1-mini", 0.01, 0.01, currency="JPY", source="JPY agreement",
                     effective_from=datetime(2026, 1, 1)),
            ],
        )  # fmt: skip
        set_bu(
            conn,
            [
                BusinessUnit("sub-t", "Tokyo", cost_centre="JP-1"),
                BusinessUnit("sub-f", "Finance", cost_centre="CC-1", monthly_budget=1.0),
                BusinessUnit("sub-l", "Lab"),
            ],
        )
    mini = {"DeploymentName": "gpt-4.1-mini", "Model": "gpt-4.1-mini-2025-04-14"}
    ingest_events(
        engine,
        make_v2(SubscriptionId="sub-t", **mini, Usage=usage(123_450, 0)),
        make_v2(SubscriptionId="sub-f", Usage=usage(1000, 200)),
        make_v2(SubscriptionId="sub-f", ExecTimeUTC="2026-11-20T10:00:00Z", Usage=usage(1000, 200)),
        make_v2(SubscriptionId="sub-f", Model="my-finetune", Usage=usage(10, 10)),
        make_v2(
            SubscriptionId="sub-f",
            ExecTimeUTC="2026-11-30T23:30:00Z",
            IsStreaming=True,
            Usage=None,
            Request=HELLO,
        ),
        make_v2(SubscriptionId="sub-l", Model="my-finetune", Usage=usage(50, 50)),
        make_v2(SubscriptionId="sub-l", Model="my-finetune", ExecTimeUTC="2026-11-06T10:00:00Z"),
    )
    issue_statement(engine, "2026-11", now=ISSUED, allow_provisional=True)
    return engine


@pytest.fixture
def book(month, tmp_path):
    report = month_report(month, "2026-11", as_of=ISSUED)
    path = write_xlsx(tmp_path / "nov.xlsx", report)
    return report, openpyxl.load_workbook(path), path


# ----------------------------------------------------------------------------- helpers


def tables(ws):
    """(table, header row, data rows, totals rows) of every Excel table of ``ws``; totals rows
    are the non-empty rows right below the table."""
    out = []
    for table in ws.tables.values():
        min_col, min_row, max_col, max_row = range_boundaries(table.ref)
        header = [ws.cell(min_row, c).value for c in range(min_col, max_col + 1)]
        data = [list(r) for r in ws.iter_rows(min_row + 1, max_row, min_col, max_col)]
        totals = []
        row = max_row + 1
        while ws.cell(row, min_col).value is not None:
            totals.append([ws.cell(row, c) for c in range(min_col, max_col + 1)])
            row += 1
        out.append((table, header, data, totals))
    return out


def named(ws, stem):
    (found,) = [t for t in tables(ws) if t[0].displayName.startswith(stem)]
    return found


def rendered(cell) -> str:
    """What Excel shows for ``cell`` (the formats this workbook uses), written independently
    of the module's own renderer."""
    value, fmt = cell.value, cell.number_format
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M" if "hh" in fmt else "%Y-%m-%d")
    money = re.fullmatch(r'#,##0(?:\.(0+))?(?: "([^"]*)")?(?:;.*)?', fmt)
    if money:
        places = len(money.group(1) or "")
        text = f"{Decimal(str(value)):,.{places}f}"
        return f"{text} {money.group(2)}" if money.group(2) else text
    if fmt == "0.0%":
        return f"{value * 100:.1f}%"
    if fmt == "#,##0.0000":
        return f"{value:,.4f}"
    assert fmt == "General", fmt
    return str(value)


def column(header, rows, name):
    return [r[header.index(name)] for r in rows]


# ----------------------------------------------------------------------------- print setup


def test_every_sheet_prints_landscape_one_page_wide_with_titles_and_frozen_panes(book):
    _, wb, _ = book
    assert wb.sheetnames == ["Summary", "Notes", "Tokyo", "Finance", "Lab"]
    for ws in wb.worksheets:
        setup = ws.page_setup
        assert (setup.orientation, setup.fitToWidth, setup.fitToHeight) == ("landscape", 1, 0)
        assert ws.sheet_properties.pageSetUpPr.fitToPage is True
        assert ws.oddFooter.right.text == "Page &P of &N"
        assert "CS-2026-11-20261201T000500Z" in ws.oddHeader.left.text
    summary = wb["Summary"]
    statement, _, _, _ = named(summary, "Statement")
    first = range_boundaries(statement.ref)[1]
    assert summary.cell(first, 1).value == "Business unit"
    assert summary.print_title_rows == f"${first}:${first}"  # the header on every page
    assert summary.freeze_panes == f"B{first + 1}"  # under it, the BU kept in view
    for title in ("Tokyo", "Finance", "Lab"):
        assert wb[title].print_title_rows == "$1:$2"
        assert wb[title].freeze_panes == "A3"
    assert wb["Notes"].print_title_rows == "$1:$1" and wb["Notes"].freeze_panes == "A2"


def test_every_table_has_an_autofilter_over_its_header_and_data_not_its_totals(book):
    _, wb, _ = book
    names = []
    for ws in wb.worksheets:
        for table, header, data, totals in tables(ws):
            names.append(table.displayName)
            assert table.autoFilter.ref == table.ref
            assert [c.name for c in table.tableColumns] == header
            assert data, table.displayName
            if ws.title != "Notes" and not table.displayName.startswith("Users"):
                assert totals and totals[0][0].value is not None, table.displayName
    assert len(names) == len(set(names))
    expected = {"Statement": 1, "Rates": 1, "Unpriced": 1, "Models": 3, "Daily": 3, "Users": 3}
    assert {k: sum(n.startswith(k) for n in names) for k in expected} == expected
    statement, header, data, totals = named(wb["Summary"], "Statement")
    first = range_boundaries(statement.ref)[1]
    assert statement.ref == f"A{first}:P{first + 3}"  # 16 columns, header and 3 BUs
    assert [r[0].value for r in data] == ["Tokyo", "Finance", "Lab"]
    assert [r[0].value for r in totals] == ["Total (JPY)", "Total (USD)", "Total"]


# ----------------------------------------------------------------------------- money


def test_money_cells_carry_their_currencys_format(book):
    _, wb, _ = book
    _, header, data, totals = named(wb["Summary"], "Statement")
    by_bu = {r[0].value: r for r in data}
    cost = header.index("Cost")
    tokyo, finance = by_bu["Tokyo"], by_bu["Finance"]
    assert (tokyo[cost].value, tokyo[cost].number_format) == (1235, JPY)
    assert rendered(tokyo[cost]) == "1,235 JPY"
    # 0.0045 + 0.009 + 0.00004 (provisional) = 0.01354 → 0.01
    assert (finance[cost].value, finance[cost].number_format) == (0.01, USD)
    assert finance[header.index("Budget")].number_format == USD
    jpy_total, usd_total, grand = totals
    assert (jpy_total[cost].value, jpy_total[cost].number_format) == (1235, JPY)
    assert (usd_total[cost].value, usd_total[cost].number_format) == (0.01, USD)
    assert grand[cost].value is None and grand[header.index("Currency")].value == "MIXED"
    assert grand[header.index("Calls")].value == 7  # counts do add up across currencies
    for ws in (wb["Tokyo"], wb["Finance"]):
        fmt = JPY if ws.title == "Tokyo" else USD
        for stem in ("Models", "Daily", "Users"):
            _, header, data, _ = named(ws, stem)
            priced = [
                r[header.index("Cost")]
                for r in data
                if not isinstance(r[header.index("Cost")].value, str)
            ]
            assert priced and all(c.number_format == fmt for c in priced), (ws.title, stem)


def test_no_cell_shows_zero_for_unpriced_and_no_money_has_four_decimals(book, tmp_path):
    report, wb, _ = book
    seen_unpriced = 0
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.number_format != "#,##0.00##"  # ragged decimals are gone
                if isinstance(cell.value, str):
                    assert not re.search(r"\b0\.0000\b", cell.value), (ws.title, cell.value)
        for _, header, data, totals in tables(ws):
            if "Unpriced calls" not in header or "Calls" not in header:
                continue
            for r in data + totals:
                calls, unpriced = (
                    r[header.index("Calls")].value,
                    r[header.index("Unpriced calls")].value,
                )
                if not (isinstance(calls, int) and calls == unpriced):
                    continue
                seen_unpriced += 1  # a group with no priced call: no number in its money
                for name in MONEY_HEADERS | SHARE_HEADERS:
                    if name in header:
                        value = r[header.index(name)].value
                        assert value in ("unpriced", None), (ws.title, name, value)
                assert r[header.index("Cost")].value == "unpriced", ws.title
    # Lab in the Summary; my-finetune on Finance and Lab; Lab's two days; Lab's users
    assert seen_unpriced >= 5
    _, header, data, _ = named(wb["Summary"], "Statement")
    lab = next(r for r in data if r[0].value == "Lab")
    assert lab[header.index("Budget status")].value == "unpriced"
    assert lab[header.index("Cost")].data_type == "s"  # text, never the number 0
    rows = rfc4180.records(write_csv(tmp_path / "nov.csv", report).read_text("utf-8"))
    head, body = rows[0], rows[1:]
    lab_csv = next(r for r in body if r[head.index("Business unit")] == "Lab")
    for name in ("Cost", "Provisional cost", "Projected cost"):
        assert lab_csv[head.index(name)] == "unpriced"
    for name in SHARE_HEADERS:
        assert lab_csv[head.index(name)] == ""
    for record in body:
        for name in ("Cost", "Provisional cost", "Projected cost", "Budget"):
            value = record[head.index(name)]
            assert value == "unpriced" or value == "" or re.fullmatch(r"\d+(\.\d{2})?", value)
    assert {r[head.index("Cost")] for r in body} == {"1235", "0.01", "unpriced"}


def test_finance_with_some_unpriced_calls_shows_its_priced_cost_and_the_count(book):
    _, wb, _ = book
    _, header, data, _ = named(wb["Summary"], "Statement")
    finance = next(r for r in data if r[0].value == "Finance")
    assert finance[header.index("Cost")].value == 0.01
    assert finance[header.index("Unpriced calls")].value == 1
    _, header, models, _ = named(wb["Finance"], "Models")
    ft = next(r for r in models if r[0].value == "my-finetune")
    assert ft[header.index("Cost")].value == "unpriced"
    assert ft[header.index("Cost")].alignment.horizontal == "right"  # in a number column


def test_columns_are_wide_enough_for_every_value_as_displayed(book):
    _, wb, _ = book
    checked = 0
    for ws in wb.worksheets:
        regions = []
        for table, _, _, totals in tables(ws):
            min_col, min_row, max_col, max_row = range_boundaries(table.ref)
            regions.append((min_col, min_row, max_col, max_row + len(totals)))
        for min_col, min_row, max_col, max_row in regions:
            for row in ws.iter_rows(min_row, max_row, min_col, max_col):
                for cell in row:
                    shown = rendered(cell)
                    width = ws.column_dimensions[get_column_letter(cell.column)].width
                    if cell.row == min_row:  # a header wraps at its spaces: its words fit
                        words = max(len(w) for w in shown.split(" "))
                        assert cell.alignment.wrap_text and width >= words * 1.1 + 1, shown
                        continue
                    if cell.alignment.wrap_text:
                        continue  # long text wraps in its column
                    bold = 1.1 if cell.font.bold else 1.0
                    assert width >= len(shown) * bold + 1, (ws.title, cell.coordinate, shown, width)
                    checked += 1
    assert checked > 200
    # the widest value of the Summary's Cost column is a total: it is fitted too
    ws = wb["Summary"]
    _, header, _, _ = named(ws, "Statement")
    letter = get_column_letter(header.index("Budget") + 1)  # "1.00 USD" and the total
    assert ws.column_dimensions[letter].width >= len("1.00 USD") * 1.1 + 1


def test_text_columns_are_left_aligned_and_numbers_right_aligned(book):
    _, wb, _ = book
    for ws in wb.worksheets:
        for _, header, data, _ in tables(ws):
            for r in data:
                for name, cell in zip(header, r, strict=True):
                    if isinstance(cell.value, int | float) or name in MONEY_HEADERS:
                        assert cell.alignment.horizontal == "right", (ws.title, name)
                    elif isinstance(cell.value, str) and name not in SHARE_HEADERS:
                        kind = "right" if name.startswith(("Effective", "Cached")) else "left"
                        assert cell.alignment.horizontal == kind, (ws.title, name, cell.value)


# ----------------------------------------------------------------------------- notes


def test_notes_sheet_states_what_the_figures_rest_on(book):
    report, wb, _ = book
    ws = wb["Notes"]
    items = {}
    for row in ws.iter_rows(min_row=3, max_col=2, values_only=True):
        if row[0] is None:
            break
        items[row[0]] = row[1]
    assert items["Statement id"] == "CS-2026-11-20261201T000500Z"
    assert items["Issued at (UTC)"] == "2026-12-01 00:05:00"
    assert items["Currency"] == "JPY, USD — totalled separately, never added together"
    assert items["Period (UTC)"].startswith("2026-11-01 00:00 to 2026-12-01 00:00")
    # provisional: 0.00004 of Finance's 0.01354 USD; 1 call of 7
    assert items["Provisional share"].startswith(
        "0.0% of the JPY cost, 0.3% of the USD cost (1 of 7 calls)"
    )
    assert items["Still inside the reconcile window"].startswith(
        "1 provisional call(s), cost so far"
    )
    assert "younger than the 6 h grace window" in items["Still inside the reconcile window"]
    assert items["Unpriced"].startswith("3 call(s) of the statement with no rate in effect")
    assert items["Unpriced"].endswith("; unpriced now: my-finetune (3)")
    assert items["Allocation"] == "none"
    _, header, rates, _ = named(ws, "Rates")
    got = [
        (r[0].value, r[1].value, r[header.index("Effective from (UTC)")].value,
         r[header.index("Effective to (UTC)")].value, r[header.index("Currency")].value,
         r[header.index("Prompt per 1M tokens")].value, r[header.index("Calls priced")].value)
        for r in rates
    ]  # fmt: skip
    assert got == [
        ("gpt-4.1-mini", "JPY agreement", datetime(2026, 1, 1), "open", "JPY", 10000, 1),
        (
            "gpt-4o",
            "price list 2026-01",
            datetime(2026, 1, 1),
            datetime(2026, 11, 15),
            "USD",
            2.5,
            1,
        ),
        ("gpt-4o", "price list 2026-11", datetime(2026, 11, 15), "open", "USD", 5, 2),
    ]  # the 5th at the old rate; the 20th and the provisional call of the 30th at the new one
    assert [r[header.index("Cached prompt per 1M tokens")].value for r in rates] == [
        "as prompt"
    ] * 3
    costs = [r[header.index("Cost at this rate")] for r in rates]
    assert [c.number_format for c in costs] == [JPY, USD, USD]
    _, header, unpriced, _ = named(ws, "Unpriced")
    assert [(r[0].value, r[2].value) for r in unpriced] == [("my-finetune", 3)]
    assert report.statement.statement_id == "CS-2026-11-20261201T000500Z"


def test_a_live_statement_says_so(month, tmp_path):
    with transaction(month) as conn:  # a later rate edit: the issued figures are kept, but …
        set_rates(conn, [Rate("my-finetune", 1e-6, 1e-6, effective_from=datetime(2026, 1, 1))])
    report = month_report(month, "2026-11", as_of=datetime(2026, 12, 9))
    wb = openpyxl.load_workbook(write_xlsx(tmp_path / "later.xlsx", report))
    items = {
        r[0]: r[1] for r in wb["Notes"].iter_rows(min_row=3, max_col=2, values_only=True) if r[0]
    }
    assert items["Changed since issue"].startswith("Finance, Lab: live figures differ")
    assert items["Still inside the reconcile window"].startswith("none")
    # the issued statement still has its 3 unpriced calls; none is unpriced now
    assert items["Unpriced"].startswith("3 call(s) of the statement with no rate")
    assert items["Unpriced"].endswith("; none unpriced now")


# ----------------------------------------------------------------------------- to the cent


@pytest.fixture
def halves(engine, make_v2, ingest_events):
    """Three BUs with one call each at 2000 prompt tokens of gpt-4o (2.50 per 1M): 0.005 USD,
    half a cent each. Rounded one by one: 3 times 0.01 = 0.03; the month is 0.015 → 0.02."""
    ingest_events(
        engine,
        *(
            make_v2(SubscriptionId=f"sub-{n}", SubscriptionName=n, Usage=usage(2000, 0))
            for n in ("Alpha", "Beta", "Gamma")
        ),
    )
    return engine


def test_parts_add_up_to_the_total_to_the_cent_in_every_file(halves, tmp_path):
    report = month_report(halves, "2026-11", as_of=datetime(2026, 12, 9))
    wb = openpyxl.load_workbook(write_xlsx(tmp_path / "h.xlsx", report))
    _, header, data, totals = named(wb["Summary"], "Statement")
    cost = header.index("Cost")
    parts = [Decimal(str(r[cost].value)) for r in data]
    (total,) = totals
    assert Decimal(str(total[cost].value)) == Decimal("0.02") == sum(parts)
    assert sorted(parts) == [Decimal("0.00"), Decimal("0.01"), Decimal("0.01")]
    records = rfc4180.records(write_csv(tmp_path / "h.csv", report).read_text("utf-8"))
    csv_parts = {r[1]: r[records[0].index("Cost")] for r in records[1:]}
    xlsx_parts = {r[0].value: f"{Decimal(str(r[cost].value)):.2f}" for r in data}
    assert csv_parts == xlsx_parts
    text = render_table(report.statement.lines, "2026-11")
    shown = {line.split()[0]: line.split()[5] for line in text.splitlines()[3:6]}
    assert shown == csv_parts
    assert text.splitlines()[-1] == "Total: 0.02 USD"


def test_an_empty_month(month, tmp_path):
    report = month_report(month, "2026-09", as_of=datetime(2026, 12, 9))
    wb = openpyxl.load_workbook(write_xlsx(tmp_path / "e.xlsx", report))
    assert wb.sheetnames == ["Summary", "Notes"]
    assert list(wb["Summary"].tables) == []  # no table without a row
    values = [c.value for row in wb["Summary"].iter_rows() for c in row if c.value]
    assert "(no calls in this month)" in values
