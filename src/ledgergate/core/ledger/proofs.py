"""Self-contained proof documents: inclusion of one entry, consistency of two checkpoints.

Owns the two JSON documents an auditor can check offline with nothing but a verifier
key (vkey), and their checks:

    inclusion:   {"type": "ledgergate-inclusion-proof", "stream", "seq",
                  "entry": <canonical entry text>, "entry_hash": hex, "tree_size",
                  "proof": [hex, ...], "checkpoint": <signed note>}
    consistency: {"type": "ledgergate-consistency-proof", "stream",
                  "old": <signed note>, "new": <signed note>, "old_size", "new_size",
                  "proof": [hex, ...]}

An inclusion document verifies when the checkpoint is signed by a trusted key for
``stream`` at ``tree_size``, the entry's bytes hash to ``entry_hash``, the entry names
``stream`` and ``seq``, and the RFC 9162 inclusion proof leads from the entry hash to
the checkpoint's root. A consistency document verifies when both checkpoints are
trusted, for ``stream``, and the RFC 9162 consistency proof shows the old tree is a
prefix of the new one. ``type`` may be omitted (the keys tell them apart); ``old_size``
and ``new_size`` are informative and, when present, must match the checkpoints.

Must not: do I/O, read the clock or log. Builders take leaf hashes the caller read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ledgergate.core.ledger.chain import ChainError, entry_link
from ledgergate.core.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    parse_checkpoint,
)
from ledgergate.core.ledger.merkle import (
    HASH_SIZE,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "CONSISTENCY_TYPE",
    "INCLUSION_TYPE",
    "ProofError",
    "build_consistency_document",
    "build_inclusion_document",
    "verify_consistency_document",
    "verify_inclusion_document",
    "verify_proof_document",
]

INCLUSION_TYPE = "ledgergate-inclusion-proof"
CONSISTENCY_TYPE = "ledgergate-consistency-proof"


class ProofError(ValueError):
    """A proof document that does not verify; the message says why."""


def build_inclusion_document(
    stream: str, seq: int, canonical: bytes, leaf_hashes: Sequence[bytes], note: str, size: int
) -> dict[str, Any]:
    """Entry ``seq`` of ``stream`` (its canonical bytes), its inclusion proof in the tree
    of the first ``size`` leaf hashes, and ``note``, the signed checkpoint of that tree."""
    h = leaf_hash(canonical)
    if not 0 <= seq < size <= len(leaf_hashes) or leaf_hashes[seq] != h:
        raise ValueError(f"entry {stream}:{seq} is not leaf {seq} of the given tree")
    return {
        "type": INCLUSION_TYPE,
        "stream": stream,
        "seq": seq,
        "entry": canonical.decode("utf-8"),
        "entry_hash": h.hex(),
        "tree_size": size,
        "proof": [p.hex() for p in inclusion_proof(leaf_hashes, seq, size)],
        "checkpoint": note,
    }


def build_consistency_document(
    stream: str,
    leaf_hashes: Sequence[bytes],
    old_note: str,
    old_size: int,
    new_note: str,
    new_size: int,
) -> dict[str, Any]:
    """Proof that the tree of ``old_size`` leaves is a prefix of that of ``new_size``;
    ``old_note``/``new_note`` are the signed checkpoints of those trees."""
    return {
        "type": CONSISTENCY_TYPE,
        "stream": stream,
        "old": old_note,
        "new": new_note,
        "old_size": old_size,
        "new_size": new_size,
        "proof": [p.hex() for p in consistency_proof(leaf_hashes, old_size, new_size)],
    }


def _get(doc: dict[str, Any], key: str, typ: type) -> Any:
    v = doc.get(key)
    if type(v) is not typ:
        raise ProofError(f"proof document: {key!r} is missing or not a {typ.__name__}")
    return v


def _hashes(doc: dict[str, Any]) -> list[bytes]:
    out = []
    for x in _get(doc, "proof", list):
        try:
            b = bytes.fromhex(x) if isinstance(x, str) else b""
        except ValueError:
            b = b""
        if len(b) != HASH_SIZE:
            raise ProofError("proof document: 'proof' must hold 32-byte hashes in hex")
        out.append(b)
    return out


def _checkpoint(note: str, verifiers: Iterable[Verifier], stream: str) -> Checkpoint:
    try:
        cp = parse_checkpoint(note, verifiers)
    except CheckpointError as e:
        raise ProofError(f"the checkpoint does not verify: {e}") from None
    if cp.origin != stream:
        raise ProofError(f"the checkpoint is for stream {cp.origin!r}, not {stream!r}")
    return cp


def verify_inclusion_document(doc: dict[str, Any], verifiers: Iterable[Verifier]) -> Checkpoint:
    """Check an inclusion proof document; return the trusted checkpoint the entry is
    proven against, or raise ``ProofError`` saying what failed."""
    stream = _get(doc, "stream", str)
    seq = _get(doc, "seq", int)
    entry = _get(doc, "entry", str)
    size = _get(doc, "tree_size", int)
    entry_hash = _get(doc, "entry_hash", str)
    proof = _hashes(doc)
    cp = _checkpoint(_get(doc, "checkpoint", str), verifiers, stream)
    if cp.size != size:
        raise ProofError(f"the checkpoint is for size {cp.size}, the proof for size {size}")
    try:
        data = entry.encode("utf-8")
    except UnicodeEncodeError:
        raise ProofError("the entry is not valid Unicode text") from None
    h = leaf_hash(data)
    if h.hex() != entry_hash.lower():
        raise ProofError("the entry does not match its entry_hash: it was changed")
    try:
        e_stream, e_seq, _ = entry_link(data)
    except ChainError as e:
        raise ProofError(f"the entry is not a ledger entry: {e}") from None
    if (e_stream, e_seq) != (stream, seq):
        raise ProofError(f"the entry is {e_stream}:{e_seq}, not {stream}:{seq} as claimed")
    if not verify_inclusion(h, seq, size, proof, cp.root):
        raise ProofError(
            f"the inclusion proof of entry {seq} does not lead to the signed root of size {size}"
        )
    return cp


def verify_consistency_document(
    doc: dict[str, Any], verifiers: Iterable[Verifier]
) -> tuple[Checkpoint, Checkpoint]:
    """Check a consistency proof document; return the trusted (old, new) checkpoints,
    or raise ``ProofError`` saying what failed."""
    vs = list(verifiers)
    stream = _get(doc, "stream", str)
    proof = _hashes(doc)
    old = _checkpoint(_get(doc, "old", str), vs, stream)
    new = _checkpoint(_get(doc, "new", str), vs, stream)
    for key, cp in (("old_size", old), ("new_size", new)):
        if key in doc and doc[key] != cp.size:
            raise ProofError(f"{key} is {doc[key]!r} but its checkpoint is for size {cp.size}")
    if old.size > new.size:
        raise ProofError(f"the old checkpoint ({old.size}) is larger than the new ({new.size})")
    if not verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise ProofError(
            f"{stream}: the signed tree of size {old.size} is not a prefix of the signed "
            f"tree of size {new.size}: history was rewritten"
        )
    return old, new


def verify_proof_document(doc: dict[str, Any], verifiers: Iterable[Verifier]) -> str:
    """Check an inclusion or consistency proof document offline; return a one-line
    summary or raise ``ProofError`` (a ValueError) saying what failed."""
    if not isinstance(doc, dict):
        raise ProofError("not a ledgergate proof document (not a JSON object)")
    kind = doc.get("type")
    if kind == INCLUSION_TYPE or (kind is None and "entry" in doc):
        cp = verify_inclusion_document(doc, verifiers)
        return (
            f"entry {cp.origin}:{doc['seq']} is included in the tree of size {cp.size} "
            f"signed at ts_ns {cp.ts_ns}"
        )
    if kind == CONSISTENCY_TYPE or (kind is None and "old" in doc):
        old, new = verify_consistency_document(doc, verifiers)
        return (
            f"{old.origin}: the signed tree of size {old.size} is a prefix of the signed "
            f"tree of size {new.size}"
        )
    raise ProofError(f"not a ledgergate proof document (type {kind!r})")
