"""``audit export`` while the gateway serves (issue: an export left out every entry
written since the stream's last signed checkpoint, and said nothing). The export must hold
every session ``sessions list`` shows, and name the tail no signed checkpoint covers yet;
``--checkpoint`` signs that tail first."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.integration.fixtures import GatewayFactory

# Checkpoints the gateway signs by itself come far apart here, so the tail stays unsigned.
RARE = {"ledger": {"checkpoint_every_seconds": 3600, "checkpoint_every_entries": 100_000}}
TAIL = "not yet covered by a signed checkpoint"


def _bundle(path: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0], [json.loads(d["entry"]) for d in lines[1:] if d["type"] == "entry"]


def test_an_export_while_serving_holds_every_session_and_names_the_unsigned_tail(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory(extra=RARE).start()
    tok = gw.token("alice")
    for i in range(3):
        with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
            c.execute(f"SELECT {i}")
    gw.settle()
    listed = {r["session_id"] for r in json.loads(gw.cli("sessions", "list", "--json").stdout)}
    assert len(listed) == 3
    with gw.db() as db:
        (stored,) = db.execute(
            "SELECT count(*) FROM ledger_entries WHERE stream=?", (gw.stream,)
        ).fetchone()

    bundle = tmp_path / "live.jsonl"
    out = gw.cli("audit", "export", "-o", str(bundle)).stdout
    head, entries = _bundle(bundle)
    assert listed <= {e.get("session_id") for e in entries}
    assert head["streams"][gw.stream] == stored
    signed = head["signed"][gw.stream]
    assert 0 < signed < stored
    assert (
        f"{gw.stream}: entries {signed}..{stored - 1} ({stored - signed} entries) "
        f"are chained but {TAIL}" in out
    )
    vkey = str(gw.data_dir / "keys" / "ledger.ed25519.pub")
    r = gw.cli("audit", "verify", "--bundle", str(bundle), "--key", vkey)
    assert r.returncode == 0 and TAIL in r.stdout, r.stdout
    doc = json.loads(gw.cli("audit", "verify", "--bundle", str(bundle), "--json").stdout)
    (rep,) = [s for s in doc["streams"] if s["stream"] == gw.stream]
    assert rep["unsigned_tail"] == stored - signed

    # --checkpoint signs the head first: the same sessions, nothing left unsigned
    signed_bundle = tmp_path / "signed.jsonl"
    out = gw.cli("audit", "export", "--checkpoint", "-o", str(signed_bundle)).stdout
    head, entries = _bundle(signed_bundle)
    assert TAIL not in out and listed <= {e.get("session_id") for e in entries}
    assert head["signed"][gw.stream] == head["streams"][gw.stream] >= stored
    r = gw.cli("audit", "verify", "--bundle", str(signed_bundle), "--key", vkey)
    assert r.returncode == 0 and TAIL not in r.stdout
    # the gateway serves on and its own stream still verifies with the CLI's checkpoint
    with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
        assert c.execute("SELECT 42").fetchone() == (42,)
    gw.settle()
    assert gw.cli("audit", "verify").returncode == 0
