"""Whether the gateway reaches each connection's backend: a TCP connect to its address
(PostgreSQL's ``address``, the S3 ``endpoint`` or HTTP ``base_url``, Kafka's first
bootstrap broker, the SSH ``host``), timed, for the console's connections page and
``GET /api/v1/connections``. A probe never authenticates and never carries a secret;
a connection reached through an agent (``via``) is reported as such, not probed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from ledgergate.core.config import Config, split_address

__all__ = ["PROBE_TIMEOUT_S", "describe", "probe_all"]

# A backend that takes longer than this to accept a TCP connection is reported down.
PROBE_TIMEOUT_S = 2.0


def _target(conn: Any) -> tuple[str, int] | None:
    t = conn.type
    if t == "postgres":
        return split_address(conn.address, 5432)
    if t in ("s3", "http"):
        u = urlsplit(conn.endpoint if t == "s3" else conn.base_url)
        if u.hostname is None:
            return None
        return u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if t == "kafka":
        return split_address(conn.bootstrap[0], 9092)
    if t == "ssh":
        return conn.host, conn.port
    return None


def describe(conn: Any) -> dict[str, Any]:
    """What the console shows of a connection: never its credentials."""
    target = _target(conn)
    return {
        "name": conn.name,
        "type": conn.type,
        "backend": None if target is None else f"{target[0]}:{target[1]}",
        "via": getattr(conn, "via", None),
        "recording": getattr(conn, "recording", None),
    }


async def _probe(conn: Any) -> dict[str, Any]:
    out = describe(conn)
    target = _target(conn)
    if out["via"]:
        return {**out, "reachable": None, "detail": f"through agent {out['via']}"}
    if target is None:
        return {**out, "reachable": None, "detail": "no address to probe"}
    start = time.perf_counter()
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(*target), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        detail = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        return {**out, "reachable": False, "detail": detail}
    ms = (time.perf_counter() - start) * 1000
    w.close()
    return {**out, "reachable": True, "connect_ms": round(ms, 1), "detail": "accepts connections"}


async def probe_all(config: Config) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_probe(c) for c in config.connections)))
