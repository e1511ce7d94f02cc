"""More S3 clients through the gateway: signed aws-chunked uploads (as the Java and Go
SDKs send them), rclone, minio-py, boto3 over a plain-HTTP listener, and uploads whose
chunk signature or declared digest is wrong — refused with the backend committing
nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.auth import EMPTY_SHA256_HASH, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.s3gw import S3Gateway
from tests.integration.s3server import S3Server

MiB = 1 << 20
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, s3server: S3Server) -> Iterator[S3Gateway]:
    g = S3Gateway(tmp_path_factory.mktemp("s3c"), s3server).start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, s3server: S3Server) -> Iterator[S3Gateway]:
    g = S3Gateway(tmp_path_factory.mktemp("s3p"), s3server, tls=False).start()
    try:
        yield g
    finally:
        g.stop()


def signed_chunked_put(
    g: S3Gateway,
    key: tuple[str, str],
    bucket: str,
    name: str,
    data: bytes,
    *,
    flip_chunk: int | None = None,
) -> httpx.Response:
    """PUT ``data`` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD (botocore signs the seed and
    each chunk over the previous signature); ``flip_chunk`` changes one byte of that
    chunk after signing, as a tampering middlebox would."""
    url = f"{g.endpoint}/{bucket}/{name}"
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        },
    )
    signer = SigV4Auth(Credentials(key[0], key[1]), "s3", g.s3.region)
    signer.add_auth(request)
    previous = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    stamp = request.context["timestamp"]
    scope = f"{stamp[:8]}/{g.s3.region}/s3/aws4_request"
    body = bytearray()
    for n, chunk in enumerate([data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] + [b""]):
        digest = hashlib.sha256(chunk).hexdigest()
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, EMPTY_SHA256_HASH, digest]
        )
        previous = signer.signature(to_sign, request)
        if n == flip_chunk:
            chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
        body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    return httpx.put(url, content=bytes(body), headers=headers, timeout=30, verify=_ctx(g))


def _ctx(g: S3Gateway) -> object:
    import ssl

    return ssl.create_default_context(cafile=g.ca) if g.tls else True


def _files(path: Path) -> list[Path]:
    """Committed objects: files outside the server's own dot-directories (versitygw
    keeps an aborted upload's partial data in ``.sgwtmp`` until it cleans up)."""
    return [
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]


def test_signed_chunks_are_checked_and_signed_again(gw: S3Gateway) -> None:
    bucket = gw.s3.new_bucket()
    key = gw.key("java-app")
    data = os.urandom(3 * CHUNK + 1000)
    r = signed_chunked_put(gw, key, bucket, "signed.bin", data)
    assert r.status_code == 200, r.text
    assert gw.s3.object_path(bucket, "signed.bin").read_bytes() == data
    chunks = [
        e
        for e in gw.entries("chunk")
        if e["identity"]["subject"] == "java-app" and e["direction"] == "c2s"
    ]
    assert [e["chunk"]["size"] for e in chunks] == [CHUNK, CHUNK, CHUNK, 1000]
    assert all(e["chunk"]["signature"] == "verified" for e in chunks)
    assert all(e["chunk"]["framing"] == "aws-chunked" for e in chunks)


@pytest.mark.parametrize("flip", [0, 2, 3], ids=["first", "middle", "last"])
def test_a_tampered_chunk_is_refused_and_nothing_is_committed(gw: S3Gateway, flip: int) -> None:
    bucket = gw.s3.new_bucket()
    who = f"tampered-{flip}"
    r = signed_chunked_put(
        gw, gw.key(who), bucket, "t.bin", os.urandom(3 * CHUNK + 1000), flip_chunk=flip
    )
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert _files(gw.s3.root / bucket) == []
    assert gw.s3.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    results = [e for e in gw.entries("command.result") if e["identity"]["subject"] == who]
    assert [e["outcome"] for e in results] == ["refused"]
    assert results[0]["error"]["code"] == "SignatureDoesNotMatch"
    # the chunks before the bad one passed (and are recorded); the bad one did not
    passed = [
        e
        for e in gw.entries("chunk")
        if e["identity"]["subject"] == who and e["direction"] == "c2s"
    ]
    assert [e["outcome"] for e in passed] == ["forwarded"] * flip + ["refused"]


def test_rclone_copy_and_cat(gw: S3Gateway, tmp_path: Path) -> None:
    bucket = gw.s3.new_bucket()
    key_id, secret = gw.key("rclone-job")
    remote = (
        f":s3,provider=Other,endpoint='{gw.endpoint}',access_key_id={key_id},"
        f"secret_access_key={secret},region={gw.s3.region}:"
    )
    src = tmp_path / "r.bin"
    src.write_bytes(os.urandom(3 * MiB + 17))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "SSL_CERT_FILE"}
    env["SSL_CERT_FILE"] = gw.ca  # Go's TLS reads the CA from here
    subprocess.run(
        ["rclone", "--config", "/dev/null", "copyto", str(src), f"{remote}{bucket}/r.bin"],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    out = subprocess.run(
        ["rclone", "--config", "/dev/null", "cat", f"{remote}{bucket}/r.bin"],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    ).stdout
    assert out == src.read_bytes()
    assert gw.s3.object_path(bucket, "r.bin").read_bytes() == out


def test_minio_put_and_get(plain: S3Gateway) -> None:
    from minio import Minio

    bucket = plain.s3.new_bucket()
    key_id, secret = plain.key("minio-app")
    m = Minio(
        f"localhost:{plain.http_port}",
        access_key=key_id,
        secret_key=secret,
        secure=False,
        region=plain.s3.region,
    )
    import io

    data = os.urandom(6 * MiB)
    m.put_object(bucket, "m.bin", io.BytesIO(data), length=-1, part_size=5 * MiB)
    got = m.get_object(bucket, "m.bin")
    try:
        assert got.read() == data
    finally:
        got.close()
        got.release_conn()


def test_boto3_over_plain_http_checks_the_declared_digest(plain: S3Gateway) -> None:
    """Over plain HTTP boto3 signs the body's SHA-256 and sends a CRC32 header: both are
    checked before the body's end reaches the storage."""
    bucket = plain.s3.new_bucket()
    key = plain.key("http-app")
    c = plain.client(key)
    data = os.urandom(2 * MiB + 3)
    c.put_object(Bucket=bucket, Key="ok.bin", Body=data)
    assert plain.s3.object_path(bucket, "ok.bin").read_bytes() == data
    # a body that is not the one signed: the gateway refuses it, nothing is stored
    request = AWSRequest(
        method="PUT",
        url=f"{plain.endpoint}/{bucket}/bad.bin",
        headers={"X-Amz-Content-SHA256": hashlib.sha256(b"what was signed").hexdigest()},
        data=b"what was signed",
    )
    SigV4Auth(Credentials(*key), "s3", plain.s3.region).add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    r = httpx.put(request.url, content=b"what was sent!!", headers=headers, timeout=30)
    assert r.status_code == 400 and "XAmzContentSHA256Mismatch" in r.text
    assert not plain.s3.object_path(bucket, "bad.bin").exists()


def test_virtual_hosted_addressing(gw: S3Gateway) -> None:
    """``bucket.<gateway name>`` (here ``bucket.localhost``) names the bucket in the Host
    header: signed as botocore signs a virtual-hosted request, relayed path-style."""
    bucket = gw.s3.new_bucket()
    key = gw.key("vhost-app")
    host = f"{bucket}.localhost:{gw.http_port}"
    request = AWSRequest(
        method="PUT",
        url=f"https://{host}/v.txt",
        headers={"X-Amz-Content-SHA256": hashlib.sha256(b"virtual").hexdigest()},
        data=b"virtual",
    )
    SigV4Auth(Credentials(*key), "s3", gw.s3.region).add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = host
    r = httpx.put(
        f"https://localhost:{gw.http_port}/v.txt",
        content=b"virtual",
        headers=headers,
        verify=_ctx(gw),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert gw.s3.object_path(bucket, "v.txt").read_bytes() == b"virtual"
    cmd = [e for e in gw.entries("command") if e["identity"]["subject"] == "vhost-app"][-1]
    assert cmd["command"]["bucket"] == bucket and cmd["command"]["key"] == "v.txt"


def test_head_object_and_the_connection_after_it(plain: S3Gateway) -> None:
    """A HEAD answer has no body whatever its Content-Length says; the backend
    connection is reused for the next request."""
    bucket = plain.s3.new_bucket()
    c = plain.client(plain.key("head-app"))
    c.put_object(Bucket=bucket, Key="h.bin", Body=b"x" * 5000)
    for _ in range(3):
        assert c.head_object(Bucket=bucket, Key="h.bin")["ContentLength"] == 5000
        assert c.get_object(Bucket=bucket, Key="h.bin")["Body"].read() == b"x" * 5000


@pytest.mark.parametrize("how", ["digest", "drop", "reorder"])
def test_tampering_with_upload_chunk_entries_is_caught(
    tmp_path: Path, s3server: S3Server, how: str
) -> None:
    """Change a stored chunk digest, drop a chunk entry, swap two: audit verify names the
    entry."""

    g = S3Gateway(tmp_path / "gw", s3server).start()
    try:
        bucket = s3server.new_bucket()
        c = g.client(g.key("pipeline"))
        c.put_object(Bucket=bucket, Key="t.bin", Body=os.urandom(3 * MiB))
        g.indexed()
    finally:
        g.stop()
    assert g.gw.cli("audit", "verify").returncode == 0
    stream = g.gw.stream
    db = g.gw.db()
    seqs = [
        r[0]
        for r in db.execute(
            "SELECT seq FROM ledger_entries WHERE stream=? AND kind='chunk' ORDER BY seq", (stream,)
        )
    ]
    target = seqs[1]
    if how == "digest":
        row = db.execute(
            "SELECT canonical FROM ledger_entries WHERE stream=? AND seq=?", (stream, target)
        ).fetchone()[0]
        doc = bytes(row)
        digest = json.loads(doc)["chunk"]["sha256_in"]
        db.set_entry(stream, target, doc.replace(digest.encode(), b"0" * 64))
    elif how == "drop":
        db.delete_entries(stream, target, target)
    else:
        a, b = (
            db.execute(
                "SELECT canonical, entry_hash FROM ledger_entries WHERE stream=? AND seq=?",
                (stream, s),
            ).fetchone()
            for s in (target, target + 1)
        )
        db.set_entry(stream, target, *b)
        db.set_entry(stream, target + 1, *a)
    db.commit()
    db.close()
    r = g.gw.cli("audit", "verify", check=False)
    assert r.returncode == 1, r.stdout
    word = {"digest": "changed", "drop": "removed", "reorder": "reordered"}[how]
    assert word in r.stdout and f"entry {target}" in r.stdout, r.stdout


def test_full_recording_keeps_no_credential_of_the_client(
    tmp_path: Path, s3server: S3Server
) -> None:
    """At ``recording: full`` the request head is kept (encrypted) as a payload: without
    the client's Authorization header and without a presigned URL's signature."""

    from ledgergate.services.keys import PayloadCipher

    g = S3Gateway(tmp_path / "gw", s3server, connection={"recording": "full"}).start()
    try:
        bucket = s3server.new_bucket()
        key = g.key("full-rec")
        c = g.client(key, signature_version="s3v4")
        c.put_object(Bucket=bucket, Key="f.txt", Body=b"kept")
        url = c.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "f.txt"}, ExpiresIn=60
        )
        assert httpx.get(url, verify=_ctx(g), timeout=30).content == b"kept"
        g.indexed()
    finally:
        g.stop()
    cipher = PayloadCipher((g.gw.data_dir / "keys" / "payload.key").read_bytes())
    db = g.gw.db()
    heads = [
        cipher.open(d, bytes(b))
        for d, b in db.execute("SELECT digest, blob FROM payloads").fetchall()
    ]
    db.close()
    requests = [h for h in heads if h.startswith((b"PUT /", b"GET /"))]
    assert len(requests) == 2, requests
    signature = url.rsplit("X-Amz-Signature=", 1)[1].split("&")[0]
    for h in requests:
        assert b"authorization: <hidden>" in h or b"X-Amz-Credential" not in h
        assert key[1].encode() not in h and signature.encode() not in h
        assert b"AWS4-HMAC-SHA256 Credential" not in h
