"""HTTP request heads as the gateway sees them: checks, routing facts, error bodies.

Owns what is decided from a parsed request head (h11 parses the bytes): the checks a
gateway in front of other servers needs beyond h11's (smuggling shapes h11 tolerates),
which connection a request is for, the S3 operation it names, the headers that must not
cross a hop, and the error bodies each protocol's clients understand (S3 XML errors,
RFC 9457 problem documents). Pure: no I/O, clock or logging.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote
from xml.sax.saxutils import escape

import orjson

__all__ = [
    "HOP_BY_HOP",
    "LAST_CHUNK",
    "HeadError",
    "RequestHead",
    "check_head",
    "chunk_frame",
    "encode_request_head",
    "forwardable",
    "head_too_large",
    "header",
    "problem_body",
    "s3_copy_source",
    "s3_delete_keys",
    "s3_error_body",
    "s3_operation",
    "split_s3_target",
    "unsafe_path",
]

Headers = list[tuple[bytes, bytes]]

# Headers that describe one hop and are never passed on (RFC 9110 7.6.1), plus what
# the gateway sets itself towards the backend (host, length, authorization, expect).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# An obsolete line folding (a header line starting with a space or tab): h11 joins it
# silently; a gateway must refuse it (RFC 9112 5.2: servers reject or replace it).
_OBS_FOLD = re.compile(rb"\r?\n[ \t]")
_HEAD_END = re.compile(rb"\n\r?\n")


class HeadError(ValueError):
    """A request head the gateway refuses; ``status`` and the message go to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: bytes
    target: bytes  # as sent: path and query
    headers: tuple[tuple[bytes, bytes], ...]

    @property
    def path(self) -> bytes:
        return self.target.split(b"?", 1)[0]

    @property
    def query(self) -> bytes:
        parts = self.target.split(b"?", 1)
        return parts[1] if len(parts) == 2 else b""


def header(headers: Headers | tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    """The value of the (lower-case) header ``name``; several values joined by ``,``."""
    vals = [v for k, v in headers if k == name]
    if not vals:
        return None
    return b",".join(vals)


def check_head(raw_head: bytes, headers: Headers) -> None:
    """Refuse what h11 accepts but a gateway must not: a folded header line, both
    Content-Length and Transfer-Encoding (the classic smuggling pair), a Content-Length
    that is not one plain number, and control characters in a header value."""
    end = raw_head.find(b"\r\n\r\n")
    head = raw_head if end < 0 else raw_head[:end]
    if _OBS_FOLD.search(head.split(b"\n", 1)[1] if b"\n" in head else b""):
        raise HeadError(400, "obsolete line folding in a header is not accepted")
    names = [k for k, _ in headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        raise HeadError(400, "a request may not have both Content-Length and Transfer-Encoding")
    for k, v in headers:
        if k == b"content-length" and not v.isdigit():
            raise HeadError(400, "Content-Length must be a decimal number")
        if any(c < 0x20 and c != 0x09 for c in v) or b"\x7f" in v:
            raise HeadError(400, "a header value holds a control character")


def head_too_large(raw_head: bytes, limit: int) -> bool:
    """Whether the request head at the start of ``raw_head`` (the bytes read before it
    was parsed) is longer than ``limit``: h11 bounds only a head still incomplete, and
    one read can hold a whole oversized head."""
    end = _HEAD_END.search(raw_head)
    return end is None or end.end() > limit


def encode_request_head(
    method: bytes, target: bytes, headers: Headers | tuple[tuple[bytes, bytes], ...]
) -> bytes:
    """An HTTP/1.1 request head. A name or value holding a line break is refused
    (``ValueError``): it would let a value end the head and start another request."""
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for k, v in headers:
        if b"\r" in v or b"\n" in v or b"\r" in k or b"\n" in k or b":" in k:
            raise ValueError("a header holds a line break")
        lines += (k, b": ", v, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk_frame(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``data`` as one chunk of a ``Transfer-Encoding: chunked`` body (three pieces, so
    the data itself is not copied)."""
    return b"%x\r\n" % len(data), data, b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def forwardable(headers: Headers | tuple[tuple[bytes, bytes], ...]) -> Headers:
    """The end-to-end headers: hop-by-hop ones and those the ``Connection`` header names
    are dropped."""
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named]


# -- S3 ----------------------------------------------------------------------------------


def split_s3_target(
    target: bytes, host: bytes | None, virtual_suffixes: tuple[str, ...]
) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """(bucket, key, query pairs) of an S3 request: path-style ``/bucket/key`` or, when
    the Host is ``bucket.<one of virtual_suffixes>``, virtual-hosted ``/key``. The key
    is percent-decoded (as S3 names it); None when the request names none."""
    # not urlsplit: a target starting with "//" is a path here, never an authority
    path, _, raw_query = target.decode("latin-1").partition("?")
    query = parse_qsl(raw_query, keep_blank_values=True)
    path = path or "/"
    bucket: str | None = None
    if host:
        name = host.decode("latin-1").rsplit(":", 1)[0].lower() if host[:1] != b"[" else ""
        for suffix in virtual_suffixes:
            if name.endswith("." + suffix) and len(name) > len(suffix) + 1:
                bucket = name[: -len(suffix) - 1]
                break
    if bucket is None:
        seg, _, rest = path[1:].partition("/")
        bucket = unquote(seg) or None
        key = unquote(rest) if rest else None
    else:
        key = unquote(path[1:]) or None
    return bucket, key, query


def s3_operation(
    method: bytes,
    bucket: str | None,
    key: str | None,
    query: list[tuple[str, str]],
    copy_source: bool = False,
) -> str:
    """The S3 API name a request calls (PutObject, UploadPart, ListObjectsV2, …), as
    CloudTrail names it; ``Unknown`` for what it cannot tell."""
    q = {k for k, _ in query}
    m = method.decode("latin-1").upper()
    if bucket is None:
        return "ListBuckets" if m == "GET" else "Unknown"
    if key is None:
        for sub, names in _BUCKET_SUBRESOURCES.items():
            if sub in q:
                return names.get(m, "Unknown")
        if m == "GET":
            if "uploads" in q:
                return "ListMultipartUploads"
            if "versions" in q:
                return "ListObjectVersions"
            return "ListObjectsV2" if ("list-type", "2") in query else "ListObjects"
        if m == "POST" and "delete" in q:
            return "DeleteObjects"
        return {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(
            m, "Unknown"
        )
    if "uploadId" in q:
        if m == "PUT":
            return "UploadPartCopy" if copy_source else "UploadPart"
        return {
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(m, "Unknown")
    if m == "POST" and "uploads" in q:
        return "CreateMultipartUpload"
    for sub, names in _OBJECT_SUBRESOURCES.items():
        if sub in q:
            return names.get(m, "Unknown")
    if m == "PUT" and copy_source:
        return "CopyObject"
    return {
        "GET": "GetObject",
        "HEAD": "HeadObject",
        "PUT": "PutObject",
        "DELETE": "DeleteObject",
        "POST": "PostObject",
    }.get(m, "Unknown")


_BUCKET_SUBRESOURCES: dict[str, dict[str, str]] = {
    "policy": {"GET": "GetBucketPolicy", "PUT": "PutBucketPolicy", "DELETE": "DeleteBucketPolicy"},
    "acl": {"GET": "GetBucketAcl", "PUT": "PutBucketAcl"},
    "versioning": {"GET": "GetBucketVersioning", "PUT": "PutBucketVersioning"},
    "lifecycle": {
        "GET": "GetBucketLifecycleConfiguration",
        "PUT": "PutBucketLifecycleConfiguration",
        "DELETE": "DeleteBucketLifecycle",
    },
    "tagging": {
        "GET": "GetBucketTagging",
        "PUT": "PutBucketTagging",
        "DELETE": "DeleteBucketTagging",
    },
    "cors": {"GET": "GetBucketCors", "PUT": "PutBucketCors", "DELETE": "DeleteBucketCors"},
    "encryption": {
        "GET": "GetBucketEncryption",
        "PUT": "PutBucketEncryption",
        "DELETE": "DeleteBucketEncryption",
    },
    "location": {"GET": "GetBucketLocation"},
    "object-lock": {"GET": "GetObjectLockConfiguration", "PUT": "PutObjectLockConfiguration"},
    "ownershipControls": {
        "GET": "GetBucketOwnershipControls",
        "PUT": "PutBucketOwnershipControls",
        "DELETE": "DeleteBucketOwnershipControls",
    },
    "policyStatus": {"GET": "GetBucketPolicyStatus"},
}
_OBJECT_SUBRESOURCES: dict[str, dict[str, str]] = {
    "acl": {"GET": "GetObjectAcl", "PUT": "PutObjectAcl"},
    "tagging": {
        "GET": "GetObjectTagging",
        "PUT": "PutObjectTagging",
        "DELETE": "DeleteObjectTagging",
    },
    "retention": {"GET": "GetObjectRetention", "PUT": "PutObjectRetention"},
    "legal-hold": {"GET": "GetObjectLegalHold", "PUT": "PutObjectLegalHold"},
    "attributes": {"GET": "GetObjectAttributes"},
    "restore": {"POST": "RestoreObject"},
}


def s3_copy_source(value: bytes) -> tuple[str, str] | None:
    """(bucket, key) of an ``x-amz-copy-source`` header (``bucket/key[?versionId=…]``,
    URL-encoded, with or without a leading ``/``)."""
    text = value.decode("latin-1").split("?", 1)[0]
    bucket, sep, key = unquote(text.removeprefix("/")).partition("/")
    return (bucket, key) if bucket and sep and key else None


def unsafe_path(path: bytes) -> str | None:
    """Why a path must not be passed on as it is: an empty segment (``//``), a ``.`` or
    ``..`` segment, an encoded slash or backslash, or a backslash. Servers behind the
    gateway may normalise them differently than the policy saw them."""
    low = path.lower()
    if b"//" in path:
        return "an empty path segment (//)"
    if b"%2f" in low or b"%5c" in low or b"\\" in path:
        return "an encoded slash or a backslash in the path"
    segs = [unquote(s.decode("latin-1")) for s in path.split(b"/")]
    if any(s in (".", "..") for s in segs):
        return "a . or .. path segment"
    return None


_DELETE_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)


def s3_delete_keys(body: bytes) -> list[str]:
    """The object keys a DeleteObjects request body names, XML entities decoded."""
    return [
        html.unescape(m.group(1).decode("utf-8", "replace")) for m in _DELETE_KEY.finditer(body)
    ]


def s3_error_body(code: str, message: str, resource: str, request_id: str) -> bytes:
    """An S3 error document, as botocore parses it (``Code`` becomes the ClientError's
    code, ``Message`` its message)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{escape(request_id)}</RequestId>"
        "</Error>"
    ).encode()


def problem_body(status: int, title: str, detail: str, **extra: str) -> bytes:
    """An RFC 9457 problem document (``application/problem+json``)."""
    doc: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    doc["detail"] = detail
    doc.update(extra)
    return orjson.dumps(doc)
