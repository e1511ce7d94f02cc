"""What the ledger says about a Kafka session: produced and fetched batches, admin
operations, consumer-group steps and the brokers' answers.

The same contract as the other protocols (``core.recording``):
- Produce: a ``command`` entry for the request (acks, transactional id) and a ``chunk``
  entry per partition batch (direction ``c2s``), all durable before the request reaches
  a broker; the broker's answer closes it with a ``command.result`` (per partition: the
  base offset assigned or the error).
- Fetch: a ``chunk`` entry per partition that returned records (direction ``s2c``),
  written before the records reach the client.
- Admin operations: a ``command`` entry, durable before the broker sees it, closed by a
  ``command.result`` with the broker's error codes.
- Consumer groups: ``group.*`` entries (join, sync, leave, offsets committed).
Every batch entry lists the SHA-256 of each of its records (key, value and headers as
Kafka encodes them: from a record's key length to its end; independent of offsets and
timestamps, so a message has the same digest when produced and when fetched), so "who
produced / who read message X" is a search for its digest. At ``metadata`` topic names
are kept (they are what grants and policy name); at ``full`` the batches themselves are
kept as payloads (encrypted, apart from entries). Pure: timestamps come as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.recording import SessionRecorder
from ledgergate.wire.kafka import records as kr

__all__ = ["BatchFact", "KafkaRecorder", "batch_fact"]


@dataclass(frozen=True, slots=True)
class BatchFact:
    """One partition's record batches in a Produce request or a Fetch response."""

    topic: str
    partition: int
    data: bytes | memoryview  # the partition's records bytes as received
    digests: tuple[str, ...]  # per record, in order
    records: int
    first_offset: int | None = None  # fetched: the first record's offset
    last_offset: int | None = None
    producer_id: int | None = None
    producer_epoch: int | None = None
    base_sequence: int | None = None
    compression: str = "none"
    transactional: bool = False
    data_out: bytes | None = None  # what was forwarded, when the gateway rewrote it
    partial: int = 0  # bytes of a truncated trailing batch (Fetch size limits)
    aborted_digests: tuple[str, ...] = ()  # fetched, of aborted transactions: not read


class KafkaRecorder(SessionRecorder):
    """Drafts for one Kafka client connection."""

    __slots__ = ("chunk_seq",)

    def __init__(self, base: dict[str, Any], level: str) -> None:
        super().__init__(base, level)
        self.chunk_seq = 0

    def command_entry(self, ts_ns: int, op: str, fields: dict[str, Any]) -> Draft:
        """A request the ledger must hold before a broker sees it (produce, admin)."""
        self.cmd_seq += 1
        cmd = {"seq": self.cmd_seq, "protocol": "kafka", "op": op, **fields}
        return Draft(ts_ns, "command", {**self.base, "command": cmd}, (), True)

    def batch(
        self, ts_ns: int, cmd_seq: int | None, direction: str, b: BatchFact, **extra: Any
    ) -> Draft:
        self.chunk_seq += 1
        d_in = sha256(b.data).hexdigest()
        d_out = d_in if b.data_out is None else sha256(b.data_out).hexdigest()
        chunk: dict[str, Any] = {
            "seq": self.chunk_seq,
            "command": cmd_seq,
            "topic": b.topic,
            "partition": b.partition,
            "size": len(b.data),
            "sha256_in": d_in,
            "sha256_out": d_out,
            "records": b.records,
            "record_sha256": list(b.digests),
            "compression": b.compression,
        }
        if b.data_out is not None:
            chunk["size_out"] = len(b.data_out)
        if b.first_offset is not None:
            chunk["offsets"] = [b.first_offset, b.last_offset]
        if b.producer_id is not None and b.producer_id >= 0:
            chunk["producer"] = {
                "id": b.producer_id,
                "epoch": b.producer_epoch,
                "base_sequence": b.base_sequence,
            }
        if b.transactional:
            chunk["transactional"] = True
        if b.partial:
            chunk["partial_bytes"] = b.partial
        if b.aborted_digests:
            chunk["aborted_sha256"] = list(b.aborted_digests)
        chunk.update(extra)
        fields = {**self.base, "direction": direction, "chunk": chunk, "outcome": "forwarded"}
        durable = direction == "c2s"
        if self.full:
            sent = bytes(b.data) if b.data_out is None else b.data_out
            chunk["payload"] = d_out
            return Draft(ts_ns, "chunk", fields, ((d_out, sent),), durable)
        return Draft(ts_ns, "chunk", fields, (), durable)

    def blocked_request(
        self, ts_ns: int, op: str, fields: dict[str, Any], rule: str | None, message: str
    ) -> Draft:
        """A request a rule refused: what was attempted and the rule."""
        self.cmd_seq += 1
        return Draft(
            ts_ns,
            "decision.block",
            {
                **self.base,
                "command": {"seq": self.cmd_seq, "protocol": "kafka", "op": op, **fields},
                "decision": {"action": "block", "rule": rule, "message": message},
                "outcome": "refused",
            },
            (),
            True,
        )

    def result(self, ts_ns: int, cmd_seq: int, op: str, outcome: str, **fields: Any) -> Draft:
        """The ``command.result`` closing command ``cmd_seq`` with the broker's answer."""
        return Draft(
            ts_ns,
            "command.result",
            {
                **self.base,
                "command": {"seq": cmd_seq, "op": op, "protocol": "kafka"},
                "outcome": outcome,
                **fields,
            },
        )


# A control record's key is (version: int16, type: int16); type 0 marks an abort.
_ABORT_MARKER = 0


def _is_abort_marker(b: kr.Batch) -> bool:
    recs = kr.decode_records(b)
    key = recs[0].key if recs else None
    return key is not None and len(key) >= 4 and int.from_bytes(key[2:4], "big") == _ABORT_MARKER


def batch_fact(
    topic: str,
    partition: int,
    data: Any,
    *,
    fetched: bool,
    aborted: list[tuple[int, int]] | None = None,
) -> BatchFact:
    """A partition's batches as the ledger records them (RecordsError if unreadable).

    ``aborted``: a read_committed Fetch's aborted transactions ((producer id, first
    offset)); their records reach the client but it drops them, as Kafka's consumers do:
    a transactional batch of a producer whose aborted transaction began at or before it
    is dropped until that producer's abort marker. Those records are listed apart
    (``aborted_digests``), never as read."""
    view = memoryview(data)
    walked = kr.read_batches(view, allow_partial=fetched)
    pending = sorted(aborted or (), key=lambda a: a[1])
    dropping: set[int] = set()
    dropped: list[str] = []
    digests: list[str] = []
    count = 0
    first = last = None
    head = None
    compression = "none"
    transactional = False
    for b in walked.batches:
        h = b.header
        if not b.crc_valid:
            raise kr.RecordsError(f"batch at offset {h.base_offset} fails its CRC-32C")
        if head is None:
            head = h
            compression = h.compression.name.lower()
            transactional = h.is_transactional
        if pending or dropping:
            while pending and pending[0][1] <= h.last_offset:
                dropping.add(pending.pop(0)[0])
            if h.is_control:
                if h.producer_id in dropping and _is_abort_marker(b):
                    dropping.discard(h.producer_id)
                continue
            if h.is_transactional and h.producer_id in dropping:
                dropped.extend(kr.record_hex_digests(b)[0])
                continue
        if h.is_control:
            continue
        hexes, lo, hi = kr.record_hex_digests(b)
        digests += hexes
        if lo is not None:
            if first is None:
                first = lo
            last = hi
        count += h.record_count
    partial = walked.partial.available if walked.partial is not None else 0
    return BatchFact(
        topic=topic,
        partition=partition,
        data=view if not partial else view[: len(view) - partial],
        digests=tuple(digests),
        records=len(digests),
        first_offset=first if fetched else None,
        last_offset=last if fetched else None,
        producer_id=head.producer_id if head is not None and not fetched else None,
        producer_epoch=head.producer_epoch if head is not None and not fetched else None,
        base_sequence=head.base_sequence if head is not None and not fetched else None,
        compression=compression,
        transactional=transactional,
        partial=partial,
        aborted_digests=tuple(dropped),
    )
