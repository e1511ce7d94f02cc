"""An admin ending someone's open session (the console's Terminate, ``POST
/api/v1/sessions/{id}/terminate``).

The request is a ledger entry, ``admin.session.terminate``, naming the session (so it
shows in that session's timeline), the admin and the reason, durable before anything
happens. Every gateway's re-check of its open sessions (``AccessControl.recheck``: at
once in the process that took the request, on the others as soon as they see the
store's access epoch move, as for a revoked token) looks for such entries and ends the
session with that reason, which the gateway records as ``session.terminated``. A
request for a session that has already ended, or was never opened, is refused: nothing
is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.services.journal import as_entry_says
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.tokens import record_change
from ledgergate.store.base import Store

__all__ = ["KIND", "TerminateError", "request", "requested"]

KIND = "admin.session.terminate"
# Open sessions are looked up this many ids per query (SQLite binds at most 32,766
# parameters, PostgreSQL 65,535: a busy gateway's re-check must never exceed them).
_IN_CHUNK = 500
_OPEN = "session.open"
_ENDS = ("session.close", "session.terminated")


class TerminateError(Exception):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "unknown session" | "ended"


def _docs(store: Store, kinds: Sequence[str], session_ids: Sequence[str]) -> list[Any]:
    rows = store.find_entries(kinds=kinds, session_ids=session_ids)
    return [r for r in map(as_entry_says, rows) if r is not None and r.kind in kinds]


def request(
    store: Store, writer: LedgerWriter, session_id: str, *, by: str, reason: str, now_ns: int
) -> dict[str, Any]:
    """Record the request to end ``session_id``; returns its entry's body."""
    opened = _docs(store, (_OPEN,), (session_id,))
    if not opened:
        raise TerminateError(f"no session {session_id[:64]!r}", "unknown session")
    if _docs(store, _ENDS, (session_id,)):
        raise TerminateError(f"session {session_id[:64]!r} has already ended", "ended")
    first = json.loads(opened[0].canonical)
    body = {
        "session_id": session_id,
        "connection": first.get("connection"),
        "identity": first.get("identity"),
        "by": by,
        "reason": reason,
    }
    # The access epoch moves with it: every gateway re-checks its sessions now, not at
    # its next interval (the epoch is what they watch for revocations too).
    record_change(store, writer, Draft(now_ns, KIND, body), lambda st: st.bump_access_epoch())
    return body


def requested(store: Store, session_ids: Sequence[str]) -> dict[str, str]:
    """session_id → why it must end, for those an admin asked to end."""
    out: dict[str, str] = {}
    ids = list(session_ids)
    rows = [
        r
        for i in range(0, len(ids), _IN_CHUNK)
        for r in _docs(store, (KIND,), ids[i : i + _IN_CHUNK])
    ]
    for r in rows:
        d = json.loads(r.canonical)
        by = str(d.get("by", "an admin")).removeprefix("api:").removeprefix("cli:")
        out[str(r.session_id)] = f"terminated by {by}: {d.get('reason') or 'no reason given'}"
    return out
