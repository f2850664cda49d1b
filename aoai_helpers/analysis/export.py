"""A month's chargeback as files for finance: an Excel workbook and a CSV statement.

:func:`write_xlsx` (needs ``openpyxl``, the ``notebooks`` extra) writes

* ``Summary`` — the month, whether the figures are the issued statement or live, then one row
  per business unit (the columns of :data:`SUMMARY_COLUMNS`; an ``Allocation`` column when an
  amount was split) and a ``Total`` row (cost totalled only when every BU has one currency);
* one sheet per BU — its model and deployment mix, its daily trend and its top users.

Numbers are written as numbers with number formats (``#,##0`` for counts, ``#,##0.00##`` for
money, ``0.0%`` for shares), never as text. Sheet names follow Excel's rules
(:func:`sheet_names`): at most 31 characters, none of ``[ ] : * ? / \\``, no leading or
trailing apostrophe, not ``History``, unique ignoring case.

:func:`write_csv` writes the per-BU statement: UTF-8, a header row, one row per BU, the same
columns as ``Summary``; numbers in fixed point (up to 10 decimals), empty cells for none. Text
cells that a spreadsheet would read as a formula — starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return, also after leading whitespace — are prefixed with ``'``; a cell
holding a comma, a double quote, a CR or an LF is quoted (RFC 4180), so that no name can split
a row or start a cell of its own (:func:`_csv_field`).

In the workbook every text cell is written as text (:func:`_text_cell`, openpyxl data type
``s``): a name such as ``=HYPERLINK(…)`` is never stored as a formula, whichever sheet or row
it lands in; the file holds no ``<f>`` element at all.

Both write to a temporary file beside the target and rename it into place, so a reader never
sees half a file. No figures are computed here: they come from
:func:`aoai_helpers.analysis.statement.month_report`.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from aoai_helpers.analysis.report import MIXED, BuCharge
from aoai_helpers.analysis.statement import MonthReport
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "SUMMARY_COLUMNS",
    "sheet_names",
    "summary_table",
    "write_csv",
    "write_xlsx",
]

_INT: Final = "#,##0"
_MONEY: Final = "#,##0.00##"
_SHARE: Final = "0.0%"
_DAY: Final = "yyyy-mm-dd"
_TIME: Final = "yyyy-mm-dd hh:mm"


@dataclass(frozen=True, slots=True)
class _Col:
    header: str
    fmt: str | None  # Excel number format; None: text


#: Columns of the Summary sheet and the CSV (``Allocation`` only when an amount is split).
SUMMARY_COLUMNS: Final[tuple[_Col, ...]] = (
    _Col("Month", None),
    _Col("Business unit", None),
    _Col("Cost centre", None),
    _Col("Calls", _INT),
    _Col("Prompt tokens", _INT),
    _Col("Completion tokens", _INT),
    _Col("Total tokens", _INT),
    _Col("Cost", _MONEY),
    _Col("Currency", None),
    _Col("Provisional cost", _MONEY),
    _Col("Provisional share", _SHARE),
    _Col("Unpriced calls", _INT),
    _Col("Provisional calls", _INT),
    _Col("Budget", _MONEY),
    _Col("Budget used", _SHARE),
    _Col("Projected cost", _MONEY),
    _Col("Budget status", None),
    _Col("Allocation", _MONEY),
    _Col("Statement", None),
    _Col("Issued at (UTC)", _TIME),
)

_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML (openpyxl refuses)
_SHEET_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # no control character in a sheet name
# OWASP, "CSV Injection" (owasp.org/www-community/attacks/CSV_Injection): no cell may begin with
# "=", "+", "-", "@", tab (0x09) or carriage return (0x0D) — prefix such a cell with a single
# quote — and the field separator and quotes must be escaped too, or a value could start a new
# cell of its own (the list as OWASP extended it with tab and CR; cf. Symfony's CVE-2021-41270).
# Spreadsheets skip leading blanks before they look, so the test is also made after them.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_CSV_QUOTE: Final = re.compile(r'[,"\r\n]')  # RFC 4180 2.6: such a field is enclosed in quotes


def sheet_names(names: Sequence[str], reserved: Sequence[str] = ("Summary",)) -> dict[str, str]:
    """A valid, unique Excel sheet name for each of ``names`` (unique ignoring case, also
    against ``reserved``): forbidden characters become ``_``, apostrophes at either end go,
    names are cut to 31 characters, and a clash gets `` (2)``, `` (3)``…"""
    taken = {r.casefold() for r in reserved} | {"history"}  # Excel reserves "History"
    out: dict[str, str] = {}
    for name in names:
        base = _SHEET_CONTROL.sub("", _BAD_SHEET_CHARS.sub("_", name)).strip().strip("'").strip()
        base = (base or "BU")[:31]
        candidate, n = base, 1
        while candidate.casefold() in taken:
            n += 1
            suffix = f" ({n})"
            candidate = base[: 31 - len(suffix)].rstrip() + suffix
        taken.add(candidate.casefold())
        out[name] = candidate
    return out


def _share(part: float, whole: float | None) -> float | None:
    return part / whole if whole else None


def summary_table(report: MonthReport) -> tuple[list[str], list[list[Any]]]:
    """The header and the per-BU rows of the Summary sheet and the CSV (numbers as numbers,
    ``None`` for an empty cell)."""
    budgets = {b.business_unit: b for b in report.budgets}
    allocations = (
        {a.business_unit: a.amount for a in report.allocation}
        if report.allocation is not None
        else None
    )
    stmt = report.statement
    columns = [c.header for c in _columns(report)]
    rows = []
    for line in stmt.lines:
        burn = budgets.get(line.business_unit)
        row: list[Any] = [
            report.month,
            line.business_unit,
            line.cost_centre,
            line.calls,
            line.prompt_tokens,
            line.completion_tokens,
            line.total_tokens,
            line.cost,
            line.currency,
            line.estimated_cost,
            _share(line.estimated_cost, line.cost) or 0.0,
            line.unpriced_calls,
            line.estimated_calls,
            burn.budget if burn else None,
            burn.used if burn else None,
            burn.projected if burn else line.cost,
            burn.status if burn else "no budget",
        ]
        if allocations is not None:
            row.append(allocations.get(line.business_unit))
        row += [stmt.status, stmt.issued_at]
        rows.append(row)
    return columns, rows


def _columns(report: MonthReport) -> list[_Col]:
    return [c for c in SUMMARY_COLUMNS if c.header != "Allocation" or report.allocation is not None]


def _atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _csv_cell(value: Any) -> str:
    """The text of one CSV cell (before quoting): numbers in fixed point, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(" ", timespec="seconds")
    if isinstance(value, float):  # fixed point, no float noise: 2129.38673235, 0.00002
        return f"{value:.10f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, str):
        if value.startswith(_FORMULA_START) or value.lstrip().startswith(_FORMULA_START):
            return "'" + value  # read as text, never as a formula
        return value
    return str(value)


def _csv_field(text: str) -> str:
    """``text`` quoted when it holds a comma, a double quote, a CR or an LF (quotes doubled).

    Python's ``csv`` writer with ``lineterminator="\\n"`` leaves a bare CR unquoted, and a
    spreadsheet then ends the row there: hence this, for every cell.
    """
    if _CSV_QUOTE.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_line(values: Sequence[Any]) -> str:
    return ",".join(_csv_field(_csv_cell(v)) for v in values) + "\n"


def write_csv(path: str | os.PathLike[str], report: MonthReport) -> Path:
    """The per-BU statement as CSV (UTF-8, header row, one row per BU); returns the path."""
    header, rows = summary_table(report)
    text = _csv_line(header) + "".join(_csv_line(row) for row in rows)
    return _atomic_write(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- xlsx


class _Sheet:
    """Appends rows to an openpyxl worksheet with types and number formats kept."""

    def __init__(self, ws: Any, bold: Any) -> None:
        self.ws = ws
        self.bold = bold
        self.row = 1
        self.widths: dict[int, int] = {}

    def text(self, value: str, *, bold: bool = False) -> None:
        cell = _text_cell(self.ws, self.row, 1, value)
        if bold:
            cell.font = self.bold
        self.row += 1

    def skip(self) -> None:
        self.row += 1

    def table(
        self, columns: Sequence[_Col], rows: Sequence[Sequence[Any]], total: Sequence[Any] | None
    ) -> None:
        for j, col in enumerate(columns, start=1):
            self._put(j, col.header, None, bold=True)
        self.row += 1
        for values in [*rows, *([total] if total is not None else [])]:
            for j, (col, value) in enumerate(zip(columns, values, strict=True), start=1):
                self._put(j, value, col.fmt, bold=values is total)
            self.row += 1

    def _put(self, column: int, value: Any, fmt: str | None, *, bold: bool) -> None:
        if isinstance(value, str):
            cell = _text_cell(self.ws, self.row, column, value)  # text, never a formula
            value = cell.value
        else:
            cell = self.ws.cell(row=self.row, column=column)
            cell.value = value
        if isinstance(value, str):
            pass
        elif fmt is not None and value is not None:
            cell.number_format = fmt
        elif isinstance(value, datetime):
            cell.number_format = _TIME
        elif isinstance(value, date):
            cell.number_format = _DAY
        if bold:
            cell.font = self.bold
        if isinstance(value, str):
            width = len(value)
        elif isinstance(value, int):
            width = len(f"{value:,}")
        else:
            width = len(f"{value:,.2f}") if _number(value) else 10
        self.widths[column] = max(self.widths.get(column, 8), min(width + 2, 48))

    def finish(self, freeze: str | None = None) -> None:
        from openpyxl.utils import get_column_letter  # type: ignore[import-untyped]

        for column, width in self.widths.items():
            self.ws.column_dimensions[get_column_letter(column)].width = max(width, 10)
        if freeze:
            self.ws.freeze_panes = freeze


def _number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


def _text_cell(ws: Any, row: int, column: int, text: str) -> Any:
    """Write ``text`` into a cell as text: openpyxl takes a string starting with ``=`` for a
    formula (data type ``f``, saved as ``<f>``) unless the data type is set to ``s`` after the
    value. Every string of the workbook goes through here."""
    cell = ws.cell(row=row, column=column)
    cell.value = _clean(text)
    cell.data_type = "s"
    return cell


def _totals(report: MonthReport, columns: list[str], rows: list[list[Any]]) -> list[Any]:
    """The Total row: counts summed, money summed only within one currency."""
    currencies = {r[columns.index("Currency")] for r in rows} - {None}
    one_currency = len(currencies) <= 1 and MIXED not in currencies
    money = {"Cost", "Provisional cost", "Budget", "Projected cost", "Allocation"}
    counts = {"Calls", "Prompt tokens", "Completion tokens", "Total tokens"}
    counts |= {"Unpriced calls", "Provisional calls"}
    total: list[Any] = []
    for i, name in enumerate(columns):
        values = [r[i] for r in rows if r[i] is not None]
        if name == "Month":
            total.append(report.month)
        elif name == "Business unit":
            total.append("Total")
        elif values and (
            name in counts or name == "Allocation" or (name in money and one_currency)
        ):
            total.append(sum(values))
        elif name == "Currency":
            total.append(next(iter(currencies)) if one_currency and currencies else MIXED)
        elif name == "Provisional share":
            cost, est = columns.index("Cost"), columns.index("Provisional cost")
            priced = sum(r[cost] for r in rows)
            total.append(sum(r[est] for r in rows) / priced if one_currency and priced else None)
        else:
            total.append(None)
    return total


_MODEL_COLUMNS: Final = (
    _Col("Model", None),
    _Col("Deployment", None),
    _Col("Calls", _INT),
    _Col("Prompt tokens", _INT),
    _Col("Completion tokens", _INT),
    _Col("Cached tokens", _INT),
    _Col("Total tokens", _INT),
    _Col("Cost", _MONEY),
    _Col("Currency", None),
    _Col("Provisional share", _SHARE),
    _Col("Unpriced calls", _INT),
)
_DAILY_COLUMNS: Final = (
    _Col("Day", _DAY),
    _Col("Calls", _INT),
    _Col("Prompt tokens", _INT),
    _Col("Completion tokens", _INT),
    _Col("Total tokens", _INT),
    _Col("Cost", _MONEY),
    _Col("Currency", None),
    _Col("Unpriced calls", _INT),
)
_USER_COLUMNS: Final = (
    _Col("User", None),
    _Col("Email", None),
    _Col("Calls", _INT),
    _Col("Total tokens", _INT),
    _Col("Cost", _MONEY),
    _Col("Currency", None),
    _Col("Unpriced calls", _INT),
)


def _bu_sheet(sheet: _Sheet, report: MonthReport, line: BuCharge) -> None:
    name = line.business_unit
    sheet.text(f"{name} — {report.month}", bold=True)
    sheet.text(
        f"Cost centre {line.cost_centre or '-'}; {report.statement.describe()}; "
        "the tables below are live figures"
    )
    sections: list[tuple[str, Any, list[list[Any]]]] = [
        ("By model and deployment", _MODEL_COLUMNS, _model_cells(report, name)),
        ("Daily trend (UTC)", _DAILY_COLUMNS, _daily_cells(report, name)),
        ("Top users", _USER_COLUMNS, _user_cells(report, name)),
    ]
    for title, columns, rows in sections:
        sheet.skip()
        sheet.text(title, bold=True)
        sheet.table(columns, rows, None)
    sheet.finish()


def _model_cells(report: MonthReport, name: str) -> list[list[Any]]:
    return [
        [
            m.model,
            m.deployment,
            m.calls,
            m.prompt_tokens,
            m.completion_tokens,
            m.cached_tokens,
            m.total_tokens,
            m.cost,
            m.currency,
            m.estimated_share,
            m.unpriced_calls,
        ]
        for m in report.by_model
        if m.business_unit == name
    ]


def _daily_cells(report: MonthReport, name: str) -> list[list[Any]]:
    return [
        [
            d.day,
            d.calls,
            d.prompt_tokens,
            d.completion_tokens,
            d.total_tokens,
            d.cost,
            d.currency,
            d.unpriced_calls,
        ]
        for d in report.daily
        if d.business_unit == name
    ]


def _user_cells(report: MonthReport, name: str) -> list[list[Any]]:
    return [
        [u.user_name, u.user_email, u.calls, u.total_tokens, u.cost, u.currency, u.unpriced_calls]
        for u in report.top_users
        if u.business_unit == name
    ]


def write_xlsx(path: str | os.PathLike[str], report: MonthReport) -> Path:
    """The month as an Excel workbook (see the module docstring); returns the path.

    Needs ``openpyxl`` (``pip install 'apim-aoai-proxy[notebooks]'``).
    """
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]

    bold = Font(bold=True)
    wb = Workbook()
    ws = wb.active
    ws.title = "Summary"
    summary = _Sheet(ws, bold)
    stmt = report.statement
    summary.text(f"Chargeback statement {report.month}", bold=True)
    summary.text(
        f"Statement: {stmt.describe()}. Budgets as of {report.as_of:%Y-%m-%d %H:%M} UTC "
        "(projection: month-to-date cost extended linearly to month end)."
    )
    if report.allocation_amount is not None:
        summary.text(
            f"Allocation: {report.allocation_amount:,.2f} split by total token share "
            "(largest remainder to the cent)."
        )
    else:
        summary.text("Allocation: none (report --allocate AMOUNT adds a column).")
    summary.skip()
    header, rows = summary_table(report)
    header_row = summary.row
    summary.table(_columns(report), rows, _totals(report, header, rows) if rows else None)
    if not rows:
        summary.text("(no calls in this month)")
    summary.finish(freeze=f"C{header_row + 1}")
    names = sheet_names(report.business_units())
    for line in stmt.lines:
        _bu_sheet(_Sheet(wb.create_sheet(names[line.business_unit]), bold), report, line)
    buffer = io.BytesIO()
    wb.save(buffer)
    return _atomic_write(path, buffer.getvalue())
