"""Connections from the gateway to an HTTP or S3 backend: h11 client over asyncio.

Owns opening (TLS verified as the connection says), sending a request head and body,
reading the answer, keeping idle connections for reuse, and aborting one whose request
must not complete (the backend then sees a truncated body and commits nothing). Never
logs a header: they carry the held credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator

import h11

from ledgergate.core.config import HttpConnection, S3Connection

__all__ = ["BackendConn", "BackendError", "BackendPool"]

# Bytes read from the backend per call: large enough for a GiB download in few reads.
READ_SIZE = 256 * 1024
# Idle connections kept per backend; more are closed when they finish.
MAX_IDLE = 16
# The largest response head accepted from a backend.
MAX_RESPONSE_HEAD = 64 * 1024


class BackendError(ConnectionError):
    """The backend could not be reached or broke the exchange (message safe to show)."""


class BackendConn:
    __slots__ = ("_h", "_reader", "_writer", "broken")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.broken = False

    async def send(self, event: h11.Event) -> None:
        try:
            data = self._h.send(event)
        except h11.LocalProtocolError as e:
            self.broken = True
            raise BackendError(f"the request could not be framed: {e}") from None
        if data:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except (ConnectionError, OSError) as e:
                self.broken = True
                raise BackendError(
                    f"the backend closed the connection ({type(e).__name__})"
                ) from None

    async def _next(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            try:
                ev = self._h.next_event()
            except h11.RemoteProtocolError as e:
                self.broken = True
                raise BackendError(f"the backend's answer is not valid HTTP: {e}") from None
            if ev is not h11.NEED_DATA:
                return ev
            try:
                data = await self._reader.read(READ_SIZE)
            except (ConnectionError, OSError) as e:
                self.broken = True
                raise BackendError(
                    f"the backend closed the connection ({type(e).__name__})"
                ) from None
            self._h.receive_data(data)

    async def response(self) -> h11.Response:
        """The final answer's head (informational 1xx answers are skipped)."""
        while True:
            ev = await self._next()
            if isinstance(ev, h11.Response):
                return ev
            if isinstance(ev, h11.InformationalResponse):
                continue
            self.broken = True
            raise BackendError("the backend closed the connection before answering")

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            ev = await self._next()
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                return
            else:
                self.broken = True
                raise BackendError("the backend broke off its answer")

    @property
    def reusable(self) -> bool:
        if self.broken:
            return False
        if self._h.our_state is h11.DONE and self._h.their_state is h11.DONE:
            try:
                self._h.start_next_cycle()
            except h11.LocalProtocolError:
                return False
            return True
        return False

    def abort(self) -> None:
        """Drop the connection at once (RST when possible): a request cut short must not
        reach the backend whole."""
        self.broken = True
        t = self._writer.transport
        with contextlib.suppress(Exception):
            t.abort()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


class BackendPool:
    """Connections to one backend, reused across requests of all sessions."""

    def __init__(self, conn: S3Connection | HttpConnection) -> None:
        self.conn = conn
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
            if not bc._reader.at_eof() and not bc._writer.is_closing():
                return bc
            bc.close()
        c = self.conn
        try:
            async with asyncio.timeout(c.connect_timeout):
                r, w = await asyncio.open_connection(
                    c.host,
                    c.port,
                    ssl=self._tls,
                    server_hostname=c.host if self._tls is not None else None,
                    limit=READ_SIZE,
                )
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
        return BackendConn(r, w)

    def put(self, bc: BackendConn) -> None:
        if bc.reusable and len(self._idle) < MAX_IDLE:
            self._idle.append(bc)
        else:
            bc.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
