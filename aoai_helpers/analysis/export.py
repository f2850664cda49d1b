"""A month's chargeback as files for finance: an Excel workbook and a CSV statement.

:func:`write_xlsx` (needs ``openpyxl``, the ``notebooks`` extra) writes the workbook of
:mod:`aoai_helpers.analysis.workbook`: ``Summary`` (one row per BU, the columns of
:data:`SUMMARY_COLUMNS`, an ``Allocation`` column when an amount was split, and totals rows
per currency), ``Notes`` (statement id, rates used, provisional share, unpriced calls) and one
sheet per BU, with print setup, currency formats, fitted widths and an autofilter per table.
Sheet names follow Excel's rules (:func:`sheet_names`): at most 31 characters, none of
``[ ] : * ? / \\``, no leading or trailing apostrophe, not ``History``, unique ignoring case.

:func:`write_csv` writes the per-BU statement: UTF-8, a header row, one row per BU (no totals
row: a CSV reader sums), the same columns as ``Summary``. Money is in the currency's minor
units, rounded as in the workbook and the text table (:mod:`aoai_helpers.analysis.ledger`:
the lines of each currency add up to its total to the cent): ``12.50``, ``1235`` for JPY; a BU
with no priced call reads ``unpriced`` — never 0; shares in fixed point (up to 10 decimals);
empty cells for none. Records end with LF (the reader of ``tests/rfc4180.py``; RFC 4180 §2
names CRLF, and every CSV reader takes either). Text cells that a spreadsheet would read as a
formula — starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, also after
leading whitespace — are prefixed with ``'``; a cell holding a comma, a double quote, a CR or
an LF is quoted (RFC 4180 §2.6, §2.7), so that no name can split a row or start a cell of its
own (:func:`_csv_field`).

Both write to a temporary file beside the target and rename it into place, so a reader never
sees half a file. No figures are computed here: they come from
:func:`aoai_helpers.analysis.statement.month_report`, laid out by
:mod:`aoai_helpers.analysis.layout`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from aoai_helpers.analysis.layout import SUMMARY_COLUMNS, Col, Table, summary
from aoai_helpers.analysis.statement import MonthReport
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "NOTES_SHEET",
    "SUMMARY_COLUMNS",
    "atomic_write",
    "sheet_names",
    "summary_table",
    "write_csv",
    "write_xlsx",
]

_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
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


def summary_table(report: MonthReport) -> tuple[list[str], list[list[Any]]]:
    """The header and the per-BU rows of the Summary sheet and the CSV: counts as ``int``,
    money as a Decimal in the currency's minor units or ``"unpriced"``, ``None`` for an empty
    cell (:func:`aoai_helpers.analysis.layout.summary`; its totals rows are left out)."""
    table = summary(report)
    return table.headers, [list(r.values) for r in table.rows]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
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


def _csv_cell(value: Any, col: Col | None = None) -> str:
    """The text of one CSV cell (before quoting): numbers in fixed point, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(" ", timespec="seconds")
    if isinstance(value, Decimal | float) and not (col is not None and col.kind == "money"):
        # fixed point, no float noise: 0.25, 0.00002 (shares, budget use)
        return (
            f"{Decimal(repr(value)) if isinstance(value, float) else value:.10f}".rstrip(
                "0"
            ).rstrip(".")
            or "0"
        )
    if isinstance(value, Decimal):
        return format(value, "f")  # money: already in the minor unit ("0.00", not "0E-2")
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


def _csv_line(values: Sequence[Any], columns: Sequence[Col | None]) -> str:
    return (
        ",".join(_csv_field(_csv_cell(v, c)) for v, c in zip(values, columns, strict=True)) + "\n"
    )


def write_csv(path: str | os.PathLike[str], report: MonthReport) -> Path:
    """The per-BU statement as CSV (UTF-8, header row, one row per BU); returns the path."""
    table = summary(report)
    text = _csv_line(table.headers, [None] * len(table.columns)) + "".join(
        _csv_line(r.values, table.columns) for r in table.rows
    )
    return atomic_write(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- xlsx


#: The name of the workbook's notes sheet (reserved: a BU of that name gets `` (2)``).
NOTES_SHEET: Final = "Notes"


def write_xlsx(
    path: str | os.PathLike[str], report: MonthReport, *, invoice: Table | None = None
) -> Path:
    """The month as an Excel workbook (see :mod:`aoai_helpers.analysis.workbook`), with the
    Azure invoice's split on a sheet of its own when ``invoice`` is given
    (:func:`aoai_helpers.billing.figures.invoice_table`); returns the path. Needs ``openpyxl``
    (``pip install 'apim-aoai-proxy[notebooks]'``)."""
    from aoai_helpers.analysis.workbook import INVOICE_SHEET, workbook_bytes

    reserved = ("Summary", NOTES_SHEET, INVOICE_SHEET)
    names = sheet_names(report.business_units(), reserved=reserved)
    return atomic_write(path, workbook_bytes(report, names, NOTES_SHEET, invoice))
