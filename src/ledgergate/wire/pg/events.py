"""Events fed to and actions returned by the PostgreSQL protocol sessions.

Events are past facts; actions are imperatives the asyncio shell carries out in order.
Pure data: frozen, slotted dataclasses; the ones built for every query are ``hotdata``
(frozen for the type checker, without the runtime cost of frozen).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgergate.wire.hotdata import hotdata
from ledgergate.wire.pg.messages import StartupMessage

# --- events ---------------------------------------------------------------------------


@hotdata
class ClientData:
    data: bytes
    ts_ns: int


@hotdata
class ServerData:
    data: bytes
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ClientClosed:
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ServerClosed:
    ts_ns: int


@dataclass(frozen=True, slots=True)
class TlsStarted:
    """The shell finished a TLS handshake on the side the session asked for."""


@hotdata
class Committed:
    """Every durable Record up to and including ``ticket`` is committed to the store."""

    ticket: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to an ``Inspect``: the held statement runs (``approved``) or fails with
    ``message`` (SQLSTATE ``code``: 42501 refused, 57014 cancelled)."""

    ticket: int
    approved: bool
    rule: str = ""
    message: str = ""
    code: str = "42501"
    ts_ns: int = 0


Event = ClientData | ServerData | ClientClosed | ServerClosed | TlsStarted | Committed | Verdict

# --- actions --------------------------------------------------------------------------


@hotdata
class SendToClient:
    data: bytes


@hotdata
class SendToServer:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartClientTls:
    """Wrap the client connection in TLS (server side of the handshake)."""


@dataclass(frozen=True, slots=True)
class StartServerTls:
    """Wrap the backend connection in TLS (client side of the handshake)."""


@hotdata
class CommandSeen:
    """A client message that asks the backend to do something: Query ('query'), Parse
    ('parse'), Bind ('bind') or FunctionCall ('function'). ``raw`` is the whole frame."""

    op: str
    ts_ns: int
    raw: bytes
    text: bytes | None = None
    statement: bytes | None = None
    portal: bytes | None = None
    nparams: int = 0
    # Set when a guard refused the command: (rule, message). It was not forwarded.
    blocked: tuple[str, str] | None = None


@hotdata
class ChunkSeen:
    """One read of data crossing the gateway: ``direction`` 's2c' (results, COPY OUT,
    notices) or 'c2s' (COPY IN data). ``delivered`` is False when the receiving side was
    already gone and the bytes were dropped."""

    direction: str
    seq: int
    ts_ns: int
    data: bytes
    rows: int
    tags: tuple[bytes, ...]
    delivered: bool
    # What was forwarded when it differs from what arrived (an error the gateway put in,
    # masked values); None: the same bytes.
    out: bytes | None = None


@dataclass(frozen=True, slots=True)
class Inspect:
    """A statement that needs a human's review (``rule``): the client direction is held at
    it, and nothing after it is read, until ``Verdict(ticket)`` arrives. ``op``: 'query'
    (simple protocol) or 'bind' (an Execute of a prepared statement is near: its text
    and its parameters, as sent: bytes, or None for NULL; ``formats`` their codes)."""

    ticket: int
    rule: str
    op: str
    text: bytes
    params: tuple[bytes | None, ...] = ()
    formats: tuple[int, ...] = ()


@hotdata
class Record:
    """Append what was seen to the ledger. ``durable``: the session holds the bytes that
    depend on it until ``Committed(ticket)`` arrives; otherwise it is queued for the
    group commit (bounded; a full queue pauses the session)."""

    seen: tuple[CommandSeen | ChunkSeen, ...]
    durable: bool
    ticket: int


@dataclass(frozen=True, slots=True)
class Authenticate:
    """The client sent its password: check the token, then open the backend."""

    startup: StartupMessage
    password: bytes


@dataclass(frozen=True, slots=True)
class CancelBackend:
    pid: int
    secret: bytes


@dataclass(frozen=True, slots=True)
class BackendReady:
    """The backend accepted the held credential and is idle."""

    pid: int
    secret: bytes
    greeting: bytes  # ParameterStatus/NoticeResponse frames exactly as the server sent them
    negotiate: bytes  # NegotiateProtocolVersion frame, if the server sent one
    status: bytes  # transaction status byte of the first ReadyForQuery


@dataclass(frozen=True, slots=True)
class Close:
    """Close both sides. ``reason`` is for the ledger and the gateway's log."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    """The handshake failed. ``to_client``: the ErrorResponse to send (may be empty);
    ``reason``: safe text for the ledger and log (never contains a secret)."""

    reason: str
    to_client: bytes


Action = (
    SendToClient
    | SendToServer
    | StartClientTls
    | StartServerTls
    | Record
    | Authenticate
    | CancelBackend
    | BackendReady
    | Close
    | Fail
    | Inspect
)
