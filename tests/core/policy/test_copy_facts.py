"""core/policy/copy.py: the facts of a COPY ... TO STDOUT, from its SQL text, in every
spelling of its options PostgreSQL accepts."""

from __future__ import annotations

import pytest

from ledgergate.core.policy.copy import CopyFacts, copy_facts
from ledgergate.core.policy.sql import Target
from ledgergate.wire.pg.copytext import CSV, TEXT, CopyDataError, CopyFormat


def facts(sql: str, **kw: str) -> CopyFacts:
    f = copy_facts(sql, **kw)
    assert f is not None
    return f


def test_relation_with_all_columns() -> None:
    f = facts("COPY t TO STDOUT")
    assert (f.schema, f.table, f.columns, f.query, f.targets) == (None, "t", None, None, ())
    assert f.format == TEXT
    assert f.names is None
    assert f.encoding is None


def test_relation_names_as_postgresql_resolves_them() -> None:
    f = facts('copy /* hi */ Public."My Table" ("A", b, "c d") to stdout;')
    assert (f.schema, f.table, f.columns) == ("public", "My Table", ("A", "b", "c d"))
    assert f.names == ("A", "b", "c d")


def test_to_stdin_is_to_stdout() -> None:
    assert facts("COPY t TO STDIN").table == "t"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "COPY t FROM STDIN",
        "COPY t FROM STDIN WITH (FORMAT csv)",
        "COPY t TO '/tmp/out'",
        "COPY t TO PROGRAM 'cat'",
        "COPY (SELECT 1) TO '/tmp/out'",
        "COPY t TO STDOUT; COPY u TO STDOUT",
        "SELECT 1; COPY t TO STDOUT",
        "COPY t TO",
        "COPY t TO STDOUT\x00",
        "",
        "EXPLAIN SELECT 1",
    ],
)
def test_not_a_copy_to_stdout(sql: str) -> None:
    assert copy_facts(sql) is None


# -- options ------------------------------------------------------------------------

SAME_FORMAT = [
    (
        CopyFormat.of("csv", header=True, delimiter=b";"),
        [
            "COPY t TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';')",
            "COPY t TO STDOUT (FORMAT 'csv', HEADER, DELIMITER ';')",
            "COPY t TO STDOUT WITH CSV HEADER DELIMITER ';'",
            "COPY t TO STDOUT CSV HEADER DELIMITER AS ';'",
            "COPY t TO STDOUT WITH DELIMITER ';' CSV HEADER",
        ],
    ),
    (
        CopyFormat.of("csv", force_quote="*"),
        ["COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE *)", "COPY t TO STDOUT CSV FORCE QUOTE *"],
    ),
    (
        CopyFormat.of("csv", force_quote=["a", "B"]),
        [
            'COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (a, "B"))',
            'COPY t TO STDOUT CSV FORCE QUOTE a, "B"',
        ],
    ),
    (
        CopyFormat.of("csv", quote=b"'", escape=b"\\", null=b"x"),
        [
            "COPY t TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\\', NULL 'x')",
            "COPY t TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE E'\\\\', NULL 'x')",
            "COPY t TO STDOUT WITH CSV QUOTE AS '''' ESCAPE AS '\\' NULL AS 'x'",
            "COPY t TO STDOUT WITH NULL AS 'x' CSV QUOTE '''' ESCAPE '\\'",
        ],
    ),
    (
        CopyFormat.of(delimiter=b"|", null=b""),
        [
            "COPY t TO STDOUT (DELIMITER '|', NULL '')",
            "COPY t TO STDOUT (FORMAT text, DELIMITER '|', NULL '')",
            "COPY t TO STDOUT USING DELIMITERS '|' WITH NULL AS ''",
            "COPY t TO STDOUT DELIMITER '|' NULL ''",
        ],
    ),
    (
        CopyFormat.of(delimiter=b"\t", header=True),
        [
            "COPY t TO STDOUT (HEADER, DELIMITER E'\\t')",
            "COPY t TO STDOUT (HEADER on)",
            "COPY t TO STDOUT (HEADER 1)",
            "COPY t TO STDOUT (HEADER 'TRUE')",
            "COPY t TO STDOUT WITH HEADER",
        ],
    ),
    (TEXT, ["COPY t TO STDOUT (HEADER off)", "COPY t TO STDOUT (HEADER 0, FORMAT text)"]),
    (CSV, ["COPY t TO STDOUT (FORMAT csv, HEADER false)", "COPY t TO STDOUT CSV"]),
    (
        CopyFormat.of("binary"),
        ["COPY t TO STDOUT (FORMAT binary)", "COPY t TO STDOUT BINARY", "COPY BINARY t TO STDOUT"],
    ),
]


@pytest.mark.parametrize(
    ("expected", "sql"), [(fmt, sql) for fmt, sqls in SAME_FORMAT for sql in sqls]
)
def test_every_spelling_of_the_options(expected: CopyFormat, sql: str) -> None:
    assert facts(sql).format == expected


def test_encoding_option_and_null_in_the_client_encoding() -> None:
    f = facts("COPY t TO STDOUT (FORMAT csv, ENCODING 'LATIN1', NULL 'n/a')")
    assert (f.encoding, f.format.null) == ("LATIN1", b"n/a")
    assert facts("COPY t TO STDOUT (NULL 'é')").format.null == "é".encode()
    assert facts("COPY t TO STDOUT (NULL 'é')", encoding="latin-1").format.null == b"\xe9"


def test_copy_from_only_options_change_nothing() -> None:
    assert facts("COPY t TO STDOUT (FORMAT csv, FORCE_NOT_NULL (a), FREEZE)").format == CSV


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY t TO STDOUT (FORMAT parquet)", "not recognized"),
        ("COPY t TO STDOUT (FORMAT 'CSV')", "not recognized"),
        ("COPY t TO STDOUT (FORMAT)", "requires a parameter"),
        ("COPY t TO STDOUT (SPEED fast)", "'speed' not recognized"),
        ("COPY t TO STDOUT (FORMAT csv, FORMAT text)", "redundant"),
        ("COPY t TO STDOUT CSV CSV", "redundant"),
        ("COPY t TO STDOUT (HEADER match)", "match"),
        ("COPY t TO STDOUT (HEADER 2)", "Boolean"),
        ("COPY t TO STDOUT (HEADER maybe)", "Boolean"),
        ("COPY t TO STDOUT (QUOTE '''')", "requires CSV"),
        ("COPY t TO STDOUT (FORCE_QUOTE *)", "requires CSV"),
        ("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE a)", "list of column names"),
        ("COPY t TO STDOUT (DELIMITER 'ab')", "one-byte"),
        ("COPY t TO STDOUT (DELIMITER 'é')", "one-byte"),
        ("COPY t TO STDOUT (DELIMITER 'a')", "cannot be"),
        ("COPY t TO STDOUT (FORMAT binary, DELIMITER ',')", "BINARY"),
        ("COPY t TO STDOUT (FORMAT binary, HEADER)", "BINARY"),
        ("COPY t TO STDOUT (DELIMITER ',', NULL 'a,b')", "NULL specification"),
        ("COPY t TO STDOUT (FORMAT csv, QUOTE ',')", "different"),
        ("COPY t TO STDOUT (ENCODING 'SJIS')", "byte-wise"),
        ("COPY t TO STDOUT (ENCODING 'LATIN1', NULL 'é')", "encoding"),
    ],
)
def test_refused_options(sql: str, message: str) -> None:
    with pytest.raises(CopyDataError, match=message):
        copy_facts(sql)


# -- the query form -----------------------------------------------------------------


def test_query_text_and_output_names() -> None:
    f = facts("COPY (SELECT a, b AS x, 1, t.*, lower(c), c::text FROM t) TO STDOUT CSV HEADER")
    assert f.query == "SELECT a, b AS x, 1, t.*, lower(c), c::text FROM t"
    assert f.names == ("a", "x", "?column?", "*", "lower", "c")
    assert f.targets[0] == Target("a", "t", "a", False)
    assert f.targets[3] == Target("*", "t", None, True)
    assert (f.table, f.columns) == (None, None)
    assert f.format == CopyFormat.of("csv", header=True)


def test_query_text_survives_comments_strings_and_unicode() -> None:
    f = facts("COPY /* ( */ (\n  SELECT 'é(' AS \"ü)\", (1) -- )\n FROM t\n) TO STDOUT")
    assert f.query == "SELECT 'é(' AS \"ü)\", (1) -- )\n FROM t"
    assert f.names == ("ü)", "?column?")


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("COPY (VALUES (1, 2), (3, 4)) TO STDOUT", ("column1", "column2")),
        ("COPY (VALUES (1) UNION SELECT 2) TO STDOUT", ("column1",)),
        ("COPY (SELECT 1 AS one UNION VALUES (2)) TO STDOUT", ("one",)),
        ("COPY (TABLE t) TO STDOUT", ("*",)),
        ("COPY (WITH w AS (SELECT 1 AS k) SELECT k FROM w) TO STDOUT", ("k",)),
        ("COPY (DELETE FROM t WHERE a RETURNING a, b AS bee) TO STDOUT", ("a", "bee")),
        ("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", ("*",)),
        ("COPY ((SELECT a FROM t)) TO STDOUT", ("a",)),
    ],
)
def test_query_output_names(sql: str, names: tuple[str, ...]) -> None:
    assert facts(sql).names == names
