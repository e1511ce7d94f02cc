"""The agent logging in to a PostgreSQL server with a credential only it holds
(``credentials: agent:NAME`` on the gateway's connection, ``--credential`` on the agent).

The leg starts with the gateway's own first packet, in clear inside the leg (which is TLS
between the gateway and the agent): a StartupMessage, or a CancelRequest. For a startup,
the agent runs ``wire.pg.handshake.BackendHandshake`` against the server with its
credential, its TLS mode and its ``require_auth``, keeping the client's session
parameters, and answers the gateway as a server that trusts it would:
NegotiateProtocolVersion if the server sent one, AuthenticationOk, the server's
ParameterStatus frames as they came, BackendKeyData and ReadyForQuery. From there the leg
carries the session's bytes untouched. A CancelRequest goes on as it came (PostgreSQL
checks a cancel's key, not a login).

What goes wrong is an ErrorResponse to the gateway in the handshake's own words, which
never hold the credential: 28P01 when the server refused it, 08006 otherwise.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from dataclasses import dataclass

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    BackendReady,
    Fail,
    SendToServer,
    ServerData,
    StartServerTls,
    TlsStarted,
)
from ledgergate.wire.pg.handshake import BackendHandshake

__all__ = ["AgentLogin", "LoginFailed", "log_in"]

# PostgreSQL refuses a startup packet longer than this (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP = 10_000
# A server's answers during the login arrive in reads of at most this.
READ_SIZE = 64 * 1024
# What the handshake says when the server refused the held credential.
_REFUSED = "the backend refused the gateway's credential"


class LoginFailed(RuntimeError):
    """The login did not complete (the gateway was told why)."""


@dataclass(frozen=True)
class AgentLogin:
    """A credential the agent holds for one connection, and how it reaches the server."""

    user: str
    password: str | None
    sslmode: str = "prefer"  # disable | prefer | require | verify-full, as libpq
    sslrootcert: str | None = None
    require_auth: frozenset[str] | None = None

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"AgentLogin(user={self.user!r}, password=<hidden>, sslmode={self.sslmode!r})"

    __str__ = __repr__

    def tls(self) -> ssl.SSLContext:
        if self.sslmode == "verify-full":
            return ssl.create_default_context(cafile=self.sslrootcert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # prefer / require: libpq's meaning
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def log_in(
    connection: str, login: AgentLogin, gateway: Streams, server: Streams, host: str
) -> None:
    """Read the gateway's first packet and log in to ``server`` (at ``host``) for it.
    Raises LoginFailed once the gateway has its ErrorResponse."""
    gr, gw = gateway
    head = await gr.readexactly(4)
    size = int.from_bytes(head, "big")
    if not 8 <= size <= MAX_STARTUP:
        _answer(gw, m.error_response("08P01", "agent: the leg did not start with a startup"))
        raise LoginFailed("the leg did not start with a startup packet")
    packet = head + await gr.readexactly(size - 4)
    try:
        first = m.parse_startup_packet(packet)
    except Exception:
        first = None
    if isinstance(first, m.CancelRequest):
        server[1].write(packet)
        return
    if not isinstance(first, m.StartupMessage):
        _answer(gw, m.error_response("08P01", "agent: the leg did not start with a startup"))
        raise LoginFailed("the leg did not start with a startup packet")
    hs = BackendHandshake(
        user=login.user,
        password=login.password,
        database=(first.get(b"database") or b"").decode("utf-8", "replace"),
        client=first,
        sslmode=login.sslmode,
        nonce=secrets.token_bytes(18),
        connection=connection,
        require_auth=login.require_auth,
    )
    sr, sw = server
    pending = hs.start()
    while True:
        for a in pending:
            match a:
                case SendToServer(data=d):
                    sw.write(d)
                case StartServerTls():
                    verify = login.sslmode == "verify-full"
                    try:
                        await sw.start_tls(login.tls(), server_hostname=host if verify else None)
                    except (OSError, ssl.SSLError) as e:
                        why = f"TLS to the server failed ({type(e).__name__})"
                        _answer(gw, m.error_response("08006", f"agent: {why}"))
                        raise LoginFailed(why) from None
                    pending = hs.feed(TlsStarted())
                    break
                case BackendReady(pid=pid, secret=secret, greeting=greeting, negotiate=neg):
                    _answer(
                        gw,
                        neg
                        + m.auth_ok()
                        + greeting
                        + m.backend_key_data(pid, secret)
                        + m.ready_for_query(a.status),
                    )
                    return
                case Fail(reason=reason):
                    refused = reason == _REFUSED
                    code = "28P01" if refused else "08006"
                    text = "the server refused the agent's credential" if refused else reason
                    _answer(gw, m.error_response(code, f"agent: {text}"))
                    raise LoginFailed(text)
                case _:
                    raise AssertionError(f"unexpected login action {a!r}")
        else:
            data = await sr.read(READ_SIZE)
            if not data:
                _answer(gw, m.error_response("08006", "agent: the server closed the connection"))
                raise LoginFailed("the server closed the connection during the login")
            pending = hs.feed(ServerData(data, time.time_ns()))


def _answer(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
