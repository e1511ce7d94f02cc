"""Ledger tables both engines share: stream states, entry lookups, checkpoints, payloads.

Owns the SQL for reading entries back (by stream and seq, by the search columns) and
for checkpoints and payloads. Writing entries in bulk and streaming them are each
engine's own (``insert_entries``, ``iter_entries``, ``iter_entry_hashes``): the fast way
differs. The search columns of an entry are copies; the canonical document is the only
authority, and no hashing or verification happens here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ledgergate.store.base import CheckpointRow, EntryRow
from ledgergate.store.sql import Db, as_blob, as_text, clamp_ns, translated, until_ns

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


class LedgerTables:
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
            "UNION SELECT DISTINCT stream FROM checkpoints ORDER BY 1"
        )
        return [r[0] for r in rows]

    @translated
    def streams_between(self, since_ns: int | None, until: int | None) -> list[str]:
        out = []
        lo = clamp_ns(since_ns) if since_ns is not None else clamp_ns(-(2**63))
        for stream in self.streams():
            row = self._db.execute(
                "SELECT 1 FROM entries WHERE stream=? AND ts_ns>=? AND ts_ns<? LIMIT 1",
                (stream, lo, until_ns(until)),
            ).fetchone()
            if row:
                out.append(stream)
        return out

    # -- entries ----------------------------------------------------------------------------
    @translated
    def get_entry(self, stream: str, seq: int) -> EntryRow | None:
        row = self._db.execute(
            f"SELECT {ENTRY_COLS} FROM entries WHERE stream=? AND seq=?", (stream, seq)
        ).fetchone()
        return entry_row(row) if row else None

    @translated
    def max_seq(self, stream: str) -> int | None:
        row = self._db.execute("SELECT MAX(seq) FROM entries WHERE stream=?", (stream,)).fetchone()
        return None if row[0] is None else int(row[0])

    @translated
    def last_seq_before(self, stream: str, until: int) -> int | None:
        row = self._db.execute(
            "SELECT MAX(seq) FROM entries WHERE stream=? AND ts_ns<?", (stream, clamp_ns(until))
        ).fetchone()
        return None if row[0] is None else int(row[0])

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
        return [entry_row(r) for r in self._db.execute(sql, args)]

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
        for seq, data in stubs:
            cur = self._db.execute(
                "UPDATE entries SET canonical=?, session_id=NULL, identity=NULL, "
                "connection=NULL WHERE stream=? AND seq=?",
                (data, stream, seq),
            )
            n += max(cur.rowcount, 0)
        return n

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
