"""One client connection to the HTTPS listener: requests in, through the ledger, out.

Owns the per-connection loop (h11 server side): read a request head, decide who it is
and which connection it is for (``proxy.http.gateway`` authenticates), record it, send
it on (``proxy.http.exchange`` relays one request), repeat while the client keeps the
connection alive. A ledger session is the client connection for one identity on one
connection; a request under another key or for another connection closes it and opens
the next. Ending a session (token revoked or expired, identity disabled, grant removed)
cuts the request in flight: the backend connection is aborted before the body's end, the
client gets an error, and the ledger says which chunks passed and that the rest were
cut. Never logs or records a client's token, signature or the held credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

from ledgergate.core.identity import SessionFacts
from ledgergate.core.recording import SessionRecorder
from ledgergate.core.recording_http import HttpRecorder
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.http.messages import HeadError, RequestHead, check_head, head_too_large

if TYPE_CHECKING:
    from ledgergate.proxy.http.gateway import Admitted, HttpGateway

__all__ = ["ClientConn", "LedgerSession", "Refusal"]

log = logging.getLogger("ledgergate.http")
now_ns = time.time_ns

# The largest request head (request line and headers) accepted from a client.
MAX_HEAD = 64 * 1024
# A refused request's body is read and dropped up to this size and time (so the client
# sees the answer); past either, the connection is closed instead.
DISCARD_MAX = 8 << 20
DISCARD_S = 10.0
# Bytes read from a client per call.
READ_SIZE = 256 * 1024


def phrase(status: int) -> bytes:
    """The reason phrase of ``status`` (botocore's 100-continue handling needs one)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Error"


class Refusal(Exception):
    """A request answered by the gateway itself: ``status``, headers and body go to the
    client, and the connection stays usable unless ``close``."""

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        *,
        close: bool = False,
        reason: str = "",
    ) -> None:
        super().__init__(reason or status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = close
        self.reason = reason


@dataclass(slots=True, eq=False)
class LedgerSession:
    """The ledger's view of the connection for one identity on one connection."""

    session_id: str
    conn_name: str
    token_id: str | None
    identity: dict[str, Any]
    facts: SessionFacts
    recorder: HttpRecorder
    deadline_ns: int
    deadline_reason: str
    window_id: str | None
    client: ClientConn
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    ended: str | None = None  # why it was ended from outside (re-check, shutdown)
    closed: bool = False

    def end(self, why: str) -> None:
        """End the session now (from a re-check): the request in flight is cut."""
        if self.ended is None and not self.closed:
            self.ended = why
            self.client.cut(self, why)

    def check(self, at_ns: int) -> str | None:
        """Why the session may not go on at ``at_ns`` (None: it may)."""
        if self.ended is not None:
            return self.ended
        if at_ns >= self.deadline_ns:
            return self.deadline_reason
        return None


class ClientConn:
    """A client's TCP (TLS) connection to the HTTPS listener."""

    def __init__(
        self, gw: HttpGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gw = gw
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.source = {"ip": str(peer[0]), "port": int(peer[1])}
        sslobj = writer.get_extra_info("ssl_object")
        self.tls: dict[str, Any] | None = (
            {"version": sslobj.version(), "cipher": sslobj.cipher()[0]} if sslobj else None
        )
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.session: LedgerSession | None = None
        self.conn_id = f"c_{time.time_ns() // 1000:x}{secrets.token_hex(4)}"
        self._raw_head = bytearray()
        self._head_started: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._cut: str | None = None
        self.in_request = False
        self.response_started = False

    # -- reading ---------------------------------------------------------------------------
    async def next_event(self, timeout: float) -> h11.Event | type[h11.PAUSED]:
        while True:
            ev = self.h.next_event()
            if ev is not h11.NEED_DATA:
                return ev  # type: ignore[return-value]
            wait = timeout
            if self.h.their_state is h11.IDLE and self._head_started is not None:
                # the whole head within header_timeout, not each read of it (drip-feeders)
                left = self._head_started + self.gw.listener.header_timeout - time.monotonic()
                wait = min(wait, max(left, 0.0))
            async with asyncio.timeout(wait):
                data = await self.reader.read(READ_SIZE)
            if self.h.their_state is h11.IDLE and len(self._raw_head) < MAX_HEAD + READ_SIZE:
                if not self._raw_head and data:
                    self._head_started = time.monotonic()
                self._raw_head += data
            self.h.receive_data(data)

    # -- writing ---------------------------------------------------------------------------
    async def send(self, event: h11.Event) -> None:
        parts = self.h.send_with_data_passthrough(event)
        if parts:  # body bytes pass as they are (no join into one copy)
            self.writer.writelines(parts)
            await self.writer.drain()

    async def refuse(self, r: Refusal) -> None:
        """Answer with the gateway's own error (when no answer has started)."""
        if self.h.our_state is not h11.SEND_RESPONSE:
            return
        headers = [
            (b"content-type", r.content_type),
            (b"content-length", str(len(r.body)).encode()),
            (b"x-ledgergate-connection-id", self.conn_id.encode()),
        ]
        if r.close:
            headers.append((b"connection", b"close"))
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError, OSError):
            await self.send(
                h11.Response(status_code=r.status, headers=headers, reason=phrase(r.status))
            )
            if r.body:
                await self.send(h11.Data(data=r.body))
            await self.send(h11.EndOfMessage())

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        self._task = asyncio.current_task()
        gw, settings = self.gw, self.gw.listener
        first = True
        try:
            while True:
                try:
                    ev = await self.next_event(
                        settings.header_timeout if first else settings.idle_timeout
                    )
                except TimeoutError:
                    if self.h.their_state is h11.SEND_BODY or len(self._raw_head):
                        await self._bad(408, "the request was not sent in time")
                    break
                except h11.RemoteProtocolError as e:
                    await self._bad(e.error_status_hint, f"malformed request: {e}")
                    break
                first = False
                if isinstance(ev, h11.ConnectionClosed):
                    break
                if not isinstance(ev, h11.Request):
                    await self._bad(400, "unexpected data")
                    break
                raw = bytes(self._raw_head)
                self._raw_head.clear()
                self._head_started = None
                if head_too_large(raw, MAX_HEAD):
                    # h11 bounds only a head still incomplete: one read can hold more
                    await self._bad(431, f"the request head is larger than {MAX_HEAD} bytes")
                    break
                head = RequestHead(bytes(ev.method), bytes(ev.target), tuple(ev.headers))
                try:
                    check_head(raw, list(ev.headers))
                except HeadError as e:
                    await self._bad(e.status, e.message)
                    break
                self.in_request = True
                self.response_started = False
                try:
                    keep = await gw.handle(self, head)
                finally:
                    self.in_request = False
                if not keep or self.h.our_state is h11.MUST_CLOSE:
                    break
                try:
                    self.h.start_next_cycle()
                except h11.LocalProtocolError:
                    break
                # a pipelined request already read: its head is checked like the first's
                self._raw_head = bytearray(self.h.trailing_data[0])
                self._head_started = time.monotonic() if self._raw_head else None
        except asyncio.CancelledError:
            if self._cut is None:
                raise
        except (ConnectionError, OSError):
            pass
        finally:
            self.close_session("client closed" if self._cut is None else self._cut)
            with contextlib.suppress(Exception):
                self.writer.close()

    async def discard_body(self) -> bool:
        """Read and drop the rest of a refused request's body, so the client reads the
        answer and may send the next request; False (close) past ``DISCARD_MAX`` bytes
        or ``DISCARD_S`` seconds."""
        left = DISCARD_MAX
        try:
            async with asyncio.timeout(DISCARD_S):
                while self.h.their_state is h11.SEND_BODY:
                    ev = await self.next_event(DISCARD_S)
                    if isinstance(ev, h11.Data):
                        left -= len(ev.data)
                        if left < 0:
                            return False
                    elif not isinstance(ev, h11.EndOfMessage):
                        return False
        except (TimeoutError, h11.RemoteProtocolError):
            return False
        return True

    async def _bad(self, status: int, message: str) -> None:
        """A request h11 or the head checks refused: a plain-text error, connection
        closed, and a ``session.reject`` entry (no identity was established)."""
        self.gw.record_reject(self, message, status)
        if self.h.our_state is h11.SEND_RESPONSE or self.h.our_state is h11.IDLE:
            body = f"ledgergate: {message}\n".encode()
            with contextlib.suppress(h11.LocalProtocolError, ConnectionError, OSError):
                await self.send(
                    h11.Response(
                        status_code=status,
                        reason=phrase(status),
                        headers=[
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    )
                )
                await self.send(h11.Data(data=body))
                await self.send(h11.EndOfMessage())

    # -- sessions --------------------------------------------------------------------------
    def session_for(self, adm: Admitted, conn_name: str, kind: str) -> tuple[LedgerSession, bool]:
        """The ledger session for this identity on this connection: the current one, or
        a new one (the current one closed). True when it is new."""
        s = self.session
        if (
            s is not None
            and not s.closed
            and s.conn_name == conn_name
            and s.token_id == adm.token_id
            and s.identity.get("subject") == (adm.identity or {}).get("subject")
        ):
            return s, False
        if s is not None:
            self.close_session("the client switched identity or connection")
        ident = dict(adm.identity or {})
        sid = f"s_{time.time_ns() // 1000:x}{secrets.token_hex(5)}"
        started = now_ns()
        conn = self.gw.connections[conn_name]
        facts = SessionFacts(
            session_id=sid,
            identity=str(ident.get("subject", "")),
            groups=tuple(str(g) for g in ident.get("groups", ())),
            connection=conn_name,
            token_id=adm.token_id,
            started_ns=started,
            expires_ns=adm.expires_ns,
            max_session_ns=conn.max_session_ns,
        )
        deadline, why = facts.deadline()
        if adm.window is not None and adm.window[1] < deadline:
            deadline, why = adm.window[1], f"the access window of review {adm.window[0]} closed"
        base = {
            "session_id": sid,
            "connection": conn_name,
            "identity": ident,
            "source": self.source,
        }
        rec = HttpRecorder(base, conn.recording)
        s = LedgerSession(
            sid,
            conn_name,
            adm.token_id,
            ident,
            facts,
            rec,
            deadline,
            why,
            adm.window[0] if adm.window else None,
            self,
        )
        self.session = s
        self.gw.sessions.add(s)
        return s, True

    def close_session(self, reason: str) -> None:
        s = self.session
        if s is None or s.closed:
            return
        s.closed = True
        self.gw.sessions.discard(s)
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit(
                [
                    s.recorder.event(
                        now_ns(),
                        "session.close",
                        outcome=reason,
                        stats={
                            "requests": s.requests,
                            "bytes_in": s.bytes_in,
                            "bytes_out": s.bytes_out,
                        },
                    )
                ]
            )
        log.info("session %s closed: %s", s.session_id, reason)

    def cut(self, s: LedgerSession, why: str) -> None:
        """End ``s`` now: record it, and stop the request in flight (if any)."""
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit([s.recorder.event(now_ns(), "session.terminated", reason=why)])
        if self.in_request and self._task is not None and self.session is s:
            self._cut = f"session ended: {why}"
            self._task.cancel()
        else:
            self.close_session(f"session ended: {why}")

    def base_without_session(self, conn_name: str | None, identity: Any) -> SessionRecorder:
        """A recorder for entries before a session exists (refused requests)."""
        return SessionRecorder(
            {
                "session_id": self.conn_id,
                "connection": conn_name,
                "identity": identity,
                "source": self.source,
            },
            "metadata",
        )
