"""The gateway's side of agents in private networks: where they dial in, and the backend
legs they carry.

An agent (``ledgergate agent``) runs inside a network the gateway cannot reach and dials
out to ``listeners.agent`` over TLS; nothing connects inwards. Each connection it makes
starts with one JSON line and then follows one of two shapes:

- control ``{"control": TOKEN}``: the agent's own token (a service identity's; the
  identity's name is the agent's name, the ``via`` of the connections it carries). The
  gateway answers ``{"ok": true, "agent": NAME}`` or ``{"ok": false, "error": …}`` and
  keeps the connection: it writes ``{"open": LEG, "connection": NAME}`` lines when a
  session needs a backend leg (with ``"address": "HOST:PORT"`` when the server is one
  the backend advertised, a Kafka broker; with ``"auth": true`` when the agent holds
  the connection's credential and logs in itself, ``proxy.agent_login``).
- leg ``{"leg": LEG, "token": TOKEN}``, or ``{"leg": LEG, "token": TOKEN, "error": …}``
  when the agent could not reach the backend: after the line, the bytes of the leg,
  both ways, untouched (the backend's own TLS and authentication run inside it, unless
  the agent logs in).

A session's backend connection is then a socket like any other (``open_leg`` returns one
end of a socket pair, bridged to the leg). The agent never sees a user's token: it only
carries bytes between the gateway and the backend. An agent link is an open session of
this listener: when its token is revoked or expires, or its identity is disabled, the
runtime's re-check ends it, and with it every leg it carries.

Every protocol dials through it the same way: PostgreSQL with ``open_leg``, S3, HTTP and
Kafka with the ``openers`` the runtime hands their gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ledgergate.core.identity import SessionFacts
from ledgergate.proxy.admission import Admitted
from ledgergate.proxy.bridge import MAX_LINE, bridge
from ledgergate.proxy.listener import OpenSession
from ledgergate.wire.agent import (
    AgentLineError,
    Answer,
    Control,
    Leg,
    Open,
    encode,
    parse_hello,
)

__all__ = ["AgentHub", "AgentUnavailable", "LegOpener"]

log = logging.getLogger("ledgergate.agent")


Admit = Callable[[str, str], Awaitable[Admitted]]
# A connection's way to its server through its agent: the address ("HOST:PORT" as the
# backend advertised it) or None for the connection's own target → a connected socket.
LegOpener = Callable[[str | None], Awaitable[socket.socket]]


class AgentUnavailable(RuntimeError):
    """No agent of that name is connected, or it could not bring the leg."""


@dataclass(eq=False)
class AgentLink:
    name: str
    token: str
    writer: asyncio.StreamWriter
    facts_: SessionFacts
    legs: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def session_id(self) -> str:
        return self.facts_.session_id

    @property
    def facts(self) -> SessionFacts | None:
        return self.facts_

    @property
    def window_id(self) -> str | None:
        return None


class AgentHub:
    """The agent listener. ``connections``: connection name → the agent (``via``)."""

    def __init__(
        self,
        *,
        connections: dict[str, str],
        admit: Admit,
        tls: ssl.SSLContext,
        handshake_timeout: float,
        leg_timeout: float,
    ) -> None:
        self.connections = connections
        self._admit = admit
        self._tls = tls
        self.handshake_timeout = handshake_timeout
        self.leg_timeout = leg_timeout
        self.links: dict[str, AgentLink] = {}
        self._pending: dict[
            str, tuple[str, asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
        ] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> asyncio.Server:
        self.server = await asyncio.start_server(
            self._accepted, host, port, ssl=self._tls, limit=MAX_LINE * 2
        )
        return self.server

    # -- the Listener shape (re-checks, shutdown) -------------------------------------------
    def open_sessions(self) -> Sequence[OpenSession]:
        return list(self.links.values())

    def end_sessions(self, verdicts: dict[str, str]) -> int:
        n = 0
        for link in list(self.links.values()):
            why = verdicts.get(link.session_id)
            if why is not None:
                n += 1
                self._drop(link, why)
        return n

    def windows_in_use(self) -> set[str]:
        return set()

    def close_window(self, review_id: str, why: str) -> int:
        return 0

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def shutdown(self) -> None:
        self.stop_accepting()
        for link in list(self.links.values()):
            self._drop(link, "the gateway is shutting down")
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- legs ----------------------------------------------------------------------------------
    def openers(self) -> dict[str, LegOpener]:
        """connection name → its way to its server, for the protocols that dial it."""

        def opener(connection: str) -> LegOpener:
            async def open_to(address: str | None) -> socket.socket:
                return await self.open_leg(connection, address=address)

            return open_to

        return {name: opener(name) for name in self.connections}

    async def open_leg(
        self, connection: str, *, address: str | None = None, auth: bool = False
    ) -> socket.socket:
        """A socket connected, through the connection's agent, to its backend: to
        ``address`` ("HOST:PORT" as the backend advertised it, e.g. a Kafka broker) or the
        connection's own target; with ``auth`` the agent logs in with the credential it
        holds before the leg carries the session (PostgreSQL)."""
        agent = self.connections.get(connection)
        link = self.links.get(agent) if agent is not None else None
        if agent is None or link is None:
            raise AgentUnavailable(f"agent {agent!r} of connection {connection!r} is not connected")
        leg = secrets.token_urlsafe(18)
        fut: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[leg] = (agent, fut)
        try:
            link.writer.write(encode(Open(leg, connection, address, auth)))
            async with asyncio.timeout(self.leg_timeout):
                reader, writer = await fut
        except TimeoutError:
            raise AgentUnavailable(f"agent {agent!r} did not bring the leg in time") from None
        finally:
            self._pending.pop(leg, None)
        mine, theirs = socket.socketpair()
        mine.setblocking(False)
        theirs.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._bridge(theirs, reader, writer))
        link.legs.add(task)
        task.add_done_callback(link.legs.discard)
        return mine

    async def _bridge(
        self, sock: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await bridge((reader, writer), await asyncio.open_connection(sock=sock))

    # -- incoming connections -------------------------------------------------------------------
    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One incoming connection; whatever fails (the store answering the token check,
        a peer that vanishes) ends that connection alone, with a reason logged."""
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("agent connection failed: %s", type(e).__name__)
            await _refuse(writer, "the gateway cannot take this connection now")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.handshake_timeout):
                line = await reader.readuntil(b"\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        try:
            hello = parse_hello(line)
        except AgentLineError as e:
            await _refuse(writer, str(e))
            return
        if isinstance(hello, Control):
            await self._control(hello.token, reader, writer, peer)
        else:
            await self._leg(hello, reader, writer)

    async def _who(self, token: str) -> tuple[str | None, Admitted | None, str]:
        """The agent a token belongs to: its identity, if a connection names it."""
        for conn, agent in self.connections.items():
            adm = await self._admit(token, conn)
            name = adm.identity.get("subject") if adm.identity else None
            if not adm.ok:
                return None, None, adm.reason or "refused"
            if name == agent:
                return agent, adm, ""
        return None, None, "no connection is carried by this identity (via:)"

    async def _control(
        self, token: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        name, adm, why = await self._who(token)
        if name is None or adm is None:
            log.warning("agent refused from %s: %s", peer, why)
            await _refuse(writer, why)
            return
        old = self.links.get(name)
        if old is not None:
            self._drop(old, "a newer connection of the same agent replaced it")
        facts = SessionFacts(
            session_id=f"agent_{secrets.token_hex(8)}",
            identity=name,
            groups=tuple(adm.identity.get("groups") or ()) if adm.identity else (),
            connection=next(c for c, a in self.connections.items() if a == name),
            token_id=adm.token_id,
            started_ns=time.time_ns(),
            expires_ns=adm.expires_ns or 0,
            max_session_ns=None,
        )
        link = AgentLink(name, token, writer, facts)
        self.links[name] = link
        writer.write(encode(Answer(True, agent=name)))
        log.info("agent %s connected from %s", name, peer)
        try:
            while await reader.read(1024):
                pass  # the agent sends nothing else; EOF or an error ends the link
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            if self.links.get(name) is link:
                self._drop(link, "the agent disconnected")

    async def _leg(
        self, hello: Leg, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        leg, token = hello.leg, hello.token
        pending = self._pending.get(leg)
        link = self.links.get(pending[0]) if pending is not None else None
        same = link is not None and secrets.compare_digest(token.encode(), link.token.encode())
        if pending is None or link is None or not same:
            await _refuse(writer, "unknown leg")
            return
        fut = pending[1]
        if hello.error is not None:
            writer.close()
            if not fut.done():
                fut.set_exception(AgentUnavailable(f"agent {link.name}: {hello.error}"))
            return
        if fut.done():
            writer.close()
            return
        fut.set_result((reader, writer))

    def _drop(self, link: AgentLink, why: str) -> None:
        if self.links.get(link.name) is link:
            del self.links[link.name]
        log.info("agent %s link ended: %s", link.name, why)
        with contextlib.suppress(Exception):
            link.writer.close()
        for t in list(link.legs):
            t.cancel()


async def _refuse(writer: asyncio.StreamWriter, why: str) -> None:
    with contextlib.suppress(Exception):
        writer.write(encode(Answer(False, error=why)))
        await writer.drain()
    writer.close()
