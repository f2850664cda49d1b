"""Rates in the database (``AoaiTokenRate``): read them, set them with effective dating.

Setting a rate for a model from date F closes the rate that was open at F (its
``EffectiveTo`` becomes F) and, when a later rate exists, ends the new one where the later one
starts — so rates never overlap. :func:`store_rates` changes the rate table only and returns
the periods whose pricing changed; repricing the rows stored in them is
:func:`aoai_helpers.pipeline.reprice.set_rates` (which calls this). The business-unit map is
:mod:`aoai_helpers.db.business_units`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from aoai_helpers.core.pricing import Rate, RateBook
from aoai_helpers.db.tables import rate_table

__all__ = ["RateWindow", "read_rates", "store_rates"]

#: A period whose pricing changed: ``(model, start, end)`` (``end`` None: open).
RateWindow = tuple[str, datetime, datetime | None]


def read_rates(conn: Connection) -> list[Rate]:
    """All rates, ordered by model and start."""
    t = rate_table.c
    rows = conn.execute(select(rate_table).order_by(t.ModelName, t.EffectiveFrom)).mappings()
    return [
        Rate(
            model_name=r["ModelName"],
            prompt_rate=r["PromptTokenRate"],
            completion_rate=r["CompletionTokenRate"],
            cached_prompt_rate=r["CachedPromptTokenRate"],
            currency=r["Currency"] or "USD",
            effective_from=r["EffectiveFrom"],
            effective_to=r["EffectiveTo"],
            source=r["Source"] or "",
            rate_id=r["RateId"],
        )
        for r in rows
    ]


def _values(rate: Rate) -> dict[str, Any]:
    return {
        "ModelName": rate.model_name,
        "PromptTokenRate": rate.prompt_rate,
        "CompletionTokenRate": rate.completion_rate,
        "CachedPromptTokenRate": rate.cached_prompt_rate,
        "Currency": rate.currency,
        "EffectiveFrom": rate.effective_from,
        "EffectiveTo": rate.effective_to,
        "Source": rate.source[:200] or None,
    }


def store_rates(conn: Connection, rates: Iterable[Rate]) -> list[RateWindow]:
    """Insert or update rates (effective-dated, see the module doc); return the changed periods.

    A rate from F replaces, from F on, the rate that covered F. With an end T, the replaced
    rate resumes at T (a promotion window); without one, the new rate runs until the next
    later rate starts. Raises :class:`~aoai_helpers.exceptions.ConfigError` if the result
    would overlap.
    """
    windows: list[RateWindow] = []
    for new in rates:
        existing = [r for r in read_rates(conn) if r.model_name == new.model_name]
        same = next((r for r in existing if r.effective_from == new.effective_from), None)
        later = [r.effective_from for r in existing if r.effective_from > new.effective_from]
        if new.effective_to is None and later:
            new = replace(new, effective_to=min(later))
        # The period whose pricing may change: from F to the end of whatever we replace.
        ends: list[datetime | None] = [new.effective_to]
        for prev in existing:
            if prev.effective_from < new.effective_from and prev.covers(new.effective_from):
                ends.append(prev.effective_to)
                _close(conn, prev, new)
        if same is not None:
            ends.append(same.effective_to)
            conn.execute(
                update(rate_table).where(rate_table.c.RateId == same.rate_id).values(**_values(new))
            )
        else:
            conn.execute(rate_table.insert().values(**_values(new)))
        RateBook(read_rates(conn))  # raises ConfigError if the result overlaps
        end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
        windows.append((new.model_name, new.effective_from, end))
    return windows


def _close(conn: Connection, prev: Rate, new: Rate) -> None:
    """End ``prev`` where ``new`` starts; resume it after ``new`` when ``new`` ends first."""
    conn.execute(
        update(rate_table)
        .where(rate_table.c.RateId == prev.rate_id)
        .values(EffectiveTo=new.effective_from)
    )
    if new.effective_to is not None and (
        prev.effective_to is None or prev.effective_to > new.effective_to
    ):
        resumed = replace(prev, effective_from=new.effective_to, rate_id=None)
        conn.execute(rate_table.insert().values(**_values(resumed)))
