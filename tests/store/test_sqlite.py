"""The SQLite store engine against real database files."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from ledgergate.store import (
    CheckpointRow,
    EntryRow,
    SqliteStore,
    StoreError,
    TokenRow,
    open_store,
    sqlite_path,
)
from ledgergate.store.sqlite import BULK_MIN_ROWS, SCHEMA_VERSION
from tests.store.conftest import Opener


def _url(p: Path) -> str:
    return f"sqlite://{p}"


def _entry(stream: str, seq: int, ts: int, kind: str = "chunk", **kw: str | None) -> EntryRow:
    return EntryRow(
        stream,
        seq,
        ts,
        kind,
        kw.get("session_id"),
        kw.get("identity"),
        kw.get("connection"),
        b'{"seq":%d}' % seq,
        bytes([seq % 256]) * 32,
    )


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///abs/path.db", "/abs/path.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:rel/path.db", "rel/path.db"),
        ("sqlite:///abs/path.db?mode=x", "/abs/path.db"),
    ],
)
def test_sqlite_url(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://", "sqlite:///:memory:"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_open_creates_dirs_wal_and_schema(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "ledger.db"
    st = open_store(_url(db))
    assert isinstance(st, SqliteStore)
    assert st.url == f"sqlite://{db}"
    st.close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"entries", "streams", "checkpoints", "payloads", "tokens"} <= tables
    assert {"identities", "grants", "access_epoch"} <= tables
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"entries_session", "entries_kind_ts"} <= (indexes)
    raw.close()
    # reopening does not migrate again
    open_store(_url(db)).close()
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_a_new_store_is_the_gateway_users_alone(tmp_path: Path) -> None:
    db = tmp_path / "data" / "ledger.db"
    st = open_store(_url(db))
    with st.transaction():
        st.insert_entries([_entry("s", 0, 1)])
    wal = db.with_name(db.name + "-wal")
    assert wal.exists()  # still open: SQLite made it with the database's mode
    for p in (db, wal, db.with_name(db.name + "-shm")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    st.close()
    # an existing database keeps the mode its operator gave it
    db.chmod(0o640)
    open_store(_url(db)).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    open_store(_url(db)).close()
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(_url(db))


def test_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        open_store(_url(db))


def test_entries_round_trip_and_queries(open_st: Opener) -> None:
    st = open_st()
    with st.transaction():
        st.insert_entries(
            [
                _entry("s1", 0, 100, "session.open", session_id="a", identity="alice"),
                _entry("s1", 1, 200, "command", session_id="a", identity="alice", connection="c"),
                _entry("s1", 2, 300, "session.open", session_id="b", identity="bob"),
                _entry("s2", 0, 150, "session.open", session_id="c", connection="c"),
            ]
        )
    assert [s for s, *_ in st.iter_entries("s1")] == [0, 1, 2]
    assert [s for s, *_ in st.iter_entries("s1", 1, 2)] == [1]
    assert list(st.iter_entry_hashes("s1", 2)) == [bytes([0]) * 32, bytes([1]) * 32]
    e = st.get_entry("s1", 1)
    assert e is not None and e.identity == "alice" and e.connection == "c"
    assert st.get_entry("s1", 9) is None
    assert st.max_seq("s1") == 2 and st.max_seq("nope") is None
    assert st.last_seq_before("s1", 250) == 1
    opens = st.find_entries(kinds=("session.open",), newest_first=True)
    assert [(r.stream, r.seq) for r in opens] == [("s1", 2), ("s2", 0), ("s1", 0)]
    assert [r.session_id for r in st.find_entries(identity="alice")] == ["a", "a"]
    assert [r.seq for r in st.find_entries(connection="c", since_ns=160)] == [1]
    assert len(st.find_entries(session_ids=("a", "c"))) == 3
    assert len(st.find_entries(until_ns=150)) == 1
    assert len(st.find_entries(limit=2)) == 2
    assert st.streams() == ["s1", "s2"]
    assert st.streams_between(160, 250) == ["s1"]
    assert st.streams_between(None, 120) == ["s1"]
    # (stream, seq) is the primary key
    with pytest.raises(StoreError), st.transaction():
        st.insert_entries([_entry("s1", 1, 999)])
    assert st.get_entry("s1", 1) == e
    st.close()


def test_transaction_rolls_back_and_does_not_nest(open_st: Opener) -> None:
    st = open_st()
    with pytest.raises(RuntimeError), st.transaction():
        st.put_stream_state("s", b"x", 1)
        raise RuntimeError("boom")
    assert st.get_stream_state("s") is None
    with st.transaction():
        with pytest.raises(StoreError, match="nest"), st.transaction():
            pass
        st.put_stream_state("s", b"y", 2)
    assert st.get_stream_state("s") == b"y"
    assert st.stream_states() == {"s": b"y"}


def test_checkpoints_payloads_tokens(open_st: Opener) -> None:
    st = open_st()
    with st.transaction():
        st.put_checkpoint(CheckpointRow("s", 10, 1, b"r" * 32, "note10"))
        st.put_checkpoint(CheckpointRow("s", 5, 1, b"q" * 32, "note5"))
        st.put_checkpoint(CheckpointRow("s", 10, 2, b"z" * 32, "other"))  # kept: first wins
        st.put_payloads([("d1", b"blob1", 100), ("d2", b"blob2", 200), ("d1", b"again", 300)])
    assert [c.size for c in st.checkpoints("s")] == [5, 10]
    latest = st.latest_checkpoint("s")
    assert latest is not None and latest.note == "note10" and latest.root == b"r" * 32
    assert st.latest_checkpoint("none") is None
    assert st.get_payload("d1") == b"blob1"
    assert st.delete_payloads(150) == 1
    assert st.get_payload("d1") is None and st.get_payload("d2") == b"blob2"

    row = TokenRow("tok_1", b"h" * 32, "alice", "user", 1, 100, None, None, "me")
    st.insert_token(row)
    assert st.token_by_hash(b"h" * 32) == row
    assert st.token_by_id("tok_1") == row
    st.touch_token("tok_1", 50)
    assert st.revoke_token("tok_1", 60) is True
    assert st.revoke_token("tok_1", 70) is False
    assert st.revoke_token("tok_x", 70) is False
    got = st.token_by_id("tok_1")
    assert got is not None and got.last_used_ns == 50 and got.revoked_ns == 60
    assert [t.id for t in st.list_tokens()] == ["tok_1"]
    with pytest.raises(StoreError):
        st.insert_token(TokenRow("tok_2", b"h" * 32, "bob", "user", 1, 100, None, None, None))
    with pytest.raises(StoreError):  # kind is checked by the schema
        st.insert_token(TokenRow("tok_3", b"k" * 32, "bob", "robot", 1, 100, None, None, None))


def test_two_handles_share_the_store(open_st: Opener) -> None:
    a, b = open_st(), open_st()
    with a.transaction():
        a.put_stream_state("s", b"1", 1)
    assert b.get_stream_state("s") == b"1"
    a.set_durable(True)  # FULL on one connection does not disturb the other
    with b.transaction():
        b.put_stream_state("s", b"2", 2)
    assert a.get_stream_state("s") == b"2"


def test_concurrent_writers_wait_for_the_lock(open_st: Opener) -> None:
    errors: list[BaseException] = []

    def work(name: str) -> None:
        st = open_st()  # one store per thread
        try:
            for i in range(50):
                with st.transaction():
                    st.insert_entries([_entry(name, i, i)])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            st.close()

    threads = [threading.Thread(target=work, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    st = open_st()
    assert all(st.max_seq(f"s{i}") == 49 for i in range(4))


def test_bulk_insert_stores_exactly_what_row_by_row_does(tmp_path: Path) -> None:
    """Batches of BULK_MIN_ROWS or more go through one INSERT ... SELECT over json_each;
    every column must come out as executemany() would have stored it."""
    rows = [
        EntryRow(
            "gateway@h" if i % 3 else "cli@h",
            i,
            2**62 + i,
            "chunk" if i % 2 else "session.open",
            None if i % 5 == 0 else f"s_{i:04d}",
            None if i % 7 == 0 else 'zoë 👩‍💻 "q" \\',
            None if i % 4 == 0 else "app",
            b'{"seq":%d,"t":"\xc3\xa9\\u0000"}' % i + b"x" * (i * 37 % 900),
            bytes([i % 256]) * 32,
        )
        for i in range(BULK_MIN_ROWS * 5 + 3)
    ]
    bulk, single = open_store(_url(tmp_path / "b.db")), open_store(_url(tmp_path / "s.db"))
    with bulk.transaction():
        bulk.insert_entries(rows)
    with single.transaction():
        for r in rows:
            single.insert_entries([r])
    for st in (bulk, single):
        stored = sorted(
            (st.get_entry(r.stream, r.seq) for r in rows), key=lambda e: (e.stream, e.seq)
        )
        assert stored == sorted(rows, key=lambda e: (e.stream, e.seq))
    # a duplicate anywhere in a batch fails the whole batch
    with pytest.raises(StoreError), bulk.transaction():
        bulk.insert_entries([*rows[:-1], rows[3]][BULK_MIN_ROWS:] + rows[:BULK_MIN_ROWS])
    assert bulk.max_seq("gateway@h") == max(r.seq for r in rows if r.stream == "gateway@h")
    bulk.close()
    single.close()
