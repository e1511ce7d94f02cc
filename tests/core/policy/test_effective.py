"""The effective policy: the file's rules, then the stored ones, validated as a whole."""

from __future__ import annotations

import pytest

from ledgergate.core.policy.effective import PolicyError, combine, rule_document
from ledgergate.core.policy.engine import PolicySet, policy_version
from ledgergate.core.policy.rules import PolicySettings

FILE = PolicySettings.model_validate(
    {
        "unparseable": "allow",
        "search_path": ["app", "public"],
        "rules": [{"id": "no-ddl", "deny": {"kinds": ["ddl"]}}],
    }
)


def test_a_rule_document_is_stored_without_its_id_and_with_every_setting() -> None:
    body = rule_document("mask-email", {"mask": {"columns": ["*.*.email"]}})
    assert "id" not in body and body["connections"] == ["*"]
    assert body["mask"]["function"] == "redact" and body["mask"]["keep_last"] == 4
    assert rule_document("mask-email", {"id": "mask-email", **body}) == body
    with pytest.raises(PolicyError, match="its body names another id"):
        rule_document("a", {"id": "b", **body})
    with pytest.raises(PolicyError, match="a rule is a mapping"):
        rule_document("a", ["deny"])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"deny": {"kinds": ["drop"]}}, "rule 'r': deny.kinds: unknown statement kind 'drop'"),
        ({"deny": {"kind": ["ddl"]}}, "rule 'r': deny.kind: unknown key"),
        ({"deny": {"kinds": ["ddl"]}, "mask": {"columns": ["a.b.c"]}}, "exactly one of"),
        ({"mask": {"columns": ["email"]}}, "a column is schema.table.column"),
        ({"allow": []}, "at least one clause"),
    ],
)
def test_bad_rules_are_named_by_rule_and_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        rule_document("r", doc)


def test_a_bad_id_is_refused() -> None:
    with pytest.raises(PolicyError, match="rule id is 1-63"):
        rule_document("no spaces please", {"deny": {"kinds": ["ddl"]}})


def test_combined_the_file_comes_first_and_its_settings_stay() -> None:
    assert combine(FILE, []) is FILE  # no stored rules: the same policy, the same version
    stored = [
        ("mask-email", rule_document("mask-email", {"mask": {"columns": ["*.*.email"]}})),
        ("no-copy-program", rule_document("no-copy-program", {"deny": {"copy_program": True}})),
    ]
    eff = combine(FILE, stored)
    assert [r.id for r in eff.rules] == ["no-ddl", "mask-email", "no-copy-program"]
    assert eff.unparseable == "allow" and eff.search_path == ["app", "public"]
    assert policy_version(eff) != policy_version(FILE) == PolicySet(FILE).version
    assert policy_version(combine(FILE, stored)) == policy_version(eff)  # stable
    assert policy_version(combine(FILE, stored[::-1])) != policy_version(eff)  # order counts
    sp = PolicySet(eff).for_session("app", [])
    assert sp is not None and sp.check("COPY t FROM PROGRAM 'x'").rule == "no-copy-program"


def test_ids_are_unique_across_the_file_and_the_store() -> None:
    with pytest.raises(
        PolicyError, match="'no-ddl': this id is already used by a rule of the conf"
    ):
        combine(FILE, [("no-ddl", {"deny": {"kinds": ["dcl"]}})])
    with pytest.raises(PolicyError, match="'x': this id is already used by a rule of the store"):
        combine(FILE, [("x", {"deny": {"kinds": ["dcl"]}}), ("x", {"deny": {"kinds": ["do"]}})])


def test_a_stored_body_that_no_longer_validates_is_named() -> None:
    with pytest.raises(PolicyError, match=r"rule 'old': deny\.kinds: unknown statement kind"):
        combine(FILE, [("old", {"deny": {"kinds": ["vacuum"]}})])
