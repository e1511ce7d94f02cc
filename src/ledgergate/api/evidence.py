"""The REST API for auditors' longer reads: evidence exports of a period (started, polled
for progress, downloaded when done: what ``ledgergate evidence export`` writes) and the
insights report (what ``ledgergate insights`` prints). Admins and auditors only.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from ledgergate.core.config import parse_duration, parse_time
from ledgergate.services.admin import AdminService, ApiError, Principal
from ledgergate.services.evidence.report import FRAMEWORKS
from ledgergate.services.evidence_jobs import JobError
from ledgergate.services.insights import Insights, InsightsOptions, collect

__all__ = ["insights_for", "router", "times"]

_STATUS = {"unknown": 404, "not ready": 409, "full": 429}
# The console's and the API's report covers a year at most (each reads its period and a
# baseline before it); the CLI has no such limit.
MAX_INSIGHTS_NS = 366 * 86_400 * 10**9


class ExportRequest(BaseModel):
    since: str | None = Field(None, max_length=40, description="ISO 8601 or relative (-30d).")
    until: str | None = Field(None, max_length=40)
    framework: str = Field("all", pattern="^(" + "|".join(FRAMEWORKS) + ")$")


def times(since: str | None, until: str | None, now_ns: int) -> tuple[int | None, int | None]:
    try:
        return (
            parse_time(since, now_ns) if since else None,
            parse_time(until, now_ns) if until else None,
        )
    except ValueError as e:
        raise ApiError(422, str(e)) from None


def insights_for(admin: AdminService, since: str, until: str | None) -> Awaitable[Insights]:
    now = time.time_ns()
    try:
        if since[:1].isdigit() and not any(c in since for c in "-:T"):
            since_ns = now - parse_duration(since)  # 30d: that long ago
        else:
            since_ns = parse_time(since, now)
        until_ns = parse_time(until, now) if until else now
    except ValueError as e:
        raise ApiError(422, str(e)) from None
    if until_ns <= since_ns:
        raise ApiError(422, "until must come after since")
    if until_ns - since_ns > MAX_INSIGHTS_NS:
        raise ApiError(422, "a report covers a year at most (ledgergate insights: any period)")
    opts = InsightsOptions(since_ns=since_ns, until_ns=until_ns, now_ns=now)

    def run() -> Insights:
        store = admin.settings.open_store()  # its own handle and thread: it reads a lot
        try:
            return collect(store, opts)
        finally:
            store.close()

    return asyncio.to_thread(run)


def router(admin: AdminService, caller: Callable[..., Awaitable[Principal]]) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    jobs = admin.evidence_jobs
    Caller = Annotated[Principal, Depends(caller)]

    def job_error(e: JobError) -> ApiError:
        return ApiError(_STATUS.get(e.reason, 400), str(e))

    @r.post("/evidence/exports", tags=["evidence"], status_code=202)
    async def start_export(me: Caller, body: ExportRequest) -> dict[str, Any]:
        """Start an evidence bundle of a period; poll its ``id`` for progress."""
        me.require("admin", "auditor")
        since_ns, until_ns = times(body.since, body.until, time.time_ns())
        try:
            job = jobs.start(
                by=me.actor, since_ns=since_ns, until_ns=until_ns, framework=body.framework
            )
        except JobError as e:
            raise job_error(e) from None
        return job.as_dict()

    @r.get("/evidence/exports", tags=["evidence"])
    async def list_exports(me: Caller) -> list[dict[str, Any]]:
        me.require("admin", "auditor")
        return [j.as_dict() for j in jobs.list()]

    @r.get("/evidence/exports/{job_id}", tags=["evidence"])
    async def get_export(me: Caller, job_id: str) -> dict[str, Any]:
        """An export's state and progress (entries written of the period's total)."""
        me.require("admin", "auditor")
        try:
            return jobs.get(job_id).as_dict()
        except JobError as e:
            raise job_error(e) from None

    @r.get("/evidence/exports/{job_id}/bundle", tags=["evidence"])
    async def download_export(me: Caller, job_id: str) -> FileResponse:
        """The finished bundle (a zip; ``ledgergate evidence verify`` or its own
        ``verify.py`` checks it offline)."""
        me.require("admin", "auditor")
        try:
            path = jobs.bundle(job_id)
        except JobError as e:
            raise job_error(e) from None
        return FileResponse(path, media_type="application/zip", filename=path.name)

    @r.get("/insights", tags=["evidence"])
    async def insights(me: Caller, since: str = "30d", until: str | None = None) -> dict[str, Any]:
        """The insights report of a period (``since``: how far back, 30d, or a time)."""
        me.require("admin", "auditor")
        ins = await insights_for(admin, since, until)
        return ins.as_dict()

    return r
