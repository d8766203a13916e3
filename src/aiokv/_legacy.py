"""Reading the state file of the original, JSON-based aiokv."""

from __future__ import annotations

INT_LIMITS = (-(1 << 63), (1 << 64) - 1)
"""The ints msgpack can store; JSON has no limit, so a state file may hold more."""

INTS_AS_STRINGS_HINT = "`aiokv migrate --ints-as-strings` converts such ints to strings"


def parse_legacy_json(data: bytes) -> dict[str, object] | None:
    """The entries of a file holding one JSON object, or None if it is not one."""
    if not data.lstrip().startswith(b"{"):
        return None
    import json  # noqa: PLC0415 (only this one-time conversion needs it)

    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(document, dict):
        return None
    return document


def ints_as_strings(value: object) -> tuple[object, int]:
    """``value`` (parsed JSON) with every int beyond 64 bits made its decimal
    string, and how many were; the rest is returned as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        if INT_LIMITS[0] <= value <= INT_LIMITS[1]:
            return value, 0
        return str(value), 1
    if isinstance(value, list):
        converted = [ints_as_strings(item) for item in value]
        return [item for item, _ in converted], sum(count for _, count in converted)
    if isinstance(value, dict):
        pairs = {key: ints_as_strings(item) for key, item in value.items()}
        return ({key: item for key, (item, _) in pairs.items()},
                sum(count for _, count in pairs.values()))
    return value, 0
