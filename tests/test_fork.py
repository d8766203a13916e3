"""A store belongs to the process that opened it: the fork matrix.

Each program of ``tests/fork_programs.py`` opens a store, writes to it,
then forks the way real programs do (a child that only exits, a child that
tries every call, an owner that exits first, multiprocessing with "fork" and
"forkserver", a fork made by C code, forks while a compaction runs). Every
program runs through both shells at every durability level, in a fresh
interpreter. Whatever the child does, the owner keeps working and every
write it acknowledged is in the file; in the child every call raises
``ForkedError`` at once, and exiting, collecting or closing there touches
nothing of the owner's.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiokv import KV, AioKV

PROGRAMS = Path(__file__).with_name("fork_programs.py")
sys.path.insert(0, str(PROGRAMS.parent))
from fork_programs import AFTER, OPERATIONS, WRITES  # noqa: E402

LEVELS = ["fsync", "flush", "buffered"]
SHELLS = ["KV", "AioKV"]


def run_program(program: str, shell: str, durability: str, directory: Path
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one program; return the owner's report and the children's reports."""
    done = subprocess.run(
        [sys.executable, str(PROGRAMS), program, shell, durability, str(directory)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (
        f"the owner died ({_describe(done.returncode)}):\n{done.stdout[-2000:]}"
        f"\n{done.stderr[-3000:]}")
    owner: dict[str, Any] | None = None
    children = []
    for line in done.stdout.splitlines():
        message = json.loads(line)
        if "owner" in message:
            owner = message["owner"]
        else:
            children.append(message["child"])
    assert owner is not None, done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return owner, children


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def assert_owner_writes_are_all_there(directory: Path, extra: dict[str, object]) -> None:
    path = directory / "state.kv"
    assert not (directory / "state.kv.lock.stale").exists()
    with KV(path) as kv:
        held = kv.get_all()
    expected: dict[str, object] = {f"w{i}": i for i in range(WRITES)}
    expected.update({f"a{i}": i for i in range(AFTER)})
    expected.update(extra)
    assert held == expected


def assert_every_operation_raised_forked_error(operations: dict[str, str]) -> None:
    assert operations == {name: "ForkedError" for name, *_ in OPERATIONS}


@pytest.fixture(params=LEVELS)
def durability(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_child_that_only_exits_leaves_the_owners_store_alone(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, children = run_program("child-only-exits", shell, durability, tmp_path)
    assert owner["child_status"] == 0
    assert children == [{}]
    assert_owner_writes_are_all_there(tmp_path, {})


def test_every_call_in_a_child_raises_forked_error_and_closing_there_does_nothing(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, children = run_program("child-tries-everything", shell, durability, tmp_path)
    assert owner["child_status"] == 0
    [child] = children
    assert_every_operation_raised_forked_error(child["operations"])
    assert child["warnings"] == []  # collecting the inherited store warns of nothing
    assert_owner_writes_are_all_there(tmp_path, {})


def test_a_child_outliving_its_owner_cannot_use_the_inherited_store_but_can_open_its_own(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, children = run_program("owner-exits-first", shell, durability, tmp_path)
    assert owner["child_status"] == 0
    [child] = children
    assert_every_operation_raised_forked_error(child["operations"])
    assert_owner_writes_are_all_there(tmp_path, {f"c{i}": i for i in range(100)})


def test_a_child_opening_the_store_while_the_owner_has_it_gets_locked_error(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, children = run_program("child-opens-its-own", shell, durability, tmp_path)
    assert owner["child_status"] == 0
    assert children == [{"own": "LockedError"}]
    assert_owner_writes_are_all_there(tmp_path, {})


def test_multiprocessing_fork_workers_get_forked_error(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, _ = run_program("multiprocessing-fork", shell, durability, tmp_path)
    assert owner["pool"] == ["ForkedError"] * 4
    assert_owner_writes_are_all_there(tmp_path, {})


def test_multiprocessing_forkserver_workers_open_the_store_by_path_once_it_is_free(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, _ = run_program("multiprocessing-forkserver", shell, durability, tmp_path)
    assert owner["sent"].startswith("TypeError: ")
    assert "cannot be pickled" in owner["sent"]
    assert owner["while_open"] == "LockedError"
    assert owner["after_close"] == "stored"
    assert_owner_writes_are_all_there(tmp_path, {"from-worker": 1})


def test_a_fork_made_by_c_code_without_python_fork_handlers_leaves_the_store_alone(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, children = run_program("fork-without-handlers", shell, durability, tmp_path)
    assert owner["child_status"] == 0
    assert children == [{}]
    assert_owner_writes_are_all_there(tmp_path, {})


def test_children_forked_during_compactions_raise_at_once_and_never_wait_on_a_lock(
        shell: str, durability: str, tmp_path: Path) -> None:
    owner, children = run_program("fork-during-compaction", shell, durability, tmp_path)
    assert owner["child_status"] == 0
    assert len(children) == 5
    for child in children:
        assert_every_operation_raised_forked_error(child["operations"])
    assert_owner_writes_are_all_there(tmp_path, {})


def test_a_store_cannot_be_pickled(tmp_path: Path) -> None:
    for store in (KV(tmp_path / "a.kv"), AioKV(tmp_path / "b.kv")):
        with pytest.raises(TypeError, match="cannot be pickled: a store belongs to the process"):
            pickle.dumps(store)
    assert sorted(os.listdir(tmp_path)) == []  # nothing was opened


def test_the_fork_matrix_tries_every_call_of_the_store() -> None:
    """A call added to the store is tried in a forked child (OPERATIONS)
    before it ships: each must raise ForkedError there."""
    public = {name for name in dir(KV) if not name.startswith("_")}
    not_calls = {"close", "from_url", "path", "durability", "readonly"}  # close: a no-op there
    # MutableMapping's mixins, which only make the calls above (get, pop,
    # keys, set), and items()/values(), which are get_all().
    mapping = {"items", "values", "popitem", "setdefault"}
    assert public - not_calls - mapping == {method for _, method, *_ in OPERATIONS}
