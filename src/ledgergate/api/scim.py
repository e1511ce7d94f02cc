"""SCIM 2.0 Users endpoints (``/scim/v2``): thin routes over ``services.scim``.

The identity provider's provisioning connector authenticates with a ledgergate API
token whose identity holds the admin role. Bodies and answers are
``application/scim+json``; errors use the SCIM error schema. Setting ``active: false``
(or deleting the user) ends every open session of that identity.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time,
# and some name aliases local to the factory.

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ledgergate.services import scim
from ledgergate.services.admin import AdminService, ApiError, Principal

__all__ = ["router"]

SCIM_JSON = "application/scim+json"
# A SCIM body larger than this is not a user: refuse before parsing.
MAX_BODY = 64 * 1024


class ScimResponse(JSONResponse):
    media_type = SCIM_JSON


def _error(e: scim.ScimError) -> ScimResponse:
    return ScimResponse(e.body(), status_code=e.status)


def router(admin: AdminService, caller: Callable[..., Awaitable[Principal]]) -> APIRouter:
    r = APIRouter(prefix="/scim/v2", tags=["scim"])

    async def provisioner(me: Annotated[Principal, Depends(caller)]) -> Principal:
        me.require("admin")
        return me

    Prov = Annotated[Principal, Depends(provisioner)]

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise scim.ScimError(413, "the request body is too large")
        try:
            import json

            doc = json.loads(raw or b"{}")
        except ValueError:
            raise scim.ScimError(400, "the body is not JSON", "invalidSyntax") from None
        if not isinstance(doc, dict):
            raise scim.ScimError(400, "the body must be a JSON object", "invalidSyntax")
        return doc

    async def run(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return await admin.call(fn, *args, **kw)
        except scim.ScimError:
            raise
        except ApiError as e:
            raise scim.ScimError(e.status, e.message) from None

    def user(row: Any, status: int = 200) -> ScimResponse:
        return ScimResponse(scim.user_resource(row, admin.base_url), status_code=status)

    @r.get("/ServiceProviderConfig")
    async def service_provider_config(_: Prov) -> ScimResponse:
        return ScimResponse(
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "patch": {"supported": True},
                "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                "filter": {"supported": True, "maxResults": scim.MAX_COUNT},
                "changePassword": {"supported": False},
                "sort": {"supported": False},
                "etag": {"supported": False},
                "authenticationSchemes": [
                    {
                        "type": "oauthbearertoken",
                        "name": "Bearer",
                        "description": "A ledgergate API token of an admin identity",
                    }
                ],
            }
        )

    @r.get("/Users")
    async def list_users(
        _: Prov, request: Request, startIndex: int = 1, count: int | None = None
    ) -> Response:
        try:
            rows, total = await run(
                lambda st, _w: scim.list_users(
                    st, request.query_params.get("filter"), startIndex, count
                )
            )
        except scim.ScimError as e:
            return _error(e)
        return ScimResponse(
            {
                "schemas": [scim.LIST_SCHEMA],
                "totalResults": total,
                "startIndex": max(startIndex, 1),
                "itemsPerPage": len(rows),
                "Resources": [scim.user_resource(x, admin.base_url) for x in rows],
            }
        )

    @r.post("/Users", status_code=201)
    async def create_user(me: Prov, request: Request) -> Response:
        try:
            doc = await body(request)
            row = await run(scim.create_user, doc, now_ns=time.time_ns(), by=me.actor)
        except scim.ScimError as e:
            return _error(e)
        await admin.changed()
        return user(row, 201)

    @r.get("/Users/{scim_id}")
    async def get_user(_: Prov, scim_id: str) -> Response:
        try:
            row = await run(lambda st, _w: scim.get_user(st, scim_id))
        except scim.ScimError as e:
            return _error(e)
        return user(row)

    @r.put("/Users/{scim_id}")
    async def replace_user(me: Prov, scim_id: str, request: Request) -> Response:
        try:
            doc = await body(request)
            row = await run(scim.replace_user, scim_id, doc, now_ns=time.time_ns(), by=me.actor)
        except scim.ScimError as e:
            return _error(e)
        await admin.changed()
        return user(row)

    @r.patch("/Users/{scim_id}")
    async def patch_user(me: Prov, scim_id: str, request: Request) -> Response:
        try:
            doc = await body(request)
            row = await run(scim.patch_user, scim_id, doc, now_ns=time.time_ns(), by=me.actor)
        except scim.ScimError as e:
            return _error(e)
        await admin.changed()
        return user(row)

    @r.delete("/Users/{scim_id}", status_code=204)
    async def delete_user(me: Prov, scim_id: str) -> Response:
        try:
            await run(scim.delete_user, scim_id, now_ns=time.time_ns(), by=me.actor)
        except scim.ScimError as e:
            return _error(e)
        await admin.changed()
        return Response(status_code=204)

    return r
