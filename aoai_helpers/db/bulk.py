"""Statements run as one DB-API ``executemany`` on tuples built in a fixed column order.

The hot writers (:mod:`aoai_helpers.pipeline.writer`'s row insert, :mod:`aoai_helpers.db.rollup`'s
upsert) bypass SQLAlchemy's per-row parameter processing: they compile their statement once
per dialect (:func:`compile_bulk`) and hand the driver the rows it wants
(:meth:`BulkStatement.params`) — the tuples as they are where the driver's positional order is
the columns' order, reordered tuples or dicts otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import ClauseElement
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["BulkStatement", "compile_bulk"]


@dataclass(frozen=True, slots=True)
class BulkStatement:
    """A compiled statement: its SQL, its parameter names in order, whether positional, and
    the column order of the tuples it is given."""

    sql: str
    names: tuple[str, ...]
    positional: bool
    columns: tuple[str, ...]
    _index: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", tuple(self.columns.index(n) for n in self.names))

    def params(self, rows: Sequence[Sequence[Any]]) -> Any:
        """``rows`` (tuples in :attr:`columns` order) as the driver wants them."""
        if self.positional and self.names == self.columns:
            return rows
        idx = self._index
        if self.positional:
            return [tuple(row[i] for i in idx) for row in rows]
        names = self.names
        return [dict(zip(names, (row[i] for i in idx), strict=True)) for row in rows]


def compile_bulk(
    stmt: ClauseElement, dialect: Dialect, columns: Sequence[str], what: str
) -> BulkStatement:
    """``stmt`` compiled for ``dialect`` with one parameter per name of ``columns`` (else a
    RuntimeError naming ``what``)."""
    compiled = cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=list(columns)))
    order = list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)
    if sorted(order) != sorted(columns):
        raise RuntimeError(f"{what} parameters {order} do not match its columns")
    return BulkStatement(str(compiled), tuple(order), bool(compiled.positional), tuple(columns))
