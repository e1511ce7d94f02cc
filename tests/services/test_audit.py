"""Audit service: tamper detection on the SQLite file itself, bundles, proofs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.ledger.checkpoint import Signer, Verifier
from ledgergate.core.ledger.merkle import leaf_hash
from ledgergate.services import audit
from ledgergate.services.keys import verifier_from_vkey
from tests.services.synth import T0, Ledger, chunk_drafts
from tests.storeserver import ENGINE

N = 50  # entries in the gateway stream; checkpoints every 10


def _ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path)
    led.write(chunk_drafts(N), batch=10, checkpoint_every_entries=10)
    cli = led.writer("cli@gw", shared=True)
    cli.append(chunk_drafts(3, session_id="cli"), T0)
    cli.close(T0)
    return led


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return _ledger(tmp_path)


@pytest.fixture
def row_led(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """``led`` with its chunk entries as rows of their own (the layout before blocks,
    which an upgraded store still holds), for edits of a row's columns."""
    monkeypatch.setenv("LEDGERGATE_CHUNK_BLOCKS", "0")
    return _ledger(tmp_path)


def _report(led: Ledger) -> audit.AuditReport:
    st = led.store()
    try:
        return audit.verify_store(st, [led.signer.verifier])
    finally:
        st.close()


def _first(rep: audit.AuditReport) -> tuple[str, int | None]:
    assert not rep.ok
    p = rep.problems()[0]
    return p.kind, p.seq


def _sql(led: Ledger, *statements: tuple[str, tuple[Any, ...]]) -> None:
    db = led.db()
    for sql, args in statements:
        db.execute(sql, args)
    db.commit()
    db.close()


def _canonical(led: Ledger, seq: int) -> bytes:
    db = led.db()
    row = db.entry(led.stream, seq)
    db.close()
    assert row is not None
    return row[0]


def _edit(led: Ledger, seq: int, canonical: bytes | None, entry_hash: bytes | None = None) -> None:
    with led.db() as db:
        db.set_entry(led.stream, seq, canonical, entry_hash)
        db.commit()


def _delete(led: Ledger, lo: int, hi: int | None = None) -> None:
    with led.db() as db:
        db.delete_entries(led.stream, lo, hi)
        db.commit()


def test_intact_ledger_verifies(led: Ledger) -> None:
    rep = _report(led)
    assert rep.ok, rep.first_problem()
    assert {s.stream: s.entries for s in rep.streams} == {led.stream: N, "cli@gw": 3}
    gw = next(s for s in rep.streams if s.stream == led.stream)
    assert gw.checkpoints_verified == 5 and gw.latest_checkpoint is not None
    assert rep.trusted_keys == [led.signer.vkey]


def test_tamper_changed_entry(led: Ledger) -> None:
    data = _canonical(led, 17).replace(b'"rows":100', b'"rows":999')
    _edit(led, 17, data)
    assert _first(_report(led)) == ("changed", 17)
    assert "entry 17" in (_report(led).first_problem() or "")


def test_tamper_changed_entry_with_recomputed_hash(led: Ledger) -> None:
    data = _canonical(led, 17).replace(b'"rows":100', b'"rows":999')
    _edit(led, 17, data, leaf_hash(data))
    assert _first(_report(led)) == ("changed", 17)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        # replace() stores TEXT where a BLOB was
        (
            "UPDATE entries SET canonical=replace(canonical, 'forwarded', 'forwardeD') "
            "WHERE stream=? AND seq=17",
            "changed",
        ),
        ("UPDATE entries SET canonical=x'ff00fe' WHERE stream=? AND seq=17", "changed"),
        ("UPDATE entries SET entry_hash=42 WHERE stream=? AND seq=17", "changed"),
        # a text seq sorts after every number: the entry moved to the end
        ("UPDATE entries SET seq='x17' WHERE stream=? AND seq=17", "reordered"),
    ],
)
@pytest.mark.skipif(
    ENGINE != "sqlite", reason="SQLite's untyped columns only: PostgreSQL refuses these edits"
)
def test_tamper_with_column_types(row_led: Ledger, sql: str, kind: str) -> None:
    _sql(row_led, (sql, (row_led.stream,)))
    assert _first(_report(row_led)) == (kind, 17)


def test_tamper_deleted_middle_entry(led: Ledger) -> None:
    _delete(led, 23, 23)
    kind, seq = _first(_report(led))
    assert (kind, seq) == ("removed", 23)


def test_tamper_reordered_entries(led: Ledger) -> None:
    a, b = _canonical_and_hash(led, 12), _canonical_and_hash(led, 15)
    _edit(led, 12, *b)
    _edit(led, 15, *a)
    assert _first(_report(led)) == ("reordered", 12)


def _canonical_and_hash(led: Ledger, seq: int) -> tuple[bytes, bytes]:
    with led.db() as db:
        row = db.entry(led.stream, seq)
    assert row is not None
    return row


def test_tamper_truncated_tail(led: Ledger) -> None:
    _delete(led, 45)
    assert _first(_report(led)) == ("truncated", 45)


def test_tamper_truncated_tail_and_its_checkpoints(led: Ledger) -> None:
    _delete(led, 45)
    _sql(led, ("DELETE FROM checkpoints WHERE stream=? AND size>45", (led.stream,)))
    rep = _report(led)
    assert _first(rep) == ("truncated", 45)
    assert "stream state" in (rep.first_problem() or "")


def test_tamper_all_checkpoints_deleted(led: Ledger) -> None:
    _sql(led, ("DELETE FROM checkpoints WHERE stream=?", (led.stream,)))
    rep = _report(led)
    assert not rep.ok and "no checkpoint signed" in (rep.first_problem() or "")


def test_tamper_forged_checkpoint(led: Ledger) -> None:
    forger = Signer("ledgergate/gw", Ed25519PrivateKey.generate())
    from ledgergate.core.ledger.checkpoint import Checkpoint

    note = forger.sign(Checkpoint(led.stream, 60, b"\x01" * 32, T0))
    _sql(
        led,
        (
            "INSERT INTO checkpoints VALUES (?, 60, ?, ?, ?)",
            (led.stream, T0, b"\x01" * 32, note),
        ),
    )
    rep = _report(led)
    assert not rep.ok
    assert any(p.kind.startswith("checkpoint") for p in rep.problems())


def test_wrong_key_does_not_verify(led: Ledger) -> None:
    other = verifier_from_vkey(Signer("ledgergate/gw", Ed25519PrivateKey.generate()).vkey)
    st = led.store()
    rep = audit.verify_store(st, [other])
    assert not rep.ok


# -- bundles ---------------------------------------------------------------------------------
def _export(led: Ledger, path: Path, **kw: Any) -> audit.ExportSummary:
    st = led.store()
    with path.open("w", encoding="utf-8") as f:
        summary = audit.export_jsonl(st, f, vkeys=[led.signer.vkey], **kw)
    st.close()
    return summary


def test_export_and_verify_bundle(led: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "bundle.jsonl"
    summary = _export(led, path)
    assert summary.streams == {"cli@gw": 3, led.stream: N} and summary.entries == N + 3
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    assert head["type"] == "ledgergate-bundle" and head["version"] == 1
    assert head["vkeys"] == [led.signer.vkey]
    first_entry = json.loads(lines[1])
    assert set(first_entry) == {"type", "stream", "seq", "entry_hash", "entry"}
    rep = audit.verify_bundle(path)
    assert rep.ok, rep.first_problem()
    assert "bundle" in rep.key_source and rep.trusted_keys == [led.signer.vkey]
    rep = audit.verify_bundle(path, [led.signer.verifier])
    assert rep.ok and rep.key_source == "the given key"


def _edit_lines(path: Path, fn: Any) -> None:
    lines = path.read_text().splitlines()
    fn(lines)
    path.write_text("\n".join(lines) + "\n")


def _line_of(lines: list[str], stream: str, seq: int) -> int:
    for i, line in enumerate(lines):
        d = json.loads(line)
        if d.get("type") == "entry" and d["stream"] == stream and d["seq"] == seq:
            return i
    raise AssertionError("no such line")


def test_tampered_bundle_line(led: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    _export(led, path)

    def change(lines: list[str]) -> None:
        i = _line_of(lines, led.stream, 31)
        d = json.loads(lines[i])
        d["entry"] = d["entry"].replace('"rows":100', '"rows":1')
        lines[i] = json.dumps(d)

    _edit_lines(path, change)
    rep = audit.verify_bundle(path)
    assert _first(rep) == ("changed", 31)


def test_bundle_removed_and_reordered_lines(led: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    _export(led, path)
    _edit_lines(path, lambda lines: lines.pop(_line_of(lines, led.stream, 8)))
    assert _first(audit.verify_bundle(path)) == ("removed", 8)

    _export(led, path)

    def swap(lines: list[str]) -> None:
        i, j = _line_of(lines, led.stream, 4), _line_of(lines, led.stream, 6)
        lines[i], lines[j] = lines[j], lines[i]

    _edit_lines(path, swap)
    assert _first(audit.verify_bundle(path)) == ("reordered", 4)


def test_bundle_garbage_and_foreign_key(led: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    _export(led, path)
    _edit_lines(path, lambda lines: lines.insert(3, "{not json"))
    rep = audit.verify_bundle(path)
    assert not rep.ok and ":4:" in (rep.first_problem() or "")

    _export(led, path)
    other = Signer("ledgergate/gw", Ed25519PrivateKey.generate()).verifier
    assert not audit.verify_bundle(path, [other]).ok
    assert not audit.verify_bundle(tmp_path / "missing.jsonl").ok
    (tmp_path / "x.jsonl").write_text('{"type":"something-else"}\n')
    assert not audit.verify_bundle(tmp_path / "x.jsonl").ok


def test_time_range_export_verifies(led: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "range.jsonl"
    # chunk_drafts are 1 µs apart: entries 12..14 fall in this range
    summary = _export(led, path, since_ns=T0 + 12_000, until_ns=T0 + 15_000)
    # ends at the first checkpoint covering entry 14 (size 20); the CLI stream is out
    assert summary.streams == {led.stream: 20}
    rep = audit.verify_bundle(path)
    assert rep.ok, rep.first_problem()
    assert rep.streams[0].latest_checkpoint is not None
    assert rep.streams[0].latest_checkpoint.size == 20


def test_export_to_a_text_stream(led: Ledger) -> None:
    buf = io.StringIO()
    st = led.store()
    audit.export_jsonl(st, buf, since_ns=T0 + 10**12)  # nothing in range
    assert json.loads(buf.getvalue().splitlines()[0])["streams"] == {}


# -- proofs ----------------------------------------------------------------------------------
def _offline(led: Ledger) -> list[Verifier]:
    return [verifier_from_vkey(led.signer.vkey)]  # only the published key


def test_inclusion_proof_verifies_offline(led: Ledger) -> None:
    st = led.store()
    doc = audit.prove_inclusion(st, led.stream, 17, verifiers=[led.signer.verifier])
    doc = json.loads(json.dumps(doc))
    assert doc["tree_size"] == N  # the latest checkpoint covering the entry
    summary = audit.verify_proof(doc, _offline(led))
    assert f"{led.stream}:17" in summary

    bad = dict(doc, entry=doc["entry"].replace('"rows":100', '"rows":7'))
    with pytest.raises(audit.ProofError):
        audit.verify_proof(bad, _offline(led))
    proof = list(doc["proof"])
    proof[0] = "00" * 32
    with pytest.raises(audit.ProofError):
        audit.verify_proof(dict(doc, proof=proof), _offline(led))
    with pytest.raises(audit.ProofError):
        audit.verify_proof(
            dict(doc, checkpoint=doc["checkpoint"].replace("\n50\n", "\n49\n")), _offline(led)
        )
    with pytest.raises(audit.ProofError):
        audit.verify_proof(doc, [Signer("ledgergate/gw", Ed25519PrivateKey.generate()).verifier])
    with pytest.raises(audit.ProofError):
        audit.verify_proof({"type": "nonsense"}, _offline(led))
    with pytest.raises(audit.ProofError):
        audit.verify_proof([1, 2], _offline(led))
    with pytest.raises(audit.ProofError, match="no entry"):
        audit.prove_inclusion(st, led.stream, 999)


def test_inclusion_proof_needs_a_covering_checkpoint(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(checkpoint_every_entries=1000, checkpoint_every_seconds=3600)
    w.append(chunk_drafts(5), T0)  # signed at size 5
    w.append(chunk_drafts(5, T0 + 1), T0 + 1)  # not signed yet
    st = led.store()
    with pytest.raises(audit.ProofError, match="covers entry 7"):
        audit.prove_inclusion(st, led.stream, 7)
    doc = audit.prove_inclusion(st, led.stream, 7, signer=led.signer, now_ns=T0 + 2)
    assert doc["tree_size"] == 10
    audit.verify_proof(doc, _offline(led))
    # no key holder signs a stream that does not verify
    w.append(chunk_drafts(2, T0 + 3), T0 + 3)
    _delete(led, 3, 3)
    with pytest.raises(audit.ProofError, match="refusing to sign"):
        audit.prove_inclusion(st, led.stream, 11, signer=led.signer, now_ns=T0 + 4)
    w.close(T0 + 5)


def test_consistency_proof(led: Ledger) -> None:
    st = led.store()
    doc = audit.prove_consistency(st, led.stream, 10, 40, verifiers=[led.signer.verifier])
    assert "prefix" in audit.verify_proof(json.loads(json.dumps(doc)), _offline(led))
    latest = audit.prove_consistency(st, led.stream, 20)
    assert latest["new_size"] == N
    audit.verify_proof(latest, _offline(led))
    proof = list(doc["proof"])
    proof[-1] = "11" * 32
    with pytest.raises(audit.ProofError):
        audit.verify_proof(dict(doc, proof=proof), _offline(led))
    with pytest.raises(audit.ProofError):  # swapped checkpoints
        audit.verify_proof(dict(doc, old=doc["new"], new=doc["old"]), _offline(led))
    with pytest.raises(audit.ProofError, match="sizes 10, 20, 30, 40, 50"):
        audit.prove_consistency(st, led.stream, 15, 40)
    with pytest.raises(audit.ProofError, match="no signed checkpoints"):
        audit.prove_consistency(st, "nope", 1, 2)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("identity", "mallory"),
        ("kind", "session.open"),
        ("session_id", "s_other"),
        ("connection", "staging"),
        ("ts_ns", 1),
    ],
)
def test_an_edited_search_column_is_named(row_led: Ledger, column: str, value: object) -> None:
    """Every hash still holds, but a search (sessions list --identity) would lie: the
    verifier compares each column with the entry it was copied from."""
    led = row_led
    assert _report(led).ok
    _sql(led, (f"UPDATE entries SET {column}=? WHERE stream=? AND seq=9", (value, led.stream)))
    rep = _report(led)
    assert not rep.ok
    (p,) = [p for s in rep.streams for p in s.problems]
    assert p.kind == "column_mismatch" and p.seq == 9
    assert f"the store's {column} column says {value!r}" in p.message


def test_many_edited_columns_are_named_up_to_a_bound(row_led: Ledger) -> None:
    led = row_led
    _sql(led, ("UPDATE entries SET identity='mallory' WHERE stream=?", (led.stream,)))
    rep = _report(led)
    gw = next(s for s in rep.streams if s.stream == led.stream)
    assert len(gw.problems) == audit.MAX_COLUMN_PROBLEMS
    assert [p.seq for p in gw.problems] == list(range(audit.MAX_COLUMN_PROBLEMS))
