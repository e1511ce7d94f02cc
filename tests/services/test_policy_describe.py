"""``services.policy.describe``: each rule with its type, as the CLI and the API show it."""

from __future__ import annotations

from ledgergate.core.policy.engine import PolicySet
from ledgergate.core.policy.rules import PolicySettings
from ledgergate.services.policy import describe


def test_every_rule_type_is_named() -> None:
    ps = PolicySet(
        PolicySettings.model_validate(
            {
                "rules": [
                    {"id": "d", "deny": {"kinds": ["ddl"]}},
                    {"id": "a", "allow": [{"kinds": ["select"]}]},
                    {"id": "m", "mask": {"columns": ["*.*.email"]}},
                    {"id": "r", "review": {"kind": "access", "reviewers": ["dba"]}},
                ]
            }
        )
    )
    assert [(r["id"], r["type"]) for r in describe(ps)["rules"]] == [
        ("d", "deny"),
        ("a", "allow"),
        ("m", "mask"),
        ("r", "review"),
    ]
