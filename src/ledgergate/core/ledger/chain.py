"""The hash chain of a ledger stream: sealing drafts into entries.

An entry's canonical document is ``{"stream", "seq", "ts_ns", "kind", **fields,
"prev_hash"}`` encoded as canonical JSON; ``entry_hash`` = RFC 6962 leaf hash of those
bytes, so the chain link and the Merkle leaf are one value. ``prev_hash`` of seq 0 is 32
zero bytes. Pure: the writer persists ``StreamState`` with each batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ledgergate.core.ledger.canonical import canonical_json
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.ledger.merkle import CompactRange, leaf_hash

__all__ = ["GENESIS", "Chain", "SealedEntry", "StreamState", "hash_document"]

GENESIS = bytes(32)
RESERVED = frozenset({"stream", "seq", "ts_ns", "kind", "prev_hash", "entry_hash"})


@dataclass(frozen=True, slots=True)
class SealedEntry:
    stream: str
    seq: int
    ts_ns: int
    kind: str
    canonical: bytes
    entry_hash: bytes
    fields: dict[str, Any]

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.canonical)
        return doc


@dataclass
class StreamState:
    stream: str
    size: int
    head_hash: bytes
    tree: CompactRange

    @classmethod
    def genesis(cls, stream: str) -> StreamState:
        return cls(stream, 0, GENESIS, CompactRange())

    def to_record(self) -> bytes:
        return self.head_hash + self.tree.to_bytes()

    @classmethod
    def from_record(cls, stream: str, record: bytes) -> StreamState:
        tree = CompactRange.from_bytes(record[32:])
        return cls(stream, tree.size, record[:32], tree)

    def copy(self) -> StreamState:
        return StreamState(self.stream, self.size, self.head_hash, self.tree.copy())


def hash_document(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """(canonical bytes, entry_hash) of an entry document (without entry_hash)."""
    data = canonical_json(doc)
    return data, leaf_hash(data)


class Chain:
    """Seals drafts in order onto a stream, advancing its state."""

    def __init__(self, state: StreamState) -> None:
        self.state = state

    def seal(self, draft: Draft) -> SealedEntry:
        st = self.state
        if RESERVED.intersection(draft.fields):
            raise ValueError(f"entry fields may not use {sorted(RESERVED & draft.fields.keys())}")
        doc = dict(draft.fields)
        doc["stream"] = st.stream
        doc["seq"] = st.size
        doc["ts_ns"] = draft.ts_ns
        doc["kind"] = draft.kind
        doc["prev_hash"] = st.head_hash.hex()
        data, h = hash_document(doc)
        entry = SealedEntry(st.stream, st.size, draft.ts_ns, draft.kind, data, h, draft.fields)
        st.tree.append(h)
        st.size += 1
        st.head_hash = h
        return entry
