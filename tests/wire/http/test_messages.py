"""wire/http: the request-head checks, hop-by-hop filtering, S3 routing facts
(messages.py) and the body relays (body.py), without servers.

Heads are built from random headers; bodies are random bytes fed in random read sizes
(whole, one piece per byte-run, with sizes around the 1 MiB slice boundary), and
aws-chunked bodies are what botocore's ``AwsChunkedWrapper`` sends.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import zlib
from urllib.parse import quote

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.http.body import SLICE, AwsChunkedBody, BodyError, Expected, SliceBody
from ledgergate.wire.http.messages import (
    HOP_BY_HOP,
    HeadError,
    check_head,
    forwardable,
    s3_operation,
    split_s3_target,
)

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.binary(max_size=40).map(lambda b: bytes(c for c in b if 0x20 <= c < 0x7F).strip())
HEADERS = st.lists(st.tuples(TOKEN.map(str.encode), VALUE), max_size=8)


def raw_head(headers: list[tuple[bytes, bytes]], fold_at: int | None = None) -> bytes:
    lines = [b"PUT /api/x HTTP/1.1"]
    for i, (k, v) in enumerate(headers):
        lines.append(k + b": " + v)
        if i == fold_at:
            lines.append(b" folded")
    return b"\r\n".join(lines) + b"\r\n\r\n" + b"body bytes\r\n  not a header"


# -- check_head ------------------------------------------------------------------------------


@given(HEADERS)
def test_check_head_passes_plain_heads(headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
    check_head(raw_head(headers), headers)  # a body after the head is not looked at


@given(HEADERS.filter(bool), st.data())
def test_check_head_refuses_obs_fold_anywhere(
    headers: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(headers) - 1))
    with pytest.raises(HeadError) as e:
        check_head(raw_head(headers, fold_at=at), headers)
    assert e.value.status == 400 and "folding" in e.value.message


@given(HEADERS, st.sampled_from([b"5", b"0", b"123"]))
def test_check_head_refuses_length_and_chunked_together(
    headers: list[tuple[bytes, bytes]], length: bytes
) -> None:
    both = [*headers, (b"content-length", length), (b"transfer-encoding", b"chunked")]
    with pytest.raises(HeadError) as e:
        check_head(raw_head(both), both)
    assert e.value.status == 400 and "Transfer-Encoding" in e.value.message


@pytest.mark.parametrize("value", [b"-1", b"1,1", b"0x10", b" 5", b"", b"5 5", "٣".encode()])
def test_check_head_refuses_a_length_that_is_not_one_number(value: bytes) -> None:
    headers = [(b"host", b"x"), (b"content-length", value)]
    with pytest.raises(HeadError, match="Content-Length"):
        check_head(raw_head(headers), headers)


@given(HEADERS, st.sampled_from([0x00, 0x01, 0x0A, 0x0D, 0x1F, 0x7F]), st.integers(0, 40))
def test_check_head_refuses_control_characters(
    headers: list[tuple[bytes, bytes]], ctl: int, where: int
) -> None:
    value = b"abc"[:where] + bytes([ctl]) + b"def"
    bad = [*headers, (b"x-bad", value)]
    with pytest.raises(HeadError, match="control character"):
        check_head(b"PUT / HTTP/1.1\r\n\r\n", bad)


# -- forwardable -----------------------------------------------------------------------------


@given(
    HEADERS,
    st.lists(TOKEN, max_size=3),
    st.lists(st.sampled_from(sorted(HOP_BY_HOP - {b"connection"}))),
)
def test_forwardable_drops_hop_by_hop_and_what_connection_names(
    headers: list[tuple[bytes, bytes]], named: list[str], hop: list[bytes]
) -> None:
    conn_value = ", ".join(n.upper() if i % 2 else f" {n} " for i, n in enumerate(named))
    full = [*headers, *((h, b"1") for h in hop), (b"connection", conn_value.encode())]
    out = forwardable(full)
    dropped = {n.encode() for n in named}
    assert not any(k in HOP_BY_HOP or k in dropped for k, _ in out)
    # every end-to-end header not named by Connection survives, in order
    assert out == [(k, v) for k, v in full if k not in HOP_BY_HOP and k not in dropped]


def test_forwardable_keeps_the_end_to_end_headers() -> None:
    h = [(b"host", b"h"), (b"x-api-key", b"k"), (b"te", b"trailers"), (b"accept", b"*/*")]
    assert forwardable([*h, (b"connection", b"x-api-key")]) == [h[0], h[3]]


# -- split_s3_target -------------------------------------------------------------------------

BUCKET = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
KEY = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@given(BUCKET, KEY)
def test_split_path_style_round_trips_quoted_keys(bucket: str, key: str) -> None:
    target = f"/{bucket}/{quote(key, safe='/')}?uploadId=u%2B1&partNumber=3".encode()
    got = split_s3_target(target, b"localhost:9443", ("localhost",))
    assert got == (bucket, key, [("uploadId", "u+1"), ("partNumber", "3")])


@given(BUCKET, KEY.filter(lambda k: not k.startswith("/")))
def test_split_virtual_hosted(bucket: str, key: str) -> None:
    target = ("/" + quote(key, safe="/")).encode()
    host = f"{bucket}.GW.Example:9443".encode()
    assert split_s3_target(target, host, ("gw.example",)) == (bucket, key, [])


def test_a_target_starting_with_two_slashes_is_not_read_as_an_authority() -> None:
    bucket, key, _ = split_s3_target(b"//secret/public/key", b"localhost", ("localhost",))
    assert (bucket, key) != ("public", "key")


def test_split_virtual_hosted_keeps_a_leading_slash_of_the_key() -> None:
    assert split_s3_target(b"/b//a", b"localhost", ("localhost",))[1] == "/a"  # path-style
    assert split_s3_target(b"//a", b"b.localhost", ("localhost",))[1] == "/a"


@pytest.mark.parametrize(
    ("target", "host", "want"),
    [
        (b"/", b"localhost", (None, None, [])),
        (b"/b", b"localhost", ("b", None, [])),
        (b"/b/", b"localhost", ("b", None, [])),
        (
            b"/b?list-type=2&prefix=",
            b"localhost",
            ("b", None, [("list-type", "2"), ("prefix", "")]),
        ),
        (b"/b/a+b%2Fc", b"localhost", ("b", "a+b/c", [])),  # '+' is a plus in a path
        (b"/b/k", b"[::1]:9443", ("b", "k", [])),
        (b"/k", b"localhost", ("k", None, [])),  # the suffix alone is not a bucket
        (b"/", b"b.localhost", ("b", None, [])),
    ],
)
def test_split_s3_target_examples(target: bytes, host: bytes, want: tuple[object, ...]) -> None:
    assert split_s3_target(target, host, ("localhost",)) == want


# -- s3_operation ----------------------------------------------------------------------------

OPS = [
    ("GET", "/", "ListBuckets"),
    ("PUT", "/b", "CreateBucket"),
    ("DELETE", "/b", "DeleteBucket"),
    ("HEAD", "/b", "HeadBucket"),
    ("GET", "/b", "ListObjects"),
    ("GET", "/b?list-type=2&prefix=logs/", "ListObjectsV2"),
    ("GET", "/b?uploads", "ListMultipartUploads"),
    ("GET", "/b?versions", "ListObjectVersions"),
    ("POST", "/b?delete", "DeleteObjects"),
    ("GET", "/b?policy", "GetBucketPolicy"),
    ("PUT", "/b?policy", "PutBucketPolicy"),
    ("DELETE", "/b?policy", "DeleteBucketPolicy"),
    ("PUT", "/b?acl", "PutBucketAcl"),
    ("GET", "/b?location", "GetBucketLocation"),
    ("PUT", "/b?versioning", "PutBucketVersioning"),
    ("GET", "/b/k", "GetObject"),
    ("HEAD", "/b/k", "HeadObject"),
    ("PUT", "/b/k", "PutObject"),
    ("DELETE", "/b/k", "DeleteObject"),
    ("POST", "/b/k?uploads", "CreateMultipartUpload"),
    ("PUT", "/b/k?partNumber=2&uploadId=u", "UploadPart"),
    ("POST", "/b/k?uploadId=u", "CompleteMultipartUpload"),
    ("DELETE", "/b/k?uploadId=u", "AbortMultipartUpload"),
    ("GET", "/b/k?uploadId=u", "ListParts"),
    ("GET", "/b/k?tagging", "GetObjectTagging"),
    ("PUT", "/b/k?acl", "PutObjectAcl"),
    ("POST", "/b/k?restore", "RestoreObject"),
    ("PATCH", "/b/k", "Unknown"),
    ("POST", "/", "Unknown"),
]


@pytest.mark.parametrize(("method", "target", "op"), OPS)
def test_s3_operation_names(method: str, target: str, op: str) -> None:
    bucket, key, query = split_s3_target(target.encode(), b"localhost", ("localhost",))
    assert s3_operation(method.encode(), bucket, key, query) == op
    assert s3_operation(method.lower().encode(), bucket, key, query) == op


@given(BUCKET, KEY, st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "X"]))
def test_s3_operation_is_total(bucket: str, key: str, method: str) -> None:
    target = f"/{bucket}/{quote(key, safe='/')}?{quote(key)}".encode()
    b, k, q = split_s3_target(target, None, ())
    assert isinstance(s3_operation(method.encode(), b, k, q), str)


# -- SliceBody -------------------------------------------------------------------------------

SIZES = st.one_of(
    st.integers(0, 3 * SLICE + 9),
    st.sampled_from([1, SLICE - 1, SLICE, SLICE + 1, 2 * SLICE, 3 * SLICE]),
)


def pieces(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 7, 4096, 65536, 300_000, SLICE, SLICE + 3))
        out.append(data[pos : pos + n])
        pos += n
    return out


def run_slices(body: SliceBody, parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(slices handed out, their facts' bytes), checking each call hands out exactly the
    slices it has facts for."""
    got: list[bytes] = []
    facts: list[bytes] = []
    for call in [*(lambda p=p: body.feed(p) for p in parts), body.finish]:
        out, fs = call()
        assert out == [f.data_in for f in fs]  # nothing without its fact, nothing held over
        assert [f.seq for f in fs] == list(range(len(facts) + 1, len(facts) + len(fs) + 1))
        assert all(f.framing == "slice" and f.data_out is None for f in fs)
        for f in fs:  # a digest computed as the bytes arrived is the digest of the bytes
            want = hashlib.sha256(f.data_in).hexdigest()
            assert getattr(f, "digest_in", None) in (None, want)
        got += out
        facts += [f.data_in for f in fs]
    return got, facts


def declared(data: bytes) -> Expected:
    return Expected(
        sha256_hex=hashlib.sha256(data).hexdigest(),
        md5_b64=base64.b64encode(hashlib.md5(data).digest()).decode(),
        checksum=("crc32", base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()),
    )


@given(SIZES, st.integers(0, 2**32), st.booleans())
def test_slices_are_one_mib_and_digests_right(size: int, seed: int, check: bool) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    body = SliceBody(declared(data) if check else None)
    got, _ = run_slices(body, pieces(data, rng))
    assert b"".join(got) == data and body.size == size and body.chunks == len(got)
    assert [len(s) for s in got[:-1]] == [SLICE] * (len(got) - 1)
    assert (not got) == (size == 0) and all(got)


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("sha256_hex", "XAmzContentSHA256Mismatch"),
        ("md5_b64", "BadDigest"),
        ("checksum", "BadDigest"),
    ],
)
@given(size=SIZES, seed=st.integers(0, 2**32))
def test_a_declared_digest_that_does_not_match_is_refused(
    field: str, code: str, size: int, seed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    other = declared(data + b"!")
    exp = declared(data)
    exp = Expected(**{**{k: getattr(exp, k) for k in exp.__slots__}, field: getattr(other, field)})
    body = SliceBody(exp)
    handed = sum(len(p) for part in pieces(data, rng) for p in body.feed(part)[0])
    with pytest.raises(BodyError) as e:
        body.finish()
    assert e.value.code == code and e.value.status == 400
    assert handed % SLICE == 0 and handed <= size  # whole slices only: a partial end is held


@pytest.mark.parametrize("size", [SLICE, 2 * SLICE])
def test_the_last_slice_waits_for_the_digest_check(size: int) -> None:
    data = random.Random(size).randbytes(size)
    body = SliceBody(Expected(md5_b64=base64.b64encode(b"\0" * 16).decode()))
    handed = sum(len(p) for p in body.feed(data)[0])
    with pytest.raises(BodyError):
        body.finish()
    assert handed < size, "the whole body was handed out before its digest was checked"


# -- AwsChunkedBody with botocore's AwsChunkedWrapper ----------------------------------------

CHECKSUMS = [
    (Crc32Checksum, "x-amz-checksum-crc32"),
    (Sha1Checksum, "x-amz-checksum-sha1"),
    (Sha256Checksum, "x-amz-checksum-sha256"),
]


def botocore_chunked(data: bytes, cls: type, name: str, chunk_size: int | None) -> bytes:
    w = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name=name)
    if chunk_size is not None:
        w = AwsChunkedWrapper(
            io.BytesIO(data), checksum_cls=cls, checksum_name=name, chunk_size=chunk_size
        )
    return w.read()


def unsigned(size: int, name: str) -> AwsChunkedBody:
    return AwsChunkedBody(
        signed=False, trailer=True, verify=None, resign=None, decoded_length=size, trailer_name=name
    )


@pytest.mark.parametrize(("cls", "name"), CHECKSUMS)
@given(
    size=st.one_of(st.integers(0, 300_000), st.sampled_from([SLICE, SLICE + 1])),
    seed=st.integers(0, 2**32),
    chunk_size=st.sampled_from([None, 1024, 65536]),
)
def test_aws_chunked_unsigned_trailer_passes_through_unchanged(
    cls: type, name: str, size: int, seed: int, chunk_size: int | None
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    wire = botocore_chunked(data, cls, name, chunk_size)
    body, out, facts = unsigned(size, name), [], []
    for part in pieces(wire, rng):
        o, f = body.feed(part)
        out += o
        facts += f
    o, f = body.finish()
    assert b"".join(out + o) == wire
    assert b"".join(x.data_in for x in facts + f) == data and body.size == size
    assert all(x.framing == "aws-chunked" and not x.signature for x in facts + f)


@pytest.mark.parametrize(("cls", "name"), CHECKSUMS)
@given(size=st.integers(0, 200_000), seed=st.integers(0, 2**32))
def test_aws_chunked_flipped_checksum_is_bad_digest_and_the_end_is_held(
    cls: type, name: str, size: int, seed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    wire = botocore_chunked(data, cls, name, 65536)
    good = botocore_chunked(data + b"x", cls, name, 65536)
    trailer_at = wire.rindex(b"\r\n0\r\n") + 2 if size else 0
    flipped = wire[:trailer_at] + good[good.rindex(b"0\r\n" + name.encode()) :]
    assert flipped != wire and len(flipped) == len(wire)
    body, out = unsigned(size, name), []
    with pytest.raises(BodyError) as e:
        for part in pieces(flipped, rng):
            out += body.feed(part)[0]
        out += body.finish()[0]
    assert e.value.code == "BadDigest"
    sent = b"".join(out)
    assert wire.startswith(sent) and len(sent) <= trailer_at  # the final chunk never went out
    with pytest.raises(BodyError):
        body.finish()  # and it stays failed


def test_request_head_encoding_refuses_a_line_break() -> None:
    from ledgergate.wire.http.messages import encode_request_head

    head = encode_request_head(b"PUT", b"/b/k?x=1", [(b"host", b"s3:9000"), (b"x-a", b"1")])
    assert head == b"PUT /b/k?x=1 HTTP/1.1\r\nhost: s3:9000\r\nx-a: 1\r\n\r\n"
    for bad in ((b"x", b"a\r\nGET / HTTP/1.1"), (b"x\n", b"a"), (b"x", b"a\nb")):
        with pytest.raises(ValueError):
            encode_request_head(b"GET", b"/", [bad])


def test_chunk_frame_and_head_bound() -> None:
    from ledgergate.wire.http.messages import LAST_CHUNK, chunk_frame, head_too_large

    assert b"".join(chunk_frame(b"x" * 300)) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert not head_too_large(head + b"body" * 100, len(head))
    assert head_too_large(head, len(head) - 1)
    assert head_too_large(b"GET / HTTP/1.1\r\nHost: a\r\n", 1000)  # no end: refused
