"""Repricing: stored rows take the rates in effect at their calls' times.

:func:`set_rates` sets rates (:func:`aoai_helpers.db.rates.store_rates`) and reprices the rows
stored in every period whose rate changed, so the table always agrees with the rates;
statements already issued are kept as snapshots (:mod:`aoai_helpers.analysis.statement`) and
do not change. :func:`reprice` recomputes ``Cost``/``Currency``/``RateId`` over a window with
:func:`aoai_helpers.core.pricing.price_call`, written through
:meth:`aoai_helpers.pipeline.writer.RowWriter.update_costs`, and rebuilds the daily rollup of
the days it repriced (:meth:`aoai_helpers.db.rollup.Rollup.rebuild`) in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from aoai_helpers.core.events import Usage
from aoai_helpers.core.pricing import Price, Rate, RateBook, price_call
from aoai_helpers.db.rates import read_rates, store_rates
from aoai_helpers.db.tables import token_table
from aoai_helpers.pipeline.writer import RowWriter

__all__ = ["reprice", "set_rates"]

_REPRICE_CHUNK: Final = 5000


def set_rates(conn: Connection, rates: Iterable[Rate], *, reprice_rows: bool = True) -> int:
    """Insert or update rates (effective-dated, :func:`~aoai_helpers.db.rates.store_rates`);
    reprice the stored rows of every period whose rate changed; return the rows repriced."""
    RowWriter(conn.dialect).lock(conn)  # first: before the rate rows (the order every writer takes)
    repriced = 0
    for rate in rates:
        for model, start, end in store_rates(conn, [rate]):
            if reprice_rows:
                repriced += reprice(conn, model=model, start=start, end=end)
    return repriced


def reprice(
    conn: Connection,
    *,
    model: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Recompute ``Cost``/``Currency``/``RateId`` of billed rows in a window; return rows changed."""
    book = RateBook(read_rates(conn))
    writer = RowWriter(conn.dialect)
    t = token_table.c
    cond = [t.UsageSource != "unbilled"]
    if model is not None:
        cond.append(t.ModelName == model)
    if start is not None:
        cond.append(t.ExecTimeUTC >= start)
    if end is not None:
        cond.append(t.ExecTimeUTC < end)
    query = (
        select(
            t.Id,
            t.ModelName,
            t.ExecTimeUTC,
            t.PromptTokens,
            t.CompletionTokens,
            t.TotalTokens,
            t.CachedTokens,
            t.UsageSource,
        )
        .where(and_(*cond))
        .order_by(t.Id)
    )
    changed = 0
    last_id = 0
    writer.lock(conn)
    while True:
        rows = conn.execute(query.where(t.Id > last_id).limit(_REPRICE_CHUNK)).all()
        if not rows:
            if changed:  # the days repriced, summed again in the same transaction
                writer.rollup.rebuild(conn, start, end, model)
            return changed
        prices: list[tuple[int, Price]] = []
        for r in rows:
            usage = Usage(r.PromptTokens, r.CompletionTokens, r.TotalTokens, r.CachedTokens)
            price = price_call(usage, r.UsageSource, book, r.ModelName or "", r.ExecTimeUTC)
            prices.append((r.Id, price))  # an unmetered call stays unpriced, as ingest stores it
        changed += writer.update_costs(conn, prices)
        last_id = rows[-1].Id
