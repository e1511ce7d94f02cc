"""A backend's answer read as events: llhttp (httptools) under a sans-IO face.

Owns parsing one HTTP/1.1 response: ``feed(data)`` returns ``ResponseHead`` once (the
final answer: informational 1xx answers are skipped), the body as the ``bytes`` pieces
llhttp hands over, and ``ResponseEnd``. A HEAD request's answer ends with its head,
whatever its Content-Length says. A head longer than the bound, or bytes that are not
HTTP, raise ``ResponseError``. No I/O: the shell feeds what the socket delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools

__all__ = ["ResponseEnd", "ResponseError", "ResponseHead", "ResponseReader"]


class ResponseError(ValueError):
    """An answer that cannot be read (the message is safe to show)."""


@dataclass(slots=True)
class ResponseHead:
    status_code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ResponseEnd:
    pass


_END = ResponseEnd()


class _Stop(Exception):
    """Raised in a callback to end a HEAD answer at its head (llhttp reports an error)."""


class ResponseReader:
    __slots__ = (
        "_events",
        "_head",
        "_head_bytes",
        "_headers",
        "_max_head",
        "_parser",
        "_reason",
        "done",
        "head_only",
    )

    def __init__(self, *, head_only: bool, max_head: int) -> None:
        self.head_only = head_only
        self._max_head = max_head
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[ResponseHead | bytes | ResponseEnd] = []
        self._head: ResponseHead | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_bytes = 0
        self.done = False

    def feed(self, data: bytes) -> list[ResponseHead | bytes | ResponseEnd]:
        if self.done:
            if data:
                raise ResponseError("the backend sent data after its answer")
            return []
        if self._head is None:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            if not (self.head_only and self.done):  # _Stop ended a HEAD answer
                raise ResponseError(f"the backend's answer is not valid HTTP: {e}") from None
        if self._head is None and self._head_bytes > self._max_head:
            raise ResponseError("the backend's answer head is too large")
        events, self._events = self._events, []
        return events

    @property
    def keep_alive(self) -> bool:
        return self.head_only or bool(self._parser.should_keep_alive())

    # -- llhttp callbacks ------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._reason += status  # llhttp hands the reason over in pieces when reads split it

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, []
        reason, self._reason = self._reason, b""
        if 100 <= status < 200:  # informational: the real answer follows
            return
        self._head = ResponseHead(status, reason, headers)
        self._events.append(self._head)
        if self.head_only:
            self.done = True
            self._events.append(_END)
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        if self._head is not None and not self.done:
            self.done = True
            self._events.append(_END)
