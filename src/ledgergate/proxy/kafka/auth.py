"""A Kafka client's authentication to the gateway (SASL, server side).

Owns the pre-authentication exchange of a client connection: SaslHandshake (PLAIN or
OAUTHBEARER offered), SaslAuthenticate checked against the access service (a
ledgergate token, or an IdP JWT with OAUTHBEARER), the backend link dialled once the
client is known, the ledger session opened (``auth.ok``, ``session.open``), refusals
recorded (``auth.fail``/``auth.denied``) and answered with SASL_AUTHENTICATION_FAILED,
and KIP-368 re-authentication (the same identity and mechanism, a fresh credential,
the session's deadline moved). ``session_lifetime_ms`` is the session's remaining life.
Never logs or records a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ledgergate.core.identity import SessionFacts
from ledgergate.core.recording_kafka import KafkaRecorder
from ledgergate.proxy.admission import Admitted
from ledgergate.proxy.kafka.apis import K, api_name
from ledgergate.proxy.kafka.backend import BackendError
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka.sasl import MECHANISMS, SaslError, read_oauthbearer, read_plain

if TYPE_CHECKING:
    from ledgergate.proxy.kafka.client import KafkaClientConn, Slot

__all__ = ["KafkaSession", "SaslSide"]

now_ns = time.time_ns
# Kafka error codes of the SASL exchange.
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58


class KafkaSession:
    """The ledger's view of one authenticated client connection."""

    __slots__ = (
        "client",
        "closed",
        "conn_name",
        "deadline_ns",
        "deadline_reason",
        "ended",
        "facts",
        "identity",
        "recorder",
        "session_id",
        "token_id",
        "window_id",
    )

    def __init__(
        self,
        client: KafkaClientConn,
        session_id: str,
        conn_name: str,
        adm: Admitted,
        facts: SessionFacts,
        recorder: KafkaRecorder,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.conn_name = conn_name
        self.token_id = adm.token_id
        self.identity = dict(adm.identity or {})
        self.facts = facts
        self.recorder = recorder
        self.window_id = adm.window[0] if adm.window else None
        self.deadline_ns, self.deadline_reason = facts.deadline()
        if adm.window is not None and adm.window[1] < self.deadline_ns:
            self.deadline_ns = adm.window[1]
            self.deadline_reason = f"the access window of review {adm.window[0]} closed"
        self.ended: str | None = None
        self.closed = False

    def end(self, why: str) -> None:
        if self.ended is None and not self.closed:
            self.ended = why
            self.client.cut(why)


class SaslSide:
    """The SASL side of one client connection (``c``)."""

    __slots__ = ("c",)

    def __init__(self, c: KafkaClientConn) -> None:
        self.c = c

    def request(self, h: km.RequestHeader, f: memoryview) -> None:
        key = h.api_key
        if key == K.API_VERSIONS:
            self.c.traffic.api_versions(h, f)
        elif key == K.SASL_HANDSHAKE:
            self._sasl_handshake(h, f)
        elif key == K.SASL_AUTHENTICATE:
            if not self.c._handshaken:
                self.c.reject("SaslAuthenticate before SaslHandshake")
                return
            self.c._handshaken = False
            body = km.decode_request(key, h.api_version, f[h.size :])
            self.c._auth_busy = True
            self.c.pause("auth")
            self.c.spawn(self._sasl_authenticate(h, bytes(body["auth_bytes"])))
        else:
            self.c.reject(
                f"{api_name(key)} before authentication: authenticate with SASL "
                "(PLAIN or OAUTHBEARER, with a ledgergate token) first"
            )

    def _sasl_handshake(self, h: km.RequestHeader, f: memoryview) -> None:
        slot = self.c.local(h)
        try:
            body = km.decode_request(h.api_key, h.api_version, f[h.size :])
        except km.KafkaCodecError as e:
            self.c.reject(f"malformed SaslHandshake: {e}")
            return
        mech = str(body.get("mechanism", ""))
        if h.api_version < 1:
            self.c.reject("SaslHandshake v0 (SASL without SaslAuthenticate) is not supported")
            return
        if mech not in MECHANISMS:
            self.c.answer(
                slot, {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": list(MECHANISMS)}
            )
            self._fail_soon(f"SASL mechanism {mech!r} is not offered (use PLAIN or OAUTHBEARER)")
            return
        if self.c.session is not None and mech != self.c.mechanism:  # KIP-368: the same one
            self.c.answer(slot, {"error_code": ILLEGAL_SASL_STATE, "mechanisms": list(MECHANISMS)})
            self._fail_soon("re-authentication must use the mechanism of the first")
            return
        self.c.mechanism = mech
        self.c._handshaken = True
        self.c.answer(slot, {"error_code": 0, "mechanisms": list(MECHANISMS)})

    async def _sasl_authenticate(self, h: km.RequestHeader, auth_bytes: bytes) -> None:
        slot = self.c.local(h)
        try:
            await self._authenticate(slot, auth_bytes)
        finally:
            self.c._auth_busy = False
            self.c.resume("auth")
            early, self.c._early = self.c._early, deque()
            for f in early:
                if self.c.closed:
                    break
                self.c.request(f)

    async def _authenticate(self, slot: Slot, auth_bytes: bytes) -> None:
        mech = self.c.mechanism
        try:
            hello = (
                read_oauthbearer(auth_bytes) if mech == "OAUTHBEARER" else read_plain(auth_bytes)
            )
        except SaslError as e:
            self._auth_failed(slot, str(e), None)
            return
        if self.c.tls is None and not self.c.gw.listener.allow_plaintext:
            self._auth_failed(
                slot, "tokens are refused over plaintext; connect with TLS (SASL_SSL)", None
            )
            return
        conn = self.c.cluster.conn
        adm = await self.c.gw.authenticate(hello.credential, conn.name)
        if self.c.closed:
            return
        if not adm.ok:
            self._auth_failed(slot, f"ledgergate: {adm.reason}", adm, denied=adm.denied)
            return
        if self.c.session is not None:
            # KIP-368 re-authentication: the same identity, a fresh credential.
            if (adm.identity or {}).get("subject") != self.c.session.identity.get("subject"):
                self._auth_failed(slot, "re-authentication must be as the same identity", adm)
                return
            self._reauthenticated(adm)
            self.c.answer(slot, self._auth_ok(adm))
            return
        try:
            link = await self.c.cluster.dial(self.c.node)
        except BackendError as e:
            self._auth_failed(slot, f"ledgergate: the broker is unreachable ({e})", None)
            return
        if self.c.closed:
            link.close()
            return
        self.c.link = link
        link.on_frame = self.c.response
        link.on_lost = self.c._backend_lost
        link.on_pause = lambda: self.c.pause("backend")
        link.on_resume = lambda: self.c.resume("backend")
        try:
            await self._open_session(adm, hello.user)
        except LedgerUnavailable:
            self._auth_failed(slot, "the audit ledger is unavailable", None)
            return
        if self.c._timer is not None:
            self.c._timer.cancel()
            self.c._timer = None
        self.c.answer(slot, self._auth_ok(adm))

    def _auth_ok(self, adm: Admitted) -> dict[str, Any]:
        assert self.c.session is not None
        left_ms = max(0, (self.c.session.deadline_ns - now_ns()) // 1_000_000)
        return {
            "error_code": 0,
            "error_message": None,
            "auth_bytes": b"",
            "session_lifetime_ms": left_ms,
        }

    def _auth_failed(
        self, slot: Slot, reason: str, adm: Admitted | None, *, denied: bool = False
    ) -> None:
        t = now_ns()
        token_id = adm.token_id if adm else None
        repeats = self.c.gw.refusals.note((self.c.source["ip"], reason, token_id), t)
        if repeats is not None:
            rec = self.c.base_without_session(
                self.c.cluster.conn.name, adm.identity if adm else None
            )
            with contextlib.suppress(LedgerUnavailable):
                self.c.gw.sink.submit(
                    [
                        rec.event(
                            t,
                            "auth.denied" if denied else "auth.fail",
                            reason=reason,
                            token_id=token_id,
                            request={"protocol": "kafka", "mechanism": self.c.mechanism},
                            tls=self.c.tls,
                            outcome="refused",
                            **({"repeats": repeats} if repeats else {}),
                        )
                    ]
                )
        self.c.answer(
            slot,
            {
                "error_code": SASL_AUTHENTICATION_FAILED,
                "error_message": reason,
                "auth_bytes": b"",
                "session_lifetime_ms": 0,
            },
        )
        self._fail_soon(reason)

    def _fail_soon(self, why: str) -> None:
        """Close once the refusal has been written (the client reads it first)."""
        asyncio.get_running_loop().call_soon(self.c.close, why, False)

    async def _open_session(self, adm: Admitted, user: str) -> None:
        conn = self.c.cluster.conn
        ident = dict(adm.identity or {})
        sid = f"s_{time.time_ns() // 1000:x}{secrets.token_hex(5)}"
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
            "source": self.c.source,
        }
        rec = KafkaRecorder(base, conn.recording)
        s = KafkaSession(self.c, sid, conn.name, adm, facts, rec)
        if adm.window is not None and self.c.gw.reviews is not None:
            self.c.gw.reviews.used(adm.window[0], sid)
        await self.c.gw.sink.commit(
            [
                rec.event(
                    started,
                    "auth.ok",
                    token_id=adm.token_id,
                    tls=self.c.tls,
                    via=adm.via,
                    grant=adm.grant,
                    expires_ns=adm.expires_ns,
                    **({"review": {"id": adm.window[0]}} if adm.window else {}),
                ),
                rec.event(
                    started,
                    "session.open",
                    client={
                        "protocol": "kafka",
                        "connection_id": self.c.conn_id,
                        "user": user,
                        "mechanism": self.c.mechanism,
                        "broker": self.c.node,
                    },
                    tls=self.c.tls,
                    recording=conn.recording,
                ),
            ]
        )
        self.c.session = s
        self.c.gw.sessions.add(s)
        self.c._arm_deadline()

    def _reauthenticated(self, adm: Admitted) -> None:
        s = self.c.session
        assert s is not None
        s.token_id = adm.token_id
        s.facts = SessionFacts(
            session_id=s.session_id,
            identity=s.facts.identity,
            groups=tuple(str(g) for g in (adm.identity or {}).get("groups", ())),
            connection=s.conn_name,
            token_id=adm.token_id,
            started_ns=s.facts.started_ns,
            expires_ns=adm.expires_ns,
            max_session_ns=s.facts.max_session_ns,
        )
        s.deadline_ns, s.deadline_reason = s.facts.deadline()
        self.c._arm_deadline()
        with contextlib.suppress(LedgerUnavailable):
            self.c.gw.sink.submit(
                [
                    s.recorder.event(
                        now_ns(),
                        "auth.ok",
                        token_id=adm.token_id,
                        via=adm.via,
                        reauthenticated=True,
                        expires_ns=adm.expires_ns,
                    )
                ]
            )
