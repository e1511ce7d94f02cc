"""What the ledger says about a session: commands and chunks turned into entry drafts.

Owns the mapping from protocol facts (``CommandSeen``, ``ChunkSeen``) to ``Draft``s at a
connection's recording level:
- ``metadata``: digests, sizes and counts only; no statement text.
- ``redacted``: statement text with every literal replaced by ``?``; parameters as a
  digest; no payloads.
- ``full``: as redacted, plus the raw frames (statement, parameters, result bytes) kept
  as payloads apart from the entries, addressed by SHA-256, stored encrypted.
Pure: no clock (timestamps come on the facts), no I/O.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from ledgergate.core.ledger.canonical import canonical_json
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.sqltext import redact, redact_simple, split_statements
from ledgergate.wire.pg.events import ChunkSeen, CommandSeen

__all__ = ["SessionRecorder"]

RECORDING_LEVELS = ("metadata", "redacted", "full")


class SessionRecorder:
    """Builds drafts for one session. ``base`` holds the fields every entry of the
    session carries (session_id, connection, identity, source); it is checked for
    canonical JSON once, here, so the command and chunk drafts built on it are ``typed``
    (their own values are str, int and None by construction)."""

    __slots__ = ("base", "cmd_seq", "encoding", "full", "level")

    def __init__(self, base: dict[str, Any], level: str, encoding: str = "utf-8") -> None:
        if level not in RECORDING_LEVELS:
            raise ValueError(f"unknown recording level {level!r}")
        canonical_json(base)  # raises CanonicalError (a ValueError) for a bad base
        self.base = base
        self.level = level
        self.full = level == "full"
        self.encoding = encoding
        self.cmd_seq = 0

    def set_policy(self, version: str | None) -> None:
        """The policy version later entries name (None: no policy applies)."""
        if version is None:
            self.base.pop("policy", None)
        else:
            self.base["policy"] = str(version)

    def event(self, ts_ns: int, kind: str, **fields: Any) -> Draft:
        return Draft(ts_ns, kind, {**self.base, **fields})

    def drafts(self, seen: tuple[CommandSeen | ChunkSeen, ...]) -> list[Draft]:
        out: list[Draft] = []
        for s in seen:
            if isinstance(s, ChunkSeen):
                out.append(self.chunk(s))
            else:
                out.extend(self.command(s))
        return out

    def chunk(self, c: ChunkSeen) -> Draft:
        digest = sha256(c.data).hexdigest()
        chunk: dict[str, Any] = {
            "seq": c.seq,
            "size": len(c.data),
            "sha256_in": digest,
            "sha256_out": digest if c.out is None else sha256(c.out).hexdigest(),
        }
        if c.out is not None:
            chunk["size_out"] = len(c.out)
        # Server-side COPY OUT sends one CopyData per row; clients batch COPY IN data
        # freely, so there the count is of messages, not rows.
        chunk["rows" if c.direction == "s2c" else "messages"] = c.rows
        fields = {
            **self.base,
            "direction": c.direction,
            "chunk": chunk,
            "outcome": "forwarded" if c.delivered else "failed",
        }
        if c.tags:
            fields["tags"] = [t.decode("ascii", "replace") for t in c.tags]
        if self.full:
            # The bytes the client received: masked values never reach the ledger.
            sent = c.data if c.out is None else c.out
            pd = digest if c.out is None else chunk["sha256_out"]
            chunk["payload"] = pd
            return Draft(c.ts_ns, "chunk", fields, ((pd, sent),), True)
        return Draft(c.ts_ns, "chunk", fields, (), True)

    def _text(self, raw: bytes) -> str:
        return raw.decode(self.encoding, "replace")

    def command(self, c: CommandSeen) -> list[Draft]:
        if c.blocked is not None:
            return [self.blocked(c)]
        payloads: tuple[tuple[str, bytes], ...] = ()
        payload_digest = None
        if self.full:
            payload_digest = sha256(c.raw).hexdigest()
            payloads = ((payload_digest, c.raw),)
        if c.op == "query":
            text = self._text(c.text or b"")
            stmts = split_statements(text) or ("",)
            out = []
            for i, stmt in enumerate(stmts):
                cmd = self._cmd(c.op, stmt)
                if i == 0 and payload_digest:
                    cmd["payload"] = payload_digest
                if len(stmts) > 1:
                    cmd["part"] = [i + 1, len(stmts)]
                out.append(
                    Draft(
                        c.ts_ns,
                        "command",
                        {**self.base, "command": cmd},
                        payloads if i == 0 else (),
                        True,
                    )
                )
            return out
        if c.op == "parse":
            cmd = self._cmd("parse", self._text(c.text or b""))
            cmd["statement"] = self._text(c.statement or b"")
        elif c.op == "bind":
            self.cmd_seq += 1
            cmd = {
                "seq": self.cmd_seq,
                "op": "bind",
                "statement": self._text(c.statement or b""),
                "portal": self._text(c.portal or b""),
                "params": {"count": c.nparams, "sha256": sha256(c.raw[5:]).hexdigest()},
            }
        else:
            self.cmd_seq += 1
            cmd = {
                "seq": self.cmd_seq,
                "op": c.op,
                "text": self._text(c.text or b""),
                "args_sha256": sha256(c.raw[5:]).hexdigest(),
            }
        if payload_digest:
            cmd["payload"] = payload_digest
        return [Draft(c.ts_ns, "command", {**self.base, "command": cmd}, payloads, True)]

    def blocked(self, c: CommandSeen) -> Draft:
        """A refused command: what was attempted (at the recording level; never a raw
        payload) and the rule that refused it."""
        assert c.blocked is not None
        rule, message = c.blocked
        cmd = self._cmd(c.op, self._text(c.text or b""))
        if c.statement:
            cmd["statement"] = self._text(c.statement)
        return Draft(
            c.ts_ns,
            "decision.block",
            {
                **self.base,
                "command": cmd,
                "decision": {"action": "block", "rule": rule, "message": message},
                "outcome": "refused",
            },
            (),
            True,
        )

    def _cmd(self, op: str, stmt: str) -> dict[str, Any]:
        self.cmd_seq += 1
        cmd: dict[str, Any] = {
            "seq": self.cmd_seq,
            "op": op,
            "text_sha256": sha256(stmt.encode(self.encoding, "replace")).hexdigest(),
        }
        if self.level == "metadata":
            cmd["text"] = None
        else:
            cmd["text"] = redact_simple(stmt) if op == "query" else redact(stmt)
        return cmd
