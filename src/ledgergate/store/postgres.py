"""The PostgreSQL engine of the store (psycopg 3): one database shared by several gateways.

Owns the connection to the database, its schema migrations (under an advisory lock, so
gateways starting together do not race), write transactions, the engine's own ways to
write entries (COPY) and stream them (keyset pages), and change notices: every change
that raises an epoch (access, policy, reviews) also sends ``NOTIFY ledgergate`` in the
same transaction, so ``ChangeListener`` wakes every gateway at once when it commits.

A write transaction takes one database-wide advisory lock, the equivalent of SQLite's
write lock: what a transaction reads (a stream's head, a review's state) cannot change
under it. A gateway's indexer, which only appends its own stream, asks for a
non-exclusive transaction and takes no lock: gateways side by side index in parallel.
Reads outside a transaction run in autocommit and see the latest commit. A connection
lost between operations is opened again on the next one; one lost inside a transaction
fails that transaction. Must not hold business rules or leak psycopg's
exceptions (they become ``StoreError``), and never puts a password in a message or in
``url``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

from ledgergate.store import blocks, redact_url
from ledgergate.store.base import EntryRow, StoreError
from ledgergate.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from ledgergate.store.sql import as_blob, pending_migrations, reason, translated
from ledgergate.store.tables_identity import IdentityTables
from ledgergate.store.tables_ledger import ENTRY_COLS, LedgerTables, entry_row
from ledgergate.store.tables_policy import PolicyTables
from ledgergate.store.tables_review import ReviewTables
from ledgergate.store.tables_search import PgSearch

__all__ = ["CHANNEL", "ChangeListener", "PostgresStore", "redact_url"]

# The NOTIFY channel; the payload names what changed: "access", "policy" or "review".
CHANNEL = "ledgergate"
# Advisory lock keys (pg_advisory_*lock(bigint)): ledgergate's write lock and its
# migration lock. Fixed numbers ("lg" + purpose) so every gateway takes the same ones.
WRITE_LOCK = 0x6C67_0001
MIGRATE_LOCK = 0x6C67_0002
# Seconds to wait for the server when connecting; a gateway fails its start (or the
# operation) rather than hang on an unreachable database.
CONNECT_TIMEOUT_S = 10
# Entries read per round trip when streaming a stream (keyset pages).
FETCH_ROWS = 2000


class _Db:
    """The connection as the tables mixins see it: ``?`` placeholders (rewritten to
    psycopg's ``%s`` once per statement text), reconnecting between transactions."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._sql: dict[str, str] = {}

    def _q(self, sql: str) -> str:
        q = self._sql.get(sql)
        if q is None:
            q = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return q

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self._store.conn().execute(self._q(sql), tuple(args) or None)

    def executemany(self, sql: str, rows: Any, /) -> psycopg.Cursor[Any]:
        cur = self._store.conn().cursor()
        cur.executemany(self._q(sql), list(rows))
        return cur


class PostgresStore(LedgerTables, PgSearch, IdentityTables, PolicyTables, ReviewTables):
    """One connection to a ledgergate PostgreSQL database. One thread at a time."""

    _ROW_CLAIM = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, password: str | None = None, durable: bool = False) -> None:
        self.url = redact_url(url)
        self._dsn = url
        self._password = password
        self._in_tx = False
        self.chunk_blocks = blocks.enabled()
        self._closed = False
        self._durable = durable
        self._conn: psycopg.Connection[Any] | None = None
        self._db = _Db(self)
        try:
            self.conn()
            self._migrate()
        except psycopg.Error as e:
            self.close()
            raise StoreError(f"cannot open the PostgreSQL store {self.url}: {reason(e)}") from e
        except StoreError:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- connection ---------------------------------------------------------------------------
    def connect(self) -> psycopg.Connection[Any]:
        """A new connection with this store's settings (the listener opens its own)."""
        kw: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "ledgergate",
        }
        if self._password is not None:
            kw["password"] = self._password
        return psycopg.connect(self._dsn, **kw)

    def conn(self) -> psycopg.Connection[Any]:
        c = self._conn
        if c is not None and not c.closed:
            return c
        if self._closed:
            raise StoreError("postgresql store: the store was closed")
        if self._in_tx:
            raise StoreError("postgresql store: the connection was lost inside a transaction")
        c = self._conn = self.connect()
        if self._durable:
            c.execute("SET synchronous_commit = on")
        return c

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def set_durable(self, durable: bool) -> None:
        # A commit PostgreSQL acknowledged survives the gateway's death either way; on
        # asks the server to flush it to disk too, whatever its default.
        self._durable = durable
        if durable:
            try:
                self.conn().execute("SET synchronous_commit = on")
            except psycopg.Error as e:
                raise StoreError(f"postgresql store: set_durable: {reason(e)}") from e

    # -- migrations ------------------------------------------------------------------------------
    def _version(self) -> int:
        c = self.conn()
        row = c.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return 0
        row = c.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return  # the common case: no lock needed
        c = self.conn()
        with self._begin(MIGRATE_LOCK):
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_ns BIGINT NOT NULL)"
            )
            current = self._version()  # again, under the lock: another gateway may have won
            for version, statements in pending_migrations(current, MIGRATIONS, self.url):
                for stmt in statements:
                    c.execute(stmt)
                c.execute(
                    "INSERT INTO schema_version (version, applied_ns) VALUES (%s, %s)",
                    (version, time.time_ns()),
                )

    def schema_version(self) -> int:
        return self._version()

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def _begin(self, lock: int | None) -> Iterator[None]:
        if self._in_tx:
            raise StoreError("postgresql store: transactions do not nest")
        try:
            c = self.conn()
            c.execute("BEGIN")
            if lock is not None:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        except psycopg.Error as e:
            self._rollback()
            raise StoreError(f"postgresql store: cannot start a transaction: {reason(e)}") from e
        self._in_tx = True
        try:
            yield
            c.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"postgresql store: transaction failed: {reason(exc)}") from exc
            raise
        finally:
            self._in_tx = False

    def _rollback(self) -> None:
        c = self._conn
        if c is None or c.closed:
            return
        try:
            if c.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                c.execute("ROLLBACK")
        except psycopg.Error:
            c.close()  # the next operation opens a clean connection

    @contextmanager
    def transaction(self, *, exclusive: bool = True) -> Iterator[None]:
        with self._begin(WRITE_LOCK if exclusive else None):
            yield

    # -- ledger: entries (the engine's own way to write and stream them) -----------------------
    @translated
    def insert_entries(self, rows: Sequence[EntryRow]) -> None:
        if self.chunk_blocks:
            rows, packed = blocks.split(rows)
            if packed:
                self.insert_blocks(packed)
        if not rows:
            return
        cur = self.conn().cursor()
        with cur.copy(f"COPY entries ({ENTRY_COLS}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)

    def _row_entries(
        self, stream: str, start: int, stop: int | None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        sql = "SELECT seq, canonical, entry_hash FROM entries WHERE stream=%s AND seq>=%s"
        if stop is not None:
            sql += " AND seq<%s"
        sql += " ORDER BY seq LIMIT %s"
        seq = start
        while True:
            args: tuple[Any, ...] = (
                (stream, seq, stop, FETCH_ROWS) if stop is not None else (stream, seq, FETCH_ROWS)
            )
            try:
                rows = self.conn().execute(sql, args).fetchall()
            except psycopg.Error as e:
                raise StoreError(f"postgresql store: iter_entries: {reason(e)}") from e
            for s, data, h in rows:
                yield int(s), as_blob(data), as_blob(h)
            if len(rows) < FETCH_ROWS:
                return
            seq = int(rows[-1][0]) + 1

    def _entry_rows(self, stream: str) -> Iterator[EntryRow]:
        sql = f"SELECT {ENTRY_COLS} FROM entries WHERE stream=%s AND seq>=%s ORDER BY seq LIMIT %s"
        seq = 0
        while True:
            try:
                rows = self.conn().execute(sql, (stream, seq, FETCH_ROWS)).fetchall()
            except psycopg.Error as e:
                raise StoreError(f"postgresql store: iter_entry_rows: {reason(e)}") from e
            for r in rows:
                yield entry_row(r)
            if len(rows) < FETCH_ROWS:
                return
            seq = int(rows[-1][1]) + 1

    def _outbox_ids_moved(self) -> None:
        self._db.execute(
            "SELECT setval(pg_get_serial_sequence('outbox', 'id'), "
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM outbox), false)"
        )

    # -- change notices ------------------------------------------------------------------------
    def _notify(self, what: str) -> None:
        self._db.execute("SELECT pg_notify(?, ?)", (CHANNEL, what))

    @translated
    def bump_access_epoch(self) -> None:
        super().bump_access_epoch()
        self._notify("access")

    def _bump_policy_epoch(self) -> None:
        super()._bump_policy_epoch()
        self._notify("policy")

    def _bump_review_epoch(self) -> None:
        super()._bump_review_epoch()
        self._notify("review")


class ChangeListener:
    """A connection that LISTENs for the store's change notices. ``wait(timeout)``
    returns the set of what changed ("access", "policy", "review") since the last call,
    empty when nothing did before the timeout. One thread at a time; reconnects on the
    next wait after the connection is lost (and then reports every kind as changed,
    since a notice may have been missed)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn: psycopg.Connection[Any] | None = None

    def _listen(self) -> psycopg.Connection[Any]:
        c = self._store.connect()
        c.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(CHANNEL)))
        return c

    def wait(self, timeout: float) -> set[str]:
        fresh = self._conn is None or self._conn.closed
        try:
            if fresh:
                self._conn = self._listen()
            assert self._conn is not None
            got = {n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)}
            # Collect what else already arrived, without waiting again.
            got |= {n.payload for n in self._conn.notifies(timeout=0)}
        except psycopg.Error as e:
            self.close()
            raise StoreError(f"postgresql store: change notices: {reason(e)}") from e
        return {"access", "policy", "review"} if fresh else got

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
