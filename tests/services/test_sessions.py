"""Sessions over a synthetic ledger: list, timeline, and replay as psql would print."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ledgergate.core.ledger.entry import Draft
from ledgergate.services import sessions
from ledgergate.services.psql import PsqlRenderer, frontend_query_text
from ledgergate.wire.pg.frames import build
from tests.services.synth import (
    INT4,
    T0,
    TEXT,
    Ledger,
    base,
    command_complete,
    data_row,
    error_response,
    query_message,
    ready,
    result,
    row_description,
    session_drafts,
)

S = 10**9
USERS = result([("id", INT4), ("name", TEXT)], [["1", "alice"], ["2", "bob"], ["3", None]])


def _ledger(root: Path) -> Ledger:
    led = Ledger(root)
    cut = 17  # split the result inside a message: replay must reassemble it
    drafts = session_drafts(
        "s_alice",
        "alice",
        "demo",
        T0,
        "full",
        [
            ("SELECT id, name FROM users", [USERS[:cut], USERS[cut:]]),
            (
                "SELECT * FROM missing",
                [error_response('relation "missing" does not exist') + ready()],
            ),
            ("INSERT INTO t VALUES (1)", [command_complete("INSERT 0 1") + ready()]),
        ],
    )
    drafts += session_drafts(
        "s_bob",
        "bob",
        "reports",
        T0 + 100 * S,
        "redacted",
        [("SELECT count(*) FROM sales WHERE region = ?", [result([("count", 20)], [["7"]])])],
    )
    drafts += session_drafts(
        "s_carol",
        "carol",
        "demo",
        T0 + 200 * S,
        "metadata",
        [("SELECT 1", [result([("?column?", INT4)], [["1"]])])],
    )
    dave = session_drafts("s_dave", "dave", "demo", T0 + 300 * S, "redacted", [])
    drafts += dave[:-1]  # still open: no session.close
    drafts.sort(key=lambda d: d.ts_ns)
    drafts.append(Draft(T0 + 400 * S, "session.reject", {"reason": "bad startup packet"}))
    led.write(drafts)
    return led


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return _ledger(tmp_path)


def test_list_sessions(led: Ledger) -> None:
    st = led.store()
    rows = sessions.list_sessions(st)
    assert [r.session_id for r in rows] == ["s_dave", "s_carol", "s_bob", "s_alice"]
    alice = rows[-1]
    assert alice.subject == "alice" and alice.connection == "demo"
    assert alice.identity == {"kind": "user", "subject": "alice", "groups": []}
    assert alice.source == {"ip": "127.0.0.1", "port": 50000}
    assert alice.client is not None and alice.client["application_name"] == "psql"
    assert alice.recording == "full" and alice.outcome == "client closed"
    assert alice.stats is not None and alice.stats["commands"] == 3
    assert alice.closed_ns is not None and alice.closed_ns > alice.opened_ns
    assert rows[0].closed_ns is None and rows[0].outcome is None
    d = alice.as_dict()
    assert d["session_id"] == "s_alice" and d["entry"].startswith(led.stream + ":")

    def ids(**kw: object) -> list[str]:
        return [r.session_id for r in sessions.list_sessions(st, **kw)]  # type: ignore[arg-type]

    assert ids(identity="bob") == ["s_bob"]
    assert ids(connection="demo") == ["s_dave", "s_carol", "s_alice"]
    assert ids(identity="alice", connection="reports") == []
    assert ids(since_ns=T0 + 50 * S, until_ns=T0 + 250 * S) == ["s_carol", "s_bob"]
    assert ids(limit=2) == ["s_dave", "s_carol"]


def test_timeline(led: Ledger) -> None:
    st = led.store()
    tl = sessions.session_timeline(st, "s_alice")
    assert [e["kind"] for e in tl] == [
        "auth.ok",
        "session.open",
        "command",
        "chunk",
        "chunk",
        "command",
        "chunk",
        "command",
        "chunk",
        "session.close",
    ]
    assert [e["seq"] for e in tl] == sorted(e["seq"] for e in tl)
    assert all(e["session_id"] == "s_alice" for e in tl)
    assert sessions.session_timeline(st, "nope") == []


EXPECTED_ALICE = """\
-- authenticated alice (user) from 127.0.0.1:50000 with token tok_test
-- session s_alice opened by alice (user) from 127.0.0.1:50000 with psql on demo (recording: full)
demo=> SELECT id, name FROM users
 id | name
----+-------
  1 | alice
  2 | bob
  3 |
(3 rows)

demo=> SELECT * FROM missing
ERROR:  relation "missing" does not exist
demo=> INSERT INTO t VALUES (1)
INSERT 0 1
-- session closed: client closed (3 commands, 3 rows, 4 chunks, {nbytes} bytes to the client)
"""


def test_replay_full_recording_as_psql(led: Ledger) -> None:
    st = led.store()
    out = io.StringIO()
    waits: list[float] = []
    n = sessions.replay(st, "s_alice", speed=0, out=out, sleep=waits.append, cipher=led.cipher)
    assert n == 10 and waits == []
    nbytes = (
        len(USERS)
        + len(error_response('relation "missing" does not exist') + ready())
        + len(command_complete("INSERT 0 1") + ready())
    )
    assert out.getvalue() == EXPECTED_ALICE.format(nbytes=nbytes)


def test_replay_without_payloads_shows_metadata(led: Ledger) -> None:
    st = led.store()
    out = io.StringIO()
    sessions.replay(st, "s_bob", speed=0, out=out, cipher=led.cipher)
    text = out.getvalue()
    assert "reports=> SELECT count(*) FROM sales WHERE region = ?" in text
    assert "<- chunk 1: 1 rows," in text and "[forwarded]" in text and "sha256 " in text
    out = io.StringIO()
    sessions.replay(st, "s_carol", speed=0, out=out)
    assert "statement text not recorded" in out.getvalue()
    # full recording, but no payload key at hand: metadata and a note
    out = io.StringIO()
    sessions.replay(st, "s_alice", speed=0, out=out, cipher=None)
    assert "no payload key" in out.getvalue() and "alice" in out.getvalue()
    assert " id | name" not in out.getvalue()


def test_replay_purged_payloads(led: Ledger) -> None:
    st = led.store()
    assert st.delete_payloads(T0 + 10**18) > 0
    out = io.StringIO()
    sessions.replay(st, "s_alice", speed=0, out=out, cipher=led.cipher)
    assert "payload purged" in out.getvalue()
    assert "demo=> SELECT id, name FROM users" in out.getvalue()  # the recorded text


def test_replay_timing(led: Ledger) -> None:
    st = led.store()
    waits: list[float] = []
    sessions.replay(st, "s_alice", speed=2, out=io.StringIO(), sleep=waits.append)
    assert waits == [0.5] * 9  # entries are 1 s apart, played twice as fast
    waits.clear()
    sessions.replay(st, "s_alice", speed=0.5, out=io.StringIO(), sleep=waits.append, max_idle=1.5)
    assert waits == [1.5] * 9
    assert sessions.replay(st, "nope", speed=1, out=io.StringIO(), sleep=waits.append) == 0
    with pytest.raises(ValueError):
        sessions.replay(st, "s_alice", speed=-1, out=io.StringIO())


def test_psql_renderer_details() -> None:
    r = PsqlRenderer()
    nums = row_description([("n", INT4), ("label", TEXT)])
    rows = [data_row([str(10**i), "x" * i]) for i in range(4)]
    data = nums + b"".join(rows) + command_complete("SELECT 4") + ready()
    lines: list[str] = []
    for i in range(len(data)):  # one byte at a time
        lines += r.feed(data[i : i + 1])
    assert lines == [
        "  n   | label",
        "------+-------",
        "    1 |",
        "   10 | x",
        "  100 | xx",
        " 1000 | xxx",
        "(4 rows)",
        "",
    ]
    # a result cut off by the end of the recording
    r = PsqlRenderer()
    assert r.feed(row_description([("a", TEXT)]) + data_row(["v"]) + b"D\x00\x00") == []
    assert r.flush() == [" a", "---", " v", "(1 row)", "", "<3 bytes of an incomplete message>"]
    assert PsqlRenderer().feed(b"D\x00\x00\x00\x01") == [
        "<undecodable result bytes: invalid message length 1 for message type 'D'>"
    ]


def test_frontend_query_text() -> None:
    assert frontend_query_text(query_message("SELECT 1")) == "SELECT 1"
    assert frontend_query_text(build(b"P", b"s1\x00SELECT $1\x00\x00\x00")) == "SELECT $1"
    assert frontend_query_text(build(b"B", b"\x00\x00")) is None
    assert frontend_query_text(b"garbage") is None
    assert frontend_query_text(query_message("a") + query_message("b")) is None


def test_sessions_entries_carry_the_contract(led: Ledger) -> None:
    st = led.store()
    (opened,) = st.find_entries(kinds=("session.open",), session_ids=("s_alice",))
    assert opened.identity == "alice" and opened.connection == "demo"
    assert set(base("x", "y", "z")) == {"session_id", "connection", "identity", "source"}


def test_an_edited_column_does_not_make_a_search_lie(led: Ledger) -> None:
    """Editing the identity column of bob's session.open to 'mallory' in the database:
    `sessions list --identity mallory` does not present bob's session as mallory's, and
    `audit verify` names the edit."""
    from ledgergate.services import audit

    with led.db() as db:
        db.execute(
            "UPDATE entries SET identity='mallory' WHERE kind='session.open' AND session_id=?",
            ("s_bob",),
        )
        db.commit()
    st = led.store()
    assert sessions.list_sessions(st, identity="mallory") == []
    # unfiltered, it is there as its entry says: bob's
    (bob,) = [r for r in sessions.list_sessions(st) if r.session_id == "s_bob"]
    assert bob.subject == "bob"
    rep = audit.verify_store(st, [led.signer.verifier])
    assert not rep.ok and any(p.kind == "column_mismatch" for p in rep.problems())
    st.close()


def test_every_protocols_close_says_how_the_session_ended(tmp_path: Path) -> None:
    """Kafka and SSH closes carry ``outcome`` and ``stats`` as PostgreSQL's and HTTP's
    do; closes they wrote before (``reason`` and the counts at the top level) and a
    termination alone read the same way in the list and in a replay."""
    led = Ledger(tmp_path)
    drafts = []
    ends = {
        "s_new": {"outcome": "client disconnected", "stats": {"commands": 2, "chunks": 5}},
        "s_old": {"reason": "token expired", "commands": 1, "chunks": 3, "unanswered": 0},
    }
    for i, (sid, end) in enumerate(ends.items()):
        b = {**base(sid, "etl", "events"), "protocol": "kafka"}
        t = T0 + i * 10 * S
        drafts += [
            Draft(
                t, "session.open", {**b, "client": {"protocol": "kafka"}, "recording": "redacted"}
            ),
            Draft(t + S, "session.close", {**b, **end}),
        ]
    b = base("s_cut", "etl", "host")
    drafts += [
        Draft(T0 + 30 * S, "session.open", {**b, "client": {"protocol": "ssh"}}),
        Draft(T0 + 31 * S, "session.terminated", {**b, "reason": "identity disabled"}),
    ]
    led.write(drafts)
    st = led.store()
    got = {r.session_id: (r.outcome, r.stats) for r in sessions.list_sessions(st)}
    assert got == {
        "s_new": ("client disconnected", {"commands": 2, "chunks": 5}),
        "s_old": ("token expired", {"commands": 1, "chunks": 3, "unanswered": 0}),
        "s_cut": ("identity disabled", None),
    }
    lines = {}
    for sid in ends:
        out = io.StringIO()
        sessions.replay(st, sid, speed=0, out=out)
        lines[sid] = [ln for ln in out.getvalue().splitlines() if "session closed" in ln]
    assert lines == {
        "s_new": ["-- session closed: client disconnected (2 commands, 5 chunks)"],
        "s_old": ["-- session closed: token expired (1 commands, 3 chunks)"],
    }
