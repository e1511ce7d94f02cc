"""Statements prepared before the guard of an open session is replaced (the policy
changed) are decided again at their next Bind: transcripts of the relay, and the bounds
of what it remembers."""

from __future__ import annotations

from ledgergate.wire.pg.events import ClientData, CommandSeen, Record, ServerData
from ledgergate.wire.pg.frames import build, iter_messages
from ledgergate.wire.pg.prepared import (
    FORGOTTEN,
    MAX_PREPARED,
    MAX_PREPARED_BYTES,
    PreparedStatements,
)
from ledgergate.wire.pg.session import Relay
from tests.wire.pg.test_session_guard import (
    EXECUTE,
    RFQ,
    SYNC,
    bind,
    commit_all,
    parse,
    refusals,
    stand_in_error,
    to_client,
    to_server,
)

PARSE_COMPLETE, BIND_COMPLETE = build(b"1"), build(b"2")


def no_delete(op: str, text: bytes) -> tuple[str, str] | None:
    return ("no-delete", "deletes need a ticket") if b"delete" in text.lower() else None


def _prepared_then_guarded() -> Relay:
    """A session that prepared two statements with no guard; then the policy changed."""
    r = Relay()
    sent = to_server(
        commit_all(
            r,
            r.feed(
                ClientData(
                    parse("DELETE FROM t WHERE id = $1", b"del") + parse("SELECT 1", b"sel") + SYNC,
                    1,
                )
            ),
        )
    )
    assert sent.count(b"P") >= 2 and b"refused" not in sent
    r.feed(ServerData(PARSE_COMPLETE + PARSE_COMPLETE + RFQ, 2))
    r.refusal_tag = "t"
    r.set_guard(no_delete)
    return r


def test_a_statement_prepared_before_the_change_is_refused_at_its_next_bind() -> None:
    r = _prepared_then_guarded()
    acts = r.feed(ClientData(bind(b"del") + EXECUTE + SYNC, 3))
    (rec,) = [a for a in acts if isinstance(a, Record)]
    (seen,) = [x for x in rec.seen if isinstance(x, CommandSeen)]
    assert seen.op == "bind" and seen.blocked == ("no-delete", "deletes need a ticket")
    assert seen.statement == b"del" and seen.text == b"DELETE FROM t WHERE id = $1"
    sent = to_server(commit_all(r, acts))
    tags = [t for t, _ in iter_messages(sent)]
    assert tags == [b"P", b"E", b"S"]  # the Bind became a stand-in the backend fails
    assert b"DELETE" not in sent and b"ledgergate-refused-t-" in sent
    got = to_client(r.feed(ServerData(stand_in_error(sent) + RFQ, 4)))
    assert refusals(got) == [
        "ledgergate: statement refused by rule no-delete: deletes need a ticket"
    ]
    # still refused the next time; the other statement is decided again and allowed
    again = to_server(commit_all(r, r.feed(ClientData(bind(b"del") + EXECUTE + SYNC, 5))))
    assert b"refused" in again
    r.feed(ServerData(stand_in_error(again) + RFQ, 6))
    ok = bind(b"sel") + EXECUTE + SYNC
    assert to_server(commit_all(r, r.feed(ClientData(ok, 7)))) == ok


def test_statements_prepared_under_the_current_guard_are_not_decided_twice() -> None:
    calls: list[bytes] = []

    def counting(op: str, text: bytes) -> None:
        calls.append(text)
        return None

    r = Relay()
    r.set_guard(counting)
    commit_all(r, r.feed(ClientData(parse("SELECT 2", b"s") + SYNC, 1)))
    r.feed(ServerData(PARSE_COMPLETE + RFQ, 2))
    for i in range(3):
        out = bind(b"s") + EXECUTE + SYNC
        assert to_server(commit_all(r, r.feed(ClientData(out, 3 + i)))) == out
        r.feed(ServerData(BIND_COMPLETE + build(b"C", b"SELECT 1\x00") + RFQ, 4 + i))
    assert calls == [b"SELECT 2"]  # at its Parse only


def test_a_refused_parse_is_not_remembered() -> None:
    r = Relay()
    r.set_guard(no_delete)
    commit_all(r, r.feed(ClientData(parse("DELETE FROM t", b"d") + SYNC, 1)))
    r.set_guard(no_delete)  # the policy changed (to the same rules): prepared ones are stale
    # Remembered, it would be decided again and refused here; the backend never had it,
    # so the Bind goes on and the backend answers for itself.
    out = bind(b"d") + EXECUTE + SYNC
    assert to_server(commit_all(r, r.feed(ClientData(out, 2)))) == out


def test_the_memory_is_bounded_and_a_forgotten_statement_fails_closed() -> None:
    p = PreparedStatements()
    for i in range(MAX_PREPARED + 1):
        p.remember(b"s%d" % i, b"SELECT %d" % i)
    assert len(p) == MAX_PREPARED
    assert p.recheck(b"s0", no_delete) == (b"", None)  # no guard change yet: nothing to decide
    p.next_generation()
    assert p.recheck(b"s0", no_delete) == (b"", FORGOTTEN)
    assert p.recheck(b"s1", no_delete) == (b"SELECT 1", None)
    q = PreparedStatements()
    q.remember(b"big", b"x" * (MAX_PREPARED_BYTES + 1))
    assert len(q) == 0
    q.next_generation()
    assert q.recheck(b"big", no_delete)[1] == FORGOTTEN
    fresh = PreparedStatements()
    fresh.next_generation()
    assert fresh.recheck(b"never", no_delete) == (b"", None)  # unknown, nothing forgotten


def test_a_masked_session_keeps_its_shaper_in_step() -> None:
    """With a result shaper, the stand-in counts as the Parse it is: the backend's error
    ends the batch and the shaper expects nothing more from it."""
    from ledgergate.wire.pg.results import ResultShaper

    r = Relay()
    r.set_shaper(ResultShaper(lambda fields, sql=b"": None))
    commit_all(r, r.feed(ClientData(parse("DELETE FROM t", b"d") + SYNC, 1)))
    r.feed(ServerData(PARSE_COMPLETE + RFQ, 2))
    r.refusal_tag = "m"
    r.set_guard(no_delete)
    sent = to_server(commit_all(r, r.feed(ClientData(bind(b"d") + EXECUTE + SYNC, 3))))
    got = to_client(r.feed(ServerData(stand_in_error(sent) + RFQ, 4)))
    assert [t for t, _ in iter_messages(got)] == [b"E", b"Z"]
    assert "no-delete" in refusals(got)[0]
    # and the session goes on
    q = build(b"Q", b"SELECT 1\x00")
    assert to_server(commit_all(r, r.feed(ClientData(q, 5)))) == q
    reply = build(b"T", b"\x00\x00") + build(b"C", b"SELECT 0\x00") + RFQ
    assert to_client(r.feed(ServerData(reply, 6))) == reply
