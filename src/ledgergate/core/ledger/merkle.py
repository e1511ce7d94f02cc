"""Merkle tree hashing, proofs and verification per RFC 6962 / RFC 9162 section 2.1.

Leaves are hashed SHA-256(0x00 || data), interior nodes SHA-256(0x01 || left || right);
the tree over n leaves splits at the largest power of two below n. ``CompactRange`` keeps
the O(log n) state needed to append and compute the root incrementally. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root(leaves[:k]), root(leaves[k:]))


class CompactRange:
    """Roots of the perfect subtrees covering [0, size), largest first."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size = size
        self.hashes = hashes or []
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError("compact range does not match its size")

    def append(self, leaf: bytes) -> None:
        h = leaf
        size = self.size
        hashes = self.hashes
        while size & 1:
            h = node_hash(hashes.pop(), h)
            size >>= 1
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.hashes))

    def to_bytes(self) -> bytes:
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        if len(body) % 32:
            raise ValueError("corrupt compact range")
        return cls(size, [body[i : i + 32] for i in range(0, len(body), 32)])


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1."""
    if not 0 <= index < size <= len(leaves):
        raise ValueError("index outside the tree")

    def path(m: int, d: Sequence[bytes]) -> list[bytes]:
        n = len(d)
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, d[:k]), root(d[k:])]
        return [*path(m - k, d[k:]), root(d[:k])]

    return path(index, leaves[:size])


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size or index < 0:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
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


def consistency_proof(leaves: Sequence[bytes], m: int, n: int) -> list[bytes]:
    """PROOF(m, D[0:n]) of RFC 9162 2.1.4.1."""
    if not 0 < m <= n <= len(leaves):
        raise ValueError("sizes outside the tree")

    def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [root(d)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, d[:k], b), root(d[k:])]
        return [*subproof(m - k, d[k:], False), root(d[:k])]

    return subproof(m, leaves[:n], True)


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if m <= 0 or m > n:
        return False
    if m == n:
        return not proof and root_m == root_n
    p = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is the first node
        p = [root_m, *p]
    if not p:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = p[0]
    for c in p[1:]:
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
