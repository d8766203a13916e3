"""What an atomic batch costs the local store: one record, and at "fsync"
one fsync, whatever its size (the backends' shared contract is in
test_conformance, crash-safety in test_power_loss and test_fault_injection)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_files import ScriptedFiles

from aiokv import WriteBatch
from aiokv._engine import Engine
from aiokv._recovery import count_frames


@pytest.mark.parametrize("how", ["set_many", "batch"])
def test_a_batch_at_fsync_is_one_record_and_one_fsync(tmp_path: Path, how: str) -> None:
    files = ScriptedFiles()
    engine = Engine(str(tmp_path / "s.kv"), durability="fsync", files=files)
    engine.open()
    try:
        engine.set("before", 0)
        engine.flush()
        records = count_frames((tmp_path / "s.kv").read_bytes())
        fsyncs = sum(call.name == "fsync" for call in files.calls)
        items = {f"k{i}": [i, "x" * (i % 7)] for i in range(1_000)}
        if how == "set_many":
            commit = engine.set_many(items, None)
        else:
            batch = WriteBatch(engine.clock)
            for key, value in items.items():
                batch.set(key, value)
            batch.delete("before")
            batch.incr("count", 5)
            _, commit = engine.commit_batch(batch)
        assert commit is not None
        commit.wait()
        assert sum(call.name == "fsync" for call in files.calls) == fsyncs + 1
        assert count_frames((tmp_path / "s.kv").read_bytes()) == records + 1
    finally:
        engine.close()
