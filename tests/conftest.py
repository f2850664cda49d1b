"""Shared fixtures: databases, a clean environment, and usage-event factories.

Databases
    ``engine``        a fresh SQLite file database in ``tmp_path`` with the schema and the
                      bundled default rates (``service.ensure_db``)
    ``empty_engine``  the same schema with **no** rates (``seed_default_rates=False``)
    ``pg_server``     a throwaway PostgreSQL cluster (session; tests/pg.py)
    A module that sets ``BOTH_DATABASES = True`` runs each test using ``engine`` /
    ``empty_engine`` twice: on SQLite and on a fresh PostgreSQL database (marker ``postgres``).

Environment
    ``_clean_env`` (autouse) removes every ``AZURE_*`` and ``AOAI_*`` variable, so nothing
    from the developer's shell (a real database URL, a real Event Hub) leaks into a test —
    except ``AOAI_NOW``, the business clock (:mod:`aoai_helpers.clock`): ``make test-stress``
    sets it to the first minutes of a month and every test must pass on that day too.

Events (fixtures that return a factory function)
    ``make_v2(**overrides) -> dict``  a valid v2 event (contract §3): every field of
        ``events.V2_FIELDS`` in that order, reported usage 100/50/150 for ``gpt-4o``, a fresh
        uuid4 ``RequestId`` per call. ``overrides`` replace top-level fields
        (``make_v2(StatusCode=429, Usage=None)``); delete a key to test a missing field.
    ``make_v1(**overrides) -> dict``  an event of the original policy: no ``EventVersion`` /
        ``RequestId``, ``ExecTimeUTC`` as ``yyyy-MM-dd HH:mm:ss``, a non-streamed chat request
        and its response body (usage 30/20/50) in ``ResponseString``. v1 ids are content
        hashes: two ``make_v1()`` with the same overrides are the *same* event (a duplicate);
        vary ``ExecTimeUTC`` (or anything else) to get distinct calls.
    ``ingest_events(engine, *events) -> BatchResult``  JSON-encode the dicts (or pass ``bytes``
        as they are) and ingest them as one batch through ``ingest.Ingestor``.
    ``token_rows(engine) -> list[dict]``  every ``ApimAoaiToken`` row (ordered by ``Id``) as a
        dict of column → value.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_run import KEPT_VARIABLES
from pg import PgServer, find_pg_bin
from secrets_registry import OUTPUTS, SECRETS, leaks, record_output
from sqlalchemy import select
from sqlalchemy.engine import Engine

from aoai_helpers.core.events import V2_FIELDS
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent
from aoai_helpers.pipeline.service import ensure_db

#: Values shared by both factories (the caller of the default events).
CALLER: dict[str, str] = {
    "GatewayRegion": "West Europe",
    "GatewayServiceName": "apim-test",
    "SubscriptionId": "sub-test-01",
    "SubscriptionName": "test-subscription",
    "ProductName": "openai-product",
    "UserName": "Test User",
    "UserEmail": "test.user@example.com",
    "ApiName": "Azure OpenAI",
}
MODEL = "gpt-4o-2024-11-20"
CHAT_MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
]

MakeEvent = Callable[..., dict[str, Any]]


# ----------------------------------------------------------------------------- environment


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AZURE_* / AOAI_* variable from the outer environment reaches a test (but AOAI_NOW)."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "AOAI_")) and name not in KEPT_VARIABLES:
            monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- databases


def _engine(url: str, *, seed: bool) -> Iterator[Engine]:
    engine = engine_from_url(url)
    ensure_db(engine, seed_default_rates=seed)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL cluster for the session (tests/pg.py).

    Skips with the reason when no server binaries exist — except in CI (``CI`` set), where
    ``.ci/run`` installs them, so a missing server fails instead of hiding the tests.
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI: PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them"
            )
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    try:
        server = PgServer(bin_dir)
    except KeyError:  # root without the ``postgres`` user the Debian package creates
        if os.environ.get("CI"):
            pytest.fail("CI: running as root needs a 'postgres' user to own the test cluster")
        pytest.skip("running as root and no 'postgres' user to own the test cluster")
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` unless the module runs on both databases (``BOTH_DATABASES = True``)."""
    return str(getattr(request, "param", "sqlite"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules with ``BOTH_DATABASES = True`` run their database tests on SQLite and PostgreSQL."""
    uses_db = {"engine", "empty_engine"} & set(metafunc.fixturenames)
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if uses_db and not sqlite_only and getattr(metafunc.module, "BOTH_DATABASES", False):
        metafunc.parametrize(
            "db_backend",
            ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
            indirect=True,
        )


def _url(request: pytest.FixtureRequest, backend: str, path: Path) -> str:
    if backend == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        return server.new_database()
    return f"sqlite:///{path}"


@pytest.fixture
def engine(tmp_path: Path, db_backend: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A fresh database with the schema and the default rates seeded (SQLite file, or a new
    PostgreSQL database in modules that run on both)."""
    yield from _engine(_url(request, db_backend, tmp_path / "t.db"), seed=True)


@pytest.fixture
def empty_engine(
    tmp_path: Path, db_backend: str, request: pytest.FixtureRequest
) -> Iterator[Engine]:
    """The same schema but no rates at all."""
    yield from _engine(_url(request, db_backend, tmp_path / "empty.db"), seed=False)


# ----------------------------------------------------------------------------- event factories


def new_v2(**overrides: Any) -> dict[str, Any]:
    """A valid v2 event (all of ``V2_FIELDS``, in order) with ``overrides`` applied."""
    event: dict[str, Any] = {
        "EventVersion": 2,
        "RequestId": str(uuid.uuid4()),
        "ExecTimeUTC": "2026-11-05T10:00:00.123Z",
        **CALLER,
        "OperationId": "ChatCompletions_Create",
        "Operation": "chat",
        "DeploymentName": "gpt-4o",
        "ApiVersion": "2024-10-21",
        "IsStreaming": False,
        "StatusCode": 200,
        "Model": MODEL,
        "Usage": {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        },
        "Request": None,
        "ResponseString": None,
    }
    assert tuple(event) == V2_FIELDS, "the factory must follow events.V2_FIELDS"
    event.update(copy.deepcopy(overrides))
    return event


def new_v1(**overrides: Any) -> dict[str, Any]:
    """An event of the original APIM-AOAI-Proxy policy (non-streamed chat) with ``overrides``."""
    body = {
        "id": "chatcmpl-test0001",
        "object": "chat.completion",
        "created": 1793786400,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
    }
    event: dict[str, Any] = {
        "ExecTimeUTC": "2026-11-05 10:00:00",
        **CALLER,
        "OperationId": "ChatCompletions_Create",
        "Request": {"messages": copy.deepcopy(CHAT_MESSAGES), "stream": False},
        "ResponseString": json.dumps(body),
    }
    event.update(copy.deepcopy(overrides))
    return event


@pytest.fixture
def make_v2() -> MakeEvent:
    """Factory of valid v2 event dicts: ``make_v2(**overrides)`` (see the module docstring)."""
    return new_v2


@pytest.fixture
def make_v1() -> MakeEvent:
    """Factory of v1 (original policy) event dicts: ``make_v1(**overrides)``."""
    return new_v1


# ----------------------------------------------------------------------------- database helpers


def encode(event: dict[str, Any] | bytes) -> bytes:
    """The body as the gateway would send it (compact UTF-8 JSON); ``bytes`` pass through."""
    if isinstance(event, bytes):
        return event
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def ingest_events_into(engine: Engine, *events: dict[str, Any] | bytes) -> BatchResult:
    """Ingest ``events`` as one batch (one transaction) and return the batch result."""
    batch = [RawEvent(encode(e), f"test:{i}") for i, e in enumerate(events, start=1)]
    return Ingestor(engine).ingest_batch(batch)


def read_token_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every ``ApimAoaiToken`` row, ordered by ``Id``, as column → value dicts."""
    with transaction(engine) as conn:
        rows = conn.execute(select(token_table).order_by(token_table.c.Id)).mappings().all()
    return [dict(r) for r in rows]


@pytest.fixture
def ingest_events() -> Callable[..., BatchResult]:
    """``ingest_events(engine, *events)``: ingest event dicts/bytes as one batch."""
    return ingest_events_into


@pytest.fixture
def token_rows() -> Callable[[Engine], list[dict[str, Any]]]:
    """``token_rows(engine)``: the stored ``ApimAoaiToken`` rows as dicts, ordered by ``Id``."""
    return read_token_rows


# ----------------------------------------------------------------------------- secrets scan


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep every test's captured stdout, stderr and log lines for the secrets scan."""
    for name, content in report.sections:
        record_output(f"{report.nodeid} [{name}]", content)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any output of the suite contains a secret a test used."""
    found = leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"secrets scan: {len(OUTPUTS)} outputs checked for {len(SECRETS)} secrets: {len(found)} leaks"
    if reporter is not None:
        reporter.write_line(line)
        for leak in found[:20]:
            reporter.write_line(f"  LEAK {leak}")
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
