"""Inclusion proofs in the C2SP tlog-proof text format, and building many of them in one
pass over a stream's leaves.

Owns the format (https://c2sp.org/tlog-proof, version 1)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry's canonical bytes>
    index <seq>
    <base64 sibling hash, leaf's sibling first>
    ...
    <blank line>
    <the checkpoint, a C2SP signed note, verbatim>

ledgergate puts the entry itself in ``extra`` (the spec's "additional data necessary to
reconstruct the record hash"): the proof then stands alone. ``extra`` is not trusted: a
proof verifies only when the entry hashes to the leaf the inclusion proof leads from to a
checkpoint signed by a trusted key, and the entry names the checkpoint's stream (its
origin) and the proof's index as its own stream and seq.

``InclusionCollector`` builds inclusion proofs for chosen leaves while the leaves stream
by once (an evidence export never holds a stream's leaf hashes): a leaf's left siblings
are the roots of the compact range before it, and each right sibling MTH(D[a:b]) is read
off the compact range just before leaf b-1 is appended, when the subtree roots inside
[a, b-1) are the range's last ones. Memory: O(log n) hashes per proof not yet complete.

Must not: do I/O, read the clock or log.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from ledgergate.core.ledger.chain import ChainError, entry_link
from ledgergate.core.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    parse_checkpoint,
)
from ledgergate.core.ledger.merkle import (
    HASH_SIZE,
    CompactRange,
    leaf_hash,
    node_hash,
    verify_inclusion,
)

__all__ = [
    "HEADER",
    "InclusionCollector",
    "TlogProof",
    "TlogProofError",
    "format_tlog_proof",
    "parse_tlog_proof",
    "sibling_ranges",
    "verify_entry_proof",
]

HEADER = "c2sp.org/tlog-proof@v1"
# A tree of 2**64 leaves has 64 levels: a longer proof is not one.
MAX_PROOF_HASHES = 64
# An entry carried in ``extra`` larger than this is not a ledgergate entry.
MAX_EXTRA = 1 << 20


class TlogProofError(ValueError):
    """A tlog-proof that is malformed or does not verify; the message says why."""


@dataclass(frozen=True, slots=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None


def format_tlog_proof(proof: TlogProof) -> str:
    lines = [HEADER]
    if proof.extra is not None:
        lines.append("extra " + base64.b64encode(proof.extra).decode("ascii"))
    lines.append(f"index {proof.index}")
    lines.extend(base64.b64encode(h).decode("ascii") for h in proof.hashes)
    return "\n".join(lines) + "\n\n" + proof.checkpoint


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TlogProofError(f"tlog-proof: {what} is not base64") from None


def parse_tlog_proof(text: str) -> TlogProof:
    """The parts of a tlog-proof (syntax only; ``verify_entry_proof`` checks it)."""
    head, sep, note = text.partition("\n\n")
    if not sep or not note:
        raise TlogProofError("tlog-proof: no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise TlogProofError(f"tlog-proof: the first line is not {HEADER!r}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = _b64(rest.pop(0)[6:], "extra")
        if len(extra) > MAX_EXTRA:
            raise TlogProofError("tlog-proof: extra is too large")
    if not rest or not rest[0].startswith("index "):
        raise TlogProofError("tlog-proof: the index line is missing")
    digits = rest.pop(0)[6:]
    if not digits.isascii() or not digits.isdigit() or (digits != "0" and digits[0] == "0"):
        raise TlogProofError("tlog-proof: the index is not a decimal without leading zeroes")
    if len(rest) > MAX_PROOF_HASHES:
        raise TlogProofError("tlog-proof: too many proof hashes")
    hashes = tuple(_b64(line, "a proof hash") for line in rest)
    if any(len(h) != HASH_SIZE for h in hashes):
        raise TlogProofError("tlog-proof: a proof hash is not 32 bytes")
    return TlogProof(int(digits), hashes, note, extra)


def verify_entry_proof(text: str, verifiers: Iterable[Verifier]) -> tuple[Checkpoint, bytes]:
    """(the trusted checkpoint, the entry's canonical bytes) of a ledgergate tlog-proof;
    raises ``TlogProofError`` saying what failed."""
    proof = parse_tlog_proof(text)
    try:
        cp = parse_checkpoint(proof.checkpoint, verifiers)
    except CheckpointError as e:
        raise TlogProofError(f"the checkpoint does not verify: {e}") from None
    if proof.extra is None:
        raise TlogProofError("the proof carries no entry (its extra line is missing)")
    try:
        stream, seq, _ = entry_link(proof.extra)
    except ChainError as e:
        raise TlogProofError(f"the entry in extra is not a ledger entry: {e}") from None
    if (stream, seq) != (cp.origin, proof.index):
        raise TlogProofError(
            f"the entry is {stream}:{seq}, the proof is for {cp.origin}:{proof.index}"
        )
    if not verify_inclusion(leaf_hash(proof.extra), proof.index, cp.size, proof.hashes, cp.root):
        raise TlogProofError(
            f"the inclusion proof of entry {proof.index} does not lead to the signed root "
            f"of size {cp.size}"
        )
    return cp, proof.extra


def sibling_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [a, b) whose MTH form PATH(index, D[0:size]), leaf's sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def _root_ranges(size: int) -> list[tuple[int, int]]:
    """The ranges of a compact range's roots over [0, size), largest first."""
    out, start = [], 0
    for bit in range(size.bit_length() - 1, -1, -1):
        if size >> bit & 1:
            out.append((start, start + (1 << bit)))
            start += 1 << bit
    return out


def _fold(nodes: list[bytes]) -> bytes:
    h = nodes[-1]
    for left in reversed(nodes[:-1]):
        h = node_hash(left, h)
    return h


class _Pending:
    __slots__ = ("extra", "hashes", "index", "missing", "size")

    def __init__(self, index: int, size: int, n: int, extra: bytes | None) -> None:
        self.index, self.size, self.extra = index, size, extra
        self.hashes: list[bytes] = [b""] * n
        self.missing = n


class InclusionCollector:
    """Inclusion proofs of chosen leaves, built while the leaves are fed once in order.

    ``tree`` is the compact range of the leaves before the first one fed (the collector
    appends to it). ``feed(leaf, prove_in=size)`` asks for the proof of that leaf in the
    tree of ``size`` leaves (``size`` beyond it); proofs are returned by ``feed`` as soon
    as the leaf ``size - 1`` has been fed, as (index, size, hashes, extra)."""

    def __init__(self, tree: CompactRange) -> None:
        self.tree = tree
        self._wanted: dict[int, list[tuple[int, _Pending, int]]] = {}  # b -> (a, proof, slot)
        self._due: dict[int, list[_Pending]] = {}  # size -> proofs complete at that size

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._due.values())

    def feed(
        self, leaf: bytes, prove_in: int | None = None, extra: bytes | None = None
    ) -> list[tuple[int, int, list[bytes], bytes | None]]:
        tree = self.tree
        p = tree.size
        roots = tree.hashes if (prove_in is not None or p + 1 in self._wanted) else ()
        if prove_in is not None:
            if prove_in <= p:
                raise ValueError(f"leaf {p} is not in a tree of size {prove_in}")
            ranges = sibling_ranges(p, prove_in)
            pend = _Pending(p, prove_in, len(ranges), extra)
            left = dict(zip(_root_ranges(p), roots, strict=True))
            for slot, (a, b) in enumerate(ranges):
                if b <= p:
                    pend.hashes[slot] = left[(a, b)]
                    pend.missing -= 1
                else:
                    self._wanted.setdefault(b, []).append((a, pend, slot))
            self._due.setdefault(prove_in, []).append(pend)
        for a, pend, slot in self._wanted.pop(p + 1, ()):
            k = (p - a).bit_count()
            pend.hashes[slot] = _fold([*roots[len(roots) - k :], leaf]) if k else leaf
            pend.missing -= 1
        tree.append(leaf)
        done = self._due.pop(p + 1, None)
        if not done:
            return []
        out = []
        for pend in done:
            assert pend.missing == 0, "every sibling of a proof ends at or before its size"
            out.append((pend.index, pend.size, pend.hashes, pend.extra))
        return out
