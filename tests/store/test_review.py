"""Reviews, the review epoch and the notification outbox, on both engines (SQLite
migration 4): filters, due reviews, leases that keep two workers off one row."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ledgergate.store import ReviewRow, Store, open_store
from ledgergate.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from tests.store.conftest import Opener

S = 10**9


def _url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'l.db'}"


def _row(
    rid: str,
    *,
    state: str = "pending",
    kind: str = "command",
    connection: str = "prod",
    requester: str = "alice",
    binding: str = "b" * 64,
    created: int = 10,
    due: int | None = 100,
) -> ReviewRow:
    return ReviewRow(rid, kind, state, connection, requester, binding, created, created, due, "{}")


def test_reviews_round_trip_filter_and_raise_the_epoch(open_st: Opener) -> None:
    st = open_st()
    assert SCHEMA_VERSION >= 4
    assert st.review_epoch() == 0 and st.list_reviews() == [] and st.get_review("x") is None
    a = _row("rv_a", created=1)
    b = _row("rv_b", state="approved", created=3, binding="c" * 64, due=50)
    c = _row("rv_c", kind="access", connection="staging", requester="bob", created=2, due=None)
    with st.transaction():
        for r in (a, b, c):
            st.put_review(r)
    assert st.review_epoch() == 3
    assert st.get_review("rv_b") == b
    assert [r.id for r in st.list_reviews()] == ["rv_b", "rv_c", "rv_a"]  # newest first
    assert [r.id for r in st.list_reviews(states=["pending"])] == ["rv_c", "rv_a"]
    assert [r.id for r in st.list_reviews(states=["pending", "approved"], kind="command")] == [
        "rv_b",
        "rv_a",
    ]
    assert [r.id for r in st.list_reviews(connection="staging")] == ["rv_c"]
    assert [r.id for r in st.list_reviews(requester="alice", limit=1)] == ["rv_b"]
    assert [r.id for r in st.list_reviews(binding="c" * 64)] == ["rv_b"]
    # due: the earliest first; a final review (no due time) never
    assert [r.id for r in st.reviews_due(100)] == ["rv_b", "rv_a"]
    assert [r.id for r in st.reviews_due(99)] == ["rv_b"]
    assert st.reviews_due(10**30 // 10**12, limit=1)[0].id == "rv_b"
    done = _row("rv_b", state="executed", created=3, due=None)
    st.put_review(done)  # replaces by id
    assert st.get_review("rv_b") == done and st.review_epoch() == 4
    assert [r.id for r in st.reviews_due(1000)] == ["rv_a"]
    assert st.policy_epoch() == 0 and st.access_epoch() == 0  # the epochs are apart
    st.close()


def test_a_second_handle_sees_the_epoch_move(open_st: Opener) -> None:
    one, two = open_st(), open_st()
    seen = two.review_epoch()
    one.put_review(_row("rv_1"))
    assert two.review_epoch() == seen + 1 and two.get_review("rv_1") is not None
    one.close()
    two.close()


def test_outbox_claims_leases_and_retries(open_st: Opener) -> None:
    st = open_st()
    with st.transaction():
        ids = [st.add_outbox("rv_1", ev, f'{{"n":{i}}}', 100 + i) for i, ev in enumerate("abc")]
    assert ids == sorted(ids)
    assert st.claim_outbox("w1", 99, 10, 30 * S) == []  # nothing due yet
    got = st.claim_outbox("w1", 101, 10, 30 * S)
    assert [(o.id, o.event, o.attempts, o.claimed_by) for o in got] == [
        (ids[0], "a", 1, "w1"),
        (ids[1], "b", 1, "w1"),
    ]
    assert got[0].claimed_until_ns == 101 + 30 * S and got[0].body == '{"n":0}'
    # held rows are not claimed again while the lease lives; the third one is free
    assert [o.id for o in st.claim_outbox("w2", 200, 10, 30 * S)] == [ids[2]]
    assert st.claim_outbox("w2", 300, 10, 30 * S) == []
    assert st.mark_outbox_delivered(ids[0], 400) is True
    assert st.mark_outbox_delivered(ids[0], 500) is False
    assert st.mark_outbox_failed(ids[0], "late", 600) is False  # delivered stays delivered
    assert st.mark_outbox_failed(ids[1], "HTTP 503 " + "x" * 1000, 1000) is True
    failed = st.list_outbox("rv_1")[1]
    assert failed.claimed_by is None and failed.next_attempt_ns == 1000
    assert failed.last_error is not None and len(failed.last_error) == 500
    assert st.claim_outbox("w3", 999, 10, S) == []  # not before its next attempt
    again = st.claim_outbox("w3", 1000, 10, S)
    assert [(o.id, o.attempts) for o in again] == [(ids[1], 2)]
    # a worker that died: its lease runs out and another worker takes the row
    lost = st.claim_outbox("w4", 200 + 30 * S, 10, S)
    assert [(o.id, o.claimed_by, o.attempts) for o in lost] == [
        (ids[2], "w4", 2),  # due since 102
        (ids[1], "w4", 3),  # due since 1000
    ]
    assert st.mark_outbox_delivered(ids[1], 2000)
    assert [o.id for o in st.list_outbox(pending_only=True)] == [ids[2]]
    assert st.list_outbox("other") == []
    st.close()


def test_two_workers_never_claim_the_same_row(open_st: Opener) -> None:
    setup = open_st()
    with setup.transaction():
        for i in range(300):
            setup.add_outbox(f"rv_{i}", "requested", "{}", 1)
    setup.close()
    claimed: dict[str, list[int]] = {}

    def work(owner: str) -> None:
        st: Store = open_st()
        mine: list[int] = []
        while batch := st.claim_outbox(owner, 2, 7, 10**15):
            mine += [o.id for o in batch]
        claimed[owner] = mine
        st.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == len(set(every)) == 300


def test_a_version_3_database_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_ns INTEGER)")
    for version, script in MIGRATIONS[:3]:
        raw.executescript(script)
        raw.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    raw.execute("INSERT INTO policy_rules VALUES ('r', '{}', 0, 1, 'c', 1, 'c')")
    raw.commit()
    raw.close()
    st = open_store(f"sqlite://{db}")
    assert [r.id for r in st.list_policy_rules()] == ["r"]
    assert st.review_epoch() == 0 and st.list_reviews() == [] and st.list_outbox() == []
    st.put_review(_row("rv_1"))
    assert st.review_epoch() == 1
    st.close()
