"""Evidence bundles from a real gateway: masked reads, a blocked DROP, a revoked token and
a disabled identity whose session was cut, exported with ``ledgergate evidence export``;
the bundle verifies with ``evidence verify`` and with the ``verify.py`` it ships, run in a
fresh virtual environment that has only ``cryptography``; no raw masked value is in any
byte of it; its records and report say what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.pgcluster import PgCluster

RAW = ["ann.lee@example.com", "4242424242424242", "bob@corp.example.org"]
POLICY = {
    "rules": [
        {"id": "mask-pii", "mask": {"detectors": ["email", "payment_card"], "function": "redact"}},
        {"id": "no-drop", "deny": {"kinds": ["ddl"]}, "message": "no DDL here"},
    ]
}
# A virtual environment with cryptography alone, as an auditor's machine would have;
# kept between runs (pip fetches the wheel once).
VERIFIER_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "ledgergate-tests/verifier-venv"
)


def _verifier_python() -> Path:
    py = VERIFIER_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VERIFIER_VENV)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "cryptography"],
            check=True,
            timeout=600,
        )
    return py


def _everything(bundle: Path) -> bytes:
    with zipfile.ZipFile(bundle) as zf:
        return b"\n".join(zf.read(n) for n in zf.namelist())


@pytest.mark.integration
def test_an_evidence_bundle_of_a_real_gateway_verifies_offline(
    gateway_factory: GatewayFactory, pgc: PgCluster, tmp_path: Path
) -> None:
    pgc.psql(
        "CREATE TABLE IF NOT EXISTS ev_people (name text, email text, card text);"
        "TRUNCATE ev_people;"
        "INSERT INTO ev_people VALUES ('Ann', 'ann.lee@example.com', '4242424242424242'),"
        "('Bob', 'bob@corp.example.org', '5555555555554444')",
        "app",
    )
    gw = gateway_factory([app_connection(pgc, recording="full")], extra={"policy": POLICY}).start()
    alice = gw.token("alice")
    with psycopg.connect(gw.dsn(alice), autocommit=True) as c:
        rows = c.execute("SELECT name, email, card FROM ev_people ORDER BY name").fetchall()
        assert all(raw not in repr(rows) for raw in RAW)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no DDL here"):
            c.execute("DROP TABLE ev_people")
    # a contractor's token revoked, then their identity disabled mid-session
    mallory = gw.token("mallory")
    rows_ = json.loads(gw.cli("token", "list", "--identity", "mallory", "--json").stdout)
    held = psycopg.connect(gw.dsn(mallory, user="mallory"), autocommit=True)
    held.execute("SELECT 1")
    gw.cli("identities", "disable", "mallory", "--reason", "offboarded")
    time.sleep(1.5)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 2")
    held.close()
    gw.cli("token", "revoke", str(rows_[-1]["id"]), check=False)
    gw.settle()

    bundle = tmp_path / "evidence.zip"
    out = gw.cli("evidence", "export", "--since", "-1h", "--quiet", "-o", str(bundle)).stdout
    assert f"wrote {bundle}" in out and "blocked" in out
    vkey_file = gw.data_dir / "keys" / "ledger.ed25519.pub"
    r = gw.cli("evidence", "verify", str(bundle), "--key", str(vkey_file))
    assert r.returncode == 0 and "verifies" in r.stdout, r.stdout

    # nothing masked leaves in the bundle, in any file
    everything = _everything(bundle)
    for raw in RAW:
        assert raw.encode() not in everything, raw
    with zipfile.ZipFile(bundle) as zf:
        blocked = [json.loads(x) for x in zf.read("records/blocked.jsonl").splitlines()]
        masking = [json.loads(x) for x in zf.read("records/masking.jsonl").splitlines()]
        changes = [json.loads(x) for x in zf.read("records/changes.jsonl").splitlines()]
        identities = json.loads(zf.read("state/identities.json"))["items"]
        report = zf.read("report.html").decode()
        zf.extract("verify.py", tmp_path)
    assert [b["decision"]["rule"] for b in blocked] == ["no-drop"]
    assert masking and all(m["identity"]["subject"] == "alice" for m in masking)
    assert {c["kind"] for c in changes} >= {"token.created", "token.revoked"}
    (m,) = [i for i in identities if i["name"] == "mallory"]
    assert m["disabled_ns"] and m["disabled_reason"] == "offboarded"
    assert m["deprovisioning_gap"]  # how long the cut took, said plainly
    assert "<b>CC6.3</b>" in report and "<b>A.8.11</b>" in report and "<svg" in report

    # the auditor's side: the shipped verify.py, with cryptography and nothing else
    py = _verifier_python()
    assert subprocess.run([str(py), "-c", "import ledgergate"], capture_output=True).returncode
    vkey = vkey_file.read_text().strip()
    ok = subprocess.run(
        [str(py), str(tmp_path / "verify.py"), str(bundle), "--key", vkey],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verifies" in ok.stdout
    # one byte changed in the bundle and the auditor's verifier names it
    with zipfile.ZipFile(bundle) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["records/blocked.jsonl"] = files["records/blocked.jsonl"].replace(b"no-drop", b"no-dr0p")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    no = subprocess.run(
        [str(py), str(tmp_path / "verify.py"), str(bad), "--key", vkey],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert no.returncode == 1 and "records/blocked.jsonl was changed" in no.stdout
