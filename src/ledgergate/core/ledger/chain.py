"""The hash chain of a ledger stream: sealing drafts into entries.

Owns the entry document and the per-stream state:
- An entry's canonical document is ``{"stream", "seq", "ts_ns", "kind", **fields,
  "prev_hash": hex}`` encoded with ``canonical_json`` (so keys end up sorted). ``fields``
  may not use the reserved names (``RESERVED``).
- ``entry_hash = leaf_hash(canonical bytes) = SHA-256(0x00 || canonical)``: the chain
  link and the Merkle leaf are one value. ``prev_hash`` is the previous entry's
  ``entry_hash`` in hex; seq 0 has ``GENESIS_PREV`` (64 zeros).
- ``StreamState`` (size, head hash, compact range) is everything needed to continue a
  stream; ``to_record``/``from_record`` persist it as bytes.
- ``Chain.seal`` turns a ``Draft`` into a ``SealedEntry`` and advances the state IN
  PLACE; a draft that cannot be encoded raises ``ChainError`` and leaves the state as it
  was.
- ``Chain.seal_run`` does the same natively (``_sealer.c``) for a run of typed drafts
  without payloads, the bulk of a gateway's entries, and also hands back their journal
  records and store rows; it stops where ``seal`` must decide.

Must not: do I/O, read the clock (``ts_ns`` comes in the draft), log, or persist
anything: the ledger writer stores the entries and the state record together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from ledgergate.core.ledger import _sealer  # runs of typed drafts in C (see _sealer.c)
from ledgergate.core.ledger.canonical import (
    TYPED_ENCODER,
    CanonicalError,
    canonical_json,
    canonical_json_typed,
)
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.ledger.merkle import HASH_SIZE, CompactRange, leaf_hash
from ledgergate.wire.hotdata import hotdata

__all__ = [
    "GENESIS_HASH",
    "GENESIS_PREV",
    "RESERVED",
    "Chain",
    "ChainError",
    "SealedEntry",
    "StreamState",
    "entry_link",
    "hash_entry_document",
]

R = TypeVar("R", bound=tuple[Any, ...])
_DUMPS, _DUMPS_OPTION = TYPED_ENCODER

GENESIS_HASH = bytes(HASH_SIZE)
GENESIS_PREV = GENESIS_HASH.hex()  # "00" * 32: prev_hash of seq 0
RESERVED = frozenset({"stream", "seq", "ts_ns", "kind", "prev_hash", "entry_hash"})


class ChainError(ValueError):
    """A draft or a state record that cannot be part of a stream."""


@hotdata
class SealedEntry:
    """An entry with its place in a stream. ``canonical`` is exactly the bytes hashed
    and stored; ``entry_hash`` = ``leaf_hash(canonical)``."""

    stream: str
    seq: int
    ts_ns: int
    kind: str
    canonical: bytes
    entry_hash: bytes

    def document(self) -> dict[str, Any]:
        """The parsed entry document (a fresh dict each call)."""
        doc: dict[str, Any] = json.loads(self.canonical)
        return doc

    @property
    def prev_hash(self) -> bytes:
        return bytes.fromhex(self.document()["prev_hash"])

    @property
    def fields(self) -> dict[str, Any]:
        """The draft's fields as recorded (the document minus the chain's own keys)."""
        return {k: v for k, v in self.document().items() if k not in RESERVED}


@dataclass(slots=True)
class StreamState:
    """Where a stream stands: ``size`` entries, the last one's hash (``GENESIS_HASH``
    when empty) and the compact range of the Merkle tree over all of them."""

    stream: str
    size: int
    head_hash: bytes
    tree: CompactRange

    @classmethod
    def genesis(cls, stream: str) -> StreamState:
        return cls(stream, 0, GENESIS_HASH, CompactRange())

    def copy(self) -> StreamState:
        return StreamState(self.stream, self.size, self.head_hash, self.tree.copy())

    def to_record(self) -> bytes:
        """``head_hash (32 bytes) || tree.to_bytes()`` (which starts with the size)."""
        return self.head_hash + self.tree.to_bytes()

    @classmethod
    def from_record(cls, stream: str, record: bytes) -> StreamState:
        """Inverse of ``to_record``; raises ``ChainError`` (a ValueError) if corrupt."""
        try:
            tree = CompactRange.from_bytes(record[HASH_SIZE:])
        except ValueError as e:
            raise ChainError(f"{stream}: corrupt stream state record ({e})") from None
        head = bytes(record[:HASH_SIZE])
        if len(head) != HASH_SIZE or (tree.size == 0) != (head == GENESIS_HASH):
            raise ChainError(f"{stream}: corrupt stream state record (head hash)")
        return cls(stream, tree.size, head, tree)


def hash_entry_document(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """(canonical bytes, entry_hash) of an entry document. The document is the one
    stored (it holds ``prev_hash`` but never ``entry_hash``, which is derived)."""
    if "entry_hash" in doc:
        raise ChainError("an entry document does not hold its own entry_hash")
    data = canonical_json(doc)
    return data, leaf_hash(data)


def entry_link(data: bytes) -> tuple[str, int, bytes]:
    """(stream, seq, prev_hash) of an entry's canonical bytes, for verifiers; raises
    ``ChainError`` saying why the bytes are not an entry document."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ChainError("it is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise ChainError("it is not a JSON object")
    stream, seq, prev = doc.get("stream"), doc.get("seq"), doc.get("prev_hash")
    if type(stream) is not str or type(seq) is not int or type(prev) is not str:
        raise ChainError("it lacks a stream, seq or prev_hash")
    try:
        prev_b = bytes.fromhex(prev)
    except ValueError:
        raise ChainError("its prev_hash is not hex") from None
    if len(prev_b) != HASH_SIZE:
        raise ChainError("its prev_hash is not 32 bytes")
    return stream, seq, prev_b


class Chain:
    """Seals drafts in order onto one stream, advancing ``state`` in place."""

    __slots__ = ("_state",)

    def __init__(self, state: StreamState) -> None:
        if state.size != state.tree.size:
            raise ChainError(f"{state.stream}: state size {state.size} != tree size")
        self._state = state

    @property
    def state(self) -> StreamState:
        return self._state

    def seal(self, draft: Draft) -> SealedEntry:
        st = self._state
        fields = draft.fields
        if not RESERVED.isdisjoint(fields):
            raise ChainError(
                f"entry fields may not use the reserved names {sorted(RESERVED & fields.keys())}"
            )
        ts_ns, kind = draft.ts_ns, draft.kind
        if type(ts_ns) is not int or ts_ns < 0:
            raise ChainError(f"ts_ns must be a non-negative integer, not {ts_ns!r}")
        if type(kind) is not str or not kind:
            raise ChainError(f"kind must be a non-empty string, not {kind!r}")
        doc = dict(fields)
        doc["stream"] = st.stream
        doc["seq"] = st.size
        doc["ts_ns"] = ts_ns
        doc["kind"] = kind
        doc["prev_hash"] = st.head_hash.hex()
        try:
            data = canonical_json_typed(doc) if draft.typed else canonical_json(doc)
        except CanonicalError as e:
            raise ChainError(f"{kind} entry: {e}") from None
        h = leaf_hash(data)
        # nothing above touched the state: a failed draft leaves the stream unchanged
        st.tree.append(h)
        st.size += 1
        st.head_hash = h
        return SealedEntry(st.stream, st.size - 1, ts_ns, kind, data, h)

    def seal_run(
        self, drafts: list[Draft], start: int, row_type: type[R], stop: int | None = None
    ) -> tuple[int, bytes, list[R]]:
        """Seal drafts from ``drafts[start]`` (up to ``stop``) natively while they are
        typed, without payloads and valid, exactly as ``seal`` would (same bytes, same
        state): return how many were sealed (0 if ``drafts[start]`` needs ``seal``), their
        journal ``E`` records end to end, and a ``row_type`` row per entry (stream, seq,
        ts_ns, kind, session_id, identity subject, connection, canonical, entry_hash:
        ``row_type`` must have those nine columns in that order). On an exception the
        state is unchanged."""
        st = self._state
        tree = st.tree
        roots = tree.roots_list()
        n, head, journal, rows = _sealer.seal_run(
            st.stream,
            st.size,
            st.head_hash,
            roots,
            drafts,
            start,
            len(drafts) if stop is None else stop,
            _DUMPS,
            _DUMPS_OPTION,
            row_type,
        )
        if n:
            tree.adopt(roots, n)
            st.size += n
            st.head_hash = head
        return n, journal, rows
