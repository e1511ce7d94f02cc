"""The asyncio shell of the PostgreSQL gateway: sockets, TLS, backend connections.

Owns one client connection from accept to close: runs the sans-IO handshakes
(``wire.pg.handshake``), checks the token, opens the backend with the held credential,
then hands bytes to the sans-IO ``Relay`` from Protocol callbacks (no awaits on the hot
path) and carries out the actions it returns, in order. Also routes CancelRequests.
Must not parse protocol bytes itself, and must never put the backend credential in an
error, a log line or a ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

from ledgergate.core.config import Connection
from ledgergate.core.identity import SessionFacts
from ledgergate.core.masking.plan import MaskPlanner
from ledgergate.core.policy.engine import PolicySet, SessionPolicy
from ledgergate.core.recording import SessionRecorder
from ledgergate.proxy.review import ReviewAnswer, ReviewAsk, ReviewDesk, params_text
from ledgergate.proxy.sink import LedgerSink, LedgerUnavailable
from ledgergate.wire.pg import catalog as catalog_codec
from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    Authenticate,
    BackendReady,
    CancelBackend,
    ClientClosed,
    ClientData,
    Close,
    Committed,
    Fail,
    Inspect,
    Record,
    SendToClient,
    SendToServer,
    ServerClosed,
    ServerData,
    StartClientTls,
    StartServerTls,
    TlsStarted,
    Verdict,
)
from ledgergate.wire.pg.handshake import BackendHandshake, FrontendHandshake
from ledgergate.wire.pg.results import ResultShaper
from ledgergate.wire.pg.session import MAX_HELD, Guard, NeedsReview, Relay

__all__ = ["AuthResult", "PgGateway"]

log = logging.getLogger("ledgergate.pg")
# A session told to end waits for the server message in flight to finish (so the client
# can parse the FATAL error); a server stalled mid-message gets this long, then the
# connection is closed without it.
END_GRACE_S = 5.0
# Masked connections: the catalog snapshot (table OID, column number → names) is shared
# by sessions on one connection for this long; a table created since is matched by its
# output column names until the next snapshot (more masked, never less).
CATALOG_TTL_S = 60.0
now_ns = time.time_ns


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    identity: dict[str, Any] | None
    token_id: str | None
    reason: str | None
    # Authenticated but not allowed on the connection (no grant, token scope).
    denied: bool = False
    expires_ns: int = 2**63 - 1  # when the credential stops being valid
    via: str = "token"
    grant: str | None = None
    # Admitted inside an approved access window: (its review id, when it closes).
    window: tuple[str, int] | None = None


# (password, connection name) -> the verdict; runs off the relay loop.
Authenticator = Callable[[str, str], Awaitable[AuthResult]]


def _guard(policy: SessionPolicy) -> Guard:
    """The relay's guard over a session's policy (statement text read as UTF-8)."""

    def guard(op: str, text: bytes) -> tuple[str, str] | NeedsReview | None:
        d = policy.check(text.decode("utf-8", "replace"))
        if d.review is not None:
            return NeedsReview(d.review)
        return None if d.allowed else (d.rule or "policy", d.message or "refused")

    return guard


class _Registration:
    """What a CancelRequest needs to reach the right backend."""

    __slots__ = ("backend_secret", "conn", "session")

    def __init__(self, conn: Connection, backend_secret: bytes, session: PgSession) -> None:
        self.conn = conn
        self.backend_secret = backend_secret
        self.session = session


class _Side(asyncio.Protocol):
    """One socket's callbacks, forwarded to the session; queues data during handshakes."""

    def __init__(self, session: PgSession, client: bool) -> None:
        self.s = session
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.relaying = False
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its API.
        self.transport = transport  # type: ignore[assignment]
        if self.client:
            self.s.gw.start_session(self.s)

    def data_received(self, data: bytes) -> None:
        if self.relaying:
            if self.client:
                self.s.on_client_data(data)
            else:
                self.s.on_server_data(data)
        else:
            self.queue.put_nowait(data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        if self.relaying:
            if self.client:
                self.s.on_client_closed()
            else:
                self.s.on_server_closed()
        else:
            self.queue.put_nowait(None)

    def pause_writing(self) -> None:
        self.s.peer_paused(self.client)

    def resume_writing(self) -> None:
        self.s.peer_resumed(self.client)

    async def read(self) -> bytes:
        data = await self.queue.get()
        if data is None:
            raise ConnectionResetError("peer closed the connection")
        return data


class PgSession:
    """One client connection through the gateway."""

    def __init__(self, gw: PgGateway) -> None:
        self.gw = gw
        self.c = _Side(self, True)
        self.s: _Side | None = None
        self.relay = Relay()
        self.recorder: SessionRecorder | None = None
        # Time-ordered ids: sessions sort by start, and the ledger's session index takes
        # the entries of concurrent sessions on neighbouring pages (fewer pages per commit).
        self.session_id = f"s_{time.time_ns() // 1000:x}{secrets.token_hex(5)}"
        self.source: dict[str, Any] = {"ip": None, "port": None}
        self.conn: Connection | None = None
        self.identity: dict[str, Any] | None = None
        self.closed = False
        self.close_reason = ""
        self.done = asyncio.Event()
        self._paused_server = set[str]()
        self._paused_client = set[str]()
        self.registration: tuple[int, bytes] | None = None
        self.relaying = False
        # What the session was admitted on (re-checked by the gateway's watch), and the
        # instant it must end at the latest (checked at every client read: an int compare).
        self.facts: SessionFacts | None = None
        # A statement held for review: (ticket, rule, the desk's task); why it was withdrawn.
        self._review: tuple[int, str, asyncio.Task[ReviewAnswer]] | None = None
        self._withdrawn: str | None = None
        self.window_id: str | None = None  # the access review it was admitted under
        self.policy: SessionPolicy | None = None
        self.deadline_ns = 2**63 - 1
        self.deadline_reason = ""
        self._deadline_timer: asyncio.TimerHandle | None = None

    # -- handshake (a task; awaits are fine here) ------------------------------------------
    async def run(self) -> None:
        ct = self.c.transport
        assert ct is not None
        peer = ct.get_extra_info("peername") or ("?", 0)
        self.source = {"ip": str(peer[0]), "port": int(peer[1])}
        try:
            async with asyncio.timeout(self.gw.handshake_timeout):
                ok = await self._handshake()
        except TimeoutError:
            self._reject(
                "handshake timed out",
                m.error_response("08P01", "ledgergate: the startup handshake took too long"),
            )
            ok = False
        except (ConnectionError, OSError) as e:
            self._reject(f"client went away during the handshake ({type(e).__name__})", b"")
            ok = False
        except LedgerUnavailable:
            self._reject_no_ledger()
            ok = False
        if ok:
            await self.done.wait()

    def _reject(self, reason: str, to_client: bytes, **fields: Any) -> None:
        ct = self.c.transport
        if to_client and ct is not None and not ct.is_closing():
            ct.write(to_client)
        if ct is not None:
            ct.close()
        if self.s is not None and self.s.transport is not None:
            self.s.transport.close()
        base = self._base()
        base.update(fields)
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit(
                [SessionRecorder(base, "metadata").event(now_ns(), "session.reject", reason=reason)]
            )
        log.info("session %s rejected: %s", self.session_id, reason)

    def _reject_no_ledger(self) -> None:
        ct = self.c.transport
        if ct is not None and not ct.is_closing():
            ct.write(
                m.error_response(
                    "58000",
                    "ledgergate: the audit ledger is unavailable; "
                    "refusing traffic until it can be written",
                )
            )
            ct.close()
        log.error("session %s refused: ledger unavailable", self.session_id)

    def _base(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "connection": self.conn.name if self.conn else None,
            "identity": self.identity,
            "source": self.source,
        }

    async def _handshake(self) -> bool:
        gw = self.gw
        front = FrontendHandshake(
            tls_available=gw.tls is not None,
            allow_plaintext=gw.allow_plaintext,
            connections=gw.connections,
        )
        auth: Authenticate | None = None
        while auth is None:
            data = await self.c.read()
            actions = front.feed(ClientData(data, now_ns()))
            for a in actions:
                match a:
                    case SendToClient(data=d):
                        assert self.c.transport is not None
                        self.c.transport.write(d)
                    case StartClientTls():
                        await self._client_tls()
                        for b in front.feed(TlsStarted()):
                            if isinstance(b, SendToClient):
                                assert self.c.transport is not None
                                self.c.transport.write(b.data)
                            elif isinstance(b, Fail):
                                self._reject(b.reason, b.to_client)
                                return False
                            elif isinstance(b, Authenticate):
                                auth = b
                    case CancelBackend(pid=pid, secret=sec):
                        await gw.cancel(pid, sec, self.source)
                        assert self.c.transport is not None
                        self.c.transport.close()
                        return False
                    case Close():
                        assert self.c.transport is not None
                        self.c.transport.close()
                        return False
                    case Fail(reason=r, to_client=tc):
                        conn_name = front.connection
                        self.conn = gw.connections.get(conn_name or "")
                        self._reject(r, tc, claimed_user=front.user, requested=conn_name)
                        return False
                    case Authenticate():
                        auth = a
                    case _:
                        raise AssertionError(f"unexpected handshake action {a!r}")
        self.conn = gw.connections[front.connection or ""]
        user = front.user or ""
        tls = self._tls_info(self.c.transport)
        try:
            token = auth.password.decode("utf-8")
        except UnicodeDecodeError:
            token = ""
        result = await gw.authenticate(token, self.conn.name)
        if result.denied:
            self.identity = result.identity
            reason = result.reason or "not allowed"
            await gw.sink.commit(
                [
                    SessionRecorder(self._base(), "metadata").event(
                        now_ns(),
                        "auth.denied",
                        reason=reason,
                        token_id=result.token_id,
                        claimed_user=user,
                        tls=tls,
                        outcome="refused",
                    )
                ]
            )
            who = (result.identity or {}).get("subject", user)
            self._reject_quiet(
                m.error_response(
                    "42501",
                    f'ledgergate: identity "{who}" may not use connection '
                    f'"{self.conn.name}": {reason}',
                )
            )
            return False
        if not result.ok:
            self.identity = result.identity or {"kind": "unknown", "subject": user, "groups": []}
            await gw.sink.commit(
                [
                    SessionRecorder(self._base(), "metadata").event(
                        now_ns(),
                        "auth.fail",
                        reason=result.reason or "authentication failed",
                        token_id=result.token_id,
                        claimed_user=user,
                        tls=tls,
                        outcome="refused",
                    )
                ]
            )
            self._reject_quiet(
                m.error_response("28P01", f'password authentication failed for user "{user}"')
            )
            return False
        self.identity = result.identity
        ident = result.identity or {}
        started = now_ns()
        self.facts = SessionFacts(
            session_id=self.session_id,
            identity=str(ident.get("subject", "")),
            groups=tuple(str(g) for g in ident.get("groups", ())),
            connection=self.conn.name,
            token_id=result.token_id,
            started_ns=started,
            expires_ns=result.expires_ns,
            max_session_ns=self.conn.max_session_ns,
        )
        self.deadline_ns, self.deadline_reason = self.facts.deadline()
        if result.window is not None and result.window[1] < self.deadline_ns:
            self.deadline_ns = result.window[1]
            self.deadline_reason = f"the access window of review {result.window[0]} closed"
        base = self._base()
        if gw.policies is not None:
            self.policy = gw.policies.for_session(self.conn.name, self.facts.groups)
            if self.policy is not None:
                # Every entry of the session names the policy it was decided under.
                base["policy"] = self.policy.version
                if self.policy.guarded:
                    self.relay.guard = _guard(self.policy)
                    self.relay.refusal_tag = secrets.token_hex(6)
        self.recorder = SessionRecorder(base, self.conn.recording)
        await gw.sink.commit(
            [
                self.recorder.event(
                    started,
                    "auth.ok",
                    token_id=result.token_id,
                    claimed_user=user,
                    tls=tls,
                    via=result.via,
                    grant=result.grant,
                    expires_ns=result.expires_ns,
                    **({"review": {"id": result.window[0]}} if result.window else {}),
                )
            ]
        )
        if result.window is not None and gw.reviews is not None:
            self.window_id = result.window[0]
            gw.reviews.used(result.window[0], self.session_id)
        ready = await self._backend(auth)
        if ready is None:
            return False
        if self.policy is not None and self.policy.mask:
            try:
                catalog = await gw.catalog(self.conn, self._catalog_query)
            except (ConnectionError, TimeoutError, ValueError) as e:
                self._fail_backend(f"the catalog for masking could not be read ({e})")
                return False
            planner = self._planner(self.policy, catalog)
            self.relay.set_shaper(ResultShaper(planner.plan, planner.plan_copy))
        # Our own cancel secret, as long as the backend's (4 bytes in 3.0, longer in 3.2).
        secret = secrets.token_bytes(max(4, len(ready.secret)))
        if gw.workers > 1:  # whose session it is, for a cancel that reaches another worker
            secret = bytes([gw.worker]) + secret[1:]
        self.registration = (ready.pid, secret)
        gw.cancel_registry[(ready.pid, secret)] = _Registration(self.conn, ready.secret, self)
        backend_tls = (
            self.s is not None
            and self.s.transport is not None
            and self.s.transport.get_extra_info("ssl_object") is not None
        )
        app_name = (auth.startup.get(b"application_name") or b"").decode("utf-8", "replace")
        await gw.sink.commit(
            [
                self.recorder.event(
                    now_ns(),
                    "session.open",
                    client={
                        "application_name": app_name,
                        "user": user,
                        "database": self.conn.name,
                        "protocol": f"{auth.startup.major}.{auth.startup.minor}",
                    },
                    tls=tls,
                    backend={"pid": ready.pid, "tls": backend_tls},
                    recording=self.conn.recording,
                )
            ]
        )
        greet = (
            ready.negotiate
            + m.auth_ok()
            + ready.greeting
            + m.backend_key_data(ready.pid, secret)
            + m.ready_for_query(ready.status)
        )
        self._start_relay(greet, front.leftover())
        self.apply_policy(gw.policies)  # if it changed during the handshake
        return True

    async def _catalog_query(self) -> dict[tuple[int, int], str]:
        """The catalog snapshot, read on this session's backend connection before the
        client's first byte is relayed (so nothing else is in flight on it)."""
        side = self.s
        assert side is not None and side.transport is not None and self.conn is not None
        side.transport.write(catalog_codec.query())
        reader = catalog_codec.CatalogReader()
        async with asyncio.timeout(self.conn.connect_timeout):
            while True:
                got = reader.feed(await side.read())
                if got is not None:
                    return got

    def _mask_report(self, items: list[dict[str, Any]], rows: int) -> None:
        if self.recorder is None:
            return
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit([self.recorder.event(now_ns(), "mask", masking=items, rows=rows)])

    def _reject_quiet(self, to_client: bytes) -> None:
        ct = self.c.transport
        if ct is not None:
            ct.write(to_client)
            ct.close()

    @staticmethod
    def _tls_info(t: asyncio.Transport | None) -> dict[str, Any] | None:
        if t is None:
            return None
        so = t.get_extra_info("ssl_object")
        if so is None:
            return None
        c = so.cipher()
        return {"version": so.version(), "cipher": c[0] if c else None}

    async def _client_tls(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.gw.tls is not None and self.c.transport is not None
        self.c.relaying = False
        new = await loop.start_tls(
            self.c.transport,
            self.c,
            self.gw.tls,
            server_side=True,
            ssl_handshake_timeout=self.gw.handshake_timeout,
        )
        if new is None:
            raise ConnectionResetError("TLS handshake failed")
        self.c.transport = new

    async def _backend(self, auth: Authenticate) -> BackendReady | None:
        conn = self.conn
        assert conn is not None and self.recorder is not None
        loop = asyncio.get_running_loop()
        try:
            password = self.gw.password_for(conn)
        except Exception:
            self._fail_backend("the connection's credential cannot be resolved")
            return None
        try:
            async with asyncio.timeout(conn.connect_timeout):
                _, side = await loop.create_connection(
                    lambda: _Side(self, False), conn.host, conn.port
                )
        except (OSError, TimeoutError) as e:
            self._fail_backend(f"could not connect to the server ({type(e).__name__})")
            return None
        self.s = side
        hs = BackendHandshake(
            user=conn.credentials.user,
            password=password,
            database=conn.database,
            client=auth.startup,
            sslmode=conn.sslmode,
            nonce=secrets.token_bytes(18),
            connection=conn.name,
            require_auth=frozenset(conn.require_auth) if conn.require_auth else None,
        )
        pending = hs.start()
        while True:
            for a in pending:
                match a:
                    case SendToServer(data=d):
                        assert side.transport is not None
                        side.transport.write(d)
                    case StartServerTls():
                        try:
                            assert side.transport is not None
                            new = await loop.start_tls(
                                side.transport,
                                side,
                                self.gw.backend_tls(conn),
                                server_side=False,
                                server_hostname=conn.host
                                if conn.sslmode == "verify-full"
                                else None,
                                ssl_handshake_timeout=conn.connect_timeout,
                            )
                        except (OSError, ssl.SSLError) as e:
                            self._fail_backend(f"TLS to the server failed ({type(e).__name__})")
                            return None
                        assert new is not None
                        side.transport = new
                        pending = hs.feed(TlsStarted())
                        break
                    case BackendReady():
                        return a
                    case Fail(reason=r, to_client=tc):
                        self._fail_backend(r, tc)
                        return None
                    case _:
                        raise AssertionError(f"unexpected backend action {a!r}")
            else:
                try:
                    async with asyncio.timeout(conn.connect_timeout):
                        data = await side.read()
                except (ConnectionError, TimeoutError):
                    self._fail_backend("the server closed the connection during startup")
                    return None
                pending = hs.feed(ServerData(data, now_ns()))

    def _fail_backend(self, reason: str, to_client: bytes = b"") -> None:
        assert self.conn is not None
        if not to_client:
            to_client = m.error_response(
                "08006", f'ledgergate: connection "{self.conn.name}" is unavailable: {reason}'
            )
        self._reject(f"backend unavailable: {reason}", to_client)

    # -- relay (Protocol callbacks; no awaits) ---------------------------------------------
    def _start_relay(self, greeting: bytes, leftover: bytes) -> None:
        assert self.c.transport is not None and self.s is not None
        self.ct = self.c.transport
        assert self.s.transport is not None
        self.st = self.s.transport
        self.ct.write(greeting)
        self.relaying = True
        log.info(
            "session %s open: %s via %r from %s",
            self.session_id,
            (self.identity or {}).get("subject"),
            self.conn.name if self.conn else None,
            self.source["ip"],
        )
        self.gw.sink.on_failure.append(self._ledger_failed)
        self._arm_deadline()
        # Drain bytes that arrived while we were in the handshake, then switch to callbacks.
        for side in (self.s, self.c):
            while not side.queue.empty():
                data = side.queue.get_nowait()
                if data is None:
                    (self.on_client_closed if side.client else self.on_server_closed)()
                    return
                (self.on_client_data if side.client else self.on_server_data)(data)
            side.relaying = True
        if leftover:
            self.on_client_data(leftover)

    def _arm_deadline(self) -> None:
        """End the session when its credential (or the connection's session limit) runs
        out, even in the middle of a result stream nobody is sending commands on."""
        if self.deadline_ns >= 2**62:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (self.deadline_ns - now_ns()) / 1e9)
        self._deadline_timer = loop.call_at(
            loop.time() + delay, self.end, self.deadline_reason or "token expired"
        )

    def end(self, why: str) -> None:
        """End the session because its identity may no longer hold it: a
        ``session.terminated`` entry, a FATAL error the client prints, then close."""
        if self.closed or not self.relaying:
            return
        if self.recorder is not None:
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [self.recorder.event(now_ns(), "session.terminated", reason=why)]
                )
        log.info("session %s terminated: %s", self.session_id, why)
        self.terminate("28000", f"ledgergate: session ended: {why}", f"terminated: {why}")

    def _planner(
        self, policy: SessionPolicy | None, catalog: Mapping[tuple[int, int], str]
    ) -> MaskPlanner:
        """The mask planner for this session's result sets and COPY data."""
        return MaskPlanner(
            policy.mask if policy is not None else [],
            catalog,
            self.gw.masking_key,
            self._mask_report,
            refs=policy.masked_refs if policy is not None else None,
            search_path=policy.settings.search_path if policy is not None else None,
        )

    def apply_policy(self, policies: PolicySet | None) -> None:
        """Take a changed policy (the gateway rebuilt it): deny/allow decisions and the
        ``policy`` version the session's entries name change from its next statement (a
        statement prepared before is decided again at its next Bind); a result shaper
        plans result sets from now on with the new mask rules (one being sent finishes
        as it began). A session that now needs masking but was opened without a shaper
        is ended: it never reads unmasked data."""
        if self.closed or not self.relaying or self.conn is None or self.facts is None:
            return
        new = None if policies is None else policies.for_session(self.conn.name, self.facts.groups)
        if new is self.policy:
            return
        self.policy, relay = new, self.relay
        if new is not None and new.mask and relay.shaper is None:
            self.end("policy changed: masking now applies to this session")
            return
        if new is not None and new.guarded:
            relay.set_guard(_guard(new))  # statements prepared before are decided again
            if relay.refusal_tag == "0":
                relay.refusal_tag = secrets.token_hex(6)
        elif relay.guard is not None:
            relay.set_guard(lambda op, text: None)  # refusals in flight still rewritten
        if relay.shaper is not None:
            # No catalog snapshot: columns are matched by their output names.
            planner = self._planner(new, self.gw.cached_catalog(self.conn.name))
            relay.shaper.planner = planner.plan
            relay.shaper.copy_planner = planner.plan_copy
        if self.recorder is not None:
            self.recorder.set_policy(new.version if new is not None else None)
        log.info("session %s: policy %s", self.session_id, new.version if new else "none")

    def on_client_data(self, data: bytes) -> None:
        t = now_ns()
        if t >= self.deadline_ns:
            self.end(self.deadline_reason or "token expired")
            return
        self._dispatch(self.relay.feed(ClientData(data, t)))
        if self.relay.held_bytes > MAX_HELD:
            self._pause_client("held")
        if self.relay.waiting_bytes > MAX_HELD:  # behind a statement held for review
            self._pause_client("review")

    def on_server_data(self, data: bytes) -> None:
        self._dispatch(self.relay.feed(ServerData(data, now_ns())))
        if self.gw.sink.congested:
            self._pause_server("ledger")
            self.gw.sink.when_uncongested(lambda: self._resume_server("ledger"))

    def on_client_closed(self) -> None:
        self._dispatch(self.relay.feed(ClientClosed(now_ns())))

    def on_server_closed(self) -> None:
        self._dispatch(self.relay.feed(ServerClosed(now_ns())))

    def _dispatch(self, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case SendToClient(data=d):
                    self.ct.write(d)
                case SendToServer(data=d):
                    self.st.write(d)
                case Record(seen=seen, durable=durable, ticket=ticket):
                    assert self.recorder is not None
                    try:
                        self.gw.sink.submit(
                            self.recorder.drafts(seen),
                            functools.partial(self._committed, ticket) if durable else None,
                        )
                    except LedgerUnavailable as e:
                        self._ledger_failed(e)
                        return
                case Close(reason=r):
                    self._close(r)
                case Inspect():
                    self._inspect(a)
                case (
                    StartClientTls()
                    | StartServerTls()
                    | Authenticate()
                    | CancelBackend()
                    | BackendReady()
                    | Fail()
                ):
                    raise AssertionError(f"handshake action {a!r} during relay")
                case _:
                    assert_never(a)

    # -- review ------------------------------------------------------------------------
    def _inspect(self, ins: Inspect) -> None:
        """A statement held for review: ask the gateway's desk, feed back its answer."""
        rule = self.policy.review_rule(ins.rule) if self.policy is not None else None
        desk = self.gw.reviews
        if rule is None or desk is None or self.facts is None or self.conn is None:
            # No desk (or the rule vanished with a policy change): nobody can approve it.
            self._verdict(ins.ticket, ReviewAnswer(False, "no reviewer can be asked"), ins.rule)
            return
        ask = ReviewAsk(
            session_id=self.session_id,
            identity=self.facts.identity,
            groups=self.facts.groups,
            connection=self.conn.name,
            rule=rule,
            op=ins.op,
            statement=ins.text.decode("utf-8", "replace"),
            params=params_text(ins.params, ins.formats),
        )
        task = asyncio.get_running_loop().create_task(desk.ask(ask, self._notice))
        self._review = (ins.ticket, ins.rule, task)
        task.add_done_callback(self._reviewed)

    def _notice(self, text: str) -> None:
        if not self.closed:  # never inside a server message being relayed
            self._dispatch(self.relay.notice(m.notice_response(text)))

    def _reviewed(self, task: asyncio.Task[ReviewAnswer]) -> None:
        review, self._review = self._review, None
        if review is None or self.closed:
            return
        ticket, rule, _ = review
        if task.cancelled():
            why = self._withdrawn or "the review was withdrawn"
            answer = ReviewAnswer(False, why, "57014")
        elif (err := task.exception()) is not None:
            log.error("session %s: review failed: %r", self.session_id, err)
            answer = ReviewAnswer(False, "the review could not be completed (fail closed)")
        else:
            answer = task.result()
        self._verdict(ticket, answer, rule)

    def _verdict(self, ticket: int, answer: ReviewAnswer, rule: str) -> None:
        v = Verdict(ticket, answer.approved, rule, answer.message, answer.code, now_ns())
        self._dispatch(self.relay.feed(v))
        self._resume_client("review")

    def withdraw_review(self, why: str) -> bool:
        """Cancel the wait for a held statement's review (a CancelRequest, the client gone)."""
        if self._review is None:
            return False
        self._withdrawn = why
        self._review[2].cancel()
        return True

    def terminate(self, code: str, message: str, reason: str) -> None:
        """End a relaying session from the gateway's side with a FATAL error, at the next
        server message boundary (forced after ``END_GRACE_S`` if the server stalls)."""
        if not self.relaying or self.closed:
            return
        self._dispatch(self.relay.end(m.error_response(code, message), reason))
        if not self.closed:
            loop = asyncio.get_running_loop()
            loop.call_later(END_GRACE_S, self._close, reason)

    def _committed(self, ticket: int, err: BaseException | None) -> None:
        if self.closed:
            return
        if err is not None:
            self._ledger_failed(err)
            return
        self._dispatch(self.relay.feed(Committed(ticket)))
        if "held" in self._paused_client and self.relay.held_bytes <= MAX_HELD:
            self._resume_client("held")

    def _ledger_failed(self, err: BaseException | None) -> None:
        if self.closed:
            return
        log.error("session %s stopped: the ledger cannot be written", self.session_id)
        self.ct.write(
            m.error_response(
                "58000", "ledgergate: the audit ledger cannot be written; the session is stopped"
            )
        )
        self._close("ledger unavailable", record=False)

    def _close(self, reason: str, *, record: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.relay.closed = True
        if self._review is not None:  # nobody waits for it any more: withdraw it
            self._withdrawn = f"the session ended: {reason}"
            self._review[2].cancel()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if self.registration is not None:
            self.gw.cancel_registry.pop(self.registration, None)
        self.ct.close()
        self.st.close()
        log.info("session %s closed: %s", self.session_id, reason)
        if record and self.recorder is not None:
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [
                        self.recorder.event(
                            now_ns(),
                            "session.close",
                            outcome=reason,
                            stats=self.relay.stats.as_dict(),
                        )
                    ]
                )
        self.done.set()

    # -- flow control -------------------------------------------------------------------
    def peer_paused(self, client: bool) -> None:
        # The client's socket buffer is full: stop reading the server, and vice versa.
        if client:
            self._pause_server("client-buffer")
        else:
            self._pause_client("server-buffer")

    def peer_resumed(self, client: bool) -> None:
        if client:
            self._resume_server("client-buffer")
        else:
            self._resume_client("server-buffer")

    def _pause_server(self, why: str) -> None:
        if not self._paused_server and self.s and self.s.transport:
            self.s.transport.pause_reading()
        self._paused_server.add(why)

    def _resume_server(self, why: str) -> None:
        self._paused_server.discard(why)
        if not self._paused_server and self.s and self.s.transport and not self.closed:
            self.s.transport.resume_reading()

    def _pause_client(self, why: str) -> None:
        if not self._paused_client and self.c.transport:
            self.c.transport.pause_reading()
        self._paused_client.add(why)

    def _resume_client(self, why: str) -> None:
        self._paused_client.discard(why)
        if not self._paused_client and self.c.transport and not self.closed:
            self.c.transport.resume_reading()


class PgGateway:
    """The PostgreSQL listener: accepts clients, tracks sessions, routes cancels."""

    def __init__(
        self,
        *,
        connections: dict[str, Connection],
        passwords: Callable[[Connection], str | None],
        authenticate: Authenticator,
        sink: LedgerSink,
        tls: ssl.SSLContext | None,
        allow_plaintext: bool,
        handshake_timeout: float,
        policies: PolicySet | None = None,
        masking_key: bytes = b"",
        reviews: ReviewDesk | None = None,
        worker: int = 0,
        workers: int = 1,
        run_dir: Path | None = None,
    ) -> None:
        # Relay process ``worker`` of ``workers`` on one port: the first byte of every
        # cancel secret it hands out is its index, so a CancelRequest that the kernel
        # gave another worker is passed to this one over ``run_dir``'s socket.
        self.worker = worker
        self.workers = workers
        self.run_dir = run_dir
        self.connections = connections
        self.reviews = reviews
        self.policies = policies
        self.masking_key = masking_key
        self._catalogs: dict[str, tuple[float, dict[tuple[int, int], str]]] = {}
        self.password_for = passwords
        self.authenticate = authenticate
        self.sink = sink
        self.tls = tls
        self.allow_plaintext = allow_plaintext
        self.handshake_timeout = handshake_timeout
        self.cancel_registry: dict[tuple[int, bytes], _Registration] = {}
        self.sessions: set[PgSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backend_tls: dict[str, ssl.SSLContext] = {}
        self.server: asyncio.Server | None = None
        self._cancels: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        if self.workers > 1:
            await self._listen_cancels()
        self.server = await loop.create_server(
            self._accept,
            host,
            port,
            reuse_address=True,
            reuse_port=self.workers > 1 or None,
            backlog=512,
        )
        return self.server

    def _cancel_socket(self, worker: int) -> Path:
        assert self.run_dir is not None
        return self.run_dir / f"pg-cancel-{worker}.sock"

    async def _listen_cancels(self) -> None:
        """Take the cancel requests other workers received for this one's sessions."""
        path = self._cancel_socket(self.worker)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a worker that was killed

        async def take(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                async with asyncio.timeout(5):
                    line = await r.readline()
                doc = json.loads(line)
                pid, secret = int(doc["pid"]), bytes.fromhex(doc["secret"])
                source = {k: doc["source"][k] for k in ("ip", "port") if k in doc["source"]}
            except (ValueError, KeyError, TypeError, TimeoutError, OSError):
                log.warning("worker %d: a malformed cancel hand-over was dropped", self.worker)
                return
            finally:
                w.close()
            await self.cancel(pid, secret, source, handed_over=True)

        self._cancels = await asyncio.start_unix_server(take, path=str(path))
        path.chmod(0o600)

    async def _hand_over_cancel(
        self, worker: int, pid: int, secret: bytes, source: dict[str, Any]
    ) -> None:
        try:
            async with asyncio.timeout(2):
                _, w = await asyncio.open_unix_connection(str(self._cancel_socket(worker)))
                w.write(
                    json.dumps({"pid": pid, "secret": secret.hex(), "source": source}).encode()
                    + b"\n"
                )
                await w.drain()
                w.close()
        except (OSError, TimeoutError) as e:
            log.warning("cancel request for worker %d could not be handed over: %s", worker, e)

    def _accept(self) -> _Side:
        return PgSession(self).c

    def start_session(self, session: PgSession) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, session: PgSession) -> None:
        self.sessions.add(session)
        try:
            await session.run()
        except Exception:
            log.exception("session %s failed", session.session_id)
            if session.c.transport is not None:
                session.c.transport.write(
                    m.error_response("XX000", "ledgergate: internal error; the session is closed")
                )
                session.c.transport.close()
            if session.s is not None and session.s.transport is not None:
                session.s.transport.close()
        finally:
            self.sessions.discard(session)

    def backend_tls(self, conn: Connection) -> ssl.SSLContext:
        ctx = self._backend_tls.get(conn.name)
        if ctx is None:
            if conn.sslmode == "verify-full":
                ctx = ssl.create_default_context(cafile=conn.sslrootcert)
            else:  # prefer / require: encrypt, don't verify (libpq's meaning)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._backend_tls[conn.name] = ctx
        return ctx

    async def cancel(
        self, pid: int, secret: bytes, source: dict[str, Any], *, handed_over: bool = False
    ) -> None:
        reg = self.cancel_registry.get((pid, secret))
        if reg is None:
            owner = secret[0] if secret else 0
            if (
                not handed_over
                and self.workers > 1
                and owner != self.worker
                and owner < self.workers
            ):
                await self._hand_over_cancel(owner, pid, secret, source)
                return
            log.info("cancel request for an unknown session from %s", source.get("ip"))
            return
        if reg.session.withdraw_review("the client cancelled the statement"):
            # The held statement never reached the backend: cancelling means withdrawing
            # its review (the client gets 57014, as from PostgreSQL).
            return
        conn = reg.conn
        try:
            async with asyncio.timeout(conn.connect_timeout):
                r, w = await asyncio.open_connection(conn.host, conn.port)
                if conn.sslmode != "disable":
                    w.write(m.ssl_request())
                    await w.drain()
                    answer = await r.readexactly(1)
                    if answer == b"S":
                        await w.start_tls(
                            self.backend_tls(conn),
                            server_hostname=conn.host if conn.sslmode == "verify-full" else None,
                        )
                w.write(m.cancel_request(pid, reg.backend_secret))
                await w.drain()
                w.close()
            outcome = "sent"
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            outcome = f"failed ({type(e).__name__})"
        rec = reg.session.recorder
        if rec is not None:
            self.sink.submit(
                [rec.event(now_ns(), "session.cancel", outcome=outcome, requested_by=source)]
            )

    def cached_catalog(self, name: str) -> dict[tuple[int, int], str]:
        """The connection's last catalog snapshot (empty if none was read)."""
        got = self._catalogs.get(name)
        return got[1] if got is not None else {}

    async def catalog(
        self,
        conn: Connection,
        query: Callable[[], Awaitable[dict[tuple[int, int], str]]],
    ) -> dict[tuple[int, int], str]:
        """The connection's catalog snapshot, read through ``query`` when stale."""
        loop = asyncio.get_running_loop()
        got = self._catalogs.get(conn.name)
        if got is not None and loop.time() - got[0] < CATALOG_TTL_S:
            return got[1]
        snap = await query()
        self._catalogs[conn.name] = (loop.time(), snap)
        return snap

    def open_sessions(self) -> list[PgSession]:
        return [s for s in self.sessions if s.relaying and not s.closed and s.facts is not None]

    def windows_in_use(self) -> set[str]:
        """The access reviews open sessions were admitted under."""
        return {s.window_id for s in self.open_sessions() if s.window_id is not None}

    def close_window(self, review_id: str, why: str) -> int:
        """End the sessions admitted in an access window that was ended or cancelled."""
        return self.end_sessions(
            {s.session_id: why for s in self.open_sessions() if s.window_id == review_id}
        )

    def end_sessions(self, verdicts: dict[str, str]) -> int:
        """End the sessions named (session_id → reason); returns how many were open."""
        n = 0
        for s in list(self.sessions):
            why = verdicts.get(s.session_id)
            if why is not None and s.relaying and not s.closed:
                s.end(why)
                n += 1
        return n

    async def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._cancels is not None:
            self._cancels.close()
            with contextlib.suppress(OSError):
                self._cancel_socket(self.worker).unlink()
        for s in list(self.sessions):
            s.terminate("57P01", "ledgergate: the gateway is shutting down", "gateway shutdown")
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
