"""Checks of what a caller passes, shared by every backend: keys, values, ttls.

Each raises TypeError or ValueError naming the key, before anything is
written; ``NOW`` is the default value of ``set(key)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar, get_args

from ._format import SET, SET_ENCODED, Encoded, Value, encode_record, encode_value

Durability = Literal["fsync", "flush", "buffered"]
"""When a write is durable: see docs/guarantees.md."""
Recovery = Literal["strict", "salvage"]
"""What open() does with damage: raise, or keep what is intact."""
Stored = Any
"""A value as a store gives it back: whatever the program stored (None, a
bool, int, float, str, bytes, list or dict). The store cannot know which,
so it is typed Any: ``count: int = await kv.get("n", 0)`` type-checks."""
Default = TypeVar("Default")
DURABILITY_LEVELS: tuple[Durability, ...] = get_args(Durability)
RECOVERY_MODES: tuple[Recovery, ...] = get_args(Recovery)


def as_durability(value: str) -> Durability:
    """``value`` as a durability level (a name read from a command line or a
    file); ValueError if it is none."""
    for level in DURABILITY_LEVELS:
        if value == level:
            return level
    raise ValueError(f"durability must be one of {DURABILITY_LEVELS}, not {value!r}")


class _Now:
    """The default value of ``set(key)``: the current Unix time as an int."""

    def __repr__(self) -> str:
        return "<now>"


NOW = _Now()


def check_key(key: object) -> str:
    """``key`` as the exact str a dict would match it by.

    A str subclass (``class Color(str, Enum)``) is stored under its string
    value, not under ``str(key)``, which a subclass may override ("Color.RED").
    """
    if isinstance(key, str):
        return str.__str__(key)
    raise TypeError(f"key must be a str, not {type(key).__name__}: {key!r}")


def prepare(key: str, value: object) -> Value:
    """``value`` as the store holds it (see encode_value); errors name ``key``."""
    try:
        return encode_value(value)
    except TypeError as exc:
        raise TypeError(f"key {key!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"key {key!r}: {exc}") from None


def encode_put(key: str, stored: Value, expires: float | None) -> bytes:
    """The frame of ``key = stored`` expiring at ``expires``; ValueError names the key."""
    try:
        return encode_record(SET_ENCODED if type(stored) is Encoded else SET, key, stored,
                             expires)
    except ValueError as exc:
        raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None


def check_ttl(ttl: object) -> float | None:
    """Seconds to live, or None for "never expires" (None or 0)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if ttl == 0:
        return None
    try:
        seconds = float(ttl)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not 0 < seconds < math.inf:
        raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
    return seconds
