"""The function's deployment zip: reproducible, complete, and pinned (functions/build.py)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import re
import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest

from aoai_helpers.azure.functions import BuildResult, build_zip, indexed_functions, unpack
from aoai_helpers.azure.functions.build import host_json, package_files, requirements_txt
from aoai_helpers.azure.functions.settings import FUNCTION_NAME, RECONCILE_FUNCTION_NAME
from aoai_helpers.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
TEMPLATE_HOST = (ROOT / "aoai_helpers/azure/functions/template/host.json").read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return build_zip(tmp_path_factory.mktemp("dist"))


def _read(result: BuildResult, name: str) -> bytes:
    with zipfile.ZipFile(result.path) as zf:
        return zf.read(name)


def _name(requirement: str) -> str:
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert m, requirement
    return m.group(0).lower()


# ----------------------------------------------------------------------------- reproducible


def test_building_twice_gives_identical_bytes(tmp_path: Path, built: BuildResult) -> None:
    again = build_zip(tmp_path / "again")
    assert again.path.read_bytes() == built.path.read_bytes()
    assert (again.path.name, again.sha256, again.files) == (
        built.path.name,
        built.sha256,
        built.files,
    )


def test_name_size_and_digest_describe_the_file(built: BuildResult) -> None:
    data = built.path.read_bytes()
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    assert built.size_bytes == len(data) == built.path.stat().st_size
    version = PYPROJECT["project"]["version"]
    assert built.path.name == f"aoai-ingest-{version}-{built.sha256[:12]}.zip"


def test_entries_are_sorted_with_fixed_time_mode_and_compression(built: BuildResult) -> None:
    with zipfile.ZipFile(built.path) as zf:
        infos = zf.infolist()
        assert zf.testzip() is None
    assert [i.filename for i in infos] == sorted(i.filename for i in infos) == built.files
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        assert (info.external_attr >> 16) & 0o777 == 0o644, info.filename
        assert info.compress_type == zipfile.ZIP_DEFLATED, info.filename
        assert info.create_system == 3, info.filename


# ----------------------------------------------------------------------------- contents


def test_the_zip_holds_the_app_files_and_the_package_with_its_data(built: BuildResult) -> None:
    files = set(built.files)
    assert {
        "function_app.py",
        "host.json",
        "requirements.txt",
        "aoai_helpers/__init__.py",
        "aoai_helpers/azure/functions/handler.py",
        "aoai_helpers/azure/functions/settings.py",
        "aoai_helpers/data/tokenizers/o200k_base.tiktoken",
        "aoai_helpers/data/tokenizers/cl100k_base.tiktoken",
        "aoai_helpers/data/default_rates.csv",
        "aoai_helpers/schemas/usage-event-v2.schema.json",
        "aoai_helpers/py.typed",
    } <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".pyo"))]
    assert not [f for f in files if re.search(r"(^|/)(tests?/|test_[^/]*\.py$|conftest\.py$)", f)]
    # The template goes to the root, not a second time inside the package.
    assert not [f for f in files if f.startswith("aoai_helpers/azure/functions/template/")]
    assert (
        _read(built, "function_app.py")
        == (ROOT / "aoai_helpers/azure/functions/template/function_app.py").read_bytes()
    )


def test_every_file_the_package_data_globs_ship_is_in_the_zip(built: BuildResult) -> None:
    pkg = ROOT / "aoai_helpers"
    wanted = {
        f"aoai_helpers/{p.relative_to(pkg).as_posix()}"
        for pattern in PYPROJECT["tool"]["setuptools"]["package-data"]["aoai_helpers"]
        for p in pkg.glob(pattern)
        if p.is_file() and "azure/functions/template/" not in p.as_posix()
    }
    assert wanted
    assert wanted <= set(built.files)
    for name in wanted:  # byte for byte
        assert _read(built, name) == (ROOT / name).read_bytes(), name


def test_every_module_of_the_package_is_in_the_zip(built: BuildResult) -> None:
    modules = {
        f"aoai_helpers/{p.relative_to(ROOT / 'aoai_helpers').as_posix()}"
        for p in (ROOT / "aoai_helpers").rglob("*.py")
        if "__pycache__" not in p.parts and "template" not in p.parts
    }
    assert modules <= set(built.files)


def test_host_json_sizes_batches_and_keeps_the_summary_log_line(built: BuildResult) -> None:
    host = json.loads(_read(built, "host.json"))
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    eh = host["extensions"]["eventHubs"]
    assert eh["maxEventBatchSize"] >= 100
    assert 1 < eh["minEventBatchSize"] < eh["maxEventBatchSize"]
    h, m, s = (int(x) for x in eh["maxWaitTime"].split(":"))
    assert 0 < h * 3600 + m * 60 + s <= 60, "a trickle must still flush within a minute"
    assert eh["prefetchCount"] >= 2 * eh["maxEventBatchSize"]
    assert eh["batchCheckpointFrequency"] == 1
    levels = host["logging"]["logLevel"]
    assert levels[f"Function.{FUNCTION_NAME}.User"] == "Information"


# ----------------------------------------------------------------------------- requirements


def test_requirements_pin_the_core_dependencies_exactly(built: BuildResult) -> None:
    text = _read(built, "requirements.txt").decode("utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    by_name = {_name(ln): ln for ln in lines}
    assert len(by_name) == len(lines)
    assert lines == sorted(lines, key=_name), "deterministic order"
    for req in PYPROJECT["project"]["dependencies"]:
        name = _name(req)
        assert by_name[name] == f"{name}=={importlib.metadata.version(name)}", by_name[name]
    assert by_name["azure-functions"] == (
        f"azure-functions=={importlib.metadata.version('azure-functions')}"
    )
    assert by_name["pyodbc"].startswith("pyodbc")
    assert by_name["psycopg"].startswith("psycopg[binary]")
    for name in ("pyodbc", "psycopg"):
        assert re.fullmatch(r"[a-z]+(\[binary\])?(==|>=)[0-9][0-9.]*", by_name[name])
    # the reconcile timer reads Log Analytics with its managed identity: pinned like the rest
    for name in ("azure-identity", "azure-monitor-query"):
        assert by_name[name] == f"{name}=={importlib.metadata.version(name)}", by_name[name]
        assert any(_name(r) == name for r in PYPROJECT["project"]["optional-dependencies"]["azure"])
    assert set(by_name) == {_name(r) for r in PYPROJECT["project"]["dependencies"]} | {
        "azure-functions",
        "azure-identity",
        "azure-monitor-query",
        "pyodbc",
        "psycopg",
    }
    assert text == requirements_txt(ROOT)


# ----------------------------------------------------------------------------- other sources


def _copy_package(dest: Path) -> Path:
    """A source tree holding only the shipped package files and the template."""
    for name, path in package_files(ROOT).items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copytree(
        ROOT / "aoai_helpers/azure/functions/template",
        dest / "aoai_helpers/azure/functions/template",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return dest


def test_caches_tests_and_hidden_files_in_the_source_are_left_out(
    tmp_path: Path, built: BuildResult
) -> None:
    src = _copy_package(tmp_path / "src")
    shutil.copyfile(ROOT / "pyproject.toml", src / "pyproject.toml")
    pkg = src / "aoai_helpers"
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__/store.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "tests").mkdir()
    (pkg / "tests/__init__.py").write_text("")
    (pkg / "test_something.py").write_text("")
    (pkg / ".notes.swp").write_text("")
    (pkg / "data/local.db").write_bytes(b"not shipped: no package-data glob matches")
    (pkg / "azure/functions/template/__pycache__").mkdir()
    (pkg / "azure/functions/template/__pycache__/function_app.cpython-311.pyc").write_bytes(b"\0")
    result = build_zip(tmp_path / "out", source_root=src)
    assert result.files == built.files
    assert result.sha256 == built.sha256


def test_an_installed_package_without_pyproject_ships_the_same_package(
    tmp_path: Path, built: BuildResult
) -> None:
    src = _copy_package(tmp_path / "site-packages")
    result = build_zip(tmp_path / "out", source_root=src)
    package = [f for f in built.files if f.startswith("aoai_helpers/")]
    assert [f for f in result.files if f.startswith("aoai_helpers/")] == package
    for name in package:
        assert _read(result, name) == _read(built, name), name


def test_a_source_without_the_template_or_tokenizers_is_refused(tmp_path: Path) -> None:
    src = _copy_package(tmp_path / "src")
    (src / "aoai_helpers/azure/functions/template/host.json").unlink()
    with pytest.raises(ConfigError, match=r"host\.json"):
        build_zip(tmp_path / "out", source_root=src)
    shutil.copyfile(
        ROOT / "aoai_helpers/azure/functions/template/host.json",
        src / "aoai_helpers/azure/functions/template/host.json",
    )
    for f in (src / "aoai_helpers/data/tokenizers").glob("*.tiktoken"):
        f.unlink()
    with pytest.raises(ConfigError, match="tokenizer"):
        build_zip(tmp_path / "out", source_root=src)
    with pytest.raises(ConfigError, match="no aoai_helpers package"):
        build_zip(tmp_path / "out", source_root=tmp_path)


# ----------------------------------------------------------------------------- unpacked


def test_unpack_refuses_entries_outside_the_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.py", b"")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match="outside"):
        unpack(bad, tmp_path / "app")
    assert not (tmp_path / "evil.py").exists()


def test_the_unpacked_build_indexes_both_functions(tmp_path: Path, built: BuildResult) -> None:
    app_dir = unpack(built.path, tmp_path / "wwwroot")
    assert indexed_functions(app_dir) == [FUNCTION_NAME, RECONCILE_FUNCTION_NAME]
    assert not list(app_dir.rglob("__pycache__")), "the check must not write bytecode"


def test_indexing_a_broken_build_reports_the_import_error(tmp_path: Path) -> None:
    app_dir = tmp_path / "wwwroot"
    app_dir.mkdir()
    (app_dir / "function_app.py").write_text("import no_such_module_here\n")
    with pytest.raises(ConfigError, match="no_such_module_here"):
        indexed_functions(app_dir)


# ----------------------------------------------------------------------------- the spec's batch size


def test_the_specs_max_batch_size_goes_into_host_json_reproducibly(
    tmp_path: Path, built: BuildResult
) -> None:
    """``function.max_batch_size`` is ``extensions.eventHubs.maxEventBatchSize`` (*Azure Event
    Hubs bindings*, host.json settings: "The maximum number of events included in a batch for a
    single invocation"; ``minEventBatchSize`` "must be less than maxEventBatchSize")."""
    one = build_zip(tmp_path / "a", max_batch_size=120)
    two = build_zip(tmp_path / "b", max_batch_size=120)
    assert one.path.read_bytes() == two.path.read_bytes() and one.path.name == two.path.name
    assert one.sha256 != built.sha256
    eh = json.loads(_read(one, "host.json"))["extensions"]["eventHubs"]
    assert (eh["maxEventBatchSize"], eh["minEventBatchSize"], eh["prefetchCount"]) == (
        120,
        50,
        1000,
    )
    assert eh["maxWaitTime"] == "00:00:05"
    # the template's own size gives the template's settings; the default build is that size
    default = json.loads(_read(built, "host.json"))["extensions"]["eventHubs"]
    assert default["maxEventBatchSize"] == 500
    assert build_zip(tmp_path / "c", max_batch_size=500).sha256 == built.sha256
    small = json.loads(host_json(TEMPLATE_HOST, 40))["extensions"]["eventHubs"]
    assert (small["maxEventBatchSize"], small["minEventBatchSize"]) == (40, 20)
    single = json.loads(host_json(TEMPLATE_HOST, 1))["extensions"]["eventHubs"]
    assert single["maxEventBatchSize"] == 1
    assert "minEventBatchSize" not in single and "maxWaitTime" not in single
    big = json.loads(host_json(TEMPLATE_HOST, 2000))["extensions"]["eventHubs"]
    assert (big["minEventBatchSize"], big["prefetchCount"]) == (50, 4000)
    with pytest.raises(ConfigError, match="at least 1"):
        host_json(TEMPLATE_HOST, 0)
    # the rest of host.json is untouched
    assert (
        json.loads(host_json(TEMPLATE_HOST, 40))["logging"] == json.loads(TEMPLATE_HOST)["logging"]
    )
