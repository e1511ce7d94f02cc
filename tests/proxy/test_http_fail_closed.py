"""The HTTP listener fails closed: when the ledger cannot be written, a request gets a
503 and never reaches the backend, an upload in flight is not completed, and the
gateway process goes on answering (with 503) instead of crashing. In process: a real
HTTP API backend (the test API, a subprocess), real HTTP clients, the real listener,
and a ledger writer that fails after a given number of commits (fault injection)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from ledgergate.core.config import HttpConnection, HttpListener
from ledgergate.proxy.http.gateway import Admitted, HttpGateway
from ledgergate.proxy.sink import LedgerSink
from tests.integration.httpapi import HttpApi
from tests.proxy.test_sink import ListWriter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api() -> Iterator[HttpApi]:
    with HttpApi() as a:
        yield a


async def _gateway(api: HttpApi, writer: ListWriter) -> tuple[HttpGateway, LedgerSink, int]:
    loop = asyncio.get_running_loop()
    sink = LedgerSink(lambda: writer, depth=1000, checkpoint_seconds=60, loop=loop)
    await sink.start()
    conn = HttpConnection.model_validate(
        {
            "name": "api",
            "type": "http",
            "base_url": api.url,
            "auth": {"type": "bearer", "token": "x"},
        }
    )

    async def auth(token: str, connection: str) -> Admitted:
        ok = token == "good-token"
        ident = {"kind": "service", "subject": "etl", "groups": []} if ok else None
        return Admitted(ok, ident, "tok_1" if ok else None, None if ok else "unknown token")

    async def no_keys(key: str, connection: str | None) -> tuple[Admitted, None, None]:
        return Admitted(False, None, None, "unknown access key"), None, None

    gw = HttpGateway(
        connections={"api": conn},
        held={"api": {"token": api.token}},
        authenticate=auth,
        authenticate_key=no_keys,
        sink=sink,
        tls=None,
        listener=HttpListener(address="127.0.0.1:19443", tls=False, allow_plaintext=True),
        hostnames=("localhost",),
    )
    server = await gw.listen("127.0.0.1", 0)
    return gw, sink, int(server.sockets[0].getsockname()[1])


def test_a_request_is_refused_and_never_sent_when_the_ledger_fails(api: HttpApi) -> None:
    async def go() -> None:
        writer = ListWriter(fail_after=3)  # auth.ok + session.open, one request, then fails
        gw, sink, port = await _gateway(api, writer)
        h = {"Authorization": "Bearer good-token"}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                r = await c.put("/api/api/blobs/first", content=b"a" * 1000, headers=h)
                assert r.status_code == 200, r.text  # recorded, then sent
                r = await c.put("/api/api/blobs/second", content=b"b" * 1000, headers=h)
                assert r.status_code == 503
                assert "ledger is unavailable" in r.text
                r = await c.get("/api/api/reports", headers=h)  # still answering, still closed
                assert r.status_code == 503
        finally:
            await gw.shutdown()
            await sink.close()
        backend = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.token}"})
        with backend:
            assert backend.get("/api/blobs/first").status_code == 200
            assert backend.get("/api/blobs/second").status_code == 404  # never reached it
        recorded = [d.kind for batch in writer.batches for d in batch]
        assert recorded[:2] == ["auth.ok", "session.open"] and "command" in recorded

    asyncio.run(go())
