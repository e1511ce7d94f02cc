"""copytext.py: COPY text and CSV rows split and encoded. Every vector is fed whole, a
byte at a time, in two pieces split everywhere, and with the start of a next row
trailing; hypothesis checks that encoding then splitting gives the values back and that
no input makes the splitter raise anything but CopyDataError. (The real-server check,
PostgreSQL's own bytes both ways, is tests/integration/test_copy_codec.py.)"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.wire.pg.copytext import (
    CSV,
    TEXT,
    CopyDataError,
    CopyEncoder,
    CopyFormat,
    CopySplitter,
    Value,
    encode_row,
    encoding_embeds_ascii,
    split_copy,
)
from tests.wire.pg.vectors import bytewise, two_ways, whole

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Rows = list[tuple[bool, list[Value]]]


def feed_all(
    fmt: CopyFormat, chunks: list[bytes], columns: int | None = None, *, finish: bool = True
) -> tuple[Rows, bytes]:
    """(header flag, values) of every row, and the raw bytes handed back."""
    sp = CopySplitter(fmt, columns=columns)
    lines = [line for chunk in chunks for line in sp.feed(chunk)]
    if finish:
        sp.finish()
    return [(ln.header, ln.values) for ln in lines], b"".join(ln.raw for ln in lines)


TEXT_PIPE = CopyFormat.of("text", delimiter=b"|", null=b"nil")
TEXT_HEADER = CopyFormat.of("text", header=True)
CSV_NULL = CopyFormat.of("csv", null=b"NULL")
CSV_BACKSLASH = CopyFormat.of("csv", quote=b"'", escape=b"\\")
CSV_HEADER = CopyFormat.of("csv", header=True, delimiter=b";")

# (id, format, data, rows as (header?, values))
VECTORS: list[tuple[str, CopyFormat, bytes, Rows]] = [
    ("text-plain", TEXT, b"1\tann\t\\N\n2\tbob\t\n", [
        (False, [b"1", b"ann", None]), (False, [b"2", b"bob", b""])]),
    ("text-escapes", TEXT, b"a\\b\\f\\n\\r\\t\\vz\t\\\\\n", [
        (False, [b"a\b\f\n\r\t\vz", b"\\"])]),
    ("text-octal-hex", TEXT, b"\\101\\0411\\7777\\x41\\x4a1\\xg\n", [
        (False, [b"A!1\xff7AJ1xg"])]),
    ("text-escaped-delimiter", TEXT, b"a\\\tb\\q\\N\t\\N\n", [(False, [b"a\tbqN", None])]),
    ("text-escaped-newline", TEXT, b"a\\\nb\tc\n", [(False, [b"a\nb", b"c"])]),
    ("text-escaped-null-marker", TEXT, b"\\\\N\n", [(False, [b"\\N"])]),
    ("text-empty-line", TEXT, b"\n", [(False, [b""])]),
    ("text-raw-control-bytes", TEXT, b"\x01\x1f\tx\n", [(False, [b"\x01\x1f", b"x"])]),
    ("text-unicode", TEXT, "é\t日本🙂\n".encode(), [
        (False, ["é".encode(), "日本🙂".encode()])]),
    ("text-pipe-nil", TEXT_PIPE, b"a|nil|\\|||\\156il\n", [
        (False, [b"a", None, b"|", b"", b"nil"])]),
    ("text-header", TEXT_HEADER, b"id\tna\\tme\n1\t\\N\n", [
        (True, [b"id", b"na\tme"]), (False, [b"1", None])]),
    ("text-null-with-escape", CopyFormat.of(null=b"\\0"), b"\\0\t\\\\0\n", [
        (False, [None, b"\\0"])]),
    ("csv-plain", CSV, b'1,ann,\n2,"",x\n', [
        (False, [b"1", b"ann", None]), (False, [b"2", b"", b"x"])]),
    ("csv-quoted", CSV, b'"a,b","say ""hi""","l1\nl2","cr\rlf"\n', [
        (False, [b"a,b", b'say "hi"', b"l1\nl2", b"cr\rlf"])]),
    ("csv-mid-field-quotes", CSV, b'ab"c,d"e,"x"y\n', [(False, [b"abc,de", b"xy"])]),
    ("csv-null-string", CSV_NULL, b'NULL,"NULL",\n', [(False, [None, b"NULL", b""])]),
    ("csv-backslash-escape", CSV_BACKSLASH, b"'a\\'b','c\\\\d','e\\f',it''s\n", [
        (False, [b"a'b", b"c\\d", b"e\\f", b"its"])]),
    ("csv-backslash-not-special", CSV, b"a\\,b\\N,\\.\n", [(False, [b"a\\", b"b\\N", b"\\."])]),
    ("csv-dot-quoted", CSV, b'"\\."\n', [(False, [b"\\."])]),
    ("csv-header", CSV_HEADER, b'id;"na;me"\n1;2\n', [
        (True, [b"id", b"na;me"]), (False, [b"1", b"2"])]),
    ("csv-empty-line", CSV, b"\n", [(False, [None])]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "data", "expected"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_vectors_whole_bytewise_and_split_everywhere(
    fmt: CopyFormat, data: bytes, expected: Rows
) -> None:
    for chunks in (whole(data), bytewise(data), *two_ways(data)):
        assert feed_all(fmt, chunks) == (expected, data)


@pytest.mark.parametrize(
    ("fmt", "data", "expected"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_vectors_with_a_next_row_trailing(fmt: CopyFormat, data: bytes, expected: Rows) -> None:
    # The start of a next row whose first value holds a newline, then the rest of it.
    rest = fmt.delimiter * (len(expected[-1][1]) - 1) + b"\n"
    q = fmt.quote
    trailing, end = (q + b"x\ny", q + rest) if fmt.format == "csv" else (b"x\\\ny", rest)
    for chunks in (whole(data + trailing), bytewise(data + trailing)):
        sp = CopySplitter(fmt)
        lines = [line for chunk in chunks for line in sp.feed(chunk)]
        assert [(ln.header, ln.values) for ln in lines] == expected
        assert sp.pending == len(trailing)
        with pytest.raises(CopyDataError, match="ends inside a row"):
            sp.finish()
        (last,) = sp.feed(end)
        assert last.raw == trailing + end
        assert last.values[0] == b"x\ny"
        assert len(last.values) == len(expected[-1][1])
        sp.finish()


def test_zero_columns() -> None:
    for fmt in (TEXT, CSV):
        assert feed_all(fmt, [b"\n\n"], columns=0) == ([(False, []), (False, [])], b"\n\n")
        assert encode_row(fmt, []) == b"\n"
        with pytest.raises(CopyDataError, match="zero columns"):
            split_copy(fmt, b"x\n", columns=0)


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        (TEXT, b"a\rb\n", "carriage return"),
        (TEXT, b"a\\b\rc\n", "carriage return"),
        (TEXT, b"\\.\n", "end-of-copy"),
        (TEXT, b"a\t\\.b\n", "end-of-copy"),
        (TEXT, b"\\0\n", "NUL"),
        (TEXT, b"a\\x00b\n", "NUL"),
        (TEXT, b"a\\000\n", "NUL"),
        (TEXT, b"a\x00b\n", "NUL"),
        (TEXT, b"abc", "inside a row"),
        (TEXT, b"abc\\\n", "inside a row"),  # the LF is escaped: the row goes on
        (TEXT, b"a\tb\nc\n", "1 fields, expected 2"),
        (CSV, b"a\rb\n", "carriage return"),
        (CSV, b"a,b\r\n", "carriage return"),
        (CSV, b'"abc\n', "inside a row"),
        (CSV, b"\\.\n", "end-of-copy"),
        (CSV, b"a\x00\n", "NUL"),
        (CSV, b'a,"b"\n"c"\n', "1 fields, expected 2"),
        (CSV_BACKSLASH, b"'a\\'\n", "inside a row"),  # \' is a quote, not the end
    ],
)
def test_refused_input(fmt: CopyFormat, data: bytes, message: str) -> None:
    with pytest.raises(CopyDataError, match=message):
        split_copy(fmt, data)


def test_column_count_is_checked_against_the_response() -> None:
    with pytest.raises(CopyDataError, match="2 fields, expected 3"):
        split_copy(TEXT, b"a\tb\n", columns=3)


def test_limit_on_an_unfinished_row() -> None:
    sp = CopySplitter(TEXT, max_line=8)
    assert sp.feed(b"12345678") == []
    with pytest.raises(CopyDataError, match="longer than the limit"):
        sp.feed(b"9")
    assert [ln.values for ln in CopySplitter(TEXT, max_line=8).feed(b"1234567890\n")] == [
        [b"1234567890"]
    ]


def test_binary_is_refused() -> None:
    binary = CopyFormat.of("binary")
    with pytest.raises(CopyDataError, match="binary"):
        CopySplitter(binary)
    with pytest.raises(CopyDataError, match="binary"):
        CopyEncoder(binary)


# -- formats ------------------------------------------------------------------------


def test_defaults_are_postgresqls() -> None:
    assert CopyFormat.of() == TEXT == CopyFormat("text", b"\t", b"\\N")
    assert CopyFormat.of("csv") == CSV == CopyFormat("csv", b",", b"", b'"', b'"')
    assert CopyFormat.of("csv", quote=b"'").escape == b"'"
    fq = CopyFormat.of("csv", force_quote="*")
    assert fq.force_quote_all
    assert fq.force_quote == ()
    assert CopyFormat.of("csv", force_quote="a").force_quote == ("a",)
    assert CopyFormat.of(delimiter=b"X").delimiter == b"X"  # upper case is not an escape


@pytest.mark.parametrize(
    "options",
    [
        {"format": "json"},
        {"format": "CSV"},  # PostgreSQL compares the name as written
        {"quote": b"'"},
        {"escape": b"\\"},
        {"force_quote": ["a"]},
        {"format": "binary", "delimiter": b","},
        {"format": "binary", "null": b"x"},
        {"format": "binary", "header": True},
        {"delimiter": b"ab"},
        {"delimiter": b""},
        {"delimiter": b"\n"},
        {"delimiter": b"\r"},
        {"delimiter": b"\xe9"},
        {"delimiter": b"a"},
        {"delimiter": b"\\"},
        {"delimiter": b"."},
        {"delimiter": b"1"},
        {"null": b"a\nb"},
        {"null": b"a\tb"},
        {"null": b"\\."},
        {"null": b"a\\"},
        {"format": "csv", "null": b'"x'},
        {"format": "csv", "delimiter": b'"'},
        {"format": "csv", "quote": b"''"},
        {"format": "csv", "escape": b""},
        {"format": "csv", "quote": b"\n"},
    ],
)
def test_refused_options(options: dict[str, object]) -> None:
    with pytest.raises(CopyDataError):
        CopyFormat.of(**options)  # type: ignore[arg-type]


def test_accepted_edge_options() -> None:
    CopyFormat.of(null=b"\\\\.")  # an escaped backslash, then a dot
    CopyFormat.of("csv", delimiter=b"\\", null=b"x.")
    CopyFormat.of("csv", escape=b",")


def test_force_quote_columns() -> None:
    fmt = CopyFormat.of("csv", force_quote=["c", "a"])
    assert fmt.force_quote_columns(["a", "b", "c"]) == {0, 2}
    with pytest.raises(CopyDataError, match="not referenced"):
        fmt.force_quote_columns(["a", "b"])
    assert CopyFormat.of("csv", force_quote="*").force_quote_columns(["a", "b"]) == {0, 1}


@pytest.mark.parametrize(
    ("name", "embeds"),
    [
        *[(n, True) for n in ("SJIS", "Shift_JIS", "win932", "BIG5", "GB18030", "gbk", "UHC")],
        *[(n, False) for n in ("UTF8", "utf-8", "LATIN1", "EUC_JP", "SQL_ASCII", "WIN1252")],
    ],
)
def test_encoding_embeds_ascii(name: str, embeds: bool) -> None:
    assert encoding_embeds_ascii(name) is embeds


# -- encoding -----------------------------------------------------------------------

ENCODED: list[tuple[CopyFormat, list[Value], bytes, frozenset[int]]] = [
    (TEXT, [b"a\tb", None, b"\\N", b"x\ny\\", b"\b\f\r\v", b"\x01"],
     b"a\\tb\t\\N\t\\\\N\tx\\ny\\\\\t\\b\\f\\r\\v\t\x01\n", frozenset()),
    (TEXT_PIPE, [b"a|b", b"\t", None], b"a\\|b|\\t|nil\n", frozenset()),
    (CopyFormat.of(delimiter=b"\x01"), [b"a\x01b", b"c"], b"a\\\x01b\x01c\n", frozenset()),
    (TEXT_PIPE, [b"nil", b"nilx"], b"\\156il|nilx\n", frozenset()),  # not NULL: octal
    (CopyFormat.of(null=b"\\\\"), [b"\\", None], b"\\134\t\\\\\n", frozenset()),
    (TEXT, [b""], b"\n", frozenset()),
    (CSV, [b"", None, b'a"b', b"a,b", b"x\ny", b"c\rd", b"plain", b"\\.", b"a\\"],
     b'"",,"a""b","a,b","x\ny","c\rd",plain,\\.,a\\\n', frozenset()),
    (CSV, [b"\\."], b'"\\."\n', frozenset()),
    (CSV, [None], b"\n", frozenset()),
    (CSV_NULL, [b"NULL", b"", None], b'"NULL",,NULL\n', frozenset()),
    (CSV_BACKSLASH, [b"it's \\ok", b"\\", b"a,b"], b"'it\\'s \\\\ok',\\,'a,b'\n", frozenset()),
    (CSV, [b"a", None, b"c"], b'"a",,"c"\n', frozenset({0, 2})),
    (CopyFormat.of("csv", force_quote="*"), [b"a", None, b""], b'"a",,""\n', frozenset()),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "values", "line", "force"), ENCODED)
def test_encode(fmt: CopyFormat, values: list[Value], line: bytes, force: frozenset[int]) -> None:
    assert CopyEncoder(fmt, force_quote=force).encode(values) == line
    (back,) = split_copy(fmt, line)
    assert back.values == values
    assert back.raw == line


@pytest.mark.parametrize(
    ("fmt", "values", "message"),
    [
        (CopyFormat.of(null=b""), [b""], "NULL ''"),
        (TEXT, [b"a\x00"], "NUL"),
        (CSV, [b"a\x00"], "NUL"),
        (CopyFormat.of("csv", null=b"\\."), [None], "alone"),
    ],
)
def test_encode_refuses_what_copy_from_would_misread(
    fmt: CopyFormat, values: list[Value], message: str
) -> None:
    with pytest.raises(CopyDataError, match=message):
        encode_row(fmt, values)


# -- hypothesis ---------------------------------------------------------------------

SPECIAL = [b"\t", b"\n", b"\r", b"\\", b'"', b"'", b",", b";", b"|", b".", b"N", b"x", b"0"]
BYTES = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.binary(min_size=1, max_size=3)), max_size=8
).map(lambda parts: b"".join(parts).replace(b"\x00", b"\x01"))


@st.composite
def formats(draw: st.DrawFn) -> CopyFormat:
    csv = draw(st.booleans())
    header = draw(st.booleans())
    pick = st.sampled_from([b"\t", b",", b";", b"|", b"\x01", b" ", b"X", b"\\", b"'", b'"'])
    options: dict[str, object] = {"delimiter": draw(pick), "header": header}
    if draw(st.booleans()):
        options["null"] = draw(st.sampled_from([b"", b"\\N", b"NULL", b"nil", b"\\\\", b"\\."]))
    if csv:
        options["quote"] = draw(st.sampled_from([b'"', b"'", b"|"]))
        options["escape"] = draw(st.sampled_from([b'"', b"\\", b"'", b"|"]))
        if draw(st.booleans()):
            options["force_quote"] = "*"
    try:
        return CopyFormat.of("csv" if csv else "text", **options)  # type: ignore[arg-type]
    except CopyDataError:
        return CopyFormat.of("csv" if csv else "text", header=header)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ
@given(
    fmt=formats(),
    ncols=st.integers(0, 4),
    table=st.lists(st.lists(st.one_of(st.none(), BYTES), min_size=4, max_size=4), max_size=5),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_encode_then_split_gives_the_values_back(
    fmt: CopyFormat, ncols: int, table: list[list[Value]], cuts: list[int]
) -> None:
    rows = [row[:ncols] for row in table]
    enc = CopyEncoder(fmt)
    lines: list[bytes] = []
    expected: Rows = []
    if fmt.header:
        names = [b"c\t,;|'\"\n" * (i + 1) for i in range(ncols)]
        lines.append(enc.encode(names))
        expected.append((True, list(names)))
    for row in rows:
        try:
            lines.append(enc.encode(row))
        except CopyDataError:
            # The two values COPY FROM could not read back: '' with a text NULL of '',
            # and a lone NULL written as \. in CSV.
            text_empty = fmt.format == "text" and fmt.null == b"" and b"" in row
            csv_dot = fmt.format == "csv" and fmt.null == b"\\." and row == [None]
            assert text_empty or csv_dot
            continue
        expected.append((False, row))
    data = b"".join(lines)
    for chunks in (whole(data), splits(data, cuts)):
        assert feed_all(fmt, chunks, ncols) == (expected, data)


@FUZZ
@given(fmt=formats(), data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 500)))
def test_fuzz_random_bytes_only_ever_raise_copy_data_error(
    fmt: CopyFormat, data: bytes, cuts: list[int]
) -> None:
    sp = CopySplitter(fmt)
    raw = b""
    try:
        for chunk in splits(data, cuts):
            for line in sp.feed(chunk):
                assert all(
                    v is None or (type(v) is bytes and b"\x00" not in v) for v in line.values
                )
                raw += line.raw
        sp.finish()
    except CopyDataError:
        return
    assert raw == data


@FUZZ
@given(
    fmt=formats(),
    table=st.lists(st.lists(st.one_of(st.none(), BYTES), min_size=3, max_size=3), max_size=4),
    noise=st.lists(st.tuples(st.integers(0, 500), st.sampled_from([*SPECIAL, b"\x00"]))),
)
def test_fuzz_mutated_streams(
    fmt: CopyFormat, table: list[list[Value]], noise: list[tuple[int, bytes]]
) -> None:
    enc = CopyEncoder(fmt)
    data = bytearray()
    for row in table:
        with contextlib.suppress(CopyDataError):
            data += enc.encode(row)
    for at, junk in noise:
        data[at % (len(data) + 1) : at % (len(data) + 1)] = junk
    with contextlib.suppress(CopyDataError):
        split_copy(fmt, bytes(data))
