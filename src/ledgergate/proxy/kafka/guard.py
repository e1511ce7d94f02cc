"""A Kafka session's policy: grants, guardrails, reviews and masking, per request.

Owns reading what a request asks in the terms rules use (``core.policy.kafka``), the
refusal a client understands when a rule says no (and its ``decision.block`` entry), and
the maskers of the topics a session reads. ``Traffic`` calls it; it holds no state of
its own beyond the cluster's masker cache.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ledgergate.core.masking.document import DocumentMasker, masker_for_rules
from ledgergate.core.policy.engine import Decision, SessionPolicy
from ledgergate.core.policy.kafka import KafkaAsk
from ledgergate.proxy.kafka.apis import (
    GROUP_AUTHORIZATION_FAILED,
    MASKER_CACHE,
    POLICY_VIOLATION,
    TOPIC_AUTHORIZATION_FAILED,
    TOPIC_RESOURCE,
    K,
)
from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka.refusals import REFUSABLE, refusal

if TYPE_CHECKING:
    from ledgergate.proxy.kafka.client import KafkaClientConn
    from ledgergate.proxy.kafka.gateway import Cluster, KafkaGateway

__all__ = ["Guard"]

now_ns = time.time_ns


class Guard:
    __slots__ = ()
    c: KafkaClientConn
    gw: KafkaGateway
    cluster: Cluster

    def policy(self) -> SessionPolicy | None:
        s = self.c.session
        ps = self.gw.policies()
        if s is None or ps is None:
            return None
        return ps.for_session(s.conn_name, s.facts.groups)

    def _ask(self, key: int, msg: dict[str, Any]) -> KafkaAsk:
        """What a decoded request asks, in the terms of policy rules."""
        topics: list[str] = []
        group = msg.get("group_id")
        if key == K.PRODUCE:
            topics = [self._topic(t) for t in msg["topic_data"]]
        elif key in (K.FETCH, K.CREATE_TOPICS, K.DELETE_RECORDS, K.CREATE_PARTITIONS) or key in (
            K.OFFSET_COMMIT,
            K.TXN_OFFSET_COMMIT,
        ):
            topics = [self._topic(t) for t in msg.get("topics") or ()]
        elif key == K.DELETE_TOPICS:
            if msg.get("topics") is not None:
                topics = [self._topic(t) for t in msg["topics"]]
            else:
                topics = [str(n) for n in msg.get("topic_names") or ()]
        elif key in (K.ALTER_CONFIGS, K.INCREMENTAL_ALTER_CONFIGS):
            topics = [
                str(r["resource_name"])
                for r in msg.get("resources") or ()
                if r.get("resource_type") == TOPIC_RESOURCE
            ]
        return KafkaAsk(K(key).name, tuple(dict.fromkeys(topics)), group)

    def _refuse(
        self,
        h: km.RequestHeader,
        msg: dict[str, Any],
        ask: KafkaAsk,
        d: Decision,
        sp: SessionPolicy,
        *,
        acks: int = 1,
    ) -> None:
        """Answer a request a rule refused, with the error a client understands."""
        c = self.c
        s = c.session
        assert s is not None
        guardrail = any(r.id == d.rule for r in sp.request_deny)
        if d.review is not None:
            text = f"{d.message or 'a reviewer must approve this first'} (rule {d.rule})"
            code = POLICY_VIOLATION
        elif guardrail:
            text = d.message or f"refused by guardrail {d.rule}"
            code = POLICY_VIOLATION
        else:
            text = d.message or "not allowed for you on this connection"
            code = GROUP_AUTHORIZATION_FAILED if not ask.topics else TOPIC_AUTHORIZATION_FAILED
        fields = {
            "api_version": h.api_version,
            "topics": list(ask.topics),
            "consumer_group": ask.group,
            "client_id": h.client_id,
        }
        self.gw.sink.submit(
            [
                s.recorder.blocked_request(
                    now_ns(), ask.operation, fields, d.rule, f"ledgergate: {text}"
                )
            ]
        )
        if acks == 0 or h.api_key not in REFUSABLE:
            c.reject(f"ledgergate: {text}")  # no answer is awaited, or none fits
            return
        c.answer(c.local(h), refusal(h.api_key, msg, code, f"ledgergate: {text}"))

    def _topic(self, t: dict[str, Any]) -> str:
        name = t.get("name") or t.get("topic")
        if name:
            return str(name)
        tid = bytes(t.get("topic_id") or b"")
        return self.cluster.topic_names.get(tid) or tid.hex()

    def _masker(self, topic: str) -> DocumentMasker | None:
        """The session's masker for records of ``topic`` (None: no mask rule applies)."""
        sp = self.policy()
        if sp is None or not sp.request_mask:
            return None
        key = (id(sp), topic)
        cache = self.cluster.maskers
        got = cache.get(key)
        if got is not None and got[0] is sp:
            cached: DocumentMasker | None = got[1]
            return cached
        rules = [
            r
            for r in sp.request_mask
            if r.mask is not None
            and (r.mask.topics is None or any(fnmatchcase(topic, g) for g in r.mask.topics))
        ]
        masker = masker_for_rules(rules, self.gw.masking_key) if rules else None
        if len(cache) > MASKER_CACHE:
            cache.clear()
        cache[key] = (sp, masker)
        return masker
