"""Kafka in the web console: confluent-kafka produces to two partitions through the
gateway to a real broker, then an auditor opens the producer's session in Debian's
Chromium and reads its messages per partition (records, offsets, each batch with its
ledger position) and downloads a batch's inclusion proof."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.integration.console import browser_fixture, shot, sign_in_with_token
from tests.integration.gateway import free_port
from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def kgw(kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    api = free_port()
    extra = {
        "listeners": {"api": {"address": f"127.0.0.1:{api}"}},
        "roles": {"auditor": {"groups": ["audit"]}},
    }
    g = KafkaGateway(tmp_path_factory.mktemp("kconsole"), kafka_cluster, extra=extra).start()
    g.api_url = f"https://localhost:{api}"  # type: ignore[attr-defined]
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


def test_an_auditor_reads_messages_per_partition(
    kgw: KafkaGateway, browser: Any, tmp_path: Path
) -> None:
    topic = f"t-{uuid.uuid4().hex[:10]}"
    kgw.cluster.create_topic(topic, partitions=2)
    p = Producer({**kgw.conf(kgw.token("etl")), "enable.idempotence": True, "acks": "all"})
    for i in range(20):
        p.produce(topic, key=f"k{i}".encode(), value=b"v" * 100, partition=i % 2)
    assert p.flush(30) == 0
    del p  # the producer's connections close: its session ends
    kgw.indexed()
    sid = next(
        e["session_id"]
        for e in kgw.entries("chunk")
        if e["direction"] == "c2s" and e["chunk"]["topic"] == topic
    )

    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    base = kgw.api_url  # type: ignore[attr-defined]
    sign_in_with_token(page, base, kgw.token("aud", "1h", "--group", "audit"))
    page.goto(f"{base}/console/sessions/{sid}")
    rows = page.locator("table.partitions tbody tr", has_text=topic)
    assert rows.count() == 2
    produced = sorted(int(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(2))
    assert produced == [10, 10]
    rows.first.locator("summary").click()
    assert "produce" in rows.first.locator("ul").inner_text()
    shot(page, "auditor-kafka-partitions")
    batch = page.locator("table.timeline tr.kind-chunk", has_text=topic).first
    with page.expect_download() as dl:
        batch.get_by_role("link", name="proof").click()
    proof = tmp_path / "batch.tlog-proof"
    dl.value.save_as(proof)
    ok = kgw.gw.cli("audit", "verify-proof", str(proof), check=False)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    ctx.close()
