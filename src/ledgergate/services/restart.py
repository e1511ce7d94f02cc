"""What a gateway settles at start about its previous run: the sessions it never closed.

A gateway killed with sessions open (``kill -9``, a crash, a lost host) wrote no
``session.close`` for them; its journal replay restores what it had written, nothing
more. At the next start of the same stream, each session the stream opened and never
ended gets a ``session.close`` entry saying so, with the closing time of that start (the
true end is unknown: the ledger says when it learnt of it). Reads the store through
``services.sessions``; writes through the caller's ledger sink.
"""

from __future__ import annotations

import time

from ledgergate.core.ledger.entry import Draft
from ledgergate.services.sessions import left_open
from ledgergate.store.base import Store

__all__ = ["ORPHAN_LOOKBACK_NS", "ORPHAN_OUTCOME", "closing_drafts"]

# How far back a start looks for sessions its stream left open. Every start closes
# those it finds, so only a gateway down for longer than this leaves some open for good
# (they stay visible as never closed in ``sessions list``).
ORPHAN_LOOKBACK_NS = 30 * 86400 * 10**9
ORPHAN_OUTCOME = (
    "the gateway ended without closing the session (killed or lost); closed at its restart"
)


def closing_drafts(store: Store, stream: str, now_ns: int | None = None) -> list[Draft]:
    """A ``session.close`` draft for each session ``stream`` left open."""
    now = time.time_ns() if now_ns is None else now_ns
    return [
        Draft(now, "session.close", {**fields, "outcome": ORPHAN_OUTCOME, "ended_by": "restart"})
        for fields in left_open(store, stream, now - ORPHAN_LOOKBACK_NS)
    ]
