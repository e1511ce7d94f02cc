"""Rendering the console's pages: the Jinja2 templates, their filters, the headers every
page carries, and who is looking at it.

Pages are rendered on the server from the same services the API routes call; the only
script is ``static/console.js`` (and the vendored asciinema-player), so the Content
Security Policy allows scripts and styles of this origin only, and no page may be framed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ledgergate.api.console.auth import COOKIE, clear_session, csrf_token
from ledgergate.services.admin import AdminService, ApiError, Principal

__all__ = ["HERE", "Page", "render", "signed_in"]

HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self' "
        "https: http:; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a form posts "Origin: null", and
    # the sign-in form must show it comes from this origin (no referrer leaves it).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def fmt_ns(v: object) -> str:
    if not isinstance(v, int):
        return "-"
    try:
        t = dt.datetime.fromtimestamp(v / 1e9, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):  # outside years 1-9999
        return f"{v} ns"
    return t.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ns"] = fmt_ns
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


_ENV = _env()


class Page:
    """Who is signed in, and what the navigation offers them."""

    def __init__(self, me: Principal, token: str, path: str = "") -> None:
        self.me = me
        self.path = path
        self.csrf = csrf_token(token)
        r = me.roles
        self.reviewer = bool(r & {"reviewer", "admin"})
        self.auditor = bool(r & {"auditor", "admin"})
        self.admin = "admin" in r

    def nav(self) -> list[tuple[str, str]]:
        items = []
        if self.reviewer:
            items.append(("/console/reviews", "Reviews"))
        items.append(("/console/sessions", "Sessions"))
        if self.admin:
            items.append(("/console/live", "Live"))
        if self.auditor:
            items += [("/console/ledger", "Ledger"), ("/console/evidence", "Evidence")]
            items.append(("/console/insights", "Insights"))
        if self.admin:
            items += [("/console/identities", "Identities"), ("/console/tokens", "Tokens")]
            items.append(("/console/grants", "Grants"))
        if self.reviewer or self.auditor:
            items.append(("/console/policy", "Policy"))
        if self.auditor:
            items.append(("/console/connections", "Connections"))
        items.append(("/console/me", "My access"))
        return items


async def signed_in(admin: AdminService, request: Request) -> Page | Response:
    """The page's viewer, or the redirect to the sign-in page (the cookie cleared when
    its token no longer works: expired, revoked, identity disabled)."""
    token = request.cookies.get(COOKIE)
    if token:
        try:
            me = await admin.principal("Bearer " + token)
        except ApiError as e:
            if e.status != 401:
                raise
        else:
            return Page(me, token, request.url.path)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    resp = RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
    if token:
        clear_session(resp)
    return resp


# The replay page's player (asciinema-player) runs its terminal emulator as WebAssembly:
# that page alone may compile WebAssembly (never JavaScript from strings).
WASM_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": HEADERS["Content-Security-Policy"].replace(
        "script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'"
    ),
}


def render(
    name: str, page: Page | None, status: int = 200, *, wasm: bool = False, **ctx: Any
) -> HTMLResponse:
    html = _ENV.get_template(name).render(page=page, **ctx)
    return HTMLResponse(html, status_code=status, headers=WASM_HEADERS if wasm else HEADERS)
