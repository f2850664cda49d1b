"""``bill import``: a cost-details file's Azure OpenAI rows into ``AzureCostLine``; the imports.

What an import does, in one transaction (so a failure half-way leaves the table as it was):

1. read the file row by row (:mod:`aoai_helpers.billing.costdetails`; a 100k-row export is
   never held in memory), keeping the Azure OpenAI rows;
2. map each meter (:mod:`aoai_helpers.billing.meters`; hand mappings first): a token meter
   gets its model, token kind and ``Tokens`` = ``Quantity`` x the unit's tokens; any other
   Azure OpenAI meter (provisioned hours, fine-tuning hosting or training) is stored with
   ``ModelName`` NULL — cost that tokens cannot attribute;
3. insert in batches under a new ``ImportId``;
4. at the end: every token meter that could not be read is one :class:`InputError` naming
   them (nothing is stored), and so is a file with no Azure OpenAI row at all; else the
   import's lines get their cost type (known only once the whole file is read, see
   :func:`~aoai_helpers.billing.costdetails.detect_cost_type`) and the lines of the same
   cost type that earlier imports gave for the days the file covers (its first to its last
   usage date) are deleted: re-importing a file, or a newer export of the same month,
   replaces those days instead of adding to them; files of other days add up.

``AzureCostLine`` (:data:`aoai_helpers.db.tables.BILL_TABLES`) is created on first import.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Final

from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.engine import Connection, Engine

from aoai_helpers.billing.costdetails import (
    CostRow,
    CostType,
    detect_cost_type,
    is_aoai,
    open_cost_details,
)
from aoai_helpers.billing.meters import MeterMap, UnreadableMeter, meter_key, unit_tokens
from aoai_helpers.clock import month_of, utcnow
from aoai_helpers.core.money import to_decimal
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import BILL_TABLES, cost_line_table, metadata
from aoai_helpers.exceptions import ConfigError, InputError

__all__ = [
    "COST_TYPES",
    "BillImport",
    "ImportSummary",
    "ensure_bill_tables",
    "has_bill_tables",
    "import_cost_details",
    "list_imports",
]

COST_TYPES: Final[tuple[CostType, ...]] = ("actual", "amortized", "usage")
_BATCH: Final = 2000
_SHOWN_UNREADABLE: Final = 5


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What one ``bill import`` stored."""

    import_id: str
    source_file: str
    cost_type: CostType
    rows_read: int
    lines_stored: int
    token_lines: int
    months: tuple[str, ...]
    totals: dict[str, Decimal]  # currency → exact total of the stored lines
    replaced_lines: int  # earlier lines of the same days and cost type, replaced


@dataclass(frozen=True, slots=True)
class BillImport:
    """One stored (month, cost type) of ``AzureCostLine``, for ``bill list``."""

    month: str
    cost_type: str
    source_file: str
    imported_at: datetime
    lines: int
    token_lines: int
    totals: dict[str, Decimal]


def ensure_bill_tables(conn: Connection) -> None:
    """Create ``AzureCostLine`` if it is not there yet (``bill import``)."""
    metadata.create_all(conn, tables=list(BILL_TABLES), checkfirst=True)


def has_bill_tables(conn: Connection) -> bool:
    """True once a bill was imported: readers (``report``, ``bill list``) never create the
    table, so a database opened by a read-only login reports as before."""
    return inspect(conn).has_table(cost_line_table.name)


def _tokens(row: CostRow) -> int | None:
    per_unit = unit_tokens(row.unit)
    if per_unit is None:
        return None
    return int((row.quantity * per_unit).to_integral_value(rounding=ROUND_HALF_UP))


def _unreadable_error(found: dict[str, UnreadableMeter], source: str) -> InputError:
    names = sorted(found)
    shown = "; ".join(f"{n!r} ({found[n].reason})" for n in names[:_SHOWN_UNREADABLE])
    more = f" and {len(names) - _SHOWN_UNREADABLE} more" if len(names) > _SHOWN_UNREADABLE else ""
    return InputError(
        f"{source}: cannot tell the model and token kind of meter {shown}{more}; map each with "
        '--meter "METER NAME=model:kind" (kind input, output, cached_input or none) or a '
        "--meter-map CSV (MeterName,Model,TokenKind)"
    )


class _Writer:
    """Batches rows into ``AzureCostLine`` under one import id; :meth:`finish` gives them their
    cost type and deletes the earlier lines they replace."""

    def __init__(self, conn: Connection, source: str) -> None:
        self.conn, self.source = conn, source
        self.import_id = str(uuid.uuid4())
        self.imported_at = utcnow().replace(microsecond=0)
        self.months: set[str] = set()
        self.first: datetime | None = None  # the days the file covers
        self.last: datetime | None = None
        self.stored = 0
        self.token_lines = 0
        self.totals: dict[str, Decimal] = {}
        self._batch: list[dict[str, Any]] = []

    def add(self, row: CostRow, model: str | None, kind: str | None, tokens: int | None) -> None:
        month = month_of(row.usage_date)
        self.months.add(month)
        if self.first is None or row.usage_date < self.first:
            self.first = row.usage_date
        if self.last is None or row.usage_date > self.last:
            self.last = row.usage_date
        self._batch.append(
            {
                "ImportId": self.import_id,
                "ImportedAtUTC": self.imported_at,
                "SourceFile": self.source[:260],
                "BillingMonth": month,
                "UsageDate": row.usage_date,
                "CostType": "actual",  # set by finish()
                "SubscriptionId": row.subscription_id[:50] or None,
                "ResourceId": row.resource_id[:400] or None,
                "MeterId": row.meter_id[:64] or None,
                "MeterName": row.meter_name[:200],
                "MeterSubCategory": row.meter_subcategory[:200] or None,
                "ModelName": model,
                "TokenKind": kind,
                "Quantity": float(row.quantity),
                "UnitOfMeasure": row.unit[:50] or None,
                "Tokens": tokens,
                # float: the column reads back through to_decimal (shortest repr) exactly
                "Cost": float(row.cost),
                "Currency": row.currency[:3],
            }
        )
        self.stored += 1
        self.token_lines += model is not None
        self.totals[row.currency] = self.totals.get(row.currency, Decimal(0)) + row.cost
        if len(self._batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self.conn.execute(cost_line_table.insert(), self._batch)
            self._batch = []

    def finish(self, cost_type: CostType) -> int:
        """Stamp the import's lines with ``cost_type``; delete the lines of the same cost type
        that earlier imports gave for the days this file covers, first to last (returns how
        many) — a newer export of a month replaces it, two half-month files add up, and a file
        from 30 November to 1 December leaves the rest of November as it was."""
        self.flush()
        t = cost_line_table.c
        if self.first is None or self.last is None:
            return 0  # nothing stored, nothing replaced
        if cost_type != "actual":
            self.conn.execute(
                update(cost_line_table)
                .where(t.ImportId == self.import_id)
                .values(CostType=cost_type)
            )
        gone = self.conn.execute(
            delete(cost_line_table).where(
                t.UsageDate >= self.first,
                t.UsageDate <= self.last,
                t.CostType == cost_type,
                t.ImportId != self.import_id,
            )
        )
        return int(gone.rowcount or 0)


def _check_cost_type(cost_type: str | None) -> CostType | None:
    if cost_type is None:
        return None
    for known in COST_TYPES:
        if cost_type == known:
            return known
    raise ConfigError(f"cost type must be one of {', '.join(COST_TYPES)}, not {cost_type!r}")


def import_cost_details(
    engine: Engine,
    path: str | Path,
    *,
    meters: MeterMap | None = None,
    cost_type: str | None = None,
    currency: str | None = None,
) -> ImportSummary:
    """Import the Azure OpenAI lines of the cost-details CSV at ``path`` (module docstring).

    ``cost_type`` (actual | amortized | usage) defaults to what the file shows
    (:func:`~aoai_helpers.billing.costdetails.detect_cost_type`); ``currency`` is needed for
    files without a currency column (the older EA usage files).
    """
    file = Path(path)
    chosen = _check_cost_type(cost_type)
    mapping = meters or MeterMap()
    handle, details = open_cost_details(file, currency)
    unreadable: dict[str, UnreadableMeter] = {}
    charge_types: set[str] = set()
    try:
        with transaction(engine) as conn:
            ensure_bill_tables(conn)
            writer = _Writer(conn, file.name)
            for row in _rows(details):
                charge_types.add(row.charge_type)
                if is_aoai(row.meter_category, row.meter_subcategory, row.product):
                    _write(writer, row, mapping, unreadable)
            if unreadable:
                raise _unreadable_error(unreadable, file.name)
            if not writer.stored:
                raise InputError(
                    f"{file.name}: {details.rows_read} row(s) read, none for Azure OpenAI "
                    "(MeterCategory Cognitive Services or Foundry Models with an OpenAI "
                    "sub-category or product): nothing imported"
                )
            final = chosen or detect_cost_type(details.layout, charge_types, file.name)
            replaced = writer.finish(final)
    finally:
        handle.close()
    return ImportSummary(
        import_id=writer.import_id,
        source_file=file.name,
        cost_type=final,
        rows_read=details.rows_read,
        lines_stored=writer.stored,
        token_lines=writer.token_lines,
        months=tuple(sorted(writer.months)),
        totals=dict(sorted(writer.totals.items())),
        replaced_lines=replaced,
    )


def _rows(details: Any) -> Iterable[CostRow]:
    try:
        yield from details.rows()
    except UnicodeDecodeError:
        raise InputError(f"{details.name} is not UTF-8 text (an Azure CSV export is)") from None
    except csv.Error as exc:
        raise InputError(f"{details.name}: not a readable CSV file ({exc})") from None


def _write(
    writer: _Writer, row: CostRow, mapping: MeterMap, unreadable: dict[str, UnreadableMeter]
) -> None:
    reading = mapping.read(row.meter_name)
    if isinstance(reading, UnreadableMeter):
        unreadable.setdefault(row.meter_name, reading)
        return
    if (
        not reading.is_tokens
        and meter_key(row.meter_name) not in mapping.entries
        and "token" not in row.meter_name.lower()
        and unit_tokens(row.unit) is not None
    ):  # billed in a count (1K, 1M) yet not named a token meter: ask, never guess "not tokens"
        reason = f"billed per {row.unit!r} like tokens, but not named as a token meter"
        unreadable.setdefault(row.meter_name, UnreadableMeter(row.meter_name, reason))
        return
    tokens = _tokens(row) if reading.is_tokens else None
    if reading.is_tokens and tokens is None:
        reason = f"unit of measure {row.unit!r} is not a token count"
        unreadable.setdefault(row.meter_name, UnreadableMeter(row.meter_name, reason))
        return
    if not unreadable:  # else the import fails anyway: only collect the other unreadable meters
        writer.add(row, reading.model, reading.kind, tokens)


def list_imports(engine: Engine) -> list[BillImport]:
    """The stored months and cost types (newest month first), with their lines and totals;
    empty when nothing was ever imported."""
    t = cost_line_table.c
    with transaction(engine) as conn:
        if not has_bill_tables(conn):
            return []
        stmt = select(
            t.BillingMonth,
            t.CostType,
            t.Currency,
            func.max(t.SourceFile).label("source"),
            func.max(t.ImportedAtUTC).label("at"),
            func.count().label("lines"),
            func.count(t.ModelName).label("token_lines"),
            func.sum(t.Cost).label("cost"),
        ).group_by(t.BillingMonth, t.CostType, t.Currency)
        rows = conn.execute(stmt).all()
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        entry = merged.setdefault(
            (r.BillingMonth, r.CostType),
            {"source": r.source, "at": r.at, "lines": 0, "token_lines": 0, "totals": {}},
        )
        entry["lines"] += int(r.lines)
        entry["token_lines"] += int(r.token_lines)
        entry["totals"][r.Currency] = to_decimal(r.cost) or Decimal(0)
    out = [
        BillImport(
            month=month,
            cost_type=kind,
            source_file=str(e["source"]),
            imported_at=e["at"]
            if isinstance(e["at"], datetime)
            else datetime.fromisoformat(e["at"]),
            lines=e["lines"],
            token_lines=e["token_lines"],
            totals=dict(sorted(e["totals"].items())),
        )
        for (month, kind), e in merged.items()
    ]
    out.sort(key=lambda b: (b.month, b.cost_type), reverse=True)
    return out
