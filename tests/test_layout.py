"""The package's layout keeps the promises of ``docs/architecture.md``.

Small modules and functions, imports that only point down the data path (the wings' ranks),
no import cycles (function-level imports count), one SQLAlchemy ``MetaData``, a docstring on
every package, and a document that names only modules that exist. Every check lists all its
offenders in one message.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from sqlalchemy import MetaData

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aoai_helpers"
DOC = ROOT / "docs" / "architecture.md"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
LONG_BECAUSE = "Long because"

#: The wings in the order of the data path: a module imports only its own rank or lower
#: (docs/architecture.md, "The wings"). The top-level modules (``exceptions``, ``clock``,
#: ``clouds``, ``spec``, ``config``, ``auth``) are rank 0.
RANK: dict[str, int] = {
    "": 0,
    "core": 1,
    "db": 2,
    "eventlog": 3,
    "pipeline": 4,
    "analysis": 5,
    "billing": 5,
    "azure": 6,
    "local": 7,
    "synthetic": 8,
    "notebook_steps": 9,
    "cli": 10,
}
#: May import anything: the package's lazy front door and ``python -m``.
EXEMPT = frozenset({"aoai_helpers", "aoai_helpers.__main__"})
#: Not package modules: the root of the function app's deployment zip (runs on the Functions
#: host, imports ``azure.functions``).
NOT_MODULES = frozenset({"template"})


# --- the package's modules ---------------------------------------------------------------


def _files() -> list[Path]:
    """Every ``.py`` file of the package, the function template included."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    """Dotted name → file of every package module (the function template left out)."""
    return {
        _module_name(p): p for p in _files() if not NOT_MODULES & set(p.relative_to(PACKAGE).parts)
    }


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text("utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in RANK else ""


def _resolve(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module of a ``from … import`` (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module
    is_package = _modules()[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """(imported package module, line) for every import in ``module``, at any depth.

    ``from pkg import submodule`` depends on the submodule; ``from pkg import name`` on ``pkg``.
    """
    mods = _modules()
    for node in ast.walk(_tree(mods[module])):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source is None or not (
                source == "aoai_helpers" or source.startswith("aoai_helpers.")
            ):
                continue
            subs = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in mods]
            targets = subs if subs and len(subs) == len(node.names) else [source, *subs]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "aoai_helpers"]
        else:
            continue
        for target in targets:
            if target in mods and target != module:
                yield target, node.lineno


@cache
def _graph() -> dict[str, frozenset[str]]:
    return {m: frozenset(t for t, _ in _imports(m)) for m in _modules()}


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


# --- (a), (b): size -------------------------------------------------------------------------


def test_no_module_is_over_500_lines() -> None:
    offenders = []
    for path in _files():
        lines = len(path.read_text("utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_rel(path)}: {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_60_lines_unless_it_says_why() -> None:
    offenders = []
    for path in _files():
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES and LONG_BECAUSE not in (ast.get_docstring(node) or ""):
                offenders.append(f"{_rel(path)}:{node.lineno} {node.name}: {length} lines")
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines whose docstring does not say "
        f"'{LONG_BECAUSE} …':\n" + "\n".join(offenders)
    )


# --- (c), (d): imports ----------------------------------------------------------------------


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        " ↔ ".join(c) for c in cycles
    )


def test_imports_only_point_down_the_data_path() -> None:
    offenders = []
    for module in sorted(_modules()):
        if module in EXEMPT:
            continue
        for target, line in _imports(module):
            if RANK[_wing(target)] > RANK[_wing(module)]:
                offenders.append(
                    f"{_rel(_modules()[module])}:{line} ({_wing(module) or 'top level'}, "
                    f"rank {RANK[_wing(module)]}) imports {target} (rank {RANK[_wing(target)]})"
                )
    assert not offenders, "upward imports:\n" + "\n".join(offenders)


def test_the_rank_table_names_every_wing() -> None:
    wings = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert wings == set(RANK) - {""}, f"wings without a rank: {sorted(wings - set(RANK))}"


# --- (e): one MetaData ----------------------------------------------------------------------


def test_exactly_one_metadata() -> None:
    holders: dict[int, list[str]] = defaultdict(list)
    failed = []
    for module in sorted(_modules()):
        try:
            loaded = importlib.import_module(module)
        except Exception as exc:  # reported with the others, not one at a time
            failed.append(f"{module}: cannot import ({type(exc).__name__}: {exc})")
            continue
        for attr, value in vars(loaded).items():
            if isinstance(value, MetaData):
                holders[id(value)].append(f"{module}.{attr}")
    assert len(holders) == 1 and not failed, (
        f"{len(holders)} MetaData objects (want one, holding every table):\n"
        + "\n".join(", ".join(names) for names in holders.values())
        + "".join(f"\n{line}" for line in failed)
    )


# --- (f): the architecture document ---------------------------------------------------------

_PATH = re.compile(r"(?<![\w./-])aoai_helpers/[\w/.-]*[\w/]")
_DOTTED = re.compile(r"(?<![\w./-])aoai_helpers(?:\.\w+)+")
_WING_ROW = re.compile(r"^\| (\d+) \| `aoai_helpers/(\w*)/?`", re.MULTILINE)
_REPO_PATH = re.compile(
    r"`((?:policies|sql|notebooks|benchmarks|examples|tests|docs)/[^`\s*<>{}…]*)`"
)


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in _tree(path).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _dotted_exists(name: str) -> bool:
    """A module or package, or a name defined at the top of the longest module it starts with."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if path.is_file():
            rest = parts[cut:]
            return not rest or rest[0] in _top_level_names(path)
    return False


def test_architecture_names_only_modules_that_exist() -> None:
    assert DOC.is_file(), "docs/architecture.md is missing"
    text = DOC.read_text("utf-8")
    in_wings = {
        f"aoai_helpers/{wing}/{name}".replace("//", "/")
        for row in text.splitlines()
        if (match := _WING_ROW.match(row))
        for wing in [match.group(2)]
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", row.split("|")[3])
    }
    missing = sorted(
        {p for p in in_wings if not (ROOT / p).exists()}
        | {p for p in _PATH.findall(text) if not (ROOT / p).exists()}
        | {d for d in _DOTTED.findall(text) if not _dotted_exists(d)}
        | {p for p in _REPO_PATH.findall(text) if not (ROOT / p).exists()}
    )
    assert not missing, "docs/architecture.md names what does not exist:\n" + "\n".join(missing)


def test_architecture_ranks_are_the_ranks_checked_here() -> None:
    documented = {wing: int(rank) for rank, wing in _WING_ROW.findall(DOC.read_text("utf-8"))}
    assert documented == RANK, (
        f"docs/architecture.md 'The wings' says {documented}, tests/test_layout.py checks {RANK}"
    )


def test_every_reference_to_the_architecture_is_docs_architecture_md() -> None:
    skip = {".venv", ".git", "out", "bench-results", "build", "dist", "node_modules"}
    offenders = []
    for suffix in ("py", "md", "ipynb", "yaml", "yml", "toml"):
        for path in ROOT.rglob(f"*.{suffix}"):
            if skip & set(path.relative_to(ROOT).parts) or path == Path(__file__):
                continue
            for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
                if "ARCHITECTURE.md" in line:
                    offenders.append(f"{_rel(path)}:{number}")
    assert not offenders, "references to ARCHITECTURE.md (now docs/architecture.md):\n" + "\n".join(
        sorted(offenders)
    )


# --- (g): packages say what they own --------------------------------------------------------


def test_every_package_directory_has_an_init_with_a_docstring() -> None:
    offenders = []
    folders = {p.parent for p in _files()} - {
        p.parent for p in _files() if NOT_MODULES & set(p.relative_to(PACKAGE).parts)
    }
    for folder in sorted(folders):
        init = folder / "__init__.py"
        if not init.is_file():
            offenders.append(f"{_rel(folder)}/: no __init__.py")
        elif not ast.get_docstring(_tree(init)):
            offenders.append(f"{_rel(init)}: no docstring")
    assert not offenders, "packages that do not say what they own:\n" + "\n".join(offenders)


def test_the_cycle_finder_finds_every_cycle() -> None:
    """The checker itself, on a made-up graph: two cycles, one self-contained chain."""
    graph = {
        "a": frozenset({"b"}),
        "b": frozenset({"c"}),
        "c": frozenset({"a"}),
        "d": frozenset({"e"}),
        "e": frozenset({"d", "f"}),
        "f": frozenset(),
    }
    assert _cycles(graph) == [["a", "b", "c"], ["d", "e"]]
