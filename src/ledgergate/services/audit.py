"""Audit use-cases: verify the store or an exported bundle, export bundles, build and
check inclusion and consistency proofs. Shared by the CLI and the API.

Owns what is read from where and how results are reported; the cryptographic checks are
``core.ledger.verify``'s. Reads entries and digests only, never payloads. A bundle or a
proof is trusted only through a checkpoint signed by a key the caller trusts.

Bundle format (JSON lines, UTF-8):
  {"type":"ledgergate-bundle","version":1,"vkeys":[...],"streams":{stream: entries},
   "signed":{stream: entries its last signed checkpoint covers},"range":{...}}
  {"type":"entry","stream":S,"seq":N,"entry_hash":hex,"entry":"<canonical JSON text>"}
  {"type":"checkpoint","stream":S,"size":N,"note":"<signed note>"}
Streams are exported whole from their first entry (a hash chain verifies only from its
start). A time range selects the streams with entries in it and ends each stream at the
first signed checkpoint covering the range's last entry, so every exported entry is
covered by a signature; without an end (or before a checkpoint covers the range), streams
are exported up to their head, and the entries past the last signed checkpoint are named
as not yet signed, in the header (``signed``), the export's summary and the verifier's
report (``unsigned_tail``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, overload

from ledgergate.core.ledger.chain import ChainError, StreamState, entry_link
from ledgergate.core.ledger.checkpoint import CheckpointError, Signer, Verifier
from ledgergate.core.ledger.tlog_proof import (
    TlogProof,
    TlogProofError,
    format_tlog_proof,
    verify_entry_proof,
)
from ledgergate.core.ledger.verify import (
    CHECKPOINT_SIGNATURE,
    COLUMN_MISMATCH,
    Problem,
    StreamReport,
    build_consistency_document,
    build_inclusion_document,
    verify_proof_document,
    verify_stream,
)
from ledgergate.services.journal import entry_row_of
from ledgergate.services.keys import KeyError_, verifier_from_vkey
from ledgergate.services.ledger import checkpoint_stream
from ledgergate.services.retention import verify_pruned
from ledgergate.store.base import CheckpointRow, EntryRow, Store

__all__ = [
    "BUNDLE_TYPE",
    "AuditReport",
    "ExportSummary",
    "ProofError",
    "export_jsonl",
    "prove_consistency",
    "prove_inclusion",
    "sign_head",
    "stream_head",
    "verify_bundle",
    "verify_proof",
    "verify_store",
]

BUNDLE_TYPE = "ledgergate-bundle"
BUNDLE_VERSION = 1


class ProofError(ValueError):
    """A proof that cannot be built or does not verify; the message says why."""


@dataclass
class AuditReport:
    """The result of verifying a store or a bundle."""

    streams: list[StreamReport] = field(default_factory=list)
    trusted_keys: list[str] = field(default_factory=list)
    key_source: str = ""
    errors: list[str] = field(default_factory=list)  # not tied to one stream

    @property
    def ok(self) -> bool:
        return not self.errors and all(s.ok for s in self.streams)

    @property
    def entries(self) -> int:
        return sum(s.entries for s in self.streams)

    def problems(self) -> list[Problem]:
        return [p for s in self.streams for p in s.problems]

    def first_problem(self) -> str | None:
        if self.errors:
            return self.errors[0]
        ps = self.problems()
        return ps[0].message if ps else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "trusted_keys": self.trusted_keys,
            "key_source": self.key_source,
            "errors": self.errors,
            "streams": [
                {
                    "stream": s.stream,
                    "ok": s.ok,
                    "entries": s.entries,
                    "checkpoints_verified": s.checkpoints_verified,
                    "signed_size": _signed(s),
                    # chained entries past the last signed checkpoint (not yet signed)
                    "unsigned_tail": max(s.verified_size - _signed(s), 0),
                    "pruned": dict(s.pruned),
                    "problems": [
                        {"kind": p.kind, "seq": p.seq, "message": p.message} for p in s.problems
                    ],
                }
                for s in self.streams
            ],
        }


def _signed(rep: StreamReport) -> int:
    return rep.latest_checkpoint.size if rep.latest_checkpoint else 0


def _require_signature(rep: StreamReport) -> None:
    # Without a trusted signature a stream proves nothing: anyone can build a hash chain.
    # The writer signs a checkpoint with a stream's first append, so a stream with
    # entries and no verified checkpoint lost its checkpoints or was never ours.
    if rep.ok and rep.entries and rep.checkpoints_verified == 0:
        rep.problems.append(
            Problem(
                CHECKPOINT_SIGNATURE,
                None,
                f"{rep.stream}: no checkpoint signed by a trusted key covers its "
                f"{rep.entries} entries",
            )
        )


def verify_store(
    store: Store, verifiers: Sequence[Verifier], *, key_source: str = ""
) -> AuditReport:
    """Verify every stream of the store: entries, chain, signed checkpoints, and the
    writer's own record of each stream (its state row), which catches a deleted tail
    even when its checkpoints were deleted too."""
    vs = list(verifiers)
    rep = AuditReport(trusted_keys=[v.vkey for v in vs], key_source=key_source)
    for stream in store.streams():
        try:
            srep = verify_store_stream(store, stream, vs)
        except ValueError:
            rep.errors.append(f"{stream}: the stored stream state is corrupt")
            continue
        _require_signature(srep)
        rep.streams.append(srep)
    for srep, problem in verify_pruned(store, rep.streams):
        srep.problems.append(problem)
    return rep


# -- export ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExportSummary:
    streams: dict[str, int]  # stream -> entries exported
    checkpoints: int
    # stream -> entries covered by its last exported signed checkpoint; the entries from
    # there to the stream's end are chained but not yet signed (``unsigned``)
    signed: dict[str, int] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return sum(self.streams.values())

    def unsigned(self) -> dict[str, tuple[int, int]]:
        """stream -> [first, end) of its entries no signed checkpoint covers yet."""
        return {
            s: (self.signed.get(s, 0), n)
            for s, n in self.streams.items()
            if n > self.signed.get(s, 0)
        }


def stream_head(store: Store, stream: str) -> int:
    """How many entries the stream has in the store. A gateway writes its state row
    only every few hundred entries and at checkpoints, so the head is the larger of the
    row's size and the entries actually stored (a tail deleted from the store still
    shows: the row's size is then the larger, and a verifier finds entries missing)."""
    rec = store.get_stream_state(stream)
    top = store.max_seq(stream)
    return max(
        StreamState.from_record(stream, rec).size if rec else 0,
        (top + 1) if top is not None else 0,
    )


def _export_stop(
    store: Store, stream: str, until_ns: int | None
) -> tuple[int, list[CheckpointRow]]:
    """How many entries of the stream to export, and the checkpoints within them.
    Without an end, everything the store holds: also the tail written since the last
    signed checkpoint (which the summary names), never only what a checkpoint covers."""
    head = stream_head(store, stream)
    cps = store.checkpoints(stream)
    stop = head
    if until_ns is not None:
        last_in_range = store.last_seq_before(stream, until_ns)
        if last_in_range is not None:
            covering = [c.size for c in cps if c.size > last_in_range]
            if covering:
                stop = min(min(covering), head)
    return stop, [c for c in cps if c.size <= stop]


def export_jsonl(
    store: Store,
    out: IO[str],
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    vkeys: Sequence[str] = (),
) -> ExportSummary:
    """Write a bundle (see the module docstring) of the streams with entries in
    [since_ns, until_ns) (all streams without a range)."""
    if since_ns is None and until_ns is None:
        streams = store.streams()
    else:
        streams = store.streams_between(since_ns, until_ns)
    plan = {s: _export_stop(store, s, until_ns) for s in streams}
    signed = {s: max((c.size for c in cps), default=0) for s, (_, cps) in plan.items()}
    header = {
        "type": BUNDLE_TYPE,
        "version": BUNDLE_VERSION,
        "vkeys": list(vkeys),
        "streams": {s: stop for s, (stop, _) in plan.items()},
        "signed": signed,
        "range": {"since_ns": since_ns, "until_ns": until_ns},
    }
    out.write(json.dumps(header, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    ncp = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for stream, (stop, cps) in plan.items():
        n = 0
        for seq, data, h in store.iter_entries(stream, 0, stop):
            line = {
                "type": "entry",
                "stream": stream,
                "seq": seq,
                "entry_hash": h.hex(),
                "entry": data.decode("utf-8"),
            }
            out.write(dumps(line) + "\n")
            n += 1
        for c in cps:
            out.write(
                dumps({"type": "checkpoint", "stream": stream, "size": c.size, "note": c.note})
                + "\n"
            )
            ncp += 1
        counts[stream] = n
    return ExportSummary(counts, ncp, signed)


def _bundle_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, the line's object, or None when it is not one)."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                d = json.loads(line)
            except ValueError:
                yield lineno, None
                continue
            yield lineno, d if isinstance(d, dict) else None


def _entry_row(d: dict[str, Any]) -> tuple[int, bytes, bytes]:
    return int(d["seq"]), d["entry"].encode("utf-8"), bytes.fromhex(d["entry_hash"])


def verify_bundle(path: Path, verifiers: Sequence[Verifier] | None = None) -> AuditReport:
    """Verify a bundle file. ``verifiers`` default to the keys the bundle names, which
    proves only that the bundle is internally consistent; pass the gateway's published
    key to prove it came from that gateway. The report says which key was trusted.

    Two passes over the file, in constant memory: the header and the checkpoints first
    (a stream's come after its entries), then each stream's entries straight into the
    verifier. A stream's entries are one run of lines, as export writes them: a stream
    whose lines are split by another's is named."""
    rep = AuditReport()
    notes: dict[str, list[str]] = {}
    header: dict[str, Any] | None = None
    try:
        for lineno, d in _bundle_lines(path):
            kind = d.get("type") if d is not None else None
            if lineno == 1:
                if d is None or kind != BUNDLE_TYPE or d.get("version") != BUNDLE_VERSION:
                    rep.errors.append(f"{path} is not a version-1 ledgergate bundle")
                    return rep
                header = d
            elif d is not None and kind == "checkpoint" and isinstance(d.get("note"), str):
                notes.setdefault(str(d.get("stream")), []).append(str(d["note"]))
            elif d is None or kind != "entry":
                rep.errors.append(f"{path}:{lineno}: not a valid bundle line (altered?)")
    except OSError as e:
        rep.errors.append(f"cannot read {path}: {e.strerror}")
        return rep
    if header is None:
        rep.errors.append(f"{path} is empty")
        return rep
    if verifiers is None:
        try:
            vs = [verifier_from_vkey(str(k)) for k in header.get("vkeys", [])]
        except KeyError_ as e:
            rep.errors.append(f"the bundle's verifier key is malformed: {e}")
            return rep
        rep.key_source = "the keys named in the bundle (proves consistency, not origin)"
    else:
        vs = list(verifiers)
        rep.key_source = "the given key"
    rep.trusted_keys = [v.vkey for v in vs]
    if not vs:
        rep.errors.append("no verifier key: the bundle names none; pass --key")
    expected = header.get("streams")
    sizes: dict[str, Any] = expected if isinstance(expected, dict) else {}
    reports: dict[str, StreamReport] = {}

    def entry_lines() -> Iterator[tuple[str, int, dict[str, Any]]]:
        for lineno, d in _bundle_lines(path):
            if d is not None and d.get("type") == "entry":
                yield str(d.get("stream")), lineno, d

    for stream, group in itertools.groupby(entry_lines(), key=lambda x: x[0]):
        if stream in reports:
            rep.errors.append(f"{stream}: its entries are split by another stream's (reordered?)")
            for _ in group:
                pass
            continue

        def rows(
            g: Iterator[tuple[str, int, dict[str, Any]]] = group,
        ) -> Iterator[tuple[int, bytes, bytes]]:
            for _, lineno, d in g:
                try:
                    yield _entry_row(d)
                except (ValueError, KeyError, TypeError, AttributeError):
                    rep.errors.append(f"{path}:{lineno}: not a valid bundle line (altered?)")

        exp = sizes.get(stream)
        reports[stream] = verify_stream(
            stream, rows(), notes.get(stream, []), vs,
            expected_size=exp if isinstance(exp, int) else None,
        )  # fmt: skip
    for stream in set(notes) | set(sizes):
        if stream not in reports:
            exp = sizes.get(stream)
            reports[stream] = verify_stream(
                stream, [], notes.get(stream, []), vs,
                expected_size=exp if isinstance(exp, int) else None,
            )  # fmt: skip
    for stream in sorted(reports):
        _require_signature(reports[stream])
        rep.streams.append(reports[stream])
    return rep


def sign_head(store: Store, stream: str, signer: Signer, now_ns: int) -> str | None:
    """Sign a checkpoint of the stream's stored head, after verifying the whole stream
    with the signer's key (a key holder other than the stream's writer must not put its
    signature on entries it has not checked). Returns the note, or None if the head is
    already signed. Raises ``ProofError`` if the stream does not verify."""
    last = store.latest_checkpoint(stream)
    size = stream_head(store, stream)
    if size == 0 or (last is not None and last.size >= size):
        return None
    rep = verify_store_stream(store, stream, [signer.verifier])
    if not rep.ok:
        raise ProofError(f"refusing to sign {stream}: {rep.problems[0].message}")
    return checkpoint_stream(store, stream, signer, now_ns)


def verify_store_stream(store: Store, stream: str, verifiers: Sequence[Verifier]) -> StreamReport:
    """Verify one stream of the store (see ``verify_store``): the entries themselves,
    and the store's search columns of each intact entry against the entry (a column
    edited in the database would make searches lie while every hash still holds)."""
    exp_size = exp_head = None
    rec = store.get_stream_state(stream)
    if rec is not None:
        st = StreamState.from_record(stream, rec)
        exp_size, exp_head = st.size, st.head_hash
    notes = [c.note for c in store.checkpoints(stream)]
    columns: list[Problem] = []

    def rows() -> Iterable[tuple[int, bytes, bytes]]:
        for r in store.iter_entry_rows(stream):
            if len(columns) < MAX_COLUMN_PROBLEMS:
                p = column_problem(stream, r)
                if p is not None:
                    columns.append(p)
            yield (r.seq if type(r.seq) is int else -1), r.canonical, r.entry_hash

    rep = verify_stream(
        stream,
        rows(),
        notes,
        list(verifiers),
        expected_size=exp_size,
        expected_head=exp_head,
    )
    rep.problems.extend(columns)
    return rep


# Column disagreements named per stream (one edit usually touches many rows).
MAX_COLUMN_PROBLEMS = 20
_COLUMNS = ("ts_ns", "kind", "session_id", "identity", "connection")


def column_problem(stream: str, row: EntryRow) -> Problem | None:
    """The first search column of an intact entry that disagrees with the entry (an
    entry whose bytes do not hold together is the chain verifier's to name)."""
    try:
        derived, _ = entry_row_of(stream, row.canonical, row.entry_hash)
    except (ChainError, ValueError):
        return None
    for col in _COLUMNS:
        stored, truth = getattr(row, col), getattr(derived, col)
        if stored != truth:
            return Problem(
                COLUMN_MISMATCH,
                derived.seq,
                f"{stream} entry {derived.seq}: the store's {col} column says {stored!r}, "
                f"the entry says {truth!r} (the column was edited)",
            )
    return None


# -- proofs ----------------------------------------------------------------------------------
class _HashArray(Sequence[bytes]):
    """Leaf hashes packed in one buffer: 32 bytes per entry instead of ~100 for a list
    of bytes objects (a proof over a 10-million-entry stream needs 320 MB, not 1 GB)."""

    def __init__(self, hashes: Iterable[bytes]) -> None:
        buf = bytearray()
        for h in hashes:
            buf += h
        self._buf = bytes(buf)

    def __len__(self) -> int:
        return len(self._buf) // 32

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._buf[i * 32 : i * 32 + 32]


def _hashes(store: Store, stream: str, size: int) -> _HashArray:
    hashes = _HashArray(store.iter_entry_hashes(stream, size))
    if len(hashes) != size:
        raise ProofError(
            f"{stream} has {len(hashes)} entries below its checkpoint of size {size}: "
            "the store was altered (run `ledgergate audit verify`)"
        )
    return hashes


def prove_inclusion(
    store: Store,
    stream: str,
    seq: int,
    *,
    verifiers: Sequence[Verifier] = (),
    signer: Signer | None = None,
    now_ns: int | None = None,
) -> dict[str, Any]:
    """An inclusion proof of entry ``stream:seq`` against the latest signed checkpoint
    covering it. When none covers it yet and ``signer`` is given, a checkpoint of the
    head is signed first. With ``verifiers`` the proof is checked before it is returned."""
    entry = store.get_entry(stream, seq)
    if entry is None:
        raise ProofError(f"no entry {stream}:{seq}")
    cp = store.latest_checkpoint(stream)
    if (cp is None or cp.size <= seq) and signer is not None:
        if now_ns is None:
            raise ValueError("now_ns is needed to sign a checkpoint")
        sign_head(store, stream, signer, now_ns)
        cp = store.latest_checkpoint(stream)
    if cp is None or cp.size <= seq:
        raise ProofError(
            f"no signed checkpoint of {stream} covers entry {seq} yet (the gateway signs one "
            "every few seconds and at shutdown; or run this with access to the ledger key)"
        )
    doc = build_inclusion_document(
        stream, seq, entry.canonical, _hashes(store, stream, cp.size), cp.note, cp.size
    )
    if verifiers:
        verify_proof(doc, verifiers)
    return doc


def as_tlog_proof(doc: dict[str, Any]) -> str:
    """An inclusion proof document (``prove_inclusion``) in the C2SP tlog-proof format,
    the entry carried in its ``extra`` line."""
    return format_tlog_proof(
        TlogProof(
            doc["seq"],
            tuple(bytes.fromhex(h) for h in doc["proof"]),
            doc["checkpoint"],
            doc["entry"].encode("utf-8"),
        )
    )


def verify_tlog_proof(text: str, verifiers: Iterable[Verifier]) -> str:
    """Check a tlog-proof offline; a one-line summary, or ``ProofError`` saying why not."""
    try:
        cp, entry = verify_entry_proof(text, list(verifiers))
    except TlogProofError as e:
        raise ProofError(str(e)) from None
    _, seq, _ = entry_link(entry)
    return (
        f"entry {cp.origin}:{seq} is included in the tree of size {cp.size} "
        f"signed at ts_ns {cp.ts_ns}"
    )


def prove_consistency(
    store: Store,
    stream: str,
    old_size: int,
    new_size: int | None = None,
    *,
    verifiers: Sequence[Verifier] = (),
) -> dict[str, Any]:
    """A consistency proof between the stream's signed checkpoints at ``old_size`` and
    ``new_size`` (default: the latest): the older tree is a prefix of the newer."""
    cps = {c.size: c for c in store.checkpoints(stream)}
    if not cps:
        raise ProofError(f"{stream} has no signed checkpoints")
    if new_size is None:
        new_size = max(cps)
    missing = [s for s in (old_size, new_size) if s not in cps]
    if missing:
        sizes = [str(s) for s in sorted(cps)]
        shown = ", ".join(sizes if len(sizes) <= 10 else [*sizes[:5], "…", *sizes[-5:]])
        raise ProofError(
            f"{stream} has no signed checkpoint at size {missing[0]}; "
            f"its checkpoints are at sizes {shown}"
        )
    if not 0 < old_size <= new_size:
        raise ProofError("the old size must be positive and not above the new size")
    old, new = cps[old_size], cps[new_size]
    doc = build_consistency_document(
        stream, _hashes(store, stream, new_size), old.note, old_size, new.note, new_size
    )
    if verifiers:
        verify_proof(doc, verifiers)
    return doc


def verify_proof(doc: Any, verifiers: Iterable[Verifier]) -> str:
    """Check an inclusion or consistency proof offline; return a one-line summary or
    raise ``ProofError`` saying what failed."""
    if not isinstance(doc, dict):
        raise ProofError("not a ledgergate proof document")
    try:
        return verify_proof_document(doc, list(verifiers))
    except CheckpointError as e:
        raise ProofError(f"the checkpoint does not verify: {e}") from None
    except (KeyError, TypeError, AttributeError, UnicodeError) as e:
        raise ProofError(f"malformed proof document ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise ProofError(str(e)) from None
