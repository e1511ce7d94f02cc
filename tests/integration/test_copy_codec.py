"""The COPY text/CSV codec against PostgreSQL itself, on the shared cluster (``pg``).

A table of awkward values (tabs, newlines, CRs, backslashes, quotes, delimiters, the
NULL markers and ``\\.`` as literal strings, empty strings, NULLs, unicode, arrays and
bytea) is copied out with psycopg under several option sets, modern and legacy. For each:
the raw CopyData bytes, split by the codec, equal a SELECT of the same columns as text;
the encoder writes PostgreSQL's own bytes back, byte for byte; and rows whose values were
replaced ("masked", with the NULL marker and ``\\.`` among the new values) go back in
through COPY FROM STDIN and read back exactly as written.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import TupleRow

from ledgergate.core.policy.copy import copy_facts
from ledgergate.wire.pg.copytext import (
    CopyDataError,
    CopyEncoder,
    CopyFormat,
    CopyLine,
    CopySplitter,
    Value,
)
from tests.integration.pgcluster import PgCluster

pytestmark = pytest.mark.integration

AWKWARD: list[str | None] = [
    *("plain", "tab\there", "new\nline", "cr\rhere", "crlf\r\n", "back\\slash", "\\N"),
    *("\\.", ".", "a\\.b", "end\\", 'quote"q', "single'q", "comma,here", "semi;colon"),
    *("pipe|x", "", None, "é日本🙂", "NULL", "nul", "\b\f\v\x01", " lead and trail "),
    *('"', ",", "\\", '""', "\\x41", "\\101", "'", "!", "!'"),
]
ODD = '"odd ""name"", here;|"'  # a column name a header has to quote or escape
COLUMNS = ["id", "t", "arr", "b", 'odd "name", here;|']
AS_TEXT = f"id::text, t, arr::text, b::text, {ODD}::text"

# Options for COPY TO, and for COPY FROM when they differ (FORCE_QUOTE is COPY TO's only).
OPTIONS: list[tuple[str, str | None]] = [
    ("", None),
    ("(FORMAT text, HEADER)", None),
    ("(DELIMITER '|', NULL '<null>')", None),
    ("(DELIMITER ',')", None),
    ("(FORMAT csv)", None),
    ("(FORMAT csv, HEADER, DELIMITER ';', NULL 'NULL')", None),
    ("(FORMAT csv, QUOTE '''', ESCAPE '\\')", None),
    ("(FORMAT csv, DELIMITER E'\\t', QUOTE '!', ESCAPE '''')", None),
    ("(FORMAT csv, FORCE_QUOTE *)", "(FORMAT csv)"),
    ("(FORMAT csv, FORCE_QUOTE (t, id), NULL 'nul')", "(FORMAT csv, NULL 'nul')"),
    ("WITH CSV HEADER DELIMITER '|' FORCE QUOTE t", "WITH CSV HEADER DELIMITER '|'"),
    ("WITH DELIMITER '|' NULL AS '<nil>'", None),
]


Conn = psycopg.Connection[TupleRow]


@pytest.fixture(scope="module")
def conn(pg: PgCluster) -> Iterator[Conn]:
    """A connection to ``app`` whose search_path is a schema of its own, dropped after."""
    schema = f"copy_codec_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn("app"), autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
        c.execute(f"SET search_path TO {schema}")
        c.execute(f"CREATE TABLE src (id int, t text, arr text[], b bytea, {ODD} int)")
        c.execute("CREATE TABLE dst (LIKE src)")
        c.execute("CREATE TABLE dst1 (n serial, t text)")
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO src VALUES (%s, %s, %s, %s, %s)",
                [
                    (
                        i,
                        v,
                        None if v is None else [v, None, "x"],
                        None if v is None else v.encode(),
                        None if i % 3 else i,
                    )
                    for i, v in enumerate(AWKWARD)
                ],
            )
        try:
            yield c
        finally:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


def copy_out(conn: Conn, sql: str) -> list[bytes]:
    with conn.cursor() as cur, cur.copy(sql) as copy:
        return [bytes(data) for data in copy]


def copy_in(conn: Conn, sql: str, data: bytes) -> None:
    with conn.cursor() as cur, cur.copy(sql) as copy:
        copy.write(data)


def select(conn: Conn, sql: str) -> list[list[Value]]:
    return [[None if v is None else str(v).encode() for v in row] for row in conn.execute(sql)]


def split(fmt: CopyFormat, payloads: list[bytes], columns: int) -> list[CopyLine]:
    """Split as the gateway would (message by message), checked against other feeds."""
    sp = CopySplitter(fmt, columns=columns)
    lines = [line for p in payloads for line in sp.feed(p)]
    sp.finish()
    data = b"".join(payloads)
    bytewise = CopySplitter(fmt, columns=columns)
    assert [ln for i in range(len(data)) for ln in bytewise.feed(data[i : i + 1])] == lines
    one = CopySplitter(fmt, columns=columns)
    assert one.feed(data) == lines
    assert b"".join(ln.raw for ln in lines) == data
    return lines


def masked(rows: list[list[Value]], col: int, fmt: CopyFormat) -> list[list[Value]]:
    """Column ``col`` of each row replaced by another awkward value; the NULL marker and
    ``\\.`` as strings are among them (the encoder must keep them from reading as NULL or
    as the end of the data)."""
    pool: list[Value] = [None if v is None else v.encode() for v in AWKWARD]
    pool += [fmt.null, b"\\.", b"x" * 3000]
    if fmt.format == "text" and fmt.null == b"":
        pool = [v for v in pool if v != b""]  # '' cannot be told from NULL '' in text
    out = []
    for i, row in enumerate(rows):
        row = list(row)
        row[col] = pool[(i * 7 + 3) % len(pool)]
        out.append(row)
    return out


@pytest.mark.parametrize(("to_opts", "from_opts"), OPTIONS)
def test_table_out_split_reencoded_and_back_in(
    conn: Conn, to_opts: str, from_opts: str | None
) -> None:
    facts = copy_facts(f"COPY src TO STDOUT {to_opts}")
    assert facts is not None
    assert (facts.table, facts.columns) == ("src", None)
    fmt = facts.format
    lines = split(fmt, copy_out(conn, f"COPY src TO STDOUT {to_opts}"), len(COLUMNS))

    header = [ln for ln in lines if ln.header]
    rows = [ln for ln in lines if not ln.header]
    if fmt.header:
        assert lines[0].header
        assert lines[0].values == [c.encode() for c in COLUMNS]
    else:
        assert not header
    by_id = sorted(rows, key=lambda ln: int(ln.values[0] or b"0"))
    expected = select(conn, f"SELECT {AS_TEXT} FROM src ORDER BY src.id")
    assert [ln.values for ln in by_id] == expected

    # The encoder writes what PostgreSQL wrote.
    enc = CopyEncoder(fmt, force_quote=fmt.force_quote_columns(COLUMNS))
    assert [enc.encode(ln.values) for ln in rows] == [ln.raw for ln in rows]

    # Masked rows go back in through COPY FROM and read back as written.
    new = masked([ln.values for ln in by_id], 1, fmt)
    conn.execute("TRUNCATE dst")
    data = b"".join(ln.raw for ln in header) + b"".join(enc.encode(r) for r in new)
    copy_in(conn, f"COPY dst FROM STDIN {from_opts or to_opts}", data)
    assert select(conn, f"SELECT {AS_TEXT} FROM dst ORDER BY dst.id") == new


@pytest.mark.parametrize(("to_opts", "from_opts"), OPTIONS)
def test_one_column_query_out_and_back_in(conn: Conn, to_opts: str, from_opts: str | None) -> None:
    # One column: the case where a value of \. alone on a line would end the data.
    to_opts = to_opts.replace("(t, id)", "(t)")
    sql = f"COPY (SELECT t FROM src ORDER BY id) TO STDOUT {to_opts}"
    facts = copy_facts(sql)
    assert facts is not None
    assert (facts.query, facts.names) == ("SELECT t FROM src ORDER BY id", ("t",))
    fmt = facts.format
    lines = split(fmt, copy_out(conn, sql), 1)
    header = [ln for ln in lines if ln.header]
    rows = [ln for ln in lines if not ln.header]
    assert [ln.values for ln in rows] == select(conn, "SELECT t FROM src ORDER BY id")
    enc = CopyEncoder(fmt, force_quote=fmt.force_quote_columns(["t"]))
    assert [enc.encode(ln.values) for ln in rows] == [ln.raw for ln in rows]

    new = masked([ln.values for ln in rows], 0, fmt)
    conn.execute("TRUNCATE dst1 RESTART IDENTITY")
    data = b"".join(ln.raw for ln in header) + b"".join(enc.encode(r) for r in new)
    copy_in(conn, f"COPY dst1 (t) FROM STDIN {from_opts or to_opts}", data)
    assert select(conn, "SELECT t FROM dst1 ORDER BY n") == new


# -- the splitter reads what COPY FROM reads ----------------------------------------

TOKENS = [b"a", b"\\", b"\t", b",", b'"', b"'", b"\n", b"\r", b"N", b"0", b"1", b"7", b"x", b"4"]
TOKENS += [b".", b"|", b";", "é".encode(), b"NULL", b"\\N", b"\\."]
DIFF_FORMATS = [
    ("", CopyFormat.of()),
    ("(DELIMITER '|', NULL 'nil')", CopyFormat.of(delimiter=b"|", null=b"nil")),
    ("(FORMAT csv)", CopyFormat.of("csv")),
    (
        "(FORMAT csv, NULL 'NULL', DELIMITER ';')",
        CopyFormat.of("csv", null=b"NULL", delimiter=b";"),
    ),
    ("(FORMAT csv, QUOTE '''', ESCAPE '\\')", CopyFormat.of("csv", quote=b"'", escape=b"\\")),
]
# Where the splitter is stricter than COPY FROM, on purpose, refusing what COPY TO never
# writes: a CR line end, \. at a line's start (the old end-of-data marker), and data
# that ends inside a row (COPY FROM takes the end of the data as the end of a row).
STRICTER = ("carriage return", "end-of-copy marker", "ends inside a row")


@pytest.mark.parametrize(("opts", "fmt"), DIFF_FORMATS, ids=[o or "text" for o, _ in DIFF_FORMATS])
def test_splitter_agrees_with_copy_from_on_random_data(
    conn: Conn, opts: str, fmt: CopyFormat
) -> None:
    rng = random.Random(f"copy-{opts}")
    conn.execute("CREATE TABLE IF NOT EXISTS diff (n serial, c1 text, c2 text)")
    for _ in range(200):
        data = b"".join(
            field(rng) + fmt.delimiter + field(rng) + b"\n" for _ in range(rng.randrange(1, 4))
        )
        try:
            ours: list[list[Value]] | None = [ln.values for ln in split(fmt, [data], 2)]
            error = ""
        except CopyDataError as e:
            ours, error = None, str(e)
        conn.execute("TRUNCATE diff RESTART IDENTITY")
        try:
            copy_in(conn, f"COPY diff (c1, c2) FROM STDIN {opts}", data)
        except psycopg.errors.CharacterNotInRepertoire:
            # Escapes that decode to bytes that are not UTF-8 (or to NUL): COPY FROM checks
            # the encoding, the splitter leaves that to whoever decodes the values.
            assert ours is None or any(
                v is not None and not _utf8(v) for row in ours for v in row
            ), data
            continue
        except psycopg.Error:
            assert ours is None, data  # never accept what PostgreSQL refuses
            continue
        theirs = select(conn, "SELECT c1, c2 FROM diff ORDER BY n")
        if ours is None:
            assert any(s in error for s in STRICTER), (data, error)
        else:
            assert ours == theirs, data


def field(rng: random.Random) -> bytes:
    """A few tokens: mostly plain, sometimes quoted, escaped or broken."""
    q = rng.choice([b"", b"", b'"', b"'"])
    return q + b"".join(rng.choice(TOKENS) for _ in range(rng.randrange(5))) + q


def _utf8(v: bytes) -> bool:
    try:
        v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
