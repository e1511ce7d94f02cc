"""The gateway's connections to Kafka brokers, authenticated with the held credential.

Owns dialling a broker (TCP, TLS as the connection says), the gateway's own handshake
(ApiVersions, then SaslHandshake and SaslAuthenticate with SCRAM-SHA-512/256 or PLAIN),
and afterwards handing every response frame to the client connection it serves, with
flow control both ways. The handshake uses correlation ids of its own; once it is done,
requests pass with the client's. Never logs or reports the held password; a broker's
refusal is reported by its error code and message only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from ledgergate.core.config import KafkaConnection
from ledgergate.proxy.agent import AgentUnavailable, LegOpener
from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka.frames import FrameError, FrameReader, frame
from ledgergate.wire.scram import ScramClient, ScramError

__all__ = ["BackendError", "BackendLink", "dial", "probe_versions"]

# The gateway's own handshake requests name it to the brokers (their request logs).
CLIENT_ID = "ledgergate"
# Versions of the gateway's own handshake requests: ApiVersions v3 (flexible, names the
# client software) and SaslAuthenticate v2 (session lifetime, flexible).
HANDSHAKE_API_VERSIONS = 3
HANDSHAKE_SASL_HANDSHAKE = 1
HANDSHAKE_SASL_AUTHENTICATE = 2
# A broker must finish the gateway's handshake within this long.
HANDSHAKE_TIMEOUT_S = 15.0


class BackendError(RuntimeError):
    """A broker could not be reached or refused the gateway (message safe to show)."""


def _tls_context(conn: KafkaConnection) -> ssl.SSLContext | None:
    if not conn.tls:
        return None
    ctx = ssl.create_default_context(cafile=conn.ca_file)
    if not conn.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class BackendLink(asyncio.Protocol):
    """One connection to one broker. During the handshake, frames go to ``_replies``;
    after it, to ``on_frame`` (the client connection's response path)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.on_frame: Callable[[memoryview], None] | None = None
        self.on_lost: Callable[[str], None] | None = None
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        self.versions: dict[int, tuple[int, int]] = {}
        self.lifetime_ms = 0
        self.closed = False
        self._replies: deque[bytes] = deque()
        self._reply_ready: asyncio.Event = asyncio.Event()
        self._lost_why: str | None = None
        self._corr = 0

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FrameError as e:
            self._lost(f"broker sent a bad frame: {e}")
            return
        on_frame = self.on_frame
        if on_frame is None:
            for f in frames:
                self._replies.append(bytes(f))
            self._reply_ready.set()
            return
        for f in frames:
            if self.closed:
                return
            on_frame(f)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(
            "the broker closed the connection" if exc is None else f"broker connection lost: {exc}"
        )

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        if self.on_resume is not None:
            self.on_resume()

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._lost_why = why
        self._reply_ready.set()
        if self.transport is not None:
            self.transport.close()
        if self.on_lost is not None:
            self.on_lost(why)

    # -- relaying --------------------------------------------------------------------------
    def send(self, *parts: bytes | memoryview) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.on_lost = None
        self._lost("closed by the gateway")

    # -- the gateway's own requests (handshake) --------------------------------------------
    async def call(self, api_key: int, version: int, msg: dict[str, Any]) -> dict[str, Any]:
        self._corr += 1
        corr = self._corr
        body = km.encode_request_header(api_key, version, corr, CLIENT_ID) + km.encode_request(
            api_key, version, msg
        )
        self.send(frame(body))
        while not self._replies:
            if self.closed:
                raise BackendError(f"{self.name}: {self._lost_why}")
            self._reply_ready.clear()
            await self._reply_ready.wait()
        reply = self._replies.popleft()
        got = int.from_bytes(reply[:4], "big", signed=True)
        if got != corr:
            raise BackendError(f"{self.name}: broker answered correlation id {got}, not {corr}")
        hs = km.response_header_size(api_key, version, reply)
        return km.decode_response(api_key, version, memoryview(reply)[hs:])

    async def handshake(self, conn: KafkaConnection, held: dict[str, str | None]) -> None:
        r = await self.call(
            km.ApiKey.API_VERSIONS,
            HANDSHAKE_API_VERSIONS,
            {"client_software_name": "ledgergate", "client_software_version": "1"},
        )
        if r["error_code"] != 0:
            raise BackendError(
                f"{self.name}: ApiVersions failed: {km.error_name(int(r['error_code']))}"
            )
        self.versions = {
            int(a["api_key"]): (int(a["min_version"]), int(a["max_version"])) for a in r["api_keys"]
        }
        cred = conn.credentials
        if cred is None:
            return
        r = await self.call(
            km.ApiKey.SASL_HANDSHAKE, HANDSHAKE_SASL_HANDSHAKE, {"mechanism": cred.mechanism}
        )
        if r["error_code"] != 0:
            raise BackendError(
                f"{self.name}: the broker does not offer {cred.mechanism} "
                f"(it offers {', '.join(r['mechanisms'])})"
            )
        password = held.get("password") or ""
        user = held.get("user") or cred.user
        if cred.mechanism == "PLAIN":
            await self._authenticate(f"\0{user}\0{password}".encode())
            return
        digest = "sha512" if cred.mechanism == "SCRAM-SHA-512" else "sha256"
        sc = ScramClient(password, os.urandom(18), user=user, digest=digest)
        server_first = await self._authenticate(sc.first())
        try:
            final = sc.final(server_first)
        except ScramError as e:
            raise BackendError(f"{self.name}: SCRAM exchange failed: {e}") from None
        server_final = await self._authenticate(final)
        try:
            sc.verify(server_final)
        except ScramError as e:
            raise BackendError(f"{self.name}: SCRAM exchange failed: {e}") from None

    async def _authenticate(self, data: bytes) -> bytes:
        r = await self.call(
            km.ApiKey.SASL_AUTHENTICATE, HANDSHAKE_SASL_AUTHENTICATE, {"auth_bytes": data}
        )
        if r["error_code"] != 0:
            raise BackendError(
                f"{self.name}: the broker refused the gateway's credential: "
                f"{km.error_name(int(r['error_code']))}"
                + (f" ({r['error_message']})" if r.get("error_message") else "")
            )
        self.lifetime_ms = int(r.get("session_lifetime_ms", 0) or 0)
        return bytes(r["auth_bytes"])


async def dial(
    conn: KafkaConnection,
    held: dict[str, str | None],
    host: str,
    port: int,
    *,
    auth: bool = True,
    leg: LegOpener | None = None,
) -> BackendLink:
    """A handshaken connection to the broker at host:port (BackendError if not); through
    the connection's agent when ``leg`` is given (the agent must carry that address)."""
    loop = asyncio.get_running_loop()
    name = f"broker {host}:{port}"
    try:
        async with asyncio.timeout(conn.connect_timeout):
            where: dict[str, Any] = (
                {"sock": await leg(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")}
                if leg is not None
                else {"host": host, "port": port}
            )
            _, link = await loop.create_connection(
                lambda: BackendLink(name),
                ssl=_tls_context(conn),
                server_hostname=host if conn.tls else None,
                **where,
            )
    except AgentUnavailable as e:
        raise BackendError(f"{name} is unreachable: {e}") from None
    except (OSError, TimeoutError, ssl.SSLError) as e:
        raise BackendError(f"{name} is unreachable: {type(e).__name__}: {e}") from None
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            if auth:
                await link.handshake(conn, held)
            else:
                await link.handshake(conn.model_copy(update={"credentials": None}), held)
    except TimeoutError:
        link.close()
        raise BackendError(
            f"{name} did not finish the handshake in {HANDSHAKE_TIMEOUT_S:.0f}s"
        ) from None
    except (BackendError, km.KafkaCodecError) as e:
        link.close()
        raise BackendError(str(e)) from None
    return link


async def probe_versions(
    conn: KafkaConnection, held: dict[str, str | None], leg: LegOpener | None = None
) -> dict[int, tuple[int, int]]:
    """The API versions of the first bootstrap broker that answers (no SASL needed)."""
    errors: list[str] = []
    for host, port in conn.bootstrap_addresses:
        try:
            link = await dial(conn, held, host, port, auth=False, leg=leg)
        except BackendError as e:
            errors.append(str(e))
            continue
        with contextlib.suppress(Exception):
            link.close()
        return link.versions
    raise BackendError("; ".join(errors) or "no bootstrap broker")
