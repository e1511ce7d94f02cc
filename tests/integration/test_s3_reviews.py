"""Just-in-time review of S3 requests: a delete under prod/ is held until a reviewer
approves it through the API, then runs once; a denied one never reaches the storage;
``wait: answer`` fails at once with the review id and the identical request runs once
after approval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.integration.gateway import BIN, free_port
from tests.integration.reviewapi import ReviewApi, in_background
from tests.integration.s3gw import S3Gateway
from tests.integration.s3server import S3Server

RULES: list[dict[str, Any]] = [
    {
        "id": "prod-deletes",
        "connections": ["logs"],
        "review": {
            "kind": "command",
            "when": {"operations": ["DeleteObject"], "keys": ["prod/*"]},
            "reviewers": ["dba"],
            "timeout": "20s",
        },
    },
    {
        "id": "bot-purge",
        "connections": ["logs"],
        "review": {
            "kind": "command",
            "when": {"operations": ["DeleteObject"], "keys": ["purge/*"]},
            "reviewers": ["dba"],
            "wait": "answer",
        },
    },
]


@pytest.fixture(scope="module")
def g(tmp_path_factory: pytest.TempPathFactory, s3server: S3Server) -> Iterator[S3Gateway]:
    api = free_port()
    gw = S3Gateway(
        tmp_path_factory.mktemp("s3rv"),
        s3server,
        extra={
            "listeners": {"api": {"address": f"127.0.0.1:{api}"}},
            "roles": {"reviewer": {"groups": ["dba"]}},
            "policy": {"rules": RULES},
        },
    ).start()
    gw.api_port = api  # type: ignore[attr-defined]
    try:
        yield gw
    finally:
        gw.stop()


def Api(g: Any) -> ReviewApi:
    """A reviewer (bob, in the ``dba`` group) at the gateway's API."""
    return ReviewApi(g.api_port, g.ca, g.gw.token("bob", "user", "1h", "--group", "dba"))


def test_a_held_delete_runs_after_approval_and_a_denied_one_never(g: S3Gateway) -> None:
    bucket = g.s3.new_bucket()
    c = g.client(g.key("erin"))
    c.put_object(Bucket=bucket, Key="prod/orders.csv", Body=b"id\n1\n")
    c.put_object(Bucket=bucket, Key="prod/users.csv", Body=b"id\n2\n")
    api = Api(g)
    try:
        t, out = in_background(lambda: c.delete_object(Bucket=bucket, Key="prod/orders.csv"))
        rv = api.pending()
        assert rv["rule_id"] == "prod-deletes" and rv["requester"]["subject"] == "erin"
        assert rv["statement"].startswith(f"DELETE /{bucket}/prod/orders.csv")
        assert g.s3.object_path(bucket, "prod/orders.csv").exists()  # held, not sent
        api.decide(rv["id"], "approve", "INC-7 cleanup")
        t.join(20)
        assert "error" not in out, out
        assert not g.s3.object_path(bucket, "prod/orders.csv").exists()

        t, out = in_background(lambda: c.delete_object(Bucket=bucket, Key="prod/users.csv"))
        rv = api.pending()
        api.decide(rv["id"], "deny", "not during the audit")
        t.join(20)
        err = out["error"]
        assert isinstance(err, botocore.exceptions.ClientError)
        assert "denied by bob: not during the audit" in err.response["Error"]["Message"]
        assert g.s3.object_path(bucket, "prod/users.csv").exists()
    finally:
        api.c.close()
    kinds = [e["kind"] for e in g.entries() if e["kind"].startswith("review.")]
    assert "review.approved" in kinds and "review.denied" in kinds
    blocks = [b for b in g.entries("decision.block") if b["identity"]["subject"] == "erin"]
    assert blocks[-1]["decision"]["rule"] == "prod-deletes"


def test_wait_answer_then_the_identical_request_runs_once(g: S3Gateway) -> None:
    bucket = g.s3.new_bucket()
    c = g.client(g.key("purge-bot"))
    c.put_object(Bucket=bucket, Key="purge/old.log", Body=b"old")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.delete_object(Bucket=bucket, Key="purge/old.log")
    assert "send the statement again once approved" in e.value.response["Error"]["Message"]
    api = Api(g)
    try:
        rv = api.pending()
        api.decide(rv["id"], "approve", "scheduled purge")
    finally:
        api.c.close()
    c.delete_object(Bucket=bucket, Key="purge/old.log")
    assert not g.s3.object_path(bucket, "purge/old.log").exists()
    c.put_object(Bucket=bucket, Key="purge/old.log", Body=b"again")
    with pytest.raises(botocore.exceptions.ClientError):  # the approval was used up
        c.delete_object(Bucket=bucket, Key="purge/old.log")


def test_aws_credentials_process_gives_botocore_a_short_lived_key(
    g: S3Gateway, tmp_path: Path
) -> None:
    """People never paste secrets: botocore runs ``ledgergate aws-credentials`` (a
    credential_process) and gets a key minted from the saved login, expiring with it."""
    from ledgergate.services import client as cl

    token = g.gw.token("dana", "user", "30m", "--group", "eng")
    creds_file = tmp_path / "credentials.json"
    cl.save(
        cl.Credentials(
            gateway=f"https://localhost:{g.api_port}",  # type: ignore[attr-defined]
            ca=g.ca,
            token=token,
            token_id="tok_x",
            identity="dana",
            groups=("eng",),
            roles=("user",),
            expires_ns=time.time_ns() + 30 * 60 * 10**9,
        ),
        creds_file,
    )
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(
        f"[default]\ncredential_process = {BIN} aws-credentials logs --ttl 2h\nregion = us-east-1\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "LEDGERGATE_CREDENTIALS": str(creds_file),
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    out = subprocess.run(
        [str(BIN), "aws-credentials", "logs"], env=env, capture_output=True, text=True, check=True
    ).stdout
    doc = json.loads(out)
    assert doc["Version"] == 1 and doc["AccessKeyId"].startswith("LG")
    bucket = g.s3.new_bucket()
    script = (
        "import boto3, sys\n"
        "from botocore.config import Config\n"
        f"c = boto3.session.Session().client('s3', endpoint_url='{g.endpoint}', "
        f"verify='{g.ca}', config=Config(s3={{'addressing_style': 'path'}}))\n"
        f"c.put_object(Bucket='{bucket}', Key='from-login.txt', Body=b'hi')\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert g.s3.object_path(bucket, "from-login.txt").read_bytes() == b"hi"
    cmds = [e for e in g.entries("command") if e["command"].get("bucket") == bucket]
    assert cmds[0]["identity"]["subject"] == "dana" and cmds[0]["identity"]["groups"] == ["eng"]
    # the key expires with the login (30 min), not after the 2 h asked for
    keys = [
        t for t in json.loads(g.gw.cli("token", "list", "--json").stdout) if t["identity"] == "dana"
    ]
    minted = [t for t in keys if t["purpose"] == "s3-session"]
    assert minted and all(t["expires_ns"] <= time.time_ns() + 31 * 60 * 10**9 for t in minted)
