"""A compaction walks the live entries a batch at a time, while writes go on.

The walk holds the engine's lock only per batch, so every kind of write can
land while it runs: on keys already walked, on keys not walked yet, on new
keys. These tests stop a walk halfway (at its first write, which
comes once WRITE_CHUNK bytes of frames are ready), make
those writes, and check that memory, the compacted file and a reopen all
agree with a plain dict that saw the same writes.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field

import pytest
from scripted_files import ScriptedFiles

from aiokv import KV, Durability
from aiokv._engine import Engine
from aiokv._format import HEADER_SIZE
from aiokv._group_commit import FrameUndo
from aiokv._snapshot import durable_batch, pending_deletions
from aiokv._table import MISSING

LEVELS = ("fsync", "flush", "buffered")
KEYS = 40_000  # about 640 KiB of frames: the first write comes partway through,
# with k5..k8 walked and k39500..k39800 not yet


@dataclass
class WalkGate:
    """Files that hold a compaction at its first snapshot write until released."""

    files: ScriptedFiles = field(default_factory=ScriptedFiles)
    walk_error: OSError | None = None
    """Raised by that write once released."""

    def __post_init__(self) -> None:
        self.held = self.files.hold("pwrite", when=lambda call: call.args[2] >= HEADER_SIZE)


def filled_store(path: str, durability: Durability) -> tuple[KV, WalkGate, dict[str, object]]:
    model: dict[str, object] = {f"k{i}": float(i) for i in range(KEYS)}
    with KV(path, durability="buffered") as filler:  # quick, at any level
        for key, value in model.items():
            filler.set(key, value)
    gate = WalkGate()
    kv = KV(path, durability=durability)
    kv._engine = Engine(path, files=gate.files, durability=durability)
    kv.set("list", [1, {"x": "y"}])
    kv.set("n", 10)
    kv.set("ttl", "soon", ttl=1000)
    model.update({"list": [1, {"x": "y"}], "n": 10, "ttl": "soon"})
    return kv, gate, model


class Walk:
    """A compaction started in a thread and paused halfway through its walk."""

    def __init__(self, kv: KV, gate: WalkGate) -> None:
        self.error: BaseException | None = None
        self._gate = gate
        self._thread = threading.Thread(target=self._compact, args=(kv,))
        self._thread.start()
        gate.held.wait_reached(30)  # the compaction wrote its first chunk
        engine = kv._engine
        assert engine.table.frozen and engine.table.split

    def _compact(self, kv: KV) -> None:
        try:
            kv.compact()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> BaseException | None:
        self._gate.held.release(self._gate.walk_error)
        self._thread.join(30)
        assert not self._thread.is_alive()
        return self.error


EXPIRING = {"k39800", "new ttl"}
"""The keys that have an expiry once write_everywhere() has run."""


def write_everywhere(kv: KV, model: dict[str, object]) -> None:
    """Writes of every kind, on walked, unwalked and new keys."""
    kv.set("k5", "walked, overwritten")
    kv.set("k39500", "unwalked, overwritten")
    for key in ("k6", "k39600", "k7", "k39700"):
        assert kv.delete(key)
        del model[key]
    kv.set("k7", "walked, deleted, set again")
    kv.set("k39700", "unwalked, deleted, set again")
    kv.set("new1", "created")
    kv.set("new2", "created then deleted")
    assert kv.delete("new2")
    kv.set("new3", "created, deleted, created")
    assert kv.delete("new3")
    kv.set("new3", "again")
    assert kv.delete("never there")  # absent is fine
    assert kv.incr("counter") == 1
    assert kv.incr("counter", 2) == 3
    assert kv.incr("n", 5) == 15
    assert kv.expire("k39800", 500)
    assert kv.expire("ttl", None)
    kv.set("list", {"replaced": True})
    kv.set("new ttl", 1.5, ttl=600)
    model.update({
        "k5": "walked, overwritten", "k39500": "unwalked, overwritten",
        "k7": "walked, deleted, set again", "k39700": "unwalked, deleted, set again",
        "new1": "created", "new3": "again", "counter": 3, "n": 15,
        "list": {"replaced": True}, "new ttl": 1.5,
    })


def paused_walk_with_writes(path: str, durability: Durability
                            ) -> tuple[KV, WalkGate, dict[str, object], Walk]:
    """A filled store, its compaction paused mid-walk, and writes of every kind made."""
    kv, gate, model = filled_store(path, durability)
    walk = Walk(kv, gate)
    write_everywhere(kv, model)
    return kv, gate, model, walk


def assert_store_is(kv: KV, model: dict[str, object], expiring: set[str]) -> None:
    assert kv.get_all() == model
    assert sorted(kv.keys()) == sorted(model)
    assert kv.stats().keys == len(model)
    for key in ("k5", "k6", "new2", "new3", "counter", "k39800", "ttl"):
        assert kv.exists(key) == (key in model), key
        assert kv.get(key, "absent") == model.get(key, "absent"), key
    for key in (*expiring, "k5", "k39500", "k7", "n", "list", "ttl", "counter"):
        if key in model:
            assert (kv.ttl(key) > 0) == (key in expiring), key


@pytest.mark.parametrize("durability", LEVELS)
def test_writes_of_every_kind_during_a_walk_are_kept_in_memory_and_on_disk(
    store_path: str, durability: Durability,
) -> None:
    kv, _, model, walk = paused_walk_with_writes(store_path, durability)
    assert_store_is(kv, model, EXPIRING)  # reads see the writes while the walk is paused
    assert walk.finish() is None
    engine = kv._engine
    assert not engine.table.split and not engine.table.added and not engine.table.gone
    assert kv.stats().compactions == 1
    assert_store_is(kv, model, EXPIRING)
    kv.set("after", 1)
    model["after"] = 1
    kv.close()
    with KV(store_path) as reopened:
        assert_store_is(reopened, model, EXPIRING)


@pytest.mark.parametrize("durability", LEVELS)
def test_a_walk_that_fails_folds_the_writes_back_and_nothing_is_lost(
    store_path: str, durability: Durability,
) -> None:
    kv, gate, model, walk = paused_walk_with_writes(store_path, durability)
    gate.walk_error = OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(walk.finish(), OSError)
    assert not kv._engine.table.split
    assert_store_is(kv, model, EXPIRING)
    kv.delete("new1")
    del model["new1"]
    kv.close()
    with KV(store_path) as reopened:
        assert_store_is(reopened, model, EXPIRING)


@pytest.mark.parametrize("durability", LEVELS)
def test_a_clear_during_a_walk_voids_the_compaction(store_path: str,
                                                     durability: Durability) -> None:
    kv, gate, _ = filled_store(store_path, durability)
    walk = Walk(kv, gate)
    kv.set("new", 1)
    kv.delete("k5")
    assert kv.clear()
    kv.set("after the clear", 2)
    assert walk.finish() is None  # a voided compaction is no error
    assert kv.get_all() == {"after the clear": 2}
    kv.close()
    with KV(store_path) as reopened:
        assert reopened.get_all() == {"after the clear": 2}


def test_at_fsync_a_batch_that_fails_during_a_walk_is_rolled_back_in_the_snapshot_too(
    store_path: str,
) -> None:
    kv, gate, model = filled_store(store_path, "fsync")
    walk = Walk(kv, gate)
    failing = gate.files.fail("write", OSError(errno.EIO, "Input/output error"))
    try:
        assert not kv.delete("k39600")  # the seed's contract: False, and logged
        assert not kv.delete("k6")
        for key in ("new", "k39500"):
            with pytest.raises(OSError):
                kv.set(key, "lost")
    finally:
        gate.files.unscript(failing)
    assert kv.get_all() == model  # every failed write rolled back in memory
    kv.set("k39601", "kept")
    model["k39601"] = "kept"
    assert walk.finish() is None
    assert kv.get_all() == model
    kv.close()
    with KV(store_path) as reopened:
        assert reopened.get_all() == model


# -- a batch as the log holds it (pure) ---------------------------------------


def test_a_batch_taken_while_fsync_writes_are_queued_shows_the_values_from_before_them(
) -> None:
    batch = [
        ("plain", 1.0),
        ("overwritten", "queued value"),
        ("deleted", MISSING),  # a tombstone left by a queued delete
        ("created", "queued value"),  # did not exist before the queued set
        ("twice", "second queued value"),
        ("tombstone", MISSING),  # deleted for good
    ]
    undo: list[tuple[str, object, float | None]] = [
        ("overwritten", "durable", 2e9),
        ("deleted", "durable", None),
        ("created", MISSING, None),
        ("twice", "durable", None),
        ("twice", "first queued value", 3e9),
    ]
    kept, expiries = durable_batch(batch, undo, {"overwritten": 4e9, "twice": 3e9}, now=1e9)
    assert kept == [("plain", 1.0), ("overwritten", "durable"), ("deleted", "durable"),
                    ("twice", "durable")]
    assert expiries == {"overwritten": 2e9}


def test_a_batch_leaves_out_keys_expired_by_the_time_it_is_taken() -> None:
    batch = [("expired", 1), ("due later", 2), ("forever", 3), ("revived", 4)]
    undo: list[tuple[str, object, float | None]] = [("revived", 0, 5.0)]
    kept, expiries = durable_batch(batch, undo, {"expired": 10.0, "due later": 10.5,
                                                 "revived": 99.0}, now=10.0)
    assert kept == [("due later", 2), ("forever", 3)]
    assert expiries == {"due later": 10.5}


def test_a_key_deleted_by_a_queued_write_is_still_in_the_snapshot_as_the_log_holds_it(
) -> None:
    # Found by the kill harness at "fsync": a delete queued (not yet fsynced)
    # when a compaction began took its key out of the entries, so the walk
    # never met it and the new file lost a value the log still held.
    undo: list[tuple[str, object, float | None]] = [
        ("deleted", "durable", 5e9),
        ("created then deleted", MISSING, None),
        ("deleted", MISSING, None),  # set again, then... (the oldest wins)
        ("present", "durable", None),
    ]
    entries: dict[str, object] = {"present": "queued value"}
    batch = pending_deletions(undo, entries)  # type: ignore[arg-type]
    assert [key for key, _ in batch] == ["deleted", "created then deleted"]
    kept, expiries = durable_batch(batch, undo, {}, now=1e9)
    assert kept == [("deleted", "durable")]
    assert expiries == {"deleted": 5e9}


def test_a_queued_atomic_batch_counts_as_the_writes_of_each_of_its_keys() -> None:
    # An atomic batch's frame carries the undo of every key it changed (a
    # list): the walk takes each of those keys as the log holds it, before
    # the batch, and sees the keys it removed.
    undo: list[FrameUndo] = [
        ("single", "durable", None),
        [("moved from", "durable job", None), ("moved to", MISSING, None),
         ("single", "set by the single write", 7e9)],
    ]
    entries: dict[str, object] = {"single": "batch value", "moved to": "durable job"}
    assert [key for key, _ in pending_deletions(undo, entries)] == [  # type: ignore[arg-type]
        "moved from"]
    batch = [("single", "batch value"), ("moved to", "durable job"), ("moved from", MISSING)]
    kept, expiries = durable_batch(batch, undo, {}, now=1e9)
    assert kept == [("single", "durable"), ("moved from", "durable job")]
    assert expiries == {}
