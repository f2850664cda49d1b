"""Azure's own bill for the Azure OpenAI resources, beside what the gateway recorded.

* :mod:`~aoai_helpers.billing.costdetails` — read a Cost Management cost-details CSV (EA, MCA,
  older EA / Azure China usage files), streaming;
* :mod:`~aoai_helpers.billing.meters` — a meter name → model and token kind; units → tokens;
* :mod:`~aoai_helpers.billing.store` — ``bill import`` into ``AzureCostLine`` (a month
  re-imported replaces its lines), ``bill list``;
* :mod:`~aoai_helpers.billing.invoice` — coverage (billed vs recorded tokens per day and
  meter) and the invoice split across BUs, exact to the minor unit;
* :mod:`~aoai_helpers.billing.text` — the CLI's lines.
"""

from __future__ import annotations

from aoai_helpers.billing.invoice import (
    NOT_BY_TOKENS,
    UNATTRIBUTED,
    AllocationCell,
    Coverage,
    CoverageRow,
    InvoiceAllocation,
    InvoiceLine,
    allocate_invoice,
    coverage,
)
from aoai_helpers.billing.meters import MeterMap, MeterReading, read_meter, unit_tokens
from aoai_helpers.billing.store import BillImport, ImportSummary, import_cost_details, list_imports

__all__ = [
    "NOT_BY_TOKENS",
    "UNATTRIBUTED",
    "AllocationCell",
    "BillImport",
    "Coverage",
    "CoverageRow",
    "ImportSummary",
    "InvoiceAllocation",
    "InvoiceLine",
    "MeterMap",
    "MeterReading",
    "allocate_invoice",
    "coverage",
    "import_cost_details",
    "list_imports",
    "read_meter",
    "unit_tokens",
]
