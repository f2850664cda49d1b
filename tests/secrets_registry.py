"""What the test suite must never print: the secrets it used, and everything it produced.

Tests register each secret they use (subscription keys, backend keys, connection strings,
passwords) with :func:`register_secret`, and hand over output they captured themselves (CLI
subprocess output, events from the gateway or the event log) with :func:`record_output`.
``tests/conftest.py`` also records every test's captured stdout, stderr and log lines, and at
the end of the session scans all of it for every registered secret: one leak fails the run.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["OUTPUTS", "SECRETS", "leaks", "record_event_log", "record_output", "register_secret"]

SECRETS: set[str] = set()
OUTPUTS: list[tuple[str, str]] = []


def register_secret(*values: str | None) -> None:
    """Remember secrets used by a test (values shorter than 8 characters are not distinctive)."""
    for value in values:
        if value and len(value) >= 8:
            SECRETS.add(value)


def record_output(where: str, text: str | bytes) -> None:
    """Remember output a test produced outside pytest's capture (subprocess output, events)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text:
        OUTPUTS.append((where, text))


def record_event_log(directory: Path, where: str) -> None:
    """Remember every event body in a local event log directory."""
    from aoai_helpers.eventlog.eventhub import LocalEventLog

    log = LocalEventLog(directory)
    consumer = log.consumer("secret-scan")
    try:
        while batch := consumer.receive(1000, 0.0):
            for event in batch:
                record_output(f"{where} event {event.sequence_number}", event.body)
    finally:
        consumer.close()


def leaks() -> list[str]:
    """``where: …secret…`` for every output that contains a registered secret."""
    found = []
    for where, text in OUTPUTS:
        for secret in SECRETS:
            if secret in text:
                found.append(f"{where}: contains a secret ending …{secret[-4:]}")
    return found
