"""Mask plans: columns attributed through the catalog (aliases do not hide them), by
name when attribution is impossible, content detectors on free text, binary values,
counts reported per result set without values."""

from __future__ import annotations

from typing import Any

from ledgergate.core.config import parse_config
from ledgergate.core.masking.plan import MaskPlanner
from ledgergate.wire.pg.results import Field

KEY = b"k" * 32
PEOPLE = 16400
CATALOG = {
    (PEOPLE, 1): "public.people.name",
    (PEOPLE, 2): "public.people.email",
    (PEOPLE, 3): "public.people.card",
    (PEOPLE, 4): "public.people.notes",
}
RULES = parse_config(
    {
        "policy": {
            "rules": [
                {
                    "id": "email",
                    "mask": {"columns": ["*.*.email"], "function": "partial", "keep_domain": True},
                },
                {
                    "id": "card",
                    "mask": {
                        "columns": ["public.people.card"],
                        "function": "partial",
                        "keep_last": 4,
                    },
                },
                {"id": "scan", "mask": {"detectors": ["email", "iban"], "function": "redact"}},
            ]
        }
    }
).policy.rules


def planner(reports: list[tuple[list[dict[str, Any]], int]]) -> MaskPlanner:
    return MaskPlanner(RULES, CATALOG, KEY, lambda items, rows: reports.append((items, rows)))


def f(name: str, oid: int = PEOPLE, att: int = 0, fmt: int = 0, typ: int = 25) -> Field:
    return Field(name.encode(), oid, att, typ, fmt)


def test_columns_by_catalog_even_when_aliased() -> None:
    reports: list[tuple[list[dict[str, Any]], int]] = []
    plan = planner(reports).plan((f("who", att=1), f("contact", att=2), f("c", att=3)))
    assert plan is not None
    out = plan.mask([b"Ann", b"ann@example.com", b"4242 4242 4242 4242"])
    assert out == [b"Ann", b"a***@example.com", b"**** **** **** 4242"]
    assert plan.mask([b"Bob", None, b"5555555555554444"]) == [b"Bob", None, b"************4444"]
    plan.finish()
    ((items, rows),) = reports
    assert rows == 2
    got = {(i["field"], i["source"], i["rule"], i["count"]) for i in items}
    assert ("contact", "public.people.email", "email", 1) in got
    assert ("c", "public.people.card", "card", 2) in got
    assert "ann@example.com" not in str(reports)


def test_unattributed_columns_match_by_name_and_detectors_scan_text() -> None:
    plan = planner([]).plan((f("email", oid=0), f("n", att=4), f("total", oid=0, typ=20)))
    assert plan is not None
    out = plan.mask([b"x@y.example", b"refund to GB82WEST12345698765432 today", b"17"])
    assert out is not None
    assert out[0] == b"x***@y.example"  # an expression named email: masked by name
    assert b"GB82WEST" not in out[1] and out[1].startswith(b"refund to ")
    assert out[2] == b"17"


def test_binary_values_under_a_rule_become_null_unless_text() -> None:
    plan = planner([]).plan((f("card", att=3, fmt=1, typ=1700), f("email", att=2, fmt=1)))
    assert plan is not None
    assert plan.mask([b"\x00\x01", b"ann@example.com"]) == [None, b"a***@example.com"]


def test_nothing_to_mask_means_no_plan() -> None:
    assert MaskPlanner(RULES[:2], CATALOG, KEY).plan((f("name", att=1),)) is None


def test_columns_computed_from_masked_ones_are_masked_too() -> None:
    from ledgergate.core.policy.engine import PolicySet

    ps = PolicySet(
        parse_config(
            {"policy": {"rules": [{"id": "email", "mask": {"columns": ["*.*.email"]}}]}}
        ).policy
    )
    sp = ps.for_session("app", [])
    assert sp is not None
    sql = "SELECT lower(p.email) AS l, length(email) AS n, name FROM people p"
    assert sp.masked_refs(sql) == {"email"}
    assert sp.masked_refs("SELECT name FROM people") == frozenset()
    planner = MaskPlanner(sp.mask, CATALOG, KEY, refs=sp.masked_refs)
    fields = (f("l", oid=0), f("n", oid=0, typ=23), f("name", att=1))
    plan = planner.plan(fields, sql.encode())
    assert plan is not None
    assert plan.mask([b"ann@example.com", b"15", b"Ann"]) == [b"****", b"15", b"Ann"]
    # the same result for a statement that mentions no masked column passes untouched
    assert planner.plan(fields, b"SELECT 'x' AS l, 1 AS n, name FROM people") is None
