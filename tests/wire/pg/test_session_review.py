"""Transcripts of a statement held for review: the relay answers ``Inspect`` and reads
nothing after the held statement until its ``Verdict``; approved, it goes on with what
followed it, in order; denied or cancelled, a stand-in fails in its place and the client
gets the reviewer's answer (42501) or a cancel (57014), and stays in step."""

from __future__ import annotations

import struct

from ledgergate.wire.pg.events import (
    Action,
    CommandSeen,
    Inspect,
    Record,
    ServerData,
    Verdict,
)
from ledgergate.wire.pg.events import ClientData as CD
from ledgergate.wire.pg.frames import build, iter_messages
from ledgergate.wire.pg.session import NeedsReview, Relay
from tests.wire.pg.test_session_guard import (
    EXECUTE,
    RFQ,
    SYNC,
    bind,
    commit_all,
    parse,
    q,
    refusals,
    stand_in_error,
    to_client,
    to_server,
)


def guard(op: str, text: bytes) -> tuple[str, str] | NeedsReview | None:
    t = text.lower()
    if b"drop" in t:
        return ("no-drop", "DDL is not allowed")
    if b"update billing" in t:
        return NeedsReview("billing-writes")
    return None


def relay() -> Relay:
    r = Relay()
    r.guard = guard
    return r


def inspects(actions: list[Action]) -> list[Inspect]:
    return [a for a in actions if isinstance(a, Inspect)]


def commands(actions: list[Action]) -> list[CommandSeen]:
    return [
        c for a in actions if isinstance(a, Record) for c in a.seen if isinstance(c, CommandSeen)
    ]


def test_a_held_query_waits_and_what_follows_waits_behind_it() -> None:
    r = relay()
    first = commit_all(r, r.feed(CD(q("SELECT 1") + q("UPDATE billing SET x = 1"), 1)))
    assert to_server(first) == q("SELECT 1")  # before the held one: relayed
    (ins,) = inspects(first)
    assert (ins.rule, ins.op, ins.text) == ("billing-writes", "query", b"UPDATE billing SET x = 1")
    assert r.inspecting == ins.ticket
    # the client pipelines more: nothing is read until the verdict
    assert r.feed(CD(q("SELECT 2"), 2)) == []
    assert r.waiting_bytes == len(q("UPDATE billing SET x = 1") + q("SELECT 2"))
    assert r.feed(Verdict(ins.ticket + 1, True)) == []  # not this statement's ticket
    after = commit_all(r, r.feed(Verdict(ins.ticket, True, ts_ns=3)))
    assert to_server(after) == q("UPDATE billing SET x = 1") + q("SELECT 2")
    assert [c.text for c in commands(after)] == [b"UPDATE billing SET x = 1", b"SELECT 2"]
    assert all(c.blocked is None for c in commands(after))
    assert r.inspecting is None and r.waiting_bytes == 0


def test_a_denied_query_fails_with_the_reviewers_answer() -> None:
    r = relay()
    (ins,) = inspects(r.feed(CD(q("UPDATE billing SET x = 1"), 1)))
    msg = "review #7 denied by bob: not during the freeze"
    after = commit_all(r, r.feed(Verdict(ins.ticket, False, "billing-writes", msg)))
    sent = to_server(after)
    assert b"UPDATE" not in sent and b"ledgergate-refused-" in sent
    (cmd,) = commands(after)
    assert cmd.blocked == ("billing-writes", msg)
    back = r.feed(ServerData(stand_in_error(sent) + RFQ, 2))
    assert refusals(to_client(back)) == [
        f"ledgergate: statement refused by rule billing-writes: {msg}"
    ]
    # the next statement is decided afresh
    assert inspects(r.feed(CD(q("UPDATE billing SET y = 2"), 3)))


def test_a_cancelled_review_answers_like_a_cancel() -> None:
    r = relay()
    (ins,) = inspects(r.feed(CD(q("UPDATE billing SET x = 1"), 1)))
    after = commit_all(
        r, r.feed(Verdict(ins.ticket, False, "billing-writes", "review #8 withdrawn", "57014"))
    )
    back = r.feed(ServerData(stand_in_error(to_server(after)) + RFQ, 2))
    errs = [b for t, b in iter_messages(to_client(back)) if t == b"E"]
    assert len(errs) == 1 and b"C57014\x00" in errs[0]
    assert b"canceling statement due to user request (review #8 withdrawn)" in errs[0]


def bind_params(stmt: bytes, *vals: bytes | None) -> bytes:
    body = b"\x00" + stmt + b"\x00" + struct.pack("!hh", 0, len(vals))
    for v in vals:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return build(b"B", body + struct.pack("!h", 0))


def test_extended_protocol_holds_at_the_bind_with_its_parameters() -> None:
    r = relay()
    sql = "UPDATE billing SET total = $1 WHERE id = $2"
    batch = parse(sql, b"s1") + bind_params(b"s1", b"10", None) + EXECUTE + SYNC
    first = commit_all(r, r.feed(CD(batch, 1)))
    assert to_server(first) == parse(sql, b"s1")  # a Parse runs nothing
    (ins,) = inspects(first)
    assert (ins.op, ins.text, ins.params) == ("bind", sql.encode(), (b"10", None))
    after = commit_all(r, r.feed(Verdict(ins.ticket, True)))
    assert to_server(after) == bind_params(b"s1", b"10", None) + EXECUTE + SYNC
    # executed again later (a prepared statement): held again, for its new parameters
    again = commit_all(r, r.feed(CD(bind_params(b"s1", b"11", b"3") + EXECUTE + SYNC, 2)))
    (ins2,) = inspects(again)
    assert ins2.params == (b"11", b"3") and to_server(again) == b""
    denied = commit_all(r, r.feed(Verdict(ins2.ticket, False, "billing-writes", "no")))
    sent = to_server(denied)
    kinds = [t for t, _ in iter_messages(sent)]
    assert kinds == [b"P", b"E", b"S"] and b"ledgergate-refused-" in sent  # Bind replaced
    # a statement re-prepared under the same name without review need is not held
    plain = commit_all(r, r.feed(CD(parse("SELECT 1", b"s1") + bind(b"s1") + EXECUTE + SYNC, 3)))
    assert not inspects(plain) and b"SELECT 1" in to_server(plain)


def test_refused_statements_are_still_refused_and_others_pass() -> None:
    r = relay()
    acts = commit_all(r, r.feed(CD(q("DROP TABLE t") + q("SELECT 1"), 1)))
    assert not inspects(acts)
    assert [c.blocked for c in commands(acts)] == [("no-drop", "DDL is not allowed"), None]


def test_a_notice_waits_for_the_server_message_in_flight() -> None:
    from ledgergate.wire.pg import messages as m
    from ledgergate.wire.pg.events import SendToClient

    r = relay()
    row = build(b"D", b"\x00\x01\x00\x00\x00\x05hello")
    note = m.notice_response("ledgergate: review rv_1 required")
    assert r.notice(note) == [SendToClient(note)]  # nothing in flight: at once
    r.feed(ServerData(row[:7], 1))  # half a DataRow forwarded
    assert r.notice(note) == []
    rest = r.feed(ServerData(row[7:], 2))
    sent = b"".join(a.data for a in rest if isinstance(a, SendToClient))
    assert sent == row[7:] + note  # after the message, never inside it
