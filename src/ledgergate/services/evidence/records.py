"""The state in force when an evidence bundle is made: identities (with how long their
last session lasted after they were disabled), tokens (never a secret or its hash),
grants and policy rules (from the configuration file and the store), each list with the
SHA-256 of its canonical JSON so two bundles can be compared at a glance.

Reads the store and the configuration; writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ledgergate.core.config import Config, format_duration
from ledgergate.store.base import Store

__all__ = ["state_snapshot"]

_ENDS = ("session.close", "session.terminated")


def _listing(items: list[dict[str, Any]]) -> dict[str, Any]:
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(), "items": items}


def _identities(store: Store) -> list[dict[str, Any]]:
    out = []
    for r in store.list_identities():
        item: dict[str, Any] = {
            "name": r.name,
            "kind": r.kind,
            "source": r.source,
            "groups": list(r.groups),
            "disabled_ns": r.disabled_ns,
            "disabled_by": r.disabled_by,
            "disabled_reason": r.disabled_reason,
        }
        if r.disabled_ns is not None:
            last = store.find_entries(kinds=_ENDS, identity=r.name, newest_first=True, limit=1)
            end = last[0].ts_ns if last else None
            item["last_session_end_ns"] = end
            if end is not None and end > r.disabled_ns:
                gap = end - r.disabled_ns
                item["deprovisioning_gap"] = format_duration(gap) if gap >= 10**9 else "under 1s"
            else:
                item["deprovisioning_gap"] = "none (no session outlived it)"
        out.append(item)
    return out


def _tokens(store: Store, now_ns: int) -> list[dict[str, Any]]:
    out = []
    for t in store.list_tokens():
        state = "revoked" if t.revoked_ns else ("expired" if t.expires_ns <= now_ns else "valid")
        out.append(
            {
                "id": t.id,
                "identity": t.identity,
                "kind": t.kind,
                "purpose": t.purpose,
                "created_ns": t.created_ns,
                "created_by": t.created_by,
                "expires_ns": t.expires_ns,
                "lifetime": format_duration(t.expires_ns - t.created_ns),
                "revoked_ns": t.revoked_ns,
                "last_used_ns": t.last_used_ns,
                "state": state,
            }
        )
    return out


def state_snapshot(store: Store, config: Config, now_ns: int) -> dict[str, Any]:
    """identities, tokens, grants and policy, each as ``{"sha256", "items"}``."""
    grants: list[dict[str, Any]] = [
        {"source": "configuration", **g.model_dump(mode="json")} for g in config.grants or ()
    ]
    grants += [
        {
            "source": "store",
            "id": g.id,
            "connections": list(g.connections),
            "groups": list(g.groups),
            "identities": list(g.identities),
            "created_ns": g.created_ns,
            "created_by": g.created_by,
        }
        for g in store.list_grants()
    ]
    policy: list[dict[str, Any]] = [
        {"source": "configuration", **r.model_dump(mode="json", exclude_none=True)}
        for r in config.policy.rules
    ]
    policy += [
        {
            "source": "store",
            "id": r.id,
            "rule": json.loads(r.body),
            "position": r.position,
            "updated_ns": r.updated_ns,
            "updated_by": r.updated_by,
        }
        for r in store.list_policy_rules()
    ]
    return {
        "identities": _listing(_identities(store)),
        "tokens": _listing(_tokens(store, now_ns)),
        "grants": _listing(grants),
        "policy": _listing(policy),
    }
