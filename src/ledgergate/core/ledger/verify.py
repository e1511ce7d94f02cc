"""Verifying a ledger stream: the auditor's walk over stored entries and checkpoints.

Owns ``verify_stream``. It walks one stream's stored rows in order, in linear time and
O(log n) memory (plus the list of checkpoints): it re-hashes every entry, checks its
place (``seq``) and its link (``prev_hash``), feeds a ``CompactRange`` and compares the
root with every trusted checkpoint when the tree reaches that checkpoint's size. It
reports the FIRST entry problem, then every checkpoint note that is malformed,
untrusted, mis-signed or for another stream. After the first entry problem it only
counts the remaining rows (and looks for the missing entry, to tell a removal from a
reordering).

How the first problem is classified, at the first row that is not entry ``p``:
- the row names seq ``p`` but its bytes do not hash to the stored ``entry_hash``, it
  names another stream, or it is stored under another seq: ``changed`` at ``p``;
- it names seq ``p`` but its ``prev_hash`` is not entry ``p-1``'s hash: ``changed`` at
  ``p-1`` (edited, and its stored hash recomputed), or at ``p`` when a matching signed
  checkpoint vouches for entry ``p-1``;
- it names a later seq ``s``: entry ``p`` is not in its place. If entry ``p`` (linked to
  entry ``p-1``) turns up further on: ``reordered`` at ``p``. Otherwise ``removed`` at
  ``p`` (entries ``p..s-1`` are gone), or ``changed`` at ``p`` if the row's bytes do not
  match its stored hash either;
- it names an earlier seq: ``inserted`` at ``p``;
- the tree at a trusted checkpoint's size has another root: ``changed`` at the last
  entry if the next entry's link confirms it, else ``checkpoint_mismatch`` at the first
  entry after the last matching checkpoint;
- every row is fine but a trusted checkpoint (or the writer's stream state) counts more
  entries: ``truncated`` at the first missing seq.

Proof documents live in ``proofs``; their names are re-exported here.

Must not: do I/O, read the clock or log: rows, notes and keys come in as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ledgergate.core.ledger.chain import GENESIS_HASH, ChainError, entry_link
from ledgergate.core.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    parse_checkpoint,
)
from ledgergate.core.ledger.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from ledgergate.core.ledger.proofs import (
    CONSISTENCY_TYPE,
    INCLUSION_TYPE,
    ProofError,
    build_consistency_document,
    build_inclusion_document,
    verify_consistency_document,
    verify_inclusion_document,
    verify_proof_document,
)
from ledgergate.core.ledger.retention import stub_of

__all__ = [
    "CHANGED",
    "CHECKPOINT_MALFORMED",
    "CHECKPOINT_MISMATCH",
    "CHECKPOINT_ORIGIN",
    "CHECKPOINT_SIGNATURE",
    "COLUMN_MISMATCH",
    "CONSISTENCY_TYPE",
    "INCLUSION_TYPE",
    "INSERTED",
    "REMOVED",
    "REORDERED",
    "TRUNCATED",
    "Problem",
    "ProofError",
    "StreamReport",
    "build_consistency_document",
    "build_inclusion_document",
    "verify_consistency_document",
    "verify_inclusion_document",
    "verify_proof_document",
    "verify_stream",
]

# Problem kinds
CHANGED = "changed"
REMOVED = "removed"
REORDERED = "reordered"
INSERTED = "inserted"
TRUNCATED = "truncated"
CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # trusted, but not the root of the entries
CHECKPOINT_SIGNATURE = "checkpoint_signature"  # bad signature, or no trusted signer
CHECKPOINT_ORIGIN = "checkpoint_origin"  # signed for another stream
CHECKPOINT_MALFORMED = "checkpoint_malformed"
# The store's search column (kind, identity, session, connection, time) of an intact
# entry says something else than the entry itself.
COLUMN_MISMATCH = "column_mismatch"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # one of the kinds above
    seq: int | None  # the first entry concerned; None for a checkpoint note
    message: str  # names the stream and the entry or checkpoint


@dataclass(slots=True)
class StreamReport:
    stream: str
    entries: int = 0  # rows read
    verified_size: int = 0  # entries [0, verified_size) re-hashed and chained
    checkpoints_verified: int = 0
    latest_checkpoint: Checkpoint | None = None  # the largest one that matched
    problems: list[Problem] = field(default_factory=list)
    # Entries retention pruned (their stubs): rule -> how many, and their seq ranges
    # [first, last] for the service layer to check against the retention records.
    pruned: dict[str, int] = field(default_factory=dict)
    pruned_ranges: list[list[int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _link(data: bytes) -> tuple[str, int, bytes] | str:
    try:
        return entry_link(data)
    except ChainError as e:
        return str(e)


def _load_checkpoints(
    stream: str, notes: Iterable[str], verifiers: Sequence[Verifier]
) -> tuple[list[Checkpoint], list[Problem]]:
    """The trusted checkpoints of ``stream`` by size, and a problem per rejected note."""
    cps: list[Checkpoint] = []
    problems: list[Problem] = []
    for i, note in enumerate(notes, 1):
        try:
            cp = parse_checkpoint(note, verifiers)
        except CheckpointError as e:
            kind = CHECKPOINT_MALFORMED if e.reason == "malformed" else CHECKPOINT_SIGNATURE
            problems.append(Problem(kind, None, f"{stream}: checkpoint #{i} rejected: {e}"))
            continue
        if cp.origin != stream:
            msg = f"{stream}: checkpoint #{i} (size {cp.size}) is signed for {cp.origin!r}"
            problems.append(Problem(CHECKPOINT_ORIGIN, None, msg))
            continue
        cps.append(cp)
    cps.sort(key=lambda c: c.size)
    return cps, problems


@dataclass(slots=True)
class _Missing:
    """Entry ``seq`` was not in its place: position ``seq`` held entry ``found``."""

    seq: int
    prev: bytes  # entry seq-1's hash: the real entry seq links to it
    found: int
    hash_changed: bool  # the row's bytes did not match its stored hash either
    needle: bytes  # a cheap pre-filter: the real entry's bytes contain it


def verify_stream(
    stream: str,
    rows: Iterable[tuple[int, bytes, bytes]],
    checkpoint_notes: Iterable[str],
    verifiers: Iterable[Verifier],
    *,
    expected_size: int | None = None,
    expected_head: bytes | None = None,
) -> StreamReport:
    """Verify one stream. ``rows``: (seq as stored, canonical bytes, stored entry_hash)
    in the store's order. ``expected_size``/``expected_head``: the writer's own record
    of the stream (its state row), which catches a tail deleted with its checkpoints."""
    rep = StreamReport(stream)
    cps, note_problems = _load_checkpoints(stream, checkpoint_notes, list(verifiers))
    ncps, ci = len(cps), 0
    tree = CompactRange()
    append = tree.append
    prev = GENESIS_HASH
    anchored = 0  # entries [0, anchored) are vouched for by a matching checkpoint
    first: Problem | None = None
    missing: _Missing | None = None
    cp_bad: Checkpoint | None = None  # mismatched after the previous row
    while ci < ncps and cps[ci].size == 0:
        if cps[ci].root != EMPTY_ROOT:
            cp_bad = cps[ci]
        ci += 1
    pos = -1
    for pos, (stored_seq, data, stored_hash) in enumerate(rows):
        if first is not None:
            if missing is not None and missing.needle in data:
                first, missing = _look_for(stream, pos, data, missing, first)
            continue
        pruned = stub_of(data) if cp_bad is None else None
        if pruned is not None and pruned["stream"] == stream and pruned["seq"] == pos:
            # retention removed its content: the stored hash is its leaf (see
            # core.ledger.retention); the next entry's link and the roots still hold
            if stored_seq != pos or len(stored_hash) != len(GENESIS_HASH):
                first = Problem(CHANGED, pos, f"{stream} entry {pos} was changed: bad stub")
                continue
            rule = str(pruned["pruned"]["rule"])
            rep.pruned[rule] = rep.pruned.get(rule, 0) + 1
            if rep.pruned_ranges and rep.pruned_ranges[-1][1] == pos - 1:
                rep.pruned_ranges[-1][1] = pos
            else:
                rep.pruned_ranges.append([pos, pos])
            h = bytes(stored_hash)
        else:
            link = _link(data)
            if cp_bad is not None:
                first = _after_mismatch(stream, pos, link, prev, cp_bad, anchored)
                continue
            if isinstance(link, str):
                first = Problem(CHANGED, pos, f"{stream} entry {pos} was changed: {link}")
                continue
            d_stream, d_seq, d_prev = link
            h = leaf_hash(data)
            if d_seq != pos or d_stream != stream or h != stored_hash or stored_seq != pos:
                first, missing = _out_of_place(
                    stream, pos, stored_seq, link, h != stored_hash, prev
                )
                continue
            if d_prev != prev:
                first = _broken_link(stream, pos, anchored)
                continue
        prev = h
        append(h)
        size = pos + 1
        while ci < ncps and cps[ci].size == size:
            cp = cps[ci]
            ci += 1
            if cp.root == tree.root():
                rep.checkpoints_verified += 1
                rep.latest_checkpoint = cp
                anchored = size
            elif cp_bad is None:
                cp_bad = cp
    rep.entries = pos + 1
    rep.verified_size = tree.size
    if first is None and cp_bad is not None:
        first = _mismatch(stream, cp_bad, anchored)
    if first is None:
        first = _tail(stream, tree.size, prev, cps[ci:], expected_size, expected_head)
    if first is not None:
        rep.problems.append(first)
    rep.problems.extend(note_problems)
    return rep


def _out_of_place(
    stream: str,
    pos: int,
    stored_seq: int,
    link: tuple[str, int, bytes],
    hash_changed: bool,
    prev: bytes,
) -> tuple[Problem, _Missing | None]:
    d_stream, d_seq, _ = link
    if d_stream != stream:
        msg = f"{stream} entry {pos} was changed: it names stream {d_stream!r}"
        return Problem(CHANGED, pos, msg), None
    if d_seq == pos:
        if hash_changed:
            msg = f"{stream} entry {pos} was changed: its content does not match its entry_hash"
        else:
            msg = f"{stream} entry {pos} was changed: it is stored as seq {stored_seq}"
        return Problem(CHANGED, pos, msg), None
    if d_seq < pos:
        msg = f"{stream}: an entry was inserted at position {pos}: a copy of entry {d_seq}"
        return Problem(INSERTED, pos, msg), None
    m = _Missing(pos, prev, d_seq, hash_changed and stored_seq == pos, b'"seq":%d' % pos)
    if m.hash_changed:
        msg = (
            f"{stream} entry {pos} was changed: its content does not match its entry_hash "
            f"(it now claims to be entry {d_seq})"
        )
        return Problem(CHANGED, pos, msg), m
    gone = f"entry {pos} is" if d_seq == pos + 1 else f"entries {pos}..{d_seq - 1} are"
    msg = f"{stream} entry {pos} was removed: {gone} missing (position {pos} holds entry {d_seq})"
    return Problem(REMOVED, pos, msg), m


def _look_for(
    stream: str, pos: int, data: bytes, m: _Missing, first: Problem
) -> tuple[Problem, _Missing | None]:
    """Is the row at ``pos`` the missing entry? Then it was reordered, not removed."""
    link = _link(data)
    if isinstance(link, str) or link[1:] != (m.seq, m.prev) or link[0] != stream:
        return first, m
    msg = (
        f"{stream} entries were reordered: entry {m.seq} is at position {pos}, and "
        f"position {m.seq} holds entry {m.found}"
    )
    return Problem(REORDERED, m.seq, msg), None


def _broken_link(stream: str, pos: int, anchored: int) -> Problem:
    if pos == 0:
        msg = f"{stream} entry 0 was changed: its prev_hash is not 64 zeros"
        return Problem(CHANGED, 0, msg)
    if anchored == pos:  # entry pos-1 is vouched for by a matching signed checkpoint
        msg = (
            f"{stream} entry {pos} was changed: its prev_hash does not match entry "
            f"{pos - 1}, which a signed checkpoint vouches for"
        )
        return Problem(CHANGED, pos, msg)
    msg = (
        f"{stream} entry {pos - 1} was changed after it was sealed (its entry_hash was "
        f"recomputed): entry {pos}'s prev_hash no longer matches it"
    )
    return Problem(CHANGED, pos - 1, msg)


def _after_mismatch(
    stream: str,
    pos: int,
    link: tuple[str, int, bytes] | str,
    prev: bytes,
    cp: Checkpoint,
    anchored: int,
) -> Problem:
    """The row after a mismatched checkpoint: does its link pin the changed entry?"""
    if pos > 0 and not isinstance(link, str) and link[:2] == (stream, pos) and link[2] != prev:
        msg = (
            f"{stream} entry {pos - 1} was changed after it was sealed (its entry_hash "
            f"was recomputed): neither the signed checkpoint at size {pos} nor entry "
            f"{pos}'s prev_hash match it"
        )
        return Problem(CHANGED, pos - 1, msg)
    return _mismatch(stream, cp, anchored)


def _mismatch(stream: str, cp: Checkpoint, anchored: int) -> Problem:
    if cp.size == 0:
        msg = f"{stream}: the signed checkpoint at size 0 does not have the empty tree's root"
        return Problem(CHECKPOINT_MISMATCH, 0, msg)
    msg = (
        f"{stream}: the signed checkpoint at size {cp.size} does not match entries "
        f"0..{cp.size - 1}: one of entries {anchored}..{cp.size - 1} was changed and "
        "the chain rewritten after it"
    )
    return Problem(CHECKPOINT_MISMATCH, anchored, msg)


def _tail(
    stream: str,
    size: int,
    head: bytes,
    beyond: list[Checkpoint],
    expected_size: int | None,
    expected_head: bytes | None,
) -> Problem | None:
    """Problems visible only once every row was read: a missing tail, a changed head."""
    if beyond:
        n = beyond[-1].size
        msg = (
            f"{stream} was truncated: a signed checkpoint covers {n} entries but only "
            f"{size} exist (entries {size}..{n - 1} were removed)"
        )
        return Problem(TRUNCATED, size, msg)
    if expected_size is not None and expected_size > size:
        msg = (
            f"{stream} was truncated: the gateway's stream state records {expected_size} "
            f"entries but only {size} exist (entries {size}..{expected_size - 1} were "
            "removed)"
        )
        return Problem(TRUNCATED, size, msg)
    if expected_head is not None and expected_size == size and size and expected_head != head:
        msg = (
            f"{stream} entry {size - 1} was changed after it was sealed: it does not "
            "match the gateway's stream state record"
        )
        return Problem(CHANGED, size - 1, msg)
    return None
