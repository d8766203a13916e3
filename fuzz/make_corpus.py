"""Write the seed corpus: real logs (intact, torn, damaged), JSON, junk."""

from __future__ import annotations

import json
import os
import sys
import zlib

from aiokv._format import (
    HEADER_SIZE,
    Encoded,
    encode_bulk,
    encode_delete,
    encode_expire,
    encode_follows,
    encode_header,
    encode_set,
    encode_snapshot,
    encode_synced,
    encode_value,
)


def version_2(header: bytes) -> bytes:
    """``header`` as aiokv 0.3 wrote it: version 2, reserved bytes zero."""
    body = header[:8] + (2).to_bytes(2, "big") + header[10:32] + bytes(4)
    return body + zlib.crc32(body).to_bytes(4, "big")


def seeds() -> dict[str, bytes]:
    frames = [
        encode_set("last_command", "ping"),
        encode_set("rate:1.2.3.4", 1_700_000_000.25),
        encode_set("counter", 41),
        encode_set("blob", b"\x96\xce\x00"),
        encode_set("state", encode_value({"users": ["a", "b"], "n": {"x": None}})),
        encode_set("session", "token", expires=1_900_000_000.0),
        encode_delete("counter"),
        encode_expire("last_command", 1_800_000_000),
    ]
    header = encode_header(0, 0.0, HEADER_SIZE)
    log = header + b"".join(frames)
    snapshot = encode_snapshot({"a": 1, "b": "two"}, {"c": Encoded(b"\x92\x01\x02")},
                               {"b": 2_000_000_000.0})
    snapshot += encode_bulk(("d", "e"), (1.5, b"\x96"), {"e": 2_000_000_000.0})
    compacted = encode_header(3, 1_700_000_000.0, HEADER_SIZE + len(snapshot)) + snapshot
    # A SYNCED frame vouches for the first three: later damage is a gap.
    vouched = header + b"".join(frames[:3])
    synced = vouched + encode_synced(len(vouched)) + b"".join(frames[3:])
    gap = bytearray(synced)
    gap[len(vouched) + 30:len(vouched) + 40] = bytes(10)
    flipped = bytearray(log + encode_synced(len(log)))  # vouched: corruption
    flipped[HEADER_SIZE + 12] ^= 0x04
    return {
        "log-intact.bin": log,
        "log-torn.bin": log[:-9],
        "log-version-2.bin": version_2(header) + b"".join(frames),
        "log-zero-tail.bin": log + b"\x00" * 64,
        "log-flipped.bin": bytes(flipped),
        "log-synced.bin": synced,
        "log-gap.bin": bytes(gap),
        "log-compacted.bin": compacted + frames[0],
        "frame-only.bin": frames[4],
        "header-only.bin": header,
        "header-cut.bin": header[:13],
        # A log file (format 3) following a base of len(log) bytes, vouched
        # for after its first record, and a torn one.
        "logfile-intact.bin": (logfile := encode_header(0, 0.0, HEADER_SIZE, 1, log_file=True)
                               + encode_follows(0, len(log), 0) + frames[0])
                              + encode_synced(len(logfile)) + b"".join(frames[1:]),
        "logfile-torn.bin": logfile[:-5],
        "legacy.json": json.dumps({"last_command": "ping", "n": [1, 2.5, None]}).encode(),
        "junk.bin": b"hello, not a store",
        "empty.bin": b"",
    }


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "corpus")
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(directory, name), "wb") as file:
            file.write(data)


if __name__ == "__main__":
    main()
