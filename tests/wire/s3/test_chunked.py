"""chunked.py: the aws-chunked decoder and encoder.

Every vector is fed three ways (whole, one byte at a time, and with bytes after its
end). The vectors are what real clients send: AWS's published chunked upload, botocore's
``AwsChunkedWrapper`` (boto3 >= 1.36 sends STREAMING-UNSIGNED-PAYLOAD-TRAILER with a
CRC32 trailer), the AWS SDK for Go v2's form (``0\\r\\n\\r\\n`` when there is no trailer)
and the AWS SDK for Java v2's signed trailer. Then each malformed shape with its code, a
round trip through the encoder, and hypothesis fuzzing (random and mutated bodies raise
ChunkedError or nothing, never hang, never hand out more than they were given).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import random

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.s3 import chunked
from ledgergate.wire.s3.checksums import Checksum
from ledgergate.wire.s3.chunked import (
    MAX_CHUNK,
    MAX_SIZE_LINE,
    MAX_TRAILER,
    AwsChunkedDecoder,
    BodyEnd,
    ChunkData,
    ChunkedError,
    ChunkEnd,
    ChunkStart,
    Event,
    Trailer,
    encode_chunk_header,
    encode_final,
    trailer_bytes,
)
from ledgergate.wire.s3.sigv4 import EMPTY_SHA256, ChunkChain, signing_key

S1, S2, S3 = "1" * 64, "2" * 64, "3" * 64
AWS_SIGS = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
AWS_BODY = (
    f"10000;chunk-signature={AWS_SIGS[0]}\r\n".encode()
    + b"a" * 65536
    + b"\r\n"
    + f"400;chunk-signature={AWS_SIGS[1]}\r\n".encode()
    + b"a" * 1024
    + b"\r\n"
    + f"0;chunk-signature={AWS_SIGS[2]}\r\n\r\n".encode()
)
CRC_HELLO = (("x-amz-checksum-crc32", "NhCmhg=="),)


def chunk(size: int, sig: str | None, data: bytes) -> list[Event]:
    return [ChunkStart(size, sig), *([ChunkData(data)] if data else []), ChunkEnd()]


def trailer(lines: tuple[tuple[str, str], ...], sig: str | None = None) -> Trailer:
    return Trailer(lines, "".join(f"{n}:{v}\n" for n, v in lines).encode(), sig)


# (name, signed, trailer, body, events)
VECTORS: list[tuple[str, bool, bool, bytes, list[Event]]] = [
    (
        "aws chunked upload example",
        True,
        False,
        AWS_BODY,
        [
            *chunk(65536, AWS_SIGS[0], b"a" * 65536),
            *chunk(1024, AWS_SIGS[1], b"a" * 1024),
            *chunk(0, AWS_SIGS[2], b""),
            BodyEnd(),
        ],
    ),
    (
        "botocore crc32 trailer",
        False,
        True,
        b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
        [*chunk(5, None, b"hello"), *chunk(0, None, b""), trailer(CRC_HELLO), BodyEnd()],
    ),
    (
        "botocore empty body",
        False,
        True,
        b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
        [*chunk(0, None, b""), trailer((("x-amz-checksum-crc32", "AAAAAA=="),)), BodyEnd()],
    ),
    (
        "go v2 without trailing header",
        False,
        True,
        b"b\r\nhello world\r\n0\r\n\r\n",
        [*chunk(11, None, b"hello world"), *chunk(0, None, b""), trailer(()), BodyEnd()],
    ),
    (
        "unsigned without trailer",
        False,
        False,
        b"5\r\nhello\r\n0\r\n\r\n",
        [*chunk(5, None, b"hello"), *chunk(0, None, b""), BodyEnd()],
    ),
    (
        "java v2 signed trailer",
        True,
        True,
        f"5;chunk-signature={S1}\r\nhello\r\n0;chunk-signature={S2}\r\n"
        f"x-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:{S3}\r\n\r\n".encode(),
        [*chunk(5, S1, b"hello"), *chunk(0, S2, b""), trailer(CRC_HELLO, S3), BodyEnd()],
    ),
    (
        "spaced, capitalised trailer",
        False,
        True,
        b"5\r\nhello\r\n0\r\nX-Amz-Checksum-CRC32 : NhCmhg== \r\n\r\n",
        [*chunk(5, None, b"hello"), *chunk(0, None, b""), trailer(CRC_HELLO), BodyEnd()],
    ),
    (
        "upper-case hex and leading zeros",
        False,
        False,
        b"00A\r\n0123456789\r\n000\r\n\r\n",
        [*chunk(10, None, b"0123456789"), *chunk(0, None, b""), BodyEnd()],
    ),
]


def merged(events: list[Event]) -> list[Event]:
    """Consecutive ChunkData joined: how reads split a chunk is not part of its meaning."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, ChunkData) and out and isinstance(out[-1], ChunkData):
            out[-1] = ChunkData(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def decode(signed: bool, trailer: bool, pieces: list[bytes], **kw: int) -> list[Event]:
    dec = AwsChunkedDecoder(signed, trailer, **kw)
    events: list[Event] = []
    for piece in pieces:
        events += dec.feed(piece)
    dec.finish()
    return merged(events)


def code_of(signed: bool, trailer: bool, pieces: list[bytes], **kw: int) -> str:
    with pytest.raises(ChunkedError) as info:
        decode(signed, trailer, pieces, **kw)
    return info.value.code


IDS = [v[0] for v in VECTORS]


@pytest.mark.parametrize(("name", "signed", "trailer", "body", "events"), VECTORS, ids=IDS)
def test_vector_whole(
    name: str, signed: bool, trailer: bool, body: bytes, events: list[Event]
) -> None:
    assert decode(signed, trailer, [body]) == events


@pytest.mark.parametrize(("name", "signed", "trailer", "body", "events"), VECTORS, ids=IDS)
def test_vector_byte_at_a_time(
    name: str, signed: bool, trailer: bool, body: bytes, events: list[Event]
) -> None:
    assert decode(signed, trailer, [body[i : i + 1] for i in range(len(body))]) == events


@pytest.mark.parametrize(("name", "signed", "trailer", "body", "events"), VECTORS, ids=IDS)
def test_vector_with_trailing_bytes(
    name: str, signed: bool, trailer: bool, body: bytes, events: list[Event]
) -> None:
    assert code_of(signed, trailer, [body + b"0\r\n\r\n"]) == "InvalidRequest"
    dec = AwsChunkedDecoder(signed, trailer)
    assert merged(dec.feed(body)) == events
    with pytest.raises(ChunkedError, match="after the end"):
        dec.feed(b"x")


@pytest.mark.parametrize(("name", "signed", "trailer", "body", "events"), VECTORS, ids=IDS)
def test_vector_truncated_anywhere_is_incomplete(
    name: str, signed: bool, trailer: bool, body: bytes, events: list[Event]
) -> None:
    cuts = range(len(body)) if len(body) < 200 else [*range(100), *range(65500, len(body))]
    for cut in cuts:
        assert code_of(signed, trailer, [body[:cut]]) == "IncompleteBody", cut


def test_chunk_data_is_handed_out_without_copying() -> None:
    dec = AwsChunkedDecoder(False, False)
    assert dec.feed(b"10\r\n") == [ChunkStart(16, None)]
    piece = b"0123456789abcdef"
    (event,) = dec.feed(piece)
    assert isinstance(event, ChunkData) and event.data is piece


# --- what is refused ----------------------------------------------------------------------

SIG = "a" * 64
SIZE, BAD, SHORT = "InvalidChunkSizeError", "InvalidRequest", "IncompleteBody"
CRC0 = b"x-amz-checksum-crc32:AAAAAA==\r\n"
# (name, signed, trailer, body, code)
MALFORMED: list[tuple[str, bool, bool, bytes, str]] = [
    ("bad hex size", False, False, b"zz\r\n", SIZE),
    ("0x prefix", False, False, b"0x5\r\nhello\r\n", SIZE),
    ("underscore in size", False, False, b"1_0\r\n", SIZE),
    ("space after size", False, False, b"5 \r\nhello\r\n", SIZE),
    ("empty size", False, False, b"\r\n", SIZE),
    ("bare LF after size", False, False, b"5\nhello\r\n", SIZE),
    ("size line too long", False, False, b"0" * (MAX_SIZE_LINE + 1), SIZE),
    ("chunk above the limit", False, False, f"{MAX_CHUNK + 1:x}\r\n".encode(), SIZE),
    ("huge size", False, False, b"f" * 40 + b"\r\n", SIZE),
    ("no signature when signed", True, False, b"5\r\nhello\r\n", BAD),
    ("signature when unsigned", False, True, f"5;chunk-signature={SIG}\r\n".encode(), BAD),
    ("other chunk extension", False, False, b"5;name=value\r\nhello\r\n", BAD),
    ("short signature", True, False, f"5;chunk-signature={SIG[:-1]}\r\n".encode(), BAD),
    ("upper-case signature", True, False, f"5;chunk-signature={SIG.upper()}\r\n".encode(), BAD),
    ("extension after signature", True, False, f"5;chunk-signature={SIG};x=y\r\n".encode(),
     BAD),
    ("data longer than its size", False, False, b"5\r\nhelloX\r\n", SHORT),
    ("LF alone after data", False, False, b"5\r\nhello\n0\r\n\r\n", SHORT),
    ("trailer not announced", False, False, b"0\r\n" + CRC0 + b"\r\n", BAD),
    ("trailer signature when unsigned", False, True,
     f"0\r\nx:1\r\nx-amz-trailer-signature:{SIG}\r\n\r\n".encode(), BAD),
    ("signed trailer without signature", True, True,
     f"0;chunk-signature={SIG}\r\n".encode() + CRC0 + b"\r\n", BAD),
    ("trailer signature not last", True, True,
     f"0;chunk-signature={SIG}\r\nx-amz-trailer-signature:{SIG}\r\nx:1\r\n\r\n".encode(), BAD),
    ("malformed trailer signature", True, True,
     f"0;chunk-signature={SIG}\r\nx-amz-trailer-signature:{SIG[1:]}\r\n\r\n".encode(), BAD),
    ("repeated trailer", False, True, b"0\r\nx:1\r\nX:2\r\n\r\n", BAD),
    ("trailer without colon", False, True, b"0\r\nx-amz-checksum-crc32\r\n\r\n", BAD),
    ("trailer without name", False, True, b"0\r\n:AAAAAA==\r\n\r\n", BAD),
    ("trailer line ending in LF", False, True, b"0\r\nx:1\n\r\n", BAD),
    ("non-ascii trailer", False, True, b"0\r\nx:\xc3\xa9\r\n\r\n", BAD),
    ("trailer too long", False, True, b"0\r\nx:" + b"a" * MAX_TRAILER + b"\r\n\r\n", BAD),
    ("too many trailer lines", False, True, b"0\r\n" + b"x:1\r\n" * (MAX_TRAILER // 5 + 1),
     BAD),
    ("data after the end", False, False, b"0\r\n\r\n0\r\n\r\n", BAD),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "signed", "trailer", "body", "code"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed(name: str, signed: bool, trailer: bool, body: bytes, code: str) -> None:
    assert code_of(signed, trailer, [body]) == code
    assert code_of(signed, trailer, [body[i : i + 1] for i in range(len(body))]) == code


def test_chunk_limit_is_the_callers_to_choose() -> None:
    assert code_of(False, False, [b"11\r\n"], max_chunk=16) == "InvalidChunkSizeError"
    assert decode(False, False, [b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"], max_chunk=16)


def test_a_failed_decoder_stays_failed() -> None:
    dec = AwsChunkedDecoder(False, False)
    with pytest.raises(ChunkedError) as first:
        dec.feed(b"zz\r\n")
    for again in (lambda: dec.feed(b"0\r\n\r\n"), dec.finish):
        with pytest.raises(ChunkedError) as later:
            again()
        assert later.value is first.value


# --- encoder ------------------------------------------------------------------------------


def test_encoder_pieces() -> None:
    assert encode_chunk_header(65536, S1) == f"10000;chunk-signature={S1}\r\n".encode()
    assert encode_chunk_header(5, None) == b"5\r\n"
    assert encode_final(None, (), None) == b"0\r\n\r\n"
    assert encode_final(S1, (), None) == f"0;chunk-signature={S1}\r\n\r\n".encode()
    assert encode_final(None, CRC_HELLO, None) == (b"0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n")
    assert encode_final(S1, CRC_HELLO, S2) == (
        f"0;chunk-signature={S1}\r\nx-amz-checksum-crc32:NhCmhg==\r\n"
        f"x-amz-trailer-signature:{S2}\r\n\r\n".encode()
    )
    for bad in (
        lambda: encode_chunk_header(-1, None),
        lambda: encode_chunk_header(1, "ab"),
        lambda: encode_final(None, (), "x"),
    ):
        with pytest.raises(ValueError):
            bad()


def test_trailer_bytes_are_the_canonical_form() -> None:
    assert trailer_bytes(CRC_HELLO) == b"x-amz-checksum-crc32:NhCmhg==\n"
    assert trailer_bytes([("X-B", " 2 "), ("a", "1")]) == b"a:1\nx-b:2\n"
    assert trailer_bytes(()) == b""


def frame(
    sizes: list[int],
    signed: bool,
    lines: tuple[tuple[str, str], ...] | None,
    chain: ChunkChain | None = None,
) -> tuple[bytes, bytes, list[str]]:
    """A body of ``sizes`` chunks (data, framed body, the signatures used)."""
    rng = random.Random(len(sizes))
    data = rng.randbytes(sum(sizes))
    out, sigs, pos = [], [], 0
    for i, size in enumerate([*sizes, 0]):
        piece = data[pos : pos + size]
        pos += size
        sig = None
        if signed:
            sig = chain.sign(hashlib.sha256(piece).hexdigest()) if chain else f"{i:064x}"
            sigs.append(sig)
        if size:
            out.append(encode_chunk_header(size, sig) + piece + chunked.CRLF)
        else:
            tsig = None
            if signed and lines is not None:
                tsig = chain.sign_trailer(trailer_bytes(lines)) if chain else "f" * 64
                sigs.append(tsig)
            out.append(encode_final(sig, lines or (), tsig))
    return data, b"".join(out), sigs


@given(
    sizes=st.lists(st.integers(1, 3000), max_size=6),
    signed=st.booleans(),
    with_trailer=st.booleans(),
    cuts=st.lists(st.integers(0, 20_000), max_size=8),
)
def test_round_trip(sizes: list[int], signed: bool, with_trailer: bool, cuts: list[int]) -> None:
    lines = (("x-amz-checksum-sha256", "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="),)
    data, body, sigs = frame(sizes, signed, lines if with_trailer else None)
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    events = decode(signed, with_trailer, [body[a:b] for a, b in itertools.pairwise(points)])
    assert b"".join(e.data for e in events if isinstance(e, ChunkData)) == data
    starts = [e for e in events if isinstance(e, ChunkStart)]
    assert [s.size for s in starts] == [*sizes, 0]
    assert [s.signature for s in starts] == (
        sigs[: len(sizes) + 1] if signed else [None] * len(starts)
    )
    trailers = [e for e in events if isinstance(e, Trailer)]
    assert trailers == (
        [Trailer(lines, trailer_bytes(lines), sigs[-1] if signed else None)] if with_trailer else []
    )
    assert events[-1] == BodyEnd()


def test_signed_trailer_chain_end_to_end() -> None:
    key = signing_key("secret", "20240305", "eu-west-3", "s3")
    scope, date, seed = "20240305/eu-west-3/s3/aws4_request", "20240305T123456Z", "c" * 64
    data, body, _ = frame([8192, 100], True, CRC_HELLO, ChunkChain(key, date, scope, seed))
    check = ChunkChain(key, date, scope, seed)
    current, received, checked = bytearray(), bytearray(), 0
    for ev in AwsChunkedDecoder(True, True).feed(body):
        if isinstance(ev, ChunkStart):
            current.clear()
            sig = ev.signature
        elif isinstance(ev, ChunkData):
            current += ev.data
            received += ev.data
        elif isinstance(ev, ChunkEnd):
            assert sig is not None
            check.verify(hashlib.sha256(current).hexdigest(), sig)
            checked += 1
        elif isinstance(ev, Trailer):
            assert ev.signature is not None
            check.verify_trailer(ev.raw, ev.signature)
            checked += 1
    assert received == data and checked == 4  # two chunks, the final one, the trailer


def test_reframed_body_keeps_the_content_length() -> None:
    """The gateway frames the client's chunks again with its own signatures: as every
    signature is 64 hex digits, the body (and its Content-Length) keeps its length."""
    backend = ChunkChain(
        signing_key("backend secret", "20130524", "us-east-1", "s3"),
        "20130524T000000Z",
        "20130524/us-east-1/s3/aws4_request",
        "d" * 64,
    )
    out, current = [], bytearray()
    for ev in AwsChunkedDecoder(True, False).feed(AWS_BODY):
        if isinstance(ev, ChunkStart):
            current.clear()
        elif isinstance(ev, ChunkData):
            current += ev.data
        elif isinstance(ev, ChunkEnd) and current:
            sig = backend.sign(hashlib.sha256(current).hexdigest())
            out.append(encode_chunk_header(len(current), sig) + bytes(current) + chunked.CRLF)
        elif isinstance(ev, BodyEnd):
            out.append(encode_final(backend.sign(EMPTY_SHA256), (), None))
    reframed = b"".join(out)
    assert len(AWS_BODY) == len(reframed) == 66824  # the example's Content-Length
    assert reframed != AWS_BODY
    assert decode(True, False, [reframed])[1] == ChunkData(b"a" * 65536)


# --- botocore's AwsChunkedWrapper -------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5, 65536, (1 << 20) + 1, 5 * (1 << 19)])
@pytest.mark.parametrize("chunk_size", [None, 65536])
def test_botocore_chunked_wrapper_decodes(size: int, chunk_size: int | None) -> None:
    data = random.Random(size).randbytes(size)
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    dec, events, rng = AwsChunkedDecoder(False, True), [], random.Random(7)
    while piece := wrapper.read(rng.choice((1, 7, 4096, 100_000))):
        events += dec.feed(piece)
    dec.finish()
    assert b"".join(e.data for e in events if isinstance(e, ChunkData)) == data
    (tr,) = [e for e in events if isinstance(e, Trailer)]
    expected = Checksum("crc32")
    expected.update(data)
    assert tr.lines == (("x-amz-checksum-crc32", expected.b64digest()),) and tr.signature is None


# --- fuzzing --------------------------------------------------------------------------------


def fuzz(signed: bool, trailer: bool, pieces: list[bytes]) -> None:
    dec = AwsChunkedDecoder(signed, trailer, max_chunk=4096)
    given_bytes = handed_out = 0
    try:
        for piece in pieces:
            given_bytes += len(piece)
            for ev in dec.feed(piece):
                if isinstance(ev, ChunkData):
                    handed_out += len(ev.data)
                assert handed_out <= given_bytes
        dec.finish()
    except ChunkedError as e:
        assert e.code in ("InvalidChunkSizeError", "IncompleteBody", "InvalidRequest")


@given(
    signed=st.booleans(),
    trailer=st.booleans(),
    pieces=st.lists(st.binary(max_size=300), max_size=10),
)
def test_fuzz_random_bytes(signed: bool, trailer: bool, pieces: list[bytes]) -> None:
    fuzz(signed, trailer, pieces)


@given(
    vector=st.sampled_from(VECTORS[1:]),
    edits=st.lists(
        st.tuples(
            st.integers(0, 200),
            st.sampled_from(["flip", "drop", "dup"]),
            st.binary(min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
    split=st.integers(1, 50),
)
def test_fuzz_mutated_vectors(
    vector: tuple[str, bool, bool, bytes, list[Event]],
    edits: list[tuple[int, str, bytes]],
    split: int,
) -> None:
    _, signed, trailer, body, _ = vector
    buf = bytearray(body)
    for at, how, what in edits:
        at %= len(buf) + 1
        if how == "flip":
            buf[at : at + len(what)] = what
        elif how == "drop":
            del buf[at : at + len(what)]
        else:
            buf[at:at] = what
    fuzz(signed, trailer, [bytes(buf[i : i + split]) for i in range(0, len(buf), split)])
