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
from ledgergate.store.base import CheckpointRow, EntryRow, StoreError
from ledgergate.store.sqlite_identity import ACCESS_KEY_SCHEMA, IDENTITY_SCHEMA, IdentityTables
from ledgergate.store.sqlite_identity import translated as _translated
from ledgergate.store.sqlite_policy import POLICY_SCHEMA, PolicyTables
from ledgergate.store.sqlite_review import REVIEW_SCHEMA, ReviewTables

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

_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE entries (
          stream TEXT NOT NULL,
          seq INTEGER NOT NULL,
          ts_ns INTEGER NOT NULL,
          kind TEXT NOT NULL,
          session_id TEXT,
          identity TEXT,
          connection TEXT,
          canonical BLOB NOT NULL,
          entry_hash BLOB NOT NULL,
          PRIMARY KEY (stream, seq)
        );
        CREATE INDEX entries_session ON entries(session_id) WHERE session_id IS NOT NULL;
        CREATE INDEX entries_kind_ts ON entries(kind, ts_ns);
        CREATE TABLE streams (
          stream TEXT PRIMARY KEY,
          state BLOB NOT NULL,
          updated_ns INTEGER NOT NULL
        );
        CREATE TABLE checkpoints (
          stream TEXT NOT NULL,
          size INTEGER NOT NULL,
          ts_ns INTEGER NOT NULL,
          root BLOB NOT NULL,
          note TEXT NOT NULL,
          PRIMARY KEY (stream, size)
        );
        CREATE TABLE payloads (
          digest TEXT PRIMARY KEY,
          blob BLOB NOT NULL,
          created_ns INTEGER NOT NULL
        );
        CREATE INDEX payloads_created ON payloads(created_ns);
        CREATE TABLE tokens (
          id TEXT PRIMARY KEY,
          token_hash BLOB NOT NULL UNIQUE,
          identity TEXT NOT NULL,
          kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
          created_ns INTEGER NOT NULL,
          expires_ns INTEGER NOT NULL,
          revoked_ns INTEGER,
          last_used_ns INTEGER,
          created_by TEXT
        );
        """,
    ),
    (2, IDENTITY_SCHEMA),
    (3, POLICY_SCHEMA),
    (4, REVIEW_SCHEMA),
    (5, ACCESS_KEY_SCHEMA),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_ENTRY_COLS = "stream, seq, ts_ns, kind, session_id, identity, connection, canonical, entry_hash"
_INSERT_ENTRY = f"INSERT INTO entries ({_ENTRY_COLS}) VALUES (?,?,?,?,?,?,?,?,?)"
# Many entries in ONE statement: ?1 is a JSON array of [stream, seq, ts_ns, kind,
# session_id, identity, connection, length] per entry, ?2 their canonical bytes end to
# end, ?3 their 32-byte hashes end to end. executemany() takes Python's GIL back for every
# row, which a gateway's indexer thread cannot get while the relay loop is busy (measured:
# milliseconds per row); one statement runs to its end with the GIL released.
_INSERT_ENTRIES_BULK = (
    f"INSERT INTO entries ({_ENTRY_COLS}) "
    "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, "
    "substr(?2, (sum(value->>7) OVER w) - (value->>7) + 1, value->>7), "
    "substr(?3, 32 * key + 1, 32) "
    "FROM json_each(?1) WINDOW w AS (ORDER BY key ROWS UNBOUNDED PRECEDING) ORDER BY key"
)
# Below this many rows executemany() is as quick; ``->>`` needs SQLite 3.38.
BULK_MIN_ROWS = 16
_HAS_BULK = sqlite3.sqlite_version_info >= (3, 38, 0)
_CP_COLS = "stream, size, ts_ns, root, note"


def _blob(v: object) -> bytes:
    """A BLOB column as bytes, whatever is really stored there: SQLite columns are not
    typed, and a tampered row (``replace()`` turns a BLOB into TEXT) must reach the
    verifier as data to reject, not crash the reader."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if v is None:
        return b""
    return str(v).encode("ascii")


def _text(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def _entry(r: Sequence[Any]) -> EntryRow:
    return EntryRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _blob(r[7]), _blob(r[8]))


def _checkpoint(r: Sequence[Any]) -> CheckpointRow:
    return CheckpointRow(r[0], r[1], r[2], _blob(r[3]), _text(r[4]))


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


class SqliteStore(IdentityTables, PolicyTables, ReviewTables):
    """One connection to a ledgergate SQLite database. One thread at a time."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self.url = f"sqlite://{path}" if path.is_absolute() else f"sqlite:{path}"
        self._in_tx = False
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread
            # off: a writer may be opened on one thread and then used (only) on another.
            self._db = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {path}: {e}") from e
        try:
            db = self._db
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
            self._db.close()
            raise StoreError(f"cannot open the SQLite store {path}: {e}") from e
        except StoreError:
            self._db.close()
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
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this ledgergate "
                    f"understands ({SCHEMA_VERSION}); upgrade ledgergate"
                )
            for version, script in _MIGRATIONS:
                if version <= current:
                    continue
                # executescript() would COMMIT our transaction: run statement by statement.
                for stmt in script.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(
                    "INSERT INTO schema_version (version, applied_ns) VALUES (?, ?)",
                    (version, time.time_ns()),
                )

    # -- lifecycle and transactions -------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def set_durable(self, durable: bool) -> None:
        try:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: set_durable: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            raise StoreError("sqlite store: transactions do not nest")
        db = self._db
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

    # -- ledger: streams --------------------------------------------------------------------
    @_translated
    def get_stream_state(self, stream: str) -> bytes | None:
        row = self._db.execute("SELECT state FROM streams WHERE stream=?", (stream,)).fetchone()
        return _blob(row[0]) if row else None

    @_translated
    def put_stream_state(self, stream: str, state: bytes, updated_ns: int) -> None:
        self._db.execute(
            "INSERT INTO streams (stream, state, updated_ns) VALUES (?,?,?) "
            "ON CONFLICT(stream) DO UPDATE SET state=excluded.state, "
            "updated_ns=excluded.updated_ns",
            (stream, state, updated_ns),
        )

    @_translated
    def stream_states(self) -> dict[str, bytes]:
        return {r[0]: _blob(r[1]) for r in self._db.execute("SELECT stream, state FROM streams")}

    @_translated
    def streams(self) -> list[str]:
        rows = self._db.execute(
            "SELECT stream FROM streams UNION SELECT DISTINCT stream FROM entries "
            "UNION SELECT DISTINCT stream FROM checkpoints ORDER BY 1"
        )
        return [r[0] for r in rows]

    @_translated
    def streams_between(self, since_ns: int | None, until_ns: int | None) -> list[str]:
        out = []
        for stream in self.streams():
            row = self._db.execute(
                "SELECT 1 FROM entries WHERE stream=? AND ts_ns>=? AND ts_ns<? LIMIT 1",
                (stream, _clamp(since_ns if since_ns is not None else _MIN), _until(until_ns)),
            ).fetchone()
            if row:
                out.append(stream)
        return out

    # -- ledger: entries ------------------------------------------------------------------
    @_translated
    def insert_entries(self, rows: Sequence[EntryRow]) -> None:
        if len(rows) < BULK_MIN_ROWS or not _HAS_BULK:
            self._db.executemany(_INSERT_ENTRY, rows)
            return
        if any(len(r[8]) != HASH_SIZE for r in rows):
            raise StoreError("sqlite store: insert_entries: an entry hash is not 32 bytes")
        index = orjson.dumps([(r[0], r[1], r[2], r[3], r[4], r[5], r[6], len(r[7])) for r in rows])
        canonical = b"".join([r[7] for r in rows])
        hashes = b"".join([r[8] for r in rows])
        self._db.execute(_INSERT_ENTRIES_BULK, (index, canonical, hashes))

    def iter_entries(
        self, stream: str, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        sql = "SELECT seq, canonical, entry_hash FROM entries WHERE stream=? AND seq>=?"
        args: list[Any] = [stream, start]
        if stop is not None:
            sql += " AND seq<?"
            args.append(stop)
        try:
            cur = self._db.execute(sql + " ORDER BY seq", args)
            while batch := cur.fetchmany(FETCH_ROWS):
                for seq, data, h in batch:
                    yield (seq if type(seq) is int else -1), _blob(data), _blob(h)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: iter_entries: {e}") from e

    def iter_entry_hashes(self, stream: str, stop: int) -> Iterator[bytes]:
        try:
            cur = self._db.execute(
                "SELECT entry_hash FROM entries WHERE stream=? AND seq<? ORDER BY seq",
                (stream, stop),
            )
            while batch := cur.fetchmany(FETCH_ROWS * 4):
                for (h,) in batch:
                    yield _blob(h)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store: iter_entry_hashes: {e}") from e

    @_translated
    def get_entry(self, stream: str, seq: int) -> EntryRow | None:
        row = self._db.execute(
            f"SELECT {_ENTRY_COLS} FROM entries WHERE stream=? AND seq=?", (stream, seq)
        ).fetchone()
        return _entry(row) if row else None

    @_translated
    def max_seq(self, stream: str) -> int | None:
        row = self._db.execute("SELECT MAX(seq) FROM entries WHERE stream=?", (stream,)).fetchone()
        return None if row[0] is None else int(row[0])

    @_translated
    def last_seq_before(self, stream: str, until_ns: int) -> int | None:
        row = self._db.execute(
            "SELECT MAX(seq) FROM entries WHERE stream=? AND ts_ns<?", (stream, _clamp(until_ns))
        ).fetchone()
        return None if row[0] is None else int(row[0])

    @_translated
    def find_entries(
        self,
        *,
        kinds: Sequence[str] = (),
        session_ids: Sequence[str] = (),
        identity: str | None = None,
        connection: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[EntryRow]:
        where: list[str] = []
        args: list[Any] = []
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        if session_ids:
            where.append(f"session_id IN ({','.join('?' * len(session_ids))})")
            args.extend(session_ids)
        if identity is not None:
            where.append("identity=?")
            args.append(identity)
        if connection is not None:
            where.append("connection=?")
            args.append(connection)
        if since_ns is not None:
            where.append("ts_ns>=?")
            args.append(_clamp(since_ns))
        if until_ns is not None:
            where.append("ts_ns<?")
            args.append(_clamp(until_ns))
        sql = f"SELECT {_ENTRY_COLS} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY ts_ns {order}, stream {order}, seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_entry(r) for r in self._db.execute(sql, args)]

    # -- ledger: checkpoints and payloads -------------------------------------------------
    @_translated
    def put_checkpoint(self, row: CheckpointRow) -> None:
        self._db.execute(
            f"INSERT OR IGNORE INTO checkpoints ({_CP_COLS}) VALUES (?,?,?,?,?)", tuple(row)
        )

    @_translated
    def checkpoints(self, stream: str) -> list[CheckpointRow]:
        rows = self._db.execute(
            f"SELECT {_CP_COLS} FROM checkpoints WHERE stream=? ORDER BY size", (stream,)
        )
        return [_checkpoint(r) for r in rows]

    @_translated
    def latest_checkpoint(self, stream: str) -> CheckpointRow | None:
        r = self._db.execute(
            f"SELECT {_CP_COLS} FROM checkpoints WHERE stream=? ORDER BY size DESC LIMIT 1",
            (stream,),
        ).fetchone()
        return _checkpoint(r) if r else None

    @_translated
    def put_payloads(self, rows: Sequence[tuple[str, bytes, int]]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO payloads (digest, blob, created_ns) VALUES (?,?,?)", rows
        )

    @_translated
    def get_payload(self, digest: str) -> bytes | None:
        row = self._db.execute("SELECT blob FROM payloads WHERE digest=?", (digest,)).fetchone()
        return _blob(row[0]) if row else None

    @_translated
    def delete_payloads(self, created_before_ns: int) -> int:
        cur = self._db.execute("DELETE FROM payloads WHERE created_ns<?", (created_before_ns,))
        return cur.rowcount


_MIN, _MAX = -(2**63), 2**63 - 1  # SQLite INTEGER


def _clamp(ns: int) -> int:
    """Times far in the past or future (year 2999) still compare: SQLite integers are
    64-bit."""
    return min(max(ns, _MIN), _MAX)


def _until(until_ns: int | None) -> int:
    return _MAX if until_ns is None else _clamp(until_ns)
