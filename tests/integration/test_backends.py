"""The loopback backends of the S3 and HTTP gateway tests work with real clients.

versitygw (`s3server`) is driven straight, without the gateway, by boto3, the aws CLI,
minio-py, rclone and curl with a presigned URL; and it must refuse an aws-chunked upload
whose chunk signature does not match, leaving no object behind: the S3 gateway tests
rely on that. The test REST API (`httpapi`) is checked with httpx.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from minio import Minio

from tests.integration.httpapi import HttpApi, HttpApiFactory, pattern_bytes
from tests.integration.s3server import S3Server, S3ServerFactory

MiB = 1024 * 1024
AWS = Path(sys.executable).parent / "aws"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Chunks of an aws-chunked body: AWS wants at least 8 KiB in every chunk but the last.
CHUNK = 64 * 1024


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> bytes:
    r = subprocess.run(cmd, capture_output=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()}"
    return r.stdout


@pytest.fixture(params=[False, True], ids=["http", "https"])
def any_s3server(
    request: pytest.FixtureRequest, s3server: S3Server, s3server_factory: S3ServerFactory
) -> S3Server:
    """The shared plain-HTTP server, then a TLS one (where botocore's default checksums
    travel as aws-chunked trailers)."""
    return s3server_factory(tls=True) if request.param else s3server


# -- boto3 ------------------------------------------------------------------------------


def test_boto3_put_get_list(s3server: S3Server) -> None:
    s3 = s3server.client()
    bucket = s3server.new_bucket()
    for key in ("a/one.txt", "a/two.txt", "b/three.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/one.txt", "a/two.txt"]
    assert s3.get_object(Bucket=bucket, Key="b/three.txt")["Body"].read() == b"b/three.txt"
    assert s3server.object_path(bucket, "a/two.txt").read_bytes() == b"a/two.txt"


def test_boto3_multipart_default_checksums(any_s3server: S3Server) -> None:
    s3 = any_s3server.client()
    bucket = any_s3server.new_bucket()
    data = os.urandom(6 * MiB)
    sent: list[str] = []
    s3.meta.events.register(
        "before-send.s3.UploadPart",
        lambda request, **_: sent.append(request.headers["x-amz-content-sha256"].decode()),
    )
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=config)

    head = s3.head_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-2")  # two parts: 5 MiB and 1 MiB
    assert head.get("ChecksumCRC32")  # boto3's default: CRC32 of each part, composed
    trailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert all((v == trailer) == any_s3server.tls for v in sent) and len(sent) == 2
    got = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert any_s3server.object_path(bucket, "big.bin").stat().st_size == len(data)


def _client(server: S3Server, *, secret: str | None = None) -> Any:
    """A boto3 client for ``server`` that trusts only the default CAs."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret or server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}),
    )


def test_tls_is_verified_against_the_ca(s3server_factory: S3ServerFactory) -> None:
    server = s3server_factory(tls=True)
    assert server.endpoint.startswith("https://")
    with pytest.raises(botocore.exceptions.SSLError):
        _client(server).list_buckets()
    assert server.client().list_buckets()["Buckets"] == []


def test_wrong_secret_is_refused(s3server: S3Server) -> None:
    bucket = s3server.new_bucket()
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _client(s3server, secret="not-the-secret").put_object(Bucket=bucket, Key="x", Body=b"x")
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert s3server.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert _files_under(s3server.root / bucket) == []


# -- other clients ----------------------------------------------------------------------


def test_aws_cli_cp(s3server: S3Server, tmp_path: Path) -> None:
    bucket = s3server.new_bucket()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(9 * MiB))  # past the CLI's 8 MiB multipart threshold
    env = s3server.env()
    cli = [str(AWS), "--endpoint-url", s3server.endpoint, "s3"]
    _run([*cli, "cp", "--only-show-errors", str(src), f"s3://{bucket}/dir/src.bin"], env)
    assert _run([*cli, "cp", f"s3://{bucket}/dir/src.bin", "-"], env) == src.read_bytes()
    assert b"src.bin" in _run([*cli, "ls", f"s3://{bucket}/dir/"], env)


def test_minio_put_of_unknown_length(s3server: S3Server) -> None:
    bucket = s3server.new_bucket()
    mc = Minio(
        s3server.endpoint.removeprefix("http://"),
        access_key=s3server.access_key,
        secret_key=s3server.secret_key,
        secure=False,
        region=s3server.region,
    )
    data = os.urandom(6 * MiB)
    mc.put_object(
        bucket_name=bucket,
        object_name="m.bin",
        data=io.BytesIO(data),
        length=-1,
        part_size=5 * MiB,
    )
    response = mc.get_object(bucket_name=bucket, object_name="m.bin")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    assert s3server.object_path(bucket, "m.bin").read_bytes() == data


def test_rclone_copyto_and_cat(s3server: S3Server, tmp_path: Path) -> None:
    rclone = shutil.which("rclone")
    assert rclone, "rclone is missing: run scripts/install-deps"
    bucket = s3server.new_bucket()
    src = tmp_path / "r.txt"
    src.write_bytes(b"through rclone\n" * 1000)
    remote = (
        f":s3,provider=Other,endpoint='{s3server.endpoint}',region={s3server.region},"
        f"access_key_id={s3server.access_key},secret_access_key={s3server.secret_key}:"
        f"{bucket}/r/r.txt"
    )
    # Only our AWS_* (rclone's AWS SDK fails on the caller's AWS_CA_BUNDLE), no RCLONE_*.
    env = {k: v for k, v in s3server.env().items() if not k.startswith("RCLONE_")}
    _run([rclone, "--config", os.devnull, "copyto", str(src), remote], env)
    assert _run([rclone, "--config", os.devnull, "cat", remote], env) == src.read_bytes()
    assert s3server.object_path(bucket, "r/r.txt").read_bytes() == src.read_bytes()


def test_curl_with_presigned_urls(s3server: S3Server, tmp_path: Path) -> None:
    bucket = s3server.new_bucket()
    s3 = s3server.client(signature_version="s3v4")
    src = tmp_path / "c.txt"
    src.write_bytes(b"presigned\n" * 100)
    params = {"Bucket": bucket, "Key": "c.txt"}
    put = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=300)
    _run(["curl", "-sS", "--fail-with-body", "-T", str(src), put])
    get = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    assert _run(["curl", "-sS", "--fail-with-body", get]) == src.read_bytes()
    r = httpx.get(get.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert r.status_code == 403


# -- aws-chunked signatures -------------------------------------------------------------


def aws_chunked_put(
    server: S3Server, bucket: str, key: str, data: bytes, *, flip_chunk: int | None = None
) -> httpx.Response:
    """PUT ``data`` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each chunk signed over the
    previous signature; with ``flip_chunk`` one byte of that chunk is changed after
    signing, as a tampering middlebox would."""
    url = f"{server.endpoint}/{bucket}/{key}"
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        },
    )
    signer = SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", server.region)
    signer.add_auth(request)  # the seed signature, over the headers
    previous = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    stamp = request.context["timestamp"]
    scope = f"{stamp[:8]}/{server.region}/s3/aws4_request"
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] + [b""]
    body = bytearray()
    for n, chunk in enumerate(chunks):
        digest = hashlib.sha256(chunk).hexdigest()
        fields = ["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, EMPTY_SHA256, digest]
        to_sign = "\n".join(fields)
        previous = signer.signature(to_sign, request)
        if n == flip_chunk:
            chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
        body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    return httpx.put(url, content=bytes(body), headers=headers, timeout=30)


@pytest.mark.parametrize("flip_chunk", [None, 0, 2], ids=["intact", "first", "last"])
def test_chunk_signature_is_enforced(s3server: S3Server, flip_chunk: int | None) -> None:
    bucket = s3server.new_bucket()
    data = pattern_bytes(2 * CHUNK + 1000)  # chunks of 64 KiB, 64 KiB, 1000 B, then 0 B
    r = aws_chunked_put(s3server, bucket, "signed.bin", data, flip_chunk=flip_chunk)
    if flip_chunk is None:
        assert r.status_code == 200, r.text
        assert s3server.object_path(bucket, "signed.bin").read_bytes() == data
        return
    assert r.status_code == 403, r.text
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert _files_under(s3server.root / bucket) == []  # not even a partial object
    assert s3server.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# -- the test REST API ------------------------------------------------------------------


def test_httpapi_wants_its_credential(httpapi: HttpApi) -> None:
    with httpx.Client(base_url=httpapi.url) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/api/reports").status_code == 401
        assert c.get("/api/reports", headers={"Authorization": "Bearer lgt_x"}).status_code == 401
        r = c.get("/api/reports/1", headers=httpapi.auth_headers())
        assert r.status_code == 200
        assert r.json()["users"][0] == {
            "name": "Alice",
            "email": "alice@example.com",
            "card": "4111 1111 1111 1111",
        }
        seen = c.get(
            "/api/echo-headers", headers={**httpapi.auth_headers(), "X-Trace": "t1"}
        ).json()
    assert seen["auth"] == "bearer"
    assert ["authorization", f"Bearer {httpapi.token}"] in seen["headers"]
    assert ["x-trace", "t1"] in seen["headers"]


def test_httpapi_basic_header_and_tls(httpapi_factory: HttpApiFactory) -> None:
    api = httpapi_factory(basic="svc:pw", header=("X-Api-Key", "k-123"), tls=True)
    assert api.url.startswith("https://")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api.url}/health")  # the default trust store does not know its CA
    with httpx.Client(base_url=api.url, verify=api.verify) as c:
        assert c.get("/api/reports", auth=("svc", "wrong")).status_code == 401
        assert c.get("/api/echo-headers", auth=("svc", "pw")).json()["auth"] == "basic"
        r = c.get("/api/echo-headers", headers={"x-api-key": "k-123"})
        assert r.json()["auth"] == "header"
    assert isinstance(api.verify, ssl.SSLContext)


def test_httpapi_bodies_and_streams(httpapi: HttpApi) -> None:
    auth = httpapi.auth_headers()
    data = os.urandom(300_000)
    with httpx.Client(base_url=httpapi.url, headers=auth) as c:
        r = c.post("/api/reports", json={"title": "new", "users": []})
        assert r.status_code == 201 and r.json()["body"]["title"] == "new"
        assert c.get(f"/api/reports/{r.json()['id']}").status_code == 200
        put = c.put("/api/blobs/b1", content=data).json()
        assert put == {"name": "b1", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert c.get("/api/blobs/b1").content == data
        assert c.delete("/api/blobs/b1").status_code == 204
        assert c.get("/api/blobs/b1").status_code == 404
        with c.stream("GET", "/api/blobs/any?size=200000") as r:
            pieces = list(r.iter_raw())
        assert b"".join(pieces) == pattern_bytes(200_000)
        assert c.get("/api/slow?seconds=0.3").content == b"..."
