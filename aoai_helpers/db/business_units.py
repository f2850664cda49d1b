"""The business-unit map in the database: which APIM subscription belongs to which BU.

``BusinessUnitMap`` rows (subscription → business unit, cost centre, monthly budget): read
them, replace some, or parse them from CSV (``bu import``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.engine import Connection

from aoai_helpers.db.tables import bu_map
from aoai_helpers.exceptions import ConfigError

__all__ = ["BusinessUnit", "import_bu_csv", "read_bu_map", "set_bu"]


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
