"""The stores' types, as mypy --strict sees them: test_code_quality checks
this file with the rest, and one test runs mypy on a program with a typo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from aiokv import KV, AioKV, Durability, Recovery
from aiokv._arguments import as_durability
from aiokv._engine import DURABILITY_LEVELS, RECOVERY_MODES

ROOT = Path(__file__).resolve().parent.parent


async def test_get_with_a_default_type_checks_as_the_default_s_type(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("n", 3)
        count: int = await kv.get("n", 0)  # mypy: Any | int, so an int is accepted
        missing: int = await kv.get("absent", 0)
        assert (count, missing) == (3, 0)


def test_the_blocking_get_with_a_default_type_checks_the_same(store_path: str) -> None:
    with KV(store_path) as kv:
        kv.set("name", "bob")
        name: str = kv.get("name", "")
        assert (name, kv.get("absent", "")) == ("bob", "")


def test_the_durability_and_recovery_literals_are_the_levels_the_engine_takes() -> None:
    assert get_args(Durability) == DURABILITY_LEVELS
    assert get_args(Recovery) == RECOVERY_MODES
    level: Durability = "fsync"
    assert as_durability("fsync") == level
    with pytest.raises(ValueError, match="durability must be one of"):
        as_durability("sometimes")


def test_mypy_refuses_a_durability_that_is_no_level(tmp_path: Path) -> None:
    program = tmp_path / "typo.py"
    program.write_text('from aiokv import KV\n\nKV("state.kv", durability="fsnyc")\n')
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Argument "durability" to "KV" has incompatible type' in result.stdout
