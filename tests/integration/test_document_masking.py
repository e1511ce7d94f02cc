"""Masking in flight on HTTP APIs and S3 reads: JSON field rules and content detectors
applied before the answer leaves the gateway; what cannot be masked is refused, never
passed raw; a ``mask`` entry per answer, and the answer's chunk entry carries the digest
of what the backend sent and of what the client got."""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator

import botocore.exceptions
import httpx
import pytest

from tests.integration.httpapi import HttpApi
from tests.integration.s3gw import S3Gateway
from tests.integration.s3server import S3Server

RULES = [
    {
        "id": "pii",
        "connections": ["logs", "api"],
        "except_groups": ["privacy-officers"],
        "mask": {
            "fields": ["$.users[*].email", "email"],
            "detectors": ["payment_card"],
            "function": "partial",
            "keep_domain": True,
        },
    }
]


@pytest.fixture(scope="module")
def api() -> Iterator[HttpApi]:
    with HttpApi() as a:
        yield a


@pytest.fixture(scope="module")
def g(
    tmp_path_factory: pytest.TempPathFactory, s3server: S3Server, api: HttpApi
) -> Iterator[S3Gateway]:
    gw = S3Gateway(
        tmp_path_factory.mktemp("mask"),
        s3server,
        extra_connections=[
            {
                "name": "api",
                "type": "http",
                "base_url": api.url,
                "auth": {"type": "bearer", "token": "env:LG_TEST_API_TOKEN"},
            }
        ],
        extra={"policy": {"rules": RULES}},
    )
    gw.gw.env["LG_TEST_API_TOKEN"] = api.token
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def _http(g: S3Gateway) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://localhost:{g.http_port}",
        verify=ssl.create_default_context(cafile=g.ca),
    )


def test_json_api_answers_are_masked_by_field_and_detector(g: S3Gateway) -> None:
    tok = g.gw.token("analyst", "user", "1h")
    with _http(g) as c:
        r = c.get("/api/api/reports/1", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    users = r.json()["users"]
    assert users[0]["email"] == "a***@example.com" and users[0]["name"] == "Alice"
    assert users[0]["card"].endswith("1111") and "4111" not in users[0]["card"]
    assert "alice@example.com" not in r.text and "4111 1111" not in r.text
    masks = [m for m in g.entries("mask") if m["identity"]["subject"] == "analyst"]
    assert {(x["field"], x["rule"]): x["count"] for x in masks[0]["masking"]} == {
        ("$.users[*].email", "pii"): 2,
        ("payment_card", "pii"): 2,
    }
    chunk = next(
        e
        for e in g.entries("chunk")
        if e["identity"]["subject"] == "analyst" and e["direction"] == "s2c"
    )
    assert chunk["chunk"]["sha256_out"] == hashlib.sha256(r.content).hexdigest()
    assert chunk["chunk"]["sha256_in"] != chunk["chunk"]["sha256_out"]  # altered, recorded


def test_a_privacy_officer_sees_the_values(g: S3Gateway) -> None:
    tok = g.gw.token("po", "user", "1h", "--group", "privacy-officers")
    with _http(g) as c:
        r = c.get("/api/api/reports/1", headers={"Authorization": f"Bearer {tok}"})
    assert r.json()["users"][0]["email"] == "alice@example.com"


def test_s3_json_and_csv_objects_are_masked_and_binary_is_refused(g: S3Gateway) -> None:
    bucket = g.s3.new_bucket()
    direct = g.s3.client()
    doc = {"users": [{"email": "dave@example.net", "plan": "pro"}]}
    direct.put_object(
        Bucket=bucket, Key="u.json", Body=json.dumps(doc).encode(), ContentType="application/json"
    )
    direct.put_object(
        Bucket=bucket,
        Key="u.csv",
        Body=b"id,email,card\n1,erin@example.com,4111111111111111\n",
        ContentType="text/csv",
    )
    direct.put_object(
        Bucket=bucket, Key="u.bin", Body=b"\x00\x01 erin@example.com", ContentType="image/png"
    )
    c = g.client(g.key("reader"))
    got = json.loads(c.get_object(Bucket=bucket, Key="u.json")["Body"].read())
    assert got == {"users": [{"email": "d***@example.net", "plan": "pro"}]}
    csv_text = c.get_object(Bucket=bucket, Key="u.csv")["Body"].read().decode()
    assert csv_text.splitlines()[1] == "1,e***@example.com,************1111"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket=bucket, Key="u.bin")
    assert "cannot be masked" in e.value.response["Error"]["Message"]
    refused = [
        r
        for r in g.entries("command.result")
        if r["identity"]["subject"] == "reader" and r["outcome"] == "refused"
    ]
    assert refused and refused[-1]["error"]["code"] == "Unmaskable"
