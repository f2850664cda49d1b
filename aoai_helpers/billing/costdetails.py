"""Read an Azure Cost Management cost-details export (CSV), one row at a time. Pure apart from
reading the file.

Which files
-----------
One reader for the column sets Microsoft documents, found by header name (case, spaces,
``-`` and ``_`` ignored, so ``Meter Sub-Category`` = ``MeterSubCategory`` = ``meterSubCategory``):

* **EA cost details** (actual or amortized; Exports, the portal download and the Cost Details
  API share one schema): ``Date``, ``MeterCategory``, ``MeterSubCategory``, ``MeterId``,
  ``MeterName``, ``UnitOfMeasure``, ``Quantity``, ``CostInBillingCurrency``,
  ``BillingCurrencyCode``, ``SubscriptionId``, ``ResourceId``, ``ProductName``, ``ChargeType``
  — https://learn.microsoft.com/azure/cost-management-billing/dataset-schema/cost-usage-details-ea
* **MCA cost details**: the same in camel case (``date``, ``meterName``, ``quantity``,
  ``unitOfMeasure``, ``costInBillingCurrency``, ``billingCurrency``, ``chargeType`` …) —
  https://learn.microsoft.com/azure/cost-management-billing/dataset-schema/cost-usage-details-mca
* **Older usage details / EA usage files** (still what the Azure China (21Vianet) Enterprise
  portal's usage download gives, https://docs.azure.cn/en-us/billing/billing-understand-ea-usage-report):
  ``Date``, ``Meter Category``, ``Meter Sub-Category``, ``Meter ID``, ``Meter Name``,
  ``Consumed Quantity``, ``ResourceRate``, ``ExtendedCost``, ``Unit Of Measure``,
  ``Instance ID``, ``SubscriptionGuid`` and no currency column (the enrollment's currency:
  pass it) — the old → new names are those of
  https://learn.microsoft.com/azure/cost-management-billing/automate/understand-usage-details-fields
  ("List of terms from older APIs": ConsumedQuantity → Quantity, InstanceId → ResourceId,
  Unit → UnitOfMeasure, UsageDate → Date) and
  https://learn.microsoft.com/azure/cost-management-billing/automate/migrate-ea-usage-details-api
  (extendedCost → CostInBillingCurrency, serviceName → MeterCategory, serviceTier →
  MeterSubCategory, resourceGuid → MeterId).

Actual and amortized files have the same columns (the amortized one spreads reservation
purchases over the days that used them; ``ChargeType`` ``UnusedReservation`` /
``UnusedSavingsPlan`` only appears there — Ingest cost details data, "Pricing behavior",
https://learn.microsoft.com/azure/cost-management-billing/automate/automation-ingest-usage-details-overview),
so the caller says which one a file is, or :func:`detect_cost_type` guesses.

Azure OpenAI rows are those of ``MeterCategory`` "Cognitive Services" (the service filter of
cost analysis; "Service tier: Azure OpenAI" is the ``MeterSubCategory`` —
https://learn.microsoft.com/azure/ai-services/openai/how-to/manage-costs) or "Foundry Models"
(the service the Retail Prices API lists Azure OpenAI under now) whose sub-category or product
names OpenAI. Dates: ``MM/DD/YYYY`` (EA), ISO ``YYYY-MM-DD`` (MCA, with or without a time) and
``YYYYMMDD``. Amounts are exact :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Final, Literal

from aoai_helpers.exceptions import InputError

__all__ = [
    "AOAI_CATEGORIES",
    "COLUMNS",
    "CostRow",
    "CostType",
    "Layout",
    "detect_cost_type",
    "is_aoai",
    "open_cost_details",
    "parse_date",
    "parse_decimal",
]

CostType = Literal["actual", "amortized", "usage"]

#: Field → header names that hold it (normalised: lower case, no spaces, ``-`` or ``_``), the
#: documented name first. The first present wins.
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "date": ("date", "usagedate", "usagedatetime", "usagestart"),
    "meter_name": ("metername",),
    "meter_category": ("metercategory", "servicename"),
    "meter_subcategory": ("metersubcategory", "servicetier"),
    "meter_id": ("meterid", "resourceguid"),
    "quantity": ("quantity", "consumedquantity", "usagequantity"),
    "unit": ("unitofmeasure", "unit"),
    "cost": ("costinbillingcurrency", "cost", "pretaxcost", "extendedcost"),
    "currency": ("billingcurrency", "billingcurrencycode", "currency"),
    "subscription": ("subscriptionguid", "subscriptionid"),
    "resource_id": ("resourceid", "instanceid"),
    "product": ("productname", "product"),
    "charge_type": ("chargetype",),
}
_REQUIRED: Final = ("date", "meter_name", "meter_category", "quantity", "unit", "cost")
#: Documented spellings, for the error naming a missing column.
_SHOWN: Final = {
    "date": "Date",
    "meter_name": "MeterName",
    "meter_category": "MeterCategory",
    "quantity": "Quantity (or ConsumedQuantity)",
    "unit": "UnitOfMeasure",
    "cost": "CostInBillingCurrency (or Cost, ExtendedCost)",
}
#: ``MeterCategory`` values Azure OpenAI is billed under (normalised).
AOAI_CATEGORIES: Final = frozenset({"cognitiveservices", "foundrymodels", "azureopenai"})
_AMORTIZED_CHARGES: Final = frozenset({"unusedreservation", "unusedsavingsplan"})
#: Lines looked at for the header (the older EA downloads put report lines above it).
_HEADER_SEARCH: Final = 10


def _norm(name: str) -> str:
    return re.sub(r"[\s\-_]+", "", name.strip().lstrip("\ufeff")).lower()


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each field is in a file's rows (column index, or None when absent)."""

    index: dict[str, int | None]
    header_line: int

    @property
    def legacy(self) -> bool:
        """The older usage-details / EA usage columns (no billing currency column)."""
        return self.index["currency"] is None

    def get(self, row: list[str], key: str) -> str:
        i = self.index[key]
        return row[i].strip() if i is not None and i < len(row) else ""


def _layout(header: list[str], line: int) -> Layout:
    positions: dict[str, int] = {}
    for i, name in enumerate(header):
        positions.setdefault(_norm(name), i)
    index = {
        key: next((positions[n] for n in names if n in positions), None)
        for key, names in COLUMNS.items()
    }
    return Layout(index, line)


@dataclass(frozen=True, slots=True)
class CostRow:
    """One row of the file, as read (amounts exact)."""

    line: int
    usage_date: datetime
    meter_category: str
    meter_subcategory: str
    meter_id: str
    meter_name: str
    product: str
    quantity: Decimal
    unit: str
    cost: Decimal
    currency: str
    subscription_id: str
    resource_id: str
    charge_type: str


_ISO: Final = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ][\d:.]*(?:Z|[+-]\d{2}:?\d{2})?)?$")
_US: Final = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?: .*)?$")
_COMPACT: Final = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def parse_date(text: str) -> datetime:
    """The day of ``MM/DD/YYYY``, ``YYYY-MM-DD[Thh:mm:ss[Z]]`` or ``YYYYMMDD`` (UTC midnight);
    ValueError otherwise."""
    value = text.strip()
    if m := _ISO.match(value):
        y, mo, d = m.groups()
    elif m := _US.match(value):
        mo, d, y = m.groups()
    elif m := _COMPACT.match(value):
        y, mo, d = m.groups()
    else:
        raise ValueError(f"not a date in a documented format (MM/DD/YYYY or YYYY-MM-DD): {text!r}")
    return datetime(int(y), int(mo), int(d))


def parse_decimal(text: str) -> Decimal:
    """An exact amount (``1.5``, ``-0.25``, ``1E-05``); ValueError otherwise."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a number: {text!r}")
    return value


def is_aoai(category: str, subcategory: str, product: str) -> bool:
    """Whether a row bills Azure OpenAI (see the module docstring)."""
    if _norm(category) not in AOAI_CATEGORIES:
        return False
    return any("openai" in _norm(t) for t in (category, subcategory, product))


def detect_cost_type(layout: Layout, charge_types: set[str], file_name: str) -> CostType:
    """``usage`` for the older columns; ``amortized`` when a row is an unused reservation or
    savings plan, or the file is named so; else ``actual``."""
    if layout.legacy:
        return "usage"
    if {_norm(c) for c in charge_types} & _AMORTIZED_CHARGES or "amortized" in file_name.lower():
        return "amortized"
    return "actual"


class CostDetails:
    """An open cost-details file: its :class:`Layout` and its rows (:meth:`rows`)."""

    def __init__(self, handle: IO[str], name: str, default_currency: str | None) -> None:
        self._handle = handle
        self.name = name
        self._reader = csv.reader(handle)
        self.layout = self._find_header()
        if self.layout.legacy and not default_currency:
            raise InputError(
                f"{name} has no currency column (older EA / usage-details files do not): "
                "give the enrollment's currency, e.g. --currency CNY"
            )
        self._currency = (default_currency or "").strip().upper()
        self.rows_read = 0

    def _find_header(self) -> Layout:
        for line_no, row in enumerate(self._reader, start=1):
            if line_no > _HEADER_SEARCH:
                break
            if row and "metername" in {_norm(c) for c in row}:
                layout = _layout(row, line_no)
                missing = [_SHOWN[k] for k in _REQUIRED if layout.index[k] is None]
                if missing:
                    raise InputError(
                        f"{self.name} is not an Azure cost-details export: no column "
                        + ", ".join(missing)
                    )
                return layout
        raise InputError(
            f"{self.name} is not an Azure cost-details export: no header with a MeterName "
            f"column in its first {_HEADER_SEARCH} lines"
        )

    def rows(self) -> Iterator[CostRow]:
        """Every data row (blank lines skipped); InputError naming the line of a bad value."""
        lay = self.layout
        for row in self._reader:
            if not any(c.strip() for c in row):
                continue
            self.rows_read += 1
            line = self._reader.line_num
            try:
                yield self._row(lay, row, line)
            except ValueError as exc:
                raise InputError(f"{self.name} line {line}: {exc}") from None

    def _row(self, lay: Layout, row: list[str], line: int) -> CostRow:
        currency = lay.get(row, "currency").upper() or self._currency
        if not currency:
            raise ValueError("no currency")
        return CostRow(
            line=line,
            usage_date=parse_date(lay.get(row, "date")),
            meter_category=lay.get(row, "meter_category"),
            meter_subcategory=lay.get(row, "meter_subcategory"),
            meter_id=lay.get(row, "meter_id"),
            meter_name=lay.get(row, "meter_name"),
            product=lay.get(row, "product"),
            quantity=parse_decimal(lay.get(row, "quantity") or "0"),
            unit=lay.get(row, "unit"),
            cost=parse_decimal(lay.get(row, "cost")),
            currency=currency,
            subscription_id=lay.get(row, "subscription"),
            resource_id=lay.get(row, "resource_id").lower(),
            charge_type=lay.get(row, "charge_type"),
        )


def open_cost_details(
    path: Path, default_currency: str | None = None
) -> tuple[IO[str], CostDetails]:
    """The open file (close it) and its reader; InputError when it cannot be read as one."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return handle, CostDetails(handle, path.name, default_currency)
    except UnicodeDecodeError:
        handle.close()
        raise InputError(f"{path.name} is not UTF-8 text (an Azure CSV export is)") from None
    except BaseException:
        handle.close()
        raise
