"""Waiting in tests: for the condition a test needs, never for a file or a fixed time.

``wait_until(condition, timeout, what)`` polls ``condition`` until it holds and fails the test
naming ``what`` if it still does not after ``timeout`` seconds. The timeout is only a bound for
a broken run, set far above what a loaded machine takes; a passing run never waits it out.

``stored_rows(url)`` is the number of ``ApimAoaiToken`` rows, 0 while the table does not exist
yet (a consumer creates the database file before its tables), so "the table exists *and* has
the rows" is one condition: ``wait_until(lambda: stored_rows(db) == 40, …)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import func, inspect, select

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.tables import token_table

__all__ = ["stored_rows", "wait_until"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def stored_rows(url: str) -> int:
    """``ApimAoaiToken`` rows in the database at ``url``; 0 while the table does not exist."""
    engine = engine_from_url(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(token_table.name):
                return 0
            return int(conn.execute(select(func.count()).select_from(token_table)).scalar_one())
    finally:
        engine.dispose()
