"""What a PostgreSQL session needs from just-in-time review, and nothing more.

A statement a review rule matches is held by the relay (``Inspect``); the session asks
the gateway's ``ReviewDesk`` for an answer and feeds it back as a ``Verdict``. The desk
(``services.review_desk``: the review service, the store's epoch, notifications) may
take minutes; the session stays responsive meanwhile: other sessions are untouched,
server messages still flow, and a CancelRequest or a vanished client cancels the wait
(the desk withdraws the review when its task is cancelled). The proxy never imports
services: the gateway hands it a desk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ledgergate.core.policy.rules import PolicyRule

__all__ = ["ReviewAnswer", "ReviewAsk", "ReviewDesk", "params_text"]


@dataclass(frozen=True, slots=True)
class ReviewAsk:
    """A held statement: who sent it where, under which rule, with which parameters."""

    session_id: str
    identity: str
    groups: tuple[str, ...]
    connection: str
    rule: PolicyRule
    op: str  # "query" | "bind"
    statement: str
    params: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class ReviewAnswer:
    """Run it (``approved``) or fail it with ``message`` (SQLSTATE ``code``)."""

    approved: bool
    message: str = ""
    code: str = "42501"
    review_id: str | None = None


class ReviewDesk(Protocol):
    async def ask(self, ask: ReviewAsk, notice: Callable[[str], None]) -> ReviewAnswer:
        """The answer for a held statement. ``notice`` tells the client something while
        it waits (a NoticeResponse). Cancelling the task withdraws the review."""
        ...

    def used(self, review_id: str, session_id: str) -> None:
        """Record that a session was opened in the access window of ``review_id``."""
        ...


def params_text(
    params: tuple[bytes | None, ...], formats: tuple[int, ...]
) -> tuple[str | None, ...]:
    """Bind parameters as a reviewer reads them: text-format ones decoded (UTF-8,
    replacement for bad bytes), binary ones as ``\\x`` + hex, NULL as None."""
    out: list[str | None] = []
    for i, p in enumerate(params):
        fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
        if p is None:
            out.append(None)
        elif fmt == 1:
            out.append("\\x" + p.hex())
        else:
            out.append(p.decode("utf-8", "replace"))
    return tuple(out)
