"""The asyncio shell of the PostgreSQL gateway: the listener, its sessions, cancel routing.

Owns the listening socket (one of ``workers`` relay processes sharing the port with
SO_REUSEPORT), the set of open sessions and their cancel keys, CancelRequests (sent to the
backend with the held key, or handed over to the worker that owns the session over a
private unix socket), the backend TLS contexts and catalog snapshots sessions share, and
shutdown. A session's handshake is in ``proxy.pg_connect``, its relay in
``proxy.pg_session``. Must not parse protocol bytes itself, and must never put the
backend credential in an error, a log line or a ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledgergate.core.config import Connection
from ledgergate.core.policy.engine import PolicySet
from ledgergate.proxy.agent import AgentHub, AgentUnavailable
from ledgergate.proxy.pg_connect import run_session
from ledgergate.proxy.pg_session import PgSession
from ledgergate.proxy.review import ReviewDesk
from ledgergate.proxy.sink import LedgerSink, LedgerUnavailable
from ledgergate.wire.pg import messages as m

if TYPE_CHECKING:
    from ledgergate.proxy.pg_connect import _Registration
    from ledgergate.proxy.pg_session import _Side

__all__ = ["LISTEN_BACKLOG", "AuthResult", "PgGateway", "cancel_owner"]

log = logging.getLogger("ledgergate.pg")
# Masked connections: the catalog snapshot (table OID, column number → names) is shared
# by sessions on one connection for this long; a table created since is matched by its
# output column names until the next snapshot (more masked, never less).
CATALOG_TTL_S = 60.0
# Connections the kernel queues per listening socket before the gateway accepts them.
LISTEN_BACKLOG = 512


def cancel_owner(key: bytes, workers: int, pid: int, secret: bytes) -> int:
    """Which of ``workers`` relay processes a cancel key belongs to: HMAC-SHA256 under the
    supervisor's per-run ``key``. Workers draw their secrets until it names them, so
    the secret keeps every random bit (a client cannot tell the owner or aim at it)."""
    mac = hmac.digest(key, pid.to_bytes(8, "big", signed=True) + secret, hashlib.sha256)
    return int.from_bytes(mac[:8], "big") % workers


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
        worker_key: bytes = b"",
        listen_fds: tuple[int, ...] = (),
    ) -> None:
        # Relay process ``worker`` of ``workers`` on one port, listening on the sockets
        # its supervisor bound (``listen_fds``; none: started again, it binds its own
        # into the SO_REUSEPORT group). Every cancel secret it hands out is drawn
        # until ``cancel_owner`` names this worker, so a CancelRequest that the kernel gave
        # another worker is passed to this one over ``run_dir``'s socket.
        if workers > 1 and (len(worker_key) < 16 or run_dir is None):
            raise ValueError("a relay worker needs its supervisor's key and run dir")
        self.worker = worker
        self.workers = workers
        self.run_dir = run_dir
        self.worker_key = worker_key
        self.listen_fds = listen_fds
        self._servers: list[asyncio.Server] = []
        self.connections = connections
        self.reviews = reviews
        self.policies = policies
        self.masking_key = masking_key
        self._catalogs: dict[str, tuple[float, dict[tuple[int, int], str]]] = {}
        self.password_for = passwords
        # Set by the runtime when connections go through agents (``proxy.agent``).
        self.agents: AgentHub | None = None
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
            for fd in self.listen_fds:  # bound by the supervisor (``services.workers``)
                sock = socket.socket(fileno=fd)
                self._servers.append(
                    await loop.create_server(self._accept, sock=sock, backlog=LISTEN_BACKLOG)
                )
            if not self._servers:  # a restarted worker joins its running peers' group
                self._servers.append(
                    await loop.create_server(
                        self._accept,
                        host,
                        port,
                        reuse_address=True,
                        reuse_port=True,
                        backlog=LISTEN_BACKLOG,
                    )
                )
            self.server = self._servers[0]
            return self.server
        self.server = await loop.create_server(
            self._accept, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
        )
        return self.server

    def cancel_owner(self, pid: int, secret: bytes) -> int:
        """The worker whose session the cancel key (pid, secret) is, if any is: a keyed
        hash, so the secret keeps all its random bits and a client learns nothing."""
        return cancel_owner(self.worker_key, self.workers, pid, secret)

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
                pid, secret, ip, port = doc["pid"], bytes.fromhex(doc["secret"]), *_source(doc)
                if type(pid) is not int or not -(2**31) <= pid < 2**31:
                    raise ValueError("pid")
            except (ValueError, KeyError, TypeError, TimeoutError, OSError):
                log.warning("worker %d: a malformed cancel hand-over was dropped", self.worker)
                return
            finally:
                w.close()
            await self.cancel(pid, secret, {"ip": ip, "port": port}, handed_over=True)

        def _source(doc: dict[str, Any]) -> tuple[str | None, int | None]:
            # what reaches the session.cancel entry: plain types only (canonical JSON)
            ip, port = doc["source"]["ip"], doc["source"]["port"]
            if not (ip is None or type(ip) is str) or not (port is None or type(port) is int):
                raise TypeError("source")
            return ip, port

        old = os.umask(0o077)  # the socket is never reachable by anyone else, not even briefly
        try:
            self._cancels = await asyncio.start_unix_server(take, path=str(path))
        finally:
            os.umask(old)

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
            log.info("cancel request handed over to worker %d", worker)
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
            await run_session(session)
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
            if not handed_over and self.workers > 1:
                owner = self.cancel_owner(pid, secret)
                if owner != self.worker:
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
                if conn.via is not None and self.agents is not None:
                    leg = await self.agents.open_leg(conn.name, auth=conn.agent_login)
                    r, w = await asyncio.open_connection(sock=leg)
                else:
                    r, w = await asyncio.open_connection(conn.host, conn.port)
                if conn.sslmode != "disable" and not conn.agent_login:
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
        except (OSError, TimeoutError, asyncio.IncompleteReadError, AgentUnavailable) as e:
            outcome = f"failed ({type(e).__name__})"
        rec = reg.session.recorder
        if rec is not None:
            with contextlib.suppress(LedgerUnavailable):  # the sessions are stopping anyway
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
            if why is not None and s.relaying and not s.closed and not s.relay.ending:
                s.end(why)
                n += 1
        return n

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        for srv in self._servers:
            srv.close()

    async def shutdown(self) -> None:
        self.stop_accepting()
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
