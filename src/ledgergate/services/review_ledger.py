"""What reviews say outside the store: their ledger entries, their notifications, and
the approval record handed out as evidence.

Owns the shape of a ``review.<state>`` entry, of an outbox row's body (what
``core.notify`` turns into a webhook), and of the approval record (``ledgergate reviews
show``, ``GET /api/v1/reviews/{id}``). A statement appears as the connection's recording
level records commands (literals replaced by ``?``; no text at ``metadata``); parameter
values never appear, only their count and digest. ``services.reviews`` makes the
changes; this module only describes them (and reads entries for the record).
"""

from __future__ import annotations

import json
from typing import Any

from ledgergate.core.review import STATES, Review, params_hash, statement_hash
from ledgergate.core.sqltext import redact
from ledgergate.store.base import Store

__all__ = [
    "KINDS",
    "approval_record",
    "command_view",
    "entry_fields",
    "notice",
    "redacted",
    "window_view",
]

# The ledger entry kinds of reviews: review.<state after the step>.
KINDS = tuple(f"review.{state}" for state in STATES)
# Command entries an approval record lists (an access window can run many).
MAX_RECORD_COMMANDS = 1000
# How long before its review a held statement's command entry may be stamped (it is
# recorded on arrival, then the review is asked for).
COMMAND_SLACK_NS = 60 * 10**9


def command_view(r: Review, level: str) -> dict[str, Any] | None:
    """The statement as ``level`` records commands (never a literal at ``redacted``, no
    text at ``metadata``), its digest, and the parameters' count and digest."""
    if r.statement is None:
        return None
    return {
        "text": None if level == "metadata" else redact(r.statement),
        "text_sha256": statement_hash(r.statement),
        "params": {"count": len(r.params), "sha256": params_hash(r.params)},
    }


def window_view(r: Review) -> dict[str, Any] | None:
    if r.kind != "access":
        return None
    return {"duration_ns": r.duration_ns, "start_ns": r.window_start_ns, "end_ns": r.window_end_ns}


def redacted(r: Review, level: str) -> dict[str, Any]:
    """The fields of ``r.as_dict()`` that carry data, as the ledger shows them."""
    cmd = command_view(r, level)
    if cmd is None:
        return {}
    return {
        "statement": cmd["text"],
        "params": None,
        "params_count": len(r.params),
        "params_sha256": cmd["params"]["sha256"],
    }


def entry_fields(r: Review, level: str) -> dict[str, Any]:
    """The fields of the entry recording ``r``'s latest step (see docs/ledger-format.md):
    ``review{id,kind,state,event,actor}``, the requester as ``identity``, what the step
    adds (justification and requirement, a decision, the session it ran in)."""
    step = r.history[-1]
    f: dict[str, Any] = {
        "review": {
            "id": r.id,
            "kind": r.kind,
            "state": r.state,
            "event": step.event,
            "actor": step.actor,
        },
        "identity": r.identity(),
        "connection": r.connection,
        "rule": r.rule_id,
        "binding": r.binding,
    }
    if step.reason is not None:
        f["reason"] = step.reason
    cmd = command_view(r, level)
    if cmd is not None:
        f["command"] = cmd
    window = window_view(r)
    if window is not None:
        f["window"] = window
    if step.event == "request":
        f["justification"] = r.justification
        f["expires_ns"] = r.expires_ns
        f["requirement"] = r.requirement.as_dict()
        if r.session_id is not None:
            f["session_id"] = r.session_id
    elif step.event in ("vote", "approve", "deny"):
        d = r.decisions[-1]
        f["decision"] = {"reviewer": d.reviewer, "groups": list(d.groups), "approve": d.approve}
        f["approvals"] = r.approvals
        if r.valid_until_ns is not None:
            f["valid_until_ns"] = r.valid_until_ns
    elif step.event in ("execute", "use"):
        f["session_id"] = r.executions[-1].session_id
    return f


def notice(r: Review, event: str, level: str) -> dict[str, Any]:
    """An outbox row's body: the review in the shape ``core.notify`` reads (the keys of
    ``Review.as_dict()``, flat, with ``actor`` and ``reason`` of the step), plus
    ``event``, ``include_statement`` (whether ``level`` lets the statement's text be
    shown) and ``path`` (the review's page). The statement's literals are replaced, its
    text left out at ``metadata``; parameter values are never there."""
    step = r.history[-1]
    shown = level != "metadata"
    return {
        "event": event,
        "id": r.id,
        "kind": r.kind,
        "state": r.state,
        "rule_id": r.rule_id,
        "connection": r.connection,
        "requester": r.identity(),
        "statement": redact(r.statement) if r.statement is not None and shown else None,
        "justification": r.justification,
        "duration_ns": r.duration_ns,
        "window_start_ns": r.window_start_ns,
        "window_end_ns": r.window_end_ns,
        "actor": step.actor,
        "reason": step.reason,
        "decisions": [d.as_dict() for d in r.decisions],
        "reviewers": list(r.requirement.groups),
        "min_approvals": r.requirement.min_approvals,
        "approvals": r.approvals,
        "created_ns": r.created_ns,
        "expires_ns": r.expires_ns,
        "decided_ns": r.decided_ns,
        "valid_until_ns": r.valid_until_ns,
        "include_statement": shown,
        "path": f"/reviews/{r.id}",
    }


# -- the approval record ---------------------------------------------------------------------
def approval_record(store: Store, r: Review, level: str, *, raw: bool) -> dict[str, Any]:
    """The whole approval record: the review (requester, decisions with reasons and
    times, the statement or window, the sessions that ran under it), the ledger entries
    of its steps (stream, seq, hash: where to verify them), and the commands its
    sessions ran under it. ``raw=False``: statement and parameters as the ledger shows
    them (for auditors, who never see data)."""
    doc = r.as_dict()
    if not raw:
        doc |= redacted(r, level)
    steps = [
        e
        for e in store.find_entries(
            kinds=KINDS, identity=r.requester, connection=r.connection, since_ns=r.created_ns
        )
        if _review_id(e.canonical) == r.id
    ]
    doc["entries"] = [
        {
            "stream": e.stream,
            "seq": e.seq,
            "kind": e.kind,
            "ts_ns": e.ts_ns,
            "entry_hash": e.entry_hash.hex(),
        }
        for e in steps
    ]
    doc["commands"] = _commands(store, r)
    return doc


def _commands(store: Store, r: Review) -> list[dict[str, Any]]:
    """Command entries of the sessions that ran under ``r``: inside an access window,
    all of them (up to a bound); for a held statement, its own entry (tagged with the
    review by the gateway, else found by its text's digest)."""
    sessions = sorted({e.session_id for e in r.executions})
    if not sessions:
        return []
    if r.kind == "access":
        since, until = r.window_start_ns, r.window_end_ns
    else:
        since, until = r.created_ns - COMMAND_SLACK_NS, None
    want = statement_hash(r.statement) if r.statement is not None else None
    out: list[dict[str, Any]] = []
    for e in store.find_entries(
        kinds=("command",),
        session_ids=sessions,
        since_ns=since,
        until_ns=until,
        limit=MAX_RECORD_COMMANDS * 4,
    ):
        doc = _doc(e.canonical)
        cmd = _part(doc, "command")
        tagged = _part(doc, "review").get("id") == r.id
        if r.kind == "command" and not tagged and cmd.get("text_sha256") != want:
            continue
        out.append(
            {
                "session_id": e.session_id,
                "stream": e.stream,
                "seq": e.seq,
                "ts_ns": e.ts_ns,
                "text": cmd.get("text"),
                "text_sha256": cmd.get("text_sha256"),
            }
        )
        if r.kind == "command" or len(out) >= MAX_RECORD_COMMANDS:
            break
    return out


def _doc(canonical: bytes) -> dict[str, Any]:
    """A stored entry's fields; an entry that is not a JSON object (tampered with: the
    verifier reports it) reads as empty here rather than failing the whole record."""
    try:
        doc = json.loads(canonical)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _part(doc: dict[str, Any], key: str) -> dict[str, Any]:
    v = doc.get(key)
    return v if isinstance(v, dict) else {}


def _review_id(canonical: bytes) -> str | None:
    rid = _part(_doc(canonical), "review").get("id")
    return rid if isinstance(rid, str) else None
