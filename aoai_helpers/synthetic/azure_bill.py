"""The demo's Azure bill: a cost-details export for its month, made from the calls it stored.

``make demo`` has no Azure invoice to import, so it writes one as Azure Cost Management would
for the Azure OpenAI resource behind the gateway — the EA actual-cost column set
(https://learn.microsoft.com/azure/cost-management-billing/dataset-schema/cost-usage-details-ea)
with one row per day and meter (model by input, cached input, output), the quantity in
thousands of tokens (``UnitOfMeasure`` ``1K``) and the cost at the month's rates — then imports
it with ``bill import``, so the report shows coverage and the invoice's split.

To show what coverage is for, the bill has a little more than the gateway saw: ``bypass``
adds a share of a model's tokens (a script calling the resource with its own key, past APIM),
and one line is not tokens at all (``Provisioned Managed Unit`` hours), which the split must
leave unattributed. A model the demo has no rate for is billed at ``extra_prices`` (Azure
bills it all the same: the invoice's split covers the calls the gateway could not price);
one with no price at all (``unknown``) is left out. Cached tokens of a model without a
cached-input rate are billed at its input price. The figures are generated: they are the
demo's, not Azure's.
"""

from __future__ import annotations

import csv
import io
import os
import zlib
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from aoai_helpers.clock import month_bounds
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import Rate
from aoai_helpers.db.engine import as_date, transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.tables import daily_table

__all__ = ["DEFAULT_BYPASS", "DEFAULT_EXTRA_PRICES", "HEADER", "write_demo_bill"]

#: Share of a model's tokens billed by Azure that never went through the gateway.
DEFAULT_BYPASS: Final[Mapping[str, Decimal]] = {"gpt-4.1": Decimal("0.10")}
#: Prices (per 1M input, output tokens) Azure bills for models the demo has no rate for.
DEFAULT_EXTRA_PRICES: Final[Mapping[str, tuple[Decimal, Decimal]]] = {
    "gpt-35-turbo": (Decimal("0.50"), Decimal("1.50"))
}
#: The provisioned hours the demo's bill carries (not attributable by tokens).
_PTU_HOURS: Final = Decimal(3)
_PTU_RATE: Final = Decimal("1.00")

#: The EA cost-details columns written (a subset of the documented set, in its order).
HEADER: Final = (
    "SubscriptionId", "SubscriptionName", "ResourceGroup", "ResourceLocation", "Date",
    "ProductName", "MeterCategory", "MeterSubCategory", "MeterId", "MeterName", "MeterRegion",
    "UnitOfMeasure", "Quantity", "EffectivePrice", "CostInBillingCurrency", "ConsumedService",
    "ResourceId", "ChargeType", "PricingModel", "BillingCurrencyCode", "BillingPeriodStartDate",
    "BillingPeriodEndDate",
)  # fmt: skip
_SUBSCRIPTION: Final = "00000000-0000-0000-0000-00000000de30"
_RESOURCE: Final = (
    f"/subscriptions/{_SUBSCRIPTION}/resourceGroups/rg-ai/providers/"
    "Microsoft.CognitiveServices/accounts/aoai-weu"
)
_SIDES: Final = (("input", "Inp"), ("cached_input", "cached Inp"), ("output", "Outp"))


def _meter(model: str, side: str) -> str:
    """The meter's name in the abbreviated style Azure uses (``gpt 4o mini Inp glbl Tokens``)."""
    return f"{model.replace('-', ' ')} {side} glbl Tokens"


def _rate_per_1k(rate: Rate, kind: str) -> Decimal:
    per_token = {
        "input": rate.prompt_rate,
        "cached_input": rate.prompt_rate
        if rate.cached_prompt_rate is None
        else rate.cached_prompt_rate,
        "output": rate.completion_rate,
    }[kind]
    return Decimal(repr(per_token)) * 1000


def _usage(engine: Engine, month: str) -> dict[tuple[date, str], tuple[int, int, int]]:
    """(day, model) → (input, cached input, output) tokens the gateway stored."""
    start, end = month_bounds(month)
    d = daily_table.c
    query = (
        select(
            d.ExecDateUTC,
            d.ModelName,
            func.sum(d.PromptTokens - d.CachedTokens),
            func.sum(d.CachedTokens),
            func.sum(d.CompletionTokens),
        )
        .where(d.ExecDateUTC >= start, d.ExecDateUTC < end)
        .group_by(d.ExecDateUTC, d.ModelName)
    )
    out: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    with transaction(engine) as conn:
        for day, model, inp, cached, completion in conn.execute(query):
            key = (as_date(day), normalize_model(model or None).name)
            for i, n in enumerate((inp, cached, completion)):
                out[key][i] += int(n or 0)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def _rates(engine: Engine, month: str) -> dict[str, Rate]:
    start, _ = month_bounds(month)
    with transaction(engine) as conn:
        return {r.model_name: r for r in read_rates(conn) if r.covers(start)}


def write_demo_bill(
    engine: Engine,
    month: str,
    path: str | os.PathLike[str],
    *,
    bypass: Mapping[str, Decimal] = DEFAULT_BYPASS,
    extra_prices: Mapping[str, tuple[Decimal, Decimal]] = DEFAULT_EXTRA_PRICES,
) -> Path:
    """Write the demo's cost-details CSV for ``month`` to ``path``; returns the path."""
    start, end = month_bounds(month)
    rates = _rates(engine, month)
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\r\n")
    out.writerow(HEADER)
    period = (f"{start:%m/%d/%Y}", f"{end - timedelta(days=1):%m/%d/%Y}")
    currency = "USD"

    def row(day: date, meter: str, unit: str, quantity: Decimal, price: Decimal) -> None:
        cost = (quantity * price).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)
        out.writerow(
            (_SUBSCRIPTION, "ai-prod", "rg-ai", "westeurope", f"{day:%m/%d/%Y}", "Azure OpenAI",
             "Cognitive Services", "Azure OpenAI", f"demo-{zlib.crc32(meter.encode()):08x}", meter,
             "West Europe", unit, f"{quantity:f}", f"{price:f}", f"{cost:f}",
             "Microsoft.CognitiveServices", _RESOURCE, "Usage", "OnDemand", currency, *period)
        )  # fmt: skip

    for (day, model), (inp, cached, output) in sorted(_usage(engine, month).items()):
        rate = rates.get(model)
        if rate is not None:
            currency = rate.currency
            prices = {k: _rate_per_1k(rate, k) for k, _ in _SIDES}
        elif model in extra_prices:
            per_1k = [p / 1000 for p in extra_prices[model]]
            prices = {"input": per_1k[0], "cached_input": per_1k[0], "output": per_1k[1]}
        else:
            continue
        extra = Decimal(1) + bypass.get(model, Decimal(0))
        for (kind, side), count in zip(_SIDES, (inp, cached, output), strict=True):
            billed = (Decimal(count) * extra).to_integral_value(rounding=ROUND_HALF_UP)
            if billed:
                row(day, _meter(model, side), "1K", billed / 1000, prices[kind])
    row(start.date(), "Provisioned Managed Unit", "1 Hour", _PTU_HOURS, _PTU_RATE)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return target
