"""Ledger entry drafts: what protocol sessions hand to the ledger writer.

A ``Draft`` is an entry before it has a place in a stream (no stream, seq, prev_hash or
entry_hash yet). The ledger writer seals drafts in order (see ``chain``). Pure data.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from ledgergate.wire.hotdata import hotdata


@hotdata
class Draft:
    """One event to be recorded.

    ``fields`` holds the entry's body (session_id, connection, identity, source,
    direction, chunk, command, decision, outcome, ...): JSON types only, integers (never
    floats), text as ``str``. ``payloads`` are raw bytes kept apart from the entry and
    addressed by their SHA-256 hex digest (the entry names the digest); the writer
    stores them encrypted so retention can delete them while the chain still verifies.

    ``typed``: every value in ``fields`` is already known to be one that canonical JSON
    accepts (``str``, ``int``, ``bool``, ``None``, and dicts with ``str`` keys and lists of
    those, nested a few levels). The session recorder sets it for the command and chunk
    entries it builds from such values (and a session base it checked once), so the chain
    skips the per-entry type walk; anything the encoder still declines (an integer
    beyond 64 bits, a lone surrogate) takes the checked path.
    """

    ts_ns: int
    kind: str
    fields: dict[str, Any]
    payloads: tuple[tuple[str, bytes], ...] = field(default=())
    typed: bool = False
