"""The SQLite engine of the store (stdlib ``sqlite3``): the embedded default.

Owns the SQL, the schema migrations and the connection settings for one database file.
WAL mode, so the gateway and several CLI processes share the file (readers never block
the writer); ``busy_timeout`` makes a writer wait for the lock instead of failing.
``synchronous=NORMAL`` keeps every commit across a kill -9 of the process (the WAL is in
the OS page cache); ``FULL`` (``set_durable(True)``, the ledger's fsync setting) also
across power loss. Must not hold business rules or leak ``sqlite3`` exceptions: they
become ``StoreError`` here.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ledgergate.core.ledger.merkle import HASH_SIZE
from ledgergate.store import blocks
from ledgergate.store.base import EntryRow, StoreError
from ledgergate.store.sql import as_blob, pending_migrations, translated
from ledgergate.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from ledgergate.store.tables_identity import IdentityTables
from ledgergate.store.tables_ledger import ENTRY_COLS, LedgerTables, entry_row
from ledgergate.store.tables_policy import PolicyTables
from ledgergate.store.tables_review import ReviewTables
from ledgergate.store.tables_search import SqliteSearch

__all__ = ["SCHEMA_VERSION", "SqliteStore", "open_sqlite"]

# How long a statement waits for another process's write lock before failing. A gateway
# commit takes milliseconds; 30 s only trips when something is really stuck.
BUSY_TIMEOUT_MS = 30_000
# Page cache per connection (negative = KiB): the hot indexes of a busy ledger fit.
CACHE_KIB = 32_768
# WAL pages before an automatic checkpoint folds the WAL back into the database.
# Larger than SQLite's 1000 so a gateway appending ~10 MB/s checkpoints every few
# seconds rather than several times a second.
WAL_AUTOCHECKPOINT_PAGES = 4000
# Truncate the WAL file back to this size after a checkpoint (bytes).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# Rows fetched per round trip when streaming entries.
FETCH_ROWS = 2000


_INSERT_ENTRY = f"INSERT INTO entries ({ENTRY_COLS}) VALUES (?,?,?,?,?,?,?,?,?)"
# Many entries in ONE statement: ?1 is a JSON array of [stream, seq, ts_ns, kind,
# session_id, identity, connection, length] per entry, ?2 their canonical bytes end to
# end, ?3 their 32-byte hashes end to end. executemany() takes Python's GIL back for every
# row, which a gateway's indexer thread cannot get while the relay loop is busy (measured:
# milliseconds per row); one statement runs to its end with the GIL released.
_INSERT_ENTRIES_BULK = (
    f"INSERT INTO entries ({ENTRY_COLS}) "
    "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, "
    "substr(?2, (sum(value->>7) OVER w) - (value->>7) + 1, value->>7), "
    "substr(?3, 32 * key + 1, 32) "
    "FROM json_each(?1) WINDOW w AS (ORDER BY key ROWS UNBOUNDED PRECEDING) ORDER BY key"
)
# Below this many rows executemany() is as quick; ``->>`` needs SQLite 3.38.
BULK_MIN_ROWS = 16
_HAS_BULK = sqlite3.sqlite_version_info >= (3, 38, 0)


def open_sqlite(path: Path, *, durable: bool = False) -> SqliteStore:
    """Open (creating the file, its parent directories and the schema) a database. A
    new database and the directories made for it are the gateway user's alone (0600,
    0700; SQLite gives its -wal and -shm files the database's mode): the ledger, token
    hashes and reviews are no one else's to read."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the directory of the SQLite store {path}: {e}") from e
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise StoreError(f"cannot create the SQLite store {path}: {e.strerror}") from e
    else:
        os.close(fd)
    return SqliteStore(path, durable=durable)


class SqliteStore(LedgerTables, SqliteSearch, IdentityTables, PolicyTables, ReviewTables):
    """One connection to a ledgergate SQLite database. One thread at a time."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self.url = f"sqlite://{path}" if path.is_absolute() else f"sqlite:{path}"
        self._in_tx = False
        self.chunk_blocks = blocks.enabled()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread
            # off: a writer may be opened on one thread and then used (only) on another.
            self._sqlite = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {path}: {e}") from e
        try:
            db = self._db = self._sqlite
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch the database to WAL mode ({mode})")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            db.execute("PRAGMA temp_store=MEMORY")
            self.set_durable(durable)
            self._migrate()
        except sqlite3.Error as e:
            self._sqlite.close()
            raise StoreError(f"cannot open the SQLite store {path}: {e}") from e
        except StoreError:
            self._sqlite.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _version(self) -> int:
        db = self._db
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if not exists:
            return 0
        return int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return  # the common case: opening needs no write lock
        db = self._db
        with self.transaction():
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL)"
            )
            current = self._version()  # again, under the lock: another process may have won
            for version, statements in pending_migrations(current, MIGRATIONS, str(self.path)):
                # executescript() would COMMIT our transaction: run statement by statement.
                for stmt in statements:
                    db.execute(stmt)
                db.execute(
                    "INSERT INTO schema_version (version, applied_ns) VALUES (?, ?)",
                    (version, time.time_ns()),
                )

    def schema_version(self) -> int:
        return self._version()

    # -- lifecycle and transactions -------------------------------------------------------
    def close(self) -> None:
        self._sqlite.close()

    def set_durable(self, durable: bool) -> None:
        try:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: set_durable: {e}") from e

    @contextmanager
    def transaction(self, *, exclusive: bool = True) -> Iterator[None]:
        if self._in_tx:
            raise StoreError("sqlite store: transactions do not nest")
        db = self._sqlite
        try:
            # IMMEDIATE: take the write lock now (waiting up to busy_timeout), so what we
            # read inside cannot be changed by another process before we write.
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: cannot start a write transaction: {e}") from e
        self._in_tx = True
        try:
            yield
            db.execute("COMMIT")
        except BaseException as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error says more than the rollback's
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"sqlite store: transaction failed: {exc}") from exc
            raise
        finally:
            self._in_tx = False

    # -- ledger: entries (the engine's own way to write and stream them) ------------------
    @translated
    def insert_entries(self, rows: Sequence[EntryRow]) -> None:
        if self.chunk_blocks:
            rows, packed = blocks.split(rows)
            if packed:
                self.insert_blocks(packed)
        if len(rows) < BULK_MIN_ROWS or not _HAS_BULK:
            self._db.executemany(_INSERT_ENTRY, rows)
            return
        if any(len(r[8]) != HASH_SIZE for r in rows):
            raise StoreError("sqlite store: insert_entries: an entry hash is not 32 bytes")
        index = orjson.dumps([(r[0], r[1], r[2], r[3], r[4], r[5], r[6], len(r[7])) for r in rows])
        canonical = b"".join([r[7] for r in rows])
        hashes = b"".join([r[8] for r in rows])
        self._db.execute(_INSERT_ENTRIES_BULK, (index, canonical, hashes))

    def _row_entries(
        self, stream: str, start: int, stop: int | None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        sql = "SELECT seq, canonical, entry_hash FROM entries WHERE stream=? AND seq>=?"
        args: list[Any] = [stream, start]
        if stop is not None:
            sql += " AND seq<?"
            args.append(stop)
        try:
            cur = self._sqlite.execute(sql + " ORDER BY seq", args)
            while batch := cur.fetchmany(FETCH_ROWS):
                for seq, data, h in batch:
                    yield (seq if type(seq) is int else -1), as_blob(data), as_blob(h)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: iter_entries: {e}") from e

    def _entry_rows(self, stream: str) -> Iterator[EntryRow]:
        try:
            cur = self._sqlite.execute(
                f"SELECT {ENTRY_COLS} FROM entries WHERE stream=? ORDER BY seq", (stream,)
            )
            while batch := cur.fetchmany(FETCH_ROWS):
                for r in batch:
                    yield entry_row(r)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: iter_entry_rows: {e}") from e

    def iter_entry_hashes(self, stream: str, stop: int) -> Iterator[bytes]:
        if self._has_blocks(stream, 0):
            yield from LedgerTables.iter_entry_hashes(self, stream, stop)
            return
        try:
            cur = self._sqlite.execute(
                "SELECT entry_hash FROM entries WHERE stream=? AND seq<? ORDER BY seq",
                (stream, stop),
            )
            while batch := cur.fetchmany(FETCH_ROWS * 4):
                for (h,) in batch:
                    yield as_blob(h)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: iter_entry_hashes: {e}") from e
