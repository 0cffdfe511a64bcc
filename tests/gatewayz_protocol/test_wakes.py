"""The wake stream's two halves (gatewayz_protocol/wakes.py): the commands a worker sends and
what the leader makes of an XREAD reply, including entries no worker could have written."""

from __future__ import annotations

from gatewayz_protocol.wakes import MAX_ENTRIES, TTL_SECONDS, decode_wakes, wake_commands


def test_commands_add_capped_entries_then_expire() -> None:
    assert wake_commands("k", []) == []
    assert wake_commands("k", ["a", "b"]) == [
        ("XADD", "k", "MAXLEN", "~", MAX_ENTRIES, "*", "p", "a"),
        ("XADD", "k", "MAXLEN", "~", MAX_ENTRIES, "*", "p", "b"),
        ("EXPIRE", "k", TTL_SECONDS),
    ]


def test_decode_resp2_reply() -> None:
    reply = [
        [
            b"k",
            [
                (b"1-0", {b"p": b"openrouter"}),
                (b"1-1", {b"p": b"bad name!"}),
                (b"2-0", {b"p": b"openrouter"}),
                (b"2-1", {b"x": b"groq"}),
                (b"3-0", {b"p": b"\xff"}),
                (b"3-1", {b"p": b"groq"}),
            ],
        ]
    ]
    assert decode_wakes(reply) == (b"3-1", ["openrouter", "groq"], 3)


def test_decode_nothing() -> None:
    assert decode_wakes(None) == (None, [], 0)
    assert decode_wakes([]) == (None, [], 0)
