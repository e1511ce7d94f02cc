"""The HTTPS listener for ``s3`` and ``http`` connections: who is asking, for what.

Owns accepting clients (TLS with the gateway's certificate), the registry of open HTTP
ledger sessions (re-checked and ended like PostgreSQL ones), and a request's admission:
- S3: the request carries an AWS Signature V4 (header or presigned URL) made with an
  access key ledgergate issued; the key names the identity, its expiry and scope, and
  the connection is the one its scope names (else the one whose ``buckets`` hold the
  bucket, else the only ``s3`` connection). The signature is checked with the key's
  secret, with AWS's 15-minute clock-skew rule.
- HTTP APIs: ``/<connection>/<path>`` with the ledgergate token as ``Authorization:
  Bearer`` (or the password of Basic auth); the gateway strips it.
Admissions are cached for a few seconds and dropped when the store's access epoch moves,
so a revoked key is refused at its next request. Refusals are the protocol's own
errors (S3 XML, RFC 9457 problem documents) and ``auth.*`` entries. Never logs or
records a token, a secret or a signature.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import h11

from ledgergate.core.config import HttpConnection, HttpListener, S3Connection
from ledgergate.core.masking.document import DocumentMasker, masker_for_rules
from ledgergate.core.policy.engine import PolicySet, SessionPolicy
from ledgergate.proxy.agent import LegOpener
from ledgergate.proxy.http.admit_s3 import S3Admission
from ledgergate.proxy.http.backend import BackendPool
from ledgergate.proxy.http.objects import ObjectBook
from ledgergate.proxy.http.session import ClientConn, LedgerSession, Refusal
from ledgergate.proxy.http.target import Admitted, HttpTarget, KeyAuth, TokenAuth
from ledgergate.proxy.listener import SessionRegistry
from ledgergate.proxy.review import ReviewDesk
from ledgergate.proxy.sink import LedgerSink, LedgerUnavailable
from ledgergate.wire.http.messages import (
    RequestHead,
    header,
    problem_body,
    unsafe_path,
)
from ledgergate.wire.s3 import sigv4

__all__ = ["Admitted", "HttpGateway", "HttpTarget"]

log = logging.getLogger("ledgergate.http")
now_ns = time.time_ns

# An admission is reused this long at most (and never past the credential's expiry, nor
# past a change of the store's access epoch).
AUTH_CACHE_NS = 5 * 10**9
# Admissions cached at most (the oldest are dropped first).
AUTH_CACHE_MAX = 4096
# Connections the kernel queues before the gateway accepts them.
LISTEN_BACKLOG = 512
XML = b"application/xml"
PROBLEM = b"application/problem+json"


class HttpGateway(S3Admission, SessionRegistry):
    def __init__(
        self,
        *,
        connections: dict[str, S3Connection | HttpConnection],
        held: dict[str, dict[str, str | None]],
        authenticate: TokenAuth,
        authenticate_key: KeyAuth,
        sink: LedgerSink,
        tls: ssl.SSLContext | None,
        listener: HttpListener,
        hostnames: tuple[str, ...],
        policies: Callable[[], PolicySet | None] = lambda: None,
        reviews: ReviewDesk | None = None,
        masking_key: bytes = b"",
        legs: dict[str, LegOpener] | None = None,
    ) -> None:
        self.reviews = reviews
        self.masking_key = masking_key
        self._maskers: dict[int, tuple[SessionPolicy, DocumentMasker]] = {}
        # The policy in force (the PostgreSQL listener's, changed in place when the
        # stored rules change): read at every request, so a change applies at once.
        self.policies = policies
        self.connections = connections
        self.held = held  # connection -> resolved secrets (never logged)
        self.authenticate = authenticate
        self.authenticate_key = authenticate_key
        self.sink = sink
        self.tls = tls
        self.listener = listener
        self.hostnames = tuple(h.lower() for h in hostnames)
        # connections carried by an agent (via:) reach their server through a leg
        legs = legs or {}
        self.pools = {name: BackendPool(c, legs.get(name)) for name, c in connections.items()}
        self.objects = ObjectBook()
        self.sessions: set[LedgerSession] = set()
        self._clients: set[asyncio.Task[None]] = set()
        self._cache: dict[tuple[str, str, str], tuple[int, Admitted, str | None, Any]] = {}
        self.server: asyncio.Server | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> asyncio.Server:
        self.server = await asyncio.start_server(
            self._client,
            host,
            port,
            ssl=self.tls,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
            limit=256 * 1024,
            ssl_handshake_timeout=self.listener.header_timeout if self.tls else None,
        )
        return self.server

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await ClientConn(self, reader, writer).run()
        except Exception:
            log.exception("an HTTP client connection failed")
            with contextlib.suppress(Exception):
                writer.close()
        finally:
            self._clients.discard(task)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def shutdown(self) -> None:
        self.stop_accepting()
        for s in list(self.sessions):
            s.end("the gateway is shutting down")
        for t in list(self._clients):
            t.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        for p in self.pools.values():
            p.close()

    # -- the registry (re-checks, access windows: ``SessionRegistry``) -------------------
    def sessions_ended(self) -> None:
        self._cache.clear()

    def policy_for(self, s: LedgerSession) -> SessionPolicy | None:
        ps = self.policies()
        return None if ps is None else ps.for_session(s.conn_name, s.facts.groups)

    def masker_for(self, s: LedgerSession) -> DocumentMasker | None:
        """The session's response masker (None: no mask rule applies to it)."""
        sp = self.policy_for(s)
        if sp is None or not sp.request_mask:
            return None
        got = self._maskers.get(id(sp))
        if got is not None and got[0] is sp:
            return got[1]
        masker = masker_for_rules(sp.request_mask, self.masking_key)
        if len(self._maskers) > 256:
            self._maskers.clear()
        self._maskers[id(sp)] = (sp, masker)
        return masker

    def access_changed(self) -> None:
        """The store's access epoch moved: admissions are decided again."""
        self._cache.clear()

    # -- admission -------------------------------------------------------------------------
    async def _cached(
        self, kind: str, credential: str, conn: str, fetch: Callable[[], Awaitable[Any]]
    ) -> Any:
        key = (kind, hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest(), conn)
        now = now_ns()
        got = self._cache.get(key)
        if got is not None and now - got[0] < AUTH_CACHE_NS and now < got[1].expires_ns:
            return got[3]
        value = await fetch()
        adm = value[0] if isinstance(value, tuple) else value
        if adm.ok:
            if len(self._cache) >= AUTH_CACHE_MAX:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (now, adm, None, value)
        return value

    async def handle(self, client: ClientConn, head: RequestHead) -> bool:
        """Serve one request; False when the connection must close."""
        from ledgergate.proxy.http.exchange import relay  # the per-request relay

        try:
            target = await self._admit(client, head)
            return await relay(self, client, target)
        except Refusal as r:
            if client.h.their_state is h11.SEND_BODY and client.h.they_are_waiting_for_100_continue:
                r.close = True  # the client holds its body back: end the exchange here
            await client.refuse(r)
            if r.close:
                return False
            return await client.discard_body()
        except LedgerUnavailable:
            await client.refuse(
                Refusal(
                    503, problem_body(503, "Ledger unavailable", _NO_LEDGER), PROBLEM, close=True
                )
            )
            return False

    async def _admit(self, client: ClientConn, head: RequestHead) -> HttpTarget:
        headers = list(head.headers)
        auth = header(headers, b"authorization") or b""
        # An AWS signature (header or presigned URL) is an S3 request; anything else is
        # for an HTTP API connection (a bearer token or Basic auth, or nothing).
        aws = auth[:5].upper() == b"AWS4-" or b"X-Amz-Credential=" in head.query
        try:
            signed = sigv4.parse_request(head.method, head.target, headers) if aws else None
        except sigv4.SigV4Error as e:
            raise self._s3_refusal(
                client,
                head,
                400 if e.code != "AccessDenied" else 403,
                e.code,
                e.message,
                None,
                None,
            ) from None
        if signed is not None:
            return await self._admit_s3(client, head, signed)
        if auth.startswith(b"AWS ") or b"AWSAccessKeyId=" in head.query:
            raise self._s3_refusal(
                client,
                head,
                400,
                "InvalidRequest",
                "ledgergate accepts AWS Signature Version 4 only (signature_version='s3v4')",
                None,
                None,
            )
        path = head.path
        name = path[1:].split(b"/", 1)[0].decode("latin-1") if path.startswith(b"/") else ""
        conn = self.connections.get(name)
        if conn is None or conn.type != "http":
            if conn is not None or header(headers, b"x-amz-content-sha256") is not None:
                raise self._s3_refusal(
                    client,
                    head,
                    403,
                    "AccessDenied",
                    "ledgergate accepts only requests signed with an access key it issued",
                    None,
                    None,
                )
            self.record_reject(client, f"no HTTP connection named {name!r}", 404)
            raise Refusal(
                404,
                problem_body(
                    404,
                    "Unknown connection",
                    f"no HTTP connection named {name!r} (call /<connection>/<path>)",
                ),
                PROBLEM,
                reason="unknown connection",
            )
        return await self._admit_http(client, head, conn)

    async def _admit_http(
        self, client: ClientConn, head: RequestHead, conn: HttpConnection
    ) -> HttpTarget:
        headers = list(head.headers)
        token = _bearer(header(headers, b"authorization"))

        def refuse(
            status: int,
            title: str,
            detail: str,
            kind: str,
            ident: Any = None,
            tok: str | None = None,
        ) -> Refusal:
            rec = client.base_without_session(conn.name, ident)
            with contextlib.suppress(LedgerUnavailable):
                self.sink.submit(
                    [
                        rec.event(
                            now_ns(),
                            kind,
                            reason=detail,
                            token_id=tok,
                            request={"method": head.method.decode("latin-1"), "protocol": "http"},
                            tls=client.tls,
                            outcome="refused",
                        )
                    ]
                )
            r = Refusal(status, problem_body(status, title, detail), PROBLEM, reason=detail)
            return r

        if token is None:
            raise refuse(
                401,
                "Unauthorized",
                "a ledgergate token is required (Authorization: Bearer)",
                "auth.fail",
            )
        if self.tls is None and not self.listener.allow_plaintext:
            raise refuse(
                403, "Forbidden", "tokens are refused over plaintext HTTP; use https", "auth.fail"
            )
        adm = await self._cached(
            "token", token, conn.name, lambda: self.authenticate(token, conn.name)
        )
        if not adm.ok:
            if adm.denied:
                raise refuse(
                    403,
                    "Forbidden",
                    f"ledgergate: {adm.reason}",
                    "auth.denied",
                    adm.identity,
                    adm.token_id,
                )
            raise refuse(
                401,
                "Unauthorized",
                f"ledgergate: {adm.reason}",
                "auth.fail",
                adm.identity,
                adm.token_id,
            )
        rest = head.target[len(conn.name) + 1 :] or b"/"
        unsafe = unsafe_path(rest.split(b"?", 1)[0])
        if unsafe is not None:
            raise refuse(400, "Bad Request", f"refused: {unsafe}", "session.reject")
        session = await self._session(client, adm, conn.name)
        if not rest.startswith(b"/"):
            rest = b"/" + rest
        return HttpTarget("http", conn, session, head, rest=rest)

    async def _session(self, client: ClientConn, adm: Admitted, conn_name: str) -> LedgerSession:
        session, new = client.session_for(adm, conn_name, self.connections[conn_name].type)
        if new:
            rec = session.recorder
            if adm.window is not None and self.reviews is not None:
                self.reviews.used(adm.window[0], session.session_id)
            t = now_ns()
            await self.sink.commit(
                [
                    rec.event(
                        t,
                        "auth.ok",
                        token_id=adm.token_id,
                        tls=client.tls,
                        via=adm.via,
                        grant=adm.grant,
                        expires_ns=adm.expires_ns,
                        **({"review": {"id": adm.window[0]}} if adm.window else {}),
                    ),
                    rec.event(
                        t,
                        "session.open",
                        client={
                            "protocol": self.connections[conn_name].type,
                            "connection_id": client.conn_id,
                        },
                        tls=client.tls,
                        recording=self.connections[conn_name].recording,
                    ),
                ]
            )
        why = session.check(now_ns())
        if why is not None:
            client.close_session(f"session ended: {why}")
            raise Refusal(
                403,
                problem_body(403, "Forbidden", f"ledgergate: session ended: {why}"),
                PROBLEM,
                close=True,
            )
        return session

    def record_reject(self, client: ClientConn, message: str, status: int) -> None:
        rec = client.base_without_session(None, None)
        with contextlib.suppress(LedgerUnavailable):
            self.sink.submit(
                [
                    rec.event(
                        now_ns(), "session.reject", reason=message, status=status, tls=client.tls
                    )
                ]
            )


_NO_LEDGER = "the audit ledger is unavailable; refusing traffic until it can be written"


def _bearer(value: bytes | None) -> str | None:
    """The token of ``Bearer <token>`` or the password of ``Basic user:token``."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(b" ")
    rest = rest.strip()
    if scheme.lower() == b"bearer" and rest:
        return rest.decode("latin-1")
    if scheme.lower() == b"basic" and rest:
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None
