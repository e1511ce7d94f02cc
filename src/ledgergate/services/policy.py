"""Explaining a policy: the decision a statement gets and why, for the CLI and the API.

Thin over ``core.policy``: classify the statement, pick the rules that apply to the
connection and groups, and say what would happen (allowed or refused by which rule,
which mask rules shape the results). Works on a ``PolicySet`` it is given (the file's, or
the effective policy of the file and the store from ``services.policy_rules``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledgergate.core.policy.engine import PolicySet
from ledgergate.core.policy.sql import classify
from ledgergate.store.base import PolicyRuleRow

__all__ = ["describe", "explain"]


def describe(ps: PolicySet, stored: Sequence[PolicyRuleRow] = ()) -> dict[str, Any]:
    """The policy's version and rules, as admins wrote them, each with its ``source``:
    ``file`` (the configuration file's, changed there) or ``api`` (kept in the store,
    added through the API or the CLI; with who changed it last, and when)."""
    rows = {r.id: r for r in stored}
    out = []
    for r in ps.settings.rules:
        row = rows.get(r.id)
        d: dict[str, Any] = {
            "id": r.id,
            "type": "deny" if r.deny else "allow" if r.allow else "review" if r.review else "mask",
            "source": "file" if row is None else "api",
            **r.model_dump(mode="json", exclude_none=True, exclude={"id"}),
        }
        if row is not None:
            d["stored"] = {
                "position": row.position,
                "created_by": row.created_by,
                "created_ns": row.created_ns,
                "updated_by": row.updated_by,
                "updated_ns": row.updated_ns,
            }
        out.append(d)
    return {"version": ps.version, "unparseable": ps.settings.unparseable, "rules": out}


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
