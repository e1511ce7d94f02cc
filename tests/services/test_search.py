"""services.search on the store engine under test: words and phrases across sessions,
the filters, the index catching up with new entries, and hits presented only as their
entries say (an index or a column edited in the database cannot make a search lie)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgergate.core.ledger.entry import Draft
from ledgergate.services import search
from ledgergate.services.search import SearchError, parse_query
from tests.services.synth import T0, Ledger, command_complete, ready, session_drafts
from tests.services.test_sessions import S, _ledger


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return _ledger(tmp_path)


def _found(led: Ledger, query: str, **kw: object) -> list[tuple[str | None, str]]:
    st = led.store()
    try:
        return [(h.session_id, h.kind) for h in search.search(st, query, **kw)]  # type: ignore[arg-type]
    finally:
        st.close()


def test_queries_are_words_and_quoted_phrases() -> None:
    assert parse_query("DELETE from Orders") == [["delete"], ["from"], ["orders"]]
    assert parse_query('"delete from" orders') == [["delete", "from"], ["orders"]]
    assert parse_query("users.email_addr") == [["users"], ["email"], ["addr"]]
    with pytest.raises(SearchError):
        parse_query(' "" ;; ')


def test_words_across_sessions_newest_first(led: Ledger) -> None:
    assert _found(led, "users") == [("s_alice", "command")]
    # alice ran two SELECTs, bob one: newest first
    assert _found(led, "select") == [("s_bob", "command"), *[("s_alice", "command")] * 2]
    assert _found(led, "SELECT  count sales") == [("s_bob", "command")]
    assert _found(led, "missing") == [("s_alice", "command")]
    assert _found(led, "nothing_like_this") == []
    # a metadata-only connection kept no statement text: nothing of carol's is found
    assert all(sid != "s_carol" for sid, _ in _found(led, "select"))


def test_phrases_must_appear_as_written(led: Ledger) -> None:
    assert _found(led, '"select id name from users"') == [("s_alice", "command")]
    assert _found(led, '"from users" select') == [("s_alice", "command")]
    assert _found(led, '"users from"') == []


def test_filters(led: Ledger) -> None:
    assert _found(led, "select", identity="bob") == [("s_bob", "command")]
    assert _found(led, "select", connection="demo") == [("s_alice", "command")] * 2
    assert _found(led, "select", kinds=("session.open",)) == []
    assert _found(led, "select", since_ns=T0 + 50 * S) == [("s_bob", "command")]
    assert _found(led, "select", until_ns=T0 + 50 * S) == [("s_alice", "command")] * 2
    st = led.store()
    try:
        hits = search.search(st, "users")
    finally:
        st.close()
    (h,) = hits
    assert h.identity == "alice" and h.connection == "demo" and "FROM users" in h.what
    assert h.as_dict()["entry"] == f"{led.stream}:{h.seq}"


def test_the_index_catches_up_with_new_entries(led: Ledger) -> None:
    assert _found(led, "invoices") == []
    more = session_drafts(
        "s_erin",
        "erin",
        "demo",
        T0 + 500 * S,
        "redacted",
        [("DELETE FROM invoices WHERE id = ?", [command_complete("DELETE 1") + ready()])],
    )
    led.write(more)
    assert _found(led, "delete invoices") == [("s_erin", "command")]
    # the earlier entries were not indexed twice
    assert _found(led, "users") == [("s_alice", "command")]


def test_blocked_attempts_are_found_by_their_rule(led: Ledger) -> None:
    led.write(
        [
            Draft(
                T0 + 600 * S,
                "decision.block",
                {
                    "session_id": "s_frank",
                    "connection": "demo",
                    "identity": {"kind": "user", "subject": "frank", "groups": []},
                    "command": {"seq": 1, "op": "query", "text": "DROP TABLE payroll"},
                    "decision": {"action": "block", "rule": "no-drop"},
                },
            )
        ]
    )
    assert _found(led, "payroll") == [("s_frank", "decision.block")]
    assert _found(led, "no drop") == [("s_frank", "decision.block")]


def test_an_edited_index_or_column_does_not_make_a_search_lie(led: Ledger) -> None:
    assert _found(led, "users") == [("s_alice", "command")]
    db = led.db()
    try:
        # point alice's indexed command at bob's entry: the entry's own words decide
        (seq,) = db.execute(
            "SELECT seq FROM ledger_entries WHERE session_id='s_alice' AND kind='command' "
            "ORDER BY seq LIMIT 1"
        ).fetchone()
        (bob,) = db.execute(
            "SELECT seq FROM ledger_entries WHERE session_id='s_bob' AND kind='command'"
        ).fetchone()
        db.execute("DELETE FROM search_docs WHERE seq=?", (bob,))
        db.execute("UPDATE search_docs SET seq=? WHERE seq=?", (bob, seq))
        # and claim the command was mallory's
        db.execute("UPDATE entries SET identity='mallory' WHERE session_id='s_alice'")
        db.commit()
    finally:
        db.close()
    assert _found(led, "users") == []
    assert _found(led, "select", identity="mallory") == []


def test_a_query_without_words_is_refused(led: Ledger) -> None:
    with pytest.raises(SearchError):
        _found(led, "???")
