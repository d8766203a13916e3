"""The code stays mypy --strict and ruff clean; the test command checks both."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "mypy", "--strict"],  # files: see [tool.mypy] in pyproject
        [sys.executable, "-m", "ruff", "check", "."],
    ],
    ids=["mypy-strict", "ruff"],
)
def test_the_code_passes(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


MAX_CLASS_LINES = 500
"""The longest a class of the library may be: past it, a part has more than one job."""
LOCK_WORDS = ("lock", "guarded", "thread-safe", "immutable", "no lock", "frozen")


def _library_classes() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in sorted((ROOT / "src" / "aiokv").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [(path.name, node) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    return found


def test_no_class_of_the_library_is_longer_than_500_lines() -> None:
    long = [f"{name}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, node in _library_classes()
            if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES]
    assert not long, long


def test_every_part_of_the_engine_says_which_lock_guards_it() -> None:
    """The classes the engine coordinates name the lock that guards their fields."""
    parts = {"Engine", "Table", "LogWriter", "StoreFiles", "PendingWrites", "Writes",
             "WriterThread", "Compaction", "FileRecovery", "LogFiles", "CutPolicy"}
    silent = []
    for name, node in _library_classes():
        if node.name in parts:
            doc = (ast.get_docstring(node) or "").lower()
            if not any(word in doc for word in LOCK_WORDS):
                silent.append(f"{name}: {node.name}")
    assert not silent, silent
    assert parts <= {node.name for _, node in _library_classes()}
