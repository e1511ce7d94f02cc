"""Reading sessions back: list, timeline, replay. Shared by the CLI and the API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import IO, Any

from ledgergate.services.keys import PayloadCipher
from ledgergate.store.sqlite import SqliteStore
from ledgergate.wire.pg.frames import FrameError, iter_messages

__all__ = ["list_sessions", "replay", "session_timeline"]


def list_sessions(store: SqliteStore, *, identity: str | None = None, connection: str | None = None,
                  since_ns: int | None = None, until_ns: int | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    where = "kind='session.open'"
    args: list[Any] = []
    if identity:
        where += " AND identity=?"
        args.append(identity)
    if connection:
        where += " AND connection=?"
        args.append(connection)
    if since_ns is not None:
        where += " AND ts_ns>=?"
        args.append(since_ns)
    if until_ns is not None:
        where += " AND ts_ns<?"
        args.append(until_ns)
    where += " ORDER BY ts_ns DESC LIMIT ?"
    args.append(limit)
    out = []
    for _stream, _seq, ts, _kind, data in store.query_entries(where, args):
        doc = json.loads(data)
        closes = store.query_entries("session_id=? AND kind='session.close'", (doc["session_id"],))
        close = json.loads(closes[0][4]) if closes else None
        out.append({
            "session_id": doc["session_id"], "opened_ns": ts, "identity": doc.get("identity"),
            "connection": doc.get("connection"), "source": doc.get("source"),
            "client": doc.get("client"), "tls": doc.get("tls"),
            "closed_ns": close["ts_ns"] if close else None,
            "outcome": close.get("outcome") if close else None,
            "stats": close.get("stats") if close else None,
        })
    return out


def session_timeline(store: SqliteStore, session_id: str) -> list[dict[str, Any]]:
    rows = store.query_entries("session_id=? ORDER BY ts_ns, stream, seq", (session_id,))
    out = []
    for stream, seq, _ts, _kind, data in rows:
        doc = json.loads(data)
        doc["entry"] = f"{stream}:{seq}"
        out.append(doc)
    return out


def _render_backend(data: bytes) -> list[str]:
    """Backend messages of a recorded chunk as psql would show them (text format)."""
    lines: list[str] = []
    try:
        msgs = list(iter_messages(data))
    except FrameError:
        return [f"<{len(data)} bytes: partial frames>"]
    for tag, body in msgs:
        if tag == b"T":
            n = int.from_bytes(body[:2], "big")
            pos, names = 2, []
            for _ in range(n):
                end = body.index(b"\x00", pos)
                names.append(body[pos:end].decode("utf-8", "replace"))
                pos = end + 1 + 18
            lines.append(" | ".join(names))
            lines.append("-+-".join("-" * max(len(x), 1) for x in names))
        elif tag == b"D":
            n = int.from_bytes(body[:2], "big")
            pos, vals = 2, []
            for _ in range(n):
                ln = int.from_bytes(body[pos : pos + 4], "big", signed=True)
                pos += 4
                if ln < 0:
                    vals.append("")
                else:
                    vals.append(body[pos : pos + ln].decode("utf-8", "replace"))
                    pos += ln
            lines.append(" | ".join(vals))
        elif tag == b"C":
            lines.append(f"({body.rstrip(bytes(1)).decode('ascii', 'replace')})")
        elif tag == b"E":
            fields = dict((chr(f[0]), f[1:].decode("utf-8", "replace")) for f in body.split(b"\x00") if f)
            lines.append(f"{fields.get('S', 'ERROR')}:  {fields.get('M', '')}")
        elif tag == b"d":
            lines.append(body.decode("utf-8", "replace").rstrip("\n"))
    return lines


def replay(store: SqliteStore, session_id: str, out: IO[str], *, speed: float = 1.0,
           cipher: PayloadCipher | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Re-emit commands and result chunks in order with their original timing (divided
    by ``speed``; 0 = no waiting). Returns the number of entries replayed."""
    timeline = session_timeline(store, session_id)
    last = None
    for e in timeline:
        ts = e["ts_ns"]
        if last is not None and speed > 0:
            sleep(max(0.0, (ts - last) / 1e9 / speed))
        last = ts
        kind = e["kind"]
        if kind == "command":
            c = e["command"]
            text = c.get("text") or f"<statement {c.get('text_sha256', '')[:16]}…>"
            if c.get("op") == "bind":
                text = f"BIND {c.get('statement') or '(unnamed)'} with {c['params']['count']} parameter(s)"
            out.write(f"=> {text}\n")
        elif kind == "chunk":
            ch = e["chunk"]
            blob = store.payload(ch["payload"]) if ch.get("payload") else None
            if blob is not None and cipher is not None:
                data = cipher.open(ch["payload"], blob)
                if e.get("direction") == "s2c":
                    for line in _render_backend(data):
                        out.write(f"   {line}\n")
                    continue
            arrow = "<-" if e.get("direction") == "s2c" else "->"
            tags = f" {', '.join(e['tags'])}" if e.get("tags") else ""
            out.write(f"   {arrow} chunk {ch['seq']}: {ch.get('rows', ch.get('messages'))} row(s)/message(s), {ch['size']} bytes{tags}"
                      f" [{e.get('outcome')}]\n")
        else:
            detail = e.get("outcome") or e.get("reason") or ""
            out.write(f"-- {kind} {detail}\n")
    return len(timeline)
