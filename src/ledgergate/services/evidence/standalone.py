#!/usr/bin/env python3
"""Verify a ledgergate evidence bundle offline, without ledgergate.

    python3 verify.py evidence.zip --key 'ledgergate/gw+1a2b3c4d+AW…'   [--json]

Needs Python 3.10+ and the ``cryptography`` package, nothing else. Exit status 0 when the
bundle verifies with the given key, 1 when it does not (every problem is named), 2 when it
cannot be read. This file is shipped inside every bundle as ``verify.py``; ledgergate's own
``evidence verify`` runs the same code.

What it checks, and how (the formats are described in the bundle's README.txt):

1. ``manifest.sig`` is a signed note (https://c2sp.org/signed-note) by the given key over
   the SHA-256 of ``manifest.json``; every file the manifest lists is in the bundle with
   that SHA-256, and no other file is.
2. For every ledger stream, ``ledger/<n>.jsonl`` holds entries ``first .. end-1`` in order.
   Each entry's hash is SHA-256(0x00 || its bytes) (RFC 6962 leaf); each entry names its
   stream and seq, and holds the hash of the one before it.
3. The entries are leaves of the stream's Merkle tree (RFC 6962): starting from the
   compact range of the first ``first`` leaves (the ``left`` hashes of the proof file),
   each entry is appended, and at each size where the bundle holds a checkpoint
   (https://c2sp.org/tlog-checkpoint, signed by the given key) the root must be the
   signed root. The compact range itself is proved by the checkpoint at size ``first``
   (unless ``first`` is 0), and the last checkpoint is at size ``end``. An entry that
   retention pruned is a stub (``{"kind", "pruned", "seq", "stream", "ts_ns"}``): its
   entry_hash is taken as its leaf, and the count of such entries is reported.
4. Every record (``records/*.jsonl``) names an exported entry and its hash, which must
   match.
5. Every record's entry has an inclusion proof (``ledger/<n>.tlog-proofs.jsonl``) in the
   C2SP tlog-proof format (https://c2sp.org/tlog-proof) with the entry in its ``extra``
   line: the entry hashes to the hash the line names (which must be the exported entry's),
   it names the proof's stream and index, and the RFC 9162 inclusion proof leads from it
   to the root of a checkpoint signed by the given key.

Any edit, removal, reordering or truncation of an entry, a checkpoint, a proof or a file
breaks one of these and is named.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "ledgergate-evidence"
VERSION = 1
DASH = "\u2014"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# A manifest (file list and streams) this large is not one ledgergate wrote.
MAX_MANIFEST = 64 << 20
# Problems named per stream before the rest are counted only.
MAX_PROBLEMS = 50


class Unreadable(Exception):
    """The bundle cannot be read at all."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: int = 0
    records: int = 0
    tlog_proofs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "streams": self.streams,
            "files": self.files,
            "records": self.records,
            "tlog_proofs": self.tlog_proofs,
        }


# -- keys and signed notes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    name: str
    key_id: bytes
    public: Ed25519PublicKey


def parse_vkey(vkey: str) -> Key:
    """``<name>+<8 hex key id>+<base64(0x01 || Ed25519 public key)>``."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8:
        raise ValueError("a verifier key reads <name>+<8 hex digits>+<base64 key>")
    name, kid, blob = parts
    try:
        raw = base64.b64decode(blob, validate=True)
        want = bytes.fromhex(kid)
    except (binascii.Error, ValueError):
        raise ValueError("malformed verifier key") from None
    if len(raw) != 33 or raw[0] != 0x01:
        raise ValueError("the verifier key is not an Ed25519 key")
    got = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if got != want:
        raise ValueError("the verifier key's id does not match its key")
    return Key(name, want, Ed25519PublicKey.from_public_bytes(raw[1:]))


def open_note(note: str, key: Key) -> str:
    """The text of a note signed by ``key``; ValueError saying why not."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise ValueError("not a signed note")
    body, block = note[: split + 1], note[split + 2 : -1]
    for line in block.split("\n"):
        fields = line[2:].split(" ") if line.startswith(DASH + " ") else []
        if len(fields) != 2:
            raise ValueError("malformed signature line")
        try:
            raw = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a signature is not base64") from None
        if fields[0] != key.name or raw[:4] != key.key_id:
            continue
        try:
            key.public.verify(raw[4:], body.encode("utf-8"))
        except InvalidSignature:
            raise ValueError(f"the signature of {key.name} is invalid") from None
        return body
    raise ValueError(f"not signed by {key.name}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    ts_ns: int


def parse_checkpoint(note: str, key: Key) -> Checkpoint:
    body = open_note(note, key)
    lines = body.split("\n")[:-1]
    if len(lines) < 4 or not lines[1].isdigit():
        raise ValueError("not a checkpoint")
    ts = [int(x[10:]) for x in lines[3:] if x.startswith("timestamp ") and x[10:].isdigit()]
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32 or len(ts) != 1:
        raise ValueError("not a checkpoint")
    return Checkpoint(lines[0], int(lines[1]), root, ts[0])


# -- RFC 6962 Merkle tree ----------------------------------------------------------------
def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


class CompactRange:
    """The roots of the perfect subtrees covering leaves [0, size), largest first."""

    def __init__(self, size: int, hashes: list[bytes]) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} has {bin(size).count('1')} hashes")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        h, size = leaf, self.size
        while size & 1:
            h = hashlib.sha256(b"\x01" + self.hashes.pop() + h).digest()
            size >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return hashlib.sha256(b"").digest()
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = hashlib.sha256(b"\x01" + left + h).digest()
        return h


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


TLOG_PROOF = "c2sp.org/tlog-proof@v1"


class _TlogProofs:
    """Checks tlog-proof lines; each checkpoint note is verified once."""

    def __init__(self, key: Key) -> None:
        self.key, self.count = key, 0
        self.notes: dict[str, Checkpoint] = {}

    def __call__(self, d: dict[str, Any], stream: str, seq: int) -> None:
        head, sep, note = str(d["tlog_proof"]).partition("\n\n")
        lines = head.split("\n")
        if not sep or lines[0] != TLOG_PROOF or len(lines) < 3:
            raise ValueError("not a tlog-proof")
        if not lines[1].startswith("extra ") or not lines[2].startswith("index "):
            raise ValueError("the tlog-proof lacks its entry or its index")
        try:
            entry = base64.b64decode(lines[1][6:], validate=True)
            hashes = [base64.b64decode(x, validate=True) for x in lines[3:]]
        except (binascii.Error, ValueError):
            raise ValueError("the tlog-proof is not base64 where it must be") from None
        if lines[2][6:] != str(seq) or any(len(h) != 32 for h in hashes):
            raise ValueError(f"the tlog-proof is not for entry {seq}, or is damaged")
        cp = self.notes.get(note)
        if cp is None:
            cp = parse_checkpoint(note, self.key)
            if len(self.notes) > 4096:
                self.notes.clear()
            self.notes[note] = cp
        leaf = leaf_hash(entry)
        if leaf.hex() != d["entry_hash"]:
            raise ValueError("the entry in the tlog-proof is not the one the line names")
        doc = json.loads(entry)
        if cp.origin != stream or doc.get("stream") != stream or doc.get("seq") != seq:
            raise ValueError("the tlog-proof's checkpoint or entry is for another entry")
        if not verify_inclusion(leaf, seq, cp.size, hashes, cp.root):
            raise ValueError(f"the tlog-proof does not lead to the signed root of size {cp.size}")
        self.count += 1


# -- the bundle ---------------------------------------------------------------------------
def _sha256_of(zf: zipfile.ZipFile, name: str) -> str:
    h = hashlib.sha256()
    with zf.open(name) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lines(zf: zipfile.ZipFile, name: str) -> Iterator[tuple[int, bytes]]:
    with zf.open(name) as f:
        for n, line in enumerate(f, 1):
            yield n, line.rstrip(b"\n")


def _manifest(zf: zipfile.ZipFile, key: Key, rep: Report) -> dict[str, Any] | None:
    names = set(zf.namelist())
    if MANIFEST not in names or SIGNATURE not in names:
        rep.problems.append(f"{MANIFEST} or {SIGNATURE} is missing: not an evidence bundle")
        return None
    if zf.getinfo(MANIFEST).file_size > MAX_MANIFEST:
        rep.problems.append(f"{MANIFEST} is too large to be ledgergate's")
        return None
    raw = zf.read(MANIFEST)
    try:
        signed = open_note(zf.read(SIGNATURE).decode("utf-8"), key)
    except (ValueError, UnicodeDecodeError) as e:
        rep.problems.append(f"{SIGNATURE}: {e}")
        return None
    want = f"{FORMAT} v{VERSION}\nsha256 {hashlib.sha256(raw).hexdigest()}\n"
    if signed != want:
        rep.problems.append(f"{MANIFEST} was changed after it was signed ({SIGNATURE})")
        return None
    doc: dict[str, Any] = json.loads(raw)
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        rep.problems.append(f"{MANIFEST} is not a version-{VERSION} evidence manifest")
        return None
    files = doc.get("files", {})
    for name, digest in sorted(files.items()):
        if name not in names:
            rep.problems.append(f"{name} is missing from the bundle")
        elif _sha256_of(zf, name) != digest:
            rep.problems.append(f"{name} was changed (its SHA-256 is not the manifest's)")
    for name in sorted(names - set(files) - {MANIFEST, SIGNATURE}):
        if not name.endswith("/"):
            rep.problems.append(f"{name} is not listed in the manifest (added?)")
    rep.files = len(files)
    return doc


class _Records:
    """The record files, read alongside the entries in the order the bundle writes both
    (streams by name, entries by seq): each record's entry is checked as the entries
    stream by, holding one line per record file, whatever the bundle's size. A record
    out of that order, or naming an entry the bundle lacks, is named."""

    def __init__(
        self,
        zf: zipfile.ZipFile,
        names: list[str],
        rank: dict[str, int],
        rep: Report,
        proofs: _TlogProofs,
    ) -> None:
        self.rank, self.rep, self.count, self.more = rank, rep, 0, 0
        self.proofs = proofs
        self.cursors: list[list[Any]] = []
        for name in names:
            cursor: list[Any] = [name, _lines(zf, name), None]
            self._advance(cursor)
            self.cursors.append(cursor)

    def _advance(self, c: list[Any]) -> None:
        for n, line in c[1]:
            try:
                d = json.loads(line)
                stream, _, seq = str(d["entry"]).rpartition(":")
                c[2] = (self.rank.get(stream, -1), int(seq), stream, str(d["entry_hash"]), n)
            except (ValueError, KeyError, TypeError):
                self.rep.problems.append(f"{c[0]} line {n} does not name its entry")
                continue
            if c[0].endswith(".tlog-proofs.jsonl"):
                try:
                    self.proofs(d, stream, int(seq))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    self._problem(f"{c[0]} line {n}: entry {stream}:{seq}: {e}")
                    continue
            else:
                self.count += 1
            return
        c[2] = None

    def see(self, stream: str, seq: int, entry_hash: str) -> None:
        key = (self.rank[stream], seq)
        for c in self.cursors:
            while c[2] is not None and (c[2][0], c[2][1]) <= key:
                _, s, st, digest, n = c[2]
                if (c[2][0], s) != key:
                    self._problem(
                        f"{c[0]} line {n}: entry {st}:{s} is not in the bundle "
                        "(or the record is out of order)"
                    )
                elif digest != entry_hash:
                    self._problem(f"{c[0]} line {n}: entry {st}:{s} has another hash")
                self._advance(c)

    def _problem(self, msg: str) -> None:
        # one misplaced record puts the ones after it out of step too: name the first
        if sum(p.startswith("records/") for p in self.rep.problems) < MAX_PROBLEMS:
            self.rep.problems.append(msg)
        else:
            self.more += 1

    def finish(self) -> None:
        for c in self.cursors:
            while c[2] is not None:
                _, s, st, _, n = c[2]
                self._problem(f"{c[0]} line {n}: entry {st}:{s} is not in the bundle")
                self._advance(c)
        if self.more:
            self.rep.problems.append(f"records: {self.more} more records out of step")


def _stream(
    zf: zipfile.ZipFile,
    key: Key,
    stream: str,
    meta: dict[str, Any],
    records: _Records,
    rep: Report,
) -> None:
    problems: list[str] = []

    def bad(msg: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(f"{stream}: {msg}")

    names = set(zf.namelist())
    entries_file, proof_file = meta.get("entries"), meta.get("proof")
    if entries_file not in names or proof_file not in names:
        rep.problems.append(f"{stream}: its entries or its proof file is missing")
        return
    proof = json.loads(zf.read(proof_file))
    first, end = int(proof["first"]), int(proof["end"])
    cps: dict[int, Checkpoint] = {}
    for i, note in enumerate(proof.get("checkpoints", []), 1):
        try:
            cp = parse_checkpoint(note, key)
        except ValueError as e:
            bad(f"checkpoint #{i} of the proof: {e}")
            continue
        if cp.origin != stream:
            bad(f"checkpoint #{i} is signed for {cp.origin!r}")
            continue
        cps[cp.size] = cp
    if end not in cps:
        bad(f"no signed checkpoint at the end of the exported entries (size {end})")
    try:
        tree = CompactRange(first, [bytes.fromhex(h) for h in proof.get("left", [])])
    except ValueError as e:
        rep.problems.append(f"{stream}: the proof's left hashes are damaged: {e}")
        return
    if first > 0:
        if first not in cps:
            bad(f"no signed checkpoint at the first exported entry (size {first})")
        elif tree.root() != cps[first].root:
            bad(f"the proof's left hashes do not give the checkpoint at size {first}")
    prev: bytes | None = None
    pruned = 0
    matched = 1 if first in cps and first > 0 else 0
    for n, line in _lines(zf, entries_file):
        try:
            d = json.loads(line)
            seq, data = int(d["seq"]), d["entry"].encode("utf-8")
            given = bytes.fromhex(d["entry_hash"])
            doc = json.loads(data)
        except (ValueError, KeyError, TypeError, AttributeError):
            bad(f"{entries_file} line {n} is not an entry line (altered?)")
            return _done(rep, stream, problems, first, tree.size, matched, pruned)
        if seq != tree.size:
            what = "missing" if seq > tree.size else "out of order"
            bad(f"entry {tree.size} is {what} (line {n} holds entry {seq})")
            return _done(rep, stream, problems, first, tree.size, matched, pruned)
        if _is_stub(doc):
            # retention pruned it: its hash is its leaf, the roots and the next link hold
            h = given
            pruned += 1
        else:
            h = leaf_hash(data)
        if h != given:
            bad(f"entry {seq} was changed (its bytes do not hash to its entry_hash)")
        if not isinstance(doc, dict) or doc.get("stream") != stream or doc.get("seq") != seq:
            bad(f"entry {seq} does not name its own stream and seq")
        elif prev is not None and not _is_stub(doc) and doc.get("prev_hash") != prev.hex():
            bad(f"entry {seq} does not hold the hash of entry {seq - 1}")
        records.see(stream, seq, h.hex())
        prev = h
        tree.append(h)
        at = cps.get(tree.size)
        if at is not None:
            matched += 1
            if tree.root() != at.root:
                bad(f"the entries up to {tree.size} do not give the signed checkpoint's root")
    if tree.size != end:
        bad(f"the entries end at {tree.size}, the manifest says {end} (truncated?)")
    return _done(rep, stream, problems, first, tree.size, matched, pruned)


def _done(
    rep: Report,
    stream: str,
    problems: list[str],
    first: int,
    size: int,
    matched: int,
    pruned: int,
) -> None:
    rep.problems.extend(problems)
    rep.streams[stream] = {
        "first": first,
        "end": size,
        "checkpoints_matched": matched,
        "pruned": pruned,
    }


_STUB_KEYS = {"kind", "pruned", "seq", "stream", "ts_ns"}


def _is_stub(doc: object) -> bool:
    """An entry retention pruned: its place and hash kept, its content gone (ledgergate
    keeps a record of each pruning on the ledger)."""
    return isinstance(doc, dict) and set(doc) == _STUB_KEYS and isinstance(doc["pruned"], dict)


def verify(path: str, vkey: str) -> Report:
    """Verify the bundle at ``path`` with the verifier key ``vkey``."""
    rep = Report()
    try:
        key = parse_vkey(vkey)
    except ValueError as e:
        raise Unreadable(f"--key: {e}") from None
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise Unreadable(f"{path}: {e}") from None
    with zf:
        manifest = _manifest(zf, key, rep)
        if manifest is None:
            return rep
        streams = sorted(manifest.get("streams", {}).items())
        names = sorted(
            f for f in manifest.get("files", {})
            if f.startswith("records/") and f.endswith(".jsonl") and f in zf.namelist()
        )  # fmt: skip
        tlog = [str(m["tlog_proofs"]) for _, m in streams if "tlog_proofs" in m]
        names += [f for f in tlog if f in zf.namelist()]
        proofs = _TlogProofs(key)
        records = _Records(zf, names, {s: i for i, (s, _) in enumerate(streams)}, rep, proofs)
        for stream, meta in streams:
            _stream(zf, key, stream, meta, records, rep)
        records.finish()
        rep.records, rep.tlog_proofs = records.count, proofs.count
        if tlog and proofs.count != records.count:
            rep.problems.append(
                f"{records.count} records but {proofs.count} verified tlog-proofs of their entries"
            )
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Verify a ledgergate evidence bundle offline.")
    ap.add_argument("bundle")
    ap.add_argument("--key", required=True, help="the gateway's verifier key (vkey text)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    vkey = args.key
    if not vkey.count("+") >= 2:  # a file holding the key
        try:
            with open(vkey, encoding="utf-8") as f:
                vkey = f.read().strip()
        except OSError as e:
            print(f"cannot read the key: {e}", file=sys.stderr)
            return 2
    try:
        rep = verify(args.bundle, vkey)
    except Unreadable as e:
        print(str(e), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2, sort_keys=True))
    else:
        for stream, s in sorted(rep.streams.items()):
            print(
                f"stream {stream}: entries {s['first']}..{s['end'] - 1}, "
                f"{s['checkpoints_matched']} signed checkpoints matched"
            )
        for p in rep.problems:
            print(f"FAILED  {p}")
        verdict = "verifies" if rep.ok else "does NOT verify"
        print(
            f"{args.bundle} {verdict}: {rep.files} files, {rep.records} records, "
            f"{rep.tlog_proofs} tlog-proofs"
        )
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
