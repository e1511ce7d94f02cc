"""What a load balancer and a monitoring system ask a running gateway: is it alive, is it
ready for new sessions, and its numbers in Prometheus' text format.

Owns the readiness rule (not draining, the store answering within ``PROBE_TIMEOUT_S``)
and the metrics: open sessions by protocol, ledger entries appended by kind (commands,
chunks, decisions...: a counter, so Prometheus' ``rate()`` gives them per second), the
journal bytes not yet indexed in the store (ledger lag), the store's latency on a probe,
and the pending reviews. Everything is read when asked, so the relay pays nothing for it
but a counter per ledger batch. No identity, statement or secret appears in a metric.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledgergate.services.config import resolve_secret

if TYPE_CHECKING:
    from ledgergate.services.gateway import GatewayRuntime

__all__ = ["METRICS_CONTENT_TYPE", "GatewayHealth", "Probe"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A store slower than this to answer a probe makes the gateway "not ready".
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Probe:
    store_ok: bool
    store_seconds: float
    pending_reviews: int
    error: str | None = None


class GatewayHealth:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        spec = runtime.settings.config.listeners.api.metrics_token
        self._metrics_token = (
            resolve_secret(spec, what="listeners.api.metrics_token") if spec else None
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self._last: Probe | None = None
        self.registry.register(_Collector(self))

    async def probe(self) -> Probe:
        """Time a small read of the store (on the thread that owns the gateway's access
        handle) and count the pending reviews."""
        rt = self.runtime
        access, pool = rt.access_control, rt.auth_pool
        if access is None or pool is None:
            return Probe(False, 0.0, 0, "the gateway is starting")
        store = access.store

        def read() -> tuple[float, int]:
            t0 = time.perf_counter()
            store.access_epoch()
            took = time.perf_counter() - t0
            return took, len(store.list_reviews(states=("pending",)))

        loop = asyncio.get_running_loop()
        try:
            took, pending = await asyncio.wait_for(
                loop.run_in_executor(pool, read), PROBE_TIMEOUT_S
            )
        except TimeoutError:
            p = Probe(False, PROBE_TIMEOUT_S, 0, "the store did not answer in time")
        except Exception as e:  # the store is down: say so, do not raise
            p = Probe(False, 0.0, 0, f"the store does not answer ({type(e).__name__})")
        else:
            p = Probe(True, took, pending)
        self._last = p
        return p

    def ready(self, p: Probe) -> tuple[bool, str]:
        if self.runtime.draining:
            return False, "draining: the gateway is shutting down"
        if not p.store_ok:
            return False, p.error or "the store does not answer"
        return True, "ready"

    def may_read_metrics(self, authorization: str | None) -> bool:
        """Whether a request with this Authorization header may read /metrics."""
        if self._metrics_token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            given.strip().encode(), self._metrics_token.encode()
        )

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    # -- what the collector reads ------------------------------------------------------------
    def sessions_by_protocol(self) -> dict[str, int]:
        rt = self.runtime
        types: dict[str, str] = {c.name: str(c.type) for c in rt.connections}
        out: dict[str, int] = {t: 0 for t in sorted(set(types.values()))}
        for g in rt.listeners():
            for s in g.open_sessions():
                f = s.facts
                kind = types.get(f.connection, "unknown") if f is not None else "unknown"
                out[kind] = out.get(kind, 0) + 1
        return out


class _Collector(Collector):
    def __init__(self, health: GatewayHealth) -> None:
        self.h = health

    def collect(self) -> Iterator[Metric]:
        rt, last = self.h.runtime, self.h._last
        g = GaugeMetricFamily(
            "ledgergate_sessions_open", "Sessions open now, by protocol.", labels=["protocol"]
        )
        for proto, n in self.h.sessions_by_protocol().items():
            g.add_metric([proto], n)
        yield g
        c = CounterMetricFamily(
            "ledgergate_ledger_entries",
            "Ledger entries appended by this gateway since it started, by kind.",
            labels=["kind"],
        )
        sink = rt.sink
        for kind, n in sorted((sink.kinds if sink is not None else {}).items()):
            c.add_metric([kind], n)
        yield c
        yield GaugeMetricFamily(
            "ledgergate_ledger_index_backlog_bytes",
            "Journaled ledger bytes not yet indexed in the store (the ledger's lag).",
            value=sink.index_backlog() if sink is not None else 0,
        )
        if last is not None:
            yield GaugeMetricFamily(
                "ledgergate_store_up",
                "1 if the store answered the last probe.",
                value=1 if last.store_ok else 0,
            )
            yield GaugeMetricFamily(
                "ledgergate_store_probe_seconds",
                "How long the store took to answer the last probe.",
                value=last.store_seconds,
            )
            yield GaugeMetricFamily(
                "ledgergate_reviews_pending",
                "Reviews waiting for a decision.",
                value=last.pending_reviews,
            )
        yield GaugeMetricFamily(
            "ledgergate_draining",
            "1 while the gateway drains before it stops.",
            value=1 if rt.draining else 0,
        )
