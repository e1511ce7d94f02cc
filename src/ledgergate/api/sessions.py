"""The REST API over recorded sessions and the ledger: session pages with filters, a
session's timeline, the asciicast of an SSH shell, an entry's inclusion proof, and the
ledger's health (streams, their last signed checkpoints).

Thin routes over ``services.sessions`` and ``services.audit``, what the console's pages
and the CLI's ``sessions`` and ``audit prove`` show. Admins and auditors read every
session; anyone else reads their own. Nothing here writes but the checkpoint a proof may
need signed first (as ``audit prove`` does).
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ledgergate.services import (
    audit,
    http_timeline,
    ledger_health,
    sessions,
    ssh_replay,
    terminate,
)
from ledgergate.services.admin import AdminService, ApiError, Principal
from ledgergate.services.keys import PayloadCipher
from ledgergate.store.base import Store

__all__ = [
    "PROTOCOLS",
    "protocol_connections",
    "replay_text",
    "router",
    "session_page",
    "timeline_rows",
]

# What the protocol filter offers: the connection types of the configuration.
PROTOCOLS = ("postgres", "http", "s3", "kafka", "ssh")
_READ_ALL = frozenset({"admin", "auditor"})


def protocol_connections(admin: AdminService, protocol: str | None) -> frozenset[str] | None:
    if protocol is None or protocol == "":
        return None
    if protocol not in PROTOCOLS:
        raise ApiError(422, f"protocol: one of {', '.join(PROTOCOLS)}")
    return frozenset(c.name for c in admin.config.connections if c.type == protocol)


def _stream_seq(entry: str) -> tuple[str, int]:
    stream, _, seq = entry.rpartition(":")
    if not stream or not seq.isdigit():
        raise ApiError(422, "entry: STREAM:SEQ, e.g. gateway@host:42")
    return stream, int(seq)


# A session page shows this many timeline rows at most (the rest by ``offset``), and
# its replay this much text: a session of a million entries must not stall the event
# loop the gateway relays on while a page is built (the CLI plays all of it).
TIMELINE_PAGE = 1000
MAX_TIMELINE_PAGE = 5000
REPLAY_MAX_CHARS = 256 * 1024


def ordered(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A session's entries in time order: entries of other streams (an admin's
    termination, a review's decision) fall where they happened."""
    return sorted(
        docs, key=lambda d: (d.get("ts_ns") or 0, str(d.get("stream")), d.get("seq") or 0)
    )


def opening(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The session's ``session.open`` entry (its first entry if that is missing)."""
    return next((d for d in docs if d.get("kind") == "session.open"), docs[0])


def timeline_rows(store: Store, session_id: str) -> list[dict[str, Any]]:
    """The session's entries as the console shows them: position, time, kind, one line."""
    out = []
    for doc in ordered(sessions.session_timeline(store, session_id)):
        row = {
            "entry": f"{doc.get('stream')}:{doc.get('seq')}",
            "ts_ns": doc.get("ts_ns"),
            "kind": doc.get("kind"),
            "line": sessions.describe(doc),
            "doc": doc,
        }
        if doc.get("kind") == "object.manifest":  # an object's parts, as `sessions show`
            row["manifest"] = http_timeline.manifest_lines(store, doc)
        out.append(row)
    return out


class _Full(Exception):
    pass


class _Capped(io.StringIO):
    def write(self, text: str) -> int:
        if self.tell() + len(text) > REPLAY_MAX_CHARS:
            super().write(text[: max(0, REPLAY_MAX_CHARS - self.tell())])
            raise _Full
        return super().write(text)


def replay_text(store: Store, session_id: str, cipher: PayloadCipher | None) -> str:
    """The session as ``ledgergate sessions replay --no-wait`` prints it: statements with
    their results (decoded where payloads were kept), requests with their parts, Kafka
    messages per partition; cut at ``REPLAY_MAX_CHARS``."""
    buf = _Capped()
    try:
        sessions.replay(store, session_id, speed=0, out=buf, cipher=cipher)
    except _Full:
        return (
            buf.getvalue()
            + f"\n… cut here; `ledgergate sessions replay {session_id}` plays all of it\n"
        )
    return buf.getvalue()


class TerminateBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


async def session_page(
    admin: AdminService,
    me: Principal,
    *,
    identity: str | None,
    connection: str | None,
    protocol: str | None,
    outcome: str | None,
    since_ns: int | None,
    until_ns: int | None,
    cursor: str | None,
    limit: int,
) -> sessions.SessionPage:
    """A page of the sessions ``me`` may see (without the admin or auditor role: their
    own), as the API's list and the console's Sessions page show it. Bad filters raise
    ApiError 422."""
    if not me.roles.intersection(_READ_ALL):
        identity = me.name
    conns = protocol_connections(admin, protocol or None)
    try:
        page: sessions.SessionPage = await admin.call(
            lambda st, _w: sessions.page_sessions(
                st,
                identity=identity or None,
                connection=connection or None,
                connections=conns,
                outcome=outcome or None,
                since_ns=since_ns,
                until_ns=until_ns,
                cursor=cursor or None,
                limit=limit,
            )
        )
    except ValueError as e:
        raise ApiError(422, str(e)) from None
    return page


def router(admin: AdminService, caller: Callable[..., Awaitable[Principal]]) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    Caller = Annotated[Principal, Depends(caller)]
    verifying = asyncio.Lock()  # one verification at a time: each reads the whole ledger

    async def own_session(me: Principal, session_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await admin.call(lambda st, _w: timeline_rows(st, session_id))
        docs = [r["doc"] for r in rows]
        mine = bool(rows) and (opening(docs).get("identity") or {}).get("subject") == me.name
        if not rows or not (mine or me.roles.intersection(_READ_ALL)):
            raise ApiError(404, f"no session {session_id[:64]!r}")
        return rows

    @r.get("/sessions", tags=["sessions"])
    async def list_sessions(
        me: Caller,
        identity: str | None = None,
        connection: str | None = None,
        protocol: str | None = None,
        outcome: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        cursor: Annotated[str | None, Query(max_length=300)] = None,
        limit: Annotated[int, Query(ge=1, le=sessions.MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        """Sessions of every protocol, newest first, a page at a time (``next`` is the
        cursor of the following page). Without the admin or auditor role: your own."""
        page = await session_page(
            admin,
            me,
            identity=identity,
            connection=connection,
            protocol=protocol,
            outcome=outcome,
            since_ns=since_ns,
            until_ns=until_ns,
            cursor=cursor,
            limit=limit,
        )
        return page.as_dict()

    @r.get("/sessions/{session_id}", tags=["sessions"])
    async def session_timeline(
        me: Caller,
        session_id: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_PAGE)] = TIMELINE_PAGE,
    ) -> dict[str, Any]:
        """A session's timeline: its entries in time order, ``limit`` from ``offset``,
        each with its ledger position and the line ``ledgergate sessions show`` prints
        for it (``next_offset``: where the following page starts)."""
        rows = await own_session(me, session_id)
        more = offset + limit < len(rows)
        return {
            "session_id": session_id,
            "total": len(rows),
            "entries": rows[offset : offset + limit],
            "next_offset": offset + limit if more else None,
        }

    @r.get("/sessions/{session_id}/replay", tags=["sessions"])
    async def session_replay(me: Caller, session_id: str) -> Response:
        """The session as ``ledgergate sessions replay --no-wait`` prints it (text, cut
        at 256 KiB): what the console's replay shows."""
        await own_session(me, session_id)
        cipher = admin.payload_cipher()
        text = await admin.call(lambda st, _w: replay_text(st, session_id, cipher))
        return Response(text, media_type="text/plain; charset=utf-8")

    @r.post("/sessions/{session_id}/terminate", tags=["sessions"])
    async def terminate_session(me: Caller, session_id: str, body: TerminateBody) -> dict[str, Any]:
        """End an open session now (admins): an ``admin.session.terminate`` entry first,
        then the gateway holding the session ends it (this one at once, others at their
        next re-check), the client told ``session ended: terminated by …``."""
        me.require("admin")
        try:
            done = await admin.call(
                terminate.request,
                session_id,
                by=me.actor,
                reason=body.reason,
                now_ns=time.time_ns(),
            )
        except terminate.TerminateError as e:
            raise ApiError(404 if e.reason == "unknown session" else 409, str(e)) from None
        await admin.changed()
        return {**done, "requested": True}

    @r.get("/sessions/{session_id}/asciicast", tags=["sessions"])
    async def session_asciicast(me: Caller, session_id: str) -> Response:
        """An SSH shell's recording as asciicast v2 (asciinema), a marker at each signed
        checkpoint: what ``sessions replay --asciicast`` writes."""
        rows = await own_session(me, session_id)
        timeline = [r["doc"] for r in rows]
        cipher = admin.payload_cipher()
        try:
            lines = await admin.call(
                lambda st, _w: list(ssh_replay.asciicast(st, cipher, timeline))
            )
        except LookupError as e:
            raise ApiError(404, str(e)) from None
        return Response(
            "\n".join(lines) + "\n",
            media_type="application/x-asciicast",
            headers={"Content-Disposition": f'attachment; filename="{session_id}.cast"'},
        )

    @r.get("/ledger/proof", tags=["evidence"])
    async def entry_proof(
        me: Caller,
        entry: Annotated[str, Query(max_length=300, description="STREAM:SEQ")],
        format: Annotated[str, Query(pattern="^(json|tlog-proof)$")] = "tlog-proof",
    ) -> Response:
        """An inclusion proof of one entry against a signed checkpoint, to verify offline
        with ``ledgergate audit verify-proof`` (what ``audit prove`` writes)."""
        me.require("admin", "auditor")
        stream, seq = _stream_seq(entry)
        try:
            doc = await admin.call(
                lambda st, _w: audit.prove_inclusion(
                    st, stream, seq, signer=admin.signer, now_ns=time.time_ns()
                )
            )
        except (audit.ProofError, ValueError) as e:
            raise ApiError(404, str(e)) from None
        name = f"{stream}-{seq}".replace("@", "_").replace("/", "_")
        if format == "json":
            body = json.dumps(doc, indent=2, sort_keys=True) + "\n"
            kind, ext = "application/json", "proof.json"
        else:
            body, kind, ext = audit.as_tlog_proof(doc), "text/plain; charset=utf-8", "tlog-proof"
        return Response(
            body,
            media_type=kind,
            headers={"Content-Disposition": f'attachment; filename="{name}.{ext}"'},
        )

    @r.get("/ledger/health", tags=["evidence"])
    async def get_ledger_health(me: Caller) -> dict[str, Any]:
        """Each stream's size and its last signed checkpoint (how far the head is ahead
        of it), the last verification (an ``audit.verified`` entry) and what each
        witness has taken."""
        me.require("admin", "auditor")
        doc = await admin.call(lambda st, _w: ledger_health.health(st, admin.settings))
        return {**doc, "now_ns": time.time_ns()}

    @r.post("/ledger/verify", tags=["evidence"])
    async def verify_ledger(me: Caller) -> dict[str, Any]:
        """Verify every stream now (entries, chain, signed checkpoints), as ``ledgergate
        audit verify`` does; the outcome is recorded as an ``audit.verified`` entry."""
        me.require("admin", "auditor")
        if verifying.locked():
            raise ApiError(409, "a verification is running; its outcome shows when it ends")
        async with verifying:
            rep = await asyncio.to_thread(ledger_health.check, admin.settings, admin.signer)
        return await admin.call(lambda _st, w: ledger_health.record(w, rep, by=me.actor))

    return r
