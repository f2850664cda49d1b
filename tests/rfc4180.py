"""A strict RFC 4180 reader for the tests of CSV output: it splits records itself (not with
the ``csv`` module, which forgives what a spreadsheet does not) and fails on a bare CR or an
LF outside quotes anywhere but at a record's end, and on a quote inside an unquoted cell."""

from __future__ import annotations


def records(text: str) -> list[list[str]]:
    """The records of ``text``; every record ends with LF, CR and LF inside cells are quoted."""
    out: list[list[str]] = []
    row: list[str] = []
    cell: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1 : i + 2] == '"':
                cell.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cell.append(ch)
        elif ch == '"':
            assert not cell, f"a quote inside an unquoted cell at {i}"
            quoted = True
        elif ch in ",\n":
            row.append("".join(cell))
            cell = []
            if ch == "\n":
                out.append(row)
                row = []
        else:
            assert ch != "\r", f"a bare CR outside quotes at {i}: {text[max(0, i - 20) : i + 20]!r}"
            cell.append(ch)
        i += 1
    assert not quoted and not row and not cell, "the text must end with a whole record"
    return out
