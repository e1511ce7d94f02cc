"""Where the brokers are, as clients must see them: through the gateway.

Owns the rewriting of every response field that carries a broker's address (Metadata
``brokers``, FindCoordinator's ``host``/``port`` and v4+ ``coordinators``,
DescribeCluster ``brokers``, the ``node_endpoints`` of Produce and Fetch responses) and
the narrowing of ApiVersions to what both the broker and the gateway handle. Works on
decoded messages (``messages.decode_response``); learns each broker's real address on
the way (``seen``), so the gateway can dial it. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledgergate.wire.kafka.messages import ApiKey

__all__ = ["CARRY_ADDRESSES", "narrow_versions", "rewrite_addresses", "topic_ids"]

# Responses that may name a broker's address.
CARRY_ADDRESSES = frozenset(
    {
        ApiKey.METADATA,
        ApiKey.FIND_COORDINATOR,
        ApiKey.DESCRIBE_CLUSTER,
        ApiKey.PRODUCE,
        ApiKey.FETCH,
    }
)

Place = Callable[[int], tuple[str, int]]  # node id -> the gateway's host and port for it
Seen = Callable[[int, str, int, str | None], None]  # node id, real host, port, rack


def _swap(item: dict[str, Any], id_field: str, place: Place, seen: Seen) -> bool:
    node = int(item[id_field])
    if node < 0 or not item.get("host"):
        return False
    seen(node, str(item["host"]), int(item["port"]), item.get("rack"))
    item["host"], item["port"] = place(node)
    return True


def rewrite_addresses(
    api_key: int, version: int, msg: dict[str, Any], place: Place, seen: Seen
) -> bool:
    """Rewrite the broker addresses of a decoded response in place; True if any."""
    changed = False
    if api_key == ApiKey.METADATA:
        for b in msg.get("brokers") or ():
            changed |= _swap(b, "node_id", place, seen)
    elif api_key == ApiKey.FIND_COORDINATOR:
        if version < 4:
            if msg.get("error_code", 0) == 0:
                changed |= _swap(msg, "node_id", place, seen)
        else:
            for c in msg.get("coordinators") or ():
                if c.get("error_code", 0) == 0:
                    changed |= _swap(c, "node_id", place, seen)
    elif api_key == ApiKey.DESCRIBE_CLUSTER:
        # endpoint_type 1: brokers (2, controllers, is refused by brokers themselves)
        if msg.get("endpoint_type", 1) == 1:
            for b in msg.get("brokers") or ():
                changed |= _swap(b, "broker_id", place, seen)
    elif api_key in (ApiKey.PRODUCE, ApiKey.FETCH):
        for n in msg.get("node_endpoints") or ():
            changed |= _swap(n, "node_id", place, seen)
    return changed


def narrow_versions(
    broker: dict[int, tuple[int, int]], gateway: dict[int, tuple[int, int] | None]
) -> list[tuple[int, int, int]]:
    """(api key, min, max) the client may use: the keys the gateway knows, at versions
    both sides handle. ``gateway`` maps a key to the range the gateway decodes, or to
    None where it passes the frames through untouched (any broker version)."""
    out: list[tuple[int, int, int]] = []
    for key, (bmin, bmax) in sorted(broker.items()):
        if key not in gateway:
            continue
        rng = gateway[key]
        lo, hi = (bmin, bmax) if rng is None else (max(bmin, rng[0]), min(bmax, rng[1]))
        if lo <= hi:
            out.append((key, lo, hi))
    return out


def topic_ids(msg: dict[str, Any]) -> dict[bytes, str]:
    """Topic id -> name from a decoded Metadata response (v10+ names topic ids)."""
    out: dict[bytes, str] = {}
    for t in msg.get("topics") or ():
        tid, name = t.get("topic_id"), t.get("name")
        if tid and name and any(tid):
            out[bytes(tid)] = str(name)
    return out
