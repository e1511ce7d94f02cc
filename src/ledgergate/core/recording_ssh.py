"""What the ledger says about an SSH session: channels, commands, terminal output.

Owns the drafts of an SSH connection at a connection's recording level. Each session
channel's request is a ``command`` (``op``: exec, shell or subsystem; an exec command's
line at ``redacted`` and ``full``, its SHA-256 only at ``metadata``), made durable before
the request reaches the host; the bytes each way are ``chunk`` entries naming their
command, channel and stream (stdout, stderr, stdin); the exit status (or signal)
closes the command as ``command.result``.

Payloads: a shell's output (what the person saw) is kept at ``redacted`` and ``full`` so
``sessions replay`` can play it (an asciicast is made from the chunks and their times);
an exec command's output only at ``full``. What the person typed is never kept as a
payload: input on a terminal carries passwords typed at prompts that do not echo, and
the gateway cannot see the terminal's echo state. Every chunk has its digests whatever
the level.

Pure: no clock (timestamps come in), no I/O.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.recording import SessionRecorder

__all__ = ["SshRecorder"]


class SshRecorder(SessionRecorder):
    """Drafts for one SSH connection (see ``SessionRecorder`` for ``base``)."""

    __slots__ = ("chunk_seq",)

    def __init__(self, base: dict[str, Any], level: str) -> None:
        super().__init__(base, level)
        self.chunk_seq = 0

    def request(self, ts_ns: int, op: str, channel: int, **fields: Any) -> tuple[int, Draft]:
        """(its seq, the durable ``command`` entry) of a channel request: ``op`` exec
        (``text`` the command line), shell, subsystem (``name``), forward, …"""
        self.cmd_seq += 1
        cmd: dict[str, Any] = {"seq": self.cmd_seq, "protocol": "ssh", "op": op, "channel": channel}
        text = fields.pop("text", None)
        if text is not None:
            if self.level == "metadata":
                cmd["text_sha256"] = sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
            else:
                cmd["text"] = text
        cmd.update(fields)
        return self.cmd_seq, Draft(ts_ns, "command", {**self.base, "command": cmd}, (), True)

    def blocked_request(
        self, ts_ns: int, op: str, channel: int, rule: str | None, message: str, **fields: Any
    ) -> Draft:
        """A channel request a policy rule refused: what was attempted, and the rule."""
        _, d = self.request(ts_ns, op, channel, **fields)
        f = dict(d.fields)
        f["decision"] = {"action": "block", "rule": rule, "message": message}
        f["outcome"] = "refused"
        return Draft(ts_ns, "decision.block", f, (), True)

    def data(
        self,
        ts_ns: int,
        cmd_seq: int,
        channel: int,
        stream: str,
        data: bytes | memoryview,
        *,
        keep: bool,
        **extra: Any,
    ) -> Draft:
        """One read relayed on a channel: ``stream`` stdout/stderr (to the client) or
        stdin (to the host); for SFTP, a file's ``write`` (to the host) or ``read``
        (``extra``: its offset). ``keep``: the bytes are kept as the chunk's payload."""
        self.chunk_seq += 1
        digest = sha256(data).hexdigest()
        chunk: dict[str, Any] = {
            "seq": self.chunk_seq,
            "command": cmd_seq,
            "channel": channel,
            "stream": stream,
            "size": len(data),
            "sha256_in": digest,
            "sha256_out": digest,
            **extra,
        }
        fields = {
            **self.base,
            "direction": "c2s" if stream in ("stdin", "write") else "s2c",
            "chunk": chunk,
            "outcome": "forwarded",
        }
        if keep:
            chunk["payload"] = digest
            return Draft(ts_ns, "chunk", fields, ((digest, bytes(data)),), True)
        return Draft(ts_ns, "chunk", fields, (), True)

    def result(self, ts_ns: int, cmd_seq: int, op: str, outcome: str, **fields: Any) -> Draft:
        """The ``command.result`` closing command ``cmd_seq`` (exit status, signal)."""
        return Draft(
            ts_ns,
            "command.result",
            {
                **self.base,
                "command": {"seq": cmd_seq, "op": op, "protocol": "ssh"},
                "outcome": outcome,
                **fields,
            },
        )
