"""The deployment package of the ingestion function: a reproducible zip, built offline.

Contents (at the root of the zip, as the Python v2 programming model expects)::

    function_app.py     the trigger declaration (``azure/functions/template/function_app.py``)
    host.json           batch sizes, retry-friendly checkpointing, log levels (``template/``)
    requirements.txt    azure-functions + the package's runtime dependencies, pinned
    aoai_helpers/...    the package source and its package data (tokenizers, rates, schemas…)

Reproducible: the same sources and the same installed versions give the same bytes — entries
sorted, timestamps fixed at 1980-01-01 00:00, permissions 0644, deflate at level 9, no
``__pycache__`` / ``.pyc`` / test files. The zip is named after the package version and the
first 12 hex digits of its sha256 (``aoai-ingest-0.1.0-<sha12>.zip``), so a name identifies
its contents.

Which files of the package ship: with a source tree (``pyproject.toml`` beside ``aoai_helpers``)
exactly what a wheel would hold — the ``.py`` modules of every package (directories with an
``__init__.py``) and the files matched by ``[tool.setuptools.package-data]``; from an installed
package (no ``pyproject.toml``), every file of the installed directory. The function template
itself is not repeated inside the package copy.

``requirements.txt`` lists ``azure-functions`` and the ``[project] dependencies`` pinned
(``==``) to the versions installed where the zip is built, plus the drivers of the ``mssql``
and ``postgres`` extras (``pyodbc``, ``psycopg[binary]``) — pinned when installed, else with
the pyproject's lower bound — so any database URL works after the remote build
(``SCM_DO_BUILD_DURING_DEPLOYMENT=true``). The reconcile timer (``reconcile_usage``) reads the
language-model log with ``azure-monitor-query`` and signs in with ``azure-identity``'s managed
identity: those two packages of the ``azure`` extra ship too, pinned the same way.

``host.json`` (Event Hubs extension 5.x+ settings, from Microsoft's *Azure Event Hubs trigger
and bindings for Azure Functions*, "host.json settings",
https://learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs#host-json):
``maxEventBatchSize`` is the spec's ``function.max_batch_size`` (template and default 500; the
extension's default 100; "Must be at least 1") — one transaction per batch;
``minEventBatchSize`` 50 with ``maxWaitTime`` 5 s — the trigger waits for 50 events but no
longer than 5 s, so a trickle still flushes (the minimum "must be less than
``maxEventBatchSize``": below a batch of 100 it is half the batch, and for a batch of 1 it and
the wait are left out; the wait applies only when the minimum is above 1; both need extension
5.3.0+, which bundle ``[4.*, 5.0.0)`` carries); ``prefetchCount`` 1000 (default 300), at least
twice a batch so the next one is already local; ``batchCheckpointFrequency`` 1 — checkpoint
after every batch (above 1 misleads target-based scaling). :func:`host_json` writes it. Log levels keep ``Function.ingest_usage.User`` at
Information (the one summary line per batch) and everything else at Warning; traces and
exceptions are excluded from Application Insights sampling.

:func:`unpack` and :func:`indexed_functions` check a build the way the Functions host will use
it: unpacked into a directory, ``function_app`` imported by a fresh interpreter whose
``PYTHONPATH`` is that directory only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import io
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from aoai_helpers.exceptions import ConfigError

__all__ = [
    "BuildResult",
    "build_zip",
    "host_json",
    "indexed_functions",
    "package_files",
    "requirements_txt",
    "unpack",
]

PACKAGE: Final = "aoai_helpers"
DIST_NAME: Final = "apim-aoai-proxy"
ZIP_PREFIX: Final = "aoai-ingest"
#: Where the files that go to the root of the zip live, inside the package.
TEMPLATE_DIR: Final = "azure/functions/template"
ROOT_FILES: Final = ("function_app.py", "host.json")

_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
_ZIP_MODE: Final = stat.S_IFREG | 0o644
_ZIP_LEVEL: Final = 9
_UNIX: Final = 3  # ZipInfo.create_system: the same on every build host
_SKIPPED_DIRS: Final = frozenset({"__pycache__", "tests", "test", ".mypy_cache", ".pytest_cache"})
_SKIPPED_FILES: Final = ("*.pyc", "*.pyo", "test_*.py", "*_test.py", "conftest.py", ".*")
#: Optional-dependency groups whose requirements ship (database drivers).
_DRIVER_EXTRAS: Final = ("mssql", "postgres")
_FUNCTIONS_LIB: Final = "azure-functions"
#: Packages of the ``azure`` extra the function imports at run time (besides azure-functions).
_FUNCTION_RUNTIME: Final = ("azure-identity", "azure-monitor-query")
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*"
    r"(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.*))?$"
)
#: host.json's ``minEventBatchSize`` (at most) and ``prefetchCount`` (at least).
_MIN_BATCH: Final = 50
_PREFETCH: Final = 1000
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


@dataclass(frozen=True, slots=True)
class BuildResult:
    """A built zip: where it is, its size and sha256, and its entries in zip order."""

    path: Path
    size_bytes: int
    sha256: str
    files: list[str]


# ----------------------------------------------------------------------------- sources


def _default_root() -> Path:
    """The directory holding the ``aoai_helpers`` package this module belongs to."""
    return Path(__file__).resolve().parents[3]


def _pyproject(root: Path) -> dict[str, Any] | None:
    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _skipped(rel: PurePosixPath) -> bool:
    if any(part in _SKIPPED_DIRS for part in rel.parts[:-1]):
        return True
    if any(fnmatch.fnmatch(rel.name, pattern) for pattern in _SKIPPED_FILES):
        return True
    return rel.as_posix().startswith(TEMPLATE_DIR + "/")


def _package_modules(pkg: Path) -> Iterator[Path]:
    """``.py`` files of ``pkg`` and of its sub-packages (setuptools ``find_packages`` rules)."""
    yield from (p for p in pkg.glob("*.py") if p.is_file())
    for child in sorted(pkg.iterdir()):
        if child.is_dir() and "." not in child.name and (child / "__init__.py").is_file():
            yield from _package_modules(child)


def package_files(source_root: Path | None = None) -> dict[str, Path]:
    """The package's files that ship: zip entry name (``aoai_helpers/...``) → file on disk."""
    root = (source_root or _default_root()).resolve()
    pkg = root / PACKAGE
    if not (pkg / "__init__.py").is_file():
        raise ConfigError(f"no {PACKAGE} package in {root}")
    project = _pyproject(root)
    found: set[Path] = set()
    if project is None:  # an installed package: ship what was installed
        found.update(p for p in pkg.rglob("*") if p.is_file())
    else:
        found.update(_package_modules(pkg))
        setuptools_cfg = project.get("tool", {}).get("setuptools", {})
        for pattern in setuptools_cfg.get("package-data", {}).get(PACKAGE, []):
            found.update(p for p in pkg.glob(pattern) if p.is_file())
    out: dict[str, Path] = {}
    for path in found:
        rel = PurePosixPath(path.relative_to(pkg).as_posix())
        if not _skipped(rel):
            out[f"{PACKAGE}/{rel}"] = path
    return out


# ----------------------------------------------------------------------------- requirements


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(project: dict[str, Any] | None) -> list[tuple[str, str | None]]:
    """``(requirement, extra)`` pairs: from pyproject, else from the installed metadata."""
    if project is not None:
        proj = project.get("project", {})
        pairs: list[tuple[str, str | None]] = [(r, None) for r in proj.get("dependencies", [])]
        for extra, reqs in proj.get("optional-dependencies", {}).items():
            pairs.extend((r, extra) for r in reqs)
        return pairs
    try:
        lines = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"cannot list the dependencies: no pyproject.toml and {DIST_NAME} is not installed"
        ) from None
    out: list[tuple[str, str | None]] = []
    for line in lines:
        req, _sep, marker = line.partition(";")
        extra = _EXTRA_MARKER.search(marker)
        out.append((req.strip(), extra.group(1) if extra else None))
    return out


def _pinned(requirement: str, *, exact: bool) -> tuple[str, str]:
    """``(sort key, line)``: ``name[extras]==<installed>``, else the declared specifier."""
    m = _REQUIREMENT.match(requirement)
    if m is None:
        raise ConfigError(f"cannot read the requirement {requirement!r}")
    name, extras, spec = m["name"], m["extras"] or "", m["spec"].replace(" ", "")
    version = installed_version(name)
    if version is not None:
        return _canonical(name), f"{name}{extras}=={version}"
    if exact:
        raise ConfigError(
            f"{name} is not installed here: install the package's dependencies before building "
            "(the zip pins them to the installed versions)"
        )
    return _canonical(name), f"{name}{extras}{spec}"


def requirements_txt(source_root: Path | None = None) -> str:
    """The ``requirements.txt`` of the zip (deterministic: sorted by package name)."""
    root = (source_root or _default_root()).resolve()
    declared = _declared(_pyproject(root))
    lines: dict[str, str] = {}
    runtime = {_canonical(n): n for n in (_FUNCTIONS_LIB, *_FUNCTION_RUNTIME)}
    for req, extra in declared:
        m = _REQUIREMENT.match(req)
        name = _canonical(m["name"]) if m else ""
        if extra is None:
            key, line = _pinned(req, exact=True)
            lines[key] = line
        elif extra in _DRIVER_EXTRAS:
            key, line = _pinned(req, exact=False)
            lines[key] = line
        elif name in runtime:
            runtime[name] = req  # its declared specifier, the fallback when not installed
    for req in runtime.values():
        key, line = _pinned(req, exact=False)
        lines[key] = line
    header = (
        f"# Generated by aoai_helpers.azure.functions.build: {_FUNCTIONS_LIB}, the runtime dependencies\n"
        f"# of {DIST_NAME} pinned to the build environment, {', '.join(_FUNCTION_RUNTIME)} (the\n"
        "# reconcile timer) and the SQL Server / PostgreSQL drivers (any AOAI_DB_URL works after\n"
        "# the remote build).\n"
    )
    return header + "".join(lines[k] + "\n" for k in sorted(lines))


# ----------------------------------------------------------------------------- the zip


def _version(root: Path) -> str:
    project = _pyproject(root)
    if project is not None and project.get("project", {}).get("version"):
        return str(project["project"]["version"])
    from aoai_helpers import __version__

    return __version__


def host_json(template: bytes, max_batch_size: int | None = None) -> bytes:
    """``host.json`` for a batch of ``max_batch_size`` events (None: the template's), as
    canonical bytes: the template's key order, two-space indent, a final newline — so the same
    template and size always give the same bytes."""
    try:
        data = json.loads(template)
    except ValueError as exc:
        raise ConfigError(f"the function template's host.json is not JSON: {exc}") from None
    hubs = data.setdefault("extensions", {}).setdefault("eventHubs", {})
    if max_batch_size is not None:
        if max_batch_size < 1:
            raise ConfigError(f"function.max_batch_size must be at least 1, not {max_batch_size}")
        hubs["maxEventBatchSize"] = max_batch_size
        hubs["prefetchCount"] = max(_PREFETCH, 2 * max_batch_size)
        if max_batch_size == 1:
            hubs.pop("minEventBatchSize", None)
            hubs.pop("maxWaitTime", None)
        else:
            hubs["minEventBatchSize"] = min(_MIN_BATCH, max(1, max_batch_size // 2))
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _entries(root: Path, max_batch_size: int | None = None) -> dict[str, bytes]:
    files = package_files(root)
    template = root / PACKAGE / TEMPLATE_DIR
    entries = {name: path.read_bytes() for name, path in files.items()}
    for name in ROOT_FILES:
        path = template / name
        if not path.is_file():
            raise ConfigError(f"the function template lacks {name} ({path})")
        entries[name] = path.read_bytes()
    entries["host.json"] = host_json(entries["host.json"], max_batch_size)
    entries["requirements.txt"] = requirements_txt(root).encode("utf-8")
    tokenizers = fnmatch.filter(entries, f"{PACKAGE}/data/tokenizers/*.tiktoken")
    if len(tokenizers) < 2:
        raise ConfigError(
            "the tokenizer files (data/tokenizers/*.tiktoken) are missing: the function would "
            "not count tokens offline"
        )
    return entries


def _zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.create_system = _UNIX
            info.external_attr = _ZIP_MODE << 16
            zf.writestr(
                info, entries[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL
            )
    return buf.getvalue()


def build_zip(
    out_dir: Path, *, source_root: Path | None = None, max_batch_size: int | None = None
) -> BuildResult:
    """Build the deployment zip into ``out_dir`` (created if needed) and describe it.

    ``max_batch_size``: the spec's ``function.max_batch_size``, written to ``host.json``
    (None: the template's 500). The same sources and size give the same bytes.

    ``source_root`` is the directory that holds the ``aoai_helpers`` package (and, for a
    source tree, ``pyproject.toml``); default: the one this module was imported from.
    Raises :class:`~aoai_helpers.exceptions.ConfigError` when the sources are incomplete
    (template, tokenizer files) or a runtime dependency is not installed.
    """
    root = (source_root or _default_root()).resolve()
    data = _zip_bytes(_entries(root, max_batch_size))
    digest = hashlib.sha256(data).hexdigest()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{ZIP_PREFIX}-{_version(root)}-{digest[:12]}.zip"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    return BuildResult(path=path, size_bytes=len(data), sha256=digest, files=names)


# ----------------------------------------------------------------------------- checking a build


def unpack(zip_path: Path, dest: Path) -> Path:
    """Extract a built zip into ``dest`` (as the host's ``wwwroot``) and return ``dest``.

    Entries that would land outside ``dest`` (absolute paths, ``..``) are refused.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            target = (dest / name).resolve()
            if not target.is_relative_to(dest):
                raise ConfigError(f"{zip_path}: entry {name!r} points outside the folder")
        zf.extractall(dest)
    return dest


_INDEX_SCRIPT: Final = """\
import json, sys
import function_app
print(json.dumps([f.get_function_name() for f in function_app.app.get_functions()]))
"""


def indexed_functions(
    app_dir: Path, *, python: str | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The function names a fresh interpreter finds in ``app_dir/function_app.py``.

    Runs ``python`` (default: this interpreter, which must have azure-functions and the
    runtime dependencies) with ``cwd`` and ``PYTHONPATH`` set to ``app_dir`` only, so the
    ``aoai_helpers`` imported is the one in the build. ``env`` is the child's environment
    (default: this process's, without ``PYTHONPATH``). Raises
    :class:`~aoai_helpers.exceptions.ConfigError` with the child's last error line when the
    import fails.
    """
    app_dir = Path(app_dir).resolve()
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = str(app_dir)
    child_env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [python or sys.executable, "-c", _INDEX_SCRIPT],
        cwd=app_dir,
        env=child_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise ConfigError(
            f"importing function_app from {app_dir} failed: {lines[-1] if lines else proc.returncode}"
        )
    names = json.loads(proc.stdout.strip().splitlines()[-1])
    return [str(n) for n in names]
