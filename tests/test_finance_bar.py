"""Issue 18's bar, end to end through the command line: a month with unpriced calls and an
imported Azure invoice, then every file finance gets.

The month is the bundled sample history (v1 and v2 events, calls of ``gpt-35-turbo`` and of an
``unknown`` model, which have no rate), ingested as ``demo --sample-only`` does; its Azure bill
is the demo's cost-details export (:mod:`aoai_helpers.synthetic.azure_bill`) with 10 % more
``gpt-4o`` tokens than the gateway recorded, imported with ``bill import``. Checked: no unpriced
cost reads 0 in the HTML report, the CSV or the workbook; the workbook prints one page wide
with currency formats; the invoice's split adds up to the invoice to the cent with the
bypassed usage on its own line; the FOCUS file has every mandatory column; the views are in
the DDL of all three dialects.
"""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import openpyxl
import pytest
from focus_spec import MANDATORY, REQUIRED_BY_OPERATING_MODEL
from sqlalchemy import inspect
from test_cli import run

from aoai_helpers.billing.invoice import UNATTRIBUTED, allocate_invoice, coverage
from aoai_helpers.core.money import round_money
from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.views import VIEWS
from aoai_helpers.synthetic.azure_bill import write_demo_bill
from aoai_helpers.synthetic.demo import SAMPLE_MONTH

MONTH = SAMPLE_MONTH
UNPRICED_MODELS = ("gpt-35-turbo", "unknown")
_ZERO = re.compile(r"^-?0(?:[.,]0+)?(?:\s*[A-Z]{3})?$")


class _Cells(HTMLParser):
    """The text of every table row of a page, cell by cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def month_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample month with its Azure bill imported, and every file ``report`` writes."""
    folder = tmp_path_factory.mktemp("finance")
    db = f"sqlite:///{folder / 'usage.db'}"
    files = {
        "html": folder / "report.html",
        "xlsx": folder / "statement.xlsx",
        "csv": folder / "statement.csv",
        "focus": folder / "focus.csv",
        "bill": folder / "costdetails.csv",
        "db": Path(db.removeprefix("sqlite:///")),
    }
    from aoai_helpers.cli.main import main

    assert main(["demo", "--sample-only", "--db", db]) == 0
    engine = engine_from_url(db)
    try:
        write_demo_bill(engine, MONTH, files["bill"], bypass={"gpt-4o": Decimal("0.10")})
    finally:
        engine.dispose()
    assert main(["bill", "import", str(files["bill"]), "--db", db]) == 0
    argv = ["report", "--month", MONTH, "--db", db, "--allocate-invoice"]
    for kind in ("html", "xlsx", "csv", "focus"):
        argv += [f"--{kind}", str(files[kind])]
    assert main([*argv, "--organisation", "Contoso"]) == 0
    return files


def test_the_report_prints_coverage_and_the_invoice_split(
    month_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{month_files['db']}"
    status, out, err = run(capsys, "report", "--month", MONTH, "--db", db, "--allocate-invoice")
    assert (status, err) == (0, "")
    assert f"coverage {MONTH} (actual cost)" in out
    assert f"invoice {MONTH} (actual cost) allocated by token share per meter" in out
    assert "(not attributable by tokens)" in out and UNATTRIBUTED in out


def test_the_invoice_split_adds_up_to_the_cent_and_keeps_the_bypass_apart(
    month_files: dict[str, Path],
) -> None:
    engine = engine_from_url(f"sqlite:///{month_files['db']}")
    try:
        alloc = allocate_invoice(engine, MONTH)
        cov = coverage(engine, MONTH)
    finally:
        engine.dispose()
    assert alloc is not None and cov is not None
    billed = sum(cov.billed_cost.values(), Decimal(0))
    assert alloc.totals == {"USD": round_money(billed, "USD")}
    assert sum(line.amount for line in alloc.lines) == alloc.totals["USD"]
    assert all(line.amount == line.amount.quantize(Decimal("0.01")) for line in alloc.lines)
    # the bypass: 10 % more gpt-4o tokens billed than recorded, on their own line
    gpt4o = [m for m in cov.meters if m.model == "gpt-4o"]
    assert gpt4o and all(m.billed_tokens > m.recorded_tokens for m in gpt4o)
    bypassed = sum(m.bypassed_tokens for m in gpt4o)
    lines = sum(1 for r in cov.rows if r.model == "gpt-4o")  # each billed line rounds ±0.5 token
    assert abs(bypassed - sum(m.recorded_tokens for m in gpt4o) * 0.10) <= lines / 2
    unattributed = [line for line in alloc.lines if line.business_unit == UNATTRIBUTED]
    assert len(unattributed) == 1 and unattributed[0].tokens == bypassed
    assert unattributed[0].amount > 0


def test_no_unpriced_cost_reads_zero_in_the_html_report(month_files: dict[str, Path]) -> None:
    page = _Cells()
    page.feed(month_files["html"].read_text("utf-8"))
    unpriced_rows = [r for r in page.rows if r and r[0] in UNPRICED_MODELS]
    assert unpriced_rows, "the unpriced models are listed in a BU's drill-down"
    for row in unpriced_rows:
        assert "unpriced" in row, row
        assert not any(_ZERO.match(cell) for cell in row), row


def test_no_unpriced_cost_reads_zero_in_the_workbook_and_it_prints_one_page_wide(
    month_files: dict[str, Path],
) -> None:
    book = openpyxl.load_workbook(month_files["xlsx"])
    seen_unpriced = 0
    for ws in book.worksheets:
        assert ws.page_setup.orientation == "landscape", ws.title
        assert ws.sheet_properties.pageSetUpPr.fitToPage, ws.title
        assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0), ws.title
        if ws.title == "Notes":  # names the unpriced models with their calls and the fix
            continue
        header: list[str] = []
        for row in ws.iter_rows(values_only=True):
            if row and row[0] == "Model":  # a table's header row
                header = [" ".join(str(v or "").split()) for v in row]
            elif row and row[0] in UNPRICED_MODELS and header:
                seen_unpriced += 1
                cost = [v for h, v in zip(header, row, strict=False) if h.startswith("Cost")]
                assert cost and all(v == "unpriced" for v in cost), (ws.title, row)
    assert seen_unpriced, "the unpriced models appear on the BU sheets"
    money = [
        c.number_format
        for ws in book.worksheets
        for row in ws.iter_rows()
        for c in row
        if isinstance(c.value, (int, float)) and "USD" in c.number_format
    ]
    assert money and all(f.startswith('#,##0.00 "USD"') for f in money)
    book.close()


def test_no_unpriced_cost_reads_zero_in_the_csv(month_files: dict[str, Path]) -> None:
    with month_files["csv"].open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        unpriced = int(row.get("Unpriced calls") or 0)
        calls = int(row["Calls"])
        cost = row["Cost"]
        if unpriced == calls:
            assert cost == "unpriced"
        else:
            assert cost != "unpriced" and Decimal(cost) >= 0


def test_the_focus_file_has_every_mandatory_column(month_files: dict[str, Path]) -> None:
    with month_files["focus"].open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    missing = [c for c in (*MANDATORY, *REQUIRED_BY_OPERATING_MODEL) if c not in header]
    assert missing == []


@pytest.mark.parametrize("dialect", ["mssql", "postgresql", "sqlite"])
def test_the_views_are_in_every_dialects_ddl(
    dialect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "db", "ddl", "--dialect", dialect)
    assert status == 0
    for view in VIEWS:
        assert re.search(rf"CREATE (?:OR (?:ALTER|REPLACE) )?VIEW\s+\S*{view.name}", out), view.name


def test_a_month_without_calls_or_without_a_bill_is_a_one_line_error(
    month_files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = f"sqlite:///{month_files['db']}"
    status, out, err = run(capsys, "report", "--month", "2025-01", "--db", db)
    assert (status, out) == (1, "")
    assert err == f"error: no calls in 2025-01 (months with calls: {MONTH})\n"
    status, out, err = run(
        capsys, "report", "--month", "2025-01", "--db", db, "--html", str(tmp_path / "r.html")
    )
    assert status == 1 and err.startswith("error: no calls in 2025-01") and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()

    other = f"sqlite:///{tmp_path / 'other.db'}"
    from aoai_helpers.cli.main import main

    assert main(["demo", "--sample-only", "--db", other]) == 0
    capsys.readouterr()
    status, out, err = run(capsys, "report", "--month", MONTH, "--db", other, "--allocate-invoice")
    assert (status, out) == (1, "")
    assert err == (
        f"error: no Azure bill imported for {MONTH}: import its cost details first "
        "(aoai-helpers bill import FILE)\n"
    )
    # reading never creates Azure's bill table (a read-only login reports as before)
    status, _, _ = run(capsys, "report", "--month", MONTH, "--db", other)
    engine = engine_from_url(other)
    try:
        assert status == 0 and not inspect(engine).has_table("AzureCostLine")
    finally:
        engine.dispose()


def test_the_html_report_shows_the_invoice_split_adding_up_to_the_invoice(
    month_files: dict[str, Path],
) -> None:
    html = month_files["html"].read_text("utf-8")
    section = html[html.index('<table class="invoice-table">') :]
    section = section[: section.index("</table>")]
    page = _Cells()
    page.feed(section)
    body = [r for r in page.rows[1:] if r and not r[0].startswith("Total")]
    total = next(r for r in page.rows if r and r[0] == "Total (the invoice)")
    amounts = [Decimal(r[-1].replace(",", "")) for r in body]
    assert sum(amounts) == Decimal(total[-1].replace(",", ""))
    names = [r[0] for r in body]
    assert "Not recorded by the gateway (called Azure OpenAI directly)" in names
    assert "Not attributable by tokens (provisioned, hosting, training)" in names
    assert {"Finance", "Marketing", "R&D", "Legal"} <= set(names)


def test_unpriced_calls_beside_unbilled_ones_are_unpriced_not_zero(tmp_path: Path) -> None:
    """A model without a rate whose group also holds a throttled call (unbilled: cost 0, no
    currency) has no price: "unpriced" in the report's rows, the ledger and the views —
    not the throttled call's 0."""
    from conftest import ingest_events_into, new_v2
    from usage_events import usage

    from aoai_helpers.analysis.ledger import priced_cost
    from aoai_helpers.analysis.report import chargeback_by_bu, usage_by_model
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.pipeline.service import ensure_db

    engine = engine_from_url(f"sqlite:///{tmp_path / 'u.db'}")
    try:
        ensure_db(engine)
        fine_tune = {"Model": "contoso-support-ft", "DeploymentName": "ft-support"}
        ingest_events_into(
            engine,
            new_v2(**fine_tune, Usage=usage(100, 20)),
            new_v2(**fine_tune, Usage=usage(50, 10)),
            new_v2(**fine_tune, StatusCode=429, Usage=None),
        )
        month = "2026-11"
        (group,) = [m for m in usage_by_model(engine, month) if m.model == "contoso-support-ft"]
        assert (group.calls, group.unpriced_calls, group.cost) == (3, 2, None)
        (line,) = chargeback_by_bu(engine, month)
        assert priced_cost(line.cost, line.calls, line.unpriced_calls, line.currency) is None
        with transaction(engine) as conn:
            daily = conn.exec_driver_sql(  # the unbilled call is a row of its own (cost 0)
                'SELECT "UsageSource", "UnpricedCalls", "Cost" FROM "vw_AoaiChargebackDaily"'
                " ORDER BY 1"
            ).all()
            monthly = conn.exec_driver_sql(
                'SELECT "UnpricedCalls", "Cost" FROM "vw_AoaiChargebackMonthly"'
            ).all()
        assert [tuple(r) for r in daily] == [("reported", 2, None), ("unbilled", 0, 0.0)]
        assert [tuple(r) for r in monthly] == [(2, None)]
    finally:
        engine.dispose()


def test_the_html_report_shows_the_statements_cents(month_files: dict[str, Path]) -> None:
    """Each BU's cost and provisional part read the same in the HTML report as in the CSV
    (both rounded by the statement's ledger, not each its own way)."""
    with month_files["csv"].open(encoding="utf-8", newline="") as f:
        csv_rows = {r["Business unit"]: r for r in csv.DictReader(f)}
    html = month_files["html"].read_text("utf-8")
    start = html.index(f'data-month="{MONTH}"')
    page = _Cells()
    page.feed(html[start : html.index("</table>", start)])
    header = page.rows[0]
    seen = 0
    for row in page.rows[1:]:
        if row and row[0] in csv_rows:
            cells = dict(zip(header, row, strict=False))
            expected = csv_rows[row[0]]
            cost = next(v for k, v in cells.items() if k == "Cost" or k.startswith("Cost ("))
            assert cost == expected["Cost"], row
            assert cells["of which provisional"] == expected["Provisional cost"], row
            seen += 1
    assert seen == len(csv_rows)


def test_a_token_meter_under_another_name_is_an_error_naming_it(
    month_files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Billed per 1K like tokens but not named ``… Tokens``: asked about, never filed as cost
    that is not tokens (which would move it out of every BU's share)."""
    text = month_files["bill"].read_text("utf-8")
    assert ",gpt 4o Outp glbl Tokens," in text
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(text.replace(",gpt 4o Outp glbl Tokens,", ",GPT-4o Output Global,"), "utf-8")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    from aoai_helpers.cli.main import main

    assert main(["demo", "--sample-only", "--db", db]) == 0
    capsys.readouterr()
    status, out, err = run(capsys, "bill", "import", str(renamed), "--db", db)
    assert (status, out) == (1, "") and err.count("\n") == 1
    assert "'GPT-4o Output Global' (billed per '1K' like tokens" in err
    status, _, err = run(
        capsys, "bill", "import", str(renamed), "--db", db,
        "--meter", "GPT-4o Output Global=gpt-4o:output",
    )  # fmt: skip
    assert (status, err) == (0, "")


def test_exports_of_other_days_add_up_and_a_newer_one_replaces_its_days(
    month_files: dict[str, Path], tmp_path: Path
) -> None:
    """Two half-month exports add up to the whole month; importing one again replaces its
    own days only."""
    from aoai_helpers.billing.store import import_cost_details, list_imports

    header, *lines = month_files["bill"].read_text("utf-8").splitlines()
    date_at = header.split(",").index("Date")
    first = [x for x in lines if int(x.split(",")[date_at].split("/")[1]) <= 15]
    second = [x for x in lines if x not in first]
    assert first and second
    halves = []
    for name, part in (("first.csv", first), ("second.csv", second)):
        halves.append(tmp_path / name)
        halves[-1].write_text("\r\n".join([header, *part]) + "\r\n", "utf-8")
    whole = tmp_path / "whole.db"
    engine = engine_from_url(f"sqlite:///{whole}")
    try:
        full = import_cost_details(engine, month_files["bill"]).totals
        engine.dispose()
        whole.unlink()
        engine = engine_from_url(f"sqlite:///{whole}")
        a = import_cost_details(engine, halves[0])
        b = import_cost_details(engine, halves[1])
        assert (a.replaced_lines, b.replaced_lines) == (0, 0)
        assert {c: a.totals[c] + b.totals[c] for c in full} == full
        again = import_cost_details(engine, halves[1])
        assert again.replaced_lines == b.lines_stored
        (month,) = list_imports(engine)
        assert month.lines == len(lines)
        assert round_money(month.totals["USD"], "USD") == round_money(full["USD"], "USD")
    finally:
        engine.dispose()


def test_the_workbook_carries_the_invoice_split(month_files: dict[str, Path]) -> None:
    book = openpyxl.load_workbook(month_files["xlsx"])
    assert book.sheetnames[:3] == ["Summary", "Notes", "Azure invoice"]
    ws = book["Azure invoice"]
    rows = [r for r in ws.iter_rows(values_only=True) if any(v is not None for v in r)]
    header_at = next(i for i, r in enumerate(rows) if r[0] == "Business unit")
    body = [r for r in rows[header_at + 1 :] if not str(r[0]).startswith("Total")]
    (total,) = [r for r in rows if str(r[0]).startswith("Total (USD)")]
    assert sum(Decimal(str(r[3])) for r in body) == Decimal(str(total[3]))
    assert "Not recorded by the gateway (called Azure OpenAI directly)" in [r[0] for r in body]
    assert ws.page_setup.fitToWidth == 1 and ws.page_setup.orientation == "landscape"
    book.close()
