"""What each Kafka request and response means for the gateway and its ledger.

Owns, per API: which APIs (and versions) the gateway offers clients; ApiVersions
answered by the gateway (narrowed to what broker and gateway both handle); Produce
recorded before it reaches a broker (a ``command`` and a ``chunk`` per partition batch,
with per-record digests) and closed by the broker's answer; Fetch responses recorded
per partition before the records reach the client; admin operations recorded before
a broker sees them; consumer-group steps recorded as ``group.*`` entries; broker
addresses rewritten in every response that carries one. Frames nothing needs to read
pass through as the bytes that arrived. The connection's ordering and flow control are
``client``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from hashlib import sha256
from typing import TYPE_CHECKING, Any

import orjson

from ledgergate.core.masking.records import mask_partition
from ledgergate.core.policy.engine import Decision, SessionPolicy
from ledgergate.core.policy.kafka import KafkaAsk, check_kafka
from ledgergate.core.policy.rules import PolicyRule
from ledgergate.core.recording_kafka import BatchFact, batch_fact
from ledgergate.proxy.kafka.apis import (
    ADMIN,
    CORRUPT_MESSAGE,
    GATEWAY_APIS,
    GROUP,
    POLICY_VIOLATION,
    UNSUPPORTED_VERSION,
    K,
    api_name,
)
from ledgergate.proxy.kafka.backend import BackendError
from ledgergate.proxy.kafka.guard import Guard
from ledgergate.proxy.review import ReviewAnswer, ReviewAsk
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka import records as kr
from ledgergate.wire.kafka.addresses import (
    CARRY_ADDRESSES,
    narrow_versions,
    rewrite_addresses,
    topic_ids,
)
from ledgergate.wire.kafka.refusals import REFUSABLE, refusal

if TYPE_CHECKING:
    from ledgergate.proxy.kafka.client import KafkaClientConn, Slot

__all__ = ["GATEWAY_APIS", "Traffic", "api_name", "batch_fact"]

log = logging.getLogger("ledgergate.kafka")
now_ns = time.time_ns
# A held admin operation is answered this long before the client's own timeout_ms.
REVIEW_MARGIN_S = 2


def _frame(header: bytes | memoryview, body: bytes) -> list[bytes | memoryview]:
    return [(len(header) + len(body)).to_bytes(4, "big"), header, body]


class Traffic(Guard):
    __slots__ = ("c", "cluster", "gw")

    def __init__(self, c: KafkaClientConn) -> None:
        self.c = c
        self.gw = c.gw
        self.cluster = c.cluster

    # -- what is offered -------------------------------------------------------------------
    def allowed(self, key: int, version: int) -> bool:
        if key not in GATEWAY_APIS:
            return False
        link = self.c.link
        rng = link.versions.get(key) if link is not None else None
        if rng is None or not rng[0] <= version <= rng[1]:
            return False
        mine = GATEWAY_APIS[key]
        return mine is None or mine[0] <= version <= mine[1]

    def api_versions(self, h: km.RequestHeader, f: memoryview) -> None:
        slot = self.c.local(h)
        self.c.pause("versions")
        self.c.spawn(self._api_versions(slot, h))

    async def _api_versions(self, slot: Slot, h: km.RequestHeader) -> None:
        try:
            try:
                broker = await self.cluster.broker_versions()
            except BackendError as e:
                self.c.reject(f"no broker answered ApiVersions: {e}")
                return
            keys = [
                {"api_key": k, "min_version": lo, "max_version": hi}
                for k, lo, hi in narrow_versions(broker, GATEWAY_APIS)
            ]
            lo, hi = km.DECODED[K.API_VERSIONS]
            if not lo <= h.api_version <= hi:
                # KIP-511: answer v0 with UNSUPPORTED_VERSION and the versions offered.
                slot.version = 0
                self.c.answer(slot, {"error_code": UNSUPPORTED_VERSION, "api_keys": keys})
                return
            self.c.answer(slot, {"error_code": 0, "api_keys": keys, "throttle_time_ms": 0})
        finally:
            self.c.resume("versions")

    # -- requests --------------------------------------------------------------------------
    def request(self, h: km.RequestHeader, f: memoryview) -> None:
        key = h.api_key
        if key == K.PRODUCE:
            self._produce(h, f)
            return
        sp = self.policy()
        if sp is not None and sp.requests_guarded and key in REFUSABLE and key != K.PRODUCE:
            msg = km.decode_request(key, h.api_version, f[h.size :])
            ask = self._ask(key, msg)
            d = check_kafka(sp, ask)
            if not d.allowed:
                self._refuse(h, msg, ask, d, sp)
                return
            if d.review is not None:
                if key in ADMIN:
                    self._review(h, f, msg, ask, d, sp)
                else:  # reviews hold admin operations; anything else a rule names fails closed
                    self._refuse(h, msg, ask, d, sp)
                return
        if key in ADMIN:
            self._admin(h, f)
        elif key in GROUP:
            self._group(h, f)
            self.c.expect(h)
            self.c.forward(f)
        else:
            self.c.expect(h)
            self.c.forward(f)

    def _produce(self, h: km.RequestHeader, f: memoryview) -> None:
        c = self.c
        s = c.session
        assert s is not None
        rec = s.recorder
        body = km.decode_request(K.PRODUCE, h.api_version, f[h.size :])
        acks = int(body["acks"])
        sp = self.policy()
        if sp is not None and sp.requests_guarded:
            ask = self._ask(K.PRODUCE, body)
            d = check_kafka(sp, ask)
            if not d.allowed:
                self._refuse(h, body, ask, d, sp, acks=acks)
                return
        facts: list[BatchFact] = []
        try:
            for t in body["topic_data"]:
                topic = self._topic(t)
                for p in t["partition_data"]:
                    facts.append(batch_fact(topic, int(p["index"]), p["records"], fetched=False))
        except kr.RecordsError as e:
            self._refuse_produce(h, body, acks, f"ledgergate refused a corrupt batch: {e}")
            return
        t0 = now_ns()
        txid = body.get("transactional_id")
        cmd = rec.command_entry(
            t0,
            "produce",
            {
                "api_version": h.api_version,
                "acks": acks,
                "transactional_id": txid,
                "partitions": len(facts),
                "records": sum(b.records for b in facts),
                "client_id": h.client_id,
            },
        )
        seq = rec.cmd_seq
        drafts = [cmd]
        book = self.cluster.producers
        tracked: dict[tuple[str, int], tuple[Any, dict[str, Any] | None]] = {}
        for b in facts:
            extra: dict[str, Any] = {"op": "produce"}
            if b.producer_id is not None and b.producer_id >= 0:
                key = (b.producer_id, b.producer_epoch, b.topic, b.partition, b.base_sequence)
                first = book.get(key)
                if first is not None:
                    extra["retransmits"] = {k: v for k, v in first.items() if k != "accepted"}
                else:
                    book.remember(
                        key,
                        {
                            "session_id": s.session_id,
                            "command": seq,
                            "chunk": rec.chunk_seq + 1,
                            "identity": s.facts.identity,
                        },
                    )
                tracked[(b.topic, b.partition)] = (key, first)
            drafts.append(rec.batch(t0, seq, "c2s", b, **extra))
        if acks != 0:
            c.expect(h, ctx=(seq, tracked))
        item = c.forward(f, ready=False)

        def committed(err: BaseException | None) -> None:
            if err is not None:
                c.reject("the audit ledger is unavailable: the produce request was not sent")
            else:
                c.release(item)

        try:
            self.gw.sink.submit(drafts, committed)
        except LedgerUnavailable:
            c.reject("the audit ledger is unavailable: the produce request was not sent")

    def _refuse_produce(
        self, h: km.RequestHeader, body: dict[str, Any], acks: int, why: str
    ) -> None:
        """Answer a Produce the gateway will not forward: every partition gets ``why``."""
        c = self.c
        s = c.session
        assert s is not None
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit(
                [
                    s.recorder.blocked_request(
                        now_ns(), "produce", {"api_version": h.api_version}, None, why
                    )
                ]
            )
        if acks == 0:
            c.reject(why)  # no answer is awaited: a broker closes the connection too
            return
        c.answer(c.local(h), refusal(K.PRODUCE, body, CORRUPT_MESSAGE, why))

    def _admin(
        self,
        h: km.RequestHeader,
        f: memoryview,
        held: tuple[Slot, list[Any]] | None = None,
        review_id: str | None = None,
    ) -> None:
        """Record an admin operation, durable, then send it (``held``: the slot and
        queue place it took while a reviewer decided)."""
        c = self.c
        s = c.session
        assert s is not None
        fields: dict[str, Any] = {
            "api_version": h.api_version,
            "client_id": h.client_id,
            "request_sha256": sha256(f[h.size :]).hexdigest(),
        }
        summary = self._admin_summary(h, f)
        if summary:
            fields["request"] = summary
        if review_id is not None:
            fields["review"] = {"id": review_id}
        op = api_name(h.api_key).lower()
        draft = s.recorder.command_entry(now_ns(), op, fields)
        if held is None:
            c.expect(h, ctx=(s.recorder.cmd_seq, op))
            item = c.forward(f, ready=False)
        else:
            slot, item = held
            slot.ctx = (s.recorder.cmd_seq, op)

        def committed(err: BaseException | None) -> None:
            if err is not None:
                c.reject("the audit ledger is unavailable: the request was not sent")
            else:
                c.release(item)

        try:
            self.gw.sink.submit([draft], committed)
        except LedgerUnavailable:
            c.reject("the audit ledger is unavailable: the request was not sent")

    def _review(
        self,
        h: km.RequestHeader,
        f: memoryview,
        msg: dict[str, Any],
        ask: KafkaAsk,
        d: Decision,
        sp: SessionPolicy,
    ) -> None:
        """Hold an admin operation for a reviewer (``services.review_desk``): nothing after
        it on this connection reaches the broker meanwhile, and the client's own request
        timeout bounds the hold (a broker would answer by then too). Approved: recorded and
        sent; otherwise answered with POLICY_VIOLATION naming the review."""
        c = self.c
        s = c.session
        assert s is not None
        rule = sp.review_rule(d.rule or "")
        slot = c.expect(h)
        item = c.forward(f, ready=False)

        async def decide() -> None:
            answer = await self._ask_reviewer(h, f, msg, ask, rule)
            if c.closed:
                return
            if answer.approved:
                self._admin(h, f, held=(slot, item), review_id=answer.review_id)
                return
            c.withdraw(item, slot)
            text = f"ledgergate: {answer.message}"
            self.gw.sink.submit(
                [
                    s.recorder.blocked_request(
                        now_ns(), ask.operation, {"topics": list(ask.topics)}, d.rule, text
                    )
                ]
            )
            c.answer(slot, refusal(h.api_key, msg, POLICY_VIOLATION, text))

        c.spawn(decide())

    async def _ask_reviewer(
        self,
        h: km.RequestHeader,
        f: memoryview,
        msg: dict[str, Any],
        ask: KafkaAsk,
        rule: PolicyRule | None,
    ) -> ReviewAnswer:
        s = self.c.session
        if rule is None or rule.review is None or self.gw.reviews is None or s is None:
            return ReviewAnswer(False, "no reviewer can be asked")
        review = rule.review
        timeout_ms = msg.get("timeout_ms")
        if review.wait == "hold" and isinstance(timeout_ms, int) and timeout_ms > 0:
            cap = max(1, timeout_ms // 1000 - REVIEW_MARGIN_S)
            if cap < review.seconds("timeout"):
                rule = rule.model_copy(
                    update={"review": review.model_copy(update={"timeout": f"{cap}s"})}
                )
        body = _plain(msg)
        body.pop("timeout_ms", None)
        statement = f"{ask.operation} {', '.join(ask.topics) or ask.group or ''}".rstrip()
        detail = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
        r = ReviewAsk(
            session_id=s.session_id,
            identity=s.facts.identity,
            groups=s.facts.groups,
            connection=s.conn_name,
            rule=rule,
            op="request",
            statement=statement,
            params=(detail,),
        )
        try:
            return await self.gw.reviews.ask(
                r, lambda text: log.info("session %s: %s", s.session_id, text)
            )
        except Exception:  # the desk failed: refuse, never pass unreviewed
            log.exception("asking for a review failed")
            return ReviewAnswer(False, "the review could not be asked")

    def _admin_summary(self, h: km.RequestHeader, f: memoryview) -> dict[str, Any] | None:
        lo_hi = km.DECODED.get(h.api_key)
        if lo_hi is None or not lo_hi[0] <= h.api_version <= lo_hi[1]:
            return None
        try:
            msg = km.decode_request(h.api_key, h.api_version, f[h.size :])
        except km.KafkaCodecError:
            return None
        summary: dict[str, Any] = _plain(msg)
        return summary

    def _group(self, h: km.RequestHeader, f: memoryview) -> None:
        s = self.c.session
        assert s is not None
        lo_hi = km.DECODED.get(h.api_key)
        fields: dict[str, Any] = {"api_version": h.api_version, "client_id": h.client_id}
        if lo_hi is not None and lo_hi[0] <= h.api_version <= lo_hi[1]:
            with contextlib.suppress(km.KafkaCodecError):
                msg = km.decode_request(h.api_key, h.api_version, f[h.size :])
                for k in (
                    "committed",
                    "producer_id",
                    "producer_epoch",
                    "group_id",
                    "member_id",
                    "group_instance_id",
                    "generation_id",
                    "transactional_id",
                    "protocol_type",
                ):
                    if k in msg:
                        fields[k] = msg[k]
                if "topics" in msg and h.api_key in (K.OFFSET_COMMIT, K.TXN_OFFSET_COMMIT):
                    fields["offsets"] = [
                        [self._topic(t), p.get("partition_index"), p.get("committed_offset")]
                        for t in msg["topics"]
                        for p in t.get("partitions", ())
                    ]
        kind = {
            K.JOIN_GROUP: "group.join",
            K.SYNC_GROUP: "group.sync",
            K.LEAVE_GROUP: "group.leave",
            K.OFFSET_COMMIT: "group.commit",
            K.TXN_OFFSET_COMMIT: "group.commit",
            K.END_TXN: "txn.end",
        }[K(h.api_key)]
        self.gw.sink.submit([s.recorder.event(now_ns(), kind, **fields)])

    # -- responses -------------------------------------------------------------------------
    def response(self, slot: Slot, f: memoryview) -> None:
        key = slot.api_key
        c = self.c
        if key == K.PRODUCE:
            self._produce_result(slot, f)
        elif key == K.FETCH:
            self._fetch_result(slot, f)
        elif key in CARRY_ADDRESSES:
            self._rewrite(slot, f)
        elif key in ADMIN:
            self._admin_result(slot, f)
        else:
            slot.data = [len(f).to_bytes(4, "big"), f]
            c.flush()

    def _decode(self, slot: Slot, f: memoryview) -> tuple[int, dict[str, Any]]:
        hs = km.response_header_size(slot.api_key, slot.version, f)
        return hs, km.decode_response(slot.api_key, slot.version, f[hs:])

    def _finish(
        self, slot: Slot, f: memoryview, hs: int, msg: dict[str, Any], *, changed: bool = False
    ) -> None:
        """Rewrite addresses if the response carries any, then hand it on (encoded anew
        if anything in it ``changed``)."""
        new_nodes: list[int] = []

        def seen(node: int, host: str, port: int, rack: str | None) -> None:
            if self.cluster.seen(node, host, port, rack):
                new_nodes.append(node)

        if rewrite_addresses(slot.api_key, slot.version, msg, self.cluster.place, seen) or changed:
            data = _frame(f[:hs], km.encode_response(slot.api_key, slot.version, msg))
        else:
            data = [len(f).to_bytes(4, "big"), f]
        if not new_nodes:
            slot.data = data
            self.c.flush()
            return

        async def open_then_answer() -> None:
            for n in new_nodes:
                try:
                    await self.cluster.ensure_listener(n)
                except OSError as e:
                    self.c.reject(f"the gateway cannot serve broker {n}: {e}")
                    return
            slot.data = data
            self.c.flush()

        self.c.spawn(open_then_answer())

    def _rewrite(self, slot: Slot, f: memoryview) -> None:
        hs, msg = self._decode(slot, f)
        if slot.api_key == K.METADATA:
            self.cluster.topic_names.update(topic_ids(msg))
        self._finish(slot, f, hs, msg)

    def _produce_result(self, slot: Slot, f: memoryview) -> None:
        hs, msg = self._decode(slot, f)
        s = self.c.session
        seq, tracked = slot.ctx
        parts = []
        errors = dups = 0
        for t in msg.get("responses", ()):
            topic = self._topic(t)
            for p in t.get("partition_responses", ()):
                code = int(p.get("error_code", 0))
                errors += code != 0
                parts.append(
                    {
                        "topic": topic,
                        "partition": int(p["index"]),
                        "error": km.error_name(code) if code else None,
                        "base_offset": int(p.get("base_offset", -1)),
                    }
                )
                key, first = tracked.get((topic, int(p["index"])), (None, None))
                if first is not None and first.get("accepted") and code in (0, 46):
                    # An idempotent retry of a batch the broker already holds: it answers
                    # with the first copy's offset (or DUPLICATE_SEQUENCE_NUMBER).
                    parts[-1]["duplicate"] = True
                    dups += 1
                elif key is not None and code == 0:
                    entry = self.cluster.producers.get(key)
                    if entry is not None:
                        entry["accepted"] = True
        if dups and dups == len(parts):
            outcome = "duplicate"
        elif not errors:
            outcome = "accepted"
        else:
            outcome = "rejected" if errors == len(parts) else "partial"
        if s is not None:
            self.gw.sink.submit(
                [s.recorder.result(now_ns(), seq, "produce", outcome, partitions=parts)]
            )
        self._finish(slot, f, hs, msg)

    def _fetch_result(self, slot: Slot, f: memoryview) -> None:
        hs, msg = self._decode(slot, f)
        s = self.c.session
        drafts = []
        t0 = now_ns()
        changed = False
        if s is not None:
            rec = s.recorder
            for t in msg.get("responses", ()):
                topic = self._topic(t)
                masker = self._masker(topic)
                for p in t.get("partitions", ()):
                    data = p.get("records")
                    if not data:
                        continue
                    part = int(p["partition_index"])
                    try:
                        gone = p.get("aborted_transactions")
                        aborted = (
                            [(int(a["producer_id"]), int(a["first_offset"])) for a in gone]
                            if gone
                            else None
                        )
                        b = batch_fact(topic, part, data, fetched=True, aborted=aborted)
                        masked, counts = (
                            mask_partition(masker, data) if masker is not None else (None, None)
                        )
                        out = (
                            None
                            if masked is None
                            else batch_fact(topic, part, masked, fetched=True)
                        )
                    except kr.RecordsError as e:
                        self.c.reject(f"the broker sent a batch the gateway cannot read: {e}")
                        return
                    if not b.records and not b.aborted_digests and masked is None:
                        continue
                    extra: dict[str, Any] = {"op": "fetch"}
                    if out is not None:
                        b = dataclasses.replace(b, data_out=bytes(masked))  # type: ignore[arg-type]
                        extra["record_sha256_out"] = list(out.digests)
                        p["records"] = masked
                        changed = True
                    drafts.append(rec.batch(t0, None, "s2c", b, **extra))
                    if counts:
                        drafts.append(
                            rec.event(
                                t0,
                                "mask",
                                chunk={"seq": rec.chunk_seq, "topic": topic, "partition": part},
                                masking=[
                                    {"field": fld, "rule": r, "count": n}
                                    for (fld, r), n in sorted(counts.items())
                                ],
                            )
                        )
        if drafts:
            self.gw.sink.submit(drafts)
        self._finish(slot, f, hs, msg, changed=changed)

    def _admin_result(self, slot: Slot, f: memoryview) -> None:
        s = self.c.session
        seq, op = slot.ctx
        errors: list[str] = []
        lo_hi = km.DECODED.get(slot.api_key)
        if lo_hi is not None and lo_hi[0] <= slot.version <= lo_hi[1]:
            with contextlib.suppress(km.KafkaCodecError):
                _, msg = self._decode(slot, f)
                errors = sorted({km.error_name(c) for c in _error_codes(msg) if c})
        if s is not None:
            outcome = "rejected" if errors else "accepted"
            self.gw.sink.submit([s.recorder.result(now_ns(), seq, op, outcome, errors=errors)])
        slot.data = [len(f).to_bytes(4, "big"), f]
        self.c.flush()


def _error_codes(msg: Any) -> list[int]:
    """Every ``error_code`` anywhere in a decoded response."""
    out: list[int] = []
    if isinstance(msg, dict):
        for k, v in msg.items():
            if k == "error_code" and isinstance(v, int):
                out.append(v)
            elif isinstance(v, list | dict):
                out.extend(_error_codes(v))
    elif isinstance(msg, list):
        for v in msg:
            out.extend(_error_codes(v))
    return out


def _plain(msg: Any) -> Any:
    """A decoded request as canonical JSON can hold it (bytes as hex, no tagged blobs)."""
    if isinstance(msg, dict):
        return {k: _plain(v) for k, v in msg.items() if k != "_tagged" and not isinstance(v, float)}
    if isinstance(msg, list):
        return [_plain(v) for v in msg]
    if isinstance(msg, bytes | bytearray | memoryview):
        return bytes(msg).hex()
    if isinstance(msg, bool) or msg is None or isinstance(msg, int | str):
        return msg
    return str(msg)
