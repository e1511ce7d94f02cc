"""Transcripts of a guarded relay: refused Query and Parse never reach the backend, the
client gets one ErrorResponse (SQLSTATE 42501) right before the ReadyForQuery that
ends the refused batch, and stays in step with the protocol."""

from __future__ import annotations

import struct

import pytest

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    ChunkSeen,
    ClientData,
    CommandSeen,
    Committed,
    Record,
    SendToClient,
    SendToServer,
    ServerData,
)
from ledgergate.wire.pg.frames import build, iter_messages
from ledgergate.wire.pg.session import Relay

SYNC = build(b"S")
RFQ = build(b"Z", b"I")


def guard(op: str, text: bytes) -> tuple[str, str] | None:
    return ("no-drop", "DDL is not allowed") if b"drop" in text.lower() else None


def relay() -> Relay:
    r = Relay()
    r.guard = guard
    return r


def q(sql: str) -> bytes:
    return build(b"Q", sql.encode() + b"\x00")


def parse(sql: str, name: bytes = b"") -> bytes:
    return build(b"P", name + b"\x00" + sql.encode() + b"\x00" + struct.pack("!h", 0))


def bind(stmt: bytes = b"") -> bytes:
    return build(b"B", b"\x00" + stmt + b"\x00" + struct.pack("!hhh", 0, 0, 0))


EXECUTE = build(b"E", b"\x00" + struct.pack("!i", 0))
DESCRIBE = build(b"D", b"S\x00")


def commit_all(r: Relay, actions: list[Action]) -> list[Action]:
    """The actions, plus what committing their durable records releases."""
    out: list[Action] = list(actions)
    for a in actions:
        if isinstance(a, Record) and a.durable:
            out += r.feed(Committed(a.ticket))
    return out


def to_server(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendToServer))


def to_client(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendToClient))


def refusals(data: bytes) -> list[str]:
    return [m.parse_error_fields(body)["M"] for tag, body in iter_messages(data) if tag == b"E"]


def test_a_refused_query_becomes_a_sync_and_the_error_precedes_ready() -> None:
    r = relay()
    acts = r.feed(ClientData(q("DROP TABLE customers"), 1))
    (rec,) = acts
    assert isinstance(rec, Record) and rec.durable
    (seen,) = rec.seen
    assert isinstance(seen, CommandSeen) and seen.blocked == ("no-drop", "DDL is not allowed")
    assert to_server(commit_all(r, acts)) == SYNC  # the statement never reaches the backend
    back = r.feed(ServerData(RFQ, 2))
    sent = to_client(back)
    assert [t for t, _ in iter_messages(sent)] == [b"E", b"Z"]
    assert refusals(sent) == ["ledgergate: statement refused by rule no-drop: DDL is not allowed"]
    (e,) = [b for t, b in iter_messages(sent) if t == b"E"]
    assert m.parse_error_fields(e)["C"] == "42501"
    chunk = next(a for a in back if isinstance(a, Record)).seen[0]
    assert isinstance(chunk, ChunkSeen) and chunk.data == RFQ and chunk.out == sent


def test_allowed_traffic_is_untouched() -> None:
    r = relay()
    acts = r.feed(ClientData(q("SELECT 1"), 1))
    assert to_server(commit_all(r, acts)) == q("SELECT 1")
    reply = build(b"C", b"SELECT 1\x00") + RFQ
    back = r.feed(ServerData(reply, 2))
    assert to_client(back) == reply
    chunk = next(a for a in back if isinstance(a, Record)).seen[0]
    assert isinstance(chunk, ChunkSeen) and chunk.out is None


def test_a_refused_parse_drops_its_batch_up_to_the_sync() -> None:
    r = relay()
    batch = parse("DROP TABLE t") + bind() + DESCRIBE + EXECUTE + SYNC
    acts = r.feed(ClientData(batch, 1))
    assert to_server(commit_all(r, acts)) == SYNC
    assert refusals(to_client(r.feed(ServerData(RFQ, 2)))) == [
        "ledgergate: statement refused by rule no-drop: DDL is not allowed"
    ]


@pytest.mark.parametrize("split", [1, 3, 7, 20])
def test_the_discarded_batch_may_span_reads(split: int) -> None:
    r = relay()
    batch = parse("drop table t", b"s1") + bind(b"s1") + EXECUTE + SYNC
    sent = b""
    for i in range(0, len(batch), split):
        sent += to_server(commit_all(r, r.feed(ClientData(batch[i : i + split], i))))
    assert sent == SYNC
    assert len(refusals(to_client(r.feed(ServerData(RFQ, 9))))) == 1


def test_pipelined_batches_keep_their_order() -> None:
    r = relay()
    ok = parse("SELECT 1") + bind() + EXECUTE + SYNC
    bad = parse("DROP TABLE t") + bind() + EXECUTE + SYNC
    acts = r.feed(ClientData(ok + bad + ok, 1))
    assert to_server(commit_all(r, acts)) == ok + SYNC + ok
    first = build(b"1") + build(b"2") + build(b"C", b"SELECT 1\x00") + RFQ
    sent = to_client(r.feed(ServerData(first + RFQ + first, 2)))
    kinds = [t for t, _ in iter_messages(sent)]
    assert kinds == [b"1", b"2", b"C", b"Z", b"E", b"Z", b"1", b"2", b"C", b"Z"]


def test_no_second_error_when_the_backend_already_failed_the_batch() -> None:
    r = relay()
    batch = parse("SELECT 1/0") + bind() + EXECUTE + parse("DROP TABLE t") + SYNC
    assert to_server(commit_all(r, r.feed(ClientData(batch, 1)))) == (
        parse("SELECT 1/0") + bind() + EXECUTE + SYNC
    )
    backend_error = m.error_response("22012", "division by zero")
    sent = to_client(r.feed(ServerData(build(b"1") + build(b"2") + backend_error + RFQ, 2)))
    assert refusals(sent) == ["division by zero"]


@pytest.mark.parametrize("cut", [1, 2, 4, 5])
def test_the_error_goes_before_a_ready_for_query_split_across_reads(cut: int) -> None:
    r = relay()
    commit_all(r, r.feed(ClientData(q("drop table x"), 1)))
    reply = build(b"N", b"SNOTICE\x00Mhello\x00\x00") + RFQ
    at = len(reply) - len(RFQ) + cut
    sent = to_client(r.feed(ServerData(reply[:at], 2))) + to_client(
        r.feed(ServerData(reply[at:], 3))
    )
    assert [t for t, _ in iter_messages(sent)] == [b"N", b"E", b"Z"]
