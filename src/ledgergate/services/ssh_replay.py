"""SSH sessions read back: one line per entry for ``sessions show``, a terminal replay,
and the asciicast v2 file of a shell for asciinema.

Owns how an SSH session's entries (``core.recording_ssh``) read to a person:
- ``describe``: ``$ command`` lines, channel chunks (stream, size, digest), exit statuses,
  resizes, refusals;
- ``Terminal``: the bytes a shell showed, decoded as the terminal would (UTF-8, a
  character split between two reads kept whole), for ``sessions replay``;
- ``asciicast``: the asciicast v2 lines of a session's shell: the header (terminal size
  and type from the shell's ``command`` entry), an ``o`` event per output chunk whose
  bytes were kept, ``r`` events for resizes, and an ``m`` marker at each signed ledger
  checkpoint taken while the shell ran (the marker names the checkpoint, so a moment of
  the recording points at what proves it).
Reads payloads only through the payload cipher; a chunk whose payload was not kept
(exec output below ``full``, every keystroke) or was purged is shown as its digest.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any

from ledgergate.services.keys import PayloadCipher, PayloadError
from ledgergate.store.base import Store

__all__ = ["Terminal", "asciicast", "describe", "is_ssh"]


def _d(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def is_ssh(e: dict[str, Any]) -> bool:
    c, ch = _d(e.get("command")), _d(e.get("chunk"))
    return (
        c.get("protocol") == "ssh"
        or ("channel" in ch and "stream" in ch)
        or e.get("kind") == "terminal.resize"
        or _d(e.get("client")).get("protocol") == "ssh"
    )


def describe(e: dict[str, Any]) -> str | None:
    """One line for an SSH entry, or None when it is not one."""
    if not is_ssh(e):
        return None
    kind = e.get("kind")
    c, ch = _d(e.get("command")), _d(e.get("chunk"))
    if kind in ("command", "decision.block"):
        op = c.get("op")
        what = c.get("text") or c.get("subsystem") or c.get("target") or c.get("path") or ""
        if c.get("path2"):
            what = f"{what} -> {c['path2']}"
        if "text_sha256" in c:
            what = f"<command line not recorded, sha256 {str(c['text_sha256'])[:12]}…>"
        pty = _d(c.get("pty"))
        term = f" (pty {pty.get('term')} {pty.get('cols')}x{pty.get('rows')})" if pty else ""
        line = f"ssh #{c.get('seq')} {op}{term}: {what}".rstrip(": ")
        if kind == "decision.block":
            dec = _d(e.get("decision"))
            line = f"REFUSED {line} by rule {dec.get('rule')}: {dec.get('message')}"
        return line
    if kind == "chunk":
        arrow = "->" if ch.get("stream") == "stdin" else "<-"
        kept = " (kept)" if ch.get("payload") else ""
        return (
            f"{arrow} ssh #{ch.get('command')} {ch.get('stream')} chunk {ch.get('seq')}: "
            f"{ch.get('size')} B, sha256 {str(ch.get('sha256_out'))[:12]}…{kept}"
        )
    if kind == "command.result":
        if "exit_signal" in e:
            return f"ssh #{c.get('seq')} {c.get('op')} ended by signal {e['exit_signal']}"
        if "exit_status" in e:
            return f"ssh #{c.get('seq')} {c.get('op')} exited {e['exit_status']}"
        return f"ssh #{c.get('seq')} {c.get('op')} {e.get('outcome')}: {e.get('reason', '')}"
    if kind == "terminal.resize":
        t = _d(e.get("terminal"))
        return f"ssh #{c.get('seq')} terminal resized to {t.get('cols')}x{t.get('rows')}"
    return None


def _payload(store: Store, cipher: PayloadCipher | None, digest: object) -> bytes | None:
    if not isinstance(digest, str) or cipher is None:
        return None
    blob = store.get_payload(digest)
    if blob is None:
        return None
    try:
        return cipher.open(digest, blob)
    except PayloadError:
        return None


class Terminal:
    """What a shell showed, as text, one chunk at a time."""

    def __init__(self, store: Store, cipher: PayloadCipher | None) -> None:
        self.store, self.cipher = store, cipher
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def output(self, e: dict[str, Any]) -> str | None:
        """The text an output chunk showed; None when its bytes were not kept."""
        ch = _d(e.get("chunk"))
        if ch.get("stream") not in ("stdout", "stderr"):
            return None
        data = _payload(self.store, self.cipher, ch.get("payload"))
        return None if data is None else self._dec.decode(data)


def asciicast(
    store: Store,
    cipher: PayloadCipher | None,
    timeline: list[dict[str, Any]],
    *,
    command: int | None = None,
) -> Iterator[str]:
    """The asciicast v2 lines of the session's shell (its first, or ``command``)."""
    shells = [
        e
        for e in timeline
        if e.get("kind") == "command"
        and _d(e.get("command")).get("protocol") == "ssh"
        and _d(e.get("command")).get("op") in ("shell", "exec")
        and (command is None or _d(e.get("command")).get("seq") == command)
    ]
    with_pty = [e for e in shells if _d(_d(e.get("command")).get("pty"))]
    if not (with_pty or shells):
        raise LookupError("the session has no shell or command to make a recording of")
    start = (with_pty or shells)[0]
    cmd = _d(start.get("command"))
    seq = cmd.get("seq")
    pty = _d(cmd.get("pty"))
    t0 = int(start["ts_ns"])
    header: dict[str, Any] = {
        "version": 2,
        "width": int(pty.get("cols") or 80),
        "height": int(pty.get("rows") or 24),
        "timestamp": t0 // 10**9,
        "env": {"TERM": str(pty.get("term") or "xterm"), "SHELL": "/bin/sh"},
        "title": f"ledgergate {start.get('connection')} {start.get('session_id')} "
        f"({_d(start.get('identity')).get('subject')})",
    }
    yield json.dumps(header)
    term = Terminal(store, cipher)
    end = t0
    mine = []
    for e in timeline:
        ch, c = _d(e.get("chunk")), _d(e.get("command"))
        if (e.get("kind") == "chunk" and ch.get("command") == seq) or (
            e.get("kind") == "terminal.resize" and c.get("seq") == seq
        ):
            mine.append(e)
        if e.get("kind") == "command.result" and c.get("seq") == seq:
            end = int(e["ts_ns"])
    marks = _checkpoints(store, start, end)
    for e in mine:
        ts = int(e["ts_ns"])
        while marks and marks[0][0] <= ts:
            mt, label = marks.pop(0)
            yield json.dumps([(mt - t0) / 1e9, "m", label])
        t = (ts - t0) / 1e9
        if e.get("kind") == "terminal.resize":
            tt = _d(e.get("terminal"))
            yield json.dumps([t, "r", f"{tt.get('cols')}x{tt.get('rows')}"])
            continue
        text = term.output(e)
        if text:
            yield json.dumps([t, "o", text])
    for mt, label in marks:
        yield json.dumps([(mt - t0) / 1e9, "m", label])


def _checkpoints(store: Store, start: dict[str, Any], end_ns: int) -> list[tuple[int, str]]:
    """(time, label) of the signed checkpoints of the session's stream while it ran."""
    stream = start.get("stream")
    if not isinstance(stream, str):
        return []
    t0 = int(start["ts_ns"])
    return sorted(
        (c.ts_ns, f"ledger checkpoint {stream}:{c.size}")
        for c in store.checkpoints(stream)
        if t0 <= c.ts_ns <= end_ns
    )
