"""The raft core is sans-IO: no module under engine/raft may import anything
that does IO or reads a clock or global randomness (STYLE.md convention 2)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import engine.raft

FORBIDDEN = {
    "asyncio", "socket", "os", "time", "random", "threading", "multiprocessing",
    "subprocess", "select", "selectors", "io", "pathlib", "shutil", "signal",
    "logging", "concurrent", "logstore", "transport",
}

RAFT_DIR = Path(engine.raft.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_raft_core_imports_nothing_that_does_io() -> None:
    files = sorted(p for p in RAFT_DIR.rglob("*.py") if "testing" not in p.parts)
    assert files, "no raft modules found"
    offenders = {
        str(p.relative_to(RAFT_DIR)): sorted(_imported_roots(p) & FORBIDDEN) for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_raft_core_imports_only_stdlib_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"engine"}
    for p in RAFT_DIR.rglob("*.py"):
        if "testing" in p.parts:
            continue
        extra = _imported_roots(p) - allowed
        assert not extra, f"{p.name} imports {extra}"
