"""What every protocol's listener offers the gateway, whatever it carries.

The runtime (``services.gateway``) re-checks open sessions, ends them, closes access
windows and shuts down through this one shape, for PostgreSQL, S3 and HTTP alike; a
protocol's listener fills it in. A session it hands out carries its ``SessionFacts``
(who, on which token, since when) and ends with ``end(why)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ledgergate.core.identity import SessionFacts

__all__ = ["Listener", "OpenSession", "SessionRegistry"]


class OpenSession(Protocol):
    @property
    def session_id(self) -> str: ...

    @property
    def facts(self) -> SessionFacts | None: ...

    @property
    def window_id(self) -> str | None: ...


class Listener(Protocol):
    def open_sessions(self) -> Sequence[OpenSession]:
        """The sessions open now (re-checked every interval and at access changes)."""
        ...

    def end_sessions(self, verdicts: dict[str, str]) -> int:
        """End the sessions named (session id → why); how many were open."""
        ...

    def windows_in_use(self) -> set[str]:
        """The access reviews open sessions were admitted under."""
        ...

    def close_window(self, review_id: str, why: str) -> int:
        """End the sessions admitted in an access window that closed early."""
        ...

    def stop_accepting(self) -> None:
        """Close the listening sockets; open sessions go on (a drain)."""
        ...

    async def shutdown(self) -> None: ...


class SessionRegistry:
    """The registry half of ``Listener`` for a protocol whose sessions are kept in
    ``self.sessions`` (each with ``closed``, ``ended``, ``end(why)``): the re-checks,
    access windows and their ends, written once for every protocol."""

    sessions: Any

    def open_sessions(self) -> list[Any]:
        return [s for s in self.sessions if not s.closed]

    def end_sessions(self, verdicts: dict[str, str]) -> int:
        n = 0
        for s in list(self.sessions):
            why = verdicts.get(s.session_id)
            if why is not None and not s.closed and s.ended is None:
                s.end(why)
                n += 1
        if n:
            self.sessions_ended()
        return n

    def sessions_ended(self) -> None:
        """Called when ``end_sessions`` ended some (a listener's caches may care)."""

    def windows_in_use(self) -> set[str]:
        return {s.window_id for s in self.open_sessions() if s.window_id is not None}

    def close_window(self, review_id: str, why: str) -> int:
        return self.end_sessions(
            {s.session_id: why for s in self.open_sessions() if s.window_id == review_id}
        )
