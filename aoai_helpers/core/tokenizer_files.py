"""The bundled tokenizer files: verified against pinned hashes, loaded without downloads.

The rank files of the encodings (``data/tokenizers/<encoding>.tiktoken``) are checked against
the sha256 tiktoken publishes and turned into :class:`tiktoken.Encoding` objects here;
``tiktoken.get_encoding`` is never called, so nothing is fetched at run time. Counting is
:mod:`aoai_helpers.core.tokens`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from pathlib import Path
from typing import Final

import tiktoken

from aoai_helpers.core.model_names import CL100K, O200K
from aoai_helpers.exceptions import ConfigError, TokenizerError

__all__ = [
    "DATA_DIR",
    "ENCODING_NAMES",
    "PINNED_SHA256",
    "get_encoding",
    "load_encoding",
    "verify_tokenizer_files",
]

#: Where the bundled ``<encoding>.tiktoken`` rank files live.
DATA_DIR: Final = Path(__file__).resolve().parents[1] / "data" / "tokenizers"

ENCODING_NAMES: Final = (O200K, CL100K)

#: sha256 of the rank files, as published in tiktoken's ``tiktoken_ext/openai_public.py``.
PINNED_SHA256: Final[dict[str, str]] = {
    CL100K: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    O200K: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

# Split patterns and special tokens: the values tiktoken uses for these encodings.
_PAT_STR: Final[dict[str, str]] = {
    CL100K: (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    O200K: "|".join(
        (
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        )
    ),
}
_SPECIAL_TOKENS: Final[dict[str, dict[str, int]]] = {
    CL100K: {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    O200K: {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}

# Chat format constants (cookbook). Tool constants: gpt-4o values for every o200k model, the
# gpt-3.5-turbo / gpt-4 values (func_init 10) for cl100k models.


def _tokenizer_path(name: str, data_dir: Path | None) -> Path:
    if name not in PINNED_SHA256:
        raise ConfigError(f"unknown tokenizer encoding {name!r}; expected one of {ENCODING_NAMES}")
    return (DATA_DIR if data_dir is None else Path(data_dir)) / f"{name}.tiktoken"


def _read_verified(name: str, data_dir: Path | None) -> tuple[bytes, str]:
    """Read a rank file and check it against its pinned sha256; return (bytes, sha256)."""
    path = _tokenizer_path(name, data_dir)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(
            f"tokenizer file for {name} cannot be read: {path} ({exc.strerror or exc})"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != PINNED_SHA256[name]:
        raise TokenizerError(
            f"tokenizer file {path} does not match its pinned sha256 "
            f"(expected {PINNED_SHA256[name]}, got {digest}); reinstall the package"
        )
    return data, digest


def _parse_ranks(data: bytes, path_hint: str) -> dict[bytes, int]:
    """The ``base64 rank`` lines of a verified rank file as a dict (~4x faster than a loop of
    ``base64.b64decode``: the whole file is parsed by C calls; the loop below only runs to
    name the first malformed line)."""
    a2b = binascii.a2b_base64
    try:
        return {
            a2b(token, strict_mode=True): int(rank)
            for token, rank in (line.split() for line in data.splitlines() if line)
        }
    except (ValueError, binascii.Error):
        pass
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            base64.b64decode(token, validate=True)
            int(rank)
        except (ValueError, binascii.Error) as exc:
            raise TokenizerError(f"{path_hint}: malformed line {lineno}") from exc
    raise TokenizerError(f"{path_hint}: malformed")  # pragma: no cover - strict a2b vs b64decode


def load_encoding(name: str, data_dir: Path | None = None) -> tiktoken.Encoding:
    """Build encoding ``name`` from its verified rank file (uncached; see :func:`get_encoding`).

    ``data_dir`` overrides the bundled directory (used by tests). Raises :class:`ConfigError`
    for an unknown encoding name and :class:`TokenizerError` for a missing, unreadable or
    tampered file.
    """
    data, _ = _read_verified(name, data_dir)
    ranks = _parse_ranks(data, str(_tokenizer_path(name, data_dir)))
    return tiktoken.Encoding(
        name=name,
        pat_str=_PAT_STR[name],
        mergeable_ranks=ranks,
        special_tokens=dict(_SPECIAL_TOKENS[name]),
    )


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the bundled encoding ``name`` (``o200k_base`` | ``cl100k_base``), offline, cached."""
    return load_encoding(name)


def verify_tokenizer_files(data_dir: Path | None = None) -> dict[str, str]:
    """Check every bundled rank file against its pinned hash; return ``{name: sha256}``."""
    return {name: _read_verified(name, data_dir)[1] for name in ENCODING_NAMES}
