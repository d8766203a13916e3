"""Checks of the engine's internal state that several test modules share."""

from __future__ import annotations

from aiokv._engine import Engine


def hot_path_is_sound(engine: Engine) -> bool:
    """Room on the hot path only while taking it does all a set must do."""
    with engine.lock:
        if engine.log.fast_end <= engine.log.end:
            return True
        # The condition itself is the engine's: a copy here could drift from it.
        return (engine.writes.hot_path_open()
                and engine.log.fast_end <= engine.log.window_end
                and engine.log.fast_end < engine.compaction.next_check)


def hot_path_room(engine: Engine) -> int:
    """Bytes set()'s hot path may still append (0 when closed)."""
    with engine.lock:
        return max(engine.log.fast_end - engine.log.end, 0)
