"""Pruned entries: what retention leaves of an entry whose content it removed.

A pruned entry keeps its place in the chain and the Merkle tree: the store keeps its
``entry_hash`` (the leaf) and replaces its canonical bytes by a stub that says which
entry it was, when it was pruned and under which rule:

    {"kind": K, "pruned": {"at_ns": T, "rule": R}, "seq": N, "stream": S, "ts_ns": TS}

A verifier takes a stub's stored hash as its leaf (the bytes are gone, the hash cannot be
recomputed): the tree's roots still match every signed checkpoint, and the next entry
still links to it, so nothing around it can change unnoticed. What a stub hides is said
plainly (``StreamReport.pruned``), and the service layer checks that each pruned entry
is covered by a ``retention.run`` record on the ledger. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

import orjson

from ledgergate.core.ledger.canonical import canonical_json

__all__ = ["RETENTION_KINDS", "Stub", "is_stub", "stub", "stub_of"]

_KEYS = frozenset({"kind", "pruned", "seq", "stream", "ts_ns"})
_MARK = b'"pruned":{'
# Entries retention never prunes: its own records of what it did.
RETENTION_KINDS = ("retention.run",)

Stub = dict[str, Any]


def stub(doc: dict[str, Any], rule: str, at_ns: int) -> bytes:
    """The stub of entry ``doc`` pruned under ``rule`` at ``at_ns``."""
    return canonical_json(
        {
            "kind": doc["kind"],
            "pruned": {"at_ns": at_ns, "rule": rule},
            "seq": doc["seq"],
            "stream": doc["stream"],
            "ts_ns": doc["ts_ns"],
        }
    )


def is_stub(data: bytes) -> bool:
    return _MARK in data and b'"prev_hash"' not in data


def stub_of(data: bytes) -> Stub | None:
    """The stub ``data`` is, or None (then it is an entry, or damaged)."""
    if not is_stub(data):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or set(doc) != _KEYS:
        return None
    p = doc["pruned"]
    ok = (
        isinstance(p, dict)
        and set(p) == {"at_ns", "rule"}
        and type(p["at_ns"]) is int
        and isinstance(p["rule"], str)
        and type(doc["seq"]) is int
        and type(doc["ts_ns"]) is int
        and isinstance(doc["stream"], str)
        and isinstance(doc["kind"], str)
    )
    return doc if ok else None
