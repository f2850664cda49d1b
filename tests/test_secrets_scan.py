"""The suite-wide secrets scan (tests/secrets_registry.py, run at the end of every session)."""

from __future__ import annotations

import pytest
import secrets_registry
from secrets_registry import leaks, record_output, register_secret


def test_the_scan_names_where_a_secret_leaked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets_registry, "SECRETS", set())
    monkeypatch.setattr(secrets_registry, "OUTPUTS", [])
    register_secret("short", None, "subscription-key-0123456789abcdef")
    assert {"subscription-key-0123456789abcdef"} == secrets_registry.SECRETS  # short ones ignored
    record_output("cli local up", "key  bu-finance  ****cdef\n")
    assert leaks() == []
    record_output("gateway event 7", b'{"Request": {"note": "subscription-key-0123456789abcdef"}}')
    assert leaks() == ["gateway event 7: contains a secret ending …cdef"]


def test_the_session_hook_is_installed(pytestconfig: pytest.Config) -> None:
    conftest = pytestconfig.pluginmanager.get_plugin(
        str(pytestconfig.rootpath / "tests" / "conftest.py")
    )
    assert conftest is not None and hasattr(conftest, "pytest_sessionfinish")
