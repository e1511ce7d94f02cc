"""The console's pages: reviews (the live inbox), sessions (filters, search, a session's
timeline with proofs and replay), the ledger's health, tokens (admins), and a person's
own access.

Pages read through the services the API routes call and render on the server; every
action on them (approve, deny, revoke, create, request) is a call to the REST API from
``static/console.js``, the same call the CLI makes. Nothing is decided here that the API
would decide differently: the role checks below only choose what to show.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from ledgergate.api.console.render import Page, render, signed_in
from ledgergate.api.sessions import (
    PROTOCOLS,
    TIMELINE_PAGE,
    opening,
    replay_text,
    session_page,
    timeline_rows,
)
from ledgergate.core.config import parse_time
from ledgergate.services import kafka_timeline, ledger_health, search, sessions, tokens
from ledgergate.services.admin import AdminService, ApiError, Principal
from ledgergate.services.reviews import ReviewService
from ledgergate.store.base import Store

__all__ = ["router"]

# How many of the requester's latest sessions a pending review shows beside it.
RECENT_SESSIONS = 5
PAGE_SIZE = 50


def _parse_time(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return parse_time(text, time.time_ns())
    except ValueError as e:
        raise ApiError(422, str(e)) from None


async def inbox(admin: AdminService, me: Principal) -> list[dict[str, Any]]:
    """Pending reviews, newest first, each with whether ``me`` may decide it and the
    requester's latest sessions (what a reviewer weighs)."""

    def go(st: Store, w: Any) -> list[dict[str, Any]]:
        svc = ReviewService(st, w, admin.config)
        svc.expire_due(time.time_ns())
        mine = {
            rv.id for rv in svc.list(state="pending", reviewer=me.name, reviewer_groups=me.groups)
        }
        out = []
        for rv in svc.list(state="pending", limit=100):
            d = rv.as_dict()
            d["can_decide"] = rv.id in mine and rv.requester != me.name
            d["own"] = rv.requester == me.name
            d["recent"] = sessions.list_sessions(st, identity=rv.requester, limit=RECENT_SESSIONS)
            out.append(d)
        return out

    items: list[dict[str, Any]] = await admin.call(go)
    return items


def router(admin: AdminService) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/")
    async def home(request: Request) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        target = (
            "/console/reviews"
            if page.reviewer
            else "/console/sessions"
            if page.auditor
            else "/console/me"
        )
        return RedirectResponse(target, status_code=303)

    @r.get("/console/reviews")
    async def reviews_page(request: Request) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        if not page.reviewer:
            return render("denied.html", page, 403, need="reviewer")
        items = await inbox(admin, page.me)
        return render("reviews.html", page, items=items)

    @r.get("/console/reviews/inbox")
    async def reviews_fragment(request: Request) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        if not page.reviewer:
            return render("denied.html", page, 403, need="reviewer")
        return render("_inbox.html", page, items=await inbox(admin, page.me))

    @r.get("/console/sessions")
    async def sessions_page(
        request: Request,
        identity: str = "",
        connection: str = "",
        protocol: str = "",
        outcome: str = "",
        since: str = "",
        until: str = "",
        q: Annotated[str, Query(max_length=2000)] = "",
        cursor: Annotated[str, Query(max_length=300)] = "",
    ) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        me = page.me
        who = identity if page.auditor else me.name
        form = {
            "identity": who,
            "connection": connection,
            "protocol": protocol,
            "outcome": outcome,
            "since": since,
            "until": until,
            "q": q,
        }
        try:
            since_ns, until_ns = _parse_time(since), _parse_time(until)
        except ApiError as e:
            return render("sessions.html", page, 422, form=form, error=e.message, **_choices(admin))
        hits: list[search.Hit] = []
        if q and page.auditor:
            try:
                hits = await admin.call(
                    lambda st, _w: search.search(
                        st,
                        q,
                        identity=who or None,
                        connection=connection or None,
                        since_ns=since_ns,
                        until_ns=until_ns,
                        limit=PAGE_SIZE,
                    )
                )
            except search.SearchError as e:
                return render(
                    "sessions.html", page, 422, form=form, error=str(e), **_choices(admin)
                )
        try:
            found = await session_page(
                admin,
                me,
                identity=who,
                connection=connection,
                protocol=protocol,
                outcome=outcome,
                since_ns=since_ns,
                until_ns=until_ns,
                cursor=cursor,
                limit=PAGE_SIZE,
            )
        except ApiError as e:
            return render("sessions.html", page, 422, form=form, error=e.message, **_choices(admin))
        kinds = {c.name: c.type for c in admin.config.connections}
        return render(
            "sessions.html",
            page,
            form=form,
            rows=found.sessions,
            next_cursor=found.next_cursor,
            hits=[h.as_dict() for h in hits],
            kinds=kinds,
            query_without_cursor=_query(form),
            **_choices(admin),
        )

    @r.get("/console/sessions/{session_id}")
    async def one_session_page(
        request: Request, session_id: str, offset: Annotated[int, Query(ge=0)] = 0
    ) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        cipher = admin.payload_cipher()

        def view(st: Store, _w: object) -> dict[str, Any] | None:
            # Built on the worker thread: the event loop only renders one page of it.
            rows = timeline_rows(st, session_id)
            if not rows:
                return None
            docs = [r["doc"] for r in rows]
            shell = any(
                d.get("kind") == "command"
                and (d.get("command") or {}).get("protocol") == "ssh"
                and (d.get("command") or {}).get("op") in ("shell", "exec")
                for d in docs
            )
            return {
                "rows": rows[offset : offset + TIMELINE_PAGE],
                "total": len(rows),
                "first": opening(docs),
                "shell": shell,
                "kafka": kafka_timeline.partitions(docs),
                "replay": "" if shell else replay_text(st, session_id, cipher),
            }

        v = await admin.call(view)
        subject = (v["first"].get("identity") or {}).get("subject") if v else None
        if v is None or not (page.auditor or subject == page.me.name):
            return render("denied.html", page, 404, need=None, what=f"no session {session_id}")
        more = offset + TIMELINE_PAGE < v["total"]
        kinds = {c.name: c.type for c in admin.config.connections}
        return await asyncio.to_thread(
            render,
            "session.html",
            page,
            wasm=v["shell"],
            session_id=session_id,
            offset=offset,
            next_offset=offset + TIMELINE_PAGE if more else None,
            protocol=kinds.get(str(v["first"].get("connection")), "-"),
            **v,
        )

    @r.get("/console/ledger")
    async def ledger_page(request: Request) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        if not page.auditor:
            return render("denied.html", page, 403, need="auditor")
        doc = await admin.call(lambda st, _w: ledger_health.health(st, admin.settings))
        return render("ledger.html", page, **doc)

    @r.get("/console/tokens")
    async def tokens_page(request: Request, identity: str = "") -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        if not page.admin:
            return render("denied.html", page, 403, need="admin")
        recs = await admin.call(lambda st, _w: tokens.list_tokens(st, identity or None))
        now = time.time_ns()
        return render(
            "tokens.html",
            page,
            tokens=[t.as_dict(now) for t in recs],
            identity=identity,
        )

    @r.get("/console/me")
    async def me_page(request: Request) -> Response:
        page = await signed_in(admin, request)
        if not isinstance(page, Page):
            return page
        me = page.me

        def go(st: Store, w: Any) -> tuple[Any, list[dict[str, Any]]]:
            svc = ReviewService(st, w, admin.config)
            mine = [rv.as_dict() for rv in svc.list(requester=me.name, limit=50)]
            return sessions.page_sessions(st, identity=me.name, limit=20).sessions, mine

        own, requests = await admin.call(go)
        conns = [c.name for c in admin.config.connections]
        return render("me.html", page, sessions=own, requests=requests, connections=conns)

    return r


def _choices(admin: AdminService) -> dict[str, Any]:
    return {
        "protocols": PROTOCOLS,
        "connections": sorted(c.name for c in admin.config.connections),
        "outcomes": ("open", "client", "revoked", "expired", "disabled", "terminated", "error"),
    }


def _query(form: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in form.items() if v})
