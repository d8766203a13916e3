"""Checks of the engine's internal state that several test modules share."""

from __future__ import annotations

from aiokv._engine import Engine


def hot_path_is_sound(engine: Engine) -> bool:
    """Room on the hot path only while taking it does all a set must do."""
    with engine._lock:
        if engine._fast_end <= engine._file_bytes:
            return True
        return (engine._state == "open" and engine._window is not None
                and engine._unsynced and not engine._detour and not engine._hand_over
                and engine._rewrite is None and not engine._split and not engine._expiries
                and not engine._tail_dirty
                and engine._fast_end <= engine._window_end
                and engine._fast_end < engine._next_compaction_check)


def hot_path_room(engine: Engine) -> int:
    """Bytes set()'s hot path may still append (0 when closed)."""
    with engine._lock:
        return max(engine._fast_end - engine._file_bytes, 0)
