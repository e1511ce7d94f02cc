"""The statements a PostgreSQL client prepared, remembered so that a guard replaced while
the session is open (the policy changed) decides them again at their next Bind.

Owns a bounded map: statement name -> (text, the guard generation it was decided under).
Rules: a Parse remembers its statement (a refused one is forgotten: the backend never
had it); ``next_generation`` marks every remembered decision as stale; ``recheck`` on a
Bind decides a stale statement with the current guard. Past the bounds the oldest are
forgotten, and binding a forgotten statement after a guard change is refused: it cannot
be decided again (fail closed). Sans-IO: no sockets, clock or logging.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MAX_PREPARED", "MAX_PREPARED_BYTES", "PreparedStatements"]

# (op, statement text) -> None to let it through, or (rule, message) to refuse.
_Guard = Callable[[str, bytes], "tuple[str, str] | None"]
# Statements remembered, by count and by total text size: far more than applications
# keep open (each one is also held by the backend).
MAX_PREPARED = 8192
MAX_PREPARED_BYTES = 8 << 20
FORGOTTEN = (
    "policy-changed",
    "this statement was prepared before the policy changed and is no longer known to the "
    "gateway; prepare it again",
)


class PreparedStatements:
    __slots__ = ("_by_name", "_bytes", "_lost_gen", "gen")

    def __init__(self) -> None:
        self._by_name: dict[bytes, tuple[bytes, int]] = {}
        self._bytes = 0
        self.gen = 0  # the guard generation: 0 until the guard is first replaced
        self._lost_gen: int | None = None  # the oldest generation of a forgotten statement

    def __len__(self) -> int:
        return len(self._by_name)

    def next_generation(self) -> None:
        self.gen += 1

    def remember(self, name: bytes, text: bytes) -> None:
        self.forget(name)
        by_name = self._by_name
        by_name[name] = (text, self.gen)
        self._bytes += len(text)
        while len(by_name) > MAX_PREPARED or self._bytes > MAX_PREPARED_BYTES:
            gen = self.forget(next(iter(by_name)))
            if self._lost_gen is None or gen < self._lost_gen:
                self._lost_gen = gen

    def forget(self, name: bytes) -> int:
        """Drop a statement; returns the generation it was decided under."""
        got = self._by_name.pop(name, None)
        if got is None:
            return self.gen
        self._bytes -= len(got[0])
        return got[1]

    def recheck(self, name: bytes, guard: _Guard) -> tuple[bytes, tuple[str, str] | None]:
        """(its text, the verdict) for a Bind of statement ``name``: None when it was
        decided under the current guard, or is decided again now and allowed."""
        got = self._by_name.get(name)
        if got is None:
            lost = self._lost_gen is not None and self._lost_gen < self.gen
            return b"", FORGOTTEN if lost else None
        text, gen = got
        if gen == self.gen:
            return text, None
        verdict = guard("parse", text)
        if verdict is None:
            self._by_name[name] = (text, self.gen)
        return text, verdict
