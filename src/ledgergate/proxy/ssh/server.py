"""One SSH client connection to the gateway: who it is, then its login on the host.

Owns, for a client's SSH connection:
- the target: the user name is ``CONNECTION`` or ``IDENTITY+CONNECTION`` (the identity
  part, when given, must be the identity the credential belongs to);
- authentication: the ledgergate token as the password, or at a keyboard-interactive
  prompt (for tools that have nothing else), checked by the access service; each failure
  an ``auth.fail``/``auth.denied`` entry, and after ``max_auth_tries`` the connection
  closes;
- once authenticated: the gateway's own login on the host (the held key or password,
  the host's key checked against the pinned one), then ``auth.ok`` and ``session.open``
  made durable before the client may open a channel;
- the session's registry entry: re-checks end it (``session.terminated``, every open
  terminal told why), and so does its credential's expiry, exactly on time;
- channels: session channels relayed (``channel``); port and socket forwarding refused
  and recorded (agent and X11 forwarding are refused by the server's settings).
Never logs or records a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import asyncssh

from ledgergate.core.identity import SessionFacts
from ledgergate.core.policy.engine import SessionPolicy
from ledgergate.core.policy.ssh import check_forward
from ledgergate.core.recording_ssh import SshRecorder
from ledgergate.proxy.admission import Admitted
from ledgergate.proxy.agent import AgentUnavailable
from ledgergate.proxy.review import ReviewDesk
from ledgergate.proxy.sink import LedgerSink, LedgerUnavailable
from ledgergate.proxy.ssh.channel import ChannelRelay
from ledgergate.proxy.ssh.forward import ForwardRelay, open_forward
from ledgergate.proxy.ssh.keys import LOGIN_OPTION

if TYPE_CHECKING:
    from ledgergate.core.config import SshConnection
    from ledgergate.proxy.ssh.gateway import SshGateway

__all__ = ["SshClientConn", "SshSession", "parse_target"]

log = logging.getLogger("ledgergate.ssh")
now_ns = time.time_ns
# A deadline further than this is left to the periodic re-check.
DEADLINE_MAX_S = 7 * 86400.0
# Session channels one client connection may have open at once (OpenSSH's MaxSessions).
MAX_CHANNELS = 10


def parse_target(username: str) -> tuple[str | None, str]:
    """``CONNECTION`` or ``IDENTITY+CONNECTION`` → (identity or None, connection)."""
    ident, plus, conn = username.rpartition("+")
    return (ident or None) if plus else None, conn


class SshSession:
    """The ledger's view of one authenticated SSH connection."""

    def __init__(
        self,
        client: SshClientConn,
        session_id: str,
        conn: SshConnection,
        adm: Admitted,
        facts: SessionFacts,
        recorder: SshRecorder,
        upstream: asyncssh.SSHClientConnection,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.conn_name = conn.name
        self.token_id = adm.token_id
        self.facts = facts
        self.recorder = recorder
        self.upstream = upstream
        self.sink: LedgerSink = client.gw.sink
        self.reviews: ReviewDesk | None = client.gw.reviews
        self.unparseable = client.gw.unparseable()
        self.window_id = adm.window[0] if adm.window else None
        self.deadline_ns, self.deadline_reason = facts.deadline()
        if adm.window is not None and adm.window[1] < self.deadline_ns:
            self.deadline_ns = adm.window[1]
            self.deadline_reason = f"the access window of review {adm.window[0]} closed"
        self.ended: str | None = None
        self.closed = False

    def policy(self) -> SessionPolicy | None:
        ps = self.client.gw.policies()
        return None if ps is None else ps.for_session(self.conn_name, self.facts.groups)

    def end(self, why: str) -> None:
        if self.ended is None and not self.closed:
            self.ended = why
            self.client.cut(why)


class SshClientConn(asyncssh.SSHServer):
    """asyncssh's server-side callbacks for one client connection."""

    def __init__(self, gw: SshGateway) -> None:
        self.gw = gw
        self.conn: asyncssh.SSHServerConnection | None = None
        self.conn_id = f"c_{time.time_ns() // 1000:x}{secrets.token_hex(4)}"
        self.source: dict[str, Any] = {"ip": "?", "port": 0}
        self.target: SshConnection | None = None
        self.asked_identity: str | None = None
        self.admitted: Admitted | None = None
        self.method: str | None = None
        self.failures = 0
        self.session: SshSession | None = None
        self.channels: set[ChannelRelay] = set()
        self._numbers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadline: asyncio.TimerHandle | None = None
        self._ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._keys: dict[bytes, Admitted] = {}  # per target: cleared by begin_auth
        self.offered = 0  # public keys looked up
        self.closed = False

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.source = {"ip": str(peer[0]), "port": int(peer[1])}
        self.gw.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(
            "the client closed the connection" if exc is None else f"connection lost: {exc}"
        )

    # -- authentication --------------------------------------------------------------------
    def begin_auth(self, username: str) -> bool:
        # asyncssh calls this again whenever the user name changes: nothing admitted for
        # another target (or identity) carries over
        ident, name = parse_target(username)
        self.asked_identity = ident
        self.target = self.gw.connections.get(name)
        self.admitted, self.method = None, None
        self._keys.clear()
        if self.conn is not None:
            self.conn.set_authorized_keys(self.gw.trusted)
        if self.target is None and self.conn is not None:
            self.conn.send_auth_banner(
                f"ledgergate: there is no SSH connection named {name!r} here "
                "(ssh CONNECTION@gateway or IDENTITY+CONNECTION@gateway)\r\n"
            )
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return self.gw.authenticate_ssh is not None

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """A public key registered as a credential (``token create --ssh-key``); asyncssh
        asks once before and once with the client's signature: one answer for both."""
        # Whatever this call decides, the last method that succeeds sets ``admitted``: a
        # key only queried (no signature) must not stand for a later login.
        self.admitted, self.method = None, None
        conn = self.target
        if conn is None or self.gw.authenticate_ssh is None:
            return False
        blob = key.public_data
        adm = self._keys.get(blob)
        if adm is None:
            # every key offered counts, as in OpenSSH's MaxAuthTries: a client may not
            # make the gateway look up key after key
            self.offered += 1
            if self.offered > self.gw.listener.max_auth_tries:
                self._failed(None, "too many keys offered", "publickey")
                return False
            adm = await self.gw.authenticate_ssh("key", blob, conn.name)
            self._keys[blob] = adm
            if not adm.ok and adm.token_id is not None:
                # a registered key that no longer works (revoked, expired, denied);
                # an unknown key is just one of the keys a client offers
                self._failed(adm, adm.reason or "refused", "publickey")
        if not adm.ok:
            return False
        return self._admit(adm, "publickey")

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._check(password, "password")

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return ("", "", "", [("ledgergate token: ", False)])

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        if len(responses) != 1:
            return False
        return await self._check(responses[0], "keyboard-interactive")

    async def _check(self, token: str, method: str) -> bool:
        self.admitted, self.method = None, None
        conn = self.target
        if conn is None:
            self._failed(None, "no such connection", method)
            return False
        if self.gw.listener.max_auth_tries <= self.failures:
            return False
        adm = await self.gw.authenticate(token, conn.name)
        if not adm.ok:
            self._failed(adm, adm.reason or "refused", method)
            return False
        return self._admit(adm, method)

    def _admit(self, adm: Admitted, method: str) -> bool:
        subject = str((adm.identity or {}).get("subject", ""))
        if self.asked_identity is not None and self.asked_identity != subject:
            self._failed(adm, f"the credential is not {self.asked_identity}'s", method)
            return False
        self.admitted, self.method = adm, method
        return True

    def _failed(self, adm: Admitted | None, reason: str, method: str) -> None:
        self.failures += 1
        rec = self._recorder_without_session(adm.identity if adm else None)
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit(
                [
                    rec.event(
                        now_ns(),
                        "auth.denied" if adm is not None and adm.denied else "auth.fail",
                        reason=reason,
                        token_id=adm.token_id if adm else None,
                        request={"protocol": "ssh", "method": method},
                        outcome="refused",
                    )
                ]
            )
        if self.failures >= self.gw.listener.max_auth_tries and self.conn is not None:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "ledgergate: too many failures"
            )

    async def _certificate_login(self, conn: SshConnection) -> Admitted | None:
        """A certificate the gateway's CA issued: admitted while its login is active."""
        assert self.conn is not None
        login = self.conn.get_key_option(LOGIN_OPTION)
        if not isinstance(login, str) or self.gw.authenticate_ssh is None:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "ledgergate: refused"
            )
            return None
        adm = await self.gw.authenticate_ssh("login", login, conn.name)
        if adm.ok and self._admit(adm, "certificate"):
            return adm
        if not adm.ok:
            self._failed(adm, f"the certificate's login: {adm.reason}", "certificate")
        self.conn.disconnect(
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
            f"ledgergate: the certificate's login is not valid: {adm.reason or 'refused'}",
        )
        return None

    def _recorder_without_session(self, identity: Any) -> SshRecorder:
        return SshRecorder(
            {
                "session_id": self.conn_id,
                "connection": self.target.name if self.target else None,
                "identity": identity,
                "source": self.source,
            },
            "metadata",
        )

    async def auth_completed(self) -> None:
        """Log in to the host, then open the session on the ledger (durably)."""
        opened = False
        try:
            adm = self.admitted
            conn = self.target
            assert conn is not None and self.conn is not None
            # asyncssh sets key options afresh for each request: the login option is
            # there only when the request that succeeded was the gateway's certificate
            if isinstance(self.conn.get_key_option(LOGIN_OPTION), str) or adm is None:
                adm = await self._certificate_login(conn)
                if adm is None:
                    return
            subject = str((adm.identity or {}).get("subject", ""))
            sid = f"s_{time.time_ns() // 1000:x}{secrets.token_hex(5)}"
            try:
                upstream = await self.gw.dial(conn, subject, sid, self._host_lost)
            except (TimeoutError, OSError, asyncssh.Error, AgentUnavailable) as e:
                reason = f"the host could not be reached or refused the gateway's login: {e}"
                log.warning("ssh %s: %s", conn.name, reason)
                self._failed(adm, reason, self.method or "")
                # the client is told no more than that: the host's own words name the
                # account and address the gateway uses, which are not the client's to know
                self.conn.disconnect(
                    asyncssh.DISC_CONNECTION_LOST,
                    f"ledgergate: the gateway could not log in to {conn.name}; ask its "
                    "operators (the reason is in the gateway's log and ledger)",
                )
                return
            if self.closed:
                upstream.close()
                return
            try:
                await self._open_session(adm, conn, upstream, sid)
                opened = True
            except LedgerUnavailable:
                upstream.close()
                self.conn.disconnect(
                    asyncssh.DISC_BY_APPLICATION, "ledgergate: the audit ledger is unavailable"
                )
        finally:
            if not self._ready.done():
                self._ready.set_result(opened)

    async def _open_session(
        self,
        adm: Admitted,
        conn: SshConnection,
        upstream: asyncssh.SSHClientConnection,
        sid: str,
    ) -> None:
        ident = dict(adm.identity or {})
        started = now_ns()
        facts = SessionFacts(
            session_id=sid,
            identity=str(ident.get("subject", "")),
            groups=tuple(str(g) for g in ident.get("groups", ())),
            connection=conn.name,
            token_id=adm.token_id,
            started_ns=started,
            expires_ns=adm.expires_ns,
            max_session_ns=conn.max_session_ns,
        )
        base = {
            "session_id": sid,
            "connection": conn.name,
            "identity": ident,
            "source": self.source,
        }
        rec = SshRecorder(base, conn.recording)
        if adm.window is not None and self.gw.reviews is not None:
            self.gw.reviews.used(adm.window[0], sid)
        assert self.conn is not None
        await self.gw.sink.commit(
            [
                rec.event(
                    started,
                    "auth.ok",
                    token_id=adm.token_id,
                    via=adm.via,
                    grant=adm.grant,
                    expires_ns=adm.expires_ns,
                    **({"review": {"id": adm.window[0]}} if adm.window else {}),
                ),
                rec.event(
                    started,
                    "session.open",
                    client={
                        "protocol": "ssh",
                        "connection_id": self.conn_id,
                        "method": self.method,
                        "version": str(self.conn.get_extra_info("client_version") or ""),
                    },
                    target={
                        "host": conn.host,
                        "port": conn.port,
                        "user": conn.credentials.user,
                        "login": self.gw.login_kind(conn),
                    },
                    recording=conn.recording,
                ),
            ]
        )
        s = SshSession(self, sid, conn, adm, facts, rec, upstream)
        if self.closed:
            # the client left while the session was being opened: close it at once
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [rec.event(now_ns(), "session.close", outcome="the client left",
                               stats={"commands": 0, "chunks": 0})]
                )  # fmt: skip
            upstream.close()
            return
        self.session = s
        self.gw.sessions.add(s)
        self._arm_deadline()

    # -- channels --------------------------------------------------------------------------
    def session_requested(self) -> Any:
        if self.conn is None or self.closed:
            return False
        if len(self.channels) >= MAX_CHANNELS:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, f"ledgergate: at most {MAX_CHANNELS} channels"
            )
        self._numbers += 1
        relay = ChannelRelay(self, self._numbers)
        self.channels.add(relay)
        return self.conn.create_server_channel(encoding=None), self._when_open(relay)

    async def _when_open(self, relay: ChannelRelay) -> ChannelRelay:
        """The channel's session, once the ledger session is open (a client opens its
        channel right after authentication, while the gateway still logs in to the host)."""
        if not await self._ready:
            self.channels.discard(relay)
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, "ledgergate: the session could not be opened"
            )
        return relay

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        return self._forward(dest_host, dest_port, (orig_host, orig_port))

    async def _forward(self, host: str, port: int, orig: tuple[str, int]) -> ForwardRelay:
        """``ssh -L``: where an allow rule names it, relayed and recorded; else refused."""
        where = f"{host}:{port}"
        s = self.session if await self._ready else None
        d = check_forward(s.policy() if s is not None else None, where)
        if s is None or not d.allowed:
            if s is not None:
                with contextlib.suppress(LedgerUnavailable):
                    s.sink.submit(
                        [
                            s.recorder.blocked_request(
                                now_ns(), "port-forward", 0, d.rule, d.message or "", target=where
                            )
                        ]
                    )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"ledgergate: {d.message}"
            )
        self._numbers += 1
        try:
            return await open_forward(s, self._numbers, host, port, orig)
        except LedgerUnavailable:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, "ledgergate: the audit ledger is unavailable"
            ) from None

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        return self._refuse_forward("remote-forward", f"{listen_host}:{listen_port}")

    def unix_connection_requested(self, dest_path: str) -> Any:
        return self._refuse_forward("port-forward", dest_path)

    async def _refuse_forward(self, op: str, where: str) -> bool:
        """Port forwarding is refused; the attempt is recorded once the session is open
        (a client asks for it right after authentication)."""
        if await self._ready:
            self._refused_forward(op, where)
        if op == "remote-forward":
            return False
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            "ledgergate: port forwarding is not allowed on this connection",
        )

    def _refused_forward(self, op: str, where: str) -> None:
        s = self.session
        if s is None:
            return
        with contextlib.suppress(LedgerUnavailable):
            s.sink.submit(
                [
                    s.recorder.blocked_request(
                        now_ns(), op, 0, "ssh.forwarding",
                        f"{op} to {where} is not allowed on this connection",
                        target=where,
                    )
                ]
            )  # fmt: skip

    def channel_closed(self, relay: ChannelRelay) -> None:
        self.channels.discard(relay)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- ending ----------------------------------------------------------------------------
    def _arm_deadline(self) -> None:
        s = self.session
        if s is None:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        delay = max(0.0, (s.deadline_ns - now_ns()) / 1e9)
        if delay < DEADLINE_MAX_S:
            self._deadline = asyncio.get_running_loop().call_later(delay, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._deadline = None
        s = self.session
        if s is not None and not s.closed and s.ended is None:
            s.end(s.deadline_reason)

    def cut(self, why: str) -> None:
        """The session must end now: ``session.terminated``, every terminal told why."""
        s = self.session
        if s is not None and not s.closed:
            with contextlib.suppress(LedgerUnavailable):
                s.sink.submit([s.recorder.event(now_ns(), "session.terminated", reason=why)])
        for ch in list(self.channels):
            ch.end(why)
        conn = self.conn
        if conn is not None:
            # let the channels' last words (and exit statuses) go out first
            asyncio.get_running_loop().call_later(
                0.2,
                lambda: conn.disconnect(
                    asyncssh.DISC_BY_APPLICATION, f"ledgergate: session ended: {why}"
                ),
            )
        self._close(f"session ended: {why}", record_close=True)

    def _host_lost(self, exc: Exception | None) -> None:
        """The gateway's connection to the host ended (the host went away, or it was
        closed by us): the session ends with it."""
        s = self.session
        if s is not None and not s.closed and s.ended is None:
            why = "the host closed the connection" if exc is None else f"the host was lost: {exc}"
            s.end(why)

    def fail_closed(self) -> None:
        """The ledger cannot be written: nothing more passes."""
        self.cut("the audit ledger is unavailable")

    def _close(self, why: str, record_close: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._ready.done():
            self._ready.set_result(False)
        if self._deadline is not None:
            self._deadline.cancel()
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()
        self.gw.clients.discard(self)
        s = self.session
        if s is not None and not s.closed:
            s.closed = True
            self.gw.sessions.discard(s)
            with contextlib.suppress(LedgerUnavailable):
                s.sink.submit(
                    [
                        s.recorder.event(
                            now_ns(),
                            "session.close",
                            outcome=s.ended or why,
                            stats={
                                "commands": s.recorder.cmd_seq,
                                "chunks": s.recorder.chunk_seq,
                            },
                        )
                    ]
                )
            s.upstream.close()

    def close(self, why: str) -> None:
        """Close from the gateway's side (shutdown)."""
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"ledgergate: {why}")
        self._close(why)
