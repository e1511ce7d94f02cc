"""The console's admin pages: live sessions (terminate), identities (disable, enable),
grants, policy rules with ``explain``, connections with their health and the webhook
receivers. Auditors read the ones that change nothing (policy, connections).

Read through the services the API routes call; every button is a REST API call from
``static/console.js`` (``/api/v1/sessions/{id}/terminate``, ``/api/v1/identities/…``,
``/api/v1/grants``, ``/api/v1/policy/explain``).
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from ledgergate.api.connections import webhooks
from ledgergate.api.console.render import Page, render, signed_in
from ledgergate.api.evidence import insights_for
from ledgergate.core.policy.effective import PolicyError
from ledgergate.services import connection_health, identities, policy_rules, sessions
from ledgergate.services.admin import AdminService, ApiError
from ledgergate.services.evidence.report import FRAMEWORKS
from ledgergate.services.insights_report import render_body
from ledgergate.services.policy import describe as describe_policy
from ledgergate.store.base import Store

__all__ = ["router"]

# The live sessions page lists at most this many open sessions, newest first.
LIVE_MAX = 200


def router(admin: AdminService) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    async def viewer(request: Request, *roles: str) -> Page | Response:
        page = await signed_in(admin, request)
        if isinstance(page, Page) and not page.me.roles.intersection(roles):
            return render("denied.html", page, 403, need=" or ".join(roles))
        return page

    @r.get("/console/live")
    async def live_page(request: Request) -> Response:
        page = await viewer(request, "admin")
        if not isinstance(page, Page):
            return page
        found = await admin.call(
            lambda st, _w: sessions.page_sessions(st, outcome="open", limit=LIVE_MAX)
        )
        kinds = {c.name: c.type for c in admin.config.connections}
        return render("live.html", page, rows=found.sessions, kinds=kinds)

    @r.get("/console/identities")
    async def identities_page(request: Request) -> Response:
        page = await viewer(request, "admin")
        if not isinstance(page, Page):
            return page
        rows = await admin.call(lambda st, _w: st.list_identities())
        return render(
            "identities.html", page, identities=[identities.identity_dict(i) for i in rows]
        )

    @r.get("/console/grants")
    async def grants_page(request: Request) -> Response:
        page = await viewer(request, "admin")
        if not isinstance(page, Page):
            return page
        stored = await admin.call(lambda st, _w: st.list_grants())
        return render(
            "grants.html",
            page,
            file_grants=[g.model_dump() for g in (admin.config.grants or [])],
            stored=stored,
            open=admin.config.grants is None and not stored,
            connections=sorted(c.name for c in admin.config.connections),
        )

    @r.get("/console/policy")
    async def policy_page(request: Request) -> Response:
        page = await viewer(request, "admin", "auditor", "reviewer")
        if not isinstance(page, Page):
            return page
        file_policy = admin.config.policy

        def go(st: Store, _w: object) -> dict[str, Any]:
            ps, stored = policy_rules.current(st, file_policy)
            doc = describe_policy(ps, stored)
            for r in doc["rules"]:
                shown = {k: v for k, v in r.items() if k not in ("id", "type", "source", "stored")}
                r["definition"] = json.dumps(shown, sort_keys=True)
            return doc

        try:
            doc = await admin.call(go)
        except PolicyError as e:
            return render("denied.html", page, 409, need=None, what=f"policy: {e}")
        return render(
            "policy.html",
            page,
            policy=doc,
            connections=sorted(c.name for c in admin.config.connections),
        )

    @r.get("/console/connections")
    async def connections_page(request: Request) -> Response:
        page = await viewer(request, "admin", "auditor")
        if not isinstance(page, Page):
            return page
        conns = await connection_health.probe_all(admin.config)
        hooks = webhooks(admin) if page.admin else []
        return render("connections.html", page, connections=conns, webhooks=hooks)

    @r.get("/console/evidence")
    async def evidence_page(request: Request) -> Response:
        page = await viewer(request, "admin", "auditor")
        if not isinstance(page, Page):
            return page
        jobs = [j.as_dict() for j in admin.evidence_jobs.list()]
        return render("evidence.html", page, jobs=jobs, frameworks=FRAMEWORKS)

    @r.get("/console/insights")
    async def insights_page(request: Request, since: str = "30d", until: str = "") -> Response:
        page = await viewer(request, "admin", "auditor")
        if not isinstance(page, Page):
            return page
        try:
            ins = await insights_for(admin, since, until or None)
        except ApiError as e:
            return render("insights.html", page, 422, since=since, until=until, error=e.message)
        return render(
            "insights.html", page, since=since, until=until, body=Markup(render_body(ins))
        )

    return r
