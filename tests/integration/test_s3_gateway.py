"""S3 through the gateway with real clients against a real S3 server (versitygw).

Every upload chunk and part, every download slice, on the ledger with its identity and
digests; signatures checked with keys ledgergate issued and made again with the held
key; a refused chunk leaves no object behind; a revoked or expired key is refused at
its next request and cuts the upload in flight (the contractor case).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from tests.integration.s3gw import S3Gateway
from tests.integration.s3server import S3Server

MiB = 1 << 20
POLICY = {
    "rules": [
        {
            "id": "no-bucket-admin",
            "deny": {"operations": ["DeleteBucket", "PutBucketPolicy", "PutBucketAcl"]},
            "message": "bucket settings change through the platform team",
        },
        {"id": "keep-audit", "deny": {"operations": ["DeleteObject"], "keys": ["audit/*"]}},
        {
            "id": "readers-read-only",
            "groups": ["readers"],
            "allow": [{"operations": ["GetObject", "HeadObject", "ListObjects*", "ListBuckets"]}],
        },
    ]
}


@pytest.fixture(scope="module")
def s3gw(tmp_path_factory: pytest.TempPathFactory, s3server: S3Server) -> Iterator[S3Gateway]:
    g = S3Gateway(tmp_path_factory.mktemp("s3gw"), s3server, extra={"policy": POLICY}).start()
    try:
        yield g
    finally:
        g.stop()


def _commands(g: S3Gateway, op: str) -> list[dict]:
    return [e for e in g.entries("command") if e["command"].get("op") == op]


def test_boto3_put_get_list_over_https_every_chunk_on_the_ledger(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    key = s3gw.key("etl")
    c = s3gw.client(key)
    data = os.urandom(3 * MiB + 123)
    put = c.put_object(Bucket=bucket, Key="logs/2026/part-0001.log", Body=data)
    got = c.get_object(Bucket=bucket, Key="logs/2026/part-0001.log")["Body"].read()
    assert got == data
    listed = c.list_objects_v2(Bucket=bucket, Prefix="logs/")
    assert [o["Key"] for o in listed["Contents"]] == ["logs/2026/part-0001.log"]
    assert s3gw.s3.object_path(bucket, "logs/2026/part-0001.log").read_bytes() == data

    cmds = [e for e in _commands(s3gw, "PutObject") if e["command"].get("bucket") == bucket]
    assert len(cmds) == 1
    cmd = cmds[0]
    assert cmd["identity"]["subject"] == "etl" and cmd["identity"]["kind"] == "service"
    assert cmd["command"]["key"] == "logs/2026/part-0001.log"
    sid, seq = cmd["session_id"], cmd["command"]["seq"]
    chunks = [
        e
        for e in s3gw.entries("chunk")
        if e["session_id"] == sid and e["chunk"]["command"] == seq and e["direction"] == "c2s"
    ]
    assert sum(e["chunk"]["size"] for e in chunks) == len(data)
    assert all(e["outcome"] == "forwarded" for e in chunks)
    assert all(e["chunk"]["sha256_in"] == e["chunk"]["sha256_out"] for e in chunks)
    # the chunks' digests are those of the bytes, in order
    off = 0
    for e in chunks:
        size = e["chunk"]["size"]
        assert hashlib.sha256(data[off : off + size]).hexdigest() == e["chunk"]["sha256_in"]
        off += size
    results = [
        e
        for e in s3gw.entries("command.result")
        if e["session_id"] == sid and e["command"]["seq"] == seq
    ]
    assert len(results) == 1
    assert results[0]["outcome"] == "accepted" and results[0]["status"] == 200
    assert results[0]["etag"] == put["ETag"]
    # the download: slices of at most 1 MiB, digests of what the client received
    gets = [e for e in _commands(s3gw, "GetObject") if e["command"].get("bucket") == bucket]
    gseq = gets[0]["command"]["seq"]
    down = [
        e
        for e in s3gw.entries("chunk")
        if e["session_id"] == gets[0]["session_id"]
        and e["chunk"]["command"] == gseq
        and e["direction"] == "s2c"
    ]
    assert [e["chunk"]["size"] for e in down] == [MiB, MiB, MiB, 123]
    assert hashlib.sha256(data[:MiB]).hexdigest() == down[0]["chunk"]["sha256_out"]


def test_wrong_secret_is_refused_and_recorded(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    key_id, _ = s3gw.key("mallory")
    c = s3gw.client((key_id, "x" * 40))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_object(Bucket=bucket, Key="k", Body=b"nope")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert not s3gw.s3.object_path(bucket, "k").exists()
    fails = [
        e
        for e in s3gw.entries("auth.fail")
        if (e.get("identity") or {}).get("subject") == "mallory"
    ]
    assert fails and fails[-1]["error"] == "SignatureDoesNotMatch"


def test_unknown_key_is_refused(s3gw: S3Gateway) -> None:
    c = s3gw.client(("LGAAAAAAAAAAAAAAAAAA", "y" * 40))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.list_buckets()
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_multipart_upload_file_with_8_mib_parts(s3gw: S3Gateway, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("etl"))
    src = tmp_path / "big.bin"
    data = os.urandom(20 * MiB + 7)
    src.write_bytes(data)
    cfg = TransferConfig(
        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=2
    )
    c.upload_file(str(src), bucket, "big.bin", Config=cfg)
    assert s3gw.s3.object_path(bucket, "big.bin").read_bytes() == data
    parts = [e for e in _commands(s3gw, "UploadPart") if e["command"].get("bucket") == bucket]
    assert sorted(p["command"]["part_number"] for p in parts) == [1, 2, 3]
    assert len(_commands(s3gw, "CompleteMultipartUpload")) >= 1


def test_aws_cli_cp_round_trip(s3gw: S3Gateway, tmp_path: Path) -> None:
    bucket = s3gw.s3.new_bucket()
    env = s3gw.aws_env(s3gw.key("ci"))
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello from the aws cli\n" * 1000)
    aws = str(Path(os.sys.executable).parent / "aws")
    subprocess.run(
        [aws, "s3", "cp", str(src), f"s3://{bucket}/a.txt", "--endpoint-url", s3gw.endpoint],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    out = tmp_path / "b.txt"
    subprocess.run(
        [aws, "s3", "cp", f"s3://{bucket}/a.txt", str(out), "--endpoint-url", s3gw.endpoint],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert out.read_bytes() == src.read_bytes()


def test_presigned_get_with_curl(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("etl"), signature_version="s3v4")
    c.put_object(Bucket=bucket, Key="shared.txt", Body=b"presigned body")
    url = c.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared.txt"}, ExpiresIn=60
    )
    r = subprocess.run(
        ["curl", "-sS", "--cacert", s3gw.ca, "-f", url], capture_output=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"presigned body"


def test_revoked_key_refused_at_next_request_and_upload_in_flight_cut(s3gw: S3Gateway) -> None:
    """The contractor case: a pipeline uploads 1 MB chunks; its key is revoked; the next
    chunk is refused, the ledger shows every accepted chunk with its identity and the
    refusal, and the ledger verifies."""
    bucket = s3gw.s3.new_bucket()
    key = s3gw.key("contractor-etl", "30d")
    c = s3gw.client(key)
    sent: list[str] = []
    for i in range(3):
        name = f"chunk-{i:04d}"
        c.put_object(Bucket=bucket, Key=name, Body=os.urandom(MiB))
        sent.append(name)
    s3gw.gw.cli("token", "revoke", s3gw.token_id(key[0]))
    # the gateway learns of a revocation made by another process within about a second
    # (the store's access epoch), and ends the key's open session
    _wait_for(s3gw, "session.terminated", "contractor-etl")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        c.put_object(Bucket=bucket, Key="chunk-late", Body=os.urandom(MiB))
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert "revoked" in refused.value.response["Error"]["Message"]
    assert not s3gw.s3.object_path(bucket, "chunk-late").exists()
    fails = [
        e
        for e in s3gw.entries("auth.fail")
        if (e.get("identity") or {}).get("subject") == "contractor-etl"
    ]
    assert fails and fails[-1]["reason"] == "ledgergate: access key revoked"
    oks = [
        e
        for e in s3gw.entries("command.result")
        if (e.get("identity") or {}).get("subject") == "contractor-etl"
        and e["outcome"] == "accepted"
    ]
    assert len([e for e in oks if e["command"]["op"] == "PutObject"]) >= 3
    r = s3gw.gw.cli("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def _wait_for(g: S3Gateway, kind: str, subject: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [e for e in g.entries(kind) if (e.get("identity") or {}).get("subject") == subject]
        if got:
            return got[-1]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} entry for {subject}")


def test_expired_key_refused_at_its_next_request(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    key = s3gw.key("short-lived", "3s")
    c = s3gw.client(key)
    t0 = time.monotonic()
    names = []
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        while time.monotonic() - t0 < 10:
            name = f"c-{len(names):04d}"
            c.put_object(Bucket=bucket, Key=name, Body=os.urandom(64 * 1024))
            names.append(name)
            time.sleep(0.05)
    assert names, "uploads before the expiry went through"
    assert "expired" in refused.value.response["Error"]["Message"]
    # every accepted upload is on the ledger under the key's identity, and nothing after
    oks = [
        e["command"]["seq"]
        for e in s3gw.entries("command.result")
        if (e.get("identity") or {}).get("subject") == "short-lived" and e["outcome"] == "accepted"
    ]
    assert len(oks) == len(names)
    stored = sorted(p.name for p in (s3gw.s3.root / bucket).iterdir() if p.name[0] != ".")
    assert stored == names


def test_upload_in_flight_is_cut_when_the_key_is_revoked(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    key = s3gw.key("slow-etl")
    c = s3gw.client(key)
    total = 64 * MiB

    class Slow:
        """A body that trickles: 1 MiB every 0.1 s."""

        def __init__(self) -> None:
            self.sent = 0

        def read(self, n: int = -1) -> bytes:
            if self.sent >= total:
                return b""
            time.sleep(0.1)
            n = MiB if n is None or n < 0 else min(n, MiB)
            n = min(n, total - self.sent)
            self.sent += n
            return b"x" * n

        def __len__(self) -> int:
            return total

    err: list[BaseException] = []

    def upload() -> None:
        try:
            c.put_object(Bucket=bucket, Key="cut.bin", Body=Slow(), ContentLength=total)
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=upload)
    t.start()
    time.sleep(1.5)
    s3gw.gw.cli("token", "revoke", s3gw.token_id(key[0]))
    t.join(30)
    assert not t.is_alive()
    assert err, "the upload should have been cut"
    assert not s3gw.s3.object_path(bucket, "cut.bin").exists()
    results = [
        e
        for e in s3gw.entries("command.result")
        if (e.get("identity") or {}).get("subject") == "slow-etl"
    ]
    assert any(e["outcome"] == "cut" for e in results)
    terminated = [
        e
        for e in s3gw.entries("session.terminated")
        if (e.get("identity") or {}).get("subject") == "slow-etl"
    ]
    assert terminated and terminated[0]["reason"] == "token revoked"


def test_guardrails_refuse_with_s3_errors_and_decision_entries(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("ops"))
    c.put_object(Bucket=bucket, Key="audit/2026-12-01.log", Body=b"evidence")
    c.put_object(Bucket=bucket, Key="tmp/x", Body=b"scratch")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.delete_object(Bucket=bucket, Key="audit/2026-12-01.log")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert "keep-audit" in e.value.response["Error"]["Message"]
    assert s3gw.s3.object_path(bucket, "audit/2026-12-01.log").exists()
    c.delete_object(Bucket=bucket, Key="tmp/x")  # outside audit/: allowed
    assert not s3gw.s3.object_path(bucket, "tmp/x").exists()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.delete_bucket(Bucket=bucket)
    assert (
        "bucket settings change through the platform team" in e.value.response["Error"]["Message"]
    )
    assert (s3gw.s3.root / bucket).is_dir()
    blocks = [
        b
        for b in s3gw.entries("decision.block")
        if b["identity"]["subject"] == "ops" and b["command"].get("bucket") == bucket
    ]
    assert [(b["decision"]["rule"], b["command"]["op"]) for b in blocks] == [
        ("keep-audit", "DeleteObject"),
        ("no-bucket-admin", "DeleteBucket"),
    ]
    assert all(b["policy"].startswith("pol_") for b in blocks)


def test_a_read_only_group_cannot_write(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    s3gw.s3.client().put_object(Bucket=bucket, Key="report.csv", Body=b"a,b\n1,2\n")
    c = s3gw.client(s3gw.key("analyst", "1h", "--group", "readers"))
    assert c.get_object(Bucket=bucket, Key="report.csv")["Body"].read() == b"a,b\n1,2\n"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_object(Bucket=bucket, Key="new.csv", Body=b"x" * 2 * MiB)
    assert "readers-read-only" in e.value.response["Error"]["Message"]
    assert not s3gw.s3.object_path(bucket, "new.csv").exists()
    # the connection stays usable after the refusal (the body was read and dropped)
    assert c.head_object(Bucket=bucket, Key="report.csv")["ContentLength"] == 8


def test_object_manifest_and_retransmission(s3gw: S3Gateway, tmp_path: Path) -> None:
    """A multipart upload's manifest lists its parts in order, each with its chunks'
    digests and where they are on the ledger; a part sent again is recorded as a
    retransmission naming the earlier attempt and who sent it."""
    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("pipeline"))
    up = c.create_multipart_upload(Bucket=bucket, Key="day.log")["UploadId"]
    p1, p2 = os.urandom(5 * MiB), os.urandom(2 * MiB)
    e1 = c.upload_part(Bucket=bucket, Key="day.log", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    c.upload_part(Bucket=bucket, Key="day.log", UploadId=up, PartNumber=2, Body=os.urandom(10))
    e2 = c.upload_part(Bucket=bucket, Key="day.log", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    done = c.complete_multipart_upload(
        Bucket=bucket,
        Key="day.log",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert s3gw.s3.object_path(bucket, "day.log").read_bytes() == p1 + p2
    parts = [e for e in _commands(s3gw, "UploadPart") if e["command"].get("bucket") == bucket]
    assert "retransmits" not in parts[0]["command"]
    again = parts[2]["command"]["retransmits"]
    assert again["command"] == parts[1]["command"]["seq"] and again["identity"] == "pipeline"
    manifests = [m for m in s3gw.entries("object.manifest") if m["object"]["bucket"] == bucket]
    assert len(manifests) == 1
    obj = manifests[0]["object"]
    assert obj["key"] == "day.log" and obj["etag"] == done["ETag"] and manifests[0]["complete"]
    assert [p["part_number"] for p in obj["parts"]] == [1, 2]
    assert obj["size"] == len(p1) + len(p2)
    # every chunk named in the manifest is a chunk entry with that digest
    chunks = {
        (e["session_id"], e["chunk"]["command"], e["chunk"]["seq"]): e["chunk"]["sha256_in"]
        for e in s3gw.entries("chunk")
        if e["direction"] == "c2s"
    }
    data = p1 + p2
    off = 0
    for p in obj["parts"]:
        for ch in p["chunks"]:
            assert chunks[(p["session_id"], p["command"], ch["seq"])] == ch["sha256"]
            assert hashlib.sha256(data[off : off + ch["size"]]).hexdigest() == ch["sha256"]
            off += ch["size"]
    assert off == len(data)


def test_put_object_manifest_and_a_retried_put(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("pipeline"))
    body = os.urandom(MiB + 5)
    c.put_object(Bucket=bucket, Key="x.bin", Body=body)
    c.put_object(Bucket=bucket, Key="x.bin", Body=body)  # the same content again
    results = [
        e
        for e in s3gw.entries("command.result")
        if e["command"]["op"] == "PutObject" and e["identity"]["subject"] == "pipeline"
    ]
    mine = [e for e in s3gw.entries("command") if e["command"].get("bucket") == bucket]
    seqs = {(m["session_id"], m["command"]["seq"]) for m in mine}
    results = [r for r in results if (r["session_id"], r["command"]["seq"]) in seqs]
    assert "retransmits" not in results[0]
    assert results[1]["retransmits"]["command"] == results[0]["command"]["seq"]
    manifests = [m for m in s3gw.entries("object.manifest") if m["object"]["bucket"] == bucket]
    assert len(manifests) == 2 and manifests[0]["object"]["size"] == len(body)


def test_sessions_show_prints_the_manifest_and_a_chunk_is_provable(
    s3gw: S3Gateway, tmp_path: Path
) -> None:
    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("auditee"))
    c.put_object(Bucket=bucket, Key="proof.bin", Body=os.urandom(MiB + 10))
    manifest = next(m for m in s3gw.entries("object.manifest") if m["object"]["bucket"] == bucket)
    out = s3gw.gw.cli("sessions", "show", manifest["session_id"]).stdout
    assert f"object {bucket}/proof.bin: 1.0 MiB" in out
    assert "(PutObject)" in out and "<- request #1 PutObject: accepted 200" in out
    places = [line.rsplit(" at ", 1)[1] for line in out.splitlines() if "      chunk " in line]
    assert len(places) == 2 and all(":" in p for p in places)
    proof = tmp_path / "proof.json"
    s3gw.gw.cli("audit", "prove", places[1], "-o", str(proof))
    r = s3gw.gw.cli("audit", "verify-proof", str(proof), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    replay = s3gw.gw.cli("sessions", "replay", manifest["session_id"], "--speed", "0").stdout
    assert "-> chunk 1 of request #1: 1.0 MiB (aws-chunked)" in replay


def test_a_batch_delete_is_decided_key_by_key(s3gw: S3Gateway) -> None:
    bucket = s3gw.s3.new_bucket()
    c = s3gw.client(s3gw.key("batch"))
    for k in ("audit/a.log", "tmp/b", "tmp/c"):
        c.put_object(Bucket=bucket, Key=k, Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": "tmp/b"}, {"Key": "audit/a.log"}]}
        )
    assert "keep-audit" in e.value.response["Error"]["Message"]
    assert "audit/a.log" in e.value.response["Error"]["Message"]
    assert s3gw.s3.object_path(bucket, "tmp/b").exists()  # nothing of the batch ran
    assert s3gw.s3.object_path(bucket, "audit/a.log").exists()
    done = c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "tmp/b"}, {"Key": "tmp/c"}]})
    assert sorted(d["Key"] for d in done["Deleted"]) == ["tmp/b", "tmp/c"]
    assert not s3gw.s3.object_path(bucket, "tmp/b").exists()
