"""SQL classification: every kind, the facts of representative statements, output
columns, the bypass corpus (``bypass_corpus.py``), parse errors, and a fuzz that no
input raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.core.policy.bypass_corpus import CORPUS, Case

from ledgergate.core.policy.sql import Classified, Statement, Target, classify


def one(sql: str) -> Statement:
    c = classify(sql)
    assert c.error is None, c.error
    assert len(c.statements) == 1
    return c.statements[0]


@pytest.mark.parametrize(
    ("sql", "kind", "node"),
    [
        ("SELECT 1", "select", "SelectStmt"),
        ("VALUES (1)", "select", "SelectStmt"),
        ("INSERT INTO t VALUES (1)", "insert", "InsertStmt"),
        ("UPDATE t SET a = 1 WHERE id = 2", "update", "UpdateStmt"),
        ("DELETE FROM t WHERE id = 2", "delete", "DeleteStmt"),
        ("TRUNCATE t", "delete", "TruncateStmt"),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "merge",
            "MergeStmt",
        ),
        ("CREATE TABLE t (a int)", "ddl", "CreateStmt"),
        ("ALTER TABLE t ADD COLUMN b int", "ddl", "AlterTableStmt"),
        ("DROP TABLE t", "ddl", "DropStmt"),
        ("CREATE INDEX i ON t (a)", "ddl", "IndexStmt"),
        ("CREATE VIEW v AS SELECT 1", "ddl", "ViewStmt"),
        ("COMMENT ON TABLE t IS 'x'", "ddl", "CommentStmt"),
        ("ALTER TABLE t RENAME TO u", "ddl", "RenameStmt"),
        ("CREATE EXTENSION dblink", "ddl", "CreateExtensionStmt"),
        ("REFRESH MATERIALIZED VIEW m", "ddl", "RefreshMatViewStmt"),
        ("CREATE TABLE n AS SELECT 1", "ddl", "CreateTableAsStmt"),
        ("SELECT 1 INTO n", "ddl", "SelectStmt"),
        ("GRANT SELECT ON t TO r", "dcl", "GrantStmt"),
        ("REVOKE r FROM u", "dcl", "GrantRoleStmt"),
        ("CREATE ROLE r", "dcl", "CreateRoleStmt"),
        (
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
            "dcl",
            "AlterDefaultPrivilegesStmt",
        ),
        ("DROP OWNED BY r", "dcl", "DropOwnedStmt"),
        ("COPY t FROM STDIN", "copy", "CopyStmt"),
        ("BEGIN", "transaction", "TransactionStmt"),
        ("COMMIT", "transaction", "TransactionStmt"),
        ("ROLLBACK TO SAVEPOINT s", "transaction", "TransactionStmt"),
        ("SAVEPOINT s", "transaction", "TransactionStmt"),
        ("SET statement_timeout = 0", "utility", "VariableSetStmt"),
        ("SHOW search_path", "utility", "VariableShowStmt"),
        ("RESET statement_timeout", "utility", "VariableSetStmt"),
        ("LISTEN c", "utility", "ListenStmt"),
        ("NOTIFY c, 'x'", "utility", "NotifyStmt"),
        ("VACUUM t", "utility", "VacuumStmt"),
        ("ANALYZE t", "utility", "VacuumStmt"),
        ("DISCARD PLANS", "utility", "DiscardStmt"),
        ("LOCK TABLE t", "utility", "LockStmt"),
        ("ALTER SYSTEM SET work_mem = '1MB'", "utility", "AlterSystemStmt"),
        ("EXECUTE p", "utility", "ExecuteStmt"),
        ("DEALLOCATE p", "utility", "DeallocateStmt"),
        ("CALL p()", "call", "CallStmt"),
        ("DO $$ BEGIN END $$", "do", "DoStmt"),
        ("EXPLAIN SELECT 1", "explain", "ExplainStmt"),
        ("PREPARE p AS SELECT 1", "select", "PrepareStmt"),
    ],
)
def test_kinds(sql: str, kind: str, node: str) -> None:
    st_ = one(sql)
    assert (st_.kind, st_.node) == (kind, node)
    assert st_.kind in st_.kinds


def test_reads_writes_functions_columns() -> None:
    s = one(
        'SELECT a.x, lower(b.y) FROM Sales.Orders a JOIN "Items" b ON a.id = b.oid '
        "WHERE a.z > now() ORDER BY 1"
    )
    assert s.reads == ("Items", "sales.orders")
    assert s.writes == ()
    assert s.functions == ("lower", "now")
    assert s.columns == ("a.id", "a.x", "a.z", "b.oid", "b.y")
    assert s.where is None
    s = one("INSERT INTO t (a) SELECT a FROM s ON CONFLICT (a) DO UPDATE SET a = excluded.a")
    assert (s.reads, s.writes, s.where) == (("s",), ("t",), None)
    s = one("UPDATE t SET a = u.a FROM u WHERE t.id = u.id")
    assert (s.reads, s.writes, s.where) == (("u",), ("t",), True)
    s = one("INSERT INTO t SELECT * FROM t")  # a table read and written is in both
    assert (s.reads, s.writes) == (("t",), ("t",))
    s = one("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)")
    assert (s.reads, s.writes, s.where) == (("s",), ("t",), None)
    s = one("WITH RECURSIVE r AS (SELECT 1 UNION SELECT n + 1 FROM r) SELECT * FROM r")
    assert s.reads == ()  # r is the CTE, not a table
    s = one("WITH a AS (SELECT 1) SELECT * FROM public.a")
    assert s.reads == ("public.a",)  # a qualified name is never a CTE
    s = one("CREATE INDEX i ON t (lower(a))")
    assert (s.writes, s.functions) == (("t",), ("lower",))
    s = one("ALTER TABLE public.t DROP COLUMN a")
    assert s.writes == ("public.t",)
    s = one("CREATE TRIGGER g AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION audit.log()")
    assert (s.writes, s.functions) == (("t",), ("audit.log",))
    s = one("DROP FUNCTION f(int)")
    assert (s.writes, s.functions) == ((), ())
    s = one("DROP TYPE t")
    assert s.writes == ()
    s = one("CREATE TYPE t AS (a int)")
    assert (s.reads, s.writes) == ((), ())
    s = one("CREATE TABLE t (a int REFERENCES p (id), LIKE tpl)")
    assert (s.reads, s.writes) == (("p", "tpl"), ("t",))
    s = one("CREATE FOREIGN TABLE f (a int) SERVER s")
    assert s.writes == ("f",)
    s = one("COPY t (a, b) FROM STDIN")
    assert (s.writes, s.reads, s.copy_direction) == (("t",), (), "from")
    s = one("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    assert s.reads == ("t",)
    s = one("CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM t $$")
    assert (s.kind, s.dynamic_sql, s.writes) == ("ddl", False, ())  # runs later
    s = one("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$")
    assert s.dynamic_sql is False
    s = one("CREATE FUNCTION f() RETURNS int LANGUAGE plperlu AS $$ return 1 $$")
    assert s.dynamic_sql is True


def test_flags_default_off() -> None:
    s = one("SELECT a FROM t WHERE id = $1")
    assert not (
        s.copy_program
        or s.do_block
        or s.dynamic_sql
        or s.alter_system
        or s.role_change
        or s.search_path_change
    )
    assert (s.copy_direction, s.prepared_name, s.where) == (None, None, None)
    assert not one("SELECT set_config('work_mem', '1MB', false)").search_path_change
    assert not one("SET work_mem = '1MB'").search_path_change
    assert not one("DISCARD PLANS").role_change


def test_targets() -> None:
    s = one("SELECT c.email AS e FROM customers c")
    assert s.targets == (Target("e", "customers", "email", False),)
    s = one("SELECT * FROM customers")
    assert s.targets == (Target("*", "customers", None, True),)
    s = one("SELECT c.*, o.total, id FROM customers c JOIN shop.orders o ON o.cid = c.id")
    assert s.targets == (
        Target("*", "customers", None, True),
        Target("total", "shop.orders", "total", False),
        Target("id", None, "id", False),  # two FROM items: unattributed without a catalog
    )
    s = one("SELECT shop.orders.total FROM shop.orders")
    assert s.targets == (Target("total", "shop.orders", "total", False),)
    s = one(
        "SELECT a + 1, upper(b), pg_catalog.lower(b) AS l, b::text, 1::int, CAST(b AS int), "
        "count(*), coalesce(a, 0), CASE WHEN a THEN 1 END, EXISTS (SELECT 1), "
        "(SELECT max(x) FROM y), ARRAY[1], ROW(1, 2), current_user, x[1], (r).f, "
        "greatest(1, 2), nullif(a, b), 'lit' FROM t"
    )
    assert [t.name for t in s.targets] == [
        "?column?", "upper", "l", "b", "int4", "b", "count", "coalesce", "case", "exists",
        "max", "array", "row", "current_user", "x", "f", "greatest", "nullif", "?column?",
    ]  # fmt: skip
    assert s.targets[3] == Target("b", None, None, False)  # an expression: no source
    s = one("SELECT email FROM (SELECT email FROM customers) s")
    assert s.targets == (Target("email", None, "email", False),)  # through a subquery: no
    s = one("WITH c AS (SELECT * FROM customers) SELECT email FROM c")
    assert s.targets == (Target("email", None, "email", False),)  # a CTE is not a table
    s = one("SELECT email FROM customers UNION SELECT name FROM staff")
    assert s.targets == (Target("email", None, None, False),)
    s = one("DELETE FROM customers c RETURNING c.email, id")
    assert s.targets == (
        Target("email", "customers", "email", False),
        Target("id", "customers", "id", False),
    )
    s = one("PREPARE p AS SELECT email AS mail FROM customers")
    assert s.targets == (Target("mail", "customers", "email", False),)
    assert one("INSERT INTO t VALUES (1)").targets == ()


def test_multi_statement_text_and_order() -> None:
    sql = "SELECT 'é'; -- note\nINSERT INTO t VALUES (1) ;\n\tDELETE FROM t WHERE a = 'ü'"
    c = classify(sql)
    assert [s.kind for s in c.statements] == ["select", "insert", "delete"]
    assert [s.text for s in c.statements] == [
        "SELECT 'é'",
        "INSERT INTO t VALUES (1)",  # a comment between statements is in neither
        "DELETE FROM t WHERE a = 'ü'",
    ]
    assert classify("") == Classified((), None)
    assert classify(" ; -- nothing") == Classified((), None)


@pytest.mark.parametrize(
    "sql",
    [
        "SELEC 1",
        "SELECT 'unterminated secret",
        "SELECT 1; DROP TABL x",
        "DO $$ BEGIN",
        "(((",
        "SELECT 1;\x00 DROP TABLE customers",  # a C parser would stop at the NUL
    ],
)
def test_parse_errors(sql: str) -> None:
    c = classify(sql)
    assert c.statements == ()
    assert c.error
    assert "secret" not in c.error and "TABL" not in c.error  # no SQL echoed


def test_too_deep_is_an_error_not_a_crash() -> None:
    c = classify("SELECT " + "1 + " * 3000 + "1")
    assert c.statements == () and c.error


@pytest.mark.parametrize("case", CORPUS, ids=[c.sql[:60] for c in CORPUS])
def test_bypass_corpus(case: Case) -> None:
    c = classify(case.sql)
    assert c.error is None, c.error
    s = c.statements[case.statement]
    for fact, want in case.facts.items():
        got = getattr(s, fact)
        if isinstance(want, tuple):
            assert set(want) <= set(got), (fact, got)
        else:
            assert got == want, (fact, got)


@given(st.text(max_size=200))
def test_never_raises(sql: str) -> None:
    c = classify(sql)
    assert (c.error is None) or c.statements == ()


@given(
    st.lists(
        st.sampled_from(
            [
                "SELECT a FROM t",
                "DELETE FROM customers",
                "DO $$ BEGIN EXECUTE 'x'; END $$",
                "WITH d AS (DELETE FROM x RETURNING 1) SELECT * FROM d",
                "SET ROLE r",
                "SELECT pg_read_file('x')",
            ]
        ),
        min_size=1,
        max_size=6,
    )
)
def test_statements_classified_alone_and_together_agree(parts: list[str]) -> None:
    together = classify("; ".join(parts)).statements
    alone = tuple(classify(p).statements[0] for p in parts)
    assert together == alone
