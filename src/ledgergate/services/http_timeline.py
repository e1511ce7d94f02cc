"""How HTTP and S3 entries read in a session's timeline and replay.

Owns the one-line renderings of requests (``command`` entries with a ``protocol``),
their body chunks, ``command.result`` and ``object.manifest`` entries, and the
resolution of a manifest's chunks to their places on the ledger (``stream:seq``, what
``audit prove`` takes). Shared by ``sessions show`` and ``sessions replay``. Read-only.
"""

from __future__ import annotations

import json
from typing import Any

from ledgergate.store.base import Store

__all__ = ["describe", "is_http", "manifest_lines"]


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "?"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def is_http(e: dict[str, Any]) -> bool:
    c = e.get("command")
    if isinstance(c, dict) and c.get("protocol") in ("http", "s3"):
        return True
    ch = e.get("chunk")
    if isinstance(c, dict) and c.get("protocol") == "kafka":
        return False
    return (isinstance(ch, dict) and "framing" in ch) or e.get("kind") in (
        "command.result",
        "object.manifest",
    )


def _target(c: dict[str, Any]) -> str:
    path = c.get("path")
    if path is None:
        path = f"<path sha256 {str(c.get('path_sha256'))[:12]}…>"
    q = c.get("query") or []
    if q:
        path += "?" + "&".join(f"{k}={v}" if v != "" else str(k) for k, v in q)
    return str(path)


def _retransmits(r: dict[str, Any]) -> str:
    return (
        f"; retransmits request #{r.get('command')} of {r.get('identity')} "
        f"(session {r.get('session_id')}, {r.get('outcome')})"
    )


def describe(e: dict[str, Any]) -> str | None:
    """One line for an HTTP/S3 entry (None: not one)."""
    kind = e.get("kind")
    c = e.get("command") if isinstance(e.get("command"), dict) else {}
    assert isinstance(c, dict)
    if kind in ("command", "decision.block") and c.get("protocol") in ("http", "s3"):
        op = c.get("op")
        line = f"request #{c.get('seq')} {c.get('method')} {_target(c)}"
        if c.get("protocol") == "s3":
            line += f" ({op})"
        if c.get("content_length") is not None:
            line += f", {_size(c.get('content_length'))}"
        if c.get("retransmits"):
            r = c["retransmits"]
            line += _retransmits(r)
        if kind == "decision.block":
            d = e.get("decision") or {}
            line += f" -- refused by rule {d.get('rule')}: {d.get('message')}"
        return line
    if kind == "chunk" and isinstance(e.get("chunk"), dict) and "framing" in e["chunk"]:
        ch = e["chunk"]
        arrow = "->" if e.get("direction") == "c2s" else "<-"
        digest = ch.get("sha256_out") or ch.get("sha256_in")
        line = (
            f"{arrow} chunk {ch.get('seq')} of request #{ch.get('command')}: "
            f"{_size(ch.get('size'))} ({ch.get('framing')}), sha256 {str(digest)[:12]}…"
        )
        if ch.get("sha256_in") != ch.get("sha256_out") and ch.get("sha256_out"):
            line += f" (received {str(ch.get('sha256_in'))[:12]}…)"
        if ch.get("signature"):
            line += " signature verified"
        line += f" [{e.get('outcome')}]"
        if e.get("reason"):
            line += f" {e['reason']}"
        return line
    if kind == "command.result" and c.get("protocol") != "kafka":
        line = f"<- request #{c.get('seq')} {c.get('op')}: {e.get('outcome')}"
        if e.get("status") is not None:
            line += f" {e['status']}"
        if e.get("etag"):
            line += f" ETag {e['etag']}"
        if e.get("version_id"):
            line += f" version {e['version_id']}"
        err = e.get("error")
        if isinstance(err, dict):
            line += f" ({err.get('code')}: {err.get('message', '')})".replace(": )", ")")
        if e.get("reason"):
            line += f" ({e['reason']})"
        chunks = e.get("chunks") or {}
        line += f"; {chunks.get('c2s', 0)} chunks up, {chunks.get('s2c', 0)} down"
        if e.get("retransmits"):
            line += _retransmits(e["retransmits"])
        return line
    if kind == "object.manifest":
        o = e.get("object") or {}
        parts = o.get("parts") or []
        n = sum(len(p.get("chunks") or []) for p in parts)
        whole = "" if e.get("complete") else " (some parts were not seen by this gateway)"
        return (
            f"object {o.get('bucket')}/{o.get('key')}: {_size(o.get('size'))}, ETag "
            f"{o.get('etag')}, {len(parts)} part(s), {n} chunk(s){whole}"
        )
    return None


def manifest_lines(store: Store, e: dict[str, Any]) -> list[str]:
    """The manifest's parts and chunks, each chunk with its ledger place."""
    o = e.get("object") or {}
    parts = [p for p in (o.get("parts") or []) if isinstance(p, dict)]
    sids = sorted({str(p["session_id"]) for p in parts if p.get("session_id")})
    places: dict[tuple[str, Any, Any], str] = {}
    for row in store.find_entries(kinds=("chunk",), session_ids=sids) if sids else []:
        doc = json.loads(row.canonical)
        ch = doc.get("chunk") or {}
        if doc.get("direction") == "c2s":
            places[(str(doc.get("session_id")), ch.get("command"), ch.get("seq"))] = (
                f"{row.stream}:{row.seq}"
            )
    out: list[str] = []
    for p in parts:
        label = f"part {p['part_number']}" if p.get("part_number") is not None else "body"
        if p.get("seen") is False:
            out.append(f"    {label}: not seen by this gateway")
            continue
        out.append(
            f"    {label}: request #{p.get('command')} of session {p.get('session_id')}, "
            f"{_size(p.get('size'))}, ETag {p.get('etag')}"
        )
        for ch in p.get("chunks") or []:
            where = places.get((str(p.get("session_id")), p.get("command"), ch.get("seq")), "?")
            out.append(
                f"      chunk {ch.get('seq')}: {_size(ch.get('size'))} sha256 {ch.get('sha256')}"
                f" at {where}"
            )
    return out
