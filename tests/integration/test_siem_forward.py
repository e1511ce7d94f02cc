"""The continuous SIEM forwarder with a real gateway and a real syslog receiver (rsyslogd
over TLS): every entry but chunks reaches it as CEF, in order per stream, across a kill -9
of the gateway and its restart in the middle: nothing lost (at least once)."""

from __future__ import annotations

import re
import time

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.pgcluster import PgCluster
from tests.integration.rsyslog import Rsyslog

pytestmark = pytest.mark.integration

SEQ = re.compile(r'\[entry@32473 stream="([^"]+)" seq="(\d+)" hash="([0-9a-f]{64})"\]')


def _work(gw: object, tok: str, n: int, tag: str) -> None:
    for i in range(n):
        with psycopg.connect(gw.dsn(tok), autocommit=True) as c:  # type: ignore[attr-defined]
            c.execute(f"SELECT '{tag}', {i}")


def test_nothing_is_lost_across_a_kill_and_a_restart(
    gateway_factory: GatewayFactory, pgc: PgCluster, rsyslog: Rsyslog
) -> None:
    assert rsyslog.ca is not None
    siem = [
        {
            "type": "syslog",
            "address": f"127.0.0.1:{rsyslog.port}",
            "ca_file": str(rsyslog.ca),
            "format": "cef",
            "start_at": "beginning",
        }
    ]
    gw = gateway_factory([app_connection(pgc)], extra={"siem": siem}).start()
    tok = gw.token("alice")
    _work(gw, tok, 3, "before")
    time.sleep(1.5)  # some of it forwarded, maybe not all
    gw.kill9()
    gw.start()
    _work(gw, tok, 3, "after")
    gw.settle()
    gw.stop()  # the last entries go out as it stops
    with gw.db() as db:
        want = {
            (int(seq), bytes(h).hex())
            for seq, h, kind in db.execute(
                "SELECT seq, entry_hash, kind FROM ledger_entries WHERE stream=?", (gw.stream,)
            )
            if kind != "chunk"
        }
    deadline = time.monotonic() + 15
    while True:
        got = {(int(s), h) for st, s, h in SEQ.findall(rsyslog.received()) if st == gw.stream}
        if want <= got or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert want <= got, f"missing: {sorted(want - got)[:10]}"
    text = rsyslog.received()
    assert "CEF:0|ledgergate|ledgergate|" in text
    assert "session opened" in text and "SELECT ?, ?" in text
    # the token never travels to the SIEM
    assert tok not in text
