"""The Kafka listeners: one port per connection to bootstrap from, one per broker.

Owns, per ``kafka`` connection, the cluster as the gateway knows it (``Cluster``): the
brokers' real addresses (learnt from the responses that name them), the ports the
gateway serves each broker on (opened the first time a broker is named), the brokers'
API versions, topic ids, and the producer batches already seen (to mark retransmits).
And the registry of open Kafka ledger sessions, re-checked and ended like every
other protocol's (``proxy.listener.Listener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ledgergate.core.config import KafkaConnection, KafkaListener
from ledgergate.core.policy.engine import PolicySet
from ledgergate.proxy.admission import Admitted
from ledgergate.proxy.agent import LegOpener
from ledgergate.proxy.kafka.backend import BackendError, BackendLink, dial, probe_versions
from ledgergate.proxy.kafka.client import KafkaClientConn, KafkaSession
from ledgergate.proxy.listener import SessionRegistry
from ledgergate.proxy.review import ReviewDesk
from ledgergate.proxy.sink import LedgerSink

__all__ = ["Cluster", "KafkaGateway"]

log = logging.getLogger("ledgergate.kafka")

# Connections the kernel queues before the gateway accepts them.
LISTEN_BACKLOG = 512
# Producer-partitions whose recent batches are remembered to name retransmits (the
# least recently active are forgotten first), and batches kept for each: a broker
# deduplicates the last five, and idempotent producers keep at most five in flight.
PRODUCER_BOOK_MAX = 20_000
PER_PARTITION = 5
# The brokers' API versions are asked again after this long (a rolling upgrade).
VERSIONS_TTL_S = 300.0

# The same refusal (source address, reason, token) is recorded once per this window.
REFUSAL_WINDOW_NS = 10 * 10**9
# Distinct refusals remembered for that (the oldest are forgotten first).
REFUSAL_BOOK_MAX = 4096

TokenAuth = Callable[[str, str], Awaitable[Admitted]]


class ProducerBook:
    """(producer id, epoch, topic, partition, base sequence) → the first attempt.

    A broker deduplicates the last five batches of each producer and partition, and an
    idempotent producer retries only those (max.in.flight ≤ 5), so the book keeps the
    last ``PER_PARTITION`` batches of each producer-partition, for the most recently
    active ``limit`` of them: its size follows the producers, not the traffic."""

    def __init__(self, limit: int = PRODUCER_BOOK_MAX) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[Any, ...], dict[int, dict[str, Any]]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        got = self._seen.get(key[:4])
        return None if got is None else got.get(key[4])

    def remember(self, key: tuple[Any, ...], first: dict[str, Any]) -> None:
        pp = key[:4]
        got = self._seen.get(pp)
        if got is None:
            got = self._seen[pp] = {}
            if len(self._seen) > self.limit:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(pp)
        got[key[4]] = first
        while len(got) > PER_PARTITION:
            del got[next(iter(got))]


class RefusalBook:
    """Repeated refusals of one source for one reason, recorded once per window.

    A client stuck on an expired token reconnects every few dozen milliseconds; each
    attempt is refused, but the ledger gets one ``auth.fail`` per window, the next one
    saying how many were not written (``repeats``)."""

    def __init__(self, window_ns: int = REFUSAL_WINDOW_NS, limit: int = REFUSAL_BOOK_MAX) -> None:
        self.window_ns = window_ns
        self.limit = limit
        self._seen: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()

    def note(self, key: tuple[Any, ...], now: int) -> int | None:
        """How many repeats to report with an entry now, or None: write no entry."""
        got = self._seen.get(key)
        if got is not None and now - got[0] < self.window_ns:
            got[1] += 1
            return None
        repeats = got[1] if got is not None else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return repeats


class Cluster:
    def __init__(
        self,
        gw: KafkaGateway,
        conn: KafkaConnection,
        held: dict[str, str | None],
        leg: LegOpener | None = None,
    ) -> None:
        self.gw = gw
        self.conn = conn
        self.leg = leg  # through the cluster's agent (via:), or None: dial the brokers
        self.held = held  # the resolved credential (never logged)
        self.host = conn.advertised_host or gw.advertised_host
        self.bind_host = conn.listen_address[0]
        self.nodes: dict[int, tuple[str, int, str | None]] = {}
        self.topic_names: dict[bytes, str] = {}
        self.versions: dict[int, tuple[int, int]] | None = None
        self._versions_at = 0.0
        self._versions_lock = asyncio.Lock()
        self.servers: dict[int | None, asyncio.Server] = {}
        self._opening: dict[int | None, asyncio.Future[None]] = {}
        self.producers = ProducerBook()
        self.maskers: dict[tuple[int, str], tuple[Any, Any]] = {}

    def place(self, node: int) -> tuple[str, int]:
        return self.host, self.conn.broker_port(node)

    def seen(self, node: int, host: str, port: int, rack: str | None) -> bool:
        """A broker's real address, from a response; True if it has no port here yet."""
        self.nodes[node] = (host, port, rack)
        return node not in self.servers

    async def broker_versions(self) -> dict[int, tuple[int, int]]:
        loop = asyncio.get_running_loop()
        if self.versions is not None and loop.time() - self._versions_at < VERSIONS_TTL_S:
            return self.versions
        async with self._versions_lock:
            if self.versions is None or loop.time() - self._versions_at >= VERSIONS_TTL_S:
                self.versions = await probe_versions(self.conn, self.held, self.leg)
                self._versions_at = loop.time()
        return self.versions

    async def dial(self, node: int | None) -> BackendLink:
        """A handshaken connection to broker ``node`` (None: any bootstrap broker)."""
        if node is not None:
            where = self.nodes.get(node)
            if where is None:
                raise BackendError(f"broker {node} is not known to the gateway yet")
            return await dial(self.conn, self.held, where[0], where[1], leg=self.leg)
        errors = []
        for host, port in self.conn.bootstrap_addresses:
            try:
                return await dial(self.conn, self.held, host, port, leg=self.leg)
            except BackendError as e:
                errors.append(str(e))
        raise BackendError("; ".join(errors))

    async def ensure_listener(self, node: int | None) -> None:
        """Serve ``node`` (None: the bootstrap port) if it is not served yet."""
        if node in self.servers:
            return
        pending = self._opening.get(node)
        if pending is not None:
            await pending
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[node] = fut
        try:
            port = self.conn.listen_address[1] if node is None else self.conn.broker_port(node)
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: KafkaClientConn(self.gw, self, node),
                self.bind_host,
                port,
                ssl=self.gw.tls,
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
                ssl_handshake_timeout=self.gw.listener.handshake_timeout if self.gw.tls else None,
            )
            self.servers[node] = server
            fut.set_result(None)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: later waiters see it through ``await``
            raise
        finally:
            self._opening.pop(node, None)


class KafkaGateway(SessionRegistry):
    def __init__(
        self,
        *,
        connections: dict[str, KafkaConnection],
        held: dict[str, dict[str, str | None]],
        authenticate: TokenAuth,
        sink: LedgerSink,
        tls: ssl.SSLContext | None,
        listener: KafkaListener,
        advertised_host: str,
        policies: Callable[[], PolicySet | None] = lambda: None,
        reviews: ReviewDesk | None = None,
        masking_key: bytes = b"",
        legs: dict[str, LegOpener] | None = None,
    ) -> None:
        self.connections = connections
        self.authenticate = authenticate
        self.sink = sink
        self.tls = tls
        self.listener = listener
        self.advertised_host = advertised_host
        self.policies = policies
        self.reviews = reviews
        self.masking_key = masking_key
        legs = legs or {}
        self.clusters = {
            name: Cluster(self, c, held[name], legs.get(name)) for name, c in connections.items()
        }
        self.sessions: set[KafkaSession] = set()
        self.clients: set[KafkaClientConn] = set()
        self.refusals = RefusalBook()

    async def start(self) -> dict[str, tuple[str, int]]:
        """Open every connection's bootstrap port; their bound addresses."""
        bound = {}
        for name, cl in self.clusters.items():
            await cl.ensure_listener(None)
            sock = cl.servers[None].sockets[0].getsockname()
            bound[name] = (str(sock[0]), int(sock[1]))
        return bound

    def stop_accepting(self) -> None:
        for cl in self.clusters.values():
            for srv in cl.servers.values():
                srv.close()

    async def shutdown(self) -> None:
        self.stop_accepting()
        for s in list(self.sessions):
            s.end("the gateway is shutting down")
        for c in list(self.clients):
            c.close("the gateway is shutting down")
        for cl in self.clusters.values():
            for srv in cl.servers.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.wait_closed(), 2)
