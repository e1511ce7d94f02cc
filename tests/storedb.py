"""Raw SQL on a test gateway's store, whichever engine holds it.

Tests that look under the store interface (a tamper test editing a row, a check that no
secret was ever written) use ``StoreDb``: ``execute(sql, args)`` with ``?`` placeholders
as sqlite3 takes them, ``commit()``, ``close()``, and ``dump()``: every byte the store
holds (the SQLite file, or every row of every PostgreSQL table) for "this secret is
nowhere" checks. The SQL must be what both engines run.

Entries are rows or sit inside blocks (chunk entries, ``ledgergate.store.blocks``):
``entry``, ``entry_seqs``, ``set_entry`` and ``delete_entries`` read and edit either,
as someone with the database in hand would.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Any

import psycopg

from ledgergate.store import blocks, sqlite_path
from ledgergate.store.base import EntryRow

__all__ = ["StoreDb"]


class StoreDb:
    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if url.startswith("sqlite:"):
            self._sqlite = sqlite3.connect(sqlite_path(url))
        else:
            self._pg = psycopg.connect(url, password=password)

    def execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        if self._sqlite is not None:
            return self._sqlite.execute(sql, args)
        assert self._pg is not None
        return self._pg.execute(sql.replace("?", "%s"), tuple(args) or None)  # type: ignore[arg-type]

    def commit(self) -> None:
        if self._sqlite is not None:
            self._sqlite.commit()
        elif self._pg is not None:
            self._pg.commit()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()

    def __enter__(self) -> StoreDb:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- entries, wherever the store keeps them ---------------------------------------------
    def entry(self, stream: str, seq: int) -> tuple[bytes, bytes] | None:
        """(canonical, entry_hash) of an entry."""
        row = self.execute(
            "SELECT canonical, entry_hash FROM ledger_entries WHERE stream=? AND seq=?",
            (stream, seq),
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def entry_seqs(self, stream: str, kind: str | None = None) -> list[int]:
        sql = "SELECT seq FROM ledger_entries WHERE stream=?"
        args: list[Any] = [stream]
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        return [int(r[0]) for r in self.execute(sql + " ORDER BY seq", args)]

    def _block(self, stream: str, seq: int) -> list[EntryRow]:
        row = self.execute(
            "SELECT idx, body, hashes, first_seq FROM entry_blocks WHERE stream=? "
            "AND last_seq>=? ORDER BY last_seq LIMIT 1",
            (stream, seq),
        ).fetchone()
        if row is None or int(row[3]) > seq:
            return []
        return blocks.unpack(stream, row[0], bytes(row[1]), bytes(row[2]))

    def _put_block(self, stream: str, last_seq: int, entries: list[EntryRow]) -> None:
        if not entries:
            self.execute(
                "DELETE FROM entry_blocks WHERE stream=? AND last_seq=?", (stream, last_seq)
            )
            return
        b = blocks.pack(entries)
        self.execute(
            "UPDATE entry_blocks SET first_seq=?, last_seq=?, idx=?, body=?, hashes=? "
            "WHERE stream=? AND last_seq=?",
            (b[1], b[2], b[6], b[7], b[8], stream, last_seq),
        )

    def set_entry(
        self,
        stream: str,
        seq: int,
        canonical: bytes | None = None,
        entry_hash: bytes | None = None,
    ) -> None:
        """Overwrite an entry's document and/or hash in place (its row, or its block)."""
        if self.execute("SELECT 1 FROM entries WHERE stream=? AND seq=?", (stream, seq)).fetchone():
            if canonical is not None:
                self.execute(
                    "UPDATE entries SET canonical=? WHERE stream=? AND seq=?",
                    (canonical, stream, seq),
                )
            if entry_hash is not None:
                self.execute(
                    "UPDATE entries SET entry_hash=? WHERE stream=? AND seq=?",
                    (entry_hash, stream, seq),
                )
            return
        entries = self._block(stream, seq)
        assert any(e.seq == seq for e in entries), f"no entry {stream}:{seq}"
        last = entries[-1].seq
        edited = [
            e._replace(
                canonical=e.canonical if canonical is None else canonical,
                entry_hash=e.entry_hash if entry_hash is None else entry_hash,
            )
            if e.seq == seq
            else e
            for e in entries
        ]
        self._put_block(stream, last, edited)

    def delete_entries(self, stream: str, lo: int, hi: int | None = None) -> None:
        """Delete entries ``lo..hi`` (inclusive; ``hi`` None: to the end), rows and the
        same entries out of their blocks."""
        top = hi if hi is not None else 2**62
        self.execute("DELETE FROM entries WHERE stream=? AND seq>=? AND seq<=?", (stream, lo, top))
        for (last,) in self.execute(
            "SELECT last_seq FROM entry_blocks WHERE stream=? AND last_seq>=? AND first_seq<=?",
            (stream, lo, top),
        ).fetchall():
            entries = self._block(stream, int(last))
            self._put_block(stream, int(last), [e for e in entries if not lo <= e.seq <= top])

    def dump(self) -> bytes:
        """Everything the store holds, as bytes to search."""
        if self._sqlite is not None:
            path = sqlite_path(self.url)
            out = path.read_bytes()
            wal = path.with_name(path.name + "-wal")
            return out + (wal.read_bytes() if wal.exists() else b"")
        assert self._pg is not None
        parts: list[bytes] = []
        tables = self._pg.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        for (table,) in tables:
            for row in self._pg.execute(
                psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(table))
            ):
                for v in row:
                    if isinstance(v, bytes):
                        parts.append(v)
                    elif v is not None:
                        parts.append(str(v).encode())
        self._pg.rollback()
        return b"\n".join(parts)
