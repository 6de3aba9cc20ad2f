"""docs/security.md's table of hostile input names tests that exist (the docs cannot point at nothing)."""

from __future__ import annotations

import ast
import re

from tests.helpers import REPO


def _table_rows() -> list[str]:
    text = (REPO / "docs" / "security.md").read_text()
    section = text.split("## Hostile input", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def _test_names(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_row_of_the_hostile_input_table_names_tests_that_exist():
    rows = _table_rows()
    assert len(rows) >= 12
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        references = re.findall(r"`((?:tests/[\w/]+\.py)?)::(\w+)`", cell)
        assert references, f"no test named in: {row[:80]}"
        current = None
        for path, name in references:
            current = path or current
            assert current, f"a bare ::{name} with no file before it"
            assert name in _test_names(current), f"{current}::{name} does not exist"
