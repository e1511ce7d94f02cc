"""Policy decisions: guardrails, least privilege, scoping by connection and group,
unparseable statements, COPY TO under masking, versions and the decision cache."""

from __future__ import annotations

from typing import Any

import pytest

from ledgergate.core.config import ConfigError, parse_config
from ledgergate.core.policy.engine import PolicySet


def policy(rules: list[dict[str, Any]], **extra: Any) -> PolicySet:
    return PolicySet(parse_config({"policy": {"rules": rules, **extra}}).policy)


GUARDS = [
    {"id": "no-ddl", "deny": {"kinds": ["ddl"]}, "message": "no schema changes"},
    {"id": "no-bulk", "deny": {"kinds": ["update", "delete"], "without_where": True}},
    {"id": "no-files", "deny": {"functions": ["pg_read_file", "dblink*"]}},
    {"id": "no-secret-table", "deny": {"tables": ["vault.*"]}},
    {"id": "no-regex", "deny": {"regex": "(?i)pg_sleep"}},
]


def test_guardrails() -> None:
    sp = policy(GUARDS).for_session("app", [])
    assert sp is not None and sp.guarded
    d = sp.check("DROP TABLE t")
    assert (d.allowed, d.rule, d.message) == (False, "no-ddl", "no schema changes")
    assert sp.check("DELETE FROM t").rule == "no-bulk"
    assert sp.check("DELETE FROM t WHERE id = 1").allowed
    assert sp.check("SELECT pg_catalog.pg_read_file('x')").rule == "no-files"
    assert sp.check("SELECT dblink_exec('x', 'y')").rule == "no-files"
    assert sp.check("SELECT * FROM vault.keys").rule == "no-secret-table"
    assert sp.check("SELECT * FROM keys").allowed  # unqualified: not vault's by name
    assert sp.check("SELECT pg_sleep(10)").rule == "no-regex"
    assert sp.check("SELECT 1; DROP TABLE t").rule == "no-ddl"  # refused whole
    assert sp.check("").allowed
    d = sp.check("SELEC 1 FROM")
    assert (d.allowed, d.rule) == (False, "unparseable")
    assert policy(GUARDS, unparseable="allow").for_session("app", []).check("SELEC").allowed  # type: ignore[union-attr]


def test_scoping_by_connection_and_group() -> None:
    ps = policy(
        [
            {"id": "prod-only", "connections": ["prod-*"], "deny": {"kinds": ["ddl"]}},
            {
                "id": "interns",
                "groups": ["interns"],
                "except_groups": ["dba"],
                "deny": {"kinds": ["delete"]},
            },
        ]
    )
    assert ps.for_session("dev", []) is None  # nothing applies: nothing is parsed
    assert ps.for_session("prod-eu", []).check("DROP TABLE t").rule == "prod-only"  # type: ignore[union-attr]
    sp = ps.for_session("dev", ["interns"])
    assert sp is not None and sp.check("DELETE FROM t WHERE true").rule == "interns"
    assert ps.for_session("dev", ["interns", "dba"]) is None
    assert ps.for_session("dev", ["interns"]) is sp  # shared, with its cache


def test_least_privilege() -> None:
    sp = policy(
        [
            {
                "id": "ds",
                "allow": [{"kinds": ["select"], "tables": ["analytics.*"]}],
                "message": "analytics only",
            }
        ]
    ).for_session("app", [])
    assert sp is not None
    assert sp.check("SELECT * FROM analytics.events").allowed
    assert sp.check("SELECT count(*) FROM analytics.a JOIN analytics.b USING (id)").allowed
    assert sp.check("BEGIN").allowed and sp.check("COMMIT").allowed
    for sql in (
        "SELECT * FROM customers",
        "SELECT * FROM analytics.events e JOIN public.customers c ON true",
        "INSERT INTO analytics.events VALUES (1)",
        "SET search_path = analytics",
        "DO $$ BEGIN END $$",
    ):
        d = sp.check(sql)
        assert (d.allowed, d.rule, d.message) == (False, "ds", "analytics only"), sql


def test_masked_sessions_copy_out_only_what_can_be_masked() -> None:
    sp = policy([{"id": "m", "mask": {"columns": ["*.*.email"]}}]).for_session("app", [])
    assert sp is not None and sp.guarded and [r.id for r in sp.mask] == ["m"]
    # text and CSV to the client: masked in flight (core.masking.plan.CopyMasking)
    assert sp.check("COPY customers TO STDOUT").allowed
    assert sp.check("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv, HEADER)").allowed
    assert sp.check("COPY customers FROM STDIN").allowed
    assert sp.check("SELECT email FROM customers").allowed
    refused = {
        "COPY customers TO STDOUT WITH (FORMAT binary)": "binary",
        "COPY customers TO STDOUT BINARY": "binary",
        "COPY customers TO '/tmp/x'": "file or program",
        "COPY customers TO PROGRAM 'cat'": "file or program",
        "COPY customers TO STDOUT WITH (FORMAT nonsense)": "cannot be read",
        "SELECT 1; COPY customers TO STDOUT": "sent alone",
    }
    for sql, why in refused.items():
        d = sp.check(sql)
        assert (d.allowed, d.rule) == (False, "mask-copy-out"), sql
        assert d.message is not None and why in d.message, (sql, d.message)
    # options are constants the decision depends on: never cached by shape
    assert sp.check("COPY customers TO STDOUT WITH (FORMAT csv)").allowed
    assert not sp.check("COPY customers TO STDOUT WITH (FORMAT binary)").allowed


def test_versions_name_the_policy() -> None:
    a, b = policy(GUARDS), policy(GUARDS[:2])
    assert a.version.startswith("pol_") and a.version == policy(GUARDS).version
    assert a.version != b.version


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"id": "x"}, "exactly one of deny, allow, mask or review"),
        ({"id": "x", "deny": {}}, "at least one condition"),
        ({"id": "x", "deny": {"kinds": ["drop"]}}, "unknown statement kind"),
        ({"id": "x", "deny": {"regex": "("}}, "not a usable regular expression"),
        ({"id": "x", "deny": {"regex": "a{4294967296}"}}, "not a usable regular expression"),
        ({"id": "x", "deny": {"regex": "(" * 5000 + ")" * 5000}}, "not a usable regular"),
        ({"id": "x", "review": {"kind": "command", "reviewers": ["dba"]}}, "when: ..."),
        ({"id": "x", "review": {"kind": "access", "reviewers": []}}, "one reviewer group"),
        ({"id": "x", "mask": {"columns": ["email"]}}, "schema.table.column"),
        ({"id": "x", "mask": {"function": "partial"}}, "columns, fields, detectors"),
        ({"id": "bad id!", "deny": {"do_blocks": True}}, "rule id"),
    ],
)
def test_bad_rules_are_named(rule: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"policy": {"rules": [rule]}})
    assert "policy.rules.0" in str(e.value) and error in str(e.value)
