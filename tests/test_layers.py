"""Imports in host_agent flow down the pipeline: no cycle, no reach back up, nothing imports the CLI.

LAYERS is the table of docs/architecture.md ("What each part may import"): a package or top-level
module may import only those of a lower layer (and itself). The test reads every import of every
module, the ones inside functions too, so a lazy import cannot hide a back-reach or a cycle.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "host_agent"

# lowest first; each layer may import the layers before it
LAYERS: list[tuple[str, ...]] = [
    ("errors", "paths"),
    ("wire", "owner", "config"),
    ("bus", "routes"),
    ("store",),
    ("ingest", "outbox", "commands", "updates"),
    ("terms",),
    ("api",),
    ("console",),
    ("webapp",),
    ("service",),
    ("board",),
    ("rig",),
    ("cli",),
]
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The host_agent modules this file imports (a name imported from a package counts as its module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            names.update(submodules)
            if len(submodules) < len(node.names):  # a name defined in the module itself
                names.add(node.module)
    return {name for name in names if name in modules and name != "host_agent"}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_part_of_host_agent_has_a_layer():
    parts = {_part(name) for name in _graph() if name != "host_agent"}
    unplaced = sorted(parts - set(LEVEL))
    assert not unplaced, f"place {unplaced} in LAYERS (tests/test_layers.py) and docs/architecture.md"


def test_host_agent_imports_only_flow_down_the_layers():
    wrong = []
    for module, imported in sorted(_graph().items()):
        if module == "host_agent":
            continue
        for target in sorted(imported):
            source_part, target_part = _part(module), _part(target)
            if target == "host_agent" or source_part == target_part:
                continue
            if LEVEL[target_part] >= LEVEL[source_part]:
                wrong.append(f"{module} imports {target} ({source_part} may not import {target_part})")
    assert not wrong, "\n".join(wrong)


def test_host_agent_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_back_reach_and_a_cycle(tmp_path):
    """The rules above can fail: a store module importing the API, and two modules importing each other."""
    modules = {"host_agent.store.x": tmp_path / "x.py", "host_agent.api.y": tmp_path / "y.py"}
    modules["host_agent.store.x"].write_text("def f():\n    from host_agent.api import y\n")
    modules["host_agent.api.y"].write_text("from host_agent.store.x import f\n")
    assert _imports(modules["host_agent.store.x"], modules) == {"host_agent.api.y"}
    assert _imports(modules["host_agent.api.y"], modules) == {"host_agent.store.x"}
    assert LEVEL["api"] > LEVEL["store"]


def test_the_architecture_page_states_the_same_layers():
    page = (REPO / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", page, re.M)
    stated = [tuple(name.strip(" `") for name in names.split(",")) for _, names in rows]
    assert stated == LAYERS, "docs/architecture.md's layer table differs from tests/test_layers.py"


def test_every_package_of_host_agent_declares_what_it_offers_in_all():
    """Each package names its offer in __all__ (empty: its modules are imported by path), and has it."""
    problems = []
    for path in sorted(PACKAGE.rglob("__init__.py")):
        name = ".".join(path.relative_to(REPO).parent.parts)
        package = importlib.import_module(name)
        offered = getattr(package, "__all__", None)
        if not isinstance(offered, list) or not all(isinstance(entry, str) for entry in offered):
            problems.append(f"{name}: no __all__ list of names")
            continue
        problems += [
            f"{name}: __all__ names {entry!r}, which it lacks"
            for entry in offered
            if not hasattr(package, entry)
        ]
        if not offered and "imported by path" not in (package.__doc__ or ""):
            problems.append(f"{name}: an empty __all__ and a docstring that does not say how it is used")
    assert not problems, "\n".join(problems)


SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|EXPLAIN)\s")
# the rig starts and empties the tests' PostgreSQL server (a server's administration, not a store)
SQL_ALLOWED = {"host_agent/rig/postgres.py"}


def _sql_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string literals (f-strings' text too) of a module that start like SQL."""
    return [
        (node.lineno, node.value[:60])
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value)
    ]


def test_only_the_store_speaks_sql():
    """Issues 18 and 22: one package speaks SQL, in each backend's words; the others call its methods."""
    spoken = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for name, path in sorted(_modules().items())
        if _part(name) != "store" and path.relative_to(REPO).as_posix() not in SQL_ALLOWED
        for line, text in _sql_strings(path)
    ]
    assert not spoken, "\n".join(spoken)


def test_the_sql_check_sees_a_statement_in_an_f_string_and_not_in_prose(tmp_path):
    module = tmp_path / "x.py"
    module.write_text(
        'def f(store, t):\n    """Select the rows."""\n    return store.query(f"SELECT * FROM {t}")\n'
    )
    assert _sql_strings(module) == [(3, "SELECT * FROM ")]
