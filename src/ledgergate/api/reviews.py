"""Just-in-time reviews over the REST API (``/api/v1/reviews``), and the page a
notification links to (``/reviews/{id}``): thin routes over ``services.reviews``.

Any authenticated identity may ask for an access window and see its own requests (the
auditor role excepted: it reads evidence and never touches data); reviewers and admins
see every request and decide (the service refuses the requester, admins included, and
anyone outside the rule's reviewer groups); auditors read every record, with statements
as the ledger shows them and parameters as digests. Lists and records are answered
after sweeping expired requests, so nothing shows as pending past its time. The page
holds no review data: its script asks for the reviewer's token and calls this API.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from ledgergate.api.console.auth import COOKIE
from ledgergate.core.config import parse_duration
from ledgergate.core.identity import within_scope
from ledgergate.core.policy.effective import PolicyError
from ledgergate.core.review import GATEWAY, MAX_REASON, ReviewError
from ledgergate.services.admin import AdminService, ApiError, Principal
from ledgergate.services.reviews import MAX_LIST, ReviewService

__all__ = ["router"]

# What a refused step answers: not yours to see (404), not yours to do (403), not now
# (409: the review moved on, or another one is in the way), a bad request (422).
_STATUS = {
    "not found": 404,
    "forbidden": 403,
    "self-approval": 403,
    "not a reviewer": 403,
    "state": 409,
    "expired": 409,
    "already decided": 409,
    "duplicate": 409,
    "busy": 409,
    "no rule": 409,
    "damaged": 500,
}
_READ_ALL = frozenset({"admin", "auditor", "reviewer"})
# The review event stream looks at the pending reviews this often, and says something
# at least this often so proxies and browsers keep it open.
EVENTS_POLL_S = 1.0
EVENTS_KEEPALIVE_S = 15.0
# ...and checks the caller's token this often (a revoked token ends its stream).
EVENTS_AUTH_S = 5.0
_RAW = frozenset({"admin", "reviewer"})


class AccessRequest(BaseModel):
    connection: str = Field(max_length=200)
    duration: str = Field(max_length=20, description="How long, e.g. 30m, 2h.")
    reason: str | None = Field(None, max_length=MAX_REASON)


class Decision(BaseModel):
    reason: str = Field(max_length=MAX_REASON)


class CancelBody(BaseModel):
    reason: str | None = Field(None, max_length=MAX_REASON)


def _error(e: ReviewError) -> ApiError:
    return ApiError(_STATUS.get(e.reason, 422), str(e))


def router(admin: AdminService, caller: Callable[..., Awaitable[Principal]]) -> APIRouter:
    r = APIRouter()
    Caller = Annotated[Principal, Depends(caller)]
    config = admin.config

    async def run(fn: Callable[[ReviewService], Any]) -> Any:
        def go(st: Any, w: Any) -> Any:
            return fn(ReviewService(st, w, config))

        try:
            return await admin.call(go)
        except ReviewError as e:
            raise _error(e) from None
        except PolicyError as e:
            raise ApiError(
                409, f"the stored policy rules do not fit the configuration: {e}"
            ) from None

    def sweep(svc: ReviewService) -> None:
        svc.expire_due(time.time_ns())

    @r.post("/api/v1/reviews/access", tags=["reviews"], status_code=201)
    async def request_access(me: Caller, body: AccessRequest) -> dict[str, Any]:
        """Ask for a time-boxed access window on a connection (with why). Reviewers are
        notified; once approved, connecting works until the window closes."""
        if "auditor" in me.roles:
            raise ApiError(403, "the auditor role reads evidence, never data")
        if not within_scope(body.connection, me.scope):
            raise ApiError(403, "your token is not valid for this connection")
        try:
            duration = parse_duration(body.duration)
        except ValueError as e:
            raise ApiError(422, str(e)) from None

        def go(svc: ReviewService) -> dict[str, Any]:
            rv = svc.request_access(
                identity=me.name,
                groups=me.groups,
                connection=body.connection,
                duration_ns=duration,
                justification=body.reason,
                now_ns=time.time_ns(),
                identity_kind=me.kind,
            )
            return rv.as_dict()

        out: dict[str, Any] = await run(go)
        return out

    @r.get("/api/v1/reviews", tags=["reviews"])
    async def list_reviews(
        me: Caller,
        state: str | None = None,
        kind: str | None = None,
        connection: str | None = None,
        requester: str | None = None,
        to_review: bool = False,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Reviews, newest first. Without the reviewer, admin or auditor role: your own.
        ``to_review``: those you may still decide on."""
        if not me.roles.intersection(_READ_ALL):
            requester = me.name
        raw = bool(me.roles.intersection(_RAW))

        def go(svc: ReviewService) -> list[dict[str, Any]]:
            sweep(svc)
            found = svc.list(
                state=state,
                kind=kind,
                connection=connection,
                requester=requester,
                reviewer=me.name if to_review else None,
                reviewer_groups=me.groups if to_review else None,
                limit=max(1, min(limit, MAX_LIST)),
            )
            return [
                rv.as_dict() if raw or rv.requester == me.name else rv.as_dict() | svc.redacted(rv)
                for rv in found
            ]

        out: list[dict[str, Any]] = await run(go)
        return out

    # What the pending reviews are now, shared by every open event stream of this
    # process: one look at the store per EVENTS_POLL_S however many tabs listen.
    looked: list[Any] = [0.0, ""]
    looking = asyncio.Lock()

    def pending(svc: ReviewService) -> str:
        sweep(svc)
        found = svc.list(state="pending")
        state = ";".join(f"{rv.id}:{len(rv.decisions)}" for rv in found)
        return f"{len(found)} {hashlib.sha256(state.encode()).hexdigest()}"

    async def pending_state() -> str:
        async with looking:
            if time.monotonic() - looked[0] >= EVENTS_POLL_S:
                looked[1] = await run(pending)
                looked[0] = time.monotonic()
            return str(looked[1])

    @r.get("/api/v1/reviews/events", tags=["reviews"])
    async def review_events(request: Request, me: Caller) -> StreamingResponse:
        """Server-sent events: ``reviews`` (data: how many are pending) each time the
        pending reviews change (one arrives, one is decided, withdrawn or expires), at
        once on connecting; ``ended`` when the caller's token stops working. What the
        console's inbox listens to; any SSE client can."""
        auth = request.headers.get("authorization") or "Bearer " + (
            request.cookies.get(COOKIE) or ""
        )
        me.require("reviewer", "admin", "auditor")

        async def stream() -> AsyncIterator[bytes]:
            last, quiet, since_auth = "", 0.0, 0.0
            while not await request.is_disconnected():
                if since_auth <= 0:
                    try:
                        await admin.principal(auth)
                    except ApiError as e:
                        yield f"event: ended\ndata: {e.message}\n\n".encode()
                        return
                    since_auth = EVENTS_AUTH_S
                now = await pending_state()
                if now != last:
                    last, quiet = now, 0.0
                    yield f"event: reviews\ndata: {now.split()[0]}\n\n".encode()
                elif quiet >= EVENTS_KEEPALIVE_S:
                    quiet = 0.0
                    yield b": keepalive\n\n"
                await asyncio.sleep(EVENTS_POLL_S)
                quiet += EVENTS_POLL_S
                since_auth -= EVENTS_POLL_S

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @r.get("/api/v1/reviews/{review_id}", tags=["reviews"])
    async def get_review(me: Caller, review_id: str) -> dict[str, Any]:
        """The approval record: requester, decisions and reasons, times, the statement or
        window, the sessions and commands that ran under it, and its ledger entries."""

        def go(svc: ReviewService) -> dict[str, Any]:
            sweep(svc)
            rv = svc.get(review_id)
            if rv is None or (rv.requester != me.name and not me.roles.intersection(_READ_ALL)):
                raise ReviewError(f"no review {review_id[:40]!r}", "not found")
            raw = rv.requester == me.name or bool(me.roles.intersection(_RAW))
            return svc.record(review_id, raw=raw)

        out: dict[str, Any] = await run(go)
        return out

    async def _decide(me: Principal, review_id: str, approve: bool, reason: str) -> dict[str, Any]:
        def go(svc: ReviewService) -> dict[str, Any]:
            rv = svc.decide(
                review_id,
                reviewer=me.name,
                reviewer_groups=me.groups,
                approve=approve,
                reason=reason,
                now_ns=time.time_ns(),
            )
            return rv.as_dict()

        out: dict[str, Any] = await run(go)
        return out

    @r.post("/api/v1/reviews/{review_id}/approve", tags=["reviews"])
    async def approve(me: Caller, review_id: str, body: Decision) -> dict[str, Any]:
        """Approve (reviewers and admins in one of the rule's reviewer groups; never your
        own request). The reason is recorded."""
        return await _decide(me, review_id, True, body.reason)

    @r.post("/api/v1/reviews/{review_id}/deny", tags=["reviews"])
    async def deny(me: Caller, review_id: str, body: Decision) -> dict[str, Any]:
        """Deny (one deny is enough). The reason is recorded."""
        return await _decide(me, review_id, False, body.reason)

    @r.post("/api/v1/reviews/{review_id}/cancel", tags=["reviews"])
    async def cancel(me: Caller, review_id: str, body: CancelBody | None = None) -> dict[str, Any]:
        """Withdraw your own request (or its unused approval), or end your open window."""
        if me.name == GATEWAY:
            # The service lets the gateway itself withdraw anyone's held statement: an
            # identity that happens to bear its name must not borrow that.
            raise ApiError(
                403, f"the name {GATEWAY!r} is reserved for the gateway: it cannot cancel"
            )

        def go(svc: ReviewService) -> dict[str, Any]:
            rv = svc.get(review_id)
            if rv is None or (rv.requester != me.name and not me.roles.intersection(_READ_ALL)):
                raise ReviewError(f"no review {review_id[:40]!r}", "not found")
            done = svc.cancel(
                review_id,
                actor=me.name,
                reason=body.reason if body else None,
                now_ns=time.time_ns(),
            )
            return done.as_dict()

        out: dict[str, Any] = await run(go)
        return out

    @r.get("/reviews/{review_id}", tags=["reviews"], include_in_schema=False)
    async def review_page(review_id: str) -> HTMLResponse:
        """The page a notification links to: the request, and approve/deny forms that
        call the API with the reviewer's own token (nothing here without it)."""
        return HTMLResponse(PAGE, headers=_PAGE_HEADERS)

    return r


_SCRIPT = """
const id = decodeURIComponent(location.pathname.split("/").pop());
const api = "/api/v1/reviews/" + encodeURIComponent(id);
const $ = (s) => document.querySelector(s);
const token = () => sessionStorage.getItem("ledgergate-token") || "";
const ns = (v) => (v === null || v === undefined) ? "-" : new Date(v / 1e6).toISOString();
function say(text) { $("#msg").textContent = text; }
async function call(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: {"Authorization": "Bearer " + token(), "Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
  return j;
}
function row(dl, k, v) {
  const dt = document.createElement("dt"); dt.textContent = k; dl.append(dt);
  const dd = document.createElement("dd"); dd.textContent = v; dl.append(dd);
}
function show(rv) {
  const dl = $("#review"); dl.replaceChildren();
  row(dl, "review", rv.id + " (" + rv.kind + ")");
  row(dl, "state", rv.state);
  row(dl, "connection", rv.connection);
  row(dl, "requested by", rv.requester.subject + " at " + ns(rv.created_ns));
  row(dl, "why", rv.justification || "-");
  if (rv.kind === "command") {
    row(dl, "statement", rv.statement === null ? "(not shown)" : rv.statement);
    row(dl, "parameters", rv.params === null ? "(not shown)" : JSON.stringify(rv.params));
  } else {
    row(dl, "window", (rv.duration_ns / 60e9) + " minutes");
  }
  row(dl, "needs", rv.requirement.min_approvals + " approval(s) from " +
      rv.requirement.groups.join(rv.requirement.all_groups ? " and " : " or "));
  row(dl, "expires", ns(rv.expires_ns));
  for (const d of rv.decisions) {
    row(dl, d.approve ? "approved by" : "denied by", d.reviewer + ": " + d.reason);
  }
  $("#decide").hidden = rv.state !== "pending";
}
async function load() {
  try { show(await call("GET", api)); say(""); } catch (e) { say(e.message); }
}
$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("ledgergate-token", $("#token").value.trim());
  $("#token").value = "";
  load();
});
for (const act of ["approve", "deny"]) {
  $("#" + act).addEventListener("click", async () => {
    try {
      show(await call("POST", api + "/" + act, {reason: $("#reason").value}));
      say(act === "approve" ? "approved" : "denied");
    } catch (e) { say(e.message); }
  });
}
// A notification's Approve / Deny link names the action: point at the reason, never
// act on a link alone.
const action = new URLSearchParams(location.search).get("action");
if (action === "approve" || action === "deny") {
  $("#reason").placeholder = "why you " + action + " this (recorded)";
}
if (token()) load();
"""

PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>ledgergate review</title></head>"
    "<body><h1>ledgergate review</h1>"
    "<form id=login><label>Your gateway token (<code>ledgergate whoami --show-token</code>) "
    "<input id=token type=password autocomplete=off></label> <button>Show</button></form>"
    "<dl id=review></dl>"
    "<div id=decide hidden><label>Reason <input id=reason size=60></label> "
    "<button id=approve type=button>Approve</button> "
    "<button id=deny type=button>Deny</button></div>"
    "<p id=msg role=status></p>"
    f"<script>{_SCRIPT}</script></body></html>"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_PAGE_HEADERS = {
    # Only our own script runs, it talks to this origin only, and no other site may
    # frame the page (an approve button must not be clicked through an overlay).
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
