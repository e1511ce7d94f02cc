"""Connections from the gateway to an HTTP or S3 backend: an asyncio Protocol feeding
``wire.http.response`` (llhttp) and writing what ``wire.http.messages`` encodes.

Owns opening (TLS verified as the connection says), writing a request head and body
(Content-Length bodies pass through as they are; others are framed chunked), reading
the answer's head and body with flow control, keeping idle connections for reuse, and
aborting one whose request must not complete (the backend then sees a truncated body
and commits nothing). Body bytes are handed on as the transport delivered them (no
stream buffer copying them twice). Never logs a header: they carry the held credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ledgergate.core.config import HttpConnection, S3Connection
from ledgergate.proxy.agent import AgentUnavailable, LegOpener
from ledgergate.wire.http.messages import LAST_CHUNK, chunk_frame, encode_request_head
from ledgergate.wire.http.response import ResponseError, ResponseHead, ResponseReader

__all__ = ["BackendConn", "BackendError", "BackendPool", "BackendResponse"]

# Idle connections kept per backend; more are closed when they finish.
MAX_IDLE = 16
# The largest response head accepted from a backend.
MAX_RESPONSE_HEAD = 64 * 1024
# Reading from the backend pauses while this much body waits for the client.
HIGH_WATER = 4 << 20
LOW_WATER = 1 << 20


class BackendError(ConnectionError):
    """The backend could not be reached or broke the exchange (message safe to show)."""


@dataclass(slots=True)
class BackendResponse:
    status_code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class _Proto(asyncio.Protocol):
    """The socket's side: parses what arrives, queues body pieces, pauses when full."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: ResponseReader | None = None
        self.response: BackendResponse | None = None
        self.pieces: deque[bytes] = deque()
        self.queued = 0
        self.complete = False
        self.error: BackendError | None = None
        self.closed = False
        self.wakeup: asyncio.Future[None] | None = None
        self.paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.reader is None:
            if data:
                self._fail("the backend sent data it was not asked for")
            return
        try:
            events = self.reader.feed(data)
        except ResponseError as e:
            self._fail(str(e))
            return
        for ev in events:
            if type(ev) is bytes:
                self.pieces.append(ev)
                self.queued += len(ev)
            elif isinstance(ev, ResponseHead):
                self.response = BackendResponse(ev.status_code, ev.reason, ev.headers)
            else:
                self.complete = True
        if self.queued > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        if not self.complete:
            self._fail("the backend closed the connection before the answer's end")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail("the backend closed the connection before the answer's end")
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- helpers ---------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = BackendError(why)
        self._wake()

    def _wake(self) -> None:
        w = self.wakeup
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        self.wakeup = asyncio.get_running_loop().create_future()
        try:
            await self.wakeup
        finally:
            self.wakeup = None


class BackendConn:
    __slots__ = ("_chunked", "_length", "_p", "_sent", "broken", "sent_all")

    def __init__(self, proto: _Proto) -> None:
        self._p = proto
        self._chunked = False
        self._length: int | None = None  # the Content-Length sent, checked as we go
        self._sent = 0
        self.broken = False
        self.sent_all = False

    # -- the request -----------------------------------------------------------------------
    async def send_head(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        p = self._p
        p.reader = ResponseReader(head_only=method == b"HEAD", max_head=MAX_RESPONSE_HEAD)
        p.response = None
        p.complete = False
        p.pieces.clear()
        p.queued = 0
        names = {k: v for k, v in headers}
        self._chunked = b"transfer-encoding" in names
        length = names.get(b"content-length")
        self._length = int(length) if length is not None and length.isdigit() else None
        self._sent = 0
        try:
            head = encode_request_head(method, target, headers)
        except ValueError:
            self.broken = True
            raise BackendError("a header value holds a line break; refused") from None
        await self._write(head)

    async def send_data(self, data: bytes) -> None:
        if not data:
            return
        self._sent += len(data)
        if not self._chunked and (self._length is None or self._sent > self._length):
            self.broken = True
            raise BackendError("the body is longer than the length sent to the backend")
        if self._chunked:
            await self._write(*chunk_frame(data))
        else:
            await self._write(data)

    async def send_end(self) -> None:
        if self._chunked:
            await self._write(LAST_CHUNK)
        elif self._sent != (self._length or 0):
            self.broken = True
            raise BackendError("the body is shorter than the length sent to the backend")
        self.sent_all = True

    async def _write(self, *parts: bytes) -> None:
        p = self._p
        if (p.error is not None and p.closed) or p.transport is None or p.transport.is_closing():
            self.broken = True
            raise BackendError("the backend closed the connection")
        if len(parts) == 1:
            p.transport.write(parts[0])
        else:
            p.transport.writelines(parts)
        if not p._can_write.is_set():
            await p._can_write.wait()
            if p.transport.is_closing():
                self.broken = True
                raise BackendError("the backend closed the connection")

    # -- the answer ------------------------------------------------------------------------
    async def response(self) -> BackendResponse:
        p = self._p
        while p.response is None or p.response.status_code < 200:
            if p.error is not None:
                self.broken = True
                raise p.error
            await p.wait()
        return p.response

    async def body(self, idle: float | None = None) -> AsyncIterator[bytes]:
        """The answer's body as it arrives; with ``idle``, an empty piece whenever the
        backend sends nothing for that long (so what is held can be passed on)."""
        p = self._p
        while True:
            while p.pieces:
                piece = p.pieces.popleft()
                p.queued -= len(piece)
                if p.paused and p.queued < LOW_WATER and p.transport is not None:
                    p.paused = False
                    p.transport.resume_reading()
                yield piece
            if p.complete:
                return
            if p.error is not None:
                self.broken = True
                raise p.error
            if idle is None:
                await p.wait()
                continue
            # The future is made here, before anything can run: data that arrives while
            # this waits wakes it (a task wrapping p.wait() would miss what arrives
            # before the task starts, and the answer would stall until the timeout).
            fut = p.wakeup = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(fut, idle)
            except TimeoutError:
                yield b""
            finally:
                p.wakeup = None

    @property
    def reusable(self) -> bool:
        p = self._p
        if self.broken or not self.sent_all or not p.complete or p.closed:
            return False
        if p.error is not None or p.pieces:
            return False
        return p.reader is not None and p.reader.keep_alive

    def abort(self) -> None:
        """Drop the connection at once (RST when possible): a request cut short must not
        reach the backend whole."""
        self.broken = True
        t = self._p.transport
        if t is not None:
            with contextlib.suppress(Exception):
                t.abort()

    def close(self) -> None:
        t = self._p.transport
        if t is not None:
            with contextlib.suppress(Exception):
                t.close()

    @property
    def alive(self) -> bool:
        p = self._p
        return not p.closed and p.transport is not None and not p.transport.is_closing()


class BackendPool:
    """Connections to one backend, reused across requests of all sessions."""

    def __init__(self, conn: S3Connection | HttpConnection, leg: LegOpener | None = None) -> None:
        self.conn = conn
        self.leg = leg  # through the connection's agent (via:), or None: dial it
        self._idle: deque[BackendConn] = deque()
        self._tls: ssl.SSLContext | None = None
        if conn.scheme == "https":
            if conn.verify_tls:
                self._tls = ssl.create_default_context(cafile=conn.ca_file)
            else:
                self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    async def get(self) -> BackendConn:
        while self._idle:
            bc = self._idle.pop()
            if bc.alive:
                bc.sent_all = False
                return bc
            bc.close()
        c = self.conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(c.connect_timeout):
                where: dict[str, Any] = (
                    {"sock": await self.leg(None)}
                    if self.leg is not None
                    else {"host": c.host, "port": c.port}
                )
                _, proto = await loop.create_connection(
                    _Proto,
                    ssl=self._tls,
                    server_hostname=c.host if self._tls is not None else None,
                    **where,
                )
        except AgentUnavailable as e:
            raise BackendError(f"connection {c.name}: {e}") from None
        except TimeoutError:
            raise BackendError(f"connection {c.name}: the backend did not answer in time") from None
        except ssl.SSLError as e:
            raise BackendError(
                f"connection {c.name}: TLS with the backend failed ({e.reason})"
            ) from None
        except OSError as e:
            why = e.strerror or type(e).__name__
            raise BackendError(
                f"connection {c.name}: the backend cannot be reached ({why})"
            ) from None
        return BackendConn(proto)

    def put(self, bc: BackendConn) -> None:
        if bc.reusable and len(self._idle) < MAX_IDLE:
            self._idle.append(bc)
        else:
            bc.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
