"""A small real REST API for the ``type: http`` tests, run by uvicorn in its own process:

    python -m tests.integration.httpapi --port N --token T [--basic user:pass]
        [--header name:value] [--certfile crt --keyfile key]

Every endpoint but ``GET /health`` wants one of the configured credentials (``Bearer T``;
HTTP Basic when --basic is given; the named header when --header is given) and answers
401 otherwise. The endpoints:

    GET    /api/reports, /api/reports/{id}   JSON reports whose ``users`` carry ``email``
                                             and ``card`` (for masking tests)
    POST   /api/reports                      the JSON body echoed back with a new ``id``
    PUT    /api/blobs/{name}                 stores the body; answers its size and sha256
    GET    /api/blobs/{name}[?size=N]        the stored body, or N `pattern_bytes`
                                             streamed in 64 KiB pieces
    DELETE /api/blobs/{name}
    GET    /api/echo-headers                 the request headers as received, in order
    GET    /api/slow?seconds=S               one byte per 0.1 s for S seconds
    POST   /api/collect/{name}               keeps the JSON body (a SIEM, a notary)
    GET    /api/collect/{name}               the bodies kept, in arrival order

`HttpApi` starts one on a free loopback port (optionally TLS with a generated CA), waits
for /health and stops its process group. State lives in the process's memory only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import hmac
import json
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.integration.pgcluster import free_port
from tests.integration.procs import stop_group
from tests.integration.s3server import (
    REPO,
    BackendError,
    TlsFiles,
    make_tls,
    wait_answering,
    wait_answering_in,
)

# The download pieces of ?size=N: big enough to be quick, small enough that a cut in
# flight happens mid-body.
PIECE = 64 * 1024
# Stored blobs live in memory: refuse what would exhaust it.
MAX_BLOB = 512 * 1024 * 1024
# /api/slow must end even when a test forgets it.
MAX_SLOW_S = 120.0
SLOW_TICK_S = 0.1
START_TIMEOUT_S = 30.0
# A free port can be taken by another process between probing and binding it.
START_ATTEMPTS = 3

REPORTS: dict[int, dict[str, Any]] = {
    1: {
        "id": 1,
        "title": "Q3 revenue",
        "users": [
            {"name": "Alice", "email": "alice@example.com", "card": "4111 1111 1111 1111"},
            {"name": "Bob", "email": "bob@example.com", "card": "5500 0000 0000 0004"},
        ],
    },
    2: {
        "id": 2,
        "title": "Churn",
        "users": [
            {"name": "Carol", "email": "carol@example.org", "card": "3400 000000 00009"},
        ],
    },
}


def pattern_bytes(size: int, offset: int = 0) -> bytes:
    """The deterministic content of ``GET /api/blobs/{name}?size=N``: byte i is i mod
    251 (a prime, so the pattern never lines up with the 64 KiB pieces)."""
    period = bytes(range(251))
    start = offset % 251
    reps = (start + size) // 251 + 1
    return (period * reps)[start : start + size]


def _credential_checker(
    token: str, basic: str | None, header: tuple[str, str] | None
) -> Callable[[Request], str | None]:
    """Which configured credential the request carries ("bearer", "basic", "header"),
    or None."""
    accepted = {"bearer": f"Bearer {token}"}
    if basic is not None:
        accepted["basic"] = "Basic " + base64.b64encode(basic.encode()).decode()

    def check(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        for kind, want in accepted.items():
            if hmac.compare_digest(auth.encode(), want.encode()):
                return kind
        if header is not None:
            got = request.headers.get(header[0])
            if got is not None and hmac.compare_digest(got.encode(), header[1].encode()):
                return "header"
        return None

    return check


def make_app(
    token: str, *, basic: str | None = None, header: tuple[str, str] | None = None
) -> Starlette:
    check = _credential_checker(token, basic, header)
    reports = copy.deepcopy(REPORTS)
    blobs: dict[str, bytes] = {}

    def guarded(
        endpoint: Callable[[Request], Any],
    ) -> Callable[[Request], Any]:
        async def wrapper(request: Request) -> Response:
            kind = check(request)
            if kind is None:
                return JSONResponse(
                    {"error": "unauthorized"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="httpapi"'},
                )
            request.state.auth = kind
            response: Response = await endpoint(request)
            return response

        return wrapper

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    collected: dict[str, list[Any]] = {}

    async def collect(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        collected.setdefault(request.path_params["name"], []).append(body)
        return JSONResponse({"ok": True}, status_code=202)

    async def collected_bodies(request: Request) -> Response:
        return JSONResponse(collected.get(request.path_params["name"], []))

    async def list_reports(request: Request) -> Response:
        return JSONResponse({"reports": list(reports.values())})

    async def get_report(request: Request) -> Response:
        report = reports.get(_int(request.path_params["id"]))
        if report is None:
            return JSONResponse({"error": "no such report"}, status_code=404)
        return JSONResponse(report)

    async def post_report(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        new_id = max(reports) + 1
        reports[new_id] = {"id": new_id, "body": body}
        return JSONResponse({"id": new_id, "body": body}, status_code=201)

    async def put_blob(request: Request) -> Response:
        digest, parts, size = hashlib.sha256(), [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > MAX_BLOB:
                return JSONResponse({"error": "blob too large"}, status_code=413)
            digest.update(piece)
            parts.append(piece)
        name = request.path_params["name"]
        blobs[name] = b"".join(parts)
        return JSONResponse({"name": name, "size": size, "sha256": digest.hexdigest()})

    async def get_blob(request: Request) -> Response:
        if "size" in request.query_params:
            size = _int(request.query_params["size"])
            return StreamingResponse(
                _pattern_pieces(size),
                media_type="application/octet-stream",
                headers={"Content-Length": str(size)},
            )
        data = blobs.get(request.path_params["name"])
        if data is None:
            return JSONResponse({"error": "no such blob"}, status_code=404)
        return Response(data, media_type="application/octet-stream")

    async def delete_blob(request: Request) -> Response:
        if blobs.pop(request.path_params["name"], None) is None:
            return JSONResponse({"error": "no such blob"}, status_code=404)
        return Response(status_code=204)

    async def echo_headers(request: Request) -> Response:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "auth": request.state.auth,
                "headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw
                ],
            }
        )

    async def slow(request: Request) -> Response:
        try:
            seconds = min(float(request.query_params.get("seconds", "1")), MAX_SLOW_S)
        except ValueError:
            return JSONResponse({"error": "seconds must be a number"}, status_code=400)
        return StreamingResponse(_ticks(round(seconds / SLOW_TICK_S)), media_type="text/plain")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/reports", guarded(list_reports), methods=["GET"]),
            Route("/api/reports", guarded(post_report), methods=["POST"]),
            Route("/api/reports/{id}", guarded(get_report), methods=["GET"]),
            Route("/api/blobs/{name}", guarded(put_blob), methods=["PUT"]),
            Route("/api/blobs/{name}", guarded(get_blob), methods=["GET"]),
            Route("/api/blobs/{name}", guarded(delete_blob), methods=["DELETE"]),
            Route("/api/echo-headers", guarded(echo_headers), methods=["GET"]),
            Route("/api/slow", guarded(slow), methods=["GET"]),
            Route("/api/collect/{name}", guarded(collect), methods=["POST"]),
            Route("/api/collect/{name}", guarded(collected_bodies), methods=["GET"]),
        ]
    )


def _int(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


async def _pattern_pieces(size: int) -> AsyncIterator[bytes]:
    for offset in range(0, size, PIECE):
        yield pattern_bytes(min(PIECE, size - offset), offset)


async def _ticks(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"."
        await asyncio.sleep(SLOW_TICK_S)


class HttpApi:
    """One API process. ``token`` is generated when not given; ``basic`` is
    "user:pass"; ``header`` is (name, value). `url` is its base URL."""

    def __init__(
        self,
        *,
        token: str | None = None,
        basic: str | None = None,
        header: tuple[str, str] | None = None,
        tls: bool = False,
        netns: str | None = None,
    ) -> None:
        self.token = token or "api-" + secrets.token_urlsafe(24)
        self.netns = netns  # run inside this network namespace (see S3Server)
        self.basic = basic
        self.header = header
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self.dir: Path | None = None
        self._tls: TlsFiles | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        if self.dir is None:
            raise RuntimeError("HttpApi not started")
        return self.dir / "httpapi.log"

    @property
    def ca_cert_path(self) -> Path:
        if self._tls is None:
            raise RuntimeError("HttpApi has no TLS (tls=False) or is not started")
        return self._tls.ca

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client passes as ``verify`` to trust this server."""
        return ssl.create_default_context(cafile=self._tls.ca) if self._tls else True

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "tests.integration.httpapi", "--port", str(self.port)]
        cmd += ["--token", self.token]
        if self.basic is not None:
            cmd += ["--basic", self.basic]
        if self.header is not None:
            cmd += ["--header", f"{self.header[0]}:{self.header[1]}"]
        if self._tls is not None:
            cmd += ["--certfile", str(self._tls.cert), "--keyfile", str(self._tls.key)]
        return cmd

    def start(self) -> HttpApi:
        if self.dir is not None:
            raise RuntimeError("HttpApi already started")
        self.dir = Path(tempfile.mkdtemp(prefix="lg-http-"))
        try:
            if self.tls:
                self._tls = make_tls(self.dir / "tls")
            self._spawn()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            offset = self.log.stat().st_size if self.log.exists() else 0
            inside = ["ip", "netns", "exec", self.netns] if self.netns else []
            with self.log.open("ab") as out:
                self._proc = subprocess.Popen(
                    [*inside, *self.command()],
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                if self.netns is not None:
                    wait_answering_in(
                        self.netns, self._proc, f"{self.url}/health", log=self.log,
                        what="test HTTP API", ca=self._tls.ca if self._tls else None,
                        ok=lambda status: status == 200, timeout_s=START_TIMEOUT_S,
                    )  # fmt: skip
                    return
                wait_answering(
                    self._proc,
                    f"{self.url}/health",
                    log=self.log,
                    what="test HTTP API",
                    verify=self.verify,
                    ready=lambda r: r.status_code == 200,
                    timeout_s=START_TIMEOUT_S,
                )
                return
            except BackendError:
                busy = b"address already in use" in self.log.read_bytes()[offset:].lower()
                if not busy or attempt + 1 == START_ATTEMPTS:
                    raise

    def stop(self) -> None:
        stop_group(self._proc)
        self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self._tls = None

    def __enter__(self) -> HttpApi:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# The `httpapi_factory` fixture: keyword arguments as HttpApi's, returns it started.
HttpApiFactory = Callable[..., HttpApi]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.integration.httpapi")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True, help="the accepted bearer token")
    p.add_argument("--basic", metavar="USER:PASS", help="also accept this HTTP Basic login")
    p.add_argument("--header", metavar="NAME:VALUE", help="also accept this header")
    p.add_argument("--certfile")
    p.add_argument("--keyfile")
    args = p.parse_args(argv)
    header = None
    if args.header:
        name, sep, value = args.header.partition(":")
        if not sep or not name:
            p.error("--header wants NAME:VALUE")
        header = (name.strip().lower(), value.strip())
    app = make_app(args.token, basic=args.basic, header=header)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level="info",
    )


if __name__ == "__main__":
    main()


@pytest.fixture
def https_receiver() -> Iterator[HttpApi]:
    """An API over TLS that keeps what is POSTed to /api/collect/NAME (bearer token
    ``token``): a webhook, a notary, a SIEM."""
    api = HttpApi(tls=True).start()
    try:
        yield api
    finally:
        api.stop()
