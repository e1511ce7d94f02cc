"""Writing an evidence bundle: one zip an auditor verifies offline (``standalone.py``,
shipped in it as ``verify.py``).

For each stream with entries in the period, the bundle holds the entries from the last
signed checkpoint at or before the period's first entry to the first signed checkpoint
covering its last one (signing the stream's head first when none covers it yet), every
signed checkpoint in between, and the compact range of the leaves before the first
exported entry: with it, the verifier recomputes the Merkle root at each checkpoint from
the entries themselves. Records (access, changes, reviews, masking, blocked attempts) are
views of exported entries, each naming its entry and hash; the state files (identities,
tokens, grants, policy in force) and the report are covered by the signed manifest, which
lists every file with its SHA-256.

Streams entries through (constant memory: a few hashes per stream, counters for the
report). Reads the store; writes the bundle and, when a stream's head is not yet
signed, a checkpoint (as ``audit export --checkpoint`` does). Never reads a payload: no
result row and no masked value reaches the bundle.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.core.ledger.merkle import CompactRange, leaf_hash
from ledgergate.core.ledger.tlog_proof import InclusionCollector, TlogProof, format_tlog_proof
from ledgergate.services.audit import sign_head, stream_head
from ledgergate.services.evidence import standalone
from ledgergate.services.evidence.report import Facts, render_html
from ledgergate.store.base import CheckpointRow, Store

__all__ = ["EvidenceSummary", "export_evidence", "record_file_of"]

# The record files and the entry kinds each holds (a kind's prefix ends with a dot).
RECORDS: dict[str, tuple[str, ...]] = {
    "access": ("auth.", "login.", "session.open", "session.close", "session.terminated",
               "session.reject", "access."),
    "changes": ("token.", "identity.", "admin.", "policy.", "scim."),
    "reviews": ("review.",),
    "masking": ("mask",),
    "blocked": ("decision.block",),
}  # fmt: skip
# Fields of an entry a record leaves out (the chain's own; the entry file has them).
_CHAIN = ("prev_hash", "stream", "seq")

Progress = Callable[[int, int], None]


def record_file_of(kind: str) -> str | None:
    for name, kinds in RECORDS.items():
        if any(kind == k or (k.endswith(".") and kind.startswith(k)) for k in kinds):
            return name
    return None


@dataclass
class EvidenceSummary:
    path: Path
    streams: dict[str, tuple[int, int]] = field(default_factory=dict)  # stream -> [first, end)
    entries: int = 0
    records: dict[str, int] = field(default_factory=dict)
    signed: list[str] = field(default_factory=list)  # streams whose head this export signed


class _Zip:
    """A zip being written, with the SHA-256 of every member."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.digests: dict[str, str] = {}

    @contextmanager
    def member(self, name: str) -> Iterator[Callable[[bytes], None]]:
        h = hashlib.sha256()
        with self.zf.open(name, "w", force_zip64=True) as f:

            def write(data: bytes) -> None:
                h.update(data)
                f.write(data)

            yield write
        self.digests[name] = h.hexdigest()

    def put(self, name: str, data: bytes) -> None:
        with self.member(name) as write:
            write(data)


def _json(doc: object) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def _plan(
    store: Store, stream: str, since_ns: int | None, until_ns: int | None
) -> tuple[int, int, int]:
    """(period's first seq, period's end, stream head) of one stream."""
    head = stream_head(store, stream)
    before = store.last_seq_before(stream, since_ns) if since_ns is not None else None
    first = 0 if before is None else before + 1
    last = store.last_seq_before(stream, until_ns) if until_ns is not None else None
    end = head if until_ns is None else (0 if last is None else last + 1)
    return first, min(end, head), head


def _bounds(cps: list[CheckpointRow], a: int, b: int) -> tuple[int, CheckpointRow | None]:
    """The first exported seq (a checkpoint's size at or before ``a``) and the
    checkpoint that covers ``b``."""
    start = max((c.size for c in cps if 0 < c.size <= a), default=0)
    covering = [c for c in cps if c.size >= b and c.size > 0]
    return start, min(covering, key=lambda c: c.size) if covering else None


def export_evidence(
    store: Store,
    signer: Signer,
    out: Path,
    *,
    since_ns: int | None,
    until_ns: int | None,
    framework: str,
    state: dict[str, Any],
    now_ns: int,
    progress: Progress | None = None,
) -> EvidenceSummary:
    """Write the bundle of [since_ns, until_ns) to ``out`` (atomically); ``state``: the
    identities, tokens, grants and policy in force (``records.state_snapshot``)."""
    if since_ns is None and until_ns is None:
        streams = store.streams()
    else:
        streams = store.streams_between(since_ns, until_ns)
    summary = EvidenceSummary(out)
    plans: dict[str, tuple[int, int, int, CheckpointRow]] = {}
    for stream in streams:
        a, b, _ = _plan(store, stream, since_ns, until_ns)
        if b <= a:
            continue
        start, cover = _bounds(store.checkpoints(stream), a, b)
        if cover is None:
            if sign_head(store, stream, signer, now_ns) is not None:
                summary.signed.append(stream)
            start, cover = _bounds(store.checkpoints(stream), a, b)
        assert cover is not None  # sign_head signed the head, which covers b
        plans[stream] = (start, a, b, cover)
    total = sum(c.size - s for s, _, _, c in plans.values())
    facts = Facts(since_ns=since_ns, until_ns=until_ns, generated_ns=now_ns, framework=framework)
    tmp = out.with_name(out.name + ".partial")
    spools: dict[str, IO[bytes]] = {name: tempfile.TemporaryFile() for name in RECORDS}  # noqa: SIM115 (closed below)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            z = _Zip(zf)
            _write_all(z, store, plans, spools, facts, summary, total, progress)
            for name, spool in spools.items():
                spool.seek(0)
                with z.member(f"records/{name}.jsonl") as write:
                    while block := spool.read(1 << 20):
                        write(block)
            _finish(z, zf, signer, facts, state, framework, since_ns, until_ns, now_ns)
    finally:
        for spool in spools.values():
            spool.close()
    os.replace(tmp, out)
    summary.records = dict(facts.record_counts)
    return summary


def _write_all(
    z: _Zip,
    store: Store,
    plans: dict[str, tuple[int, int, int, CheckpointRow]],
    spools: dict[str, IO[bytes]],
    facts: Facts,
    summary: EvidenceSummary,
    total: int,
    progress: Progress | None,
) -> None:
    done = 0
    for i, (stream, (start, a, b, cover)) in enumerate(sorted(plans.items()), 1):

        def record(name: str, line: bytes) -> None:
            spools[name].write(line)

        facts.streams[stream] = _write_stream(
            z, store, stream, i, start, a, b, cover, record, facts, summary
        )
        done += cover.size - start
        if progress is not None:
            progress(done, total)


def _finish(
    z: _Zip,
    zf: zipfile.ZipFile,
    signer: Signer,
    facts: Facts,
    state: dict[str, Any],
    framework: str,
    since_ns: int | None,
    until_ns: int | None,
    now_ns: int,
) -> None:
    """The state files, the report, the key, the verifier, and the signed manifest."""
    for name, doc in state.items():
        z.put(f"state/{name}.json", _json(doc))
    facts.state = state
    z.put("report.html", render_html(facts).encode("utf-8"))
    # fpdf and its fonts take a third of a second to import: only an export pays it,
    # not every CLI command and gateway start that imports this module.
    from ledgergate.services.evidence.report_pdf import render_pdf

    z.put("report.pdf", render_pdf(facts))
    z.put("keys/ledger.vkey", (signer.vkey + "\n").encode())
    z.put("verify.py", Path(standalone.__file__).read_bytes())
    z.put("README.txt", _README.encode())
    manifest = {
        "format": standalone.FORMAT,
        "version": standalone.VERSION,
        "framework": framework,
        "period": {"since_ns": since_ns, "until_ns": until_ns},
        "generated_ns": now_ns,
        "vkey": signer.vkey,
        "streams": facts.streams,
        "records": dict(facts.record_counts),
        "files": dict(sorted(z.digests.items())),
    }
    raw = _json(manifest)
    zf.writestr(standalone.MANIFEST, raw)
    digest = hashlib.sha256(raw).hexdigest()
    note = f"{standalone.FORMAT} v{standalone.VERSION}\nsha256 {digest}\n"
    zf.writestr(standalone.SIGNATURE, signer.sign_note(note))


def _write_stream(
    z: _Zip,
    store: Store,
    stream: str,
    index: int,
    start: int,
    a: int,
    b: int,
    cover: CheckpointRow,
    record: Callable[[str, bytes], None],
    facts: Facts,
    summary: EvidenceSummary,
) -> dict[str, Any]:
    left = CompactRange()
    left.extend(store.iter_entry_hashes(stream, start))
    if left.size != start:
        raise ValueError(f"{stream}: the store lacks entries below {start} (run audit verify)")
    base = f"ledger/{index:04d}"
    entries_name, proof_name = f"{base}.jsonl", f"{base}.proof.json"
    tlog_name = f"{base}.tlog-proofs.jsonl"
    cps = [c for c in store.checkpoints(stream) if start <= c.size <= cover.size and c.size > 0]
    sizes = [c.size for c in cps]
    notes = {c.size: c.note for c in cps}
    with tempfile.TemporaryFile() as tlog:
        with z.member(entries_name) as write:
            n = _entries(
                store, stream, start, cover, a, b, write, tlog, sizes, notes, left, record, facts
            )
        tlog.seek(0)
        with z.member(tlog_name) as put:
            while block := tlog.read(1 << 20):
                put(block)
    proof = {
        "stream": stream,
        "first": start,
        "end": cover.size,
        "period": {"first": a, "end": b},
        "left": [h.hex() for h in left.hashes],
        "checkpoints": [c.note for c in cps],
    }
    z.put(proof_name, _json(proof))
    summary.streams[stream] = (start, cover.size)
    summary.entries += n
    return {
        "entries": entries_name,
        "proof": proof_name,
        "tlog_proofs": tlog_name,
        "first": start,
        "end": cover.size,
        "period": {"first": a, "end": b},
        "checkpoint": {"size": cover.size, "root": cover.root.hex(), "ts_ns": cover.ts_ns},
    }


def _entries(
    store: Store,
    stream: str,
    start: int,
    cover: CheckpointRow,
    a: int,
    b: int,
    write: Callable[[bytes], None],
    tlog: IO[bytes],
    sizes: list[int],
    notes: dict[int, str],
    left: CompactRange,
    record: Callable[[str, bytes], None],
    facts: Facts,
) -> int:
    """Write the entries [start, cover.size), the period's records, and a tlog-proof of
    each record's entry against the first signed checkpoint covering it; the count of
    entries written."""
    collector = InclusionCollector(left.copy())
    n = 0
    for seq, data, h in store.iter_entries(stream, start, cover.size):
        write(
            orjson.dumps(
                {"entry": data.decode("utf-8"), "entry_hash": h.hex(), "seq": seq,
                 "stream": stream},
                option=orjson.OPT_SORT_KEYS,
            ) + b"\n"
        )  # fmt: skip
        n += 1
        prove_in = None
        if a <= seq < b and b'"kind":"chunk"' not in data:
            doc = orjson.loads(data)
            kind = str(doc.get("kind"))
            facts.see(stream, seq, doc)
            name = record_file_of(kind)
            if name is not None:
                rec = {k: v for k, v in doc.items() if k not in _CHAIN}
                rec["entry"], rec["entry_hash"] = f"{stream}:{seq}", h.hex()
                record(name, orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n")
                facts.record_counts[name] = facts.record_counts.get(name, 0) + 1
                # the first signed checkpoint that covers it proves it
                prove_in = sizes[bisect.bisect_right(sizes, seq)]
        elif a <= seq < b:
            facts.chunks += 1
        for i, size, hashes, entry in collector.feed(h, prove_in, data if prove_in else None):
            assert entry is not None
            text = format_tlog_proof(TlogProof(i, tuple(hashes), notes[size], entry))
            tlog.write(
                orjson.dumps(
                    {"entry": f"{stream}:{i}", "entry_hash": leaf_hash(entry).hex(),
                     "tlog_proof": text},
                    option=orjson.OPT_SORT_KEYS,
                ) + b"\n"
            )  # fmt: skip
    return n


_README = """ledgergate evidence bundle
==========================

Verify it (Python 3.10+ with the `cryptography` package; no ledgergate needed):

    python3 verify.py THIS.zip --key "$(cat ledger.vkey)"

Use the gateway's verifier key as its operators published it (keys/ledger.vkey in this
bundle only proves the bundle is consistent, not where it came from).

report.html   the readable report: controls, what proves each, the ledger ranges
report.pdf    the same report as a PDF
manifest.json every file with its SHA-256, the streams and the period (signed:
              manifest.sig, a C2SP signed note over "ledgergate-evidence v1" and the
              manifest's SHA-256)
ledger/NNNN.jsonl       a stream's entries, one per line: {entry, entry_hash, seq,
                        stream}; entry is the canonical JSON that was hashed:
                        entry_hash = SHA-256(0x00 || entry) (RFC 6962 leaf)
ledger/NNNN.proof.json  first/end of the exported entries, the period inside them,
                        `left`: the compact range (perfect subtree roots, largest
                        first) of the leaves before `first`, and the signed
                        checkpoints (C2SP tlog-checkpoint notes) from `first` to `end`
ledger/NNNN.tlog-proofs.jsonl  for every record's entry: {entry, entry_hash,
                        tlog_proof}, tlog_proof an inclusion proof in the C2SP
                        tlog-proof format (c2sp.org/tlog-proof@v1) against the first
                        signed checkpoint covering the entry, the entry itself in its
                        `extra` line: save one as a .tlog-proof file and it stands alone
                        (`ledgergate audit verify-proof FILE --key KEY` checks it)
records/*.jsonl  access, changes (tokens, identities, grants, policy), reviews,
                 masking, blocked: entries of the period, each naming its entry
                 ("stream:seq") and entry_hash
state/*.json     identities, tokens (no secrets), grants and policy in force at export
keys/ledger.vkey the key the manifest and checkpoints were signed with
"""
