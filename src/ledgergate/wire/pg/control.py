"""The PostgreSQL relay's state and its cold transitions, sans-IO.

Owns ``RelayControl``, the base class of ``session.Relay``: the relay's state (all of it
is set in ``__init__`` here) and what does not run on every read: a guard or result shaper
set on an open session, the stand-in SQL for a refused statement and the backend's error
about it replaced by the refusal, a statement held for review until its ``Verdict``,
ending the session from the gateway's side at a server message boundary, the gateway's
own notices, and the FATAL reply to a malformed frontend message. Also the guard's types
(``Guard``, ``NeedsReview``), the relay's limits and the small pure helpers it calls.
Must not hold a per-read path: ``feed``, the client split and the server walk stay whole in
``session.py`` (a read must cost no extra call). Like all of ``wire/``: no sockets, clocks
or logging, and imports from ``wire/`` only.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import Action, Close, CommandSeen, Inspect, SendToClient, Verdict
from ledgergate.wire.pg.frames import MAX_TAG, FrameError, FrameSplitter
from ledgergate.wire.pg.prepared import PreparedStatements
from ledgergate.wire.pg.results import ResultShaper

__all__ = [
    "FUNCTION_CALL_REFUSED",
    "MAX_HELD",
    "MAX_TAG",
    "Guard",
    "NeedsReview",
    "RelayControl",
    "SessionStats",
]

_I = struct.Struct("!I")
_unpack_i = _I.unpack_from


# A guard: (op, statement text) -> None to let it through, or (rule, message) to refuse.
@dataclass(frozen=True, slots=True)
class NeedsReview:
    """A guard's answer for a statement a human must approve first (rule ``rule``)."""

    rule: str


# (op, statement text) -> None (forward it), (rule, message) (refuse it), or NeedsReview
# (hold it: ``Inspect``, then the ``Verdict``).
Guard = Callable[[str, bytes], "tuple[str, str] | NeedsReview | None"]
# Client bytes waiting for a ledger commit beyond this pause the client (the shell
# checks ``held_bytes``); they are never dropped.
MAX_HELD = 8 << 20


def _tag_of(body: bytes | bytearray) -> bytes:
    """A CommandComplete body's tag: up to its NUL, bounded by MAX_TAG."""
    return bytes(body[:MAX_TAG]).split(b"\x00", 1)[0]


def _bind_seen(raw: bytes, ts: int) -> CommandSeen:
    b = m.parse_bind(raw[5:])
    return CommandSeen(
        "bind", ts, raw, statement=b.statement, portal=b.portal, nparams=len(b.params)
    )


FUNCTION_CALL_REFUSED = (
    "function-call",
    "the FunctionCall protocol message is refused on a guarded connection; "
    "call the function in SQL",
)


def _function_seen(raw: bytes, ts: int) -> CommandSeen:
    if len(raw) < 9:
        raise FrameError("truncated FunctionCall")
    return CommandSeen("function", ts, raw, text=b"fn:%d" % _unpack_i(raw, 5)[0])


def _allow_all(op: str, text: bytes) -> None:
    return None


def _refusal(verdict: tuple[str, str], code: str = "42501") -> bytes:
    rule, message = verdict
    if code == "57014":  # a cancel: worded as PostgreSQL's own
        text = f"canceling statement due to user request ({message})"
    else:
        text = f"ledgergate: statement refused by rule {rule}: {message}"
    return m.error_response(code, text, severity="ERROR")


class SessionStats:
    __slots__ = ("bytes_c2s", "bytes_s2c", "chunks", "commands", "rows")

    def __init__(self) -> None:
        self.commands = 0
        self.chunks = 0
        self.rows = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "commands": self.commands,
            "chunks": self.chunks,
            "rows": self.rows,
            "bytes_c2s": self.bytes_c2s,
            "bytes_s2c": self.bytes_s2c,
        }


class RelayControl:
    """The state of a ``Relay`` and its transitions off the per-read path."""

    def __init__(self) -> None:
        self._split = FrameSplitter()
        self._ticket = 0
        self._committed = 0
        self._held: deque[tuple[int, bytes]] = deque()
        self.held_bytes = 0
        self._skip = 0  # bytes of a server frame that continue into the next read
        self._hdr = b""  # a server frame header split across reads
        self._tag: bytearray | None = None  # a CommandComplete body split across reads
        self._s_seq = 0
        self._c_seq = 0
        self.client_open = True
        self.terminated = False
        self.closed = False
        self.stats = SessionStats()
        # Set by ``end()`` while a server message is half forwarded: (error, reason).
        self._ending: tuple[bytes, str] | None = None
        # Guarded sessions (see ``guard``). A refused statement is replaced by one naming
        # a relation that cannot exist (``refusal_tag`` + a counter: the shell sets a
        # random tag), so the backend itself fails the statement and its batch, in
        # order, with its own rollback and skip-to-Sync; the relay then replaces that
        # error with the refusal before the client sees it.
        self.guard: Guard | None = None
        self.refusal_tag = "0"
        self._refusals: dict[bytes, bytes] = {}  # marker -> the refusal ErrorResponse
        self._nrefused = 0
        self._hold_s = b""  # an ErrorResponse begun at the end of a read, held for the rest
        # The server's last read when it began on a message boundary (else None): if the
        # server then closes, was that read its goodbye (a FATAL ErrorResponse)?
        self._last_read: bytes | None = None
        # Sessions whose results are masked: every server message passes through it.
        self.shaper: ResultShaper | None = None
        # What the client prepared, decided again at its next Bind after ``set_guard``.
        self._prepared = PreparedStatements()
        # Review: prepared statements that need one at their Bind (name -> rule, text),
        # the statement held now (ticket, rule) until its Verdict, and that Verdict's
        # outcome for the held frame when it is read again (None: not decided yet).
        self._review_stmt: dict[bytes, tuple[str, bytes]] = {}
        self._inspecting: tuple[int, str] | None = None
        self._decided: Verdict | None = None
        self._decided_code = "42501"
        self._nticket = 0
        self._notices: list[bytes] = []  # gateway notices waiting for a message boundary

    # -- guard and shaper ---------------------------------------------------------------
    def set_guard(self, guard: Guard | None) -> None:
        """Replace the guard of an open session (the policy changed): from the next
        Query or Parse on, and for a statement prepared before, at its next Bind."""
        self.guard = guard
        self._prepared.next_generation()

    def set_shaper(self, shaper: ResultShaper) -> None:
        shaper.on_error = self._rewrite_error
        self.shaper = shaper

    def _refuse(self, verdict: tuple[str, str], code: str = "42501") -> bytes:
        """The SQL that makes the backend fail in place of a refused statement."""
        self._nrefused += 1
        marker = f"ledgergate-refused-{self.refusal_tag}-{self._nrefused}".encode()
        self._refusals[marker] = _refusal(verdict, code)
        return b'SELECT * FROM "' + marker + b'"'

    def _rewrite_error(self, frame: bytes) -> bytes | None:
        """Our refusal in place of the backend's error about a refused statement's
        stand-in; None for any other error."""
        if not self._refusals or b"ledgergate-refused-" not in frame:
            return None
        for marker in list(self._refusals):
            if marker + b'"' in frame:
                return self._refusals.pop(marker)
        return None

    # -- statements held for review -----------------------------------------------------
    if TYPE_CHECKING:  # the guarded client path, in ``session.Relay``

        def _client_guarded(self, data: bytes, ts: int) -> list[Action]: ...

    @property
    def inspecting(self) -> int | None:
        """The ticket of the statement held for review, if one is."""
        return self._inspecting[0] if self._inspecting is not None else None

    @property
    def waiting_bytes(self) -> int:
        """Client bytes read but not yet relayed (behind a held statement)."""
        return len(self._split.buf)

    def _verdict(self, v: Verdict) -> list[Action]:
        """The held statement's answer: it goes on, or fails, and what the client sent
        after it is read again."""
        if self._inspecting is None or self._inspecting[0] != v.ticket:
            return []
        self._inspecting = None
        self._decided = v
        try:
            return self._client_guarded(b"", v.ts_ns)
        except FrameError as e:
            return self._protocol_error(str(e))

    def _rechecker(self, statement: bytes | None) -> Callable[[str, bytes], tuple[str, str] | None]:
        """The guard for a statement prepared under an earlier policy: one that now needs
        review is held at this Bind like any other."""
        guard = self.guard or _allow_all

        def decide(op: str, text: bytes) -> tuple[str, str] | None:
            v = guard(op, text)
            if isinstance(v, NeedsReview):
                self._review_stmt[statement or b""] = (v.rule, text)
                return None
            return v

        return decide

    def _decide(
        self, verdict: tuple[str, str] | NeedsReview | None
    ) -> tuple[str, str] | NeedsReview | None:
        """A statement needing review, once its Verdict came: forward it, or refuse it."""
        if not isinstance(verdict, NeedsReview) or self._decided is None:
            return verdict
        v, self._decided = self._decided, None
        self._decided_code = v.code
        return None if v.approved else (v.rule or verdict.rule, v.message)

    def _code(self) -> str:
        """The SQLSTATE of the refusal just decided (a cancelled review: 57014)."""
        code, self._decided_code = self._decided_code, "42501"
        return code

    def _hold(
        self,
        rule: str,
        op: str,
        text: bytes,
        params: tuple[bytes | None, ...] = (),
        formats: tuple[int, ...] = (),
    ) -> Inspect:
        self._nticket += 1
        self._inspecting = (self._nticket, rule)
        return Inspect(self._nticket, rule, op, text, params, formats)

    # -- ending, notices, protocol errors -----------------------------------------------
    def end(self, error: bytes, reason: str) -> list[Action]:
        """End the session from the gateway's side: ``error`` (a FATAL ErrorResponse) goes
        to the client at the next server message boundary, never inside a message that
        is half forwarded (the client would read it as that message's bytes), then
        ``Close``. Until that boundary, server bytes up to it are still relayed and
        recorded; nothing after it is."""
        if self.closed or self._ending is not None:
            return []
        if self._skip == 0 and not self._hdr:
            self.closed = True
            return [SendToClient(error), Close(reason)] if self.client_open else [Close(reason)]
        self._ending = (error, reason)
        return []

    @property
    def ending(self) -> bool:
        return self._ending is not None

    def _boundary(self, data: bytes) -> int | None:
        """Where the server message in progress ends within ``data`` (None: later)."""
        n = len(data)
        if self._hdr:
            need = 5 - len(self._hdr)
            if n < need:
                return None
            (ln,) = _unpack_i(self._hdr + data[:need], 1)
            end = need + (ln if ln >= 4 else 4) - 4
        else:
            end = self._skip
        return end if end <= n else None

    def _at_boundary(self) -> bool:
        """Whether what went to the client so far ends with a whole server message."""
        return self.shaper is not None or (self._skip == 0 and not self._hdr)

    def notice(self, frame: bytes) -> list[Action]:
        """A message of the gateway's own for the client (a NoticeResponse): now, if no
        server message is half forwarded, else right after the one in flight."""
        if self.closed or not self.client_open:
            return []
        if self._at_boundary():
            return [SendToClient(frame)]
        self._notices.append(frame)
        return []

    def _protocol_error(self, why: str) -> list[Action]:
        self.closed = True
        return [
            SendToClient(m.error_response("08P01", f"ledgergate: invalid frontend message: {why}")),
            Close(f"protocol error: {why}"),
        ]
