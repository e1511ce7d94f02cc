"""The REST API over the configuration's connections and notification receivers, as
admins and auditors may see them: names, types, backends and whether the gateway
reaches them; webhook receivers by name, format, events and host. Never a credential,
a secret or a webhook's full URL (a Slack URL is itself a credential).
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends

from ledgergate.services import connection_health
from ledgergate.services.admin import AdminService, Principal

__all__ = ["router", "webhooks"]


def webhooks(admin: AdminService) -> list[dict[str, Any]]:
    out = []
    for w in admin.config.notifications.webhooks:
        url = w.url
        host = (
            "(from " + url.split(":", 1)[0] + ")"
            if url.startswith(("env:", "file:"))
            else (urlsplit(url).hostname or "-")
        )
        out.append({"name": w.name, "format": w.format, "events": list(w.events), "host": host})
    return out


def router(admin: AdminService, caller: Callable[..., Awaitable[Principal]]) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    Caller = Annotated[Principal, Depends(caller)]

    @r.get("/connections", tags=["connections"])
    async def list_connections(me: Caller) -> list[dict[str, Any]]:
        """Each connection: type, backend address, recording level, and whether this
        gateway reaches the backend now (a TCP connect, timed)."""
        me.require("admin", "auditor")
        return await connection_health.probe_all(admin.config)

    @r.get("/webhooks", tags=["connections"])
    async def list_webhooks(me: Caller) -> list[dict[str, Any]]:
        """Where review notifications go: name, format, events, host."""
        me.require("admin")
        return webhooks(admin)

    return r
