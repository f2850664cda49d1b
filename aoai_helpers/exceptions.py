"""Exceptions raised by aoai_helpers.

The library raises; the CLI turns these into a one-line message and a non-zero exit;
notebooks display the message. Bad *events* are not exceptions: they are values
(:class:`aoai_helpers.core.events.EventError`) so that one bad event never kills a batch.

::

    AoaiHelpersError                 base of everything this package raises on purpose
    ├── ConfigError                  bad settings, spec, arguments or rate data (a user mistake)
    ├── InputError                   an input file cannot be read (missing, unreadable, not JSON/JSONL)
    ├── TokenizerError               offline tokenizer data missing or not matching its pinned hash
    ├── DatabaseError                the database cannot be reached or refused a statement
    ├── ReportError                  a notebook cannot become the HTML report (failed cell, network reference)
    └── ReconcileError               the language-model log cannot be read (refused, throttled, partial): nothing was changed
"""

from __future__ import annotations

__all__ = [
    "AoaiHelpersError",
    "ConfigError",
    "DatabaseError",
    "InputError",
    "ReconcileError",
    "ReportError",
    "TokenizerError",
]


class AoaiHelpersError(Exception):
    """Base class for errors raised by aoai_helpers (never for a bad event)."""


class ConfigError(AoaiHelpersError):
    """Invalid configuration, arguments or reference data supplied by the user."""


class InputError(AoaiHelpersError):
    """An input file could not be opened or read."""


class TokenizerError(AoaiHelpersError):
    """The bundled tokenizer data is missing or does not match its pinned sha256."""


class DatabaseError(AoaiHelpersError):
    """The database is unreachable, or a statement failed (the batch was rolled back)."""


class ReportError(AoaiHelpersError):
    """The notebook cannot become a report, or the page would load something from the network."""


class ReconcileError(AoaiHelpersError):
    """The language-model log could not be read (access refused, throttled or failing past the
    retries, or only partial results): reconciliation changed nothing."""
