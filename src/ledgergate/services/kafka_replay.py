"""Re-producing a recorded Kafka session's messages into a topic, through the gateway.

Owns taking the produce batches a ``recording: full`` session kept (decrypted with the
payload key), in their recorded order, and sending their messages (key, value,
headers; keys keep their partition when the target topic has it) to a topic the person
replaying names, as a Kafka client of the gateway: TLS to the connection's bootstrap
port, SASL/PLAIN with that person's own ledgergate token, Metadata to find each
partition's broker (the gateway's port for it), then Produce with acks=all. The gateway
records it like any client's traffic: under the replaying person's identity. A small
client on the project's own codecs (wire.kafka); the cold path, so asyncio streams.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka import records as kr

__all__ = ["Message", "ReplayError", "kept_messages", "replay_into", "reproduce"]

K = km.ApiKey
# Records per Produce batch the replay builds (well under a broker's message.max.bytes
# for ordinary records; a session with huge records sends smaller batches).
BATCH_RECORDS = 500
BATCH_BYTES = 512 * 1024
# How long one request may take.
REQUEST_TIMEOUT_S = 30.0


class ReplayError(RuntimeError):
    """The replay could not be sent (message safe to show)."""


@dataclass(frozen=True, slots=True)
class Message:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[kr.Header, ...]


def kept_messages(batches: list[tuple[int, bytes]]) -> list[Message]:
    """The messages of kept produce batches ((partition, records bytes)), in order."""
    out: list[Message] = []
    for partition, data in batches:
        for b in kr.read_batches(data).batches:
            if b.header.is_control:
                continue
            for r in kr.decode_records(b):
                out.append(Message(partition, r.key, r.value, tuple(r.headers)))
    return out


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w, self.corr = reader, writer, 0

    async def call(self, key: int, version: int, msg: dict[str, Any]) -> dict[str, Any]:
        self.corr += 1
        body = km.encode_request_header(key, version, self.corr, "ledgergate-replay")
        body += km.encode_request(key, version, msg)
        self.w.write(struct.pack(">i", len(body)) + body)
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            await self.w.drain()
            size = struct.unpack(">i", await self.r.readexactly(4))[0]
            frame = await self.r.readexactly(size)
        hs = km.response_header_size(key, version, frame)
        return km.decode_response(key, version, memoryview(frame)[hs:])

    def close(self) -> None:
        self.w.close()


async def _login(host: str, port: int, tls: ssl.SSLContext | None, user: str, token: str) -> _Conn:
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None
        )
    except (OSError, ssl.SSLError) as e:
        raise ReplayError(f"cannot reach the gateway at {host}:{port}: {e}") from None
    c = _Conn(reader, writer)
    r = await c.call(K.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
    if r["error_code"]:
        raise ReplayError(f"SASL/PLAIN refused: {km.error_name(r['error_code'])}")
    r = await c.call(K.SASL_AUTHENTICATE, 2, {"auth_bytes": f"\0{user}\0{token}".encode()})
    if r["error_code"]:
        raise ReplayError(f"the gateway refused the token: {r.get('error_message')}")
    return c


async def reproduce(
    messages: list[Message],
    topic: str,
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    user: str,
    token: str,
    now_ms: int,
) -> int:
    """Send ``messages`` to ``topic`` in order (timestamped ``now_ms``); how many the
    brokers accepted."""
    boot = await _login(host, port, tls, user, token)
    try:
        md = await boot.call(
            K.METADATA, 12, {"topics": [{"name": topic}], "allow_auto_topic_creation": False}
        )
    finally:
        boot.close()
    brokers = {b["node_id"]: (b["host"], b["port"]) for b in md["brokers"]}
    t = md["topics"][0]
    if t["error_code"]:
        raise ReplayError(f"topic {topic!r}: {km.error_name(t['error_code'])}")
    leaders = {p["partition_index"]: p["leader_id"] for p in t["partitions"]}
    n = len(leaders)
    by_part: dict[int, list[Message]] = defaultdict(list)
    for m in messages:
        by_part[m.partition % n].append(m)
    conns: dict[int, _Conn] = {}
    sent = 0
    try:
        for part, msgs in sorted(by_part.items()):
            node = leaders[part]
            if node not in conns:
                bh, bp = brokers[node]
                conns[node] = await _login(bh, bp, tls, user, token)
            for chunk in _chunks(msgs):
                last = len(chunk) - 1
                header = kr.BatchHeader(
                    0, 0, -1, 2, 0, 0, last, now_ms, now_ms, -1, -1, -1, len(chunk)
                )
                batch = kr.encode_batch(
                    header,
                    [kr.NewRecord(i, 0, m.key, m.value, m.headers) for i, m in enumerate(chunk)],
                )
                r = await conns[node].call(
                    K.PRODUCE,
                    9,
                    {
                        "transactional_id": None,
                        "acks": -1,
                        "timeout_ms": int(REQUEST_TIMEOUT_S * 1000),
                        "topic_data": [
                            {"name": topic, "partition_data": [{"index": part, "records": batch}]}
                        ],
                    },
                )
                p = r["responses"][0]["partition_responses"][0]
                if p["error_code"]:
                    raise ReplayError(
                        f"{topic}[{part}]: {km.error_name(p['error_code'])}"
                        + (f" ({p['error_message']})" if p.get("error_message") else "")
                        + f" after {sent} message(s)"
                    )
                sent += len(chunk)
    finally:
        for c in conns.values():
            c.close()
    return sent


def _chunks(msgs: list[Message]) -> list[list[Message]]:
    out: list[list[Message]] = [[]]
    size = 0
    for m in msgs:
        w = len(m.key or b"") + len(m.value or b"")
        if out[-1] and (len(out[-1]) >= BATCH_RECORDS or size + w > BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append(m)
        size += w
    return [c for c in out if c]


def replay_into(
    store: Any,
    cipher: Any,
    settings: Any,
    session_id: str,
    topic: str,
    *,
    token: str,
    user: str,
) -> int:
    """Re-produce the messages session ``session_id`` produced into ``topic`` through
    the gateway serving its connection (ReplayError when it cannot)."""
    import time

    from ledgergate.core.config import KafkaConnection
    from ledgergate.services.sessions import session_timeline

    if cipher is None:
        raise ReplayError("no payload key in this data directory: the batches cannot be read")
    timeline = session_timeline(store, session_id)
    if not timeline:
        raise ReplayError(f"no session {session_id}")
    conn_name = next((e.get("connection") for e in timeline if e.get("connection")), None)
    conn = settings.config.connection(conn_name) if conn_name else None
    if not isinstance(conn, KafkaConnection):
        raise ReplayError(f"session {session_id} is not on a kafka connection")
    batches: list[tuple[int, bytes]] = []
    for e in timeline:
        ch = e.get("chunk")
        if e.get("kind") != "chunk" or e.get("direction") != "c2s" or not isinstance(ch, dict):
            continue
        digest = ch.get("payload")
        blob = store.get_payload(digest) if isinstance(digest, str) else None
        if blob is None:
            raise ReplayError(
                f"session {session_id} has produce batches whose payloads were not kept "
                "(recording: full keeps them) or were purged"
            )
        try:
            batches.append((int(ch.get("partition", 0)), cipher.open(digest, blob)))
        except ValueError as e:  # PayloadError: the wrong key, or a damaged payload
            raise ReplayError(f"a kept batch cannot be read: {e}") from None
    messages = kept_messages(batches)
    if not messages:
        raise ReplayError(f"session {session_id} produced no messages")
    host, port = conn.listen_address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    tls = None
    if settings.config.listeners.kafka.tls:
        tls = ssl.create_default_context(cafile=str(settings.tls_cert))
        tls.check_hostname = False  # the bootstrap address may be an IP; the CA is pinned
    return asyncio.run(
        reproduce(
            messages,
            topic,
            host=host,
            port=port,
            tls=tls,
            user=user,
            token=token,
            now_ms=time.time_ns() // 1_000_000,
        )
    )
