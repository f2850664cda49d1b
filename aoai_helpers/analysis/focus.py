"""A month's chargeback as a FOCUS 1.4 Cost and Usage dataset (CSV), for FinOps tooling.

:func:`write_focus` writes the month's priced usage in the FinOps Open Cost and Usage
Specification (FOCUS 1.4, ratified 2026-06-04, https://focus.finops.org/focus-specification/v1-4/),
so the chargeback can sit next to the rest of the cloud bill in FinOps hubs and the FinOps
toolkit's Power BI reports (their data model is FOCUS:
https://learn.microsoft.com/cloud-computing/finops/toolkit/hubs/data-model). Columns, values
and text: :mod:`aoai_helpers.analysis.focus_columns`.

Grain: one row per UTC day x APIM subscription (→ business unit) x model x deployment x
usage source x token kind (input, cached input, output), each kind with its own unit price
from the rate table (``AoaiTokenRate``). The groups come from the daily rollup
(``AoaiUsageDaily``) with the business unit and cost centre applied exactly as the chargeback
reports apply them (:func:`aoai_helpers.analysis.report.chargeback_by_bu`), so the file's
BilledCost adds up to the report's cost.

Prices and exactness: a group's rows are priced at the rate in effect on its day (the rollup
keeps no rate id), in exact decimals (:mod:`aoai_helpers.core.money`); the sum is checked
against the group's stored cost (relative difference below 1e-9: float sums). Where a rate
starts or ends inside the day, or the check fails, that day and model are read again from the
call table split by ``RateId``; if they still do not match, :class:`ConfigError` names the day
and model (the stored costs were priced with rates no longer in the table: ``rates reprice``).

Unpriced usage (``Cost`` NULL: no rate) is **left out**, never written with a cost of 0:
BilledCost, EffectiveCost, ListCost and ContractedCost "MUST NOT be null", and Null Handling
forbids a placeholder 0 for an absent value — there is no value FOCUS allows for an unknown
cost. The calls, tokens and models left out are in :class:`FocusResult`, for the caller to
print. Calls never billed (``UsageSource`` "unbilled": throttled or failed, cost 0 by rule)
are left out too and counted. A month with no calls, or none priced, is
:class:`~aoai_helpers.exceptions.InputError` and writes nothing.

The file is written to a temporary file beside the target and renamed into place
(:func:`aoai_helpers.analysis.export.atomic_write`).

Merging with Azure's own FOCUS export: this dataset is the internal chargeback of usage that
Azure also bills (to the organisation). Summing both double-counts the Azure OpenAI spend;
filter on ``InvoiceIssuerName`` (or ``x_UsageSource`` not null) to keep one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlparse

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.engine import Connection, Engine

from aoai_helpers.analysis.export import atomic_write
from aoai_helpers.analysis.focus_columns import (
    FOCUS_VERSION,
    ChargeContext,
    UsageGroup,
    charge_rows,
    csv_text,
    expected_cost,
)
from aoai_helpers.analysis.report import _month_view
from aoai_helpers.clock import month_bounds
from aoai_helpers.core.money import to_decimal
from aoai_helpers.core.pricing import Rate, RateBook
from aoai_helpers.db.engine import as_date, transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.tables import token_table
from aoai_helpers.exceptions import ConfigError, InputError

if TYPE_CHECKING:
    from aoai_helpers.spec import Spec

__all__ = ["FOCUS_VERSION", "FocusResult", "FocusSettings", "settings_from_spec", "write_focus"]

#: Relative difference below which a group's exact cost and its stored (float) cost agree.
TOLERANCE: Final = Decimal("1e-9")
_UNBILLED: Final = "unbilled"


@dataclass(frozen=True, slots=True)
class FocusSettings:
    """The names a FOCUS row needs that the calls do not carry.

    ``provider_name`` is ServiceProviderName (the gateway's operator, who bills the BUs) and,
    unless ``invoice_issuer_name`` is set, InvoiceIssuerName. ``resource_ids`` maps a
    deployment name (any case) to its ResourceId, e.g. the deployment's ARM id
    (:func:`settings_from_spec`); a deployment not in it is identified by its name.
    ``sub_account_prefix`` (the APIM service's ARM id) makes SubAccountId the APIM
    subscription's ARM id; None: the APIM subscription id as it is.
    """

    provider_name: str = "Azure OpenAI gateway (internal chargeback)"
    invoice_issuer_name: str | None = None
    host_provider_name: str = "Microsoft"
    service_name: str = "Azure OpenAI"
    resource_ids: Mapping[str, str] = field(default_factory=dict)
    sub_account_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class FocusResult:
    """What :func:`write_focus` wrote, and what it left out."""

    path: Path
    month: str
    focus_version: str
    rows: int
    calls: int  # priced calls written
    billed_cost: dict[str, Decimal]  # currency → sum of BilledCost (exact)
    unpriced_calls: int  # left out: no rate (Cost NULL)
    unpriced_tokens: int
    unpriced_models: tuple[str, ...]
    unbilled_calls: int  # left out: never billed (cost 0 by rule)

    def describe(self) -> str:
        """One line for the CLI: rows, cost per currency, and what was left out."""
        costs = ", ".join(f"{v:f} {c}" for c, v in sorted(self.billed_cost.items()))
        text = (
            f"FOCUS {self.focus_version} {self.month}: {self.rows} rows, {self.calls} calls, "
            f"BilledCost {costs} -> {self.path}"
        )
        if self.unpriced_calls:
            text += (
                f"; left out {self.unpriced_calls} unpriced calls ({self.unpriced_tokens} tokens;"
                f" no rate for {', '.join(self.unpriced_models)})"
            )
        if self.unbilled_calls:
            text += f"; {self.unbilled_calls} unbilled calls (cost 0) not listed"
        return text


def settings_from_spec(
    spec: Spec, *, aoai_resource_group: str | None = None, provider_name: str | None = None
) -> FocusSettings:
    """Settings from the gateway spec: SubAccountId as the APIM subscription's ARM id and,
    with the Azure OpenAI accounts' resource group, ResourceId as each deployment's ARM id.

    ARM ids: ``/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{apim}``
    (+ ``/subscriptions/{id}``) and ``…/providers/Microsoft.CognitiveServices/accounts/{account}/deployments/{deployment}``
    (https://learn.microsoft.com/azure/templates/microsoft.apimanagement/service/subscriptions,
    https://learn.microsoft.com/azure/templates/microsoft.cognitiveservices/accounts/deployments).
    The account name is taken from the backend endpoint's host (``https://{account}.openai.azure.com``,
    the account's custom subdomain): pass ``resource_ids`` yourself where they differ. Without
    ``spec.subscription_id`` no ARM id can be formed and names are used.
    """
    base = FocusSettings()
    if not spec.subscription_id:
        return base if provider_name is None else FocusSettings(provider_name=provider_name)
    arm = f"/subscriptions/{spec.subscription_id}/resourceGroups"
    apim = f"{arm}/{spec.apim.resource_group}/providers/Microsoft.ApiManagement/service/{spec.apim.service_name}"
    ids: dict[str, str] = {}
    if aoai_resource_group:
        for backend in spec.backends:
            account = (urlparse(backend.endpoint).hostname or backend.name).split(".")[0]
            for deployment in backend.deployments:
                ids[deployment.lower()] = (
                    f"{arm}/{aoai_resource_group}/providers/Microsoft.CognitiveServices"
                    f"/accounts/{account}/deployments/{deployment}"
                )
    return FocusSettings(
        provider_name=provider_name or base.provider_name,
        resource_ids=ids,
        sub_account_prefix=apim,
    )


# ----------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _LeftOut:
    unpriced_calls: int = 0
    unpriced_tokens: int = 0
    unpriced_models: set[str] = field(default_factory=set)
    unbilled_calls: int = 0


def _rollup_rows(conn: Connection, month: str) -> list[Any]:
    """The month's rollup groups with their BU (``bu``) and cost centre (``cc``)."""
    u = _month_view(month, None)
    return list(conn.execute(select(u)).all())


def _rate_changes_within(rates: Sequence[Rate], model: str, day: date) -> bool:
    """Whether a rate of ``model`` starts or ends strictly inside ``day``."""
    start = datetime.combine(day, datetime.min.time())
    end = start + timedelta(days=1)
    for r in rates:
        if r.model_name != model:
            continue
        for edge in (r.effective_from, r.effective_to):
            if edge is not None and start < edge < end:
                return True
    return False


def _matches(group: UsageGroup) -> bool:
    stored = to_decimal(group.cost)
    assert stored is not None
    exact = expected_cost(group)
    return abs(exact - stored) <= TOLERANCE * max(abs(stored), Decimal("0.001"))


def _group(row: Any, rate: Rate, sums: Mapping[str, Any]) -> UsageGroup:
    return UsageGroup(
        day=as_date(row.ExecDateUTC),
        business_unit=str(row.bu),
        cost_centre=row.cc,
        subscription_id=row.SubscriptionId,
        subscription_name=row.SubscriptionName,
        model=str(row.ModelName),
        deployment=row.DeploymentName,
        usage_source=str(row.UsageSource),
        currency=str(row.Currency),
        calls=int(sums["calls"]),
        prompt_tokens=int(sums["prompt"] or 0),
        cached_tokens=int(sums["cached"] or 0),
        completion_tokens=int(sums["completion"] or 0),
        cost=float(sums["cost"] or 0.0),
        rate=rate,
    )


def _by_rate_id(conn: Connection, day: date, model: str) -> dict[tuple[Any, ...], list[Any]]:
    """One day's calls of ``model`` from the call table, grouped by the rollup key and RateId."""
    t = token_table.c
    start = datetime.combine(day, datetime.min.time())
    keys = (t.SubscriptionId, t.SubscriptionName, t.DeploymentName, t.UsageSource, t.Currency)
    stmt = (
        select(
            *keys,
            t.RateId,
            func.count().label("calls"),
            func.sum(cast(t.PromptTokens, BigInteger)).label("prompt"),
            func.sum(cast(t.CachedTokens, BigInteger)).label("cached"),
            func.sum(cast(t.CompletionTokens, BigInteger)).label("completion"),
            func.sum(t.Cost).label("cost"),
        )
        .where(t.ExecDateUTC >= start, t.ExecDateUTC < start + timedelta(days=1))
        .where(t.ModelName == model, t.Cost.is_not(None), t.Currency.is_not(None))
        .group_by(*keys, t.RateId)
    )
    out: dict[tuple[Any, ...], list[Any]] = {}
    for r in conn.execute(stmt):
        key = tuple(v or None for v in r[:5])
        out.setdefault(key, []).append(r)
    return out


def _key(row: Any) -> tuple[Any, ...]:
    return (
        row.SubscriptionId,
        row.SubscriptionName,
        row.DeploymentName,
        row.UsageSource,
        row.Currency,
    )


def _split(
    conn: Connection, rows: list[Any], rates_by_id: Mapping[int, Rate], day: date, model: str
) -> list[UsageGroup]:
    """The rollup ``rows`` of one day and model, priced per stored RateId."""
    parts = _by_rate_id(conn, day, model)
    out = []
    for row in rows:
        found = parts.get(_key(row), [])
        if sum(int(p.calls) for p in found) != int(row.calls):
            raise ConfigError(
                f"the daily rollup of {model} on {day:%Y-%m-%d} does not match the calls: "
                "AoaiUsageDaily is out of step with ApimAoaiToken (written outside the pipeline?)"
            )
        for part in found:
            rate = rates_by_id.get(part.RateId) if part.RateId is not None else None
            group = None if rate is None else _group(row, rate, part._mapping)
            if (
                group is None
                or not _matches(group)
                or rate is None
                or rate.currency != row.Currency
            ):
                raise ConfigError(
                    f"the stored costs of {model} on {day:%Y-%m-%d} do not match the rates table "
                    "(rates edited without repricing?): run `rates reprice`, then export again"
                )
            out.append(group)
    return out


def _groups(conn: Connection, month: str, left: _LeftOut) -> tuple[list[UsageGroup], int]:
    """The month's priced groups (and the number of calls in the month)."""
    rates = read_rates(conn)
    book = RateBook(rates)
    rates_by_id = {r.rate_id: r for r in rates if r.rate_id is not None}
    by_day_model: dict[tuple[date, str], list[Any]] = {}
    total_calls = 0
    for row in _rollup_rows(conn, month):
        calls = int(row.calls)
        total_calls += calls
        if row.Currency is None:  # unpriced, or never billed
            if row.UsageSource == _UNBILLED:
                left.unbilled_calls += calls
            else:
                left.unpriced_calls += calls - int(row.priced)
                left.unpriced_tokens += int(row.total or 0)
                left.unpriced_models.add(str(row.ModelName or "unknown"))
                left.unbilled_calls += int(row.priced)
            continue
        by_day_model.setdefault((as_date(row.ExecDateUTC), str(row.ModelName)), []).append(row)
    out: list[UsageGroup] = []
    for (day, model), rows in by_day_model.items():
        rate = book.lookup(model, datetime.combine(day, datetime.min.time()))
        simple = rate is not None and not _rate_changes_within(rates, model, day)
        groups = [_group(r, rate, r._mapping) for r in rows] if simple and rate else []
        if simple and all(_matches(g) and g.currency == g.rate.currency for g in groups):
            out.extend(groups)
        else:
            out.extend(_split(conn, rows, rates_by_id, day, model))
    return out, total_calls


def _order(g: UsageGroup) -> tuple[Any, ...]:
    return (
        g.day,
        g.business_unit,
        g.subscription_id or "",
        g.model,
        g.deployment or "",
        g.usage_source,
        g.currency,
        g.rate.effective_from,
    )


# ----------------------------------------------------------------------------- writing


def write_focus(
    path: str | os.PathLike[str],
    engine: Engine,
    month: str,
    *,
    settings: FocusSettings | None = None,
) -> FocusResult:
    """Write ``month``'s chargeback as a FOCUS 1.4 Cost and Usage CSV at ``path`` (module
    docstring); return what was written and left out.

    Raises :class:`ConfigError` for a bad month or stored costs that do not match the rates,
    :class:`InputError` when the month has no calls or none priced (nothing is written).
    """
    s = settings or FocusSettings()
    start, end = month_bounds(month)
    month = month.strip()
    left = _LeftOut()
    with transaction(engine) as conn:
        groups, total_calls = _groups(conn, month, left)
    if total_calls == 0:
        raise InputError(f"no calls in {month}: no FOCUS file written")
    if not groups:
        raise InputError(
            f"none of the {total_calls} calls of {month} is priced (no rate for "
            f"{', '.join(sorted(left.unpriced_models)) or 'any model'}): no FOCUS file written"
        )
    ctx = ChargeContext(
        period_start=start,
        period_end=end,
        service_provider_name=s.provider_name,
        host_provider_name=s.host_provider_name,
        invoice_issuer_name=s.invoice_issuer_name or s.provider_name,
        service_name=s.service_name,
        resource_ids={k.lower(): v for k, v in s.resource_ids.items()},
        sub_account_prefix=s.sub_account_prefix,
    )
    rows = [row for g in sorted(groups, key=_order) for row in charge_rows(g, ctx)]
    target = atomic_write(path, csv_text(rows).encode("utf-8"))
    return FocusResult(
        path=target,
        month=month,
        focus_version=FOCUS_VERSION,
        rows=len(rows),
        calls=sum(g.calls for g in groups),
        billed_cost=_totals(rows),
        unpriced_calls=left.unpriced_calls,
        unpriced_tokens=left.unpriced_tokens,
        unpriced_models=tuple(sorted(left.unpriced_models)),
        unbilled_calls=left.unbilled_calls,
    )


def _totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for row in rows:
        currency = str(row["BillingCurrency"])
        out[currency] = out.get(currency, Decimal(0)) + row["BilledCost"]
    return out
