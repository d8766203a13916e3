"""Reading the state file of the original, JSON-based aiokv."""

from __future__ import annotations


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
