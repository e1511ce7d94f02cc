"""Chunk entries indexed in blocks: how a block row packs its entries, and reading back.

Chunk entries are most of a busy ledger and nobody searches them one by one: they are
read by session (timelines, replay) or in stream order (verification, export, proofs).
So the store indexes them one row per block rather than one row (and its indexes) per
entry: a block holds the chunk entries of one store commit of one stream, each still
sealed on its own (its canonical document and entry hash kept byte for byte), so the
hash chain, the Merkle tree and ``audit prove`` see every entry as before.

A block row (table ``entry_blocks``, both engines):
- ``stream``, ``first_seq``, ``last_seq``: the stream and the seq range its entries fall in
  (other entries, kept as rows, may lie between them; blocks of a stream never overlap);
- ``ts_lo``, ``ts_hi``: the range of its entries' times;
- ``sessions``: the distinct session ids of its entries, each between newlines, so a
  session's blocks are found with ``LIKE``;
- ``idx``: JSON, one ``[seq, ts_ns, session_id, identity, connection, length]`` per entry,
  in seq order (the search columns of a row, copies like theirs);
- ``body``: the canonical documents end to end; ``hashes``: the 32-byte hashes end to end.

Like an entry row's columns, everything but ``body`` and ``hashes`` is a copy: the
verifier reads the documents, and a block whose copies disagree with them is reported
as the rows' columns would be. Pure: no SQL here, only packing and unpacking.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import orjson

from ledgergate.core.ledger.merkle import HASH_SIZE
from ledgergate.store.base import EntryRow, StoreError

__all__ = [
    "BLOCK_COLS",
    "BLOCK_KINDS",
    "BLOCK_MAX_ENTRIES",
    "Block",
    "enabled",
    "pack",
    "session_pattern",
    "split",
    "unpack",
]

# Entry kinds indexed in blocks; every other kind keeps a row of its own (they are what
# people search: sessions, commands, decisions, reviews).
BLOCK_KINDS = frozenset({"chunk"})
# Entries per block at most: reading one entry back (``get_entry``, a proof) decodes its
# whole block's index, so a long COPY's commit is cut into blocks of this size.
BLOCK_MAX_ENTRIES = 1024
BLOCK_COLS = "stream, first_seq, last_seq, ts_lo, ts_hi, sessions, idx, body, hashes"

Block = tuple[str, int, int, int, int, str, str, bytes, bytes]


# Whether stores write chunk entries as blocks unless ``LEDGERGATE_CHUNK_BLOCKS`` says
# (``1`` or ``0``: the tests write the old layout to prove it still reads).
WRITE_BLOCKS = True


def enabled() -> bool:
    """Whether a store opened now writes chunk entries as blocks (every store reads both
    layouts, as a store upgraded from rows holds both)."""
    flag = os.environ.get("LEDGERGATE_CHUNK_BLOCKS", "")
    return flag == "1" if flag in ("0", "1") else WRITE_BLOCKS


def split(rows: Sequence[EntryRow]) -> tuple[list[EntryRow], list[Block]]:
    """The rows that keep rows of their own, and the blocks the others pack into (one per
    stream per ``BLOCK_MAX_ENTRIES`` chunk entries, in the order given)."""
    own: list[EntryRow] = []
    chunks: dict[str, list[EntryRow]] = {}
    for r in rows:
        if r[3] in BLOCK_KINDS:
            chunks.setdefault(r[0], []).append(r)
        else:
            own.append(r)
    blocks = []
    for group in chunks.values():
        for i in range(0, len(group), BLOCK_MAX_ENTRIES):
            blocks.append(pack(group[i : i + BLOCK_MAX_ENTRIES]))
    return own, blocks


def pack(rows: Sequence[EntryRow]) -> Block:
    """One block row of these entries (one stream, ascending seqs)."""
    if not rows:
        raise StoreError("a ledger block needs at least one entry")
    stream = rows[0][0]
    idx = []
    sessions: dict[str, None] = {}
    last = -1
    for r in rows:
        if r[0] != stream or r[1] <= last:
            raise StoreError("a ledger block holds one stream's entries in ascending order")
        if len(r[8]) != HASH_SIZE:
            raise StoreError("a ledger entry hash is not 32 bytes")
        last = r[1]
        idx.append((r[1], r[2], r[4], r[5], r[6], len(r[7])))
        if r[4] is not None:
            sessions[r[4]] = None
    ts = [r[2] for r in rows]
    return (
        stream,
        rows[0][1],
        last,
        min(ts),
        max(ts),
        "".join(f"\n{s}" for s in sessions) + "\n",
        orjson.dumps(idx).decode(),
        b"".join([r[7] for r in rows]),
        b"".join([r[8] for r in rows]),
    )


def unpack(stream: str, idx: Any, body: bytes, hashes: bytes) -> list[EntryRow]:
    """The entries of a block row, in the order its index lists them. Never raises: a
    block edited in the database reads as what is left of it (a document cut short, a
    seq that is not a number as -1, an index that is not one as no entries), so the
    verifier names the first entry altered or removed, as it does for rows."""
    try:
        items = orjson.loads(idx)
    except (orjson.JSONDecodeError, TypeError):
        return []
    if type(items) is not list:
        return []
    out = []
    pos = 0
    for i, item in enumerate(items):
        if type(item) is not list or len(item) != 6:
            continue
        seq, ts_ns, sid, ident, conn, n = item
        n = n if type(n) is int and n >= 0 else 0
        out.append(
            EntryRow(
                stream,
                seq if type(seq) is int else -1,
                ts_ns if type(ts_ns) is int else 0,
                "chunk",
                sid if sid is None or type(sid) is str else str(sid),
                ident if ident is None or type(ident) is str else str(ident),
                conn if conn is None or type(conn) is str else str(conn),
                body[pos : pos + n],
                hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE],
            )
        )
        pos += n
    return out


def session_pattern(session_id: str) -> str:
    """The ``LIKE`` pattern (escape ``\\``) matching blocks that hold this session."""
    esc = session_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%\n{esc}\n%"
