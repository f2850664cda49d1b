"""FOCUS 1.4 Cost and Usage rules as data, written from the specification's text — not from the
writer (:mod:`aoai_helpers.analysis.focus`) — for ``tests/test_focus.py``.

Source: FOCUS Specification v1.4 (ratified 2026-06-04), https://focus.finops.org/focus-specification/v1-4/,
whose text lives in github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec under
``specification/datasets/cost_and_usage/`` (``dataset.md``: the column table and the column
presence requirements; ``columns/<column>.md``: each column's requirements) and
``specification/attributes/`` (the formats). Every rule names its section as
``"<Dataset or Attribute> > <Section>"`` and quotes the requirement it checks.

Cells are checked as the CSV gives them: text, the empty string standing for NULL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

SPEC_URL: Final = "https://focus.finops.org/focus-specification/v1-4/"

Row = Mapping[str, str]
DataType = Literal["Decimal", "String", "Date/Time", "JSON"]
Feature = Literal["Mandatory", "Conditional", "Recommended"]


@dataclass(frozen=True, slots=True)
class Column:
    """One row of the Cost and Usage column table (``dataset.md`` > Columns)."""

    name: str
    feature: Feature
    nullable: bool
    data_type: DataType
    allowed: frozenset[str] | None = None  # the column's "Allowed values" table
    section: str = ""


def _c(
    name: str,
    feature: Feature,
    nullable: bool,
    data_type: DataType,
    allowed: set[str] | None = None,
) -> Column:
    return Column(
        name,
        feature,
        nullable,
        data_type,
        None if allowed is None else frozenset(allowed),
        f"Cost and Usage > Columns > {name}",
    )


# "Charge Category > Allowed values"
CHARGE_CATEGORIES: Final = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
# "Charge Class > Allowed values": only "Correction" ("ChargeClass MUST be "Correction" when
# ChargeClass is not null")
CHARGE_CLASSES: Final = {"Correction"}
# "Charge Frequency > Allowed values"
CHARGE_FREQUENCIES: Final = {"One-Time", "Recurring", "Usage-Based"}
# "Service Category > Allowed values"
SERVICE_CATEGORIES: Final = {
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
}
# "Service Subcategory > Allowed values" (the AI and Machine Learning rows; any other value under
# that category is not allowed): subcategory -> its one parent category
SERVICE_SUBCATEGORY_PARENTS: Final = {
    "AI Platforms": "AI and Machine Learning",
    "Bots": "AI and Machine Learning",
    "Generative AI": "AI and Machine Learning",
    "Machine Learning": "AI and Machine Learning",
    "Natural Language Processing": "AI and Machine Learning",
    "Other (AI and Machine Learning)": "AI and Machine Learning",
    "API Management": "Integration",
}

#: The Cost and Usage column table (``dataset.md`` > Columns): feature level, nulls, data type.
#: Only the columns whose presence does not depend on features the chargeback lacks
#: (commitments, capacity reservations, split allocation, invoices, regions…) are listed with
#: their conditional level; the presence rules below say which must be there.
COLUMNS: Final[tuple[Column, ...]] = (
    _c("BilledCost", "Mandatory", False, "Decimal"),
    _c("BillingAccountId", "Mandatory", False, "String"),
    _c("BillingAccountName", "Mandatory", True, "String"),
    _c("BillingCurrency", "Mandatory", False, "String"),
    _c("BillingPeriodEnd", "Mandatory", False, "Date/Time"),
    _c("BillingPeriodStart", "Mandatory", False, "Date/Time"),
    _c("ChargeCategory", "Mandatory", False, "String", CHARGE_CATEGORIES),
    _c("ChargeClass", "Mandatory", True, "String", CHARGE_CLASSES),
    _c("ChargeDescription", "Mandatory", True, "String"),
    _c("ChargeFrequency", "Recommended", False, "String", CHARGE_FREQUENCIES),
    _c("ChargePeriodEnd", "Mandatory", False, "Date/Time"),
    _c("ChargePeriodStart", "Mandatory", False, "Date/Time"),
    _c("ConsumedQuantity", "Conditional", True, "Decimal"),
    _c("ConsumedUnit", "Conditional", True, "String"),
    _c("ContractedCost", "Mandatory", False, "Decimal"),
    _c("ContractedUnitPrice", "Conditional", True, "Decimal"),
    _c("EffectiveCost", "Mandatory", False, "Decimal"),
    _c("HostProviderName", "Mandatory", False, "String"),
    _c("InvoiceIssuerName", "Mandatory", False, "String"),
    _c("ListCost", "Mandatory", False, "Decimal"),
    _c("ListUnitPrice", "Conditional", True, "Decimal"),
    _c("PricingQuantity", "Mandatory", True, "Decimal"),
    _c("PricingUnit", "Mandatory", True, "String"),
    _c("ResourceId", "Conditional", True, "String"),
    _c("ResourceName", "Conditional", True, "String"),
    _c("ResourceType", "Conditional", True, "String"),
    _c("ServiceCategory", "Mandatory", False, "String", SERVICE_CATEGORIES),
    _c("ServiceName", "Mandatory", False, "String"),
    _c("ServiceProviderName", "Mandatory", False, "String"),
    _c("ServiceSubcategory", "Recommended", False, "String", set(SERVICE_SUBCATEGORY_PARENTS)),
    _c("SkuId", "Conditional", True, "String"),
    _c("SkuMeter", "Conditional", True, "String"),
    _c("SkuPriceDetails", "Conditional", True, "JSON"),
    _c("SkuPriceId", "Conditional", True, "String"),
    _c("SubAccountId", "Conditional", True, "String"),
    _c("SubAccountName", "Conditional", True, "String"),
    _c("Tags", "Conditional", True, "JSON"),
)
BY_NAME: Final = {c.name: c for c in COLUMNS}

#: ``dataset.md`` > Requirements > column presence: "CostAndUsage MUST include X" without a
#: condition (the Mandatory columns).
MANDATORY: Final = tuple(c.name for c in COLUMNS if c.feature == "Mandatory")

#: Presence required by the chargeback's operating model (``dataset.md`` > Requirements):
#: "MUST include ConsumedQuantity / ConsumedUnit when the operating model includes usage
#: measurement" (tokens are measured); "MUST include SkuId / SkuMeter / SkuPriceDetails /
#: SkuPriceId when the operating model includes unit pricing" (a rate per token);
#: "MUST include ListUnitPrice when ... includes list unit prices"; "MUST include Tags when ...
#: includes tags" (the BU map); "MUST include SubAccountId / SubAccountName when ... includes sub
#: accounts" (APIM subscriptions); "MUST include ResourceId / ResourceName when ... includes
#: provisioned resources" (model deployments).
REQUIRED_BY_OPERATING_MODEL: Final = (
    "ConsumedQuantity",
    "ConsumedUnit",
    "ListUnitPrice",
    "ResourceId",
    "ResourceName",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)

# ----------------------------------------------------------------------------- formats

# "Numeric Format": "Numeric values MUST NOT be expressed with mathematical symbols, operators, or
# exponent values", "MUST NOT contain commas or punctuation marks except for a single decimal
# point", "MUST NOT include a character to represent sign for a positive value"
DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
# "Date/Time Format": "MUST use the extended ISO 8601 format with UTC offset
# ('YYYY-MM-DDTHH:mm:ssZ')", "MUST end with the ISO 8601 UTC designator 'Z'"
DATETIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
# "Currency Format" / Billing Currency: an ISO 4217 alphabetic code ("MUST be expressed in
# national currency")
CURRENCY: Final = re.compile(r"[A-Z]{3}")
# "Unit Format": "<plural-units>" or "<unit-quantity> <plural-units>" with a positive integer
# quantity (e.g. "1000 Tokens"); count-based units capitalised ("Tokens", "Requests")
UNIT: Final = re.compile(r"([1-9][0-9]* )?[A-Z][A-Za-z]*(-[A-Z][A-Za-z]*)?(/[A-Z][A-Za-z]*)?")
# "FOCUS Column Handling": "MUST use Pascal case", "MUST use only alphanumeric characters"
FOCUS_COLUMN_ID: Final = re.compile(r"[A-Z][A-Za-z0-9]*")
# "Custom Column Handling": "MUST include the x_ prefix in the Column ID"
CUSTOM_COLUMN_ID: Final = re.compile(r"x_[A-Za-z0-9]+")


def is_json_object(text: str) -> bool:
    """ "Key-Value Format" / "JSON Object Format": a JSON object, keys strings, values scalars."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and all(
        isinstance(v, str | bool | int | float) or v is None for v in value.values()
    )


def type_ok(data_type: DataType, text: str) -> bool:
    """Whether a non-empty cell has the column's data type (the format attributes above)."""
    if data_type == "Decimal":
        return DECIMAL.fullmatch(text) is not None
    if data_type == "Date/Time":
        return DATETIME.fullmatch(text) is not None
    if data_type == "JSON":
        return is_json_object(text)
    return text == text.strip() and text != ""  # String Handling: no padding, no empty string


# ----------------------------------------------------------------------------- row rules


def _null(row: Row, name: str) -> bool:
    return row[name] == ""


def _d(row: Row, name: str) -> Decimal:
    return Decimal(row[name])


def _usage_not_correction(row: Row) -> bool:
    return row["ChargeCategory"] in {"Usage", "Purchase"} and row["ChargeClass"] != "Correction"


@dataclass(frozen=True, slots=True)
class RowRule:
    """A requirement every row must meet: ``holds(row)``."""

    rule_id: str
    section: str
    requirement: str
    holds: Callable[[Row], bool]


ROW_RULES: Final[tuple[RowRule, ...]] = (
    RowRule(
        "ListCost-product",
        "Cost and Usage > List Cost",
        "ListCost MUST equal the product of ListUnitPrice and PricingQuantity when ListUnitPrice "
        "is not null and PricingQuantity is not null.",
        lambda r: (
            _null(r, "ListUnitPrice")
            or _null(r, "PricingQuantity")
            or _d(r, "ListCost") == _d(r, "ListUnitPrice") * _d(r, "PricingQuantity")
        ),
    ),
    RowRule(
        "ContractedCost-product",
        "Cost and Usage > Contracted Cost",
        "ContractedCost MUST equal the product of ContractedUnitPrice and PricingQuantity when "
        "ContractedUnitPrice is not null and PricingQuantity is not null.",
        lambda r: (
            _null(r, "ContractedUnitPrice")
            or _null(r, "PricingQuantity")
            or _d(r, "ContractedCost") == _d(r, "ContractedUnitPrice") * _d(r, "PricingQuantity")
        ),
    ),
    RowRule(
        "ConsumedQuantity-usage",
        "Cost and Usage > Consumed Quantity",
        'When ChargeCategory is "Usage" ... ConsumedQuantity MUST NOT be null when ChargeClass is '
        'not "Correction".',
        lambda r: (
            r["ChargeCategory"] != "Usage"
            or r["ChargeClass"] == "Correction"
            or not _null(r, "ConsumedQuantity")
        ),
    ),
    RowRule(
        "ConsumedQuantity-not-usage",
        "Cost and Usage > Consumed Quantity",
        'ConsumedQuantity MUST be null when ChargeCategory is not "Usage".',
        lambda r: r["ChargeCategory"] == "Usage" or _null(r, "ConsumedQuantity"),
    ),
    RowRule(
        "ConsumedUnit-null",
        "Cost and Usage > Consumed Unit",
        "ConsumedUnit MUST be null when ConsumedQuantity is null. ConsumedUnit MUST NOT be null "
        "when ConsumedQuantity is not null.",
        lambda r: _null(r, "ConsumedUnit") == _null(r, "ConsumedQuantity"),
    ),
    RowRule(
        "PricingUnit-null",
        "Cost and Usage > Pricing Unit",
        "PricingUnit MUST be null when PricingQuantity is null. PricingUnit MUST NOT be null "
        "when PricingQuantity is not null.",
        lambda r: _null(r, "PricingUnit") == _null(r, "PricingQuantity"),
    ),
    RowRule(
        "priced-columns-usage",
        "Cost and Usage > Pricing Quantity, List Unit Price, Contracted Unit Price, SKU ID, SKU Price ID",
        'X MUST NOT be null when ChargeCategory is "Usage" or "Purchase" and ChargeClass is not '
        '"Correction" (X: PricingQuantity, ListUnitPrice, ContractedUnitPrice, SkuId, SkuPriceId).',
        lambda r: (
            not _usage_not_correction(r)
            or not any(
                _null(r, c)
                for c in (
                    "PricingQuantity",
                    "ListUnitPrice",
                    "ContractedUnitPrice",
                    "SkuId",
                    "SkuPriceId",
                )
            )
        ),
    ),
    RowRule(
        "null-without-SkuPriceId",
        "Cost and Usage > List Unit Price, Contracted Unit Price, Pricing Quantity, SKU Price Details",
        "X MUST be null when SkuPriceId is null (X: ListUnitPrice, ContractedUnitPrice, "
        "PricingQuantity, ConsumedQuantity, SkuPriceDetails).",
        lambda r: (
            not _null(r, "SkuPriceId")
            or all(
                _null(r, c)
                for c in (
                    "ListUnitPrice",
                    "ContractedUnitPrice",
                    "PricingQuantity",
                    "ConsumedQuantity",
                    "SkuPriceDetails",
                )
            )
        ),
    ),
    RowRule(
        "unit-prices-non-negative",
        "Cost and Usage > List Unit Price, Contracted Unit Price",
        "When not null, ListUnitPrice / ContractedUnitPrice MUST be a non-negative decimal value.",
        lambda r: all(
            _null(r, c) or _d(r, c) >= 0 for c in ("ListUnitPrice", "ContractedUnitPrice")
        ),
    ),
    RowRule(
        "ChargeClass-value",
        "Cost and Usage > Charge Class",
        'ChargeClass MUST be "Correction" when ChargeClass is not null.',
        lambda r: _null(r, "ChargeClass") or r["ChargeClass"] == "Correction",
    ),
    RowRule(
        "ServiceSubcategory-parent",
        "Cost and Usage > Service Subcategory",
        "ServiceSubcategory MUST have one and only one parent ServiceCategory as specified in "
        "the allowed values.",
        lambda r: SERVICE_SUBCATEGORY_PARENTS.get(r["ServiceSubcategory"]) == r["ServiceCategory"],
    ),
    RowRule(
        "charge-period-order",
        "Cost and Usage > Charge Period Start / Charge Period End",
        "ChargePeriodStart is the inclusive start and ChargePeriodEnd the exclusive end of the "
        "charge period: the start is before the end.",
        lambda r: r["ChargePeriodStart"] < r["ChargePeriodEnd"],
    ),
    RowRule(
        "billing-period-order",
        "Cost and Usage > Billing Period Start / Billing Period End",
        "BillingPeriodStart is the inclusive start and BillingPeriodEnd the exclusive end of the "
        "billing period: the start is before the end.",
        lambda r: r["BillingPeriodStart"] < r["BillingPeriodEnd"],
    ),
    RowRule(
        "units-format",
        "Attributes > Unit Format",
        "PricingUnit / ConsumedUnit SHOULD conform to UnitFormat requirements.",
        lambda r: all(
            _null(r, c) or UNIT.fullmatch(r[c]) is not None for c in ("PricingUnit", "ConsumedUnit")
        ),
    ),
    RowRule(
        "currency-code",
        "Cost and Usage > Billing Currency",
        "BillingCurrency MUST conform to CurrencyFormat requirements (ISO 4217 national currency).",
        lambda r: CURRENCY.fullmatch(r["BillingCurrency"]) is not None,
    ),
    RowRule(
        "HostProviderName-not-null",
        "Cost and Usage > Host Provider Name",
        "HostProviderName MUST NOT be null.",
        lambda r: not _null(r, "HostProviderName"),
    ),
)

#: Rules that follow from the chargeback having no negotiated pricing terms and no commitments
#: (the rate table is the one price): still the spec's words.
NO_DISCOUNT_RULES: Final[tuple[RowRule, ...]] = (
    RowRule(
        "ContractedUnitPrice-is-list",
        "Cost and Usage > Contracted Unit Price",
        "ContractedUnitPrice MUST equal ListUnitPrice when no negotiated pricing terms apply to "
        "the charge.",
        lambda r: (
            _null(r, "ListUnitPrice") or _d(r, "ContractedUnitPrice") == _d(r, "ListUnitPrice")
        ),
    ),
    RowRule(
        "ContractedCost-is-list",
        "Cost and Usage > Contracted Cost",
        "ContractedCost MUST equal ListCost when no negotiated pricing terms apply to the charge.",
        lambda r: _d(r, "ContractedCost") == _d(r, "ListCost"),
    ),
    RowRule(
        "EffectiveCost-is-billed",
        "Cost and Usage > Effective Cost",
        "EffectiveCost MUST match the BilledCost in scenarios where this charge is not covering "
        "other eligible charges or is not covered by other eligible charges.",
        lambda r: _d(r, "EffectiveCost") == _d(r, "BilledCost"),
    ),
)
