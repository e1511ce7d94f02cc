"""The ledger's health as the console and ``GET /api/v1/ledger/health`` show it: each
stream's size and last signed checkpoint, the last verification and what the witnesses
have taken; and a verification run on request (``POST /api/v1/ledger/verify``).

A verification run from the API is itself on the ledger: an ``audit.verified`` entry
with who asked, the outcome, the entries checked and the first problem, so "when was
the ledger last verified, and by whom" has an answer that cannot be quietly edited.
Witness progress is read from the publishers' cursor files (what each witness has
confirmed taking); a witness's target is shown without its token or secret.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.services import audit
from ledgergate.services.config import Settings
from ledgergate.services.cursor import CursorFile
from ledgergate.services.journal import as_entry_says
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store.base import Store

__all__ = ["KIND", "check", "health", "last_verified", "record", "witnesses"]

KIND = "audit.verified"


def _host(url: str) -> str:
    """host[:port] of a URL: never its path or query, nor user:password@ before it."""
    u = urlsplit(url)
    host = u.hostname or "-"
    return f"{host}:{u.port}" if u.port else host


def _target(spec: Any) -> str:
    t = spec.type
    if t == "file":
        return str(spec.path)
    if t == "syslog":
        return str(spec.address)
    if t == "https":
        return _host(spec.url)
    if t == "s3":
        return f"{_host(spec.endpoint)}/{spec.bucket}"
    return "-"


def witnesses(settings: Settings) -> list[dict[str, Any]]:
    """Each configured witness: its type, where it is, and per stream the size of the
    last checkpoint it took (any worker process's cursor counts for its stream)."""
    out = []
    root = settings.data_dir / "witness"
    for i, spec in enumerate(settings.config.ledger.witnesses):
        taken: dict[str, int] = {}
        for path in sorted(root.glob(f"{i}-{spec.type}*.json")):
            for stream, size in CursorFile(path).at.items():
                taken[stream] = max(size, taken.get(stream, 0))
        out.append({"index": i, "type": spec.type, "target": _target(spec), "taken": taken})
    return out


def last_verified(store: Store) -> dict[str, Any] | None:
    rows = store.find_entries(kinds=(KIND,), newest_first=True, limit=5)
    for said in map(as_entry_says, rows):
        if said is not None and said.kind == KIND:
            doc: dict[str, Any] = json.loads(said.canonical)
            return doc
    return None


def health(store: Store, settings: Settings) -> dict[str, Any]:
    streams = []
    for stream in store.streams():
        head = audit.stream_head(store, stream)
        cp = store.latest_checkpoint(stream)
        streams.append(
            {
                "stream": stream,
                "entries": head,
                "checkpoint": None
                if cp is None
                else {"size": cp.size, "ts_ns": cp.ts_ns, "root": cp.root.hex()},
                "unsigned": head - (cp.size if cp is not None else 0),
            }
        )
    return {
        "streams": streams,
        "last_verified": last_verified(store),
        "witnesses": witnesses(settings),
    }


def check(settings: Settings, signer: Signer) -> audit.AuditReport:
    """Verify every stream, on a store handle of its own (it reads everything: run it
    on a thread of its own, not the API's worker)."""
    store = settings.open_store()
    try:
        return audit.verify_store(store, [signer.verifier], key_source="the gateway's ledger key")
    finally:
        store.close()


def record(writer: LedgerWriter, rep: audit.AuditReport, *, by: str) -> dict[str, Any]:
    """Record a verification's outcome (an ``audit.verified`` entry); returns the
    report as ``audit verify --json`` prints it."""
    now = time.time_ns()
    body: dict[str, Any] = {
        "by": by,
        "ok": rep.ok,
        "entries": rep.entries,
        "streams": len(rep.streams),
    }
    first = rep.first_problem()
    if first is not None:
        body["problem"] = first[:500]
    writer.append([Draft(now, KIND, body)], now)
    return rep.as_dict()
