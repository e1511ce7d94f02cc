"""RFC 6962 / RFC 9162 Merkle tree: known answers, a reference MTH, proof properties."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def ref_mth(data: Sequence[bytes]) -> bytes:
    """MTH of RFC 9162 2.1.1, written straight from the definition, over raw leaves."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(data[:k]) + ref_mth(data[k:])).digest()


@pytest.fixture(scope="module")
def ct(vector: Callable[[str], Any]) -> dict[str, Any]:
    v: dict[str, Any] = vector("rfc6962_ct_tree.json")
    v["leaf_hashes"] = [leaf_hash(bytes.fromhex(x)) for x in v["leaves"]]
    return v


def hx(xs: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in xs]


# -- known answers -------------------------------------------------------------------------
def test_hash_primitives() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    )


def test_roots_of_the_ct_test_tree(ct: dict[str, Any]) -> None:
    leaves = [bytes.fromhex(x) for x in ct["leaves"]]
    for size in range(9):
        want = bytes.fromhex(ct["roots"][str(size)])
        assert root(ct["leaf_hashes"][:size]) == want, size
        assert ref_mth(leaves[:size]) == want, size  # the reference agrees with the vectors
    assert root(ct["leaf_hashes"]).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


def test_compact_range_gives_every_intermediate_root(ct: dict[str, Any]) -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for size, h in enumerate(ct["leaf_hashes"], 1):
        cr.append(h)
        assert cr.size == size
        assert cr.root().hex() == ct["roots"][str(size)]


def test_inclusion_proofs_match_the_vectors(ct: dict[str, Any]) -> None:
    for case in ct["inclusion"]:
        i, n, want = case["index"], case["size"], hx(case["proof"])
        assert inclusion_proof(ct["leaf_hashes"], i, n) == want
        r = bytes.fromhex(ct["roots"][str(n)])
        assert verify_inclusion(ct["leaf_hashes"][i], i, n, want, r)


def test_consistency_proofs_match_the_vectors(ct: dict[str, Any]) -> None:
    for case in ct["consistency"]:
        m, n, want = case["size1"], case["size2"], hx(case["proof"])
        assert consistency_proof(ct["leaf_hashes"], m, n) == want
        r1, r2 = (bytes.fromhex(ct["roots"][str(s)]) for s in (m, n))
        assert verify_consistency(m, n, r1, r2, want)


def corrupt_inclusion(i: int, n: int, proof: list[bytes], r: bytes, leaf: bytes) -> list[Any]:
    """The probes of transparency-dev/merkle's corruptInclusionProof: all must fail."""
    probes: list[Any] = [
        (i - 1, n, r, leaf, proof),
        (i + 1, n, r, leaf, proof),
        (i ^ 2, n, r, leaf, proof),
        (i, n * 2, r, leaf, proof),
        (i, n // 2, r, leaf, proof),
        (i, n, r, b"WrongLeaf", proof),
        (i, n, EMPTY_ROOT, leaf, proof),
        (i, n, SOME_HASH, leaf, proof),
        (i, n, r, leaf, [*proof, b""]),
        (i, n, r, leaf, [*proof, r]),
        (i, n, r, leaf, [b"", *proof]),
        (i, n, r, leaf, [r, *proof]),
    ]
    for k in range(len(proof)):
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 8]) + bad[k][1:]
        probes.append((i, n, r, leaf, bad))
    if proof:
        probes.append((i, n, r, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((i, n, r, leaf, [proof[0], SOME_HASH, *proof[1:]]))
    return probes


def test_corrupted_inclusion_proofs_fail(ct: dict[str, Any]) -> None:
    for case in ct["inclusion"][1:]:
        i, n, proof = case["index"], case["size"], hx(case["proof"])
        r = bytes.fromhex(ct["roots"][str(n)])
        for pi, pn, pr, pl, pp in corrupt_inclusion(i, n, proof, r, ct["leaf_hashes"][i]):
            assert not verify_inclusion(pl, pi, pn, pp, pr), (pi, pn)


def test_corrupted_consistency_proofs_fail(ct: dict[str, Any]) -> None:
    for case in ct["consistency"][1:]:
        m, n, p = case["size1"], case["size2"], hx(case["proof"])
        r1, r2 = (bytes.fromhex(ct["roots"][str(s)]) for s in (m, n))
        probes: list[Any] = [
            (m - 1, n, r1, r2, p),
            (m + 1, n, r1, r2, p),
            (m ^ 2, n, r1, r2, p),
            (m, n * 2, r1, r2, p),
            (m, n // 2, r1, r2, p),
            (m, n, b"WrongRoot", r2, p),
            (m, n, r1, b"WrongRoot", p),
            (m, n, r2, r1, p),
            (m, n, r1, r2, []),
            (m, n, r1, r2, [*p, b""]),
            (m, n, r1, r2, [*p, r1]),
            (m, n, r1, r2, [*p, r2]),
            (m, n, r1, r2, [b"", *p]),
            (m, n, r1, r2, [r1, *p]),
            (m, n, r1, r2, [r2, *p]),
            (m, n, r1, r2, [p[0], *p]),
            (m, n, r1, r2, p[:-1]),
        ]
        for k in range(len(p)):
            bad = list(p)
            bad[k] = bytes([bad[k][0] ^ 16]) + bad[k][1:]
            probes.append((m, n, r1, r2, bad))
        for pm, pn, a, b, pp in probes:
            assert not verify_consistency(pm, pn, a, b, pp), (pm, pn)


def test_degenerate_consistency_cases() -> None:
    r = SOME_HASH
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, r, [])
    assert not verify_consistency(0, 5, r, r, [])  # the empty tree has one root
    assert verify_consistency(3, 3, r, r, [])
    assert not verify_consistency(3, 3, r, EMPTY_ROOT, [])
    assert not verify_consistency(3, 3, r, r, [r])
    assert not verify_consistency(2, 1, r, r, [])  # time travel
    assert not verify_consistency(-1, 1, r, r, [])


def test_verifiers_never_raise_on_garbage() -> None:
    assert not verify_inclusion(b"short", 0, 1, [], b"short")
    assert not verify_inclusion(SOME_HASH, 0, 0, [], SOME_HASH)
    assert not verify_inclusion(SOME_HASH, -1, 1, [], SOME_HASH)
    assert not verify_inclusion(SOME_HASH, 0, 2**64, [], SOME_HASH)
    assert not verify_inclusion(SOME_HASH, 0, 2, ["not bytes"], SOME_HASH)  # type: ignore[list-item]
    assert not verify_consistency(1, 2, SOME_HASH, SOME_HASH, [b"x" * 31])


def test_proof_builders_reject_impossible_requests() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(4)]
    for args in [(leaves, 4, 4), (leaves, -1, 4), (leaves, 0, 5)]:
        with pytest.raises(ValueError):
            inclusion_proof(*args)
    for args in [(leaves, 3, 2), (leaves, -1, 2), (leaves, 1, 5)]:
        with pytest.raises(ValueError):
            consistency_proof(*args)
    assert consistency_proof(leaves, 0, 4) == [] and consistency_proof(leaves, 4, 4) == []


# -- CompactRange --------------------------------------------------------------------------
def test_compact_range_persists_and_copies() -> None:
    cr = CompactRange()
    cr.extend(leaf_hash(bytes([i])) for i in range(13))
    data = cr.to_bytes()
    assert len(data) == 8 + 32 * 3  # 13 = 0b1101: three perfect subtrees
    back = CompactRange.from_bytes(data)
    assert back == cr and back.root() == cr.root() and back.size == 13
    dup = cr.copy()
    dup.append(SOME_HASH)
    assert cr.size == 13 and dup.size == 14 and dup != cr
    assert CompactRange.from_bytes(CompactRange().to_bytes()) == CompactRange()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 7, (13).to_bytes(8, "big") + b"\x00" * 64, (1).to_bytes(8, "big")],
)
def test_compact_range_rejects_corrupt_records(data: bytes) -> None:
    with pytest.raises(ValueError):
        CompactRange.from_bytes(data)


def test_compact_range_rejects_inconsistent_state_and_bad_leaves() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, [SOME_HASH])
    with pytest.raises(ValueError):
        CompactRange(-1)
    with pytest.raises(ValueError):
        CompactRange().append(b"x")


# -- properties ----------------------------------------------------------------------------
def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(st.integers(0, 70))
def test_root_matches_the_reference_and_the_compact_range(n: int) -> None:
    raw = [i.to_bytes(4, "big") for i in range(n)]
    hashes = [leaf_hash(d) for d in raw]
    cr = CompactRange()
    cr.extend(hashes)
    assert root(hashes) == ref_mth(raw) == cr.root()


@given(st.integers(1, 70), st.data())
def test_every_inclusion_proof_verifies_and_a_flipped_bit_fails(n: int, data: Any) -> None:
    hashes = leaves_of(n)
    r = root(hashes)
    for i in range(n):
        assert verify_inclusion(hashes[i], i, n, inclusion_proof(hashes, i, n), r)
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(hashes, i, n)
    bit = data.draw(st.integers(0, 255))
    assert not verify_inclusion(flip(hashes[i], bit), i, n, proof, r)
    assert not verify_inclusion(hashes[i], i, n, proof, flip(r, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]]
        assert not verify_inclusion(hashes[i], i, n, bad, r)
    if n > 1:
        assert not verify_inclusion(hashes[i], (i + 1) % n, n, proof, r)


@given(st.integers(1, 70), st.data())
def test_every_consistency_proof_verifies_and_a_flipped_bit_fails(n: int, data: Any) -> None:
    hashes = leaves_of(n)
    roots = [root(hashes[:m]) for m in range(n + 1)]
    for m in range(n + 1):
        assert verify_consistency(m, n, roots[m], roots[n], consistency_proof(hashes, m, n))
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(hashes, m, n)
    bit = data.draw(st.integers(0, 255))
    assert not verify_consistency(m, n, flip(roots[m], bit), roots[n], proof)
    assert not verify_consistency(m, n, roots[m], flip(roots[n], bit), proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]]
        assert not verify_consistency(m, n, roots[m], roots[n], bad)


@given(st.integers(2, 40), st.data())
def test_a_rewritten_history_is_not_consistent(n: int, data: Any) -> None:
    hashes = leaves_of(n)
    m = data.draw(st.integers(1, n - 1))
    j = data.draw(st.integers(0, m - 1))  # rewrite one entry of the old tree
    forged = [*hashes[:j], SOME_HASH, *hashes[j + 1 :]]
    proof = consistency_proof(forged, m, n)
    assert not verify_consistency(m, n, root(hashes[:m]), root(forged), proof)


@given(st.integers(0, 40), st.integers(0, 40))
def test_compact_range_round_trips_at_any_size(a: int, b: int) -> None:
    cr = CompactRange()
    cr.extend(leaves_of(a))
    back = CompactRange.from_bytes(cr.to_bytes())
    more = leaves_of(a + b)[a:]
    cr.extend(more)
    back.extend(more)
    assert back.root() == cr.root() == root(leaves_of(a + b))
