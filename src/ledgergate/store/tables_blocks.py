"""Chunk entries indexed in blocks, as both engines read and write them (``store.blocks``
says what a block row holds): finding a stream's blocks, a seq's block, a session's
blocks, adding blocks and emptying entries inside them for retention.

``LedgerTables`` merges what is read here with the rows. Must not decide what goes into
a block (``blocks.split``) or verify anything: a block reads as what it holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from ledgergate.store import blocks
from ledgergate.store.base import EntryRow, StoreError
from ledgergate.store.sql import Db, as_blob, clamp_ns, translated

__all__ = ["BLOCK_PAGE", "BlockTables"]

# Blocks read per query when streaming a stream's entries (each up to
# ``blocks.BLOCK_MAX_ENTRIES`` entries).
BLOCK_PAGE = 16
_BLOCK_READ = "SELECT stream, idx, body, hashes, first_seq, last_seq FROM entry_blocks"
_ENDS = ("session.close", "session.terminated")


def _unpack(r: Sequence[Any]) -> list[EntryRow]:
    """The entries of a block row read by ``_BLOCK_READ``."""
    return blocks.unpack(r[0], r[1], as_blob(r[2]), as_blob(r[3]))


class BlockTables:
    """Reads and writes of ``entry_blocks`` (see ``store.base`` for the interface)."""

    _db: Db

    def streams(self) -> list[str]:
        raise NotImplementedError

    @translated
    def _has_blocks(self, stream: str, start: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM entry_blocks WHERE stream=? AND last_seq>=? LIMIT 1", (stream, start)
        ).fetchone()
        return row is not None

    @translated
    def _page_blocks(self, stream: str, after: int, extra: str, args: Sequence[Any]) -> list[Any]:
        return list(
            self._db.execute(
                f"{_BLOCK_READ} WHERE stream=? AND last_seq>?{extra} ORDER BY last_seq LIMIT ?",
                (stream, after, *args, BLOCK_PAGE),
            )
        )

    def _block_entries(
        self,
        stream: str,
        start: int,
        stop: int | None,
        extra: str = "",
        args: Sequence[Any] = (),
    ) -> Iterator[EntryRow]:
        """The entries of the stream's blocks with seqs in [start, stop), block by block
        (blocks of a stream never overlap, so this is seq order unless edited)."""
        after = start - 1
        while True:
            page = self._page_blocks(stream, after, extra, args)
            for r in page:
                if stop is not None and r[4] >= stop:
                    return
                for e in _unpack(r):
                    if e.seq >= start and (stop is None or e.seq < stop):
                        yield e
            if len(page) < BLOCK_PAGE:
                return
            after = int(page[-1][5])

    @translated
    def _block_of(self, stream: str, seq: int) -> list[EntryRow]:
        r = self._db.execute(
            f"{_BLOCK_READ} WHERE stream=? AND last_seq>=? ORDER BY last_seq LIMIT 1",
            (stream, seq),
        ).fetchone()
        if r is None or r[4] > seq:
            return []
        return _unpack(r)

    def _blocks_matching(
        self, session_ids: Sequence[str], since_ns: int | None, until_ns: int | None
    ) -> Iterator[EntryRow]:
        """Entries of the blocks that may hold these sessions' chunks, or (no sessions
        named) of the blocks in the time range: every block of every stream is read then,
        which nothing in the product asks for (chunks are read by session or in order)."""
        if not session_ids:
            lo = clamp_ns(since_ns) if since_ns is not None else clamp_ns(-(2**63))
            hi = clamp_ns(until_ns) if until_ns is not None else clamp_ns(2**63 - 1)
            for stream in self.streams():
                yield from self._block_entries(
                    stream, 0, None, " AND ts_hi>=? AND ts_lo<?", (lo, hi)
                )
            return
        likes = " OR ".join(["sessions LIKE ? ESCAPE '\\'"] * len(session_ids))
        pats = [blocks.session_pattern(s) for s in session_ids]
        # A session's chunks lie between its first entry and its end (in the stream that
        # wrote them): the rows of the session bound the blocks read.
        spans = self._session_spans(session_ids)
        if not spans:  # sessions with no rows of their own (or none at all): read every block
            spans = [(stream, 0, 0, False) for stream in self.streams()]
        for stream, lo, hi, ended in spans:
            yield from self._block_entries(
                stream, lo, hi + 1 if ended else None, f" AND ({likes})", pats
            )

    @translated
    def _session_spans(self, session_ids: Sequence[str]) -> list[tuple[str, int, int, bool]]:
        """Per stream: the first and last seq of these sessions' rows, and whether every
        one of them that has rows there ended there."""
        marks = ",".join("?" * len(session_ids))
        rows = self._db.execute(
            "SELECT stream, session_id, MIN(seq), MAX(seq), "
            f"SUM(CASE WHEN kind IN ('{_ENDS[0]}', '{_ENDS[1]}') THEN 1 ELSE 0 END) "
            f"FROM entries WHERE session_id IN ({marks}) GROUP BY stream, session_id",
            list(session_ids),
        )
        spans: dict[str, tuple[int, int, bool]] = {}
        for stream, _, lo, hi, ends in rows:
            was = spans.get(stream)
            ended = bool(ends)
            if was is not None:
                lo, hi, ended = min(was[0], lo), max(was[1], hi), was[2] and ended
            spans[stream] = (int(lo), int(hi), ended)
        # A session another gateway ended has its termination entry in that gateway's
        # stream and no end in its own, whose blocks are then read to the stream's end.
        return [(stream, lo, hi, ended) for stream, (lo, hi, ended) in spans.items()]

    @translated
    def insert_blocks(self, rows: Sequence[blocks.Block]) -> None:
        """Block rows as ``blocks.split`` makes them; a block over entries the store
        already holds in blocks is refused, as a row twice is."""
        for b in rows:
            taken = self._db.execute(
                "SELECT 1 FROM entry_blocks WHERE stream=? AND last_seq>=? AND first_seq<=? "
                "LIMIT 1",
                (b[0], b[1], b[2]),
            ).fetchone()
            if not taken:
                # Rows may lie between a block's entries (the commands beside its chunks):
                # only the block's own seqs must be free.
                between = self._db.execute(
                    "SELECT seq FROM entries WHERE stream=? AND seq>=? AND seq<=?",
                    (b[0], b[1], b[2]),
                ).fetchall()
                if between:
                    mine = {e[0] for e in orjson.loads(b[6])}
                    taken = any(r[0] in mine for r in between)
            if taken:
                raise StoreError(f"entries {b[1]}..{b[2]} of {b[0]} are already in the store")
        self._db.executemany(
            f"INSERT INTO entry_blocks ({blocks.BLOCK_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", rows
        )

    def _last_block_seq_before(self, stream: str, until: int, best: int | None) -> int | None:
        """The last seq before ``until`` in the stream's blocks, if later than ``best``."""
        # Blocks that begin before ``until``, latest first, until none can beat ``best``.
        cur = self._db.execute(
            f"{_BLOCK_READ} WHERE stream=? AND ts_lo<? ORDER BY last_seq DESC",
            (stream, clamp_ns(until)),
        )
        for r in cur:
            if best is not None and r[5] <= best:
                break
            for e in _unpack(r):
                if e.ts_ns < until and (best is None or e.seq > best):
                    best = e.seq
        return best

    def _prune_in_blocks(self, stream: str, in_blocks: dict[int, bytes]) -> int:
        """Empty these entries (seq: stub) in their blocks; the number emptied."""
        n = 0
        while in_blocks:
            entries = self._block_of(stream, min(in_blocks))
            if not entries or not any(e.seq in in_blocks for e in entries):
                in_blocks.pop(min(in_blocks))  # no such entry
                continue
            changed = []
            for e in entries:
                stub = in_blocks.pop(e.seq, None)
                if stub is not None:
                    e = e._replace(canonical=stub, session_id=None, identity=None, connection=None)
                    n += 1
                changed.append(e)
            b = blocks.pack(changed)
            self._db.execute(
                "UPDATE entry_blocks SET sessions=?, idx=?, body=? WHERE stream=? AND last_seq=?",
                (b[5], b[6], b[7], stream, b[2]),
            )
        return n
