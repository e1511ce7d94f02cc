"""Merkle tree hashing, proofs and proof verification (RFC 6962 / RFC 9162 section 2.1).

Owns the tree math of a ledger stream:
- ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``,
  ``EMPTY_ROOT = SHA-256("")``. The domain-separation bytes make a leaf never equal an
  interior node.
- ``root`` is MTH (RFC 9162 2.1.1) over LEAF HASHES (already hashed): a tree of n > 1
  leaves splits at k, the largest power of two smaller than n: MTH(D[0:k]) on the left,
  MTH(D[k:n]) on the right.
- ``CompactRange`` is the O(log n) state needed to append leaves and compute the root
  incrementally: the roots of the perfect subtrees covering [0, size), largest first
  (one per set bit of size). It is what the ledger writer persists and what the
  verifier streams entries through.
- Inclusion and consistency proofs: generation (PATH and PROOF of RFC 9162 2.1.3.1 and
  2.1.4.1) over a list of leaf hashes, and verification (2.1.3.2 and 2.1.4.2).

Verification functions return ``False`` for any malformed input (a hash that is not 32
bytes, an index outside the tree, a proof of the wrong length) and never raise.

Must not: do I/O, read the clock, log, or implement a hash: hashlib's SHA-256 only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Tree sizes are stored as 8 bytes (uint64), as in RFC 9162's TreeHead.
_MAX_SIZE = 2**64 - 1
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of a leaf (and the ledger's entry_hash)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The roots of the perfect subtrees covering leaves [0, size), largest first.

    ``append`` costs one leaf plus, amortised, one node hash; ``root`` folds the
    O(log n) subtree roots right to left. ``to_bytes`` is ``size`` as 8 bytes
    big-endian followed by the subtree roots (32 bytes each).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if not 0 <= size <= _MAX_SIZE:
            raise ValueError(f"tree size {size} out of range")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a compact range of size {size} has {size.bit_count()} subtree roots, "
                f"not {len(hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("a subtree root is not 32 bytes")
        self._size = size
        self._hashes = [bytes(h) for h in hashes]

    @property
    def size(self) -> int:
        """Number of leaves appended."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The subtree roots, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (32 bytes, already hashed with ``leaf_hash``)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        hashes = self._hashes
        h = leaf
        size = self._size
        while size & 1:  # merge with every complete subtree of the same height
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            size >>= 1
        hashes.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def roots_list(self) -> list[bytes]:
        """A new list of the subtree roots, for ``core.ledger._sealer`` to merge leaves into
        exactly as ``append`` does; ``adopt`` takes it back."""
        return list(self._hashes)

    def adopt(self, roots: list[bytes], n: int) -> None:
        """Take ``roots``: this range's roots (``roots_list``) with ``n`` more leaves
        merged in."""
        size = self._size + n
        if n < 0 or len(roots) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} roots")
        self._hashes = roots
        self._size = size

    def root(self) -> bytes:
        """MTH of the leaves appended so far (``EMPTY_ROOT`` when there are none)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = _sha256(b"\x01" + left + h).digest()
        return h

    def copy(self) -> CompactRange:
        c = CompactRange.__new__(CompactRange)
        c._size = self._size
        c._hashes = list(self._hashes)
        return c

    def to_bytes(self) -> bytes:
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Inverse of ``to_bytes``; raises ValueError on anything else."""
        if len(data) < 8:
            raise ValueError("a compact range record is at least 8 bytes")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        if len(body) != HASH_SIZE * size.bit_count():
            raise ValueError(f"a compact range record of size {size} has the wrong length")
        return cls(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}…)"


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) without copying the list."""
    cr = CompactRange()
    append = cr.append
    for i in range(lo, hi):
        append(leaves[i])
    return cr.root()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over ``leaves``, which are leaf hashes (already hashed)."""
    return _mth(leaves, 0, len(leaves))


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, over leaf hashes. Linear time."""
    if not 0 <= index < size <= len(leaves):
        raise ValueError(f"no leaf {index} in a tree of size {size} ({len(leaves)} leaves given)")
    out: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:  # descend towards the leaf; siblings are collected top-down
        k = _split(hi - lo)
        if m < k:
            out.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            out.append(_mth(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    out.reverse()  # PATH lists siblings bottom-up
    return out


def consistency_proof(leaves: Sequence[bytes], m: int, n: int) -> list[bytes]:
    """PROOF(m, D[0:n]) of RFC 9162 2.1.4.1, over leaf hashes. Empty when m is 0 or n
    (nothing to prove). Linear time."""
    if not 0 <= m <= n <= len(leaves):
        raise ValueError(f"no consistency proof from size {m} to size {n} ({len(leaves)} leaves)")
    if m == 0 or m == n:
        return []
    out: list[bytes] = []
    lo, hi, b = 0, n, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], b), unrolled
        k = _split(hi - lo)
        if m <= k:
            out.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            out.append(_mth(leaves, lo, lo + k))
            lo, m, b = lo + k, m - k, False
    if not b:
        out.append(_mth(leaves, lo, hi))
    out.reverse()
    return out


def _ok_hash(h: object) -> bool:
    return isinstance(h, bytes) and len(h) == HASH_SIZE


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` in the tree
    of ``size`` leaves whose root is ``root_hash``?"""
    if not (0 <= index < size <= _MAX_SIZE) or not _ok_hash(leaf) or not _ok_hash(root_hash):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0 or not _ok_hash(p):
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of size ``m`` with root ``root_m`` a prefix of the
    tree of size ``n`` with root ``root_n``? ``m == 0`` holds for an empty proof when
    ``root_m`` is the empty root; ``m == n`` for an empty proof and equal roots."""
    if not (0 <= m <= n <= _MAX_SIZE) or not _ok_hash(root_m) or not _ok_hash(root_n):
        return False
    if any(not _ok_hash(p) for p in proof):
        return False
    if m == 0:
        return not proof and root_m == EMPTY_ROOT
    if m == n:
        return not proof and root_m == root_n
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is the first node
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root_m and sr == root_n
