"""Object storage in the web console: a boto3 multipart upload through the gateway to a
real S3 server (versitygw), then an auditor opens the session in Debian's Chromium and
reads the upload's requests with their parts, the object's manifest (parts → object)
and the replay, and downloads an inclusion proof of one part's chunk."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from tests.integration.console import browser_fixture, shot, sign_in_with_token
from tests.integration.gateway import free_port
from tests.integration.s3gw import S3Gateway
from tests.integration.s3server import S3Server

pytestmark = pytest.mark.browser
MiB = 1 << 20


@pytest.fixture(scope="module")
def s3gw(tmp_path_factory: pytest.TempPathFactory, s3server: S3Server) -> Iterator[S3Gateway]:
    api = free_port()
    extra = {
        "listeners": {"api": {"address": f"127.0.0.1:{api}"}},
        "roles": {"auditor": {"groups": ["audit"]}},
    }
    g = S3Gateway(tmp_path_factory.mktemp("s3console"), s3server, extra=extra).start()
    g.api_url = f"https://localhost:{api}"  # type: ignore[attr-defined]
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


def test_an_auditor_reads_a_multipart_upload_and_its_manifest(
    s3gw: S3Gateway, browser: Any, tmp_path: Path
) -> None:
    bucket = s3gw.s3.new_bucket()
    src = tmp_path / "chunks.log"
    src.write_bytes(os.urandom(12 * MiB))
    c = s3gw.client(s3gw.key("etl"))
    c.upload_file(
        str(src),
        bucket,
        "logs/chunks.log",
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    deadline = time.monotonic() + 15  # the manifest entry follows the completion
    while not (
        found := [m for m in s3gw.entries("object.manifest") if m["object"]["bucket"] == bucket]
    ):
        assert time.monotonic() < deadline, "no object.manifest entry"
        time.sleep(0.2)
    manifest = found[0]
    sid = manifest["session_id"]

    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    base = s3gw.api_url  # type: ignore[attr-defined]
    token = s3gw.gw.token("aud", "user", "1h", "--group", "audit")
    sign_in_with_token(page, base, token, f"/console/sessions/{sid}")
    row = page.locator("table.timeline tr", has_text="object.manifest").first
    text = row.inner_text()
    assert f"{bucket}/logs/chunks.log" in text and "12.0 MiB" in text
    assert row.locator("ul.manifest li").count() >= 3  # its three parts, each placed
    assert "UploadPart" in page.locator("table.timeline").inner_text()
    assert "CompleteMultipartUpload" in page.locator("pre.replay").inner_text()
    shot(page, "auditor-s3-manifest")
    part = page.locator("table.timeline tr.kind-chunk").first
    with page.expect_download() as dl:
        part.get_by_role("link", name="proof").click()
    proof = tmp_path / "part.tlog-proof"
    dl.value.save_as(proof)
    ok = s3gw.gw.cli("audit", "verify-proof", str(proof), check=False)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    ctx.close()
