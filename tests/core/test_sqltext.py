"""core/sqltext.py: literal redaction and statement splitting with PostgreSQL's scanner."""

from __future__ import annotations

import pytest

from ledgergate.core.sqltext import MAX_SCAN, redact, split_statements

SECRET = "Zq9-secret-VALUE"


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
        ("SELECT 42, 3.14, 1e10, .5, 5., 0x1F, 0o17, 0b101, 1_000_000", "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?"),
        ("SELECT -7", "SELECT -?"),
        ("SELECT B'1010', X'1F', b'0'", "SELECT ?, ?, ?"),
        ("SELECT interval '1 day', date '2020-01-01', 'x'::text", "SELECT interval ?, date ?, ?::text"),
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
        ('SELECT "Col", "weird ""name""", U&"\\0041" FROM s.t AS x',
         'SELECT "Col", "weird ""name""", U&"\\0041" FROM s.t AS x'),
        ("select  a,b\n\tfrom   t", "select a,b from t"),
        ("INSERT INTO t (a) VALUES ($1) RETURNING id", "INSERT INTO t (a) VALUES ($1) RETURNING id"),
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
        f"SELECT U&'{SECRET}' UESCAPE",
    ],
)
def test_unscannable_text_is_withheld(sql: str) -> None:
    out = redact(sql)
    assert SECRET not in out
    assert "withheld" in out or out.count("?") >= 1


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
            ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2 $$ LANGUAGE sql",
             "SELECT f()"),
        ),
        (
            "SELECT 1 AS a; SELECT 'x;y' AS b; SELECT $$p;q$$ AS c; "
            "CREATE TEMP TABLE lg_m (i int); INSERT INTO lg_m VALUES (1), (2)",
            ("SELECT 1 AS a", "SELECT 'x;y' AS b", "SELECT $$p;q$$ AS c",
             "CREATE TEMP TABLE lg_m (i int)", "INSERT INTO lg_m VALUES (1), (2)"),
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
