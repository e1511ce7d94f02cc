"""verify_stream: every problem kind, named with the right first seq."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger import (
    Chain,
    Checkpoint,
    Draft,
    Signer,
    StreamState,
    canonical_json,
    leaf_hash,
    root,
    verify_stream,
)
from ledgergate.core.ledger.verify import (
    CHANGED,
    CHECKPOINT_MALFORMED,
    CHECKPOINT_MISMATCH,
    CHECKPOINT_ORIGIN,
    CHECKPOINT_SIGNATURE,
    INSERTED,
    REMOVED,
    REORDERED,
    TRUNCATED,
    StreamReport,
)

Row = tuple[int, bytes, bytes]


def edit(data: bytes, **changes: Any) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return canonical_json(doc)


def run(b: Any, rows: list[Row], signer: Signer, **kw: Any) -> StreamReport:
    return verify_stream(b.stream, rows, b.notes, [signer.verifier], **kw)


def only(rep: StreamReport) -> tuple[str, int | None]:
    assert len(rep.problems) == 1, rep.problems
    p = rep.problems[0]
    assert rep.stream in p.message
    return p.kind, p.seq


def test_an_intact_stream_verifies(build: Callable[..., Any], signer: Signer) -> None:
    b = build(20, checkpoints_at=(1, 8, 20))
    rep = run(b, b.rows(), signer)
    assert rep.ok and rep.problems == []
    assert (rep.entries, rep.verified_size, rep.checkpoints_verified) == (20, 20, 3)
    assert rep.latest_checkpoint is not None and rep.latest_checkpoint.size == 20


def test_an_empty_stream_verifies(signer: Signer) -> None:
    rep = verify_stream("s", [], [], [signer.verifier])
    assert rep.ok and rep.entries == 0


def test_rows_are_streamed_once(build: Callable[..., Any], signer: Signer) -> None:
    b = build(50, checkpoints_at=(50,))

    def gen() -> Iterator[Row]:
        yield from b.rows()

    rep = verify_stream(b.stream, gen(), iter(b.notes), iter([signer.verifier]))
    assert rep.ok and rep.entries == 50 and rep.checkpoints_verified == 1


# -- (a) changed --------------------------------------------------------------------------
@pytest.mark.parametrize("seq", [0, 7, 19])
def test_edited_entry_json_is_changed_at_its_seq(
    build: Callable[..., Any], signer: Signer, seq: int
) -> None:
    b = build(20, checkpoints_at=(10, 20))
    rows = b.rows()
    s, data, h = rows[seq]
    rows[seq] = (s, data.replace(b'"size":8192', b'"size":8193'), h)
    rep = run(b, rows, signer)
    assert only(rep) == (CHANGED, seq)
    assert f"entry {seq} was changed" in rep.problems[0].message
    assert rep.entries == 20  # counting goes on after the first problem


def test_edited_entry_with_recomputed_hash_is_changed_at_its_seq(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(20, checkpoints_at=(20,))
    rows = b.rows()
    data = edit(rows[7][1], outcome="failed")
    rows[7] = (7, data, leaf_hash(data))  # the attacker also rewrote the stored hash
    assert only(run(b, rows, signer)) == (CHANGED, 7)


def test_changed_entry_just_before_a_checkpoint(build: Callable[..., Any], signer: Signer) -> None:
    b = build(20, checkpoints_at=(8, 20))
    rows = b.rows()
    data = edit(rows[7][1], outcome="failed")
    rows[7] = (7, data, leaf_hash(data))
    rep = run(b, rows, signer)
    assert only(rep) == (CHANGED, 7)
    assert "checkpoint at size 8" in rep.problems[0].message


def test_rewritten_tail_is_caught_by_the_checkpoint(
    build: Callable[..., Any], signer: Signer
) -> None:
    # entries 12.. are forged and re-chained consistently: only the signature catches it
    b = build(20, checkpoints_at=(10, 20))
    forged = build(12).rows()
    prev = forged[-1][2]
    for i in range(12, 20):
        data = edit(b.rows()[i][1], prev_hash=prev.hex(), outcome="forged")
        prev = leaf_hash(data)
        forged.append((i, data, prev))
    rep = run(b, forged, signer)
    assert only(rep) == (CHECKPOINT_MISMATCH, 10)
    assert "one of entries 10..19 was changed" in rep.problems[0].message


def test_entry_moved_to_another_stream_is_changed(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(10)
    other = build(10, stream="gw-other")
    rows = b.rows()
    rows[4] = other.rows()[4]
    assert only(run(b, rows, signer)) == (CHANGED, 4)


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"seq":3}', b"\xff\xfe"])
def test_garbage_entry_is_changed(build: Callable[..., Any], signer: Signer, data: bytes) -> None:
    b = build(10)
    rows = b.rows()
    rows[3] = (3, data, rows[3][2])
    assert only(run(b, rows, signer)) == (CHANGED, 3)


def test_first_entry_must_start_the_chain(build: Callable[..., Any], signer: Signer) -> None:
    b = build(3)
    rows = b.rows()
    data = edit(rows[0][1], prev_hash="11" * 32)
    rows[0] = (0, data, leaf_hash(data))
    assert only(run(b, rows, signer)) == (CHANGED, 0)


def test_stored_seq_that_disagrees_with_the_document(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(6)
    rows = b.rows()
    rows[2] = (9, rows[2][1], rows[2][2])
    assert only(run(b, rows, signer)) == (CHANGED, 2)


def test_last_entry_changed_against_the_writer_state(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(6)
    rows = b.rows()
    data = edit(rows[5][1], outcome="x")
    rows[5] = (5, data, leaf_hash(data))
    head = b.entries[-1].entry_hash
    assert only(run(b, rows, signer, expected_size=6, expected_head=head)) == (CHANGED, 5)
    assert run(b, b.rows(), signer, expected_size=6, expected_head=head).ok


# -- (b) removed ---------------------------------------------------------------------------
@pytest.mark.parametrize("seq", [0, 1, 9])
def test_deleted_middle_row_is_removed_at_its_seq(
    build: Callable[..., Any], signer: Signer, seq: int
) -> None:
    b = build(20, checkpoints_at=(20,))
    rows = b.rows()
    del rows[seq]
    rep = run(b, rows, signer)
    assert only(rep) == (REMOVED, seq)
    assert f"entry {seq} was removed" in rep.problems[0].message
    assert rep.entries == 19


def test_several_deleted_rows_name_the_first_and_the_range(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(20)
    rows = b.rows()
    del rows[5:9]
    rep = run(b, rows, signer)
    assert only(rep) == (REMOVED, 5)
    assert "entries 5..8 are missing" in rep.problems[0].message


def test_deleted_row_with_renumbered_store_is_still_removed(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(10)
    rows = b.rows()
    del rows[4]
    rows = [(i, d, h) for i, (_, d, h) in enumerate(rows)]  # store seqs made contiguous
    assert only(run(b, rows, signer)) == (REMOVED, 4)


# -- (c) reordered -------------------------------------------------------------------------
@pytest.mark.parametrize(("i", "j"), [(3, 4), (2, 15), (0, 19)])
def test_swapped_row_contents_are_reordered_at_the_first(
    build: Callable[..., Any], signer: Signer, i: int, j: int
) -> None:
    b = build(20, checkpoints_at=(20,))
    rows = b.rows()
    (si, di, hi), (sj, dj, hj) = rows[i], rows[j]
    rows[i], rows[j] = (si, dj, hj), (sj, di, hi)  # content and hash swapped, seq kept
    rep = run(b, rows, signer)
    assert only(rep) == (REORDERED, i)
    assert f"entry {i} is at position {j}" in rep.problems[0].message


def test_swapped_canonical_only_is_reordered(build: Callable[..., Any], signer: Signer) -> None:
    b = build(10)
    rows = b.rows()
    rows[2], rows[6] = (2, rows[6][1], rows[2][2]), (6, rows[2][1], rows[6][2])
    assert only(run(b, rows, signer)) == (REORDERED, 2)


def test_reordered_bundle_lines_are_reordered(build: Callable[..., Any], signer: Signer) -> None:
    b = build(10)
    rows = b.rows()
    rows[3], rows[7] = rows[7], rows[3]  # whole rows moved, as in a bundle file
    assert only(run(b, rows, signer)) == (REORDERED, 3)


def test_duplicated_row_is_inserted(build: Callable[..., Any], signer: Signer) -> None:
    b = build(10)
    rows = b.rows()
    rows.insert(5, rows[4])
    assert only(run(b, rows, signer)) == (INSERTED, 5)


# -- (d) truncated -------------------------------------------------------------------------
def test_deleted_tail_under_a_checkpoint_is_truncated(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(20, checkpoints_at=(10, 20))
    rep = run(b, b.rows()[:16], signer)
    assert only(rep) == (TRUNCATED, 16)
    assert "entries 16..19 were removed" in rep.problems[0].message
    assert rep.checkpoints_verified == 1


def test_deleted_tail_with_its_checkpoints_is_caught_by_the_writer_state(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(20, checkpoints_at=(10, 20))
    rep = verify_stream(b.stream, b.rows()[:14], b.notes[:1], [signer.verifier], expected_size=20)
    assert only(rep) == (TRUNCATED, 14)


def test_deleted_tail_with_no_evidence_left_is_not_detectable(
    build: Callable[..., Any], signer: Signer
) -> None:
    # documented limit: with no checkpoint and no writer state, a prefix is a valid stream
    b = build(20, checkpoints_at=(10,))
    assert run(b, b.rows()[:14], signer).ok


# -- checkpoints ---------------------------------------------------------------------------
def test_checkpoint_with_a_wrong_root(build: Callable[..., Any], signer: Signer) -> None:
    b = build(10)
    b.notes.append(signer.sign(Checkpoint(b.stream, 6, leaf_hash(b"lie"), 1)))
    rep = run(b, b.rows(), signer)
    assert only(rep) == (CHECKPOINT_MISMATCH, 0)


def test_checkpoint_with_a_bad_signature(build: Callable[..., Any], signer: Signer) -> None:
    b = build(10, checkpoints_at=(5, 10))
    b.notes[1] = b.notes[1].replace("\n10\n", "\n11\n")
    rep = run(b, b.rows(), signer)
    assert only(rep) == (CHECKPOINT_SIGNATURE, None)
    assert "invalid" in rep.problems[0].message
    assert rep.checkpoints_verified == 1


def test_checkpoint_from_an_unknown_key(
    build: Callable[..., Any], signer: Signer, other_signer: Signer
) -> None:
    b = build(10)
    b.notes.append(other_signer.sign(Checkpoint(b.stream, 10, root(b.hashes()), 1)))
    rep = run(b, b.rows(), signer)
    assert only(rep) == (CHECKPOINT_SIGNATURE, None)
    assert "not signed by a trusted key" in rep.problems[0].message


def test_checkpoint_for_another_stream(build: Callable[..., Any], signer: Signer) -> None:
    b = build(10, checkpoints_at=(10,))
    other = build(10, checkpoints_at=(10,), stream="gw-other")
    b.notes.append(other.notes[0])
    rep = run(b, b.rows(), signer)
    assert only(rep) == (CHECKPOINT_ORIGIN, None)
    assert "gw-other" in rep.problems[0].message and rep.checkpoints_verified == 1


def test_malformed_checkpoint(build: Callable[..., Any], signer: Signer) -> None:
    b = build(4)
    b.notes.append("not a note")
    assert only(run(b, b.rows(), signer)) == (CHECKPOINT_MALFORMED, None)


def test_entry_problem_comes_first_then_checkpoint_problems(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(10, checkpoints_at=(10,))
    b.notes.append("junk")
    rows = b.rows()
    del rows[3]
    rep = run(b, rows, signer)
    assert [(p.kind, p.seq) for p in rep.problems] == [(REMOVED, 3), (CHECKPOINT_MALFORMED, None)]


def test_empty_checkpoint_must_have_the_empty_root(
    build: Callable[..., Any], signer: Signer
) -> None:
    b = build(3)
    b.notes.append(signer.sign(Checkpoint(b.stream, 0, leaf_hash(b""), 1)))
    assert only(run(b, b.rows(), signer)) == (CHECKPOINT_MISMATCH, 0)


# -- property: one random tampering, the right kind and seq ----------------------------------
@given(st.integers(4, 40), st.data())
def test_random_tampering_is_named(n: int, data: Any) -> None:
    signer = Signer("k", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    chain = Chain(StreamState.genesis("p"))
    rows = []
    for i in range(n):
        e = chain.seal(Draft(i, "chunk", {"n": i}))
        rows.append((e.seq, e.canonical, e.entry_hash))
    notes = [signer.sign(Checkpoint("p", n, chain.state.tree.root(), 0))]
    op = data.draw(st.sampled_from(["edit", "delete", "swap", "truncate"]))
    i = data.draw(st.integers(0, n - 2))
    if op == "edit":
        rows[i] = (i, rows[i][1].replace(b'"n":', b'"n":1'), rows[i][2])
        want = (CHANGED, i)
    elif op == "delete":
        del rows[i]
        want = (REMOVED, i)
    elif op == "swap":
        j = data.draw(st.integers(i + 1, n - 1))
        rows[i], rows[j] = (i, *rows[j][1:]), (j, *rows[i][1:])
        want = (REORDERED, i)
    else:
        del rows[i + 1 :]
        want = (TRUNCATED, i + 1)
    rep = verify_stream("p", rows, notes, [signer.verifier])
    assert [(p.kind, p.seq) for p in rep.problems] == [want]
