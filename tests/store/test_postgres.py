"""What only the PostgreSQL engine does: migrations under a lock, reconnecting, keeping
its password out of every message, change notices, and entries through COPY."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from ledgergate.store import (
    ChangeListener,
    EntryRow,
    PostgresStore,
    StoreError,
    open_store,
    redact_url,
)
from ledgergate.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from ledgergate.store.sqlite_schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.storeserver import STORE_PASSWORD, fresh_store_url, store_server


@pytest.fixture
def pg_url() -> str:
    url, _ = fresh_store_url("postgresql")
    return url


def _open(url: str) -> PostgresStore:
    st = open_store(url, password=STORE_PASSWORD)
    assert isinstance(st, PostgresStore)
    return st


def test_both_engines_describe_the_same_schema_version() -> None:
    assert SCHEMA_VERSION == SQLITE_SCHEMA_VERSION


def test_gateways_starting_together_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait()
            _open(pg_url).close()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    st = _open(pg_url)
    rows = st.conn().execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    assert rows == [(v,) for v, _ in MIGRATIONS]  # each migration once
    assert st.schema_version() == SCHEMA_VERSION
    st.close()


def test_newer_schema_is_refused(pg_url: str) -> None:
    st = _open(pg_url)
    st.conn().execute("INSERT INTO schema_version VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    st.close()
    with pytest.raises(StoreError, match="newer"):
        _open(pg_url)


def test_the_password_stays_out_of_urls_and_messages(pg_url: str) -> None:
    assert redact_url("postgresql://u:hunter2@h:5/db?x=1") == "postgresql://u:***@h:5/db?x=1"
    server = store_server()
    with_pw = pg_url.replace("ledgergate@", f"ledgergate:{STORE_PASSWORD}@")
    st = open_store(with_pw)
    assert STORE_PASSWORD not in st.url and STORE_PASSWORD not in repr(st)
    st.close()
    wrong = pg_url.replace("ledgergate@", "ledgergate:Wr0ng-pw-xyz@")
    with pytest.raises(StoreError) as e:
        open_store(wrong)
    assert "Wr0ng-pw-xyz" not in str(e.value) and "password authentication failed" in str(e.value)
    closed = f"postgresql://ledgergate:{STORE_PASSWORD}@127.0.0.1:1/x?connect_timeout=2"
    with pytest.raises(StoreError) as e:
        open_store(closed)
    assert STORE_PASSWORD not in str(e.value)
    assert server.port != 1


def test_a_lost_connection_is_opened_again_between_operations(pg_url: str) -> None:
    st = _open(pg_url)
    st.put_stream_state("s", b"1", 1)
    pid = st.conn().info.backend_pid
    killer = _open(pg_url)
    killer.conn().execute("SELECT pg_terminate_backend(%s)", (pid,))
    # the next operation finds the connection gone: it fails, and the one after works
    for _ in range(2):
        try:
            assert st.get_stream_state("s") == b"1"
            break
        except StoreError:
            continue
    else:  # pragma: no cover
        pytest.fail("the store did not reconnect")
    assert st.conn().info.backend_pid != pid
    with st.transaction():
        st.put_stream_state("s", b"2", 2)
    assert killer.get_stream_state("s") == b"2"
    st.close()
    killer.close()


def test_a_transaction_holds_the_write_lock_from_its_start(pg_url: str) -> None:
    one, two = _open(pg_url), _open(pg_url)
    order: list[str] = []
    with one.transaction():
        one.put_stream_state("s", b"a", 1)

        def other() -> None:
            with two.transaction():
                order.append("two")
                two.put_stream_state("s", b"b", 2)

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.3)
        order.append("one")
    t.join()
    assert order == ["one", "two"]
    assert one.get_stream_state("s") == b"b"
    one.close()
    two.close()


def test_changes_are_announced_to_every_listener_on_commit(pg_url: str) -> None:
    st = _open(pg_url)
    listener = ChangeListener(st)
    assert listener.wait(0.01) == {"access", "policy", "review"}  # first wait: assume all
    assert listener.wait(0.05) == set()
    with st.transaction():
        st.bump_access_epoch()
        assert listener.wait(0.2) == set()  # not before the commit
    assert listener.wait(5) == {"access"}
    from ledgergate.store import PolicyRuleRow, ReviewRow

    st.put_policy_rule(PolicyRuleRow("r", "{}", 0, 1, None, 1, None))
    st.put_review(ReviewRow("rv", "command", "pending", "c", "a", "b", 1, 1, None, "{}"))
    got: set[str] = set()
    deadline = time.monotonic() + 5
    while got != {"policy", "review"} and time.monotonic() < deadline:
        got |= listener.wait(1)
    assert got == {"policy", "review"}
    # the listener's connection dies: the next wait reconnects and reports everything
    assert listener._conn is not None
    st.conn().execute("SELECT pg_terminate_backend(%s)", (listener._conn.info.backend_pid,))
    with pytest.raises(StoreError):
        for _ in range(20):
            listener.wait(0.1)
    assert listener.wait(0.01) == {"access", "policy", "review"}
    listener.close()
    st.close()


def test_entries_go_in_through_copy_exactly(pg_url: str) -> None:
    rows = [
        EntryRow(
            "gateway@h",
            i,
            2**62 + i,
            "chunk",
            None if i % 5 == 0 else f"s_{i}",
            None if i % 7 == 0 else 'zoë 👩‍💻 "q" \\ \t\n',
            "app",
            b'{"seq":%d,"t":"\xc3\xa9\\u0000\\\\"}' % i + bytes(range(256)),
            bytes([i % 256]) * 32,
        )
        for i in range(5000)
    ]
    st = _open(pg_url)
    with st.transaction():
        st.insert_entries(rows)
    assert [st.get_entry("gateway@h", r.seq) for r in rows[:50]] == rows[:50]
    streamed = list(st.iter_entries("gateway@h"))
    assert [(s, c, h) for s, c, h in streamed] == [(r.seq, r.canonical, r.entry_hash) for r in rows]
    assert list(st.iter_entries("gateway@h", 1999, 2001)) == [
        (r.seq, r.canonical, r.entry_hash) for r in rows[1999:2001]
    ]
    assert len(list(st.iter_entry_hashes("gateway@h", 4001))) == 4001
    with pytest.raises(StoreError), st.transaction():
        st.insert_entries(rows[10:12])
    assert st.max_seq("gateway@h") == 4999
    st.close()


def test_psycopg_errors_do_not_escape(pg_url: str) -> None:
    st = _open(pg_url)
    with pytest.raises(StoreError) as e, st.transaction():
        st.conn().execute("SELECT no_such_column FROM ledger_entries")
    assert not isinstance(e.value, psycopg.Error)
    st.close()
