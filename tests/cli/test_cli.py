"""The ``ledgergate`` token, audit and sessions commands against real data directories
(typer's CliRunner in-process, and the installed script for the token round trip)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from ledgergate.cli._common import fmt_ns, parse_time
from ledgergate.cli.main import app
from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.services import tokens
from tests.services.synth import T0, Ledger, chunk_drafts
from tests.services.test_sessions import _ledger
from tests.storedb import StoreDb
from tests.storeserver import open_for, store_for, store_yaml

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "ledgergate.yaml"
    p.write_text("data_dir: data\ngateway_name: gw\n" + store_yaml(tmp_path / "data"))
    return p


@pytest.fixture
def led(cfg: Path) -> Ledger:
    """The gateway's ledger in the config's data directory: four sessions."""
    return _ledger(cfg.parent / "data")


def run(cfg: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "-c", str(cfg)])


# -- token -----------------------------------------------------------------------------------
def test_token_create_list_revoke(cfg: Path) -> None:
    r = run(cfg, "token", "create", "--identity", "alice", "--kind", "service", "--ttl", "8h")
    assert r.exit_code == 0, r.output
    tok = r.stdout.splitlines()[-1]
    assert tok.startswith("lgt_") and r.stdout.strip() == tok
    assert "shown once" in r.stderr and tok not in r.stderr
    st = open_for(cfg.parent / "data")
    auth = tokens.authenticate(st, tok, tokens.list_tokens(st)[0].created_ns + 1)
    assert auth.ok and auth.identity == {"kind": "service", "subject": "alice", "groups": []}

    r = run(cfg, "token", "list", "--json")
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["identity"] == "alice" and row["status"] == "active" and tok not in r.stdout
    assert "token_hash" not in row
    assert run(cfg, "token", "list").exit_code == 0

    r = run(cfg, "token", "revoke", row["id"])
    assert r.exit_code == 0 and "revoked" in r.stdout
    assert json.loads(run(cfg, "token", "list", "--json").stdout)[0]["status"] == "revoked"
    assert "already revoked" in run(cfg, "token", "revoke", row["id"]).stdout
    r = run(cfg, "token", "revoke", "tok_missing")
    assert r.exit_code == 1 and "no token" in r.stderr
    r = run(cfg, "token", "revoke", tok)
    assert r.exit_code == 1 and tok not in r.output

    # the CLI's actions are on its own verifiable stream, without the token
    r = run(cfg, "audit", "verify", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [s["stream"] for s in rep["streams"]] == ["cli@gw"]
    assert rep["streams"][0]["entries"] == 2
    db = StoreDb(*store_for(cfg.parent / "data"))
    blob = b"".join(bytes(c) for (c,) in db.execute("SELECT canonical FROM ledger_entries"))
    assert tok.encode() not in blob


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--identity", "a", "--ttl", "0s"], 2),
        (["--identity", "a", "--ttl", "400d"], 2),
        (["--identity", "a", "--ttl", "soon"], 2),
        (["--identity", "a", "--ttl", "1h", "--kind", "robot"], 2),
        (["--identity", "a"], 2),
    ],
)
def test_token_create_refusals(cfg: Path, args: list[str], code: int) -> None:
    r = run(cfg, "token", "create", *args)
    assert r.exit_code == code
    assert "lgt_" not in r.stdout


def test_token_via_the_installed_script(cfg: Path) -> None:
    exe = REPO / ".venv" / "bin" / "ledgergate"
    p = subprocess.run(
        [str(exe), "token", "create", "--identity", "ci", "--ttl", "1h", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1].startswith("lgt_")


def test_bad_config(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("data_dir: [\n")
    r = runner.invoke(app, ["token", "list", "-c", str(p)])
    assert r.exit_code == 2 and "ledgergate:" in r.stderr


# -- audit -----------------------------------------------------------------------------------
def test_audit_verify_ok_and_tampered(cfg: Path, led: Ledger) -> None:
    r = run(cfg, "audit", "verify")
    assert r.exit_code == 0, r.output
    assert "ledger verified" in r.stdout and "trusted key (local ledger key" in r.stdout
    assert led.signer.vkey in r.stdout
    db = led.db()
    (data,) = db.execute(
        "SELECT canonical FROM ledger_entries WHERE stream=? AND seq=12", (led.stream,)
    ).fetchone()
    db.set_entry(led.stream, 12, bytes(data).replace(b'"kind":"user"', b'"kind":"admin"'))
    db.commit()
    r = run(cfg, "audit", "verify")
    assert r.exit_code == 1
    assert "does NOT verify" in r.stdout and "entry 12" in r.stdout
    r = run(cfg, "audit", "verify", "--json")
    assert r.exit_code == 1
    problem = json.loads(r.stdout)["streams"][0]["problems"][0]
    assert (problem["kind"], problem["seq"]) == ("changed", 12)


@pytest.mark.parametrize("tamper", ["delete", "swap", "truncate", "truncate+checkpoints"])
def test_audit_verify_names_the_first_bad_entry(cfg: Path, led: Ledger, tamper: str) -> None:
    db = led.db()
    s = led.stream
    (last,) = db.execute("SELECT MAX(seq) FROM ledger_entries WHERE stream=?", (s,)).fetchone()
    if tamper == "delete":
        db.delete_entries(s, 9, 9)
        want = ("removed", 9)
    elif tamper == "swap":
        rows = {
            q: db.execute(
                "SELECT canonical, entry_hash FROM ledger_entries WHERE stream=? AND seq=?", (s, q)
            ).fetchone()
            for q in (5, 6)
        }
        for q, other in ((5, 6), (6, 5)):
            db.set_entry(s, q, *map(bytes, rows[other]))
        want = ("reordered", 5)
    else:
        db.delete_entries(s, last - 2)
        if tamper == "truncate+checkpoints":
            db.execute("DELETE FROM checkpoints WHERE stream=? AND size>?", (s, last - 2))
        want = ("truncated", last - 2)
    db.commit()
    r = run(cfg, "audit", "verify", "--json")
    assert r.exit_code == 1
    gw = next(x for x in json.loads(r.stdout)["streams"] if x["stream"] == s)
    assert (gw["problems"][0]["kind"], gw["problems"][0]["seq"]) == want
    r = run(cfg, "audit", "verify")
    assert r.exit_code == 1 and f"[entry {want[1]}]" in r.stdout


def test_audit_verify_with_other_key(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    other = Signer("ledgergate/gw", Ed25519PrivateKey.generate()).vkey
    r = run(cfg, "audit", "verify", "--key", other)
    assert r.exit_code == 1 and "trusted key (--key)" in r.stdout
    keyfile = tmp_path / "gw.vkey"
    keyfile.write_text(led.signer.vkey + "\n")
    assert run(cfg, "audit", "verify", "--key", str(keyfile)).exit_code == 0
    r = run(cfg, "audit", "verify", "--key", "garbage+x")
    assert r.exit_code == 2


def test_export_and_verify_bundle(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "evidence.jsonl"
    r = run(cfg, "audit", "export", "--format", "jsonl", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "exported" in r.stdout and out.exists()
    # offline: no config needed
    r = runner.invoke(app, ["audit", "verify", "--bundle", str(out)])
    assert r.exit_code == 0, r.output
    assert "keys named in the bundle" in r.stdout
    r = runner.invoke(app, ["audit", "verify", "--bundle", str(out), "--key", led.signer.vkey])
    assert r.exit_code == 0 and "trusted key (the given key)" in r.stdout
    other = Signer("ledgergate/gw", Ed25519PrivateKey.generate()).vkey
    assert (
        runner.invoke(app, ["audit", "verify", "--bundle", str(out), "--key", other]).exit_code == 1
    )

    lines = out.read_text().splitlines()
    for i, line in enumerate(lines):
        d = json.loads(line)
        if d.get("type") == "entry" and d["seq"] == 20:
            d["entry"] = d["entry"].replace('"ts_ns":', '"ts_ns":1')
            lines[i] = json.dumps(d)
            break
    out.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["audit", "verify", "--bundle", str(out)])
    assert r.exit_code == 1 and "entry 20" in r.stdout


def test_export_time_range_and_checkpoint(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "range.jsonl"
    since = fmt_ns(T0 + 90 * 10**9).replace(" ", "T")
    r = run(cfg, "audit", "export", "-o", str(out), "--since", since, "--checkpoint")
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["audit", "verify", "--bundle", str(out)]).exit_code == 0
    assert run(cfg, "audit", "export", "--format", "bogus", "-o", str(out)).exit_code == 2


def test_prove_and_verify_offline(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    proof = tmp_path / "proof.json"
    r = run(cfg, "audit", "prove", f"{led.stream}:7", "--out", str(proof))
    assert r.exit_code == 0, r.output
    doc = json.loads(proof.read_text())
    assert doc["seq"] == 7
    # offline: the proof file and the published key, nothing else
    r = runner.invoke(app, ["audit", "verify-proof", str(proof), "--key", led.signer.vkey])
    assert r.exit_code == 0, r.output
    assert "proof verified" in r.stdout
    doc["entry"] = doc["entry"].replace("alice", "mallory")
    proof.write_text(json.dumps(doc))
    r = runner.invoke(app, ["audit", "verify-proof", str(proof), "--key", led.signer.vkey])
    assert r.exit_code == 1 and "PROOF FAILED" in r.stdout
    r = run(cfg, "audit", "prove", f"{led.stream}:9999")
    assert r.exit_code == 1 and "no entry" in r.stderr
    assert run(cfg, "audit", "prove", "no-seq").exit_code == 2
    r = run(cfg, "audit", "prove", f"{led.stream}:3")  # to stdout
    assert r.exit_code == 0 and json.loads(r.stdout)["seq"] == 3


def test_prove_as_tlog_proof(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    proof = tmp_path / "e7.tlog-proof"
    r = run(cfg, "audit", "prove", f"{led.stream}:7", "--format", "tlog-proof", "-o", str(proof))
    assert r.exit_code == 0, r.output
    text = proof.read_text()
    head, _, note = text.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1" and lines[2] == "index 7"
    assert note.startswith(f"{led.stream}\n")  # the checkpoint, verbatim
    entry = json.loads(base64.b64decode(lines[1].removeprefix("extra ")))
    assert (entry["stream"], entry["seq"]) == (led.stream, 7)
    r = runner.invoke(app, ["audit", "verify-proof", str(proof), "--key", led.signer.vkey])
    assert r.exit_code == 0 and f"entry {led.stream}:7 is included" in r.stdout, r.output
    lines[3], lines[4] = lines[4], lines[3]  # two proof hashes swapped
    proof.write_text("\n".join(lines) + "\n\n" + note)
    r = runner.invoke(app, ["audit", "verify-proof", str(proof), "--key", led.signer.vkey])
    assert r.exit_code == 1 and "does not lead to the signed root" in r.stdout


def test_consistency(cfg: Path, tmp_path: Path) -> None:
    led = Ledger(cfg.parent / "data")
    led.write(chunk_drafts(30), batch=10, checkpoint_every_entries=10)
    proof = tmp_path / "c.json"
    r = run(cfg, "audit", "consistency", led.stream, "10", "30", "-o", str(proof))
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", "verify-proof", str(proof), "--key", led.signer.vkey])
    assert r.exit_code == 0 and "prefix" in r.stdout
    r = run(cfg, "audit", "verify-proof", str(proof))  # the local key
    assert r.exit_code == 0 and "local ledger key" in r.stdout
    assert json.loads(run(cfg, "audit", "consistency", led.stream, "20").stdout)["new_size"] == 30
    r = run(cfg, "audit", "consistency", led.stream, "11", "30")
    assert r.exit_code == 1 and "10, 20, 30" in r.stderr


# -- sessions --------------------------------------------------------------------------------
def test_sessions_list_and_show(cfg: Path, led: Ledger) -> None:
    r = run(cfg, "sessions", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [s["session_id"] for s in json.loads(r.stdout)] == [
        "s_dave",
        "s_carol",
        "s_bob",
        "s_alice",
    ]
    r = run(cfg, "sessions", "list", "--identity", "bob", "--json")
    assert [s["session_id"] for s in json.loads(r.stdout)] == ["s_bob"]
    r = run(cfg, "sessions", "list", "--connection", "demo", "--until", "-1h", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 3
    r = run(cfg, "sessions", "list", "--since", "2999-01-01", "--json")
    assert json.loads(r.stdout) == []
    assert run(cfg, "sessions", "list", "--since", "yesterday").exit_code == 2
    r = run(cfg, "sessions", "list")
    assert r.exit_code == 0 and "s_alice" in r.stdout

    r = run(cfg, "sessions", "show", "s_alice", "--json")
    assert r.exit_code == 0
    assert [e["kind"] for e in json.loads(r.stdout)][:3] == ["auth.ok", "session.open", "command"]
    r = run(cfg, "sessions", "show", "s_alice")
    assert r.exit_code == 0 and "command #1 query: SELECT id, name FROM users" in r.stdout
    r = run(cfg, "sessions", "show", "nope")
    assert r.exit_code == 1 and "no session" in r.stderr


def test_sessions_replay(cfg: Path, led: Ledger) -> None:
    r = run(cfg, "sessions", "replay", "s_alice", "--no-wait")
    assert r.exit_code == 0, r.output
    assert "demo=> SELECT id, name FROM users\n id | name\n----+-------\n  1 | alice" in r.stdout
    assert "(3 rows)" in r.stdout and 'ERROR:  relation "missing" does not exist' in r.stdout
    r = run(cfg, "sessions", "replay", "s_bob", "--speed", "1000")
    assert r.exit_code == 0 and "reports=> SELECT count(*)" in r.stdout
    r = run(cfg, "sessions", "replay", "nope", "--no-wait")
    assert r.exit_code == 1


# -- shared parsing --------------------------------------------------------------------------
def test_parse_time() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_time(None) is None
    assert parse_time("now", now_ns=now) == now
    assert parse_time("-1h", now_ns=now) == now - 3600 * 10**9
    assert parse_time("-30m", now_ns=now) == now - 1800 * 10**9
    assert parse_time("1970-01-01T00:00:01Z") == 10**9
    assert parse_time("1970-01-01T01:00:01+01:00") == 10**9
    assert parse_time("1970-01-02") == 86400 * 10**9
    assert parse_time("2026-11-23T10:00:00.123456") == 1_795_428_000_123_456_000
    for bad in ("-1y", "tomorrow", "2026-13-01"):
        with pytest.raises(typer.BadParameter):
            parse_time(bad)
    assert fmt_ns(10**9 + 5 * 10**6) == "1970-01-01 00:00:01.005Z" and fmt_ns(None) == "-"
