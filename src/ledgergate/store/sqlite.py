"""The SQLite store: ledger entries, stream states, checkpoints, payloads, tokens.

WAL mode so the gateway and CLI processes share one file; ``synchronous=NORMAL`` survives
a kill -9 of the process (the WAL is in the OS cache), ``FULL`` (the ledger's fsync
setting) survives power loss. One instance per thread. No business rules here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SqliteStore", "StoreError", "open_store"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
  stream TEXT NOT NULL, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL, kind TEXT NOT NULL,
  session_id TEXT, identity TEXT, connection TEXT,
  canonical BLOB NOT NULL, entry_hash BLOB NOT NULL,
  PRIMARY KEY (stream, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_session ON entries(session_id) WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_kind_ts ON entries(kind, ts_ns);
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, state BLOB NOT NULL,
  size INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (stream TEXT NOT NULL, size INTEGER NOT NULL,
  ts_ns INTEGER NOT NULL, note TEXT NOT NULL, PRIMARY KEY (stream, size));
CREATE TABLE IF NOT EXISTS payloads (digest TEXT PRIMARY KEY, blob BLOB NOT NULL,
  created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE,
  identity TEXT NOT NULL, kind TEXT NOT NULL, created_ns INTEGER NOT NULL,
  expires_ns INTEGER NOT NULL, revoked_ns INTEGER, last_used_ns INTEGER, created_by TEXT);
"""


class StoreError(RuntimeError):
    pass


def open_store(url: str, *, fsync: bool = False) -> SqliteStore:
    if not url.startswith("sqlite:///"):
        raise StoreError(f"unsupported store URL (only sqlite:///PATH for now): {url.split(':')[0]}")
    # sqlite:///relative/path or sqlite:////absolute/path (SQLAlchemy's convention)
    return SqliteStore(Path(url[len("sqlite:///") :]), fsync=fsync)


class SqliteStore:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self.db.execute("PRAGMA busy_timeout=30000")
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                self.db.execute(stmt)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    # -- transactions -------------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection, immediate: bool) -> None:
            self.db = db
            self.immediate = immediate

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
            return self.db

        def __exit__(self, et: object, e: object, tb: object) -> None:
            if et is None:
                self.db.execute("COMMIT")
            else:
                self.db.execute("ROLLBACK")

    def tx(self, immediate: bool = True) -> SqliteStore._Tx:
        return SqliteStore._Tx(self.db, immediate)

    # -- ledger ---------------------------------------------------------------------------
    def stream_state(self, stream: str) -> bytes | None:
        row = self.db.execute("SELECT state FROM streams WHERE stream=?", (stream,)).fetchone()
        return bytes(row[0]) if row else None

    def stream_states(self) -> dict[str, tuple[int, bytes]]:
        return {r[0]: (r[2], bytes(r[1])) for r in
                self.db.execute("SELECT stream, state, size FROM streams")}

    def insert_entries(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.db.executemany(
            "INSERT INTO entries (stream, seq, ts_ns, kind, session_id, identity, connection,"
            " canonical, entry_hash) VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def put_stream_state(self, stream: str, state: bytes, size: int, now_ns: int) -> None:
        self.db.execute(
            "INSERT INTO streams VALUES (?,?,?,?) ON CONFLICT(stream) DO UPDATE SET "
            "state=excluded.state, size=excluded.size, updated_ns=excluded.updated_ns",
            (stream, state, size, now_ns))

    def put_payloads(self, rows: Sequence[tuple[str, bytes, int]]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO payloads VALUES (?,?,?)", rows)

    def payload(self, digest: str) -> bytes | None:
        row = self.db.execute("SELECT blob FROM payloads WHERE digest=?", (digest,)).fetchone()
        return bytes(row[0]) if row else None

    def put_checkpoint(self, stream: str, size: int, ts_ns: int, note: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?)", (stream, size, ts_ns, note))

    def checkpoints(self, stream: str) -> list[tuple[int, int, str]]:
        return [(r[0], r[1], r[2]) for r in self.db.execute(
            "SELECT size, ts_ns, note FROM checkpoints WHERE stream=? ORDER BY size", (stream,))]

    def streams(self) -> list[str]:
        rows = self.db.execute(
            "SELECT stream FROM streams UNION SELECT DISTINCT stream FROM entries "
            "UNION SELECT DISTINCT stream FROM checkpoints ORDER BY 1")
        return [r[0] for r in rows]

    def iter_entries(self, stream: str) -> Iterator[tuple[int, bytes, bytes]]:
        cur = self.db.execute(
            "SELECT seq, canonical, entry_hash FROM entries WHERE stream=? ORDER BY seq", (stream,))
        for seq, data, h in cur:
            yield seq, bytes(data), bytes(h)

    def entry(self, stream: str, seq: int) -> bytes | None:
        row = self.db.execute("SELECT canonical FROM entries WHERE stream=? AND seq=?",
                              (stream, seq)).fetchone()
        return bytes(row[0]) if row else None

    def leaf_hashes(self, stream: str, size: int) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute(
            "SELECT entry_hash FROM entries WHERE stream=? AND seq<? ORDER BY seq", (stream, size))]

    def query_entries(self, where: str, args: Sequence[Any]) -> list[tuple[str, int, int, str, bytes]]:
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in self.db.execute(
            "SELECT stream, seq, ts_ns, kind, canonical FROM entries WHERE " + where, args)]

    # -- tokens -----------------------------------------------------------------------------
    def insert_token(self, row: tuple[Any, ...]) -> None:
        self.db.execute("INSERT INTO tokens (id, token_hash, identity, kind, created_ns, expires_ns,"
                        " created_by) VALUES (?,?,?,?,?,?,?)", row)

    def token_by_hash(self, h: bytes) -> tuple[Any, ...] | None:
        row = self.db.execute("SELECT id, identity, kind, expires_ns, revoked_ns FROM tokens "
                              "WHERE token_hash=?", (h,)).fetchone()
        return tuple(row) if row else None

    def touch_token(self, token_id: str, now_ns: int) -> None:
        self.db.execute("UPDATE tokens SET last_used_ns=? WHERE id=?", (now_ns, token_id))

    def revoke_token(self, token_id: str, now_ns: int) -> bool:
        cur = self.db.execute("UPDATE tokens SET revoked_ns=? WHERE id=? AND revoked_ns IS NULL",
                              (now_ns, token_id))
        return cur.rowcount == 1

    def tokens(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.db.execute(
            "SELECT id, identity, kind, created_ns, expires_ns, revoked_ns, last_used_ns, created_by"
            " FROM tokens ORDER BY created_ns")]
