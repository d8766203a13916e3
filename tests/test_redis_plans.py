"""The operations on a server as pure plans, driven here with scripted replies.

No server: each plan yields the commands it wants and these tests answer
them, checking what a plan sends and what it makes of the replies.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import msgpack
import pytest

from aiokv import CorruptionError
from aiokv._redis_plans import (
    APPLY,
    MAX_TTL_MS,
    UNKNOWN,
    Batch,
    Command,
    Names,
    Nodes,
    decode,
    encode,
    expire,
    get,
    scan,
    ttl,
    ttl_ms,
    update,
)


def drive(plan: Generator[Any, Any, Any], replies: list[Any]) -> tuple[Any, list[Any]]:
    """Answer the plan's requests with ``replies`` in turn; (result, requests)."""
    sent = []
    try:
        request = next(plan)
        for reply in replies:
            sent.append(request)
            request = plan.send(reply)
        raise AssertionError(f"the plan wanted more: {request}")
    except StopIteration as stop:
        return stop.value, sent


def test_ints_are_decimal_text_and_nothing_else_ever_is() -> None:
    assert encode("k", 42) == b"42"
    assert encode("k", -(2**63)) == b"-9223372036854775808"
    assert encode("k", 2**64 - 1) == b"18446744073709551615"
    for value in (None, True, 1.0, "12", b"12", [1], {"a": 1}, float("nan")):
        raw = encode("k", value)
        assert raw[0] >= 0x80, (value, raw)  # never a digit or "-"
        assert repr(decode(raw, "k", "where")) == repr(value if value != [1] else [1])


def test_bytes_aiokv_did_not_write_are_corruption_naming_the_key() -> None:
    for raw in (b"\xc1", b"007", b"-", b"A", b"hello", b"\x92\x01", msgpack.packb(5),
                msgpack.packb(-1), msgpack.packb(2**40)):
        with pytest.raises(CorruptionError, match=r"key 'k' holds .* not a value aiokv"):
            decode(raw, "k", "redis://h/0")


@pytest.mark.parametrize(("seconds", "ms"), [(None, None), (0, None), (0.0001, 1), (0.001, 1),
                                             (0.0015, 2), (1.0001, 1001), (60, 60000)])
def test_ttls_are_whole_milliseconds_rounded_up(seconds: float | None, ms: int | None) -> None:
    assert ttl_ms(seconds) == ms


def test_a_ttl_beyond_what_a_server_keeps_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        ttl_ms(MAX_TTL_MS)  # seconds: a thousand times too many


@pytest.mark.parametrize(("left", "answer"), [(-2, -2), (-1, -1), (0, 1), (1, 1), (999, 1),
                                              (1000, 1), (1001, 2), (59_999, 60)])
def test_ttl_rounds_up_where_redis_rounds_to_nearest(left: int, answer: int) -> None:
    result, sent = drive(ttl(Names("p:"), "k"), [left])
    assert result == answer
    assert sent == [Command(("PTTL", b"p:k"), route=b"p:k")]


def test_expire_none_removes_the_expiry_in_one_script_and_a_ttl_sets_milliseconds() -> None:
    result, sent = drive(expire(Names("p:"), "k", None), [1])
    assert result is True and sent[0].script is not None and sent[0].write
    result, sent = drive(expire(Names("p:"), "k", 1.5), [0])
    assert result is False and sent == [Command(("PEXPIRE", b"p:k", 1500), write=True,
                                                route=b"p:k")]


def test_a_cluster_prefix_is_a_hash_tag_unless_spread_or_tagged_already() -> None:
    assert Names("app:", cluster=True).prefix == b"{app:}"
    assert Names("{app}:", cluster=True).prefix == b"{app}:"
    assert Names("app:", cluster=True, spread=True).prefix == b"app:"
    assert Names("app:").prefix == b"app:"
    assert Names("app:", cluster=True).one_slot
    assert not Names("app:", cluster=True, spread=True).one_slot


def test_scan_escapes_the_prefix_asks_a_superset_and_filters_as_fnmatchcase() -> None:
    names = Names("a*[b]\\:")
    plan = scan(names, "user:[!x]*")
    result, sent = drive(plan, [[None], [b"0", [b"a*[b]\\:user:1", b"a*[b]\\:user:x",
                                              b"a*[b]\\:userz"]]])
    assert sent[0] == Nodes(None)
    assert sent[1].args[3] == rb"a\*\[b\]\\:user:*"
    assert result == [b"a*[b]\\:user:1"]


def test_get_decodes_and_gives_the_default_for_a_missing_key() -> None:
    assert drive(get(Names("p:"), "w", "k", "dflt"), [None])[0] == "dflt"
    assert drive(get(Names("p:"), "w", "k", None), [b"7"])[0] == 7
    assert math.isinf(drive(get(Names("p:"), "w", "k", None), [encode("k", math.inf)])[0])


def test_batches_are_commands_sent_together() -> None:
    batch = Batch((Command(("GET", b"a")), Command(("GET", b"b"))))
    assert len(batch.commands) == 2


def test_an_update_with_a_right_guess_is_one_script_and_without_one_a_read_first() -> None:
    names = Names("p:")
    (value, stored), sent = drive(update(names, "here", "n", lambda v: v + 1, 0, ttl=None,
                                         known=b"4"), [[1, 0]])
    assert (value, stored) == (5, b"5")
    assert [request.args[:2] for request in sent] == [("EVALSHA", APPLY.sha)]
    _, sent = drive(update(names, "here", "n", lambda v: v + 1, 0, ttl=None,
                           known=UNKNOWN), [b"4", [1, 0]])
    assert [request.args[0] for request in sent] == ["GET", "EVALSHA"]


def test_an_update_on_a_wrong_guess_goes_on_with_what_the_script_saw() -> None:
    seen = []

    def add_one(value: int) -> int:
        seen.append(value)
        return value + 1

    (value, _), sent = drive(update(Names("p:"), "here", "n", add_one, 0, ttl=None,
                                    known=b"4"), [[0, 0, b"9"], [1, 0]])
    assert value == 10 and seen == [4, 9]
    assert [request.args[0] for request in sent] == ["EVALSHA", "EVALSHA"]


def test_an_error_on_a_guess_is_not_raised_before_the_key_is_read() -> None:
    (value, _), sent = drive(update(Names("p:"), "here", "s", lambda v: v + 1, 0, ttl=None,
                                    known=msgpack.packb("text")), [b"5", [1, 0]])
    assert value == 6
    assert [request.args[0] for request in sent] == ["GET", "EVALSHA"]
