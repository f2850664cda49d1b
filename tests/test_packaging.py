"""Repository promises: dependency lists in sync, public API, generated files up to date."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import tomllib
from pathlib import Path

import yaml

import aoai_helpers
from aoai_helpers.db.schema import ddl
from aoai_helpers.synthetic.events import demo_events

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def test_environment_yml_lists_exactly_the_pyproject_dependencies() -> None:
    project = _pyproject()["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text("utf-8"))
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {d for d in pip_section if d != "-e ."}
    assert listed == wanted, (
        f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    )
    assert "-e ." in pip_section
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python" + project["requires-python"]


def test_pyproject_has_the_extras_users_expect() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"azure", "local", "mssql", "postgres", "notebooks", "dev"} <= set(extras)


def test_public_api_is_sorted_and_importable() -> None:
    assert aoai_helpers.__all__ == sorted(aoai_helpers.__all__)
    for name in aoai_helpers.__all__:
        assert hasattr(aoai_helpers, name), name
    for path in (ROOT / "aoai_helpers").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{path.name}: __all__ names missing {name}"


def test_version_matches_pyproject() -> None:
    assert aoai_helpers.__version__ == _pyproject()["project"]["version"]


def test_package_data_globs_cover_every_data_file_the_code_loads() -> None:
    globs = _pyproject()["tool"]["setuptools"]["package-data"]["aoai_helpers"]
    pkg = ROOT / "aoai_helpers"
    data_files = [
        p.relative_to(pkg).as_posix()
        for p in pkg.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"}
    ]
    uncovered = [f for f in data_files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not uncovered, f"not shipped in a wheel: {uncovered}"
    assert (pkg / "data/tokenizers/o200k_base.tiktoken").is_file()
    assert (pkg / "data/tokenizers/cl100k_base.tiktoken").is_file()


def test_sql_script_is_generated_from_the_models() -> None:
    assert (ROOT / "sql" / "aoaieventdb.sql").read_text("utf-8") == ddl("mssql"), (
        "sql/aoaieventdb.sql is stale: python -m aoai_helpers db ddl > sql/aoaieventdb.sql"
    )


def test_bundled_demo_sample_is_what_the_generator_produces() -> None:
    bundled = (
        (ROOT / "aoai_helpers" / "data" / "sample_events.jsonl").read_text("utf-8").splitlines()
    )
    assert bundled == demo_events(), (
        "regenerate aoai_helpers/data/sample_events.jsonl from samples.demo_events()"
    )


def test_schema_file_is_valid_json_with_v2_title() -> None:
    schema = json.loads(
        (ROOT / "aoai_helpers/schemas/usage-event-v2.schema.json").read_text("utf-8")
    )
    assert schema["properties"]["EventVersion"] == {"const": 2}


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    readme = (ROOT / "README.md").read_text("utf-8")
    assert re.search(r"^make test$", ci, re.M)
    assert "make demo" in readme and "make test" in readme


def test_committed_notebooks_have_no_outputs() -> None:
    for nb_path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = json.loads(nb_path.read_text("utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and not cell.get("execution_count"), nb_path.name
