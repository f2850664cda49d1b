"""CLI: ``tokens verify`` — the bundled offline tokenizer files."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_tokens_parser"]


def cmd_tokens_verify(args: argparse.Namespace) -> int:
    from aoai_helpers.core.tokens import verify_tokenizer_files

    for name, sha in verify_tokenizer_files().items():
        print(f"{name}: sha256 {sha} (matches tiktoken's published hash)")
    return 0


def add_tokens_parser(sub: Any) -> None:
    """Register ``tokens verify``."""
    tokens = sub.add_parser("tokens", help="offline tokenizer").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION"
    )
    tokens.add_parser(
        "verify", help="check the bundled tokenizer files against tiktoken's hashes"
    ).set_defaults(func=cmd_tokens_verify)
