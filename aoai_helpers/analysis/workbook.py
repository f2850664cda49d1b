"""The month's chargeback as an Excel workbook a finance team can file (needs ``openpyxl``).

Sheets: ``Summary`` (the statement: one row per BU and its totals), ``Notes`` (statement
id and time of issue, currency, the rates used with their sources and effective dates, the
provisional share, what is still inside the reconcile window, the unpriced calls and models),
then one sheet per BU (its model mix and daily trend with totals, its top users: live figures).
The cells come from :mod:`aoai_helpers.analysis.layout`; this module only lays them out:

* every table is an Excel table (a ``<table>`` part: its own autofilter over the header and
  data rows; the totals rows sit right below it, outside the filter, so sorting or filtering
  never moves them);
* money cells carry their currency's format (:func:`aoai_helpers.core.money.xlsx_money_format`:
  ``#,##0.00 "USD"``, ``#,##0 "JPY"``), counts ``#,##0``, shares ``0.0%``; the word
  ``unpriced`` is a text cell — never 0; text columns are left-aligned, number columns
  right-aligned;
* column widths are fitted to the widest value *as displayed* (the formatted number with its
  currency code, the bold totals included), so no cell shows ``###``; headers wrap at their
  spaces (a column is as wide as its longest header word), long text wraps;
* the Summary leaves out the columns that are the same on every row (:data:`SAME_ON_EVERY_ROW`:
  month, statement, time of issue, statement id — in its title and on every printed page);
* print setup on every sheet: landscape, fit to one page wide and as many pages high as it
  takes, the header rows repeated on every printed page, panes frozen under them, and a page
  header/footer with the statement id, the sheet and ``Page n of m``.

Every string is written as text (:func:`text_cell`, data type ``s``): a name such as
``=HYPERLINK(…)`` is never stored as a formula; the file holds no ``<f>`` element. Sheet
names: :func:`aoai_helpers.analysis.export.sheet_names`. Print settings: the OOXML
``pageSetup`` / ``printOptions`` / ``pageSetUpPr fitToPage`` elements (ECMA-376 Part 1,
§18.3.1.63 ``pageSetup``: ``fitToHeight="0"`` means "automatic", i.e. as many pages as needed).
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from aoai_helpers.analysis.layout import Col, Table, bu_tables, summary, without
from aoai_helpers.analysis.notes import notes
from aoai_helpers.analysis.report import MIXED
from aoai_helpers.analysis.statement import MonthReport
from aoai_helpers.core.money import format_money, xlsx_money_format

__all__ = [
    "INVOICE_SHEET",
    "NUMBER_FORMATS",
    "SAME_ON_EVERY_ROW",
    "displayed",
    "number_format",
    "text_cell",
    "workbook_bytes",
]

#: Statement columns the Summary sheet leaves out: the same on every row, they head the sheet
#: and every printed page (the CSV keeps them, so that each of its rows stands alone).
SAME_ON_EVERY_ROW: Final = ("Month", "Statement", "Issued at (UTC)", "Statement id")

#: Number formats of the non-money kinds of column.
NUMBER_FORMATS: Final[dict[str, str]] = {
    "int": "#,##0",
    "share": "0.0%",
    "date": "yyyy-mm-dd",
    "time": "yyyy-mm-dd hh:mm",
    "rate": "#,##0.0000",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML (openpyxl refuses)
#: The sheet of the Azure invoice's split (``report --allocate-invoice --xlsx``).
INVOICE_SHEET: Final = "Azure invoice"
_TEXT_CAP: Final = 50  # widest text column (characters); longer text wraps
_NOTES_CAP: Final = 90
_BOLD: Final = 1.15  # bold glyphs are wider
_PAD: Final = 2


def _currency(code: str | None) -> str | None:
    return None if code == MIXED else code


def number_format(col: Col, currency: str | None) -> str | None:
    """The Excel number format of a cell of ``col`` whose money is in ``currency``."""
    if col.kind == "money":
        return xlsx_money_format(_currency(currency))
    return NUMBER_FORMATS.get(col.kind)


def displayed(value: Any, col: Col, currency: str | None) -> str:
    """``value`` as Excel shows it in a cell of ``col`` (what the column must be wide for)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if col.kind == "money":
        return format_money(value, _currency(currency))
    if col.kind == "share":
        return f"{value:.1%}"
    if col.kind == "rate":
        return f"{value:,.4f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}" if col.kind == "time" else f"{value:%Y-%m-%d}"
    if isinstance(value, date):
        return f"{value:%Y-%m-%d}"
    if isinstance(value, int | Decimal | float):
        return f"{value:,}"
    return str(value)


def text_cell(ws: Any, row: int, column: int, text: str) -> Any:
    """Write ``text`` into a cell as text: openpyxl takes a string starting with ``=`` for a
    formula (data type ``f``, saved as ``<f>``) unless the data type is set to ``s`` after the
    value. Every string of the workbook goes through here."""
    cell = ws.cell(row=row, column=column)
    cell.value = _CONTROL.sub("", text)
    cell.data_type = "s"
    return cell


class _Sheet:
    """Writes titles and tables into one worksheet, measuring what each column shows."""

    def __init__(
        self, ws: Any, styles: dict[str, Any], ids: Iterator[int], cap: int = _TEXT_CAP
    ) -> None:
        self.ws, self.styles, self.ids, self.cap = ws, styles, ids, cap
        self.row = 1
        self.widths: dict[int, float] = {}
        self.wrap: set[int] = set()

    def text(self, value: str, *, bold: bool = False) -> None:
        """A line of text in column A (free text: it may run over the next columns)."""
        cell = text_cell(self.ws, self.row, 1, value)
        cell.font = self.styles["title" if bold else "plain"]
        self.row += 1

    def pair(self, key: str, value: str) -> None:
        """An item and its text (the Notes list): both measured, the text wraps."""
        self._put(1, key, Col(key), None, bold=True)
        self._put(2, value, Col(key), None, bold=False)
        self.row += 1

    def skip(self) -> None:
        self.row += 1

    def table(self, table: Table) -> int:
        """Write ``table`` (title, header, rows, totals) from the current row; return the row
        of its header."""
        if table.title:
            self.text(table.title, bold=True)
        header_row = self.row
        for j, col in enumerate(table.columns, start=1):
            self._put(j, col.header, col, None, bold=True, header=True)
        self.row += 1
        for rows, bold in ((table.rows, False), (table.totals, True)):
            for r in rows:
                for j, (col, value) in enumerate(zip(table.columns, r.values, strict=True), 1):
                    currency = table.fixed.get(col.header, r.currency)
                    self._put(j, value, col, currency, bold=bold)
                self.row += 1
            if not bold and table.rows:
                self._excel_table(table, header_row, self.row - 1)
        return header_row

    def _excel_table(self, table: Table, first: int, last: int) -> None:
        from openpyxl.utils import get_column_letter  # type: ignore[import-untyped]
        from openpyxl.worksheet.table import Table as XlTable  # type: ignore[import-untyped]
        from openpyxl.worksheet.table import TableStyleInfo

        ref = f"A{first}:{get_column_letter(len(table.columns))}{last}"
        xl = XlTable(displayName=f"{table.name}{next(self.ids)}", ref=ref)  # unique in the book
        xl.tableStyleInfo = TableStyleInfo(name="TableStyleLight1", showRowStripes=True)
        self.ws.add_table(xl)

    def _put(
        self,
        column: int,
        value: Any,
        col: Col,
        currency: str | None,
        *,
        bold: bool,
        header: bool = False,
    ) -> None:
        if isinstance(value, str):
            cell = text_cell(self.ws, self.row, column, value)
        else:
            cell = self.ws.cell(row=self.row, column=column)
            cell.value = value
            fmt = number_format(col, currency) if value is not None else None
            if fmt is not None:
                cell.number_format = fmt
        right = col.numeric and not (header and column == 1)
        key = ("bold_" if bold else "") + ("right" if right else "left")
        cell.font = self.styles["bold" if bold else "plain"]
        cell.alignment = self.styles[key]
        shown = col.header if header else displayed(cell.value, col, currency)
        parts = shown.split(" ") if header else shown.split("\n")  # a header wraps at spaces
        width = max((len(part) for part in parts), default=0)
        width = math.ceil(width * (_BOLD if bold else 1.0)) + _PAD
        if header:
            cell.alignment = self.styles["head_right" if right else "head_left"]
        elif not col.numeric and width > self.cap:
            width = self.cap
            self.wrap.add(column)
            cell.alignment = self.styles["wrap"]
        self.widths[column] = max(self.widths.get(column, 0), width)

    def finish(self, title_rows: tuple[int, int], header: str, freeze: str) -> None:
        """Column widths, frozen panes and print setup (see the module docstring)."""
        from openpyxl.utils import get_column_letter

        ws = self.ws
        for column, width in self.widths.items():
            ws.column_dimensions[get_column_letter(column)].width = max(width, 8)
        ws.freeze_panes = freeze
        ws.page_setup.orientation = "landscape"
        ws.page_setup.fitToWidth = 1
        ws.page_setup.fitToHeight = 0  # as many pages high as needed
        ws.sheet_properties.pageSetUpPr.fitToPage = True
        ws.print_title_rows = f"{title_rows[0]}:{title_rows[1]}"
        ws.print_options.horizontalCentered = True
        ws.oddHeader.left.text = header.replace("&", "&&")
        ws.oddFooter.left.text = "&A"  # the sheet's name
        ws.oddFooter.right.text = "Page &P of &N"


def _styles() -> dict[str, Any]:
    from openpyxl.styles import Alignment, Font  # type: ignore[import-untyped]

    return {
        "plain": Font(),
        "bold": Font(bold=True),
        "title": Font(bold=True, size=12),
        "left": Alignment(horizontal="left", vertical="top"),
        "right": Alignment(horizontal="right", vertical="top"),
        "bold_left": Alignment(horizontal="left", vertical="top"),
        "bold_right": Alignment(horizontal="right", vertical="top"),
        "wrap": Alignment(horizontal="left", vertical="top", wrap_text=True),
        "head_left": Alignment(horizontal="left", vertical="bottom", wrap_text=True),
        "head_right": Alignment(horizontal="right", vertical="bottom", wrap_text=True),
    }


def _summary_sheet(sheet: _Sheet, report: MonthReport, stamp: str) -> None:
    stmt = report.statement
    sheet.text(f"Chargeback statement {report.month}", bold=True)
    sheet.text(
        f"Statement {stmt.statement_id}: {stmt.describe()}."
        if stmt.issued
        else f"Statement: {stmt.describe()} — figures computed from the calls now."
    )
    sheet.text(
        f"Budgets as of {report.as_of:%Y-%m-%d %H:%M} UTC (projection: month-to-date cost "
        "extended linearly to month end). Rates, provisional share, unpriced calls: see Notes."
    )
    if report.allocation_amount is not None:
        sheet.text(
            f"Allocation: {format_money(report.allocation_amount, report.currency())} split "
            "by total token share (largest remainder to the minor unit)."
        )
    else:
        sheet.text("Allocation: none (report --allocate AMOUNT adds a column).")
    sheet.skip()
    table = without(summary(report), SAME_ON_EVERY_ROW)
    header = sheet.table(table)
    if not table.rows:
        sheet.text("(no calls in this month)")
    sheet.finish((header, header), stamp, f"B{header + 1}")  # the BU stays in view


def _bu_sheet(
    sheet: _Sheet, report: MonthReport, name: str, cost_centre: str | None, stamp: str
) -> None:
    sheet.text(f"{name} — {report.month}", bold=True)
    sheet.text(
        f"Cost centre {cost_centre or '-'}; statement {report.statement.statement_id}; "
        "the tables below are live figures"
    )
    for table in bu_tables(report, name):
        sheet.skip()
        sheet.table(table)
        if not table.rows:
            sheet.text("(none)")
    sheet.finish((1, 2), stamp, "A3")


def _notes_sheet(sheet: _Sheet, report: MonthReport, stamp: str) -> None:
    items, tables = notes(report)
    sheet.text(f"Notes — chargeback statement {report.month}", bold=True)
    sheet.skip()
    for key, value in items:
        sheet.pair(key, value)
    for table in tables:
        sheet.skip()
        sheet.table(table)
        if not table.rows:
            sheet.text("(none)")
    sheet.finish((1, 1), stamp, "A2")


def _invoice_sheet(sheet: _Sheet, report: MonthReport, invoice: Table, stamp: str) -> None:
    sheet.text(f"Azure invoice {report.month} — split across the business units", bold=True)
    sheet.text(
        "By each BU's share of every meter's tokens, to the cent; billed tokens the gateway did "
        "not record and cost that is not tokens are lines of their own."
    )
    sheet.skip()
    header = sheet.table(invoice)
    sheet.finish((header, header), stamp, f"A{header + 1}")


def workbook_bytes(
    report: MonthReport,
    names: dict[str, str],
    notes_name: str = "Notes",
    invoice: Table | None = None,
) -> bytes:
    """The workbook of ``report`` as bytes (Summary, Notes, the Azure invoice's split when
    ``invoice`` is given, then one sheet per BU); ``names`` maps each BU to its sheet's name."""
    from openpyxl import Workbook  # type: ignore[import-untyped]

    styles, ids = _styles(), itertools.count(1)
    wb = Workbook()
    stamp = f"Chargeback {report.month} — {report.statement.statement_id}"
    ws = wb.active
    ws.title = "Summary"
    _summary_sheet(_Sheet(ws, styles, ids), report, stamp)
    _notes_sheet(_Sheet(wb.create_sheet(notes_name), styles, ids, _NOTES_CAP), report, stamp)
    if invoice is not None:
        _invoice_sheet(_Sheet(wb.create_sheet(INVOICE_SHEET), styles, ids), report, invoice, stamp)
    for line in report.statement.lines:
        sheet = _Sheet(wb.create_sheet(names[line.business_unit]), styles, ids)
        _bu_sheet(sheet, report, line.business_unit, line.cost_centre, stamp)
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()
