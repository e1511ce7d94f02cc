"""One Kafka client connection to the gateway: SASL, then an ordered relay to one broker.

Owns, for a client's TCP (TLS) connection on a bootstrap or broker port:
- authentication: ApiVersions (the gateway answers, narrowed), SaslHandshake and
  SaslAuthenticate with PLAIN (user, ledgergate token) or OAUTHBEARER (a ledgergate
  token or an IdP JWT), answered by the gateway with the token's remaining life as
  ``session_lifetime_ms`` (KIP-368: clients re-authenticate in place, and the gateway
  answers that too);
- then the relay to the broker this port stands for, in order: requests reach the broker
  in the order they arrived (a Produce waits for its ledger commit, and what came after
  it waits behind it), and responses reach the client in request order, whether the
  broker or the gateway answered;
- flow control both ways and with the ledger; ending the session (re-check, shutdown).
What each request and response means for the ledger is ``traffic``'s.
Never logs a token or the held credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ledgergate.core.recording import SessionRecorder
from ledgergate.proxy.kafka.auth import KafkaSession, SaslSide
from ledgergate.proxy.kafka.backend import BackendLink
from ledgergate.proxy.kafka.traffic import Traffic, api_name
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka.frames import FrameError, FrameReader

if TYPE_CHECKING:
    from ledgergate.proxy.kafka.gateway import Cluster, KafkaGateway

__all__ = ["KafkaClientConn", "KafkaSession"]

log = logging.getLogger("ledgergate.kafka")
now_ns = time.time_ns
K = km.ApiKey

# Requests a client may send before it has authenticated (as a broker allows).
PRE_AUTH = frozenset({K.API_VERSIONS, K.SASL_HANDSHAKE, K.SASL_AUTHENTICATE})
# Frames held for one client while the ledger commits what came before them; past
# this the client's reads pause (a producer pipelines at most 5 requests by default).
MAX_QUEUED = 64
# Slots (requests awaiting their answer) per connection before the client's reads pause.
MAX_IN_FLIGHT = 256
# A deadline further than this is left to the periodic re-check (call_later of years
# ahead is pointless, and the re-check sees it long before).
DEADLINE_MAX_S = 7 * 86400.0


class Slot:
    """A request awaiting its answer, in the client's request order."""

    __slots__ = ("api_key", "corr", "ctx", "data", "version")

    def __init__(self, api_key: int, version: int, corr: int, ctx: Any = None) -> None:
        self.api_key = api_key
        self.version = version
        self.corr = corr
        self.ctx = ctx
        self.data: list[bytes | memoryview] | None = None


class KafkaClientConn(asyncio.Protocol):
    def __init__(self, gw: KafkaGateway, cluster: Cluster, node: int | None) -> None:
        self.gw = gw
        self.cluster = cluster
        self.node = node  # the broker this port stands for (None: bootstrap, any broker)
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.source: dict[str, Any] = {"ip": "?", "port": 0}
        self.tls: dict[str, Any] | None = None
        self.conn_id = f"c_{time.time_ns() // 1000:x}{secrets.token_hex(4)}"
        self.session: KafkaSession | None = None
        self.link: BackendLink | None = None
        self.mechanism: str | None = None
        self._handshaken = False  # a SaslHandshake since the last SaslAuthenticate
        self.closed = False
        self._slots: deque[Slot] = deque()
        self._awaiting: deque[Slot] = deque()  # slots the broker answers, in order
        self._queue: deque[list[Any]] = deque()  # [ready, parts] waiting for the ledger
        self._pauses: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._last_request = time.monotonic()
        self._auth_busy = False
        self._early: deque[memoryview] = deque()  # frames that came during an auth check
        self.traffic = Traffic(self)
        self.sasl = SaslSide(self)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.source = {"ip": str(peer[0]), "port": int(peer[1])}
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.tls = {"version": sslobj.version(), "cipher": sslobj.cipher()[0]}
        self.gw.clients.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.gw.listener.handshake_timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FrameError as e:
            self.reject(f"bad frame: {e}")
            return
        self._last_request = time.monotonic()
        for f in frames:
            if self.closed:
                return
            if self._auth_busy or self._early:
                self._early.append(f)
                continue
            self.request(f)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("the client closed the connection" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:  # the client reads slower than the broker answers
        if self.link is not None:
            self.link.pause_reading()

    def resume_writing(self) -> None:
        if self.link is not None:
            self.link.resume_reading()

    # -- requests --------------------------------------------------------------------------
    def request(self, f: memoryview) -> None:
        try:
            h = km.read_request_header(f)
        except km.KafkaCodecError as e:
            self.reject(f"malformed request header: {e}")
            return
        key = h.api_key
        try:
            if self.session is None or key in PRE_AUTH:
                self.sasl.request(h, f)
                return
            if not self.traffic.allowed(key, h.api_version):
                self.reject(
                    f"request {api_name(key)} v{h.api_version} is not one the gateway offers"
                )
                return
            self.traffic.request(h, f)
        except km.KafkaCodecError as e:  # a body that does not parse: that client only
            self.reject(f"malformed {api_name(key)} v{h.api_version} request: {e}")
        except LedgerUnavailable:  # nothing passes unrecorded
            self.reject("the audit ledger is unavailable: the request was not sent")

    def expect(self, h: km.RequestHeader, ctx: Any = None) -> Slot:
        """A slot for a request the broker answers (in arrival order)."""
        slot = Slot(h.api_key, h.api_version, h.correlation_id, ctx)
        self._slots.append(slot)
        self._awaiting.append(slot)
        if len(self._slots) >= MAX_IN_FLIGHT:
            self.pause("in-flight")
        return slot

    def local(self, h: km.RequestHeader) -> Slot:
        """A slot the gateway answers itself (``answer`` fills it)."""
        slot = Slot(h.api_key, h.api_version, h.correlation_id)
        self._slots.append(slot)
        return slot

    def answer(self, slot: Slot, msg: dict[str, Any]) -> None:
        body = km.encode_response_header(
            slot.api_key, slot.version, slot.corr
        ) + km.encode_response(slot.api_key, slot.version, msg)
        slot.data = [len(body).to_bytes(4, "big"), body]
        self.flush()

    def forward(self, f: memoryview, *, ready: bool = True) -> list[Any]:
        """Send a request frame on to the broker, behind anything still waiting for the
        ledger. ``ready=False`` holds it (and everything after it) until ``release``."""
        item: list[Any] = [ready, (len(f).to_bytes(4, "big"), f)]
        if self._queue or not ready:
            self._queue.append(item)
            if len(self._queue) >= MAX_QUEUED:
                self.pause("queue")
            return item
        assert self.link is not None
        self.link.send(*item[1])
        return item

    def release(self, item: list[Any]) -> None:
        item[0] = True
        q = self._queue
        while q and q[0][0]:
            parts = q.popleft()[1]
            if self.link is not None:
                self.link.send(*parts)
        if len(q) < MAX_QUEUED // 2:
            self.resume("queue")

    def withdraw(self, item: list[Any], slot: Slot) -> None:
        """A held request that will not be sent after all (the gateway answers it)."""
        item[1] = ()
        with contextlib.suppress(ValueError):
            self._awaiting.remove(slot)
        self.release(item)

    # -- responses -------------------------------------------------------------------------
    def response(self, f: memoryview) -> None:
        """A frame from the broker: the answer to the oldest request it owes."""
        if not self._awaiting:
            self.reject("the broker sent a response nobody asked for")
            return
        slot = self._awaiting.popleft()
        corr = int.from_bytes(f[:4], "big", signed=True) if len(f) >= 4 else None
        if corr != slot.corr:
            self.reject(f"the broker answered correlation id {corr}, expected {slot.corr}")
            return
        try:
            self.traffic.response(slot, f)
        except km.KafkaCodecError as e:
            self.reject(f"the broker's {api_name(slot.api_key)} response is malformed: {e}")
        except LedgerUnavailable:
            self.reject("the audit ledger is unavailable")

    def flush(self) -> None:
        slots = self._slots
        t = self.transport
        while slots and slots[0].data is not None:
            data = slots.popleft().data
            if t is not None and not self.closed and data:
                t.writelines(data)
        if len(slots) < MAX_IN_FLIGHT // 2:
            self.resume("in-flight")

    # -- flow control ----------------------------------------------------------------------
    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        if why in self._pauses:
            self._pauses.discard(why)
            if not self._pauses and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def base_without_session(self, conn_name: str | None, identity: Any) -> SessionRecorder:
        """A recorder for entries before a session exists (refusals)."""
        return SessionRecorder(
            {
                "session_id": self.conn_id,
                "connection": conn_name,
                "identity": identity,
                "source": self.source,
            },
            "metadata",
        )

    # -- ending ----------------------------------------------------------------------------
    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.session is None and not self.closed:
            self.reject(f"no SASL authentication within {self.gw.listener.handshake_timeout:.0f}s")

    def _backend_lost(self, why: str) -> None:
        self.close(f"broker connection ended: {why}")

    def reject(self, why: str) -> None:
        """Bad input from the client (or the broker): recorded, connection closed. Before
        a session exists, a source refused again for the same reason (a client retrying
        every few milliseconds while a broker cannot be reached) is recorded and logged
        once per window, the next entry counting the repeats."""
        if self.session is None:
            t = now_ns()
            repeats = self.gw.refusals.note((self.source["ip"], why, None), t)
            if repeats is None:
                self.close(why)
                return
            log.info("kafka client %s:%s: %s", self.source["ip"], self.source["port"], why)
            rec = self.base_without_session(self.cluster.conn.name, None)
            more = {"repeats": repeats} if repeats else {}
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [
                        rec.event(
                            t, "session.reject", reason=why, tls=self.tls, outcome="refused", **more
                        )
                    ]
                )
        else:
            log.info("kafka client %s:%s: %s", self.source["ip"], self.source["port"], why)
        self.close(why)

    def cut(self, why: str) -> None:
        """The session must end now (token revoked or expired, identity disabled, …):
        a ``session.terminated`` entry, then the connection closes (requests in flight
        are left unanswered; the client sees the connection drop and cannot log in
        again with the same credential)."""
        s = self.session
        if s is not None and not s.closed:
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit([s.recorder.event(now_ns(), "session.terminated", reason=why)])
        self.close(f"session ended: {why}")

    def _arm_deadline(self) -> None:
        """End the session exactly when its credential (or window) runs out."""
        s = self.session
        if s is None:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, (s.deadline_ns - now_ns()) / 1e9)
        if delay < DEADLINE_MAX_S:
            self._deadline = loop.call_later(delay, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._deadline = None
        s = self.session
        if s is not None and not s.closed and s.ended is None:
            s.end(s.deadline_reason)

    def close(self, why: str, record: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        if self.transport is not None:
            self.transport.close()
        if self.link is not None:
            self.link.close()
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()
        self.gw.clients.discard(self)
        s = self.session
        if s is not None and not s.closed:
            s.closed = True
            self.gw.sessions.discard(s)
            unanswered = len(self._awaiting)
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [
                        s.recorder.event(
                            now_ns(),
                            "session.close",
                            outcome=s.ended or why,
                            stats={
                                "commands": s.recorder.cmd_seq,
                                "chunks": s.recorder.chunk_seq,
                                "unanswered": unanswered,
                            },
                        )
                    ]
                )
