"""Model-name normalisation: the name a response (or a request) reports → a pricing key.

Azure OpenAI reports models as ``gpt-4o-2024-11-20``, ``gpt-35-turbo-0125``, ``gpt-4``,
``text-embedding-3-large`` …; OpenAI-style clients send ``gpt-3.5-turbo`` or
``openai/gpt-4o``; callers sometimes only know a deployment name (``chat-prod``).
:func:`normalize_model` turns all of these into one canonical, lower-case *pricing key*
(``gpt-4o``, ``gpt-35-turbo``, ``gpt-4.1-mini``, ``o3-mini`` …) plus the tiktoken encoding
that model uses, and says whether the name was recognised.

Rules, in order:

1. lower-case, strip whitespace, drop provider prefixes (``azure/``, ``openai/`` — anything
   up to the last ``/``);
2. the OpenAI spelling ``gpt-3.5-turbo*`` becomes the Azure spelling ``gpt-35-turbo*``;
3. a few aliases are resolved first: the GPT-4 Turbo previews (``gpt-4-1106-preview``,
   ``gpt-4-0125-preview``, ``gpt-4-turbo-preview``, ``gpt-4-vision-preview``) are priced as
   ``gpt-4-turbo``, not as the three-times dearer ``gpt-4``;
4. date markers at the end are removed: ``-YYYY-MM-DD``, ``-MMDD`` and ``-MMDD-preview``
   (``-preview`` that is part of a model's name, as in ``o1-preview`` or
   ``gpt-4o-realtime-preview``, stays);
5. size and variant suffixes stay (``-mini``, ``-nano``, ``-16k``, ``-32k``, ``-instruct``).

A name that is not in :data:`KNOWN_MODELS` after cleaning is returned cleaned (steps 1-4, so
a future ``gpt-6-2026-01-01`` can still meet a ``gpt-6`` rate) and flagged ``known=False``. Its encoding is ``o200k_base`` unless the name plainly starts with a cl100k
family (``gpt-35-turbo…``, ``gpt-4-…``, ``text-embedding-ada/-3…``), e.g. a fine-tuned
``ft:gpt-35-turbo-0613:org::id``: then the family's encoding gives a better estimate.

This module is pure (no I/O) and cached: it runs once per event.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CL100K",
    "KNOWN_MODELS",
    "O200K",
    "UNKNOWN_MODEL",
    "ModelInfo",
    "is_reasoning_model",
    "normalize_model",
]

O200K: Final = "o200k_base"
CL100K: Final = "cl100k_base"
UNKNOWN_MODEL: Final = "unknown"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A normalised model: canonical pricing key, tiktoken encoding, and whether it is known.

    ``reasoning`` marks the reasoning families (o-series, GPT-5 but its ``-chat`` models,
    codex-mini): they bill hidden reasoning tokens no visible text shows.
    """

    name: str
    encoding: str
    known: bool

    @property
    def reasoning(self) -> bool:
        """Whether the model thinks in tokens nobody sees (:func:`is_reasoning_model`)."""
        return is_reasoning_model(self.name)


def is_reasoning_model(key: str) -> bool:
    """``o1``, ``o3-mini``, ``o4-mini``, ``gpt-5``, ``gpt-5.1-codex``, ``codex-mini`` …; not
    ``gpt-5-chat`` (GPT-5's non-reasoning chat model) nor the GPT-4o family."""
    if len(key) > 1 and key[0] == "o" and key[1].isdigit():
        return True
    if key.startswith("gpt-5"):
        return "-chat" not in key
    return key.startswith("codex-mini")


_O200K_MODELS: Final = (
    # GPT-4o family
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-realtime-preview",
    "gpt-4o-mini-realtime-preview",
    "gpt-4o-audio-preview",
    "gpt-4o-mini-audio-preview",
    "gpt-4o-search-preview",
    "gpt-4o-mini-search-preview",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-tts",
    # GPT-4.1 / 4.5
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4.5-preview",
    # GPT-5
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5-chat",
    "gpt-5-codex",
    "gpt-5-pro",
    # o-series and other o200k models
    "o1",
    "o1-mini",
    "o1-preview",
    "o1-pro",
    "o3",
    "o3-mini",
    "o3-pro",
    "o3-deep-research",
    "o4-mini",
    "o4-mini-deep-research",
    "codex-mini",
    "computer-use-preview",
    "gpt-realtime",
    "gpt-audio",
)

_CL100K_MODELS: Final = (
    "gpt-35-turbo",
    "gpt-35-turbo-16k",
    "gpt-35-turbo-instruct",
    "gpt-4",
    "gpt-4-32k",
    "gpt-4-turbo",
    "text-embedding-ada-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "babbage-002",
    "davinci-002",
)

#: Canonical pricing keys this module recognises → their tiktoken encoding.
KNOWN_MODELS: Final[dict[str, str]] = {
    **dict.fromkeys(_O200K_MODELS, O200K),
    **dict.fromkeys(_CL100K_MODELS, CL100K),
}

# Later GPT-5 point releases (gpt-5.1, gpt-5.2-chat, …) share the o200k encoding.
_GPT5_POINT = re.compile(r"^gpt-5\.\d+(?:-(?:mini|nano|chat|codex|codex-mini|codex-max|pro))?$")

_ALIASES: Final[dict[str, str]] = {
    "gpt-4-1106-preview": "gpt-4-turbo",
    "gpt-4-0125-preview": "gpt-4-turbo",
    "gpt-4-turbo-preview": "gpt-4-turbo",
    "gpt-4-vision-preview": "gpt-4-turbo",
    "gpt-4-1106-vision-preview": "gpt-4-turbo",
    "chatgpt-4o-latest": "gpt-4o",
    "gpt-5-chat-latest": "gpt-5-chat",
    # names the APIs reported in real responses: Azure embeddings (2023) said "ada", OpenAI
    # reports text-embedding-ada-002 as "-v2" and davinci-002 / babbage-002 by snapshot
    "ada": "text-embedding-ada-002",
    "text-embedding-ada-002-v2": "text-embedding-ada-002",
}

# davinci:2023-07-21-v2 / babbage:2023-07-21-v2: how the API names davinci-002 / babbage-002.
_BASE_SNAPSHOT = re.compile(r"^(davinci|babbage):\d{4}-\d{2}-\d{2}-v2$")

# -2024-11-20 | -0613 (a plausible MMDD) | -1106-preview, at the end of the name.
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|(?:0[1-9]|1[0-2])\d{2}(?:-preview)?)$")

# Families whose encoding is cl100k_base, to estimate with the right tokenizer when the exact
# name is unknown (fine-tuned models, deployment names that start with the model).
_CL100K_PREFIX = re.compile(
    r"^(?:gpt-35-turbo|gpt-4(?:-|$)|text-embedding-(?:ada|3)|babbage-002|davinci-002)"
)


def _clean(name: str) -> str:
    """Lower-case, trim, drop a provider prefix and use the Azure spelling of GPT-3.5."""
    cleaned = name.strip().lower()
    if "/" in cleaned:
        cleaned = cleaned.rsplit("/", 1)[1].strip()
    if cleaned.startswith("gpt-3.5"):
        cleaned = "gpt-35" + cleaned[len("gpt-3.5") :]
    return cleaned


def _strip_dates(name: str) -> str:
    """Remove trailing date markers (repeatedly, e.g. ``-0613`` after ``-2024-01-01``)."""
    while True:
        stripped = _DATE_SUFFIX.sub("", name)
        if stripped == name or not stripped:
            return name
        name = stripped


def _family_encoding(cleaned: str) -> str:
    """Best-guess encoding for a name that is not a known pricing key."""
    base = cleaned
    if base.startswith("ft:"):  # OpenAI fine-tune: ft:<base>:<org>::<id>
        base = base[3:].split(":", 1)[0]
    return CL100K if _CL100K_PREFIX.match(base) else O200K


@functools.lru_cache(maxsize=4096)
def normalize_model(name: str | None) -> ModelInfo:
    """Normalise a model name to its canonical pricing key and tiktoken encoding.

    ``gpt-4o-2024-11-20`` → ``gpt-4o``; ``gpt-3.5-turbo-16k`` → ``gpt-35-turbo-16k``;
    ``azure/GPT-4o`` → ``gpt-4o``. ``None`` or a blank string gives
    ``ModelInfo("unknown", "o200k_base", False)``; any other unrecognised name (for example a
    deployment name) is returned cleaned, with ``known=False``.
    """
    if not isinstance(name, str):
        return ModelInfo(UNKNOWN_MODEL, O200K, False)
    cleaned = _clean(name)
    if not cleaned:
        return ModelInfo(UNKNOWN_MODEL, O200K, False)

    candidate = _ALIASES.get(cleaned)
    snapshot = _BASE_SNAPSHOT.match(cleaned)
    if snapshot:
        candidate = f"{snapshot.group(1)}-002"
    if candidate is None:
        candidate = _strip_dates(cleaned)
        candidate = _ALIASES.get(candidate, candidate)

    encoding = KNOWN_MODELS.get(candidate)
    if encoding is not None:
        return ModelInfo(candidate, encoding, True)
    if _GPT5_POINT.match(candidate):
        return ModelInfo(candidate, O200K, True)
    return ModelInfo(candidate, _family_encoding(candidate), False)
