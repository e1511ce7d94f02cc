"""Evidence bundles on the store engine under test: a bundle verifies with the gateway's
key (through the same code it ships as verify.py), a period's bundle starts and ends at
signed checkpoints, and every tamper variant is caught and named: an entry edited,
removed, reordered or truncated, a checkpoint's signature swapped, a file inside edited,
added or dropped, the manifest edited, another key."""

from __future__ import annotations

import base64
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.config import parse_config
from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.evidence import standalone
from ledgergate.services.evidence.bundle import export_evidence
from ledgergate.services.evidence.records import state_snapshot
from tests.services.synth import T0, Ledger, chunk_drafts
from tests.services.test_sessions import S, _ledger

NOW = T0 + 10_000 * S


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    led = _ledger(tmp_path / "data")
    # more activity later, checkpointed every few entries: a period can start and end
    # between checkpoints
    drafts = [
        Draft(
            T0 + (1000 + i) * S,
            "decision.block" if i % 5 == 0 else "command",
            {
                "session_id": f"s_{i // 10}",
                "connection": "demo",
                "identity": {"kind": "user", "subject": "erin", "groups": []},
                "command": {"seq": i, "op": "query", "text": f"DELETE FROM t{i}"},
                "decision": {"action": "block", "rule": "no-delete"},
            },
        )
        for i in range(60)
    ]
    drafts += chunk_drafts(20, T0 + 1100 * S, "s_9")
    led.write(drafts, batch=4, checkpoint_every_entries=6)
    return led


def _export(led: Ledger, out: Path, **kw: object) -> None:
    st = led.store()
    try:
        state = state_snapshot(st, parse_config({}), NOW)
        export_evidence(
            st, led.signer, out, framework="all", state=state, now_ns=NOW,
            since_ns=kw.get("since_ns"), until_ns=kw.get("until_ns"),  # type: ignore[arg-type]
        )  # fmt: skip
    finally:
        st.close()


@pytest.fixture
def bundle(led: Ledger, tmp_path: Path) -> Path:
    out = tmp_path / "evidence.zip"
    _export(led, out)
    return out


def _verify(path: Path, led: Ledger) -> standalone.Report:
    return standalone.verify(str(path), led.signer.vkey)


def _rewrite(src: Path, dst: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    with zipfile.ZipFile(dst, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return dst


def _ledger_file(files: dict[str, bytes], stream: str) -> str:
    manifest = json.loads(files["manifest.json"])
    return str(manifest["streams"][stream]["entries"])


def test_a_bundle_verifies_with_the_gateways_key(led: Ledger, bundle: Path) -> None:
    rep = _verify(bundle, led)
    assert rep.ok, rep.problems
    assert set(rep.streams) == {led.stream}
    assert (
        rep.streams[led.stream]["first"] == 0 and rep.streams[led.stream]["checkpoints_matched"] > 3
    )
    assert rep.records > 0
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        report = zf.read("report.html").decode()
        blocked = zf.read("records/blocked.jsonl").decode().splitlines()
        shipped = zf.read("verify.py")
    assert {"verify.py", "report.html", "keys/ledger.vkey", "state/tokens.json"} <= names
    assert manifest["records"]["blocked"] == len(blocked) == 12
    assert all(json.loads(b)["entry"].startswith(led.stream + ":") for b in blocked)
    for control in ("CC6.1", "CC8.1", "A.5.15", "A.8.16"):
        assert f"<b>{control}</b>" in report
    assert shipped == Path(standalone.__file__).read_bytes()
    # the shipped verifier's command line says the same
    assert standalone.main([str(bundle), "--key", led.signer.vkey]) == 0


def test_a_period_starts_and_ends_at_signed_checkpoints(led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "period.zip"
    _export(led, out, since_ns=T0 + 1010 * S, until_ns=T0 + 1030 * S)
    rep = _verify(out, led)
    assert rep.ok, rep.problems
    with zipfile.ZipFile(out) as zf:
        meta = json.loads(zf.read("manifest.json"))["streams"][led.stream]
        blocked = [json.loads(x) for x in zf.read("records/blocked.jsonl").splitlines()]
    first, end = meta["first"], meta["end"]
    assert 0 < first <= meta["period"]["first"] < meta["period"]["end"] <= end
    # only the period's blocked attempts are records: i = 10, 15, 20, 25
    assert [b["command"]["text"] for b in blocked] == [
        f"DELETE FROM t{i}" for i in (10, 15, 20, 25)
    ]
    assert rep.streams[led.stream]["first"] == first and rep.streams[led.stream]["end"] == end


def _edit_entry(files: dict[str, bytes], stream: str, fn: Callable[[list[bytes]], None]) -> None:
    name = _ledger_file(files, stream)
    lines = files[name].splitlines()
    fn(lines)
    files[name] = b"".join(line + b"\n" for line in lines)


def _change_text(lines: list[bytes]) -> None:
    lines[5] = lines[5].replace(b"demo", b"prod", 1)


TAMPER: dict[str, tuple[Callable[[dict[str, bytes], str], None], list[str]]] = {
    "edit an entry": (
        lambda f, s: _edit_entry(f, s, _change_text),
        ["was changed (its SHA-256", "entry 5 was changed"],
    ),
    "remove an entry": (
        lambda f, s: _edit_entry(f, s, lambda ls: ls.pop(7)),
        ["entry 7 is missing"],
    ),
    "reorder two entries": (
        lambda f, s: _edit_entry(f, s, lambda ls: ls.insert(3, ls.pop(4))),
        ["entry 3 is missing (line 4 holds entry 4)"],
    ),
    "truncate the tail": (
        lambda f, s: _edit_entry(f, s, lambda ls: ls.__delitem__(slice(-3, None))),
        ["(truncated?)"],
    ),
}


@pytest.mark.parametrize("variant", list(TAMPER))
def test_tampered_entries_are_named(
    led: Ledger, bundle: Path, tmp_path: Path, variant: str
) -> None:
    change, wants = TAMPER[variant]
    bad = _rewrite(bundle, tmp_path / "bad.zip", lambda f: change(f, led.stream))
    rep = _verify(bad, led)
    assert not rep.ok
    text = "\n".join(rep.problems)
    for want in wants:
        assert want in text, text


def test_an_entry_rewritten_with_its_own_hash_breaks_the_signed_root(
    led: Ledger, bundle: Path, tmp_path: Path
) -> None:
    import hashlib

    def forge(files: dict[str, bytes]) -> None:
        def one(lines: list[bytes]) -> None:
            d = json.loads(lines[5])
            d["entry"] = d["entry"].replace("demo", "prod", 1)
            d["entry_hash"] = hashlib.sha256(b"\x00" + d["entry"].encode()).hexdigest()
            lines[5] = json.dumps(d).encode()

        _edit_entry(files, led.stream, one)

    rep = _verify(_rewrite(bundle, tmp_path / "bad.zip", forge), led)
    text = "\n".join(rep.problems)
    assert "do not give the signed checkpoint's root" in text
    assert "entry 6 does not hold the hash of entry 5" in text


def test_a_swapped_checkpoint_signature_is_named(led: Ledger, bundle: Path, tmp_path: Path) -> None:
    other = Signer(led.signer.name, Ed25519PrivateKey.generate())

    def swap(files: dict[str, bytes]) -> None:
        name = json.loads(files["manifest.json"])["streams"][led.stream]["proof"]
        proof = json.loads(files[name])
        body = proof["checkpoints"][1].split("\n\n")[0] + "\n"
        # another key's signature under the gateway's key name and id
        theirs = base64.b64decode(other.sign_note(body).rsplit(" ", 1)[1])
        blob = base64.b64encode(led.signer.verifier.key_id + theirs[4:]).decode()
        proof["checkpoints"][1] = f"{body}\n\u2014 {led.signer.name} {blob}\n"
        files[name] = json.dumps(proof).encode()

    rep = _verify(_rewrite(bundle, tmp_path / "bad.zip", swap), led)
    text = "\n".join(rep.problems)
    assert "checkpoint #2 of the proof: the signature of" in text and "is invalid" in text


@pytest.mark.parametrize(
    ("variant", "want"),
    [
        ("edit a record", "records/blocked.jsonl was changed"),
        ("edit the report", "report.html was changed"),
        ("drop a proof", ".proof.json is missing from the bundle"),
        ("add a file", "extra.txt is not listed in the manifest"),
        ("edit the manifest", "manifest.json was changed after it was signed"),
    ],
)
def test_files_edited_added_or_dropped_are_named(
    led: Ledger, bundle: Path, tmp_path: Path, variant: str, want: str
) -> None:
    def change(files: dict[str, bytes]) -> None:
        manifest = json.loads(files["manifest.json"])
        if variant == "edit a record":
            files["records/blocked.jsonl"] = files["records/blocked.jsonl"].replace(
                b"erin", b"nobody"
            )
        elif variant == "edit the report":
            files["report.html"] = files["report.html"].replace(b"CC6.1", b"CC6.9")
        elif variant == "drop a proof":
            del files[manifest["streams"][led.stream]["proof"]]
        elif variant == "add a file":
            files["extra.txt"] = b"planted"
        else:
            manifest["period"]["since_ns"] = 1
            files["manifest.json"] = json.dumps(manifest).encode()

    rep = _verify(_rewrite(bundle, tmp_path / "bad.zip", change), led)
    assert any(want in p for p in rep.problems), rep.problems


def test_another_key_proves_nothing(led: Ledger, bundle: Path) -> None:
    other = Signer("ledgergate/gw", Ed25519PrivateKey.generate())
    rep = standalone.verify(str(bundle), other.vkey)
    assert not rep.ok and "manifest.sig: not signed by ledgergate/gw" in rep.problems[0]


def test_unreadable_input_is_said_plainly(led: Ledger, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(standalone.Unreadable):
        standalone.verify(str(junk), led.signer.vkey)
    with pytest.raises(standalone.Unreadable, match="--key"):
        standalone.verify(str(junk), "nonsense")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("x", b"")
    rep = standalone.verify(str(empty), led.signer.vkey)
    assert not rep.ok and "not an evidence bundle" in rep.problems[0]


def test_records_are_checked_against_their_entries_even_under_a_valid_signature(
    led: Ledger, bundle: Path, tmp_path: Path
) -> None:
    """Someone holding the key re-signs a bundle whose records were shuffled and one
    pointed at an entry the bundle lacks: the records are still checked against the
    entries, and each is named."""
    import hashlib

    def reshuffle(files: dict[str, bytes]) -> None:
        lines = files["records/blocked.jsonl"].splitlines()
        lines[0], lines[1] = lines[1], lines[0]
        bogus = json.loads(lines[2])
        bogus["entry"] = f"{led.stream}:999999"
        lines[2] = json.dumps(bogus).encode()
        files["records/blocked.jsonl"] = b"".join(x + b"\n" for x in lines)
        manifest = json.loads(files["manifest.json"])
        manifest["files"]["records/blocked.jsonl"] = hashlib.sha256(
            files["records/blocked.jsonl"]
        ).hexdigest()
        raw = json.dumps(manifest).encode()
        files["manifest.json"] = raw
        note = f"ledgergate-evidence v1\nsha256 {hashlib.sha256(raw).hexdigest()}\n"
        files["manifest.sig"] = led.signer.sign_note(note).encode()

    rep = _verify(_rewrite(bundle, tmp_path / "resigned.zip", reshuffle), led)
    # line 2 now names an entry before line 1's: out of order; line 3 names none
    assert rep.problems[0].startswith("records/blocked.jsonl line 2: entry ")
    assert rep.problems[0].endswith("is not in the bundle (or the record is out of order)")
    assert (
        f"records/blocked.jsonl line 3: entry {led.stream}:999999 is not in the bundle"
        in rep.problems
    )


def test_every_records_entry_has_a_standalone_tlog_proof(led: Ledger, tmp_path: Path) -> None:
    """Each record's entry is proven (c2sp.org/tlog-proof@v1) against the first signed
    checkpoint covering it, here for a period that starts between checkpoints; each
    proof stands alone with ledgergate's own verifier too."""
    from ledgergate.core.ledger.checkpoint import Verifier
    from ledgergate.services.audit import verify_tlog_proof

    out = tmp_path / "period.zip"
    _export(led, out, since_ns=T0 + 1003 * S, until_ns=T0 + 1041 * S)
    rep = _verify(out, led)
    assert rep.ok, rep.problems
    assert rep.records >= 8 and rep.tlog_proofs == rep.records
    st = led.store()
    try:
        sizes = sorted(c.size for c in st.checkpoints(led.stream))
    finally:
        st.close()
    with zipfile.ZipFile(out) as zf:
        meta = json.loads(zf.read("manifest.json"))["streams"][led.stream]
        lines = [json.loads(x) for x in zf.read(meta["tlog_proofs"]).splitlines()]
    assert len(lines) == rep.records
    vs = [Verifier.from_vkey(led.signer.vkey)]
    for line in lines:
        seq = int(line["entry"].rpartition(":")[2])
        text = line["tlog_proof"]
        assert f"\nindex {seq}\n" in text
        covering = min(s for s in sizes if s > seq)
        assert text.split("\n\n", 1)[1].split("\n")[1] == str(covering)
        assert verify_tlog_proof(text, vs).startswith(f"entry {led.stream}:{seq} is included")


def test_a_damaged_or_missing_tlog_proof_is_named_under_a_valid_signature(
    led: Ledger, bundle: Path, tmp_path: Path
) -> None:
    import hashlib

    def resign(files: dict[str, bytes], name: str) -> None:
        manifest = json.loads(files["manifest.json"])
        manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
        raw = json.dumps(manifest).encode()
        files["manifest.json"] = raw
        note = f"ledgergate-evidence v1\nsha256 {hashlib.sha256(raw).hexdigest()}\n"
        files["manifest.sig"] = led.signer.sign_note(note).encode()

    def name_of(files: dict[str, bytes]) -> str:
        return str(json.loads(files["manifest.json"])["streams"][led.stream]["tlog_proofs"])

    def damage(files: dict[str, bytes]) -> None:
        name = name_of(files)
        lines = files[name].splitlines()
        d = json.loads(lines[3])
        head, _, note = d["tlog_proof"].partition("\n\n")
        hl = head.split("\n")
        hl[3], hl[4] = hl[4], hl[3]
        d["tlog_proof"] = "\n".join(hl) + "\n\n" + note
        lines[3] = json.dumps(d).encode()
        files[name] = b"".join(x + b"\n" for x in lines)
        resign(files, name)

    rep = _verify(_rewrite(bundle, tmp_path / "damaged.zip", damage), led)
    assert any(
        ".tlog-proofs.jsonl line 4: entry " in p and "does not lead to the signed root" in p
        for p in rep.problems
    ), rep.problems

    def drop(files: dict[str, bytes]) -> None:
        name = name_of(files)
        files[name] = b"".join(x + b"\n" for x in files[name].splitlines()[1:])
        resign(files, name)

    rep = _verify(_rewrite(bundle, tmp_path / "dropped.zip", drop), led)
    assert f"{rep.records} records but {rep.records - 1} verified tlog-proofs" in " ".join(
        rep.problems
    ), rep.problems
