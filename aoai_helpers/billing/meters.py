"""Azure OpenAI meters → (model, token kind), and a unit of measure → tokens per unit. Pure.

Azure bills Azure OpenAI per meter: one meter per model, version, deployment type and side of
the call. Cost details carry its ``MeterName``; the Azure Retail Prices API
(https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices,
``serviceName`` "Foundry Models", earlier "Cognitive Services"; ``productName`` "Azure OpenAI",
"Azure OpenAI GPT5", "Azure OpenAI Reasoning" …) lists the same names. They are abbreviated and
not uniform, for example::

    gpt 4o 1120 Inp glbl Tokens          gpt 4o 1120 cached Inp glbl Tokens
    gpt 4o 0806 Outp glbl 1K Tokens      4o cchd Inp regnl 1M Tokens
    GPT 5 Mini cchd Inpt Glbl 1M Tokens  GPT 5 outpt Glbl 1M Tokens
    5.4 cd inp Gl 1M Tokens              o3 mini 0131 Batch Outp Data Zone Tokens
    Provisioned Managed Unit             (hours: not tokens)

:func:`read_meter` reads such a name: a token meter ends in ``Tokens``; the words before the
side (``Inp``/``Inpt``/``Input``/``Prompt`` = input, ``Outp``/``outpt``/``opt``/``Output``/
``Completion`` = output, a cache word ``cached``/``cchd``/``cd`` before it = cached input) name
the model, less the deployment type (``glbl``, ``Gl``, ``regnl``, ``DZone``, ``Data Zone`` …)
and billing variants (``Batch``, ``pp`` priority processing, ``ShortCo``). The model words are
joined with ``-`` (a leading version number gets ``gpt-``: ``4o`` → ``gpt-4o``, ``5.4`` →
``gpt-5.4``) and normalised by :func:`aoai_helpers.core.model_names.normalize_model`
(``gpt-4o-1120`` → ``gpt-4o``). A name without ``Tokens``, or one for training (``Training``,
``Hosting``), is *not a token meter*: its cost cannot be attributed by tokens.

A token meter this cannot read — no side, a model the normaliser does not know, audio or
image tokens the gateway does not count apart — is :class:`UnreadableMeter`; the importer
turns every one of them into one error naming them, to be mapped by hand with a
:class:`MeterMap` (``--meter "NAME=model:kind"`` or a CSV of MeterName, Model, TokenKind;
kind ``none`` marks a meter as not tokens).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "TOKEN_KINDS",
    "MeterMap",
    "MeterReading",
    "TokenKind",
    "UnreadableMeter",
    "meter_key",
    "read_meter",
    "unit_tokens",
]

TokenKind = Literal["input", "output", "cached_input"]
#: The token kinds a meter bills (the gateway's prompt - cached, cached, completion tokens).
TOKEN_KINDS: Final[tuple[TokenKind, ...]] = ("input", "cached_input", "output")

_INPUT: Final = frozenset({"inp", "inpt", "input", "prompt", "in"})
_OUTPUT: Final = frozenset({"outp", "outpt", "opt", "output", "out", "completion"})
_CACHE: Final = frozenset({"cached", "cchd", "cd", "cache"})
# deployment types and billing variants: not part of the model's name
_DROP: Final = frozenset(
    {"glbl", "global", "gl", "regnl", "rgnl", "regional", "reg", "dzone", "dz", "datazone",
     "data", "zone", "batch", "pp", "priority", "shortco", "longco", "ft", "1k", "1m", "tokens",
     "token", "tkns"}
)  # fmt: skip
# not inference tokens: their cost is not attributable by tokens
_NOT_INFERENCE: Final = frozenset({"training", "train", "hosting", "grader", "grading"})
# modalities the gateway's rollup does not count apart from text
_MODALITY: Final = frozenset({"aud", "audio", "img", "image", "images", "rt", "realtime", "txt"})


@dataclass(frozen=True, slots=True)
class MeterReading:
    """What a meter bills: ``model`` and ``kind``, both None for a meter that is not tokens."""

    model: str | None
    kind: TokenKind | None

    @property
    def is_tokens(self) -> bool:
        """Whether the meter bills tokens of a model."""
        return self.model is not None


@dataclass(frozen=True, slots=True)
class UnreadableMeter:
    """A token meter :func:`read_meter` cannot map, with why."""

    meter_name: str
    reason: str


_NOT_TOKENS: Final = MeterReading(None, None)


def meter_key(name: str) -> str:
    """The form meter names are compared in: lower case, single spaces."""
    return " ".join(name.lower().split())


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s\-_]+", name.strip().lower()) if w]


def read_meter(name: str) -> MeterReading | UnreadableMeter:
    """The model and token kind ``name`` bills (see the module docstring)."""
    words = _words(name)
    if not words or words[-1] not in ("tokens", "token", "tkns"):
        return _NOT_TOKENS
    if _NOT_INFERENCE & set(words):
        return _NOT_TOKENS
    if _MODALITY & set(words):
        return UnreadableMeter(
            name, "audio/image/realtime tokens are not counted apart by the gateway"
        )
    side = next((i for i, w in enumerate(words) if w in _INPUT | _OUTPUT | _CACHE), None)
    kind: TokenKind | None = None
    if side is not None:
        rest = set(words[side:])
        if rest & _OUTPUT:
            kind = "output"
        elif rest & _CACHE:
            kind = "cached_input"
        elif rest & _INPUT:
            kind = "input"
    model_words = [w for w in words[: len(words) if side is None else side] if w not in _DROP]
    if not model_words:
        return UnreadableMeter(name, "no model in the name")
    if model_words[0][0].isdigit():
        model_words.insert(0, "gpt")
    info = normalize_model("-".join(model_words))
    if not info.known:
        return UnreadableMeter(name, f"model {info.name!r} is not one the gateway knows")
    if kind is None:
        if "embedding" not in info.name:
            return UnreadableMeter(name, "no input/output word in the name")
        kind = "input"  # embeddings bill their input only
    return MeterReading(info.name, kind)


_UNIT: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([km])?\s*(?:tokens?)?$")


def unit_tokens(unit: str | None) -> int | None:
    """Tokens per unit of ``unit`` (``1K`` → 1000, ``1M`` → 1,000,000, ``1000`` → 1000,
    ``1K Tokens`` → 1000, ``Tokens`` → 1); None when it is not a count of tokens."""
    text = " ".join((unit or "").lower().split())
    if text in ("tokens", "token"):
        return 1
    m = _UNIT.match(text)
    if m is None:
        return None
    value = Decimal(m.group(1)) * {None: 1, "k": 1000, "m": 1_000_000}[m.group(2)]
    return int(value) if value == value.to_integral_value() and value > 0 else None


_KINDS_TEXT: Final = "input, output, cached_input or none"


@dataclass(slots=True)
class MeterMap:
    """Meters mapped by hand (``--meter`` / a meter-map CSV): they win over :func:`read_meter`."""

    entries: dict[str, MeterReading] = field(default_factory=dict)

    def add(self, meter_name: str, model: str, kind: str) -> None:
        """Map ``meter_name`` to ``model`` and ``kind`` (``none``: not tokens)."""
        kind = kind.strip().lower()
        if not meter_name.strip():
            raise ConfigError("a meter mapping needs a meter name")
        if kind == "none":
            self.entries[meter_key(meter_name)] = _NOT_TOKENS
            return
        if kind not in TOKEN_KINDS:
            raise ConfigError(
                f"token kind of meter {meter_name!r} must be {_KINDS_TEXT}, not {kind!r}"
            )
        if not model.strip():
            raise ConfigError(f"meter {meter_name!r} needs a model")
        name = normalize_model(model).name
        self.entries[meter_key(meter_name)] = MeterReading(name, kind)

    def add_option(self, text: str) -> None:
        """One ``--meter "NAME=model:kind"`` (or ``"NAME=none"``)."""
        name, sep, target = text.rpartition("=")
        if not sep:
            raise ConfigError(f'--meter must look like "METER NAME=model:kind", not {text!r}')
        model, _, kind = target.rpartition(":")
        if target.strip().lower() == "none":
            model, kind = "", "none"
        self.add(name, model, kind)

    def add_csv(self, text: str, source: str) -> None:
        """A meter-map CSV: columns ``MeterName``, ``Model``, ``TokenKind``."""
        reader = csv.DictReader(io.StringIO(text))
        need = {"metername", "model", "tokenkind"}
        header = {(h or "").strip().lower() for h in reader.fieldnames or []}
        if not need <= header:
            raise ConfigError(
                f"{source}: a meter map needs the columns MeterName, Model, TokenKind"
            )
        for row in reader:
            low = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
            self.add(low["metername"], low["model"], low["tokenkind"])

    def read(self, name: str) -> MeterReading | UnreadableMeter:
        """The hand mapping of ``name``, else :func:`read_meter`."""
        mapped = self.entries.get(meter_key(name))
        return mapped if mapped is not None else read_meter(name)
