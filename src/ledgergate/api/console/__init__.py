"""The web console: pages for reviewers, auditors, admins and everyone's own access,
served by the API listener at ``/`` (see ``pages``), signed in through ``login``, with
the cookie and CSRF rules of ``auth``. The API stays the single source: pages render
what the services return and act through the REST API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ledgergate.api.console import login, pages, pages_admin
from ledgergate.api.console.render import HERE
from ledgergate.services.admin import AdminService

__all__ = ["mount"]


def mount(app: FastAPI, admin: AdminService) -> None:
    app.include_router(login.router(admin))
    app.include_router(pages.router(admin))
    app.include_router(pages_admin.router(admin))
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
