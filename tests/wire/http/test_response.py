"""The backend answer reader: fed whole, a byte at a time, with data after its end;
HEAD answers end at their head; 1xx answers are skipped; bad bytes are an error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.wire.http.response import ResponseEnd, ResponseError, ResponseHead, ResponseReader

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "e"\r\n\r\nhello'
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def read(data: bytes, step: int | None = None, head_only: bool = False) -> list[object]:
    r = ResponseReader(head_only=head_only, max_head=64 * 1024)
    out: list[object] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for p in pieces:
        out += r.feed(p)
    return out


@pytest.mark.parametrize("raw", [OK, CHUNKED])
@pytest.mark.parametrize("step", [None, 1, 7])
def test_whole_and_in_pieces(raw: bytes, step: int | None) -> None:
    ev = read(raw, step)
    head = ev[0]
    assert isinstance(head, ResponseHead) and head.status_code == 200 and head.reason == b"OK"
    assert b"".join(e for e in ev if isinstance(e, bytes)) in (b"hello", b"abcde")
    assert ev[-1] == ResponseEnd()


def test_data_after_the_end_is_an_error() -> None:
    r = ResponseReader(head_only=False, max_head=1024)
    r.feed(OK)
    with pytest.raises(ResponseError):
        r.feed(b"HTTP/1.1 200 OK\r\n")


def test_head_answer_ends_with_its_head_and_1xx_is_skipped() -> None:
    ev = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", head_only=True)
    assert isinstance(ev[0], ResponseHead) and ev[-1] == ResponseEnd() and len(ev) == 2
    ev = read(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    heads = [e for e in ev if isinstance(e, ResponseHead)]
    assert [h.status_code for h in heads] == [200]


def test_bad_bytes_and_an_oversized_head() -> None:
    with pytest.raises(ResponseError):
        read(b"NOT HTTP AT ALL\r\n\r\n")
    r = ResponseReader(head_only=False, max_head=100)
    with pytest.raises(ResponseError):
        r.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_response_error(data: bytes) -> None:
    with contextlib.suppress(ResponseError):  # anything else fails the test
        read(b"HTTP/1.1 200 OK\r\n" + data)
