"""The one database rule (:func:`aoai_helpers.config.db_url`) and where a spec's SQLite file lands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aoai_helpers.cli.main import main
from aoai_helpers.config import (
    BUNDLED_SPEC,
    DEFAULT_DB_URL,
    db_url,
    spec_db_url,
    spec_decides,
    spec_path,
)
from aoai_helpers.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gateway.yaml"


def test_precedence_explicit_then_environment_then_spec_then_default(tmp_path: Path) -> None:
    spec_file = tmp_path / "gateway.yaml"
    env = {"AOAI_DB_URL": "sqlite:///env.db"}
    assert db_url("arg.db", "sqlite:///spec.db", env, spec_file=spec_file) == "sqlite:///arg.db"
    assert db_url(None, "sqlite:///spec.db", env, spec_file=spec_file) == "sqlite:///env.db"
    assert db_url(None, "sqlite:///spec.db", {}, spec_file=spec_file) == (
        f"sqlite:///{tmp_path / 'spec.db'}"
    )
    assert db_url(None, None, {}) == DEFAULT_DB_URL
    assert not spec_decides("x.db", {}) and not spec_decides(None, env) and spec_decides(None, {})


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////abs/usage.db",
        "sqlite:///:memory:",
        "sqlite://",
        "postgresql+psycopg://u@h/db",
        "mssql+pyodbc:///?odbc_connect=Server%3Dx",
    ],
)
def test_only_relative_sqlite_paths_move(tmp_path: Path, url: str) -> None:
    assert spec_db_url(url, tmp_path / "gateway.yaml") == url


def test_a_relative_sqlite_path_keeps_its_query(tmp_path: Path) -> None:
    assert spec_db_url("sqlite:///u.db?timeout=5", tmp_path / "s.yaml") == (
        f"sqlite:///{tmp_path / 'u.db'}?timeout=5"
    )


def test_the_example_spec_the_bundled_sample_and_the_notebooks_share_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the checkout's root: the bundled sample, ``--spec examples/gateway.yaml`` and the
    notebooks' ``../examples/gateway.yaml`` from ``notebooks/`` all open ``data/aoai_usage.db``."""
    spec = load_spec(EXAMPLE)
    monkeypatch.chdir(ROOT)
    from_root = db_url(None, spec, {}, spec_file="examples/gateway.yaml")
    bundled = db_url(None, load_spec(BUNDLED_SPEC), {}, spec_file=BUNDLED_SPEC)
    assert from_root == bundled == DEFAULT_DB_URL
    monkeypatch.chdir(ROOT / "notebooks")
    from_notebooks = db_url(None, spec, {}, spec_file="../examples/gateway.yaml")
    assert (Path.cwd() / from_notebooks.removeprefix("sqlite:///")).resolve() == (
        ROOT / "data" / "aoai_usage.db"
    )
    monkeypatch.chdir(tmp_path)  # no gateway.yaml here: the bundled sample, under the cwd
    assert spec_path(None, {}) == BUNDLED_SPEC
    assert db_url(None, load_spec(BUNDLED_SPEC), {}, spec_file=BUNDLED_SPEC) == DEFAULT_DB_URL


def test_commands_read_the_specs_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db init`` and ``rates list`` (once ignoring the spec) open the spec's database,
    relative to the spec's folder, not the current directory."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    text = EXAMPLE.read_text("utf-8").replace(
        "sqlite:///../data/aoai_usage.db", "sqlite:///usage.db"
    )
    (folder / "gateway.yaml").write_text(text, "utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AOAI_SPEC", str(folder / "gateway.yaml"))
    assert main(["db", "init"]) == 0
    assert (folder / "usage.db").is_file() and not (tmp_path / "usage.db").exists()
    assert main(["rates", "list"]) == 0
    out = capsys.readouterr().out
    assert str(folder / "usage.db") in out and "gpt-4o" in out


def test_a_command_names_its_database_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "u.db"
    assert main(["db", "init", "--db", str(db)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["bu", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().err == f"database: sqlite:///{db}\n"
