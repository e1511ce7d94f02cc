"""Checkpoints to an HTTPS witness and OCSF events to an HTTPS SIEM, from a real gateway,
received by a real HTTPS service (tests/integration/httpapi.py) that wants a bearer token:
every checkpoint and every entry arrive, and the witness's copy checks the store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.httpapi import HttpApi
from tests.integration.pgcluster import PgCluster

pytestmark = pytest.mark.integration


def test_an_https_witness_and_an_https_siem(
    gateway_factory: GatewayFactory, pgc: PgCluster, https_receiver: HttpApi, tmp_path: Path
) -> None:
    ca = str(https_receiver.ca_cert_path)
    extra = {
        "ledger": {
            "checkpoint_every_seconds": 0.5,
            "witnesses": [
                {"type": "https", "url": f"{https_receiver.url}/api/collect/witness",
                 "token": "env:LG_RECEIVER_TOKEN", "ca_file": ca},
            ],
        },
        "siem": [
            {"type": "https", "format": "ocsf", "url": f"{https_receiver.url}/api/collect/siem",
             "token": "env:LG_RECEIVER_TOKEN", "ca_file": ca, "start_at": "beginning"},
        ],
    }  # fmt: skip
    gw = gateway_factory(
        [app_connection(pgc)], extra=extra, env={"LG_RECEIVER_TOKEN": https_receiver.token}
    ).start()
    tok = gw.token("alice")
    for i in range(3):
        with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
            c.execute(f"SELECT {i}")
    gw.settle()
    gw.stop()

    def bodies(name: str) -> list:
        r = httpx.get(
            f"{https_receiver.url}/api/collect/{name}", headers=https_receiver.auth_headers(),
            verify=https_receiver.verify,
        )  # fmt: skip
        return list(r.json())

    with gw.db() as db:
        signed = sorted(
            s for (s,) in db.execute("SELECT size FROM checkpoints WHERE stream=?", (gw.stream,))
        )
        entries = {
            int(seq)
            for seq, kind in db.execute(
                "SELECT seq, kind FROM ledger_entries WHERE stream=?", (gw.stream,)
            )
            if kind != "chunk"
        }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        witnessed = [b for b in bodies("witness") if b["stream"] == gw.stream]
        events = [e for batch in bodies("siem") for e in batch]
        if [w["size"] for w in witnessed] == signed and entries <= {
            e["unmapped"]["ledgergate"]["seq"]
            for e in events
            if e["unmapped"]["ledgergate"]["stream"] == gw.stream
        }:
            break
        time.sleep(0.2)
    assert [w["size"] for w in witnessed] == signed
    ours = [e for e in events if e["unmapped"]["ledgergate"]["stream"] == gw.stream]
    assert entries <= {e["unmapped"]["ledgergate"]["seq"] for e in ours}
    assert {e["class_uid"] for e in ours} >= {3002, 3003, 6005}
    # the witness's copy checks the store
    copy = tmp_path / "witness.jsonl"
    copy.write_text("".join(json.dumps(w) + "\n" for w in witnessed))
    r = gw.cli("audit", "verify", "--witness", str(copy))
    assert r.returncode == 0 and "match the store" in r.stdout, r.stdout
