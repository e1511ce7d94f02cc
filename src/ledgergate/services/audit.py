"""Audit use-cases: verify the store or a bundle, export bundles, inclusion and
consistency proofs. Shared by the CLI and the API; reads only digests and entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ledgergate.core.ledger.chain import StreamState
from ledgergate.core.ledger.checkpoint import Verifier, parse_checkpoint
from ledgergate.core.ledger.verify import (
    StreamReport,
    build_consistency_document,
    build_inclusion_document,
    verify_stream,
)
from ledgergate.store.sqlite import SqliteStore

__all__ = ["AuditReport", "export_jsonl", "prove_consistency", "prove_inclusion",
           "verify_bundle", "verify_store"]


@dataclass
class AuditReport:
    streams: list[StreamReport] = field(default_factory=list)
    trusted_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.streams)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "trusted_keys": self.trusted_keys,
            "streams": [{
                "stream": s.stream, "entries": s.entries, "checkpoints_verified": s.checkpoints_verified,
                "latest_checkpoint_size": s.latest_checkpoint.size if s.latest_checkpoint else None,
                "problems": [{"kind": p.kind, "seq": p.seq, "message": p.message} for p in s.problems],
            } for s in self.streams],
        }


def verify_store(store: SqliteStore, verifiers: list[Verifier]) -> AuditReport:
    rep = AuditReport(trusted_keys=[v.vkey for v in verifiers])
    states = store.stream_states()
    for stream in store.streams():
        size_head = states.get(stream)
        exp_size = exp_head = None
        if size_head is not None:
            st = StreamState.from_record(stream, size_head[1])
            exp_size, exp_head = st.size, st.head_hash
        notes = [n for _, _, n in store.checkpoints(stream)]
        rep.streams.append(verify_stream(stream, store.iter_entries(stream), notes, verifiers,
                                         expected_size=exp_size, expected_head=exp_head))
    return rep


def export_jsonl(store: SqliteStore, out: IO[str], vkeys: list[str], *,
                 since_ns: int | None = None, until_ns: int | None = None) -> int:
    """Write a bundle. Whole streams are exported (a chain verifies only from its start);
    ``since``/``until`` select the streams that have entries in that window."""
    out.write(json.dumps({"type": "ledgergate-bundle", "version": 1, "vkeys": vkeys}) + "\n")
    n = 0
    for stream in store.streams():
        if since_ns is not None or until_ns is not None:
            hit = store.query_entries("stream=? AND ts_ns>=? AND ts_ns<? LIMIT 1",
                                      (stream, since_ns or 0, until_ns or 2**63 - 1))
            if not hit:
                continue
        for seq, data, h in store.iter_entries(stream):
            out.write(json.dumps({"type": "entry", "stream": stream, "seq": seq,
                                  "entry_hash": h.hex(), "entry": data.decode("utf-8")},
                                 ensure_ascii=False) + "\n")
            n += 1
        for size, _, note in store.checkpoints(stream):
            out.write(json.dumps({"type": "checkpoint", "stream": stream, "size": size,
                                  "note": note}) + "\n")
    return n


def _bundle_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except ValueError:
                raise ValueError(f"{path}:{i}: not a JSON line") from None


def verify_bundle(path: Path, verifiers: list[Verifier] | None = None) -> AuditReport:
    lines = _bundle_lines(path)
    head = next(lines, None)
    if not head or head.get("type") != "ledgergate-bundle":
        raise ValueError(f"{path} is not a ledgergate bundle")
    if verifiers is None:
        verifiers = [Verifier.from_vkey(k) for k in head.get("vkeys", [])]
    entries: dict[str, list[tuple[int, bytes, bytes]]] = {}
    notes: dict[str, list[str]] = {}
    for d in lines:
        if d.get("type") == "entry":
            entries.setdefault(d["stream"], []).append(
                (int(d["seq"]), d["entry"].encode("utf-8"), bytes.fromhex(d["entry_hash"])))
        elif d.get("type") == "checkpoint":
            notes.setdefault(d["stream"], []).append(d["note"])
    rep = AuditReport(trusted_keys=[v.vkey for v in verifiers])
    for stream in sorted(set(entries) | set(notes)):
        rows = entries.get(stream, [])  # in file order: a reordered bundle must be caught
        rep.streams.append(verify_stream(stream, rows, notes.get(stream, []), verifiers))
    return rep


def _covering_checkpoint(store: SqliteStore, stream: str, min_size: int,
                         verifiers: list[Verifier]) -> tuple[int, str]:
    for size, _, note in reversed(store.checkpoints(stream)):
        if size >= min_size:
            parse_checkpoint(note, verifiers)
            return size, note
    raise LookupError(f"no signed checkpoint of {stream} covers entry {min_size - 1} yet "
                      "(the gateway signs one every few seconds and at shutdown)")


def prove_inclusion(store: SqliteStore, stream: str, seq: int, verifiers: list[Verifier]) -> dict[str, Any]:
    data = store.entry(stream, seq)
    if data is None:
        raise LookupError(f"no entry {stream}:{seq}")
    size, note = _covering_checkpoint(store, stream, seq + 1, verifiers)
    return build_inclusion_document(stream, seq, data, store.leaf_hashes(stream, size), note, size)


def prove_consistency(store: SqliteStore, stream: str, old: int, new: int,
                      verifiers: list[Verifier]) -> dict[str, Any]:
    cps = {size: note for size, _, note in store.checkpoints(stream)}
    if old not in cps or new not in cps:
        raise LookupError(f"{stream} has signed checkpoints at sizes {sorted(cps)}; pick two of them")
    return build_consistency_document(stream, store.leaf_hashes(stream, new), cps[old], old, cps[new], new)
