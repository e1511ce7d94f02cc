"""The SSH listener: one port for every ``ssh`` connection, and the gateway's logins on
the hosts.

Owns the listening server (asyncssh, with the gateway's own host key), the dial to a host
(the held private key or password; the host's key checked against the pinned key or
known_hosts, never trusted on first use; no agent, no user config, no default keys),
and the registry of open SSH ledger sessions, re-checked and ended like every other
protocol's (``proxy.listener.Listener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from ledgergate.core.config import SshConnection, SshListener
from ledgergate.core.policy.engine import PolicySet
from ledgergate.proxy.admission import Admitted
from ledgergate.proxy.agent import LegOpener
from ledgergate.proxy.listener import SessionRegistry
from ledgergate.proxy.review import ReviewDesk
from ledgergate.proxy.sink import LedgerSink
from ledgergate.proxy.ssh.keys import TrustedKeys
from ledgergate.proxy.ssh.server import SshClientConn, SshSession

__all__ = ["HostLoginError", "SshGateway"]

log = logging.getLogger("ledgergate.ssh")

TokenAuth = Callable[[str, str], Awaitable[Admitted]]
# The ciphers the gateway speaks. AES-GCM is one call into OpenSSL per packet (and needs
# no separate MAC); asyncssh runs ChaCha20-Poly1305 and the UMAC of AES-CTR with Python
# code per packet, which made transfers through the gateway 1.3-2 times slower
# (bench/ssh_compare.py). A client's own preference picks the cipher, so clients are
# offered AES-GCM only by default (``listeners.ssh.ciphers``; OpenSSH has it since 6.2);
# towards hosts the gateway prefers it and falls back to the others.
HOST_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
# (how: "key" | "login", a public key's blob or a login's token id, connection)
SshAuth = Callable[[str, "str | bytes", str], Awaitable[Admitted]]


class HostLoginError(Exception):
    """The gateway's own login on a host is misconfigured (a key that does not load)."""


def _trust(held: dict[str, str | None]) -> Any:
    """asyncssh's ``known_hosts`` for a pinned key line or a known_hosts file's text."""
    if held.get("host_key"):
        key = asyncssh.import_public_key(str(held["host_key"]))
        return ([key], [], [])
    return asyncssh.import_known_hosts(str(held.get("known_hosts") or ""))


# A session's certificate is only for logging in: valid from a minute before (clock skew
# with the host) to a few minutes after it is made.
SESSION_CERT_BEFORE_S = 60
SESSION_CERT_AFTER_S = 300


def _session_certificate(
    ca: asyncssh.SSHKey, user: str, identity: str, session_id: str
) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
    """A fresh key and its certificate for one session's login on a host: principal
    ``user``, key id naming the identity and the ledger session (the host logs it)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    cert = ca.generate_user_certificate(
        key,
        f"ledgergate {identity} session {session_id}",
        principals=[user],
        valid_after=now - SESSION_CERT_BEFORE_S,
        valid_before=now + SESSION_CERT_AFTER_S,
        permit_x11_forwarding=False,
        permit_agent_forwarding=False,
        permit_port_forwarding=False,
        permit_user_rc=False,
    )
    return key, cert


class _HostLogin(asyncssh.SSHClient):
    """The gateway's end of its login on a host: tells the session when it ends."""

    def __init__(self, on_lost: Callable[[Exception | None], None]) -> None:
        self.on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(exc)


class SshGateway(SessionRegistry):
    def __init__(
        self,
        *,
        connections: dict[str, SshConnection],
        held: dict[str, dict[str, str | None]],
        authenticate: TokenAuth,
        sink: LedgerSink,
        authenticate_ssh: SshAuth | None = None,
        user_ca: bytes | None = None,
        listener: SshListener,
        host_key: bytes,
        policies: Callable[[], PolicySet | None] = lambda: None,
        unparseable: Callable[[], str] = lambda: "deny",
        reviews: ReviewDesk | None = None,
        legs: dict[str, LegOpener] | None = None,
    ) -> None:
        self.connections = connections
        self.legs = legs or {}
        self.authenticate = authenticate
        self.authenticate_ssh = authenticate_ssh
        self.trusted = TrustedKeys(
            asyncssh.import_private_key(user_ca).convert_to_public() if user_ca else None
        )
        self.sink = sink
        self.listener = listener
        self.policies = policies
        self.unparseable = unparseable
        self.reviews = reviews
        self._host_key = asyncssh.import_private_key(host_key)
        self._held = held
        self._logins: dict[str, dict[str, Any]] = {}
        for name, h in held.items():
            self._logins[name] = self._login(name, h)
        self.server: asyncssh.SSHAcceptor | None = None
        self.sessions: set[SshSession] = set()
        self.clients: set[SshClientConn] = set()

    @staticmethod
    def _login(name: str, h: dict[str, str | None]) -> dict[str, Any]:
        try:
            login: dict[str, Any] = {
                "username": h["user"],
                "known_hosts": _trust(h),
                "agent_path": None,
                "config": None,
                "client_keys": [],
                "password": h.get("password"),
            }
            if h.get("private_key"):
                text = str(h["private_key"]).strip() + "\n"  # a file: secret comes stripped
                login["client_keys"] = [asyncssh.import_private_key(text, h.get("passphrase"))]
            if h.get("certificate_authority"):
                text = str(h["certificate_authority"]).strip() + "\n"
                login["ca"] = asyncssh.import_private_key(text, h.get("passphrase"))
        except (ValueError, asyncssh.KeyImportError) as e:
            raise HostLoginError(f"connections.{name}: {e}") from None
        return login

    def login_kind(self, conn: SshConnection) -> str:
        """How the gateway logs in to the host (never the secret)."""
        cr = conn.credentials
        if cr.certificate_authority is not None:
            return "session certificate"
        return "private key" if cr.private_key is not None else "password"

    @property
    def host_key_line(self) -> str:
        """The gateway's public host key (for the people's known_hosts)."""
        return self._host_key.export_public_key().decode().strip()

    async def listen(self, host: str, port: int) -> asyncssh.SSHAcceptor:
        self.server = await asyncssh.create_server(
            lambda: SshClientConn(self),
            host,
            port,
            server_host_keys=[self._host_key],
            login_timeout=self.listener.login_timeout,
            agent_forwarding=False,
            x11_forwarding=False,
            line_editor=False,  # the host's terminal does the editing; bytes pass as sent
            encryption_algs=tuple(self.listener.ciphers),
            encoding=None,
            reuse_address=True,
        )
        return self.server

    @property
    def bound(self) -> tuple[str, int]:
        assert self.server is not None
        sock = self.server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def dial(
        self,
        conn: SshConnection,
        identity: str,
        session_id: str,
        on_lost: Callable[[Exception | None], None] = lambda _e: None,
    ) -> asyncssh.SSHClientConnection:
        """The gateway's login on the host of ``conn``, for ``identity``'s session;
        ``on_lost`` is called when that connection ends."""
        login = dict(self._logins[conn.name])
        ca = login.pop("ca", None)
        if ca is not None:
            login["client_keys"] = [
                _session_certificate(ca, login["username"], identity, session_id)
            ]
        leg = self.legs.get(conn.name)
        if leg is not None:
            # through the connection's agent: the socket is the agent's leg to the host
            login["sock"] = await asyncio.wait_for(leg(None), conn.connect_timeout * 2)
        return await asyncio.wait_for(
            asyncssh.connect(
                conn.host,
                conn.port,
                connect_timeout=conn.connect_timeout,
                login_timeout=conn.connect_timeout,
                encryption_algs=HOST_CIPHERS,
                client_factory=lambda: _HostLogin(on_lost),
                **login,
            ),
            conn.connect_timeout * 2,
        )

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def shutdown(self) -> None:
        self.stop_accepting()
        for s in list(self.sessions):
            s.end("the gateway is shutting down")
        for c in list(self.clients):
            c.close("the gateway is shutting down")
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
