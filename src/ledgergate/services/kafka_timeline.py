"""How Kafka entries read in a session's timeline and replay.

Owns the one-line renderings of Kafka requests (``command`` entries with protocol
``kafka``: produce requests, admin operations), their partition batches (``chunk``
entries naming a topic), the brokers' answers (``command.result``), consumer-group steps
(``group.*``), masking and refusals; and, for ``recording: full`` sessions whose batches
were kept, the messages of a batch, one line each, in offset order. Shared by
``sessions show`` and ``sessions replay``. Read-only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "message_lines"]

# A message's key and value are shown up to this many bytes in a replay.
SHOW_BYTES = 200


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "?"
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _show(b: bytes | None) -> str:
    if b is None:
        return "null"
    text = b[:SHOW_BYTES].decode("utf-8", "backslashreplace")
    return repr(text) + ("…" if len(b) > SHOW_BYTES else "")


def describe(e: dict[str, Any]) -> str | None:
    """One line for a Kafka entry (None: not one)."""
    kind = str(e.get("kind"))
    c = e.get("command") if isinstance(e.get("command"), dict) else None
    ch = e.get("chunk") if isinstance(e.get("chunk"), dict) else None
    if kind in ("command", "decision.block") and c is not None and c.get("protocol") == "kafka":
        op = c.get("op")
        if op == "produce":
            line = (
                f"kafka> produce #{c.get('seq')}: {c.get('records')} record(s) to "
                f"{c.get('partitions')} partition(s), acks={c.get('acks')}"
            )
            if c.get("transactional_id"):
                line += f", transaction {c['transactional_id']}"
        else:
            line = f"kafka> {op} #{c.get('seq')}"
            if c.get("topics"):
                line += " " + ", ".join(map(str, c["topics"]))
            if c.get("consumer_group"):
                line += f" group {c['consumer_group']}"
            if c.get("request") and kind == "command":
                line += f" {c['request']}"
        if kind == "decision.block":
            d = e.get("decision") or {}
            line += f" -- refused by rule {d.get('rule')}: {d.get('message')}"
        return line
    if kind == "chunk" and ch is not None and "topic" in ch:
        arrow = "->" if e.get("direction") == "c2s" else "<-"
        op = ch.get("op", "produce" if arrow == "->" else "fetch")
        where = f"{ch.get('topic')}[{ch.get('partition')}]"
        offs = ch.get("offsets")
        if isinstance(offs, list) and len(offs) == 2:
            where += f" offsets {offs[0]}..{offs[1]}"
        line = (
            f"{arrow} {op} {where}: {ch.get('records')} record(s), {_size(ch.get('size'))}, "
            f"{ch.get('compression')}, sha256 {str(ch.get('sha256_out'))[:12]}…"
        )
        if ch.get("sha256_in") != ch.get("sha256_out"):
            line += f" (received {str(ch.get('sha256_in'))[:12]}…: masked)"
        prod = ch.get("producer")
        if isinstance(prod, dict):
            line += (
                f", producer {prod.get('id')}/{prod.get('epoch')} seq {prod.get('base_sequence')}"
            )
        r = ch.get("retransmits")
        if isinstance(r, dict):
            line += f"; retransmits produce #{r.get('command')} of session {r.get('session_id')}"
        return line
    if kind == "command.result" and c is not None and c.get("protocol") == "kafka":
        line = f"<- {c.get('op')} #{c.get('seq')}: {e.get('outcome')}"
        parts = e.get("partitions")
        if isinstance(parts, list) and parts:
            line += " " + ", ".join(
                f"{p.get('topic')}[{p.get('partition')}]"
                + (f"@{p.get('base_offset')}" if not p.get("error") else f" {p.get('error')}")
                for p in parts
                if isinstance(p, dict)
            )
        if e.get("errors"):
            line += " " + ", ".join(map(str, e["errors"]))
        return line
    if kind.startswith("group."):
        bits = [f"{k}={e[k]}" for k in ("group_id", "member_id", "generation_id") if e.get(k)]
        line = f"-- {kind} " + " ".join(bits)
        if e.get("offsets"):
            line += " offsets " + ", ".join(f"{t}[{p}]={o}" for t, p, o in e["offsets"])
        return line.rstrip()
    if kind == "mask" and isinstance(e.get("chunk"), dict) and "topic" in e["chunk"]:
        m = e["chunk"]
        what = ", ".join(
            f"{x.get('field')} ×{x.get('count')} ({x.get('rule')})" for x in e.get("masking") or []
        )
        return f"-- masked in {m.get('topic')}[{m.get('partition')}]: {what}"
    return None


def message_lines(data: bytes, fetched: bool) -> list[str]:
    """The messages of a kept batch payload, one line each (as the client saw them)."""
    # Imported here: the record codec (and AWS's CRC runtime under it) is not loaded by
    # every CLI command that imports the sessions service.
    from ledgergate.wire.kafka import records as kr

    out: list[str] = []
    try:
        walked = kr.read_batches(data, allow_partial=True)
        for b in walked.batches:
            if b.header.is_control:
                continue
            for i, r in enumerate(kr.decode_records(b)):
                at = f"offset {r.offset}" if fetched else f"record {i}"
                hdrs = (
                    " headers "
                    + ", ".join(
                        f"{h.key.decode('utf-8', 'replace')}={_show(h.value)}" for h in r.headers
                    )
                    if r.headers
                    else ""
                )
                out.append(f"     {at}: key {_show(r.key)} value {_show(r.value)}{hdrs}")
    except kr.RecordsError as e:
        out.append(f"     (the kept batch does not parse: {e})")
    return out


def partitions(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Kafka session's record batches grouped by topic and partition, in ledger
    order within each: what was produced and fetched there, the offsets seen, and each
    batch's line (as ``describe`` gives it) with its ledger position."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for e in timeline:
        ch = e.get("chunk")
        if e.get("kind") != "chunk" or not isinstance(ch, dict) or "topic" not in ch:
            continue
        key = (str(ch.get("topic")), int(ch.get("partition") or 0))
        p = out.setdefault(
            key,
            {
                "topic": key[0],
                "partition": key[1],
                "produced": 0,
                "fetched": 0,
                "bytes": 0,
                "offsets": None,
                "batches": [],
            },
        )
        records = int(ch.get("records") or 0)
        p["produced" if e.get("direction") == "c2s" else "fetched"] += records
        p["bytes"] += int(ch.get("size") or 0)
        offs = ch.get("offsets")
        if isinstance(offs, list) and len(offs) == 2:
            lo, hi = int(offs[0]), int(offs[1])
            seen = p["offsets"]
            p["offsets"] = [lo, hi] if seen is None else [min(seen[0], lo), max(seen[1], hi)]
        where = f"{e.get('stream')}:{e.get('seq')}"
        p["batches"].append({"entry": where, "ts_ns": e.get("ts_ns"), "line": describe(e)})
    return [out[k] for k in sorted(out)]
