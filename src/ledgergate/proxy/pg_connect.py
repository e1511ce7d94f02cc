"""Opening a PostgreSQL session: the client and backend handshakes (a task; awaits are fine).

Owns one client connection from accept until its relay starts: runs the sans-IO
handshakes (``wire.pg.handshake``) and TLS on either side, checks the token, opens the
backend with the held credential, reads the catalog snapshot a masked session needs,
registers the session's cancel key, records the outcome, then starts the session's relay
(``PgSession.start_relay``). Functions over the ``PgSession`` they fill in. Must not
parse protocol bytes itself, must not take part in the relay once it has started, and
must never put the backend credential in an error, a log line or a ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import ssl
import time
from typing import TYPE_CHECKING, Any

from ledgergate.core.config import Connection, Credentials
from ledgergate.core.identity import SessionFacts
from ledgergate.core.recording import SessionRecorder
from ledgergate.proxy.agent import AgentUnavailable
from ledgergate.proxy.pg_session import _guard, _Side
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.pg import catalog as catalog_codec
from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Authenticate,
    BackendReady,
    CancelBackend,
    ClientData,
    Close,
    Fail,
    SendToClient,
    SendToServer,
    ServerData,
    StartClientTls,
    StartServerTls,
    TlsStarted,
)
from ledgergate.wire.pg.handshake import BackendHandshake, FrontendHandshake
from ledgergate.wire.pg.results import ResultShaper

if TYPE_CHECKING:
    from ledgergate.proxy.pg_session import PgSession

__all__ = ["run_session"]

log = logging.getLogger("ledgergate.pg")
now_ns = time.time_ns


class _Registration:
    """What a CancelRequest needs to reach the right backend."""

    __slots__ = ("backend_secret", "conn", "session")

    def __init__(self, conn: Connection, backend_secret: bytes, session: PgSession) -> None:
        self.conn = conn
        self.backend_secret = backend_secret
        self.session = session


async def run_session(session: PgSession) -> None:
    """One client connection's task: the handshake, then the relay until it ends."""
    ct = session.c.transport
    assert ct is not None
    peer = ct.get_extra_info("peername") or ("?", 0)
    session.source = {"ip": str(peer[0]), "port": int(peer[1])}
    try:
        async with asyncio.timeout(session.gw.handshake_timeout):
            ok = await _handshake(session)
    except TimeoutError:
        _reject(
            session,
            "handshake timed out",
            m.error_response("08P01", "ledgergate: the startup handshake took too long"),
        )
        ok = False
    except (ConnectionError, OSError) as e:
        _reject(session, f"client went away during the handshake ({type(e).__name__})", b"")
        ok = False
    except LedgerUnavailable:
        _reject_no_ledger(session)
        ok = False
    if ok:
        await session.done.wait()


def _reject(session: PgSession, reason: str, to_client: bytes, **fields: Any) -> None:
    ct = session.c.transport
    if to_client and ct is not None and not ct.is_closing():
        ct.write(to_client)
    if ct is not None:
        ct.close()
    if session.s is not None and session.s.transport is not None:
        session.s.transport.close()
    base = _base(session)
    base.update(fields)
    with contextlib.suppress(LedgerUnavailable):
        session.gw.sink.submit(
            [SessionRecorder(base, "metadata").event(now_ns(), "session.reject", reason=reason)]
        )
    log.info("session %s rejected: %s", session.session_id, reason)


def _reject_no_ledger(session: PgSession) -> None:
    ct = session.c.transport
    if ct is not None and not ct.is_closing():
        ct.write(
            m.error_response(
                "58000",
                "ledgergate: the audit ledger is unavailable; "
                "refusing traffic until it can be written",
            )
        )
        ct.close()
    log.error("session %s refused: ledger unavailable", session.session_id)


def _base(session: PgSession) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "connection": session.conn.name if session.conn else None,
        "identity": session.identity,
        "source": session.source,
    }


async def _handshake(session: PgSession) -> bool:
    gw = session.gw
    front = FrontendHandshake(
        tls_available=gw.tls is not None,
        allow_plaintext=gw.allow_plaintext,
        connections=gw.connections,
    )
    auth: Authenticate | None = None
    while auth is None:
        data = await session.c.read()
        actions = front.feed(ClientData(data, now_ns()))
        for a in actions:
            match a:
                case SendToClient(data=d):
                    assert session.c.transport is not None
                    session.c.transport.write(d)
                case StartClientTls():
                    await _client_tls(session)
                    for b in front.feed(TlsStarted()):
                        if isinstance(b, SendToClient):
                            assert session.c.transport is not None
                            session.c.transport.write(b.data)
                        elif isinstance(b, Fail):
                            _reject(session, b.reason, b.to_client)
                            return False
                        elif isinstance(b, Authenticate):
                            auth = b
                case CancelBackend(pid=pid, secret=sec):
                    await gw.cancel(pid, sec, session.source)
                    assert session.c.transport is not None
                    session.c.transport.close()
                    return False
                case Close():
                    assert session.c.transport is not None
                    session.c.transport.close()
                    return False
                case Fail(reason=r, to_client=tc):
                    conn_name = front.connection
                    session.conn = gw.connections.get(conn_name or "")
                    _reject(session, r, tc, claimed_user=front.user, requested=conn_name)
                    return False
                case Authenticate():
                    auth = a
                case _:
                    raise AssertionError(f"unexpected handshake action {a!r}")
    session.conn = gw.connections[front.connection or ""]
    user = front.user or ""
    tls = _tls_info(session.c.transport)
    try:
        token = auth.password.decode("utf-8")
    except UnicodeDecodeError:
        token = ""
    result = await gw.authenticate(token, session.conn.name)
    if result.denied:
        session.identity = result.identity
        reason = result.reason or "not allowed"
        await gw.sink.commit(
            [
                SessionRecorder(_base(session), "metadata").event(
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
        _reject_quiet(
            session,
            m.error_response(
                "42501",
                f'ledgergate: identity "{who}" may not use connection '
                f'"{session.conn.name}": {reason}',
            ),
        )
        return False
    if not result.ok:
        session.identity = result.identity or {"kind": "unknown", "subject": user, "groups": []}
        await gw.sink.commit(
            [
                SessionRecorder(_base(session), "metadata").event(
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
        _reject_quiet(
            session, m.error_response("28P01", f'password authentication failed for user "{user}"')
        )
        return False
    session.identity = result.identity
    ident = result.identity or {}
    started = now_ns()
    session.facts = SessionFacts(
        session_id=session.session_id,
        identity=str(ident.get("subject", "")),
        groups=tuple(str(g) for g in ident.get("groups", ())),
        connection=session.conn.name,
        token_id=result.token_id,
        started_ns=started,
        expires_ns=result.expires_ns,
        max_session_ns=session.conn.max_session_ns,
    )
    session.deadline_ns, session.deadline_reason = session.facts.deadline()
    if result.window is not None and result.window[1] < session.deadline_ns:
        session.deadline_ns = result.window[1]
        session.deadline_reason = f"the access window of review {result.window[0]} closed"
    base = _base(session)
    if gw.policies is not None:
        session.policy = gw.policies.for_session(session.conn.name, session.facts.groups)
        if session.policy is not None:
            # Every entry of the session names the policy it was decided under.
            base["policy"] = session.policy.version
            if session.policy.guarded:
                session.relay.guard = _guard(session.policy)
                session.relay.refusal_tag = secrets.token_hex(6)
    session.recorder = SessionRecorder(base, session.conn.recording)
    await gw.sink.commit(
        [
            session.recorder.event(
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
        session.window_id = result.window[0]
        gw.reviews.used(result.window[0], session.session_id)
    ready = await _backend(session, auth)
    if ready is None:
        return False
    if session.policy is not None and session.policy.mask:
        try:
            catalog = await gw.catalog(session.conn, functools.partial(_catalog_query, session))
        except (ConnectionError, TimeoutError, ValueError) as e:
            _fail_backend(session, f"the catalog for masking could not be read ({e})")
            return False
        planner = session.planner(session.policy, catalog)
        session.relay.set_shaper(ResultShaper(planner.plan, planner.plan_copy))
    # Our own cancel secret, as long as the backend's (4 bytes in 3.0, longer in 3.2).
    secret = secrets.token_bytes(max(4, len(ready.secret)))
    while gw.workers > 1 and gw.cancel_owner(ready.pid, secret) != gw.worker:
        # drawn until it names this worker, for a cancel that reaches another one
        secret = secrets.token_bytes(len(secret))
    session.registration = (ready.pid, secret)
    gw.cancel_registry[(ready.pid, secret)] = _Registration(session.conn, ready.secret, session)
    backend_tls = (
        session.s is not None
        and session.s.transport is not None
        and session.s.transport.get_extra_info("ssl_object") is not None
    )
    app_name = (auth.startup.get(b"application_name") or b"").decode("utf-8", "replace")
    await gw.sink.commit(
        [
            session.recorder.event(
                now_ns(),
                "session.open",
                client={
                    "application_name": app_name,
                    "user": user,
                    "database": session.conn.name,
                    "protocol": f"{auth.startup.major}.{auth.startup.minor}",
                },
                tls=tls,
                backend={"pid": ready.pid, "tls": backend_tls},
                recording=session.conn.recording,
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
    session.start_relay(greet, front.leftover())
    session.apply_policy(gw.policies)  # if it changed during the handshake
    return True


async def _catalog_query(session: PgSession) -> dict[tuple[int, int], str]:
    """The catalog snapshot, read on this session's backend connection before the
    client's first byte is relayed (so nothing else is in flight on it)."""
    side = session.s
    assert side is not None and side.transport is not None and session.conn is not None
    side.transport.write(catalog_codec.query())
    reader = catalog_codec.CatalogReader()
    async with asyncio.timeout(session.conn.connect_timeout):
        while True:
            got = reader.feed(await side.read())
            if got is not None:
                return got


def _reject_quiet(session: PgSession, to_client: bytes) -> None:
    ct = session.c.transport
    if ct is not None:
        ct.write(to_client)
        ct.close()


def _tls_info(t: asyncio.Transport | None) -> dict[str, Any] | None:
    if t is None:
        return None
    so = t.get_extra_info("ssl_object")
    if so is None:
        return None
    c = so.cipher()
    return {"version": so.version(), "cipher": c[0] if c else None}


async def _client_tls(session: PgSession) -> None:
    loop = asyncio.get_running_loop()
    assert session.gw.tls is not None and session.c.transport is not None
    session.c.relaying = False
    new = await loop.start_tls(
        session.c.transport,
        session.c,
        session.gw.tls,
        server_side=True,
        ssl_handshake_timeout=session.gw.handshake_timeout,
    )
    if new is None:
        raise ConnectionResetError("TLS handshake failed")
    session.c.transport = new


async def _backend(session: PgSession, auth: Authenticate) -> BackendReady | None:
    conn = session.conn
    assert conn is not None and session.recorder is not None
    loop = asyncio.get_running_loop()
    try:
        password = session.gw.password_for(conn)
    except Exception:
        _fail_backend(session, "the connection's credential cannot be resolved")
        return None
    try:
        async with asyncio.timeout(conn.connect_timeout):
            if conn.via is not None and session.gw.agents is not None:
                sock = await session.gw.agents.open_leg(conn.name, auth=conn.agent_login)
                _, side = await loop.create_connection(lambda: _Side(session, False), sock=sock)
            else:
                _, side = await loop.create_connection(
                    lambda: _Side(session, False), conn.host, conn.port
                )
    except AgentUnavailable as e:
        _fail_backend(session, f"could not reach the server: {e}")
        return None
    except (OSError, TimeoutError) as e:
        _fail_backend(session, f"could not connect to the server ({type(e).__name__})")
        return None
    session.s = side
    # With ``credentials: agent:…`` the agent logs in (TLS and authentication run on
    # its side, inside the leg that is TLS to the gateway): the gateway sends the
    # startup in clear through the leg and the agent answers as a trusting server would.
    agent_login = conn.agent_login
    hs = BackendHandshake(
        user=conn.credentials.user if isinstance(conn.credentials, Credentials) else "",
        password=password,
        database=conn.database,
        client=auth.startup,
        sslmode="disable" if agent_login else conn.sslmode,
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
                            session.gw.backend_tls(conn),
                            server_side=False,
                            server_hostname=conn.host if conn.sslmode == "verify-full" else None,
                            ssl_handshake_timeout=conn.connect_timeout,
                        )
                    except (OSError, ssl.SSLError) as e:
                        _fail_backend(session, f"TLS to the server failed ({type(e).__name__})")
                        return None
                    assert new is not None
                    side.transport = new
                    pending = hs.feed(TlsStarted())
                    break
                case BackendReady():
                    return a
                case Fail(reason=r, to_client=tc):
                    _fail_backend(session, r, tc)
                    return None
                case _:
                    raise AssertionError(f"unexpected backend action {a!r}")
        else:
            try:
                async with asyncio.timeout(conn.connect_timeout):
                    data = await side.read()
            except (ConnectionError, TimeoutError):
                _fail_backend(session, "the server closed the connection during startup")
                return None
            pending = hs.feed(ServerData(data, now_ns()))


def _fail_backend(session: PgSession, reason: str, to_client: bytes = b"") -> None:
    assert session.conn is not None
    if not to_client:
        to_client = m.error_response(
            "08006", f'ledgergate: connection "{session.conn.name}" is unavailable: {reason}'
        )
    _reject(session, f"backend unavailable: {reason}", to_client)
