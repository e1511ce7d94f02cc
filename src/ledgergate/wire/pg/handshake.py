"""The two PostgreSQL startup handshakes the gateway runs, as sans-IO state machines.

``FrontendHandshake`` is the gateway acting as a server towards the client:
  AWAIT_STARTUP --SSLRequest--> (answer 'S' + StartClientTls, or 'N') --> AWAIT_STARTUP
  AWAIT_STARTUP --GSSENCRequest--> answer 'N' --> AWAIT_STARTUP
  AWAIT_STARTUP --CancelRequest--> CancelBackend, Close --> DONE
  AWAIT_STARTUP --StartupMessage--> AuthenticationCleartextPassword --> AWAIT_PASSWORD
  AWAIT_PASSWORD --PasswordMessage--> Authenticate --> AUTHENTICATING (the shell decides)
Cleartext passwords are asked for only over TLS unless ``allow_plaintext``.

``BackendHandshake`` is the gateway acting as a client towards the backend with the held
credential: optional SSLRequest, StartupMessage, then whatever authentication the server
asks for (trust, cleartext, MD5, SCRAM-SHA-256), collecting ParameterStatus and
BackendKeyData until the first ReadyForQuery.

Neither machine touches sockets, clocks or randomness: the SCRAM nonce is an argument.
Error texts sent to clients are ledgergate's own and never contain the backend secret.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from enum import Enum, auto

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
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
from ledgergate.wire.pg.frames import MAX_STARTUP, FrameError, FrameSplitter, read_cstr
from ledgergate.wire.scram import ScramClient, ScramError, md5_password

__all__ = ["BackendHandshake", "FrontendHandshake", "ProtocolError"]

_I = struct.Struct("!I")
# A password message carries a token; anything near this size is not one.
MAX_PASSWORD_MESSAGE = 16_384
# Startup parameters the gateway decides itself instead of passing on to the backend.
_GATEWAY_PARAMS = {b"user", b"database", b"replication"}


class ProtocolError(Exception):
    """A peer broke the protocol. ``code`` is the SQLSTATE for the client's error."""

    def __init__(self, message: str, code: str = "08P01") -> None:
        super().__init__(message)
        self.code = code


class _F(Enum):
    AWAIT_STARTUP = auto()
    AWAIT_TLS = auto()
    AWAIT_PASSWORD = auto()
    AUTHENTICATING = auto()
    DONE = auto()


class FrontendHandshake:
    """Client-facing startup. See the module docstring for the state machine."""

    def __init__(self, *, tls_available: bool, allow_plaintext: bool, connections: Container[str]):
        self.tls_available = tls_available
        self.allow_plaintext = allow_plaintext
        self.connections = connections
        self.state = _F.AWAIT_STARTUP
        self.tls = False
        self.startup: m.StartupMessage | None = None
        self.buf = bytearray()

    @property
    def connection(self) -> str | None:
        if self.startup is None:
            return None
        db = self.startup.get(b"database") or self.startup.get(b"user") or b""
        return db.decode("utf-8", "replace")

    @property
    def user(self) -> str | None:
        if self.startup is None:
            return None
        return (self.startup.get(b"user") or b"").decode("utf-8", "replace")

    def leftover(self) -> bytes:
        """Bytes the client sent after its password (pipelined queries): relay them."""
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def feed(self, event: ClientData | TlsStarted) -> list[Action]:
        try:
            return self._feed(event)
        except ProtocolError as e:
            self.state = _F.DONE
            return [Fail(str(e), m.error_response(e.code, f"ledgergate: {e}"))]
        except FrameError as e:
            self.state = _F.DONE
            return [Fail(str(e), m.error_response("08P01", f"ledgergate: {e}"))]

    def _feed(self, event: ClientData | TlsStarted) -> list[Action]:
        if isinstance(event, TlsStarted):
            if self.state is not _F.AWAIT_TLS:
                raise ProtocolError("unexpected TLS handshake")
            self.tls = True
            self.state = _F.AWAIT_STARTUP
            return self._drain()
        if self.state is _F.AWAIT_TLS:
            # Bytes after SSLRequest but before the TLS handshake: a buffer-stuffing
            # attempt (CVE-2021-23222), never a real client.
            raise ProtocolError("unexpected data after SSLRequest")
        self.buf += event.data
        return self._drain()

    def _drain(self) -> list[Action]:
        out: list[Action] = []
        while self.state in (_F.AWAIT_STARTUP, _F.AWAIT_PASSWORD):
            if self.state is _F.AWAIT_STARTUP:
                if len(self.buf) < 4:
                    break
                (length,) = _I.unpack_from(self.buf, 0)
                if length < 8 or length > MAX_STARTUP:
                    raise ProtocolError(f"invalid startup packet length {length}")
                if len(self.buf) < length:
                    break
                packet = bytes(self.buf[:length])
                del self.buf[:length]
                out.extend(self._startup_packet(m.parse_startup_packet(packet)))
            else:
                if len(self.buf) < 5:
                    break
                tag = self.buf[0]
                (length,) = _I.unpack_from(self.buf, 1)
                if tag != ord("p"):
                    raise ProtocolError("expected a password message", "28000")
                if length < 5 or length > MAX_PASSWORD_MESSAGE:
                    raise ProtocolError(f"invalid password message length {length}")
                if len(self.buf) < 1 + length:
                    break
                body = bytes(self.buf[5 : 1 + length])
                del self.buf[: 1 + length]
                password, end = read_cstr(body, 0)
                if end != len(body):
                    raise ProtocolError("invalid password message")
                self.state = _F.AUTHENTICATING
                assert self.startup is not None
                out.append(Authenticate(self.startup, password))
        return out

    def _startup_packet(self, p: m.StartupPacket) -> list[Action]:
        if isinstance(p, m.SslRequest):
            if self.tls:
                raise ProtocolError("SSLRequest inside TLS")
            if not self.tls_available:
                return [SendToClient(b"N")]
            if self.buf:
                raise ProtocolError("unexpected data after SSLRequest")
            self.state = _F.AWAIT_TLS
            return [SendToClient(b"S"), StartClientTls()]
        if isinstance(p, m.GssEncRequest):
            return [SendToClient(b"N")]
        if isinstance(p, m.CancelRequest):
            self.state = _F.DONE
            return [CancelBackend(p.pid, p.secret), Close("cancel request")]
        self.startup = p
        if p.get(b"replication") not in (None, b"false", b"0", b"off", b"no"):
            raise ProtocolError("replication connections are not supported", "0A000")
        if not p.get(b"user"):
            raise ProtocolError("no PostgreSQL user name specified in startup packet", "28000")
        name = self.connection or ""
        if name not in self.connections:
            raise ProtocolError(f'no connection named "{name}" on this gateway', "3D000")
        if not self.tls and not self.allow_plaintext:
            raise ProtocolError("this gateway requires TLS: connect with sslmode=require", "28000")
        self.state = _F.AWAIT_PASSWORD
        return [SendToClient(m.auth_cleartext())]


class _B(Enum):
    AWAIT_SSL = auto()
    AWAIT_TLS = auto()
    AUTH = auto()
    GREETING = auto()
    READY = auto()
    FAILED = auto()


class BackendHandshake:
    """Backend-facing startup with the held credential."""

    def __init__(
        self,
        *,
        user: str,
        password: str | None,
        database: str,
        client: m.StartupMessage,
        sslmode: str,
        nonce: bytes,
        connection: str,
        require_auth: frozenset[str] | None = None,
    ) -> None:
        self._user = user.encode()
        self._password = password
        self._database = database.encode()
        self._client = client
        self._sslmode = sslmode
        self._nonce = nonce
        self._conn = connection
        # libpq's require_auth: the methods the server may ask for (None: any). Stops a
        # server, or a man in the middle of an unverified TLS, from downgrading the
        # exchange to one that reveals the held password (cleartext) or its hash (MD5).
        self._require_auth = require_auth
        self._method_seen: str | None = None
        self.state = _B.AWAIT_SSL
        self.tls = False
        self._split = FrameSplitter(max_message=1 << 20)
        self._scram: ScramClient | None = None
        self._scram_verified = False
        self._greeting = bytearray()
        self._negotiate = b""
        self._pid = 0
        self._secret = b""

    def __repr__(self) -> str:
        return f"BackendHandshake(connection={self._conn!r}, state={self.state.name})"

    def start(self) -> list[Action]:
        if self._sslmode == "disable":
            return self._send_startup()
        self.state = _B.AWAIT_SSL
        return [SendToServer(m.ssl_request())]

    def _send_startup(self) -> list[Action]:
        self.state = _B.AUTH
        params = [(b"user", self._user), (b"database", self._database)]
        params += [(k, v) for k, v in self._client.params if k not in _GATEWAY_PARAMS]
        return [SendToServer(m.startup_message(self._client.version, params))]

    def _fail(
        self, reason: str, code: str = "08006", client_text: str | None = None
    ) -> list[Action]:
        self.state = _B.FAILED
        text = client_text or f'ledgergate: connection "{self._conn}" is unavailable: {reason}'
        return [Fail(reason, m.error_response(code, text))]

    def feed(self, event: ServerData | TlsStarted) -> list[Action]:
        try:
            return self._feed(event)
        except (FrameError, ScramError, struct.error, ProtocolError) as e:
            return self._fail(f"backend protocol error: {e}")

    def _feed(self, event: ServerData | TlsStarted) -> list[Action]:
        if isinstance(event, TlsStarted):
            if self.state is not _B.AWAIT_TLS:
                raise ProtocolError("unexpected TLS handshake")
            self.tls = True
            return self._send_startup()
        data = event.data
        if self.state is _B.AWAIT_SSL:
            if data[:1] == b"S" and len(data) == 1:
                self.state = _B.AWAIT_TLS
                return [StartServerTls()]
            if data[:1] == b"N" and len(data) == 1:
                if self._sslmode in ("require", "verify-full"):
                    return self._fail(f"the server does not accept TLS (sslmode={self._sslmode})")
                return self._send_startup()
            return self._fail("unexpected answer to SSLRequest")
        if self.state not in (_B.AUTH, _B.GREETING):
            raise ProtocolError(f"unexpected data in state {self.state.name}")
        out: list[Action] = []
        frames = self._split.feed(data)
        buf = self._split.buf
        consumed = 0
        for tag, start, end in frames:
            consumed = end
            body = bytes(buf[start + 5 : end])
            out.extend(self._message(tag, body, bytes(buf[start:end])))
            if self.state in (_B.READY, _B.FAILED):
                break
        self._split.consume(consumed)
        if self._is_ready() and self._split.buf:
            return self._fail("backend sent data after ReadyForQuery")
        return out

    def _is_ready(self) -> bool:
        return self.state is _B.READY

    def _message(self, tag: int, body: bytes, raw: bytes) -> list[Action]:
        if tag == ord("E"):
            f = m.parse_error_fields(body)
            code = f.get("C", "08006")
            if code.startswith("28"):  # the held credential was refused: no details leak
                return self._fail(
                    "the backend refused the gateway's credential",
                    "08006",
                    f'ledgergate: connection "{self._conn}" is unavailable: '
                    "the gateway could not authenticate to the backend",
                )
            # The server's text can name the backend role or database: it goes to the
            # ledger and log (reason); the client gets the SQLSTATE and our own words.
            return self._fail(
                f"backend refused the session: {f.get('M', 'error')} (SQLSTATE {code})",
                code,
                f'ledgergate: connection "{self._conn}" is unavailable: '
                f"the server refused the session (SQLSTATE {code})",
            )
        if tag == ord("v"):
            self._negotiate = raw
            return []
        if self.state is _B.AUTH:
            if tag != ord("R"):
                raise ProtocolError(f"unexpected message {chr(tag)!r} during authentication")
            return self._auth(body)
        # GREETING
        if tag == ord("S") or tag == ord("N"):
            self._greeting += raw
            return []
        if tag == ord("K"):
            if len(body) < 8:
                raise ProtocolError("short BackendKeyData")
            (self._pid,) = _I.unpack_from(body, 0)
            self._secret = body[4:]
            return []
        if tag == ord("Z"):
            self.state = _B.READY
            return [
                BackendReady(
                    self._pid, self._secret, bytes(self._greeting), self._negotiate, body[:1]
                )
            ]
        raise ProtocolError(f"unexpected message {chr(tag)!r} before ReadyForQuery")

    def _need_password(self) -> str:
        if self._password is None:
            raise ProtocolError("the server asks for a password but the connection has none")
        return self._password

    def _allowed(self, method: str) -> None:
        if self._require_auth is not None and method not in self._require_auth:
            raise ProtocolError(
                f"the server asked for {method} authentication, which this connection "
                f"does not allow (require_auth: {', '.join(sorted(self._require_auth))})"
            )

    def _auth(self, body: bytes) -> list[Action]:
        (code,) = _I.unpack_from(body, 0)
        if code == 0:
            if self._scram is None and self._method_seen is None:
                self._allowed("none")
            if self._scram is not None and not self._scram_verified:
                # Skipping SASLFinal would skip the server's proof that it knows the password.
                raise ProtocolError("AuthenticationOk before the SCRAM exchange completed")
            self.state = _B.GREETING
            return []
        if code == 3:
            self._allowed("password")
            self._method_seen = "password"
            pw = self._need_password().encode()
            return [SendToServer(b"p" + _I.pack(len(pw) + 5) + pw + b"\x00")]
        if code == 5:
            self._allowed("md5")
            self._method_seen = "md5"
            salt = body[4:8]
            pw = md5_password(self._user, self._need_password().encode(), salt) + b"\x00"
            return [SendToServer(b"p" + _I.pack(len(pw) + 4) + pw)]
        if code == 10:
            self._allowed("scram-sha-256")
            mechs = [x for x in body[4:].split(b"\x00") if x]
            if b"SCRAM-SHA-256" not in mechs:
                raise ProtocolError("the server offers no SASL mechanism ledgergate supports")
            self._scram = ScramClient(self._need_password(), self._nonce)
            first = self._scram.first()
            payload = b"SCRAM-SHA-256\x00" + _I.pack(len(first)) + first
            return [SendToServer(b"p" + _I.pack(len(payload) + 4) + payload)]
        if code == 11:
            if self._scram is None:
                raise ProtocolError("SASLContinue without SASL")
            final = self._scram.final(body[4:])
            return [SendToServer(b"p" + _I.pack(len(final) + 4) + final)]
        if code == 12:
            if self._scram is None:
                raise ProtocolError("SASLFinal without SASL")
            self._scram.verify(body[4:])
            self._scram_verified = True
            return []
        raise ProtocolError(f"unsupported authentication method {code}")
