"""Ledger tables both engines share: stream states, entry lookups, checkpoints, payloads.

Owns the SQL for reading entries back (by stream and seq, by the search columns) and
for checkpoints and payloads. An entry is a row of ``entries`` or sits in a block of
``entry_blocks`` (chunk entries, ``store.blocks``): every read here merges the two in
seq order, so callers never know which. Writing rows in bulk and streaming them are each
engine's own (``insert_entries``, ``_row_entries``, ``_entry_rows``): the fast way
differs. The search columns of an entry are copies; the canonical document is the only
authority, and no hashing or verification happens here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from ledgergate.store.base import CheckpointRow, EntryRow
from ledgergate.store.blocks import BLOCK_KINDS
from ledgergate.store.sql import Db, as_blob, as_text, clamp_ns, translated, until_ns
from ledgergate.store.tables_blocks import BlockTables

__all__ = [
    "CP_COLS",
    "ENTRY_COLS",
    "LedgerTables",
    "checkpoint_row",
    "entry_filters",
    "entry_row",
]

ENTRY_COLS = "stream, seq, ts_ns, kind, session_id, identity, connection, canonical, entry_hash"
CP_COLS = "stream, size, ts_ns, root, note"
# Payloads read per query when streaming them all (they can be large).
PAYLOAD_PAGE = 200
_by_seq = itemgetter(0)


def entry_row(r: Sequence[Any]) -> EntryRow:
    return EntryRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], as_blob(r[7]), as_blob(r[8]))


def checkpoint_row(r: Sequence[Any]) -> CheckpointRow:
    return CheckpointRow(r[0], r[1], r[2], as_blob(r[3]), as_text(r[4]))


# Kinds with partial indexes of their own (store migration 8): fixed names, never input.
_LITERAL_KINDS = frozenset({("session.open",)})


def entry_filters(
    prefix: str,
    kinds: Sequence[str],
    identity: str | None,
    connection: str | None,
    since_ns: int | None,
    until_ns: int | None,
    *,
    session_ids: Sequence[str] = (),
) -> tuple[list[str], list[Any]]:
    """WHERE terms and their arguments over the entries table's search columns
    (``prefix``: its alias and a dot, or nothing)."""
    where: list[str] = []
    args: list[Any] = []
    if tuple(kinds) in _LITERAL_KINDS:
        # Written out, so the planners may use the partial indexes made for it.
        where.append(f"{prefix}kind = '{kinds[0]}'")
    elif kinds and session_ids:
        # The session index is the selective one: ``kind || ''`` keeps a planner without
        # statistics (a fresh SQLite store) from walking every entry of these kinds.
        where.append(f"{prefix}kind || '' IN ({','.join('?' * len(kinds))})")
        args.extend(kinds)
    elif kinds:
        where.append(f"{prefix}kind IN ({','.join('?' * len(kinds))})")
        args.extend(kinds)
    if session_ids:
        where.append(f"{prefix}session_id IN ({','.join('?' * len(session_ids))})")
        args.extend(session_ids)
    if identity is not None:
        where.append(f"{prefix}identity=?")
        args.append(identity)
    if connection is not None:
        where.append(f"{prefix}connection=?")
        args.append(connection)
    if since_ns is not None:
        where.append(f"{prefix}ts_ns>=?")
        args.append(clamp_ns(since_ns))
    if until_ns is not None:
        where.append(f"{prefix}ts_ns<?")
        args.append(clamp_ns(until_ns))
    return where, args


class LedgerTables(BlockTables):
    """Stream, entry, checkpoint and payload operations (see ``store.base``)."""

    _db: Db

    # -- streams --------------------------------------------------------------------------
    @translated
    def get_stream_state(self, stream: str) -> bytes | None:
        row = self._db.execute("SELECT state FROM streams WHERE stream=?", (stream,)).fetchone()
        return as_blob(row[0]) if row else None

    @translated
    def put_stream_state(self, stream: str, state: bytes, updated_ns: int) -> None:
        self._db.execute(
            "INSERT INTO streams (stream, state, updated_ns) VALUES (?,?,?) "
            "ON CONFLICT(stream) DO UPDATE SET state=excluded.state, "
            "updated_ns=excluded.updated_ns",
            (stream, state, updated_ns),
        )

    @translated
    def stream_states(self) -> dict[str, bytes]:
        rows = self._db.execute("SELECT stream, state FROM streams")
        return {r[0]: as_blob(r[1]) for r in rows}

    @translated
    def streams(self) -> list[str]:
        rows = self._db.execute(
            "SELECT stream FROM streams UNION SELECT DISTINCT stream FROM entries "
            "UNION SELECT DISTINCT stream FROM entry_blocks "
            "UNION SELECT DISTINCT stream FROM checkpoints ORDER BY 1"
        )
        return [r[0] for r in rows]

    @translated
    def streams_between(self, since_ns: int | None, until: int | None) -> list[str]:
        out = []
        lo = clamp_ns(since_ns) if since_ns is not None else clamp_ns(-(2**63))
        hi = until_ns(until)
        for stream in self.streams():
            row = (
                self._db.execute(
                    "SELECT 1 FROM entries WHERE stream=? AND ts_ns>=? AND ts_ns<? LIMIT 1",
                    (stream, lo, hi),
                ).fetchone()
                or self._db.execute(
                    "SELECT 1 FROM entry_blocks WHERE stream=? AND ts_hi>=? AND ts_lo<? LIMIT 1",
                    (stream, lo, hi),
                ).fetchone()
            )
            if row:
                out.append(stream)
        return out

    # -- entries: rows and blocks -----------------------------------------------------------
    # Each engine streams its rows (``_row_entries``, ``_entry_rows``); blocks are read
    # here, a page of them at a time, and merged with the rows in seq order.
    def _row_entries(
        self, stream: str, start: int, stop: int | None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        raise NotImplementedError

    def _entry_rows(self, stream: str) -> Iterator[EntryRow]:
        raise NotImplementedError

    def iter_entries(
        self, stream: str, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, canonical, entry_hash) of the stream's entries in [start, stop), in seq
        order, whether indexed as rows or in blocks."""
        rows = self._row_entries(stream, start, stop)
        if not self._has_blocks(stream, start):
            return rows
        inner = self._block_entries(stream, start, stop)
        chunks = ((e.seq, e.canonical, e.entry_hash) for e in inner)
        return heapq.merge(rows, chunks, key=_by_seq)

    def iter_entry_rows(self, stream: str) -> Iterator[EntryRow]:
        rows = self._entry_rows(stream)
        if not self._has_blocks(stream, 0):
            return rows
        return heapq.merge(rows, self._block_entries(stream, 0, None), key=lambda r: r.seq)

    def iter_entry_hashes(self, stream: str, stop: int) -> Iterator[bytes]:
        for _, _, h in self.iter_entries(stream, 0, stop):
            yield h

    @translated
    def get_entry(self, stream: str, seq: int) -> EntryRow | None:
        row = self._db.execute(
            f"SELECT {ENTRY_COLS} FROM entries WHERE stream=? AND seq=?", (stream, seq)
        ).fetchone()
        if row:
            return entry_row(row)
        return next((e for e in self._block_of(stream, seq) if e.seq == seq), None)

    @translated
    def max_seq(self, stream: str) -> int | None:
        row = self._db.execute("SELECT MAX(seq) FROM entries WHERE stream=?", (stream,)).fetchone()
        top = self._db.execute(
            "SELECT MAX(last_seq) FROM entry_blocks WHERE stream=?", (stream,)
        ).fetchone()
        found = [int(v) for v in (row[0], top[0]) if v is not None]
        return max(found) if found else None

    @translated
    def last_seq_before(self, stream: str, until: int) -> int | None:
        row = self._db.execute(
            "SELECT MAX(seq) FROM entries WHERE stream=? AND ts_ns<?", (stream, clamp_ns(until))
        ).fetchone()
        return self._last_block_seq_before(stream, until, None if row[0] is None else int(row[0]))

    @translated
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
        where, args = entry_filters(
            "", kinds, identity, connection, since_ns, until_ns, session_ids=session_ids
        )
        sql = f"SELECT {ENTRY_COLS} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY ts_ns {order}, stream {order}, seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        out = [entry_row(r) for r in self._db.execute(sql, args)]
        if kinds and not BLOCK_KINDS.intersection(kinds):
            return out
        chunks = [
            e
            for e in self._blocks_matching(session_ids, since_ns, until_ns)
            if (not session_ids or e.session_id in session_ids)
            and (identity is None or e.identity == identity)
            and (connection is None or e.connection == connection)
            and (since_ns is None or e.ts_ns >= since_ns)
            and (until_ns is None or e.ts_ns < until_ns)
        ]
        if not chunks:
            return out
        out += chunks
        out.sort(key=lambda e: (e.ts_ns, e.stream, e.seq), reverse=newest_first)
        return out if limit is None else out[:limit]

    @translated
    def find_open_sessions(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[EntryRow]:
        where, args = entry_filters(
            "e.", ("session.open",), identity, connection, since_ns, until_ns
        )
        # Each opening entry's end is looked up by its session id (the session index),
        # so the cost follows the opening entries read, not the whole ledger.
        where.append(
            "NOT EXISTS (SELECT 1 FROM entries c WHERE c.session_id = e.session_id "
            "AND c.kind || '' IN ('session.close', 'session.terminated'))"
        )
        cols = ", ".join(f"e.{c.strip()}" for c in ENTRY_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM entries e WHERE {' AND '.join(where)} "
            "ORDER BY e.ts_ns DESC, e.stream DESC, e.seq DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [entry_row(r) for r in self._db.execute(sql, args)]

    @translated
    def prune_entries(self, stream: str, stubs: Sequence[tuple[int, bytes]]) -> int:
        n = 0
        in_blocks: dict[int, bytes] = {}
        for seq, data in stubs:
            cur = self._db.execute(
                "UPDATE entries SET canonical=?, session_id=NULL, identity=NULL, "
                "connection=NULL WHERE stream=? AND seq=?",
                (data, stream, seq),
            )
            if cur.rowcount > 0:
                n += cur.rowcount
            else:
                in_blocks[seq] = data
        return n + self._prune_in_blocks(stream, in_blocks)

    # -- checkpoints and payloads -----------------------------------------------------------
    @translated
    def put_checkpoint(self, row: CheckpointRow) -> None:
        self._db.execute(
            f"INSERT INTO checkpoints ({CP_COLS}) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            tuple(row),
        )

    @translated
    def checkpoints(self, stream: str) -> list[CheckpointRow]:
        rows = self._db.execute(
            f"SELECT {CP_COLS} FROM checkpoints WHERE stream=? ORDER BY size", (stream,)
        )
        return [checkpoint_row(r) for r in rows]

    @translated
    def latest_checkpoint(self, stream: str) -> CheckpointRow | None:
        r = self._db.execute(
            f"SELECT {CP_COLS} FROM checkpoints WHERE stream=? ORDER BY size DESC LIMIT 1",
            (stream,),
        ).fetchone()
        return checkpoint_row(r) if r else None

    @translated
    def put_payloads(self, rows: Sequence[tuple[str, bytes, int]]) -> None:
        self._db.executemany(
            "INSERT INTO payloads (digest, blob, created_ns) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            rows,
        )

    @translated
    def get_payload(self, digest: str) -> bytes | None:
        row = self._db.execute("SELECT blob FROM payloads WHERE digest=?", (digest,)).fetchone()
        return as_blob(row[0]) if row else None

    def iter_payloads(self) -> Iterator[tuple[str, bytes, int]]:
        after = ""
        while True:
            rows = self._page_payloads(after)
            for d, b, ns in rows:
                yield str(d), as_blob(b), int(ns)
            if len(rows) < PAYLOAD_PAGE:
                return
            after = str(rows[-1][0])

    @translated
    def _page_payloads(self, after: str) -> list[Any]:
        return list(
            self._db.execute(
                "SELECT digest, blob, created_ns FROM payloads WHERE digest>? "
                "ORDER BY digest LIMIT ?",
                (after, PAYLOAD_PAGE),
            )
        )

    @translated
    def delete_payloads(self, created_before_ns: int) -> int:
        cur = self._db.execute("DELETE FROM payloads WHERE created_ns<?", (created_before_ns,))
        return int(cur.rowcount)

    @translated
    def delete_payload_digests(self, digests: Sequence[str]) -> int:
        n = 0
        for i in range(0, len(digests), 500):
            part = list(digests[i : i + 500])
            cur = self._db.execute(
                f"DELETE FROM payloads WHERE digest IN ({','.join('?' * len(part))})", part
            )
            n += max(cur.rowcount, 0)
        return n
