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


def stand_in_error(sent: bytes) -> bytes:
    """What PostgreSQL answers to the stand-in the relay forwarded in place of a refused
    statement: an ErrorResponse naming the relation that does not exist."""
    sql = next(b for t, b in iter_messages(sent) if t in (b"Q", b"P") and b"refused" in b)
    rel = sql.split(b'FROM "')[1].split(b'"')[0]
    return m.error_response("42P01", f'relation "{rel.decode()}" does not exist', severity="ERROR")


REFUSED = "ledgergate: statement refused by rule no-ddl: DDL is not allowed"


def test_a_refused_query_is_failed_by_the_backend_and_the_error_replaced() -> None:
    r = relay()
    r.refusal_tag = "t1"
    acts = r.feed(ClientData(q("DROP TABLE customers"), 1))
    (rec,) = acts
    assert isinstance(rec, Record) and rec.durable
    (seen,) = rec.seen
    assert isinstance(seen, CommandSeen) and seen.blocked == ("no-drop", "DDL is not allowed")
    sent = to_server(commit_all(r, acts))
    assert b"DROP" not in sent and b"ledgergate-refused-t1-1" in sent  # never reaches it
    back = r.feed(ServerData(stand_in_error(sent) + RFQ, 2))
    got = to_client(back)
    assert [t for t, _ in iter_messages(got)] == [b"E", b"Z"]
    assert refusals(got) == [REFUSED.replace("no-ddl", "no-drop")]
    (e,) = [b for t, b in iter_messages(got) if t == b"E"]
    assert m.parse_error_fields(e)["C"] == "42501" and m.parse_error_fields(e)["S"] == "ERROR"
    chunk = next(a for a in back if isinstance(a, Record)).seen[0]
    assert isinstance(chunk, ChunkSeen) and chunk.out == got and chunk.data != got


def test_allowed_traffic_is_untouched() -> None:
    r = relay()
    acts = r.feed(ClientData(q("SELECT 1"), 1))
    assert to_server(commit_all(r, acts)) == q("SELECT 1")
    reply = build(b"C", b"SELECT 1\x00") + RFQ
    back = r.feed(ServerData(reply, 2))
    assert to_client(back) == reply
    chunk = next(a for a in back if isinstance(a, Record)).seen[0]
    assert isinstance(chunk, ChunkSeen) and chunk.out is None


def test_a_refused_parse_keeps_the_batch_and_its_flush() -> None:
    """asyncpg prepares with Parse/Describe/Flush and waits: the backend's own error
    (rewritten) answers it, and its Sync gets the ReadyForQuery."""
    r = relay()
    batch = parse("DROP TABLE t", b"s1") + DESCRIBE + build(b"H")
    sent = to_server(commit_all(r, r.feed(ClientData(batch, 1))))
    kinds = [t for t, _ in iter_messages(sent)]
    assert kinds == [b"P", b"D", b"H"] and b"DROP" not in sent
    got = to_client(r.feed(ServerData(stand_in_error(sent), 2)))
    assert refusals(got) == [REFUSED.replace("no-ddl", "no-drop")]
    assert to_server(commit_all(r, r.feed(ClientData(SYNC, 3)))) == SYNC
    assert to_client(r.feed(ServerData(RFQ, 4))) == RFQ


def test_pipelined_batches_keep_their_order() -> None:
    r = relay()
    ok = parse("SELECT 1") + bind() + EXECUTE + SYNC
    bad = parse("DROP TABLE t") + bind() + EXECUTE + SYNC
    sent = to_server(commit_all(r, r.feed(ClientData(ok + bad + ok, 1))))
    assert sent.startswith(ok) and sent.endswith(ok) and b"DROP" not in sent
    first = build(b"1") + build(b"2") + build(b"C", b"SELECT 1\x00") + RFQ
    got = to_client(r.feed(ServerData(first + stand_in_error(sent) + RFQ + first, 2)))
    kinds = [t for t, _ in iter_messages(got)]
    assert kinds == [b"1", b"2", b"C", b"Z", b"E", b"Z", b"1", b"2", b"C", b"Z"]
    assert refusals(got) == [REFUSED.replace("no-ddl", "no-drop")]


def test_other_backend_errors_pass_unchanged() -> None:
    r = relay()
    sent = to_server(commit_all(r, r.feed(ClientData(q("DROP TABLE t"), 1))))
    other = m.error_response("22012", "division by zero", severity="ERROR")
    got = to_client(r.feed(ServerData(other + RFQ, 2)))
    assert refusals(got) == ["division by zero"]
    got = to_client(r.feed(ServerData(stand_in_error(sent) + RFQ, 3)))
    assert refusals(got) == [REFUSED.replace("no-ddl", "no-drop")]


@pytest.mark.parametrize("cut", [1, 3, 5, 9, 30])
def test_an_error_split_across_reads_is_held_then_replaced(cut: int) -> None:
    r = relay()
    sent = to_server(commit_all(r, r.feed(ClientData(q("drop table x"), 1))))
    reply = build(b"N", b"SNOTICE\x00Mhello\x00\x00") + stand_in_error(sent) + RFQ
    at = len(build(b"N", b"SNOTICE\x00Mhello\x00\x00")) + cut
    got = to_client(r.feed(ServerData(reply[:at], 2))) + to_client(
        r.feed(ServerData(reply[at:], 3))
    )
    assert [t for t, _ in iter_messages(got)] == [b"N", b"E", b"Z"]
    assert b"does not exist" not in got


def test_a_function_call_is_refused_on_a_guarded_session() -> None:
    """FunctionCall names a function by OID, past the parser: refused, in step."""
    r = relay()
    # oid 2275, no argument formats, no arguments, text result
    fc = build(b"F", struct.pack("!Ihhh", 2275, 0, 0, 0))
    acts = commit_all(r, r.feed(ClientData(fc, 1)))
    (cmd,) = [
        c for a in acts if isinstance(a, Record) for c in a.seen if isinstance(c, CommandSeen)
    ]
    assert cmd.op == "function" and cmd.blocked is not None and cmd.blocked[0] == "function-call"
    sent = to_server(acts)
    assert [t for t, _ in iter_messages(sent)] == [b"Q"] and b"ledgergate-refused-" in sent
    back = r.feed(ServerData(stand_in_error(sent) + RFQ, 2))
    (msg,) = refusals(to_client(back))
    assert "rule function-call" in msg
