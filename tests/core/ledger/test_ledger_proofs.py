"""Inclusion and consistency proof documents, verified offline with only a vkey."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger import (
    Checkpoint,
    ProofError,
    Signer,
    Verifier,
    build_consistency_document,
    build_inclusion_document,
    root,
    verify_consistency_document,
    verify_inclusion_document,
    verify_proof_document,
)
from ledgergate.core.ledger.proofs import CONSISTENCY_TYPE, INCLUSION_TYPE


@pytest.fixture(scope="module")
def stream(build: Callable[..., Any]) -> Any:
    return build(23, checkpoints_at=(5, 16, 23))


@pytest.fixture(scope="module")
def vkey_only(signer: Signer) -> list[Verifier]:
    return [Verifier.from_vkey(signer.vkey)]  # what an auditor holds


def inclusion(b: Any, seq: int, size: int = 23, note: int = 2) -> dict[str, Any]:
    e = b.entries[seq]
    return build_inclusion_document(b.stream, seq, e.canonical, b.hashes(), b.notes[note], size)


def consistency(b: Any) -> dict[str, Any]:
    return build_consistency_document(b.stream, b.hashes(), b.notes[0], 5, b.notes[2], 23)


def fails(doc: Any, verifiers: list[Verifier], match: str) -> None:
    with pytest.raises(ProofError, match=match):
        verify_proof_document(doc, verifiers)


# -- inclusion -----------------------------------------------------------------------------
def test_every_entry_has_a_verifying_inclusion_document(
    stream: Any, vkey_only: list[Verifier]
) -> None:
    for seq in range(23):
        doc = json.loads(json.dumps(inclusion(stream, seq)))  # survives a JSON round trip
        assert set(doc) == {
            "type",
            "stream",
            "seq",
            "entry",
            "entry_hash",
            "tree_size",
            "proof",
            "checkpoint",
        }
        cp = verify_inclusion_document(doc, vkey_only)
        assert (cp.origin, cp.size) == (stream.stream, 23)
        assert verify_proof_document(doc, vkey_only).startswith(f"entry {stream.stream}:{seq} ")


def test_inclusion_against_an_older_checkpoint(stream: Any, vkey_only: list[Verifier]) -> None:
    doc = inclusion(stream, 3, size=5, note=0)
    assert verify_inclusion_document(doc, vkey_only).size == 5


def test_type_may_be_omitted(stream: Any, vkey_only: list[Verifier]) -> None:
    doc = inclusion(stream, 4)
    del doc["type"]
    verify_proof_document(doc, vkey_only)


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: d.update(entry=d["entry"].replace("8192", "8193")), "was changed"),
        (lambda d: d.update(entry_hash="00" * 32), "was changed"),
        (lambda d: d.update(proof=["00" * 31 + "01", *d["proof"][1:]]), "does not lead"),
        (lambda d: d.update(proof=d["proof"][:-1]), "does not lead"),
        (lambda d: d.update(proof=[*d["proof"], d["proof"][0]]), "does not lead"),
        (lambda d: d.update(tree_size=22), "size 23, the proof for size 22"),
        (lambda d: d.update(seq=8), "not gw-test-1:8"),
        (lambda d: d.update(stream="gw-other"), "for stream 'gw-test-1'"),
        (lambda d: d.update(checkpoint=d["checkpoint"].replace("\n23\n", "\n24\n")), "invalid"),
        (lambda d: d.update(proof=["zz"]), "32-byte hashes"),
        (lambda d: d.update(proof="00"), "'proof' is missing"),
        (lambda d: d.pop("entry"), "'entry' is missing"),
        (lambda d: d.update(seq=True), "'seq' is missing or not a int"),
        (lambda d: d.update(type="other"), "not a ledgergate proof"),
    ],
)
def test_tampered_inclusion_documents_fail(
    stream: Any, vkey_only: list[Verifier], mangle: Any, match: str
) -> None:
    doc = inclusion(stream, 7)
    mangle(doc)
    fails(doc, vkey_only, match)


def test_inclusion_needs_the_right_key(stream: Any, other_signer: Signer) -> None:
    fails(inclusion(stream, 7), [other_signer.verifier], "not signed by a trusted key")
    fails(inclusion(stream, 7), [], "not signed by a trusted key")


def test_builder_refuses_an_entry_that_is_not_the_leaf(stream: Any) -> None:
    e = stream.entries[3]
    with pytest.raises(ValueError):
        build_inclusion_document(
            stream.stream, 4, e.canonical, stream.hashes(), stream.notes[2], 23
        )
    with pytest.raises(ValueError):
        build_inclusion_document(stream.stream, 3, e.canonical, stream.hashes(), stream.notes[0], 3)


def test_not_a_document(vkey_only: list[Verifier]) -> None:
    for doc in [None, [], "x", {}]:
        fails(doc, vkey_only, "not a ledgergate proof")


# -- consistency ---------------------------------------------------------------------------
def test_consistency_document_verifies(stream: Any, vkey_only: list[Verifier]) -> None:
    doc = json.loads(json.dumps(consistency(stream)))
    old, new = verify_consistency_document(doc, vkey_only)
    assert (old.size, new.size) == (5, 23)
    assert "size 5 is a prefix of the signed tree of size 23" in verify_proof_document(
        doc, vkey_only
    )
    del doc["type"], doc["old_size"], doc["new_size"]
    verify_proof_document(doc, vkey_only)


def test_consistency_of_equal_checkpoints(stream: Any, vkey_only: list[Verifier]) -> None:
    doc = build_consistency_document(
        stream.stream, stream.hashes(), stream.notes[1], 16, stream.notes[1], 16
    )
    assert doc["proof"] == []
    verify_consistency_document(doc, vkey_only)


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: d.update(old=d["new"], new=d["old"], old_size=23, new_size=5), "larger than"),
        (lambda d: d.update(proof=d["proof"][1:]), "history was rewritten"),
        (lambda d: d.update(proof=["00" * 31 + "07", *d["proof"][1:]]), "history was rewritten"),
        (lambda d: d.update(old_size=6), "old_size is 6"),
        (lambda d: d.update(stream="gw-other"), "for stream 'gw-test-1'"),
        (lambda d: d.update(new=d["new"].replace("timestamp", "timestamq")), "does not verify"),
    ],
)
def test_tampered_consistency_documents_fail(
    stream: Any, vkey_only: list[Verifier], mangle: Any, match: str
) -> None:
    doc = consistency(stream)
    mangle(doc)
    fails(doc, vkey_only, match)


def test_a_forked_history_is_not_consistent(
    build: Callable[..., Any], signer: Signer, vkey_only: list[Verifier]
) -> None:
    # The key holder signs a second history that rewrites entry 2: the proof (built from
    # the forged leaves) cannot connect the honest old checkpoint to the forged new one.
    honest = build(8, checkpoints_at=(4,))
    hashes = honest.hashes()
    forged = [*hashes[:2], b"\x42" * 32, *hashes[3:]]
    new = signer.sign(Checkpoint(honest.stream, 8, root(forged), 9))
    doc = build_consistency_document(honest.stream, forged, honest.notes[0], 4, new, 8)
    fails(doc, vkey_only, "history was rewritten")


def test_document_parser_fed_three_ways(stream: Any, vkey_only: list[Verifier]) -> None:
    text = json.dumps(inclusion(stream, 11))
    verify_proof_document(json.loads(text), vkey_only)  # whole
    for i in range(0, len(text), 7):  # cut anywhere: not JSON, or a document that fails
        try:
            doc = json.loads(text[:i])
        except ValueError:
            continue
        fails(doc, vkey_only, "")
    with pytest.raises(ValueError):  # trailing bytes: not one JSON document
        json.loads(text + "}")


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "stream",
                "seq",
                "entry",
                "entry_hash",
                "tree_size",
                "proof",
                "checkpoint",
                "old",
                "new",
            ]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=20)
        | st.lists(st.text(max_size=64), max_size=3),
    )
)
def test_arbitrary_documents_only_raise_proof_error(doc: dict[str, Any]) -> None:
    for kind in (None, INCLUSION_TYPE, CONSISTENCY_TYPE):
        if kind:
            doc["type"] = kind
        with pytest.raises(ProofError):
            verify_proof_document(doc, [])
