"""Grants and guardrails for Kafka requests.

Owns what a Kafka request asks, in the terms policy rules use (``core.policy.http``'s
request conditions): its operation (the API's name, ``DeleteTopics``) and class
(``produce``, ``consume``, ``describe``, ``admin``, ``group``), the topics it names and
its consumer group. A request naming several topics is decided topic by topic: a
guardrail refuses it if it matches any of them, and where allow rules apply every
topic must be allowed. Requests that name neither a topic nor a group pass (ApiVersions,
Heartbeat, FindCoordinator): there is nothing in them a rule could name. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgergate.core.policy.engine import ALLOW, Decision, SessionPolicy
from ledgergate.core.policy.http import RequestView

__all__ = ["ACTIONS", "KafkaAsk", "camel", "check_kafka"]

# The class of each API (by its Kafka name), as grants name them.
ACTIONS = {
    "PRODUCE": "produce",
    "TXN_OFFSET_COMMIT": "produce",
    "ADD_PARTITIONS_TO_TXN": "produce",
    "FETCH": "consume",
    "LIST_OFFSETS": "consume",
    "OFFSET_COMMIT": "consume",
    "OFFSET_FETCH": "consume",
    "OFFSET_DELETE": "admin",
    "METADATA": "describe",
    "DESCRIBE_CONFIGS": "describe",
    "DESCRIBE_TOPIC_PARTITIONS": "describe",
    "JOIN_GROUP": "group",
    "SYNC_GROUP": "group",
    "LEAVE_GROUP": "group",
    "HEARTBEAT": "group",
    "CONSUMER_GROUP_HEARTBEAT": "group",
}


def camel(name: str) -> str:
    """``DELETE_TOPICS`` → ``DeleteTopics`` (the names Kafka's documentation uses)."""
    return "".join(p.capitalize() for p in name.split("_"))


@dataclass(frozen=True, slots=True)
class KafkaAsk:
    api: str  # the API's enum name, e.g. DELETE_TOPICS
    topics: tuple[str, ...] = ()
    group: str | None = None

    @property
    def operation(self) -> str:
        return camel(self.api)

    @property
    def action(self) -> str:
        return ACTIONS.get(self.api, "admin")


def check_kafka(sp: SessionPolicy | None, ask: KafkaAsk) -> Decision:
    """The decision on one Kafka request (``ALLOW`` where no rule is about requests)."""
    if sp is None or not sp.requests_guarded or (not ask.topics and ask.group is None):
        return ALLOW
    views = [
        RequestView(
            method="",
            operation=ask.operation,
            path=t or "",
            topic=t,
            consumer_group=ask.group,
            action=ask.action,
        )
        for t in (ask.topics or (None,))
    ]
    review: Decision | None = None
    for v in views:
        d = sp.check_request(v)
        if not d.allowed:
            return d
        if d.review is not None and review is None:
            review = d
    return review or ALLOW
