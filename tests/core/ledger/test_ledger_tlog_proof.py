"""tlog-proof documents (c2sp.org/tlog-proof@v1) and the one-pass proof collector."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger import Signer, Verifier
from ledgergate.core.ledger.merkle import CompactRange, inclusion_proof
from ledgergate.core.ledger.tlog_proof import (
    HEADER,
    InclusionCollector,
    TlogProof,
    TlogProofError,
    format_tlog_proof,
    parse_tlog_proof,
    sibling_ranges,
    verify_entry_proof,
)


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_sibling_ranges_are_the_ranges_of_path(case: tuple[int, int]) -> None:
    size, index = case
    leaves = _leaves(size)
    want = inclusion_proof(leaves, index, size)
    got = []
    for a, b in sibling_ranges(index, size):
        cr = CompactRange()
        cr.extend(leaves[a:b])
        got.append(cr.root())
    assert got == want


@given(
    st.integers(1, 260).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.integers(0, n - 1),  # the first leaf fed (the rest is a compact range)
            st.lists(st.integers(0, n - 1), max_size=12),
            st.lists(st.integers(1, n), min_size=1, max_size=4),  # checkpoint sizes
        )
    )
)
def test_collector_proofs_equal_inclusion_proof(
    case: tuple[int, int, list[int], list[int]],
) -> None:
    n, first, targets, sizes = case
    leaves = _leaves(n)
    sizes = sorted(set(sizes) | {n})
    tree = CompactRange()
    tree.extend(leaves[:first])
    col = InclusionCollector(tree)
    wanted = sorted({t for t in targets if t >= first})
    got: dict[int, tuple[int, list[bytes]]] = {}
    for p in range(first, n):
        size = next(s for s in sizes if s > p) if p in wanted else None
        for index, sz, hashes, extra in col.feed(leaves[p], size, extra=bytes([p % 256])):
            assert extra == bytes([index % 256])
            got[index] = (sz, hashes)
    assert sorted(got) == wanted and col.pending == 0
    for index, (sz, hashes) in got.items():
        assert sz == next(s for s in sizes if s > index)
        assert hashes == inclusion_proof(leaves, index, sz)


def _proof(stream: Any, seq: int, size: int = 23, note: int = 2) -> str:
    e = stream.entries[seq]
    hashes = inclusion_proof(stream.hashes(), seq, size)
    return format_tlog_proof(TlogProof(seq, tuple(hashes), stream.notes[note], e.canonical))


@pytest.fixture(scope="module")
def stream(build: Callable[..., Any]) -> Any:
    return build(23, checkpoints_at=(5, 16, 23))


@pytest.fixture(scope="module")
def vkey_only(signer: Signer) -> list[Verifier]:
    return [Verifier.from_vkey(signer.vkey)]


def test_a_proof_reads_as_the_spec_lays_it_out(stream: Any, vkey_only: list[Verifier]) -> None:
    text = _proof(stream, 7)
    lines = text.split("\n")
    assert lines[0] == HEADER
    assert lines[1].startswith("extra ") and lines[2] == "index 7"
    hashes = lines[3 : lines.index("")]
    assert len(hashes) == 5 and all(len(base64.b64decode(h)) == 32 for h in hashes)
    assert text.split("\n\n", 1)[1] == stream.notes[2]  # the checkpoint verbatim
    assert parse_tlog_proof(text).index == 7
    cp, entry = verify_entry_proof(text, vkey_only)
    assert (cp.origin, cp.size) == (stream.stream, 23)
    assert entry == stream.entries[7].canonical


def test_every_entry_proves(stream: Any, vkey_only: list[Verifier]) -> None:
    for seq in range(23):
        verify_entry_proof(_proof(stream, seq), vkey_only)
    for seq in range(5):
        verify_entry_proof(_proof(stream, seq, 5, 0), vkey_only)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("index 7", "index 8"), "the entry is .*:7, the proof is for .*:8"),
        (lambda t: t.replace("index 7", "index 07"), "leading zeroes"),
        (lambda t: t.replace(HEADER, "c2sp.org/tlog-proof@v2"), "first line"),
        (lambda t: t.replace("\n\n", "\n", 1), "blank line|not base64|32 bytes"),
    ],
)
def test_edits_are_named(
    stream: Any, vkey_only: list[Verifier], edit: Callable[[str], str], match: str
) -> None:
    with pytest.raises(TlogProofError, match=match):
        verify_entry_proof(edit(_proof(stream, 7)), vkey_only)


def test_a_changed_entry_or_hash_does_not_verify(stream: Any, vkey_only: list[Verifier]) -> None:
    p = parse_tlog_proof(_proof(stream, 7))
    assert p.extra is not None
    changed = p.extra.replace(b'"kind":"chunk"', b'"kind":"chonk"')
    assert changed != p.extra
    for bad in (
        TlogProof(7, p.hashes, p.checkpoint, changed),
        TlogProof(7, (p.hashes[1], p.hashes[0], *p.hashes[2:]), p.checkpoint, p.extra),
        TlogProof(7, p.hashes[:-1], p.checkpoint, p.extra),
    ):
        with pytest.raises(TlogProofError, match="does not lead to the signed root"):
            verify_entry_proof(format_tlog_proof(bad), vkey_only)
    with pytest.raises(TlogProofError, match="carries no entry"):
        verify_entry_proof(format_tlog_proof(TlogProof(7, p.hashes, p.checkpoint)), vkey_only)


def test_another_key_is_refused(stream: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Signer("ledgergate.test/ledger", Ed25519PrivateKey.generate())
    with pytest.raises(TlogProofError, match="checkpoint does not verify"):
        verify_entry_proof(_proof(stream, 3), [Verifier.from_vkey(other.vkey)])


@given(st.binary(max_size=400))
def test_parse_never_crashes(data: bytes) -> None:
    text = HEADER + "\n" + data.decode("latin-1")
    with contextlib.suppress(TlogProofError):  # a TlogProofError, or a parse
        parse_tlog_proof(text)
