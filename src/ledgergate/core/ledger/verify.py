"""Verifying a ledger stream and offline proofs.

``verify_stream`` walks a stream's entries in stored order in linear time and O(log n)
memory: it recomputes each entry's hash, checks the chain link and position, feeds the
Merkle compact range, and checks every signed checkpoint against the tree at its size.
It names the FIRST entry that was changed, removed or reordered, and a truncated tail.
Pure: rows and notes come in as arguments.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ledgergate.core.ledger.chain import GENESIS
from ledgergate.core.ledger.checkpoint import Checkpoint, CheckpointError, Verifier, parse_checkpoint
from ledgergate.core.ledger.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "Problem",
    "StreamReport",
    "build_consistency_document",
    "build_inclusion_document",
    "verify_proof_document",
    "verify_stream",
]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # changed | removed | reordered | truncated | checkpoint
    seq: int | None
    message: str


@dataclass
class StreamReport:
    stream: str
    entries: int = 0
    checkpoints_verified: int = 0
    latest_checkpoint: Checkpoint | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_stream(
    stream: str,
    rows: Iterable[tuple[int, bytes, bytes]],
    checkpoint_notes: Iterable[str],
    verifiers: list[Verifier],
    *,
    expected_size: int | None = None,
    expected_head: bytes | None = None,
) -> StreamReport:
    """``rows``: (seq as stored, canonical bytes, stored entry_hash), ordered by seq.

    ``expected_size``/``expected_head``: the writer's own record of the stream (its state
    row), so a tail deleted together with its checkpoints is still caught.
    """
    rep = StreamReport(stream)
    cps: list[Checkpoint] = []
    for note in checkpoint_notes:
        try:
            cp = parse_checkpoint(note, verifiers)
        except CheckpointError as e:
            rep.problems.append(Problem("checkpoint", None, f"{stream}: a checkpoint does not verify: {e}"))
            continue
        if cp.origin != stream:
            rep.problems.append(Problem("checkpoint", None,
                                        f"{stream}: a checkpoint names another stream ({cp.origin})"))
            continue
        cps.append(cp)
    cps.sort(key=lambda c: c.size)
    ci = 0
    tree = CompactRange()
    prev = GENESIS
    # hashes of recent entries, to tell a reorder from a removal
    first_bad: Problem | None = None
    for pos, (stored_seq, data, stored_hash) in enumerate(rows):
        rep.entries += 1
        if first_bad is not None:
            continue
        h = leaf_hash(data)
        try:
            doc = json.loads(data)
            seq = doc["seq"]
            doc_stream = doc["stream"]
            doc_prev = bytes.fromhex(doc["prev_hash"])
        except (ValueError, KeyError, TypeError):
            first_bad = Problem("changed", stored_seq, f"{stream} entry {stored_seq} was changed: "
                                "it is not a valid entry document")
            continue
        if h != stored_hash:
            first_bad = Problem("changed", stored_seq,
                                f"{stream} entry {stored_seq} was changed: its content does not "
                                "match its hash")
            continue
        if doc_stream != stream:
            first_bad = Problem("changed", stored_seq,
                                f"{stream} entry {stored_seq} belongs to stream {doc_stream}")
            continue
        if seq != pos or stored_seq != pos or doc_prev != prev:
            if seq > pos or stored_seq > pos:
                first_bad = Problem("removed", pos, f"{stream} entry {pos} was removed "
                                    f"(the entry after {pos - 1} is {max(seq, stored_seq)})")
            else:
                first_bad = Problem("reordered", pos, f"{stream} entries were reordered at "
                                    f"position {pos}: found entry {seq} there")
            continue
        prev = h
        tree.append(h)
        while ci < len(cps) and cps[ci].size == tree.size:
            if cps[ci].root != tree.root():
                first_bad = Problem("checkpoint", pos, f"{stream}: the signed checkpoint at size "
                                    f"{tree.size} does not match entries 0..{pos}")
                break
            rep.checkpoints_verified += 1
            rep.latest_checkpoint = cps[ci]
            ci += 1
        while ci < len(cps) and cps[ci].size < tree.size:
            ci += 1  # duplicate sizes already checked
    if first_bad is not None:
        rep.problems.append(first_bad)
        return rep
    if ci < len(cps):
        rep.problems.append(Problem("truncated", tree.size,
                                    f"{stream} was truncated: a signed checkpoint covers "
                                    f"{cps[-1].size} entries but only {tree.size} exist "
                                    f"(entries {tree.size}.. were removed)"))
    elif expected_size is not None and expected_size > tree.size:
        rep.problems.append(Problem("truncated", tree.size,
                                    f"{stream} was truncated: the gateway recorded {expected_size} "
                                    f"entries but only {tree.size} exist"))
    elif expected_head is not None and expected_size == tree.size and expected_head != prev:
        rep.problems.append(Problem("changed", tree.size - 1,
                                    f"{stream}: the last entry does not match the gateway's record"))
    return rep


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def build_inclusion_document(
    stream: str, seq: int, canonical: bytes, leaf_hashes: list[bytes], note: str, size: int,
) -> dict[str, Any]:
    return {
        "type": "ledgergate-inclusion-proof",
        "stream": stream,
        "seq": seq,
        "entry": canonical.decode("utf-8"),
        "entry_hash": leaf_hash(canonical).hex(),
        "tree_size": size,
        "proof": [h.hex() for h in inclusion_proof(leaf_hashes, seq, size)],
        "checkpoint": note,
    }


def build_consistency_document(
    stream: str, leaf_hashes: list[bytes], old_note: str, old_size: int, new_note: str, new_size: int,
) -> dict[str, Any]:
    return {
        "type": "ledgergate-consistency-proof",
        "stream": stream,
        "old": old_note,
        "new": new_note,
        "old_size": old_size,
        "new_size": new_size,
        "proof": [h.hex() for h in consistency_proof(leaf_hashes, old_size, new_size)],
    }


def verify_proof_document(doc: dict[str, Any], verifiers: list[Verifier]) -> str:
    """Verify an inclusion or consistency proof offline; return a one-line summary or
    raise ValueError saying what failed."""
    kind = doc.get("type")
    if kind == "ledgergate-inclusion-proof":
        cp = parse_checkpoint(doc["checkpoint"], verifiers)
        data = doc["entry"].encode("utf-8")
        h = leaf_hash(data)
        entry = json.loads(data)
        if entry.get("stream") != doc["stream"] or entry.get("seq") != doc["seq"]:
            raise ValueError("the entry does not name the stream and position the proof claims")
        if cp.origin != doc["stream"] or cp.size != doc["tree_size"]:
            raise ValueError("the checkpoint is for another stream or size")
        proof = [bytes.fromhex(x) for x in doc["proof"]]
        if not verify_inclusion(h, doc["seq"], cp.size, proof, cp.root):
            raise ValueError("the inclusion proof does not lead to the checkpoint's root")
        return (f"entry {doc['stream']}:{doc['seq']} ({entry.get('kind')}) is included in the "
                f"signed tree of size {cp.size}")
    if kind == "ledgergate-consistency-proof":
        old = parse_checkpoint(doc["old"], verifiers)
        new = parse_checkpoint(doc["new"], verifiers)
        if old.origin != new.origin:
            raise ValueError("the checkpoints are for different streams")
        proof = [bytes.fromhex(x) for x in doc["proof"]]
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise ValueError("the checkpoints are not consistent: history was rewritten")
        return f"{old.origin}: tree of size {old.size} is a prefix of the tree of size {new.size}"
    raise ValueError("not a ledgergate proof document")
