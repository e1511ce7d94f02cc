"""The insights report sent on its schedule by a real gateway to a real HTTPS webhook
(tests/integration/httpapi.py, bearer token): sent at start when due, with the period's
findings and the Markdown report, and not again before it is due."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.httpapi import HttpApi
from tests.integration.pgcluster import PgCluster

pytestmark = pytest.mark.integration


def _received(api: HttpApi) -> list[dict]:
    r = httpx.get(f"{api.url}/api/collect/insights", headers=api.auth_headers(), verify=api.verify)
    return list(r.json())


def test_the_report_reaches_the_webhook_when_due(
    gateway_factory: GatewayFactory, pgc: PgCluster, https_receiver: HttpApi
) -> None:
    insights = {
        "webhook": f"{https_receiver.url}/api/collect/insights",
        "token": "env:LG_RECEIVER_TOKEN",
        "ca_file": str(https_receiver.ca_cert_path),
        "every": "7d",
    }
    gw = gateway_factory(
        [app_connection(pgc)], extra={"insights": insights},
        env={"LG_RECEIVER_TOKEN": https_receiver.token},
    ).start()  # fmt: skip
    deadline = time.monotonic() + 20
    while not _received(https_receiver) and time.monotonic() < deadline:
        time.sleep(0.2)
    (sent,) = _received(https_receiver)
    assert sent["kind"] == "ledgergate.insights"
    assert sent["until_ns"] - sent["since_ns"] == 7 * 86400 * 10**9
    assert sent["text"].startswith("# Insights") and "## Privileged commands" in sent["text"]
    assert "blocked" in sent["insights"]
    # not due again for a week: a restart sends nothing
    with psycopg.connect(gw.dsn(gw.token("alice")), autocommit=True) as c:
        c.execute("SELECT 1")
    gw.stop()
    gw.start()
    time.sleep(2)
    gw.stop()
    assert len(_received(https_receiver)) == 1
