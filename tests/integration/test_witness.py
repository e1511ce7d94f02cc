"""Witnesses with a real gateway: every checkpoint it signs reaches a file witness and a
real syslog receiver (rsyslogd over TLS) as it is signed, the final one included, each
once across a restart; ``audit verify --witness`` checks the store against both, and
names the entries the store no longer holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.pgcluster import PgCluster
from tests.integration.rsyslog import Rsyslog
from tests.integration.s3server import S3Server

pytestmark = pytest.mark.integration


def test_checkpoints_reach_every_witness_and_the_store_is_checked_against_them(
    gateway_factory: GatewayFactory, pgc: PgCluster, rsyslog: Rsyslog, tmp_path: Path
) -> None:
    witness_file = tmp_path / "witness" / "checkpoints.jsonl"
    assert rsyslog.ca is not None
    ledger = {
        "checkpoint_every_seconds": 0.5,
        "witnesses": [
            {"type": "file", "path": str(witness_file)},
            {"type": "syslog", "address": f"127.0.0.1:{rsyslog.port}", "ca_file": str(rsyslog.ca)},
        ],
    }
    gw = gateway_factory([app_connection(pgc)], extra={"ledger": ledger}).start()
    tok = gw.token("alice")
    for i in range(3):
        with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
            c.execute(f"SELECT {i}")
        time.sleep(0.7)
    gw.stop()
    with gw.db() as db:
        signed = sorted(
            size
            for (size,) in db.execute("SELECT size FROM checkpoints WHERE stream=?", (gw.stream,))
        )
    published = [json.loads(x) for x in witness_file.read_text().splitlines()]
    mine = [p["size"] for p in published if p["stream"] == gw.stream]
    assert mine == signed and len(signed) >= 3  # each once, in order, the final one too
    deadline = time.monotonic() + 10
    while f'size="{signed[-1]}"' not in rsyslog.received() and time.monotonic() < deadline:
        time.sleep(0.1)
    got = rsyslog.received()
    for size in signed:
        assert f'stream="{gw.stream}" size="{size}"' in got

    # a restart publishes only what is new
    gw.start()
    gw.stop()
    lines = [json.loads(x) for x in witness_file.read_text().splitlines()]
    again = [p["size"] for p in lines if p["stream"] == gw.stream]
    # nothing published twice, in order, the first run's as they were
    assert again[: len(mine)] == mine and sorted(set(again)) == again

    syslog_copy = tmp_path / "received.log"
    syslog_copy.write_text(rsyslog.received())
    r = gw.cli("audit", "verify", "--witness", str(witness_file), "--witness", str(syslog_copy))
    assert r.returncode == 0, r.stdout
    assert "witnessed checkpoints of 2 streams match the store" in r.stdout

    # history cut short in the store: the witnesses still remember it
    with gw.db() as db:
        (top,) = db.execute(
            "SELECT max(seq) FROM ledger_entries WHERE stream=?", (gw.stream,)
        ).fetchone()
        db.delete_entries(gw.stream, top - 2)
        db.execute("DELETE FROM checkpoints WHERE stream=? AND size > ?", (gw.stream, top - 3))
        db.commit()
    r = gw.cli("audit", "verify", "--witness", str(witness_file), check=False)
    assert r.returncode == 1
    assert "entries were removed" in r.stdout


def test_checkpoints_as_objects_in_an_s3_bucket(
    gateway_factory: GatewayFactory, pgc: PgCluster, s3server: S3Server, tmp_path: Path
) -> None:
    """An S3 witness (versitygw here): one object per checkpoint, SigV4-signed; an auditor
    downloads the prefix and checks the store against it."""
    bucket = s3server.new_bucket("witness")
    ledger = {
        "checkpoint_every_seconds": 0.5,
        "witnesses": [
            {
                "type": "s3",
                "endpoint": s3server.endpoint,
                "bucket": bucket,
                "region": s3server.region,
                "access_key_id": s3server.access_key,
                "secret_access_key": "env:LG_WITNESS_S3_SECRET",
            }
        ],
    }
    gw = gateway_factory(
        [app_connection(pgc)], extra={"ledger": ledger},
        env={"LG_WITNESS_S3_SECRET": s3server.secret_key},
    ).start()  # fmt: skip
    tok = gw.token("alice")
    for i in range(2):
        with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
            c.execute(f"SELECT {i}")
        time.sleep(0.7)
    gw.stop()
    with gw.db() as db:
        signed = sorted(
            s for (s,) in db.execute("SELECT size FROM checkpoints WHERE stream=?", (gw.stream,))
        )
    s3 = s3server.client()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"ledgergate/checkpoints/{gw.stream}/")
    keys = [o["Key"] for o in listed["Contents"]]
    assert [int(k.rsplit("/", 1)[1].split(".")[0]) for k in keys] == signed
    copy = tmp_path / "s3-witness"
    copy.mkdir()
    for k in keys:
        s3.download_file(bucket, k, str(copy / k.replace("/", "_")))
    r = gw.cli("audit", "verify", "--witness", str(copy))
    assert r.returncode == 0 and "match the store" in r.stdout, r.stdout
    assert s3server.secret_key not in gw.log_path.read_text()
