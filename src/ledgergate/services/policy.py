"""Explaining a policy: the decision a statement gets and why, for the CLI and the API.

Thin over ``core.policy``: classify the statement, pick the rules that apply to the
connection and groups, and say what would happen (allowed or refused by which rule,
which mask rules shape the results). Reads nothing but the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledgergate.core.policy.engine import PolicySet
from ledgergate.core.policy.sql import classify

__all__ = ["describe", "explain"]


def describe(ps: PolicySet) -> dict[str, Any]:
    """The policy's version and rules, as an admin wrote them."""
    return {
        "version": ps.version,
        "unparseable": ps.settings.unparseable,
        "rules": [
            {
                "id": r.id,
                "type": "deny" if r.deny else "allow" if r.allow else "mask",
                **r.model_dump(mode="json", exclude_none=True, exclude={"id"}),
            }
            for r in ps.settings.rules
        ],
    }


def explain(ps: PolicySet, connection: str, sql: str, groups: Sequence[str]) -> dict[str, Any]:
    sp = ps.for_session(connection, groups)
    c = classify(sql)
    facts = [
        {
            "kind": st.kind,
            "kinds": list(st.kinds),
            "reads": list(st.reads),
            "writes": list(st.writes),
            "functions": list(st.functions),
            "where": st.where,
        }
        for st in c.statements
    ]
    if sp is None:
        decision: dict[str, Any] = {"action": "allow", "rule": None, "why": "no rule applies"}
        masks: list[str] = []
    else:
        d = sp.check(sql)
        decision = {
            "action": "allow" if d.allowed else "deny",
            "rule": d.rule,
            "message": d.message,
        }
        masks = [r.id for r in sp.mask]
    return {
        "policy": ps.version,
        "connection": connection,
        "groups": list(groups),
        "decision": decision,
        "parse_error": c.error,
        "statements": facts,
        "mask_rules": masks,
    }
