"""core/sqltext.py: literal redaction and statement splitting with PostgreSQL's scanner."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import parser

from ledgergate.core import sqltext
from ledgergate.core._sqlshape import shape
from ledgergate.core.sqltext import MAX_SCAN, redact, redact_simple, split_statements

SECRET = "Zq9-secret-VALUE"
SECRET_NUMBER = "7391846205"
LITERAL_TOKENS = {"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"}
WITHHELD = "<statement the SQL scanner rejects; text withheld>"
REDACTORS = [redact, redact_simple]


def literal_tokens(text: str) -> list[str]:
    """The literal tokens PostgreSQL's scanner finds in a redacted text."""
    if text.startswith("<statement"):
        return []
    return [t.name for t in parser.scan(text) if t.name in LITERAL_TOKENS]


@pytest.mark.parametrize(
    "sql,expected",
    [
        (f"SELECT * FROM t WHERE pw = '{SECRET}'", "SELECT * FROM t WHERE pw = ?"),
        (f"SELECT E'{SECRET}\\n\\'q'", "SELECT ?"),
        (f"SELECT e'\\x41{SECRET}'", "SELECT ?"),
        (f"SELECT $${SECRET}$$", "SELECT ?"),
        (f"SELECT $tag${SECRET} $$ ; 'x' $tag$", "SELECT ?"),
        (f"SELECT U&'d\\0061t{SECRET}'", "SELECT ?"),
        (f"SELECT U&'d!0061t{SECRET}' UESCAPE '!'", "SELECT ? UESCAPE ?"),
        (f"SELECT n'{SECRET}'", "SELECT n?"),  # NCHAR keyword, then the string
        (f"SELECT '{SECRET}' 'continued'", "SELECT ? ?"),
        ("SELECT 'can''t'", "SELECT ?"),
        (
            "SELECT 42, 3.14, 1e10, .5, 5., 0x1F, 0o17, 0b101, 1_000_000",
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?",
        ),
        ("SELECT -7", "SELECT -?"),
        ("SELECT B'1010', X'1F', b'0'", "SELECT ?, ?, ?"),
        (
            "SELECT interval '1 day', date '2020-01-01', 'x'::text",
            "SELECT interval ?, date ?, ?::text",
        ),
        (f"ALTER ROLE app PASSWORD '{SECRET}'", "ALTER ROLE app PASSWORD ?"),
    ],
)
def test_every_literal_kind_is_redacted(sql: str, expected: str) -> None:
    out = redact(sql)
    assert out == expected
    assert SECRET not in out


@pytest.mark.parametrize(
    "sql,expected",
    [
        ("SELECT $1, $2::int FROM t WHERE a = $10", "SELECT $1, $2::int FROM t WHERE a = $10"),
        (
            'SELECT "Col", "weird ""name""", U&"\\0041" FROM s.t AS x',
            'SELECT "Col", "weird ""name""", U&"\\0041" FROM s.t AS x',
        ),
        ("select  a,b\n\tfrom   t", "select a,b from t"),
        (
            "INSERT INTO t (a) VALUES ($1) RETURNING id",
            "INSERT INTO t (a) VALUES ($1) RETURNING id",
        ),
    ],
)
def test_parameters_identifiers_and_keywords_are_kept(sql: str, expected: str) -> None:
    assert redact(sql) == expected


@pytest.mark.parametrize(
    "sql,expected",
    [
        (f"SELECT 1 -- {SECRET}\nFROM t", "SELECT ? FROM t"),
        (f"SELECT /* {SECRET} */ a FROM t", "SELECT a FROM t"),
        (f"SELECT /* outer /* {SECRET} */ still */ a", "SELECT a"),
        (f"-- only a comment {SECRET}", ""),
    ],
)
def test_comments_are_dropped(sql: str, expected: str) -> None:
    assert redact(sql) == expected


def test_non_ascii_text_keeps_its_offsets() -> None:
    sql = f"SELECT '日本語', naïve FROM tëst WHERE x = 'ß{SECRET}' AND y = 7"
    assert redact(sql) == "SELECT ?, naïve FROM tëst WHERE x = ? AND y = ?"


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT '{SECRET}",  # unterminated string
        f"SELECT $${SECRET}",  # unterminated dollar quote
        f"SELECT /* {SECRET}",  # unterminated comment
        f"SELECT E'\\{SECRET}",
        f"SELECT '{SECRET}\x00'",  # a NUL the scanner refuses
    ],
)
@pytest.mark.parametrize("fn", REDACTORS)
def test_unscannable_text_is_withheld(sql: str, fn: Callable[[str], str]) -> None:
    assert fn(sql) == WITHHELD


def test_oversized_statements_are_not_recorded() -> None:
    sql = f"INSERT INTO t VALUES ('{SECRET}', '" + "x" * MAX_SCAN + "')"
    out = redact(sql)
    assert SECRET not in out
    assert str(len(sql)) in out


def test_empty_text() -> None:
    assert redact("") == ""
    assert redact("   \n") == ""


@pytest.mark.parametrize(
    "sql,expected",
    [
        ("SELECT 1", ("SELECT 1",)),
        ("SELECT 1;", ("SELECT 1",)),
        ("  SELECT 1 ;; ", ("SELECT 1",)),
        ("", ()),
        ("; ;", ()),
        ("SELECT 1; SELECT 2", ("SELECT 1", "SELECT 2")),
        ("SELECT 'x;y' AS b; SELECT 2", ("SELECT 'x;y' AS b", "SELECT 2")),
        ("SELECT E'\\';'; SELECT 2", ("SELECT E'\\';'", "SELECT 2")),
        ("SELECT $$p;q$$; SELECT $t$;$t$", ("SELECT $$p;q$$", "SELECT $t$;$t$")),
        ('SELECT "a;b" FROM t; SELECT 2', ('SELECT "a;b" FROM t', "SELECT 2")),
        ("SELECT 1 /* ; */ ; SELECT 2", ("SELECT 1 /* ; */", "SELECT 2")),
        ("SELECT 1 -- x;y\n; SELECT 2", ("SELECT 1 -- x;y", "SELECT 2")),
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2 $$ LANGUAGE sql; SELECT f()",
            (
                "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2 $$ LANGUAGE sql",
                "SELECT f()",
            ),
        ),
        (
            "SELECT 1 AS a; SELECT 'x;y' AS b; SELECT $$p;q$$ AS c; "
            "CREATE TEMP TABLE lg_m (i int); INSERT INTO lg_m VALUES (1), (2)",
            (
                "SELECT 1 AS a",
                "SELECT 'x;y' AS b",
                "SELECT $$p;q$$ AS c",
                "CREATE TEMP TABLE lg_m (i int)",
                "INSERT INTO lg_m VALUES (1), (2)",
            ),
        ),
        ("SELECT 'é;'; SELECT 'ü'", ("SELECT 'é;'", "SELECT 'ü'")),
    ],
)
def test_split_statements(sql: str, expected: tuple[str, ...]) -> None:
    assert split_statements(sql) == expected


def test_split_unscannable_text_is_one_command() -> None:
    sql = f"SELECT 1; SELECT '{SECRET}"
    assert split_statements(sql) == (sql,)
    assert all(SECRET not in redact(s) for s in split_statements(sql))


def test_split_then_redact_never_leaks() -> None:
    sql = f"SELECT '{SECRET}'; UPDATE t SET a = $${SECRET}$$; SELECT 1 -- {SECRET}"
    parts = split_statements(sql)
    assert len(parts) == 3
    assert [redact(p) for p in parts] == ["SELECT ?", "UPDATE t SET a = ?", "SELECT ?"]


# --- redact_simple: libpg_query's normalizer, checked by the scanner -------------------------

# Statements whose constants pg_query's normalizer leaves in place (utility statements),
# next to DML it does normalize.
CORPUS = [
    f"EXECUTE p('{SECRET}', {SECRET_NUMBER})",
    f"PREPARE p AS SELECT $1, '{SECRET}'",
    f"COPY t FROM '/tmp/{SECRET}'",
    f"COMMENT ON TABLE t IS '{SECRET}'",
    f"CREATE TABLE t (a text DEFAULT '{SECRET}', b int DEFAULT {SECRET_NUMBER})",
    f"ALTER SYSTEM SET app.key = '{SECRET}'",
    f"ALTER ROLE r SET app.pin = {SECRET_NUMBER}",
    f"ALTER ROLE app PASSWORD '{SECRET}'",
    f"CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password '{SECRET}')",
    f"SECURITY LABEL ON TABLE t IS '{SECRET}'",
    f"CREATE SEQUENCE s START {SECRET_NUMBER}",
    f"FETCH {SECRET_NUMBER} FROM c",
    f"DECLARE c CURSOR FOR SELECT '{SECRET}'",
    f"EXPLAIN SELECT * FROM t WHERE a = '{SECRET}'",
    f"DO $$BEGIN PERFORM '{SECRET}'; END$$",
    f"SELECT $q${SECRET}$q$, E'{SECRET}\\n', U&'{SECRET}', B'1011', X'1F'",
    f"UPDATE accounts SET balance = balance + {SECRET_NUMBER} WHERE id = 4567",
    f"INSERT INTO t (a, b) VALUES ('{SECRET}', -{SECRET_NUMBER}), ('x', 1.5e10)",
    f"SELECT x::numeric(10, 2) FROM t WHERE a LIKE '{SECRET}' ESCAPE '!' LIMIT 5",
    f"SELECT ARRAY['{SECRET}'], '{{{SECRET}}}'::text[], row({SECRET_NUMBER})",
    f"CALL p('{SECRET}')",
    f"SET app.key = '{SECRET}'",
]


@pytest.mark.parametrize("fn", REDACTORS)
@pytest.mark.parametrize("sql", CORPUS)
def test_no_literal_survives(fn: Callable[[str], str], sql: str) -> None:
    out = fn(sql)
    assert SECRET not in out and SECRET_NUMBER not in out, out
    assert literal_tokens(out) == []


def test_redact_simple_on_dml() -> None:
    sql = "UPDATE pgbench_accounts SET abalance = abalance + 123 WHERE aid = 4567"
    assert redact_simple(sql) == "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?"
    assert redact_simple("SELECT col1, t2.x FROM t2 WHERE a = 5") == (
        "SELECT col1, t2.x FROM t2 WHERE a = ?"
    )
    assert redact_simple(f"SELECT 1 -- {SECRET}") == "SELECT ?"
    assert redact_simple(f"SELECT /* {SECRET} */ 1") == "SELECT ?"


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


SQL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
LITERALS = st.one_of(
    SQL_TEXT.map(lambda v: quoted("Zq9" + v)),
    SQL_TEXT.map(lambda v: "E" + quoted("Zq9" + v.replace("\\", "\\\\"))),
    SQL_TEXT.filter(lambda v: "$" not in v).map(lambda v: f"$q$Zq9{v}$q$"),
    st.integers(0, 10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0).map(repr),
    st.text("01", min_size=1, max_size=8).map(lambda v: f"B'{v}'"),
)
TEMPLATES = [
    "SELECT {0}",
    "SELECT a FROM t WHERE b = {0} AND c IN ({0}, 1)",
    "INSERT INTO t VALUES ({0}, $1)",
    "UPDATE t SET a = {0} WHERE b = {0}",
    "EXECUTE p({0})",
    "CALL p({0})",
    "ALTER ROLE r SET x = {0}",
    "SET x = {0}",
    "PREPARE p AS SELECT {0}",
    "CREATE TABLE t (a text DEFAULT {0})",
    "SELECT 1; SELECT {0}",
]


@given(template=st.sampled_from(TEMPLATES), literal=LITERALS)
def test_no_generated_literal_survives(template: str, literal: str) -> None:
    sql = template.format(literal)
    for fn in REDACTORS:
        for stmt in split_statements(sql):
            out = fn(stmt)
            assert "Zq9" not in out
            assert literal_tokens(out) == []


# Statements made of the pieces numbers can sit among: identifiers with digits, casts to
# types with digits, exponents, decimal points, signs, operators, keywords and the
# characters that take a text off the shape path (quotes, $, backslash, comments).
SHAPE_PIECES = st.sampled_from(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "LIMIT",
        "OFFSET",
        "AND",
        "IN",
        "t1",
        "col2",
        "x",
        "_3a",
        "e",
        "E",
        "x1e5",
        "::int4",
        "::numeric(10,2)",
        "(",
        ")",
        ",",
        ".",
        "=",
        "<",
        "+",
        "-",
        "*",
        "/",
        "#",
        "||",
        ";",
        "[",
        "]",
        "'a'",
        '"',
        "$1",
        "$$",
        "\\",
        "--",
        "/*",
        "*/",
        "é",
        " ",
        " ",
        "  ",
        "x1e5",
        "b",
        "o",
        "_",
    ]
)
NUMBERS = st.sampled_from(
    [
        "0",
        "7",
        "42",
        "1.5",
        ".5",
        "5.",
        "1e5",
        "1E-3",
        "00012",
        "99999999999999999999",
        "0x1F",
        "0b1",
        "0o7",
        "1_000",
    ]
)


def _render(parts: list[str | int], numbers: list[str]) -> str:
    return "".join(numbers[p % len(numbers)] if isinstance(p, int) else p for p in parts)


@given(
    parts=st.lists(st.one_of(SHAPE_PIECES, st.integers(0, 3)), min_size=1, max_size=14),
    first=st.lists(NUMBERS, min_size=4, max_size=4),
    second=st.lists(NUMBERS, min_size=4, max_size=4),
)
def test_statements_of_one_shape_share_exactly_the_redaction_each_would_get(
    parts: list[str | int], first: list[str], second: list[str]
) -> None:
    """redact_simple looks statements up by their shape (numbers taken out): the one
    that fills the cache and the one served from it must get what redacting each alone
    gives, byte for byte, for any mix of numbers with identifiers, casts and operators."""
    a, b = _render(parts, first), _render(parts, second)
    alone = sqltext._redact_simple.__wrapped__
    sqltext._shapes.clear()
    assert redact_simple(a) == alone(a)
    assert redact_simple(b) == alone(b)


@given(
    st.one_of(
        st.lists(st.one_of(SHAPE_PIECES, NUMBERS), max_size=16).map("".join),
        st.text(max_size=40),
        st.text("0123456789eExX_ .-/*'$ab", max_size=40),
    )
)
def test_the_native_shape_is_the_reference_shape(sql: str) -> None:
    assert shape(sql) == sqltext.shape_reference(sql)


def test_shape_bounds() -> None:
    long = "SELECT " + "1," * (sqltext.MAX_SHAPED // 2)
    assert shape(long) is None and sqltext.shape_reference(long) is None
    edge = "x" * (sqltext.MAX_SHAPED - 1) + "1"
    assert shape(edge) == sqltext.shape_reference(edge) == edge
    assert shape("") == "" and shape("7") == "$" and shape("e7") == "e7"
    with pytest.raises(TypeError):
        shape(b"SELECT 1")  # type: ignore[arg-type]


def test_numbers_share_a_shape_and_the_shape_cache_is_bounded() -> None:
    sqltext._shapes.clear()
    for aid in range(3 * sqltext._CACHE):
        assert redact_simple(f"SELECT abalance FROM t WHERE aid = {aid};") == (
            "SELECT abalance FROM t WHERE aid = ?;"
        )
    assert len(sqltext._shapes) == 1
    for n in range(sqltext._CACHE + 10):
        redact_simple(f"SELECT c{n} FROM t WHERE a = 1")
    assert len(sqltext._shapes) <= sqltext._CACHE
