"""The request the gateway sends a backend, and what the ledger says of the client's.

Owns turning an admitted request into the one the backend receives: the target at the
storage (path-style or virtual-hosted, presigned parameters removed, the connection's
base path), the headers passed on (the client's credentials and hop-by-hop ones
dropped, the held credential added), the SigV4 signature made again with the held key,
and the body relay that checks what the client declared (``wire.http.body``); and the
``RequestFacts`` the ``command`` entry is built from. Never logs a header.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

from ledgergate.core.recording_http import RequestFacts
from ledgergate.wire.http.body import AwsChunkedBody, Expected, SliceBody
from ledgergate.wire.http.messages import forwardable, header, s3_operation
from ledgergate.wire.s3 import sigv4
from ledgergate.wire.s3.checksums import ALGORITHMS

if TYPE_CHECKING:
    from ledgergate.proxy.http.gateway import HttpGateway, HttpTarget

__all__ = ["PRESIGN", "STREAMING", "backend_request", "raw_head", "request_facts"]

STREAMING = {
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": (True, False),
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": (True, True),
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER": (False, True),
}
# Request headers never passed to the backend: the client's credentials and what the
# gateway sets itself.
_DROP = frozenset(
    {
        b"host",
        b"authorization",
        b"expect",
        b"x-amz-date",
        b"x-amz-content-sha256",
        b"x-amz-security-token",
        b"content-length",
    }
)
# Presigned-URL parameters: the gateway signs its own request to the backend.
PRESIGN = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)


# Request headers that carry a credential (the client's or a token): never kept.
_SECRET_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"x-amz-security-token", b"cookie"}
)


def raw_head(head: Any) -> bytes:
    """The request head kept as a payload at ``recording: full``, without what carries a
    credential: authorization headers, and a presigned URL's signature (a capability
    until it expires)."""
    lines = [head.method + b" " + sigv4.strip_presign_query(head.target)]
    for k, v in head.headers:
        if k in _SECRET_HEADERS:
            v = b"<hidden>"
        lines.append(k + b": " + v)
    return b"\r\n".join(lines)


def request_facts(t: HttpTarget) -> RequestFacts:
    head = t.head
    headers = list(head.headers)
    clen = header(headers, b"content-length")
    ctype = header(headers, b"content-type")
    method = head.method.decode("latin-1")
    if t.kind == "s3":
        q = t.query or []
        checksum = None
        for k, v in headers:
            alg = k.decode("latin-1").removeprefix("x-amz-checksum-")
            if k.startswith(b"x-amz-checksum-") and alg in ALGORITHMS:
                checksum = (alg, v.decode("latin-1"))
        trailer = header(headers, b"x-amz-trailer")
        if checksum is None and trailer is not None:
            checksum = (trailer.decode("latin-1").removeprefix("x-amz-checksum-"), "trailer")
        decoded = header(headers, b"x-amz-decoded-content-length")
        length = decoded if decoded is not None else clen
        return RequestFacts(
            protocol="s3",
            method=method,
            op=s3_operation(
                head.method, t.bucket, t.key, q, header(headers, b"x-amz-copy-source") is not None
            ),
            path=unquote(head.path.decode("latin-1")),
            query=tuple((k, v) for k, v in q if k not in PRESIGN),
            bucket=t.bucket,
            key=t.key,
            content_length=int(length) if length and length.isdigit() else None,
            payload=t.signed.payload_hash if t.signed else None,
            checksum=checksum,
            content_type=ctype.decode("latin-1") if ctype else None,
        )
    path, _, query = t.rest.partition(b"?")
    return RequestFacts(
        protocol="http",
        method=method,
        op=method,
        path=unquote(path.decode("latin-1")),
        query=tuple(parse_qsl(query.decode("latin-1"), keep_blank_values=True)),
        content_length=int(clen) if clen and clen.isdigit() else None,
        content_type=ctype.decode("latin-1") if ctype else None,
    )


def backend_request(
    gw: HttpGateway, t: HttpTarget, *, masked: bool = False
) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], SliceBody | AwsChunkedBody]:
    """The request to send the backend (method, target, headers) and the body relay.
    ``masked``: the answer will be masked, so it is asked for uncompressed and whole."""
    conn = t.conn
    head = t.head
    headers = list(head.headers)
    host = conn.host if conn.port in (80, 443) else f"{conn.host}:{conn.port}"
    out = [(k, v) for k, v in forwardable(headers) if k not in _DROP]
    if masked:
        out = [(k, v) for k, v in out if k not in (b"accept-encoding", b"range", b"if-range")]
    clen = header(headers, b"content-length")
    if clen is not None:
        out.append((b"content-length", clen))
    if t.kind == "http":
        held = gw.held[conn.name]
        out.insert(0, (b"host", host.encode("latin-1")))
        auth = conn.auth  # type: ignore[union-attr]
        if auth.type == "bearer":
            out.append((b"authorization", b"Bearer " + (held["token"] or "").encode("latin-1")))
        elif auth.type == "basic":
            pair = f"{held['user']}:{held['password']}".encode()
            out.append((b"authorization", b"Basic " + base64.b64encode(pair)))
        elif auth.type == "header":
            out = [(k, v) for k, v in out if k != (auth.header or "").lower().encode()]
            out.append(
                (
                    (auth.header or "").lower().encode("latin-1"),
                    (held["value"] or "").encode("latin-1"),
                )
            )
        target = (conn.base_path.encode("latin-1") + t.rest) or b"/"
        return head.method, target, out, SliceBody()
    # S3: the same request, path-style (or virtual-hosted) at the storage, signed again.
    assert t.signed is not None
    raw_path = head.path
    client_virtual = t.bucket is not None and _virtual(gw, head)
    bucket_b = _quote_bucket(t.bucket) if t.bucket else b""
    if conn.addressing == "virtual" and t.bucket:  # type: ignore[union-attr]
        host = f"{t.bucket}.{host}"
        path = raw_path if client_virtual else b"/" + raw_path[1:].partition(b"/")[2]
    else:
        path = (b"/" + bucket_b + raw_path) if client_virtual else raw_path
    query = sigv4.strip_presign_query(head.target).partition(b"?")[2]
    target = conn.base_path.encode("latin-1") + path + (b"?" + query if query else b"")
    held = gw.held[conn.name]
    payload = t.signed.payload_hash
    if t.signed.presigned and payload != "UNSIGNED-PAYLOAD":
        payload = "UNSIGNED-PAYLOAD"
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.insert(0, (b"host", host.encode("latin-1")))
    region = conn.region  # type: ignore[union-attr]
    signed_headers, seed = sigv4.sign_headers(
        head.method,
        target,
        out,
        access_key=held["access_key_id"] or "",
        secret=held["secret_access_key"] or "",
        region=region,
        service="s3",
        amz_date=amz_date,
        payload_hash=payload,
    )
    body: SliceBody | AwsChunkedBody
    mode = STREAMING.get(payload)
    if mode is not None:
        signed, trailer = mode
        verify = resign = None
        if signed:
            sr = t.signed
            assert t.signing_key is not None
            verify = sigv4.ChunkChain(t.signing_key, sr.amz_date, sr.scope, sr.signature)
            bkey = sigv4.signing_key(held["secret_access_key"] or "", amz_date[:8], region, "s3")
            resign = sigv4.ChunkChain(
                bkey, amz_date, f"{amz_date[:8]}/{region}/s3/aws4_request", seed
            )
        decoded = header(headers, b"x-amz-decoded-content-length")
        trailer_name = header(headers, b"x-amz-trailer")
        body = AwsChunkedBody(
            signed=signed,
            trailer=trailer,
            verify=verify,
            resign=resign,
            decoded_length=int(decoded) if decoded and decoded.isdigit() else None,
            trailer_name=trailer_name.decode("latin-1").strip().lower() if trailer_name else None,
        )
    else:
        body = SliceBody(_expected(headers, payload))
    return head.method, target, signed_headers, body


def _expected(headers: list[tuple[bytes, bytes]], payload: str) -> Expected:
    md5 = header(headers, b"content-md5")
    checksum = None
    for k, v in headers:
        alg = k.decode("latin-1").removeprefix("x-amz-checksum-")
        if k.startswith(b"x-amz-checksum-") and alg in ALGORITHMS:
            checksum = (alg, v.decode("latin-1").strip())
    digest = (
        payload
        if len(payload) == 64 and all(c in "0123456789abcdefABCDEF" for c in payload)
        else None
    )
    return Expected(digest, md5.decode("latin-1").strip() if md5 else None, checksum)


def _virtual(gw: HttpGateway, head: Any) -> bool:
    host = header(list(head.headers), b"host")
    if not host:
        return False
    name = host.decode("latin-1").rsplit(":", 1)[0].lower()
    return any(name.endswith("." + h) for h in gw.hostnames)


def _quote_bucket(bucket: str) -> bytes:
    return quote(bucket, safe="-._~").encode("ascii")
