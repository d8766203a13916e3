"""Checks of the engine's internal state that several test modules share."""

from __future__ import annotations

from aiokv._engine import Engine


def hot_path_is_sound(engine: Engine) -> bool:
    """Room on the hot path only while taking it does all a set must do."""
    with engine._lock:
        if engine._log.fast_end <= engine._log.end:
            return True
        # The condition itself is the engine's: a copy here could drift from it.
        return (engine._hot_path_open()
                and engine._log.fast_end <= engine._log.window_end
                and engine._log.fast_end < engine._next_compaction_check)


def hot_path_room(engine: Engine) -> int:
    """Bytes set()'s hot path may still append (0 when closed)."""
    with engine._lock:
        return max(engine._log.fast_end - engine._log.end, 0)
