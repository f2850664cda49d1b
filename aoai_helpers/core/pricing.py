"""Token rates with effective dates, and the cost of a call (pure: no I/O but reading CSV text).

A :class:`Rate` is a price per token for one model (the normalised name from
:func:`aoai_helpers.core.model_names.normalize_model`) valid from ``effective_from`` (inclusive) to
``effective_to`` (exclusive, ``None`` = open). :class:`RateBook` answers "which rate was in
effect for this model at this time"; a model with no rate is *unpriced* (``None``), never free.

Cost of a call::

    (prompt - cached) * prompt_rate + cached * cached_prompt_rate + completion * completion_rate

``cached_prompt_rate`` defaults to ``prompt_rate`` when a rate does not set it. Reasoning tokens
are part of the completion tokens and billed as output, as AOAI bills them.

The default rate set (``data/default_rates.csv``) is a snapshot of USD list prices, stamped with
its as-of date in every row's ``source``: edit it, or import your own agreement's prices.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from aoai_helpers.core.events import Usage
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "DEFAULT_RATES_AS_OF",
    "EPOCH",
    "Price",
    "Rate",
    "RateBook",
    "cost_of",
    "default_rates",
    "make_rate",
    "parse_rates_csv",
    "price_call",
    "rates_to_csv",
]

#: When the bundled default prices were read (Azure Retail Prices API, Global Standard).
DEFAULT_RATES_AS_OF: Final = "2026-10"
#: Effective-from of rates that are valid "since always".
EPOCH: Final = datetime(2000, 1, 1)
_PER_MILLION: Final = 1_000_000.0
CSV_COLUMNS: Final = (
    "model",
    "input_per_1m",
    "cached_input_per_1m",
    "output_per_1m",
    "currency",
    "effective_from",
    "effective_to",
    "source",
)


@dataclass(frozen=True, slots=True)
class Rate:
    """Price per token of one model over one period (``AoaiTokenRate`` row)."""

    model_name: str
    prompt_rate: float
    completion_rate: float
    cached_prompt_rate: float | None = None
    currency: str = "USD"
    effective_from: datetime = EPOCH
    effective_to: datetime | None = None
    source: str = ""
    rate_id: int | None = None

    def covers(self, at: datetime) -> bool:
        """True when this rate is in effect at ``at``."""
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)


def cost_of(usage: Usage, rate: Rate) -> float:
    """The cost of ``usage`` at ``rate``, in ``rate.currency``."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_rate = rate.prompt_rate if rate.cached_prompt_rate is None else rate.cached_prompt_rate
    return (
        (usage.prompt_tokens - cached) * rate.prompt_rate
        + cached * cached_rate
        + usage.completion_tokens * rate.completion_rate
    )


#: What :func:`price_call` returns: ``(Cost, Currency, RateId)`` of one stored row.
Price = tuple[float | None, str | None, int | None]
_FREE: Final[Price] = (0.0, None, None)
_UNPRICED: Final[Price] = (None, None, None)


def price_call(
    usage: Usage,
    source: str,
    rates: RateBook,
    model: str,
    at: datetime,
    *,
    hint: Rate | None = None,
) -> Price:
    """``(Cost, Currency, RateId)`` of one call — the only pricing rule of stored rows.

    ``source`` is the row's ``UsageSource``: an ``unbilled`` call (throttled, failed) costs 0;
    an ``unmetered`` one, and a call whose ``model`` (normalised name) has no rate in effect at
    ``at``, is unpriced (``Cost`` NULL), never 0. Otherwise the rate in effect at ``at`` prices
    ``usage`` (:func:`cost_of`). ``hint``, a rate the caller looked up before (for the same
    model), is used when it covers ``at`` — a cache for bulk callers, not a different price.
    Ingest, ``local generate``, repricing and reconciliation all price through here.
    """
    if source == "unbilled":
        return _FREE
    if source == "unmetered":
        return _UNPRICED
    rate = hint if hint is not None and hint.covers(at) else rates.lookup(model, at)
    if rate is None:
        return _UNPRICED
    return cost_of(usage, rate), rate.currency, rate.rate_id


class RateBook:
    """Rates indexed by model and time; ``lookup`` is O(log n) per call."""

    def __init__(self, rates: Iterable[Rate]) -> None:
        by_model: dict[str, list[Rate]] = {}
        for rate in rates:
            by_model.setdefault(rate.model_name, []).append(rate)
        self._starts: dict[str, list[datetime]] = {}
        self._rates: dict[str, list[Rate]] = {}
        for model, items in by_model.items():
            items.sort(key=lambda r: r.effective_from)
            for a, b in itertools.pairwise(items):
                if a.effective_to is None or a.effective_to > b.effective_from:
                    raise ConfigError(
                        f"overlapping rates for {model}: {a.effective_from:%Y-%m-%d} and "
                        f"{b.effective_from:%Y-%m-%d} (close the first with effective_to)"
                    )
            self._rates[model] = items
            self._starts[model] = [r.effective_from for r in items]

    def __len__(self) -> int:
        return sum(len(v) for v in self._rates.values())

    def models(self) -> list[str]:
        """Models that have at least one rate."""
        return sorted(self._rates)

    def lookup(self, model_name: str, at: datetime) -> Rate | None:
        """The rate in effect for ``model_name`` at ``at``, or ``None`` (unpriced)."""
        starts = self._starts.get(model_name)
        if starts is None:
            return None
        i = bisect.bisect_right(starts, at) - 1
        if i < 0:
            return None
        rate = self._rates[model_name][i]
        return rate if rate.covers(at) else None


def _number(text: str, column: str, line: int) -> float | None:
    text = text.strip()
    if not text or text in {"-", "\u2013"}:  # blank, or a dash for "no price"
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"rates line {line}: {column} is not a number: {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ConfigError(
            f"rates line {line}: {column} must be a non-negative number, not {text!r}"
        )
    return value


def _date(text: str, column: str, line: int) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"rates line {line}: {column} is not a date (YYYY-MM-DD): {text!r}"
        ) from None


def make_rate(
    model: str,
    prompt_rate: float,
    completion_rate: float,
    cached_prompt_rate: float | None = None,
    *,
    currency: str = "USD",
    effective_from: datetime | None = None,
    effective_to: datetime | None = None,
    source: str = "",
) -> Rate:
    """A validated :class:`Rate` (per-token prices; the model name is normalised).

    Raises :class:`ConfigError` for an empty model, a negative price, a currency that is not a
    3-letter code, or an end that is not after the start.
    """
    if not model.strip():
        raise ConfigError("model is empty")
    for name, value in (
        ("prompt", prompt_rate),
        ("completion", completion_rate),
        ("cached", cached_prompt_rate),
    ):
        if value is not None and not 0 <= value < float("inf"):
            raise ConfigError(f"the {name} price must be a non-negative number, not {value!r}")
    code = currency.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise ConfigError(f"currency must be a 3-letter code, not {code!r}")
    if effective_from and effective_to and effective_to <= effective_from:
        raise ConfigError("effective_to must be after effective_from")
    return Rate(
        model_name=normalize_model(model).name,
        prompt_rate=prompt_rate,
        completion_rate=completion_rate,
        cached_prompt_rate=cached_prompt_rate,
        currency=code,
        effective_from=effective_from or EPOCH,
        effective_to=effective_to,
        source=source.strip(),
    )


def parse_rates_csv(text: str, *, default_source: str = "") -> list[Rate]:
    """Parse rates from CSV text.

    Columns (header required): ``model, input_per_1m, cached_input_per_1m, output_per_1m,
    currency, effective_from, effective_to, source`` — prices per million tokens. The original
    per-token columns ``ModelName, PromptTokenRate, CompletionTokenRate`` (and
    ``CachedPromptTokenRate``) are accepted too. Model names are normalised
    (``gpt-4o-2024-11-20`` → ``gpt-4o``). Raises :class:`ConfigError` with the line number.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = {h.strip() for h in (reader.fieldnames or [])}
    per_token = {"ModelName", "PromptTokenRate", "CompletionTokenRate"} <= header
    per_million = {"model", "input_per_1m", "output_per_1m"} <= header
    if not (per_token or per_million):
        raise ConfigError(
            "rates CSV needs a header with model,input_per_1m,output_per_1m "
            "(or ModelName,PromptTokenRate,CompletionTokenRate); got: " + ", ".join(sorted(header))
        )
    columns = (
        ("model", "input_per_1m", "output_per_1m", "cached_input_per_1m", _PER_MILLION)
        if per_million
        else ("ModelName", "PromptTokenRate", "CompletionTokenRate", "CachedPromptTokenRate", 1.0)
    )
    rates: list[Rate] = []
    for row in reader:
        cells = {(k or "").strip(): (v or "") for k, v in row.items()}
        if any(v.strip() for v in cells.values()):
            rates.append(_rate_row(cells, columns, reader.line_num, default_source))
    return rates


def _rate_row(
    row: dict[str, str],
    columns: tuple[str, str, str, str, float],
    line: int,
    default_source: str,
) -> Rate:
    """One CSV line of :func:`parse_rates_csv` as a :class:`Rate` (errors name the line)."""
    model_col, prompt_col, completion_col, cached_col, scale = columns
    prompt = _number(row.get(prompt_col, ""), prompt_col, line)
    completion = _number(row.get(completion_col, ""), completion_col, line)
    cached = _number(row.get(cached_col, ""), cached_col, line)
    if prompt is None:
        raise ConfigError(f"rates line {line}: {prompt_col} is required")
    start = _date(
        row.get("effective_from") or row.get("EffectiveFrom") or "", "effective_from", line
    )
    end = _date(row.get("effective_to") or row.get("EffectiveTo") or "", "effective_to", line)
    try:
        return make_rate(
            row.get(model_col, ""),
            prompt / scale,
            (completion or 0.0) / scale,
            None if cached is None else cached / scale,
            currency=row.get("currency") or row.get("Currency") or "USD",
            effective_from=start,
            effective_to=end,
            source=row.get("source") or row.get("Source") or default_source,
        )
    except ConfigError as exc:
        raise ConfigError(f"rates line {line}: {exc}") from None


def rates_to_csv(rates: Sequence[Rate]) -> str:
    """CSV text (per-million prices) that :func:`parse_rates_csv` reads back unchanged."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in sorted(rates, key=lambda r: (r.model_name, r.effective_from)):
        writer.writerow(
            [
                r.model_name,
                _fmt(r.prompt_rate * _PER_MILLION),
                "" if r.cached_prompt_rate is None else _fmt(r.cached_prompt_rate * _PER_MILLION),
                _fmt(r.completion_rate * _PER_MILLION),
                r.currency,
                r.effective_from.date().isoformat(),
                "" if r.effective_to is None else r.effective_to.date().isoformat(),
                r.source,
            ]
        )
    return out.getvalue()


def _fmt(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def default_rates() -> list[Rate]:
    """The bundled default rate set (USD list prices as of :data:`DEFAULT_RATES_AS_OF`)."""
    text = (Path(__file__).resolve().parents[1] / "data" / "default_rates.csv").read_text("utf-8")
    return parse_rates_csv(text)
