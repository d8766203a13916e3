"""The code stays mypy --strict and ruff clean; the test command checks both."""

from __future__ import annotations

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
