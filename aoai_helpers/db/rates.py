"""Rates and business units in the database: read, set (with effective dating), reprice.

Setting a rate for a model from date F closes the rate that was open at F (its
``EffectiveTo`` becomes F) and, when a later rate exists, ends the new one where the later one
starts — so rates never overlap. Rows already stored in the new rate's window are repriced, so
the table always agrees with the rates; statements already issued are kept as snapshots
(see the analysis module) and do not change.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.engine import Connection

from aoai_helpers.core.events import Usage
from aoai_helpers.core.pricing import Rate, RateBook, cost_of
from aoai_helpers.db.store import bu_map, rate_table, token_table
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "BusinessUnit",
    "import_bu_csv",
    "read_bu_map",
    "read_rates",
    "reprice",
    "set_bu",
    "set_rates",
]

_REPRICE_CHUNK: Final = 5000


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


def set_rates(conn: Connection, rates: Iterable[Rate], *, reprice_rows: bool = True) -> int:
    """Insert or update rates (effective-dated, see the module doc); return rows repriced.

    A rate from F replaces, from F on, the rate that covered F. With an end T, the replaced
    rate resumes at T (a promotion window); without one, the new rate runs until the next
    later rate starts. Stored rows are repriced over every period whose rate changed.
    """
    repriced = 0
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
                conn.execute(
                    update(rate_table)
                    .where(rate_table.c.RateId == prev.rate_id)
                    .values(EffectiveTo=new.effective_from)
                )
                ends.append(prev.effective_to)
                if new.effective_to is not None and (
                    prev.effective_to is None or prev.effective_to > new.effective_to
                ):
                    resumed = replace(prev, effective_from=new.effective_to, rate_id=None)
                    conn.execute(rate_table.insert().values(**_values(resumed)))
        if same is not None:
            ends.append(same.effective_to)
            conn.execute(
                update(rate_table).where(rate_table.c.RateId == same.rate_id).values(**_values(new))
            )
        else:
            conn.execute(rate_table.insert().values(**_values(new)))
        RateBook(read_rates(conn))  # raises ConfigError if the result overlaps
        if reprice_rows:
            end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
            repriced += reprice(conn, model=new.model_name, start=new.effective_from, end=end)
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
    t = token_table.c
    cond = [t.UsageSource != "unbilled"]
    if model is not None:
        cond.append(t.ModelName == model)
    if start is not None:
        cond.append(t.ExecTimeUTC >= start)
    if end is not None:
        cond.append(t.ExecTimeUTC < end)
    stmt = (
        update(token_table)
        .where(t.Id == bindparam("b_id"))
        .values(Cost=bindparam("b_cost"), Currency=bindparam("b_cur"), RateId=bindparam("b_rate"))
    )
    query = (
        select(
            t.Id,
            t.ModelName,
            t.ExecTimeUTC,
            t.PromptTokens,
            t.CompletionTokens,
            t.TotalTokens,
            t.CachedTokens,
        )
        .where(and_(*cond))
        .order_by(t.Id)
    )
    changed = 0
    last_id = 0
    while True:
        rows = conn.execute(query.where(t.Id > last_id).limit(_REPRICE_CHUNK)).all()
        if not rows:
            return changed
        updates = []
        for r in rows:
            rate = book.lookup(r.ModelName or "", r.ExecTimeUTC)
            usage = Usage(r.PromptTokens, r.CompletionTokens, r.TotalTokens, r.CachedTokens)
            updates.append(
                {
                    "b_id": r.Id,
                    "b_cost": None if rate is None else cost_of(usage, rate),
                    "b_cur": None if rate is None else rate.currency,
                    "b_rate": None if rate is None else rate.rate_id,
                }
            )
        conn.execute(stmt, updates)
        changed += len(updates)
        last_id = rows[-1].Id


@dataclass(frozen=True, slots=True)
class BusinessUnit:
    """One APIM subscription's business unit (``BusinessUnitMap`` row)."""

    subscription_id: str
    business_unit: str
    subscription_name: str | None = None
    cost_centre: str | None = None
    monthly_budget: float | None = None


def read_bu_map(conn: Connection) -> list[BusinessUnit]:
    """All mapped subscriptions."""
    c = bu_map.c
    return [
        BusinessUnit(
            r.SubscriptionId, r.BusinessUnit, r.SubscriptionName, r.CostCentre, r.MonthlyBudget
        )
        for r in conn.execute(select(bu_map).order_by(c.BusinessUnit, c.SubscriptionId))
    ]


def set_bu(conn: Connection, units: Sequence[BusinessUnit]) -> int:
    """Insert or replace subscription → BU mappings; return how many were written."""
    for u in units:
        if not u.subscription_id.strip() or not u.business_unit.strip():
            raise ConfigError("a business unit mapping needs a subscription id and a business unit")
    ids = [u.subscription_id for u in units]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError("subscription listed more than once: " + ", ".join(twice))
    if ids:
        conn.execute(delete(bu_map).where(or_(bu_map.c.SubscriptionId.in_(ids))))
        conn.execute(
            bu_map.insert(),
            [
                {
                    "SubscriptionId": u.subscription_id,
                    "SubscriptionName": u.subscription_name,
                    "BusinessUnit": u.business_unit,
                    "CostCentre": u.cost_centre,
                    "MonthlyBudget": u.monthly_budget,
                }
                for u in units
            ],
        )
    return len(ids)


def import_bu_csv(text: str) -> list[BusinessUnit]:
    """Parse ``subscription_id,business_unit[,subscription_name,cost_centre,monthly_budget]`` CSV."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    fields = {f.strip() for f in reader.fieldnames or []}
    if not {"subscription_id", "business_unit"} <= fields:
        raise ConfigError(
            "BU CSV needs a header with subscription_id,business_unit (optional: subscription_name,cost_centre,monthly_budget)"
        )
    units = []
    for row in reader:
        line = reader.line_num
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        budget = row.get("monthly_budget") or ""
        try:
            budget_value = float(budget) if budget else None
        except ValueError:
            raise ConfigError(
                f"BU CSV line {line}: monthly_budget is not a number: {budget!r}"
            ) from None
        if not row.get("subscription_id") or not row.get("business_unit"):
            raise ConfigError(f"BU CSV line {line}: subscription_id and business_unit are required")
        units.append(
            BusinessUnit(
                row["subscription_id"],
                row["business_unit"],
                row.get("subscription_name") or None,
                row.get("cost_centre") or None,
                budget_value,
            )
        )
    return units
