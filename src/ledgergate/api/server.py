"""Serving the REST API inside the gateway process, on the gateway's event loop.

An ``Addon`` of ``services.gateway.GatewayRuntime``: uvicorn serves the FastAPI app on
``listeners.api.address`` (TLS with the gateway's certificate unless ``tls: false``),
started after the PostgreSQL listener and stopped before it. uvicorn's own signal
handling is switched off: the gateway owns SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from ledgergate.api.app import create_app
from ledgergate.core.config import split_address
from ledgergate.services.admin import AdminService
from ledgergate.services.config import api_public_url
from ledgergate.services.gateway import GatewayRuntime
from ledgergate.services.health import GatewayHealth

__all__ = ["ApiAddon", "public_url"]

log = logging.getLogger("ledgergate.api")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the gateway handles signals and stops us


def public_url(runtime: GatewayRuntime, bound_port: int | None = None) -> str:
    return api_public_url(runtime.settings, bound_port)


class ApiAddon:
    def __init__(self) -> None:
        self.admin: AdminService | None = None
        self.server: _Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self, runtime: GatewayRuntime) -> None:
        s = runtime.settings
        api = s.config.listeners.api
        assert api.address is not None and runtime.signer is not None
        host, port = split_address(api.address, 18443)
        self.url = public_url(runtime)
        self.admin = AdminService(
            s, runtime.signer, on_change=runtime.recheck_now, base_url=self.url
        )
        await self.admin.start()
        cfg = uvicorn.Config(
            create_app(self.admin, GatewayHealth(runtime)),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(s.tls_cert) if api.tls else None,
            ssl_keyfile=str(s.tls_key) if api.tls else None,
            # open event streams (the console's review inbox) must not hold up a stop
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        self.server = _Server(cfg)
        self.task = asyncio.get_running_loop().create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it (e.g. the port is taken)
                raise RuntimeError("the API server stopped at start")
            await asyncio.sleep(0.01)
        log.info("REST API on %s (OpenAPI at %s/openapi.json)", self.url, self.url)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task
        if self.admin is not None:
            await self.admin.close()
