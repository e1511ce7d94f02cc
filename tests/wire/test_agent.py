"""The agent protocol's lines: every message round-trips, anything else is an
AgentLineError (never another exception), whatever the bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.agent import (
    AgentLineError,
    Answer,
    Control,
    Leg,
    Open,
    encode,
    parse_from_gateway,
    parse_hello,
)


@pytest.mark.parametrize("msg", [Control("lgt_x"), Leg("l1", "lgt_x"), Leg("l1", "t", "no route")])
def test_agent_lines_round_trip(msg: Control | Leg) -> None:
    line = encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_hello(line) == msg


@pytest.mark.parametrize(
    "msg",
    [
        Open("l1", "app"),
        Open("l1", "events", address="10.0.0.7:9092"),
        Open("l1", "app", auth=True),
        Answer(True, agent="site"),
        Answer(False, error="revoked"),
    ],
)
def test_gateway_lines_round_trip(msg: Open | Answer) -> None:
    assert parse_from_gateway(encode(msg)) == msg


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"\x00\xff\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{"leg": 1, "token": "x"}\n', "control or a leg"),
        (b'{"control": 5}\n', "control or a leg"),
        (b"{}\n", "control or a leg"),
    ],
)
def test_bad_hello_lines(line: bytes, why: str) -> None:
    with pytest.raises(AgentLineError, match=why):
        parse_hello(line)


def test_unknown_gateway_lines_are_skipped() -> None:
    assert parse_from_gateway(b'{"news": 1}\n') is None


def test_open_fields_of_the_wrong_type_are_left_out() -> None:
    """Only ``auth: true`` asks the agent to log in; an address that is not a string is
    none (the connection's own target)."""
    line = b'{"open": "l1", "connection": "app", "address": 7, "auth": "yes"}\n'
    assert parse_from_gateway(line) == Open("l1", "app")


@given(st.binary(max_size=300))
def test_no_bytes_raise_anything_else(data: bytes) -> None:
    for parse in (parse_hello, parse_from_gateway):
        with contextlib.suppress(AgentLineError):
            parse(data)
