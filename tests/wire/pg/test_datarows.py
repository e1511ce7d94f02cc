"""The native DataRow loop (wire/pg/_datarows.c) against the Python plan, byte for byte.

Every mask function the C code applies itself (null, redact, fixed, partial) and the
callback path (tokenize, detectors, values that are not UTF-8) are run both ways on
generated rows: ``RowMasking.rewrite`` over a run of messages, and ``RowMasking.mask``
row by row with the Python codec. Same bytes out, same counts for the mask entry.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.core.masking.plan import MaskPlanner, RowMasking
from ledgergate.core.policy.rules import PolicyRule
from ledgergate.wire.pg import _datarows
from ledgergate.wire.pg.results import Field, build_data_row, parse_data_row, skip_rows

KEY = b"k" * 32
T = 7000
CATALOG = {(T, i): f"public.people.c{i}" for i in range(1, 9)}

RULES = [
    PolicyRule.model_validate(r)
    for r in (
        {"id": "n", "mask": {"columns": ["public.people.c1"], "function": "null"}},
        {"id": "r", "mask": {"columns": ["public.people.c2"], "function": "redact"}},
        {
            "id": "f",
            "mask": {"columns": ["public.people.c3"], "function": "fixed", "replacement": "x—y"},
        },
        {
            "id": "pd",
            "mask": {
                "columns": ["public.people.c4"],
                "function": "partial",
                "keep_domain": True,
                "keep_last": 2,
            },
        },
        {"id": "p4", "mask": {"columns": ["public.people.c5"], "function": "partial"}},
        {
            "id": "p0",
            "mask": {"columns": ["public.people.c6"], "function": "partial", "keep_last": 0},
        },
        {"id": "t", "mask": {"columns": ["public.people.c7"], "function": "tokenize"}},
        {"id": "d", "mask": {"detectors": ["email", "payment_card"], "function": "partial"}},
    )
]

FIELDS = (
    *(Field(f"c{i}".encode(), T, i, 25, 0) for i in range(1, 9)),
    Field(b"plain", 0, 0, 23, 0),  # not masked, not scanned (int4)
)


def plans() -> tuple[RowMasking, RowMasking]:
    planner = MaskPlanner(RULES, CATALOG, KEY)
    a, b = planner.plan(FIELDS), planner.plan(FIELDS)
    assert isinstance(a, RowMasking) and isinstance(b, RowMasking)
    return a, b


def python_rows(plan: RowMasking, frames: list[bytes]) -> bytes:
    out = []
    for f in frames:
        vals = plan.mask(parse_data_row(f[5:]))
        out.append(f if vals is None else build_data_row(vals))
    return b"".join(out)


# Values the partial function treats differently: e-mails, grouped numbers, short and
# long text, multi-byte characters, bytes that are not UTF-8.
grouped = st.from_regex(r"\A\+?(\(\d{1,3}\)[ .-]?)?\d{1,4}([ .-]\d{1,4}){0,4}\Z", fullmatch=True)
alt1 = st.from_regex(r"\A\+?\d{1,4}[ .-]?\(\d{1,3}\)[ .-]?\d{1,3}([ .-]\d{1,3}){0,2}\Z")
emails = st.from_regex(r"\A[^@\x00]{0,6}@[^@\x00]{0,6}(@[a-z.]{0,5})?\Z", fullmatch=True)
texts = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=24)
near = st.text(alphabet="0123456789 .-()+@aé€😀", max_size=16)


def enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8


value = st.one_of(
    st.none(),
    grouped.map(enc),
    alt1.map(enc),
    emails.map(enc),
    texts.map(enc),
    near.map(enc),
    st.binary(max_size=12),
    st.just(b"card 4242 4242 4242 4242 and a@b.example"),
)
row = st.lists(value, min_size=len(FIELDS), max_size=len(FIELDS))


@settings(max_examples=int(os.environ.get("DATAROWS_EXAMPLES", "400")), deadline=None)
@given(st.lists(row, min_size=1, max_size=6))
def test_native_rows_equal_python_rows(rows: list[list[bytes | None]]) -> None:
    native, py = plans()
    frames = [build_data_row(r) for r in rows]
    buf = bytearray(b"".join(frames))
    out, end, n, changed = native.rewrite(buf, 0)
    assert (end, n) == (len(buf), len(rows))
    expected = python_rows(py, frames)
    assert out == expected
    assert changed == (expected != bytes(buf))
    assert native.counts == py.counts
    assert native.rows == py.rows == len(rows)


@given(st.lists(row, min_size=1, max_size=4), st.data())
def test_a_run_stops_at_an_incomplete_message_or_another_type(
    rows: list[list[bytes | None]], data: st.DataObject
) -> None:
    frames = [build_data_row(r) for r in rows]
    whole = b"".join(frames)
    cut = data.draw(st.integers(0, len(whole)))
    buf = bytearray(whole[:cut])
    done = 0
    k = 0
    while k < len(frames) and done + len(frames[k]) <= cut:
        done += len(frames[k])
        k += 1
    assert skip_rows(buf, 0) == (done, k)
    native, py = plans()
    out, end, n, _ = native.rewrite(buf, 0)
    assert (end, n) == (done, k)
    assert out == python_rows(py, frames[:k])
    # Another message type ends the run: the rows before it, nothing after.
    tail = bytearray(whole + b"C\x00\x00\x00\x0dSELECT 1\x00" + frames[0])
    assert skip_rows(tail, 0) == (len(whole), len(frames))


def test_partial_values_match_the_python_function_on_hand_picked_cases() -> None:
    native, py = plans()
    cases = [
        "4242 4242 4242 4242",
        "+1 (555) 010-9999",
        "(555)0109999",
        "123-45-6789",
        "12",
        "1 2",
        "1  2",
        "1-",
        "-1",
        "+",
        "()1",
        "1(2)3",
        "12345(6)7",
        "1234 (6) 7",
        "j@example.com",
        "@example.com",
        "john@",
        "a@b@c",
        "é@x",
        "😀bc@d",
        "€€€€€€",
        "",
        "abc",
        "abcdef",
        "++1",
        "1.2.3",
        "1..2",
        "(1) 2 3",
        "+(1)-2",
    ]
    rows = [[c.encode() if i in (3, 4, 5) else None for i in range(len(FIELDS))] for c in cases]
    frames = [build_data_row(r) for r in rows]
    out, _, _, _ = native.rewrite(bytearray(b"".join(frames)), 0)
    assert out == python_rows(py, frames)


@pytest.mark.parametrize(
    "frame",
    [
        b"D\x00\x00\x00\x05\x00",  # no column count
        b"D\x00\x00\x00\x06\xff\xff",  # negative count
        b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x09",  # value longer than the message
        b"D\x00\x00\x00\x0a\x00\x02\x00\x00\x00\x00",  # fewer columns than counted
        b"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x00\x41",  # bytes after the columns
        b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfe",  # length -2
    ],
)
def test_malformed_rows_raise_instead_of_passing(frame: bytes) -> None:
    native, _ = plans()
    with pytest.raises(ValueError):
        native.rewrite(bytearray(frame), 0)


def test_callback_errors_propagate_and_bad_actions_are_refused() -> None:
    frame = build_data_row([b"x"])

    def boom(i: int, v: bytes) -> bytes:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        _datarows.rewrite(frame, 0, ((4, 0, False, b""),), boom)
    with pytest.raises(TypeError):
        _datarows.rewrite(frame, 0, ((4, 0, False, b""),), lambda i, v: "str")
    with pytest.raises(ValueError):
        _datarows.rewrite(frame, 0, ((9, 0, False, b""),), boom)
    with pytest.raises(TypeError):
        _datarows.rewrite(frame, 0, ("x",), boom)


def test_columns_beyond_the_plan_pass_and_short_rows_are_fine() -> None:
    acts = ((2, 0, False, b"****"),)
    wide = build_data_row([b"secret", b"keep", None])
    short = struct.pack("!cIh", b"D", 6, 0)
    out, end, n, counts, changed = _datarows.rewrite(wide + short, 0, acts, print)
    assert out == build_data_row([b"****", b"keep", None]) + short
    assert (end, n, counts, changed) == (len(wide) + len(short), 2, [1], True)
