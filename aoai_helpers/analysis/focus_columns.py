"""The FOCUS 1.4 Cost and Usage columns of the chargeback export, and their text. Pure: no I/O.

:mod:`aoai_helpers.analysis.focus` reads a month from the database into :class:`UsageGroup`
values (one day's calls of one APIM subscription, model, deployment, usage source and
currency, with the rate that priced them); this module turns each group into its FOCUS rows —
one per token kind, each priced on its own (:data:`TOKEN_KINDS`) — and the rows into CSV text.

Column choices, with the FOCUS 1.4 section each follows (https://focus.finops.org/focus-specification/v1-4/,
Cost and Usage dataset; the column files of github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec,
``specification/datasets/cost_and_usage``):

* the dataset is the *internal chargeback*: the gateway's operator is the service provider
  (``ServiceProviderName``) and the invoice issuer (``InvoiceIssuerName``) of the charges it
  bills to business units; Azure hosts the service (``HostProviderName`` "Microsoft": "the
  entity that provides the underlying infrastructure"). BilledCost: "Entities that are not
  responsible or authorized for invoicing this charge MUST NOT generate charges with non-zero
  BilledCost" — the chargeback *is* invoiced by its issuer, so BilledCost is its cost;
* billing account = the business unit (what a statement is issued to), sub account = the APIM
  subscription (the key a BU's calls come through): ``BillingAccountId/Name``,
  ``SubAccountId/Name``; ``Tags`` carries ``BusinessUnit`` and ``CostCentre`` (one user-defined
  tag scheme, so no prefix: Tags "User-defined tag keys MUST NOT include a tag scheme-specific
  prefix when the data generator has only one user-defined tag scheme");
* a charge is ``ChargeCategory`` "Usage", ``ChargeClass`` null (not a correction to a closed
  period), ``ChargeFrequency`` "Usage-Based", one UTC day (``ChargePeriodStart`` inclusive,
  ``ChargePeriodEnd`` exclusive) in the month (``BillingPeriodStart/End``);
* quantities: ``ConsumedQuantity`` tokens in ``ConsumedUnit`` "Tokens"; ``PricingQuantity`` in
  ``PricingUnit`` "1000000 Tokens" (Unit Format: ``<unit-quantity> <plural-units>``, the form of
  the spec's AI prompt-caching examples); input rows hold the uncached prompt tokens only, the
  cached ones are their own row, as Azure bills them;
* prices: the rate table is the only price list there is (the price BUs are charged), so
  ``ListUnitPrice`` = ``ContractedUnitPrice`` = the rate per 1M tokens ("ContractedUnitPrice
  MUST equal ListUnitPrice when no negotiated pricing terms apply"), and ``ListCost`` =
  ``ContractedCost`` = ``BilledCost`` = ``EffectiveCost`` = unit price x PricingQuantity, in exact
  decimals ("Cost metric ... MUST equal the product of the corresponding unit price ... and
  PricingQuantity"; EffectiveCost "MUST match the BilledCost" when nothing covers the charge);
* SKU: ``SkuId`` = ``SkuPriceId`` = ``<model>-<kind>`` (stable over time, no price or date in
  it: SkuPriceId "MUST remain consistent over time"), ``SkuMeter`` names the token kind,
  ``SkuPriceDetails`` null ("MAY be null when SkuPriceId is not null");
* ``ServiceCategory`` "AI and Machine Learning", ``ServiceSubcategory`` "Generative AI";
* the resource is the model deployment (``ResourceId``: its ARM id when known, else the
  deployment name, unique within the gateway; ``ResourceType`` "Azure OpenAI Deployment");
* custom columns carry the ``x_`` prefix (Custom Column Handling) and follow every FOCUS column.

Region and availability-zone columns are left out (conditional on the operating model
including regions, and the gateway does not know where a deployment runs), as are the
commitment, capacity-reservation, invoice-id and split-allocation columns (none apply).

Text (:func:`csv_text`): RFC 4180 (CRLF after every record, a field with a comma, quote, CR or
LF quoted, quotes doubled), UTF-8; NULL is an empty field (Null Handling: no placeholder
strings); decimals in plain notation, never an exponent (Numeric Format: "MUST NOT be expressed
with ... exponent values"); date/times ``YYYY-MM-DDTHH:mm:ssZ`` (Date/Time Format); JSON
objects compact with sorted keys. Values are written as they are (no formula prefix): a FOCUS
file is read by FinOps tools, and Tags values "MUST match the provided values".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Context, Decimal
from typing import Any, Final

from aoai_helpers.analysis.report import ESTIMATED_SOURCES
from aoai_helpers.core.money import to_decimal
from aoai_helpers.core.pricing import Rate

__all__ = [
    "COLUMNS",
    "CUSTOM_COLUMNS",
    "FOCUS_COLUMNS",
    "FOCUS_VERSION",
    "PRICING_UNIT",
    "TOKEN_KINDS",
    "ChargeContext",
    "UsageGroup",
    "charge_rows",
    "csv_text",
    "expected_cost",
]

#: The FOCUS release the columns follow (ratified 2026-06-04).
FOCUS_VERSION: Final = "1.4"
#: Tokens per pricing unit, and the unit's name.
_PER_UNIT: Final = 1_000_000
PRICING_UNIT: Final = "1000000 Tokens"

#: FOCUS columns written, in the spec's (alphabetical) order.
FOCUS_COLUMNS: Final[tuple[str, ...]] = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "HostProviderName",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingQuantity",
    "PricingUnit",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceProviderName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)
#: The project's own columns (``x_``), after the FOCUS ones.
CUSTOM_COLUMNS: Final[tuple[str, ...]] = (
    "x_BusinessUnit",
    "x_CostCentre",
    "x_ApimSubscriptionId",
    "x_DeploymentName",
    "x_ModelName",
    "x_TokenKind",
    "x_UsageSource",
    "x_Provisional",
)
COLUMNS: Final[tuple[str, ...]] = FOCUS_COLUMNS + CUSTOM_COLUMNS


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str  # x_TokenKind
    meter: str  # SkuMeter
    label: str  # in ChargeDescription


#: The token kinds, each its own row and price: uncached input, cached input, output
#: (reasoning tokens are output tokens, billed as such).
TOKEN_KINDS: Final[tuple[_Kind, ...]] = (
    _Kind("input", "Input Tokens", "input"),
    _Kind("cached_input", "Cached Input Tokens", "cached input"),
    _Kind("output", "Output Tokens", "output"),
)


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """One day's priced calls of one APIM subscription, model, deployment, usage source and
    currency, and the rate that priced them; ``cost`` is their stored cost (a float sum)."""

    day: date
    business_unit: str
    cost_centre: str | None
    subscription_id: str | None
    subscription_name: str | None
    model: str
    deployment: str | None
    usage_source: str
    currency: str
    calls: int
    prompt_tokens: int  # cached tokens included, as the API reports them
    cached_tokens: int
    completion_tokens: int
    cost: float
    rate: Rate

    def quantities(self) -> dict[str, tuple[int, Decimal]]:
        """Token kind → (tokens, price per token), by :func:`aoai_helpers.core.pricing.cost_of`'s rule."""
        cached = min(self.cached_tokens, self.prompt_tokens)
        r = self.rate
        cached_rate = r.prompt_rate if r.cached_prompt_rate is None else r.cached_prompt_rate
        return {
            "input": (self.prompt_tokens - cached, _per_token(r.prompt_rate)),
            "cached_input": (cached, _per_token(cached_rate)),
            "output": (self.completion_tokens, _per_token(r.completion_rate)),
        }


@dataclass(frozen=True, slots=True)
class ChargeContext:
    """The month and the names that do not come from the calls (see :class:`~aoai_helpers.analysis.focus.FocusSettings`)."""

    period_start: datetime
    period_end: datetime
    service_provider_name: str
    host_provider_name: str
    invoice_issuer_name: str
    service_name: str
    resource_ids: Mapping[str, str]  # lower-case deployment name → ResourceId
    sub_account_prefix: str | None  # SubAccountId = prefix + "/subscriptions/" + APIM id


#: Significant digits a per-token rate is read back to (see :func:`_per_token`).
_RATE_DIGITS: Final = Context(prec=12)


def _per_token(value: float) -> Decimal:
    """A per-token rate as the decimal it was entered as: the rate table stores doubles, and a
    price entered per 1M tokens comes back with noise (0.40 / 1M is ``4.0000000000000003e-07``);
    12 significant digits keep every price the rates CSV can express (6 decimals per 1M) and
    drop the noise (~1e-16 relative, far inside the cost check's 1e-9)."""
    out = to_decimal(value)
    assert out is not None
    return _RATE_DIGITS.create_decimal(out).normalize(_RATE_DIGITS)


def expected_cost(group: UsageGroup) -> Decimal:
    """The exact cost of ``group`` at its rate: the sum of its rows' BilledCost."""
    return sum(
        (Decimal(tokens) * price for tokens, price in group.quantities().values()), Decimal(0)
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min)


def _resource_id(group: UsageGroup, ctx: ChargeContext) -> str | None:
    """The deployment's ARM id when known, else its name (None without a deployment)."""
    deployment = group.deployment
    if deployment is None:
        return None
    return ctx.resource_ids.get(deployment.lower(), deployment)


def _sub_account(group: UsageGroup, ctx: ChargeContext) -> str | None:
    """SubAccountId: the APIM subscription id, under ``ctx.sub_account_prefix`` when set."""
    sub_id = group.subscription_id
    if sub_id is None:
        return None
    return f"{ctx.sub_account_prefix}/subscriptions/{sub_id}" if ctx.sub_account_prefix else sub_id


def _tags(group: UsageGroup) -> dict[str, str]:
    """The Tags column: the business unit and, when known, its cost centre."""
    tags = {"BusinessUnit": group.business_unit}
    if group.cost_centre is not None:
        tags["CostCentre"] = group.cost_centre
    return tags


def _group_columns(group: UsageGroup, ctx: ChargeContext) -> dict[str, Any]:
    """The columns that are the same on every row of ``group`` (all but the kind's own)."""
    deployment = group.deployment
    sub_account = _sub_account(group, ctx)
    provisional = group.usage_source in ESTIMATED_SOURCES
    return {
        "BillingAccountId": group.business_unit,
        "BillingAccountName": group.business_unit,
        "BillingCurrency": group.currency,
        "BillingPeriodEnd": ctx.period_end,
        "BillingPeriodStart": ctx.period_start,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": _midnight(group.day) + timedelta(days=1),
        "ChargePeriodStart": _midnight(group.day),
        "ConsumedUnit": "Tokens",
        "HostProviderName": ctx.host_provider_name,
        "InvoiceIssuerName": ctx.invoice_issuer_name,
        "PricingUnit": PRICING_UNIT,
        "ResourceId": _resource_id(group, ctx),
        "ResourceName": deployment,
        "ResourceType": "Azure OpenAI Deployment" if deployment else None,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": ctx.service_name,
        "ServiceProviderName": ctx.service_provider_name,
        "ServiceSubcategory": "Generative AI",
        "SkuPriceDetails": None,
        "SubAccountId": sub_account,
        "SubAccountName": group.subscription_name if sub_account else None,
        "Tags": _tags(group),
        "x_BusinessUnit": group.business_unit,
        "x_CostCentre": group.cost_centre,
        "x_ApimSubscriptionId": group.subscription_id,
        "x_DeploymentName": deployment,
        "x_ModelName": group.model,
        "x_UsageSource": group.usage_source,
        "x_Provisional": "true" if provisional else "false",
    }


def _kind_columns(
    group: UsageGroup, kind: _Kind, tokens: int, per_token: Decimal
) -> dict[str, Any]:
    """The columns of one token kind's row: its quantity, price, cost, SKU and description."""
    unit_price = per_token.scaleb(6)  # per 1M tokens (_PER_UNIT)
    quantity = Decimal(tokens).scaleb(-6)
    cost = unit_price * quantity
    sku = f"{group.model}-{kind.name.replace('_', '-')}"
    where = f" (deployment {group.deployment})" if group.deployment else ""
    provisional = group.usage_source in ESTIMATED_SOURCES
    note = "; provisional: tokens estimated by the gateway" if provisional else ""
    return {
        "BilledCost": cost,
        "ChargeDescription": f"{group.model} {kind.label} tokens{where}{note}",
        "ConsumedQuantity": Decimal(tokens),
        "ContractedCost": cost,
        "ContractedUnitPrice": unit_price,
        "EffectiveCost": cost,
        "ListCost": cost,
        "ListUnitPrice": unit_price,
        "PricingQuantity": quantity,
        "SkuId": sku,
        "SkuMeter": kind.meter,
        "SkuPriceId": sku,
        "x_TokenKind": kind.name,
    }


def charge_rows(group: UsageGroup, ctx: ChargeContext) -> list[dict[str, Any]]:
    """The FOCUS rows of ``group`` (column → value, in :data:`COLUMNS` order; None is NULL),
    one per token kind that has tokens."""
    quantities = group.quantities()
    shared = _group_columns(group, ctx)
    rows = []
    for kind in TOKEN_KINDS:
        tokens, per_token = quantities[kind.name]
        if tokens <= 0:
            continue
        merged = shared | _kind_columns(group, kind, tokens, per_token)
        assert len(merged) == len(COLUMNS) and set(merged) == set(COLUMNS)
        rows.append({column: merged[column] for column in COLUMNS})
    return rows


# ----------------------------------------------------------------------------- text

_WIDE: Final = Context(prec=60)
_QUOTE: Final = frozenset(',"\r\n')


def _cell(value: Any) -> str:
    """The text of one cell before quoting (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(_WIDE), "f")
        return "0" if text in ("-0", "0") else text
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if isinstance(value, str):
        return value
    raise TypeError(f"no FOCUS text for {type(value).__name__}")


def _field(text: str) -> str:
    if _QUOTE.intersection(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _record(values: Sequence[str]) -> str:
    return ",".join(_field(v) for v in values) + "\r\n"


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """The header and ``rows`` as RFC 4180 text (CRLF records)."""
    out = [_record(COLUMNS)]
    out.extend(_record([_cell(row[c]) for c in COLUMNS]) for row in rows)
    return "".join(out)
