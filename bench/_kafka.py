"""The Kafka paths kafka_compare.py measures, started on loopback, and what measures them.

The broker comes from the test-suite's `KafkaCluster` (one implementation of "a
throwaway Kafka", KRaft, SASL_PLAINTEXT with SCRAM on its client listener); this module
adds what stands in front of it: ``ledgergate serve`` with one ``kafka`` connection,
optionally with a masking rule, its files in a work directory, its ports free, its pid
exact for /proc. Also: Kafka's own perf tools (``ProducerPerformance``,
``ConsumerPerformance``) run as Java main classes with their summaries parsed, the JSON
payload file for the masking path, a wait for the gateway to finish the work a run left
it (the ledger's indexer), and a count of the records the gateway's ledger holds for a
topic.

It runs no workload and prints nothing; kafka_compare.py does that.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import resource
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _cluster import LEDGERGATE, BenchError, proc_stats, stop_process, wait_listening
from _s3 import RssSampler, machine_busy_s, thread_cpu
from tests.integration.kafkagw import free_block
from tests.integration.kafkaserver import KafkaCluster
from tests.integration.kafkatools import java_command
from tests.integration.pgcluster import clean_env, free_port

__all__ = [
    "TOPIC_GLOB",
    "Endpoint",
    "GatewayKafka",
    "KafkaCluster",
    "RssSampler",
    "broker_pid",
    "consumer_perf",
    "direct",
    "ledger_records",
    "machine_busy_s",
    "producer_perf",
    "settle",
    "thread_cpu",
    "write_json_payloads",
]

# A perf tool that has not finished in this long plus a second per TOOL_MIN_RATE
# records is hung (the slowest path moves several thousand 1 KiB records a second).
TOOL_TIMEOUT_S = 120
TOOL_MIN_RATE = 500
# ConsumerPerformance gives up when no record arrives for this long.
CONSUMER_IDLE_MS = 30_000
# After a run: the gateway counts as done with it once it burns less than this much
# CPU in SETTLE_STEP_S (its ledger indexer catches up after the clients are gone).
SETTLE_STEP_S = 0.2
SETTLE_IDLE_CPU_S = 0.02
SETTLE_MAX_S = 30.0
MB = 1_000_000
# The topics the bench creates (the mask rule is scoped to them).
TOPIC_GLOB = "bench-*"
# ProducerPerformance's summary line (its MB are MiB).
_PRODUCED = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the perf tools connect on one path, with which client configuration, and
    which process relays (None: direct)."""

    name: str
    bootstrap: str
    properties: Path  # the Java client configuration (--command-config)
    librdkafka: dict[str, Any]  # the same for confluent-kafka (to look at records)
    relay_pid: int | None = None
    store: Path | None = None  # the gateway's SQLite store (its ledger, indexed)
    log: Path | None = None  # the gateway's output

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- {self.name}'s log ({self.log}):\n" + "\n".join(text)


def direct(cluster: KafkaCluster, workdir: Path) -> Endpoint:
    """Straight to the broker: SASL_PLAINTEXT, SCRAM-SHA-512, the cluster's admin user."""
    props = cluster.client_properties(workdir / "direct.properties")
    return Endpoint("direct", cluster.bootstrap, props, cluster.sasl_config())


def broker_pid(cluster: KafkaCluster) -> int | None:
    """The first node's JVM (the test helper keeps its nodes private; its pid is all we
    read)."""
    nodes = cluster._nodes
    node = nodes.get(min(nodes)) if nodes else None
    return node.proc.pid if node is not None and node.proc is not None else None


class GatewayKafka:
    """``ledgergate serve -c <yaml>`` with one ``kafka`` connection (``events``) to the
    cluster: SASL_PLAINTEXT with the cluster's SCRAM-SHA-512 admin user towards the
    broker, ``recording: redacted``, the ledger at its defaults (group commit) with
    ``fsync: false``. Clients bootstrap from ``localhost:<port>`` with SASL/PLAIN (user
    ``bench``, a token from ``token create``) over TLS with the generated certificate
    (``tls=False``: a plaintext Kafka listener, ``allow_plaintext``). ``mask`` adds a
    policy rule masking ``$.email`` and what the ``email`` detector finds in the records
    of the bench's topics (``bench-*``). The
    PostgreSQL listener, always on, gets a free loopback port of its own."""

    PASSWORD_ENV = "BENCH_KAFKA_PASSWORD"
    IDENTITY = "bench"

    def __init__(
        self, workdir: Path, cluster: KafkaCluster, *, name: str, tls: bool, mask: bool
    ) -> None:
        self.name = name
        self.tls = tls
        self.mask = mask
        self.dir = workdir / name
        self.cluster = cluster
        self.config = self.dir / "ledgergate.yaml"
        self.env = clean_env(**{self.PASSWORD_ENV: cluster.admin_password})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "gateway.log"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def start(self) -> Endpoint:
        if not LEDGERGATE.exists():
            raise BenchError(f"{LEDGERGATE} not found: run scripts/install-deps")
        self.dir.mkdir()
        port = free_port()
        conn: dict[str, Any] = {
            "name": "events",
            "type": "kafka",
            "bootstrap": self.cluster.bootstrap.split(","),
            "tls": False,
            "credentials": {
                "mechanism": "SCRAM-SHA-512",
                "user": self.cluster.admin_user,
                "password": f"env:{self.PASSWORD_ENV}",
            },
            "listen": f"127.0.0.1:{port}",
            "advertised_host": "localhost",
            "broker_ports": free_block(),
            "recording": "redacted",
        }
        doc: dict[str, Any] = {
            "data_dir": str(self.data),
            "listeners": {
                "postgres": {"address": f"127.0.0.1:{free_port()}"},
                "kafka": {"tls": self.tls, "allow_plaintext": not self.tls},
            },
            "ledger": {"fsync": False},
            "connections": [conn],
        }
        if self.mask:
            rule = {"fields": ["$.email"], "detectors": ["email"], "topics": [TOPIC_GLOB]}
            doc["policy"] = {
                "rules": [{"id": "bench-mask-email", "connections": ["events"], "mask": rule}]
            }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        token = self._token()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(LEDGERGATE), "serve", "-c", str(self.config)],
                cwd=self.dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(port, self.proc, self.log, "ledgergate serve")
        bootstrap = f"localhost:{port}"
        props = {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL" if self.tls else "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
            f'required username="{self.IDENTITY}" password="{token}";',
        }
        if self.tls:
            # The certificate the listener serves was generated at the first start (or
            # by token create); it is self-signed for localhost.
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = str(self.data / "tls" / "server.crt")
        path = self.dir / "client.properties"
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        rdkafka = {
            "bootstrap.servers": bootstrap,
            "security.protocol": props["security.protocol"],
            "sasl.mechanism": "PLAIN",
            "sasl.username": self.IDENTITY,
            "sasl.password": token,
        }
        if self.tls:
            rdkafka["ssl.ca.location"] = props["ssl.truststore.location"]
        store = self.data / "ledgergate.db"
        return Endpoint(self.name, bootstrap, path, rdkafka, self.proc.pid, store, self.log)

    def _token(self) -> str:
        cmd = [str(LEDGERGATE), "token", "create", "--identity", self.IDENTITY]
        cmd += ["--kind", "service", "--ttl", "4h", "-c", str(self.config)]
        r = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, cwd=self.dir, timeout=120
        )
        lines = r.stdout.strip().splitlines()
        if r.returncode != 0 or not lines:
            raise BenchError(f"ledgergate token create failed ({r.returncode}): {r.stderr}")
        return lines[-1].strip()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# -- the perf tools ----------------------------------------------------------------------


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run_tool(cls: str, *args: str, what: str, records: int) -> tuple[str, str, float]:
    """Run one of Kafka's tools to its end: (stdout, stderr, its CPU seconds)."""
    cpu0 = _children_cpu_s()
    timeout = TOOL_TIMEOUT_S + records / TOOL_MIN_RATE
    try:
        r = subprocess.run(
            java_command(cls, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise BenchError(
            f"{what} did not finish in {timeout:.0f} s:\n{(out or '')[-1500:]}{(err or '')[-1500:]}"
        ) from e
    cpu = _children_cpu_s() - cpu0
    if r.returncode != 0:
        raise BenchError(f"{what} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return r.stdout, r.stderr, cpu


def producer_perf(
    ep: Endpoint,
    topic: str,
    records: int,
    *,
    record_size: int,
    payload_file: Path | None,
    linger_ms: int,
) -> dict[str, Any]:
    """``kafka-producer-perf-test``: ``records`` records of ``record_size`` bytes (or
    lines of ``payload_file``, which are that long), unthrottled, acks=all; its summary
    line parsed. Any exception it prints fails the run (a failed send is not a figure)."""
    payload = ["--payload-file", str(payload_file)] if payload_file else []
    payload = payload or ["--record-size", str(record_size)]
    out, err, cpu = _run_tool(
        "org.apache.kafka.tools.ProducerPerformance",
        *("--topic", topic, "--num-records", str(records), "--throughput", "-1"),
        *payload,
        *("--command-config", str(ep.properties)),
        *("--command-property", "acks=all", f"linger.ms={linger_ms}"),
        what=f"ProducerPerformance via {ep.name}",
        records=records,
    )
    if "Exception" in err or "Exception" in out:
        tail = "\n".join(line for line in (out + err).splitlines() if "Exception" in line)
        raise BenchError(f"ProducerPerformance via {ep.name} reported errors:\n{tail[-3000:]}")
    found = _PRODUCED.findall(out)
    if not found:
        raise BenchError(f"ProducerPerformance via {ep.name}: no summary in\n{out[-2000:]}")
    sent, rps, _mib_s, avg, top, p50, p95, p99, p999 = found[-1]
    if int(sent) != records:
        raise BenchError(f"ProducerPerformance via {ep.name}: {sent} of {records} records sent")
    rps_f = float(rps)
    return {
        "records": int(sent),
        "records_s": rps_f,
        "mb_s": round(rps_f * record_size / MB, 2),
        "seconds": round(int(sent) / rps_f, 3) if rps_f else None,
        "lat_avg_ms": float(avg),
        "lat_max_ms": float(top),
        "p50_ms": int(p50),
        "p95_ms": int(p95),
        "p99_ms": int(p99),
        "p999_ms": int(p999),
        "client_cpu_s": round(cpu, 3),
    }


def consumer_perf(ep: Endpoint, topic: str, records: int, *, record_size: int) -> dict[str, Any]:
    """``kafka-consumer-perf-test``: read ``records`` records of ``topic`` from the
    earliest offset in a fresh consumer group. Its ``fetch.*`` figures leave out the
    group join (``rebalance.time.ms``); ``elapsed`` ones include it."""
    out, _err, cpu = _run_tool(
        "org.apache.kafka.tools.ConsumerPerformance",
        *("--bootstrap-server", ep.bootstrap, "--topic", topic),
        *("--num-records", str(records), "--timeout", str(CONSUMER_IDLE_MS)),
        *("--command-config", str(ep.properties)),
        what=f"ConsumerPerformance via {ep.name}",
        records=records,
    )
    lines = [line for line in out.strip().splitlines() if line.strip()]
    head = next((i for i, line in enumerate(lines) if line.startswith("start.time")), None)
    if head is None or head + 1 >= len(lines):
        raise BenchError(f"ConsumerPerformance via {ep.name}: no summary in\n{out[-2000:]}")
    keys = [k.strip() for k in lines[head].split(",")]
    vals = [v.strip() for v in lines[head + 1].split(",")]
    row = dict(zip(keys, vals, strict=False))
    got = int(row["data.consumed.in.nMsg"])
    if got != records:
        raise BenchError(f"ConsumerPerformance via {ep.name}: {got} of {records} records read")
    fetch_ms = float(row["fetch.time.ms"])
    rebalance_ms = float(row["rebalance.time.ms"])
    fetch_rps = float(row["fetch.nMsg.sec"])
    return {
        "records": got,
        "records_s": fetch_rps,
        "mb_s": round(fetch_rps * record_size / MB, 2),
        "seconds": round(fetch_ms / 1e3, 3),
        "elapsed_records_s": float(row["nMsg.sec"]),
        "rebalance_ms": rebalance_ms,
        "client_cpu_s": round(cpu, 3),
    }


# -- payloads, settling, the ledger -------------------------------------------------------


def write_json_payloads(path: Path, size: int, lines: int = 1000, seed: int = 7) -> Path:
    """``lines`` JSON documents of exactly ``size`` bytes each, one a line, each with an
    ``email`` field (and an address in its free text, for the detector)."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    with open(path, "w") as f:
        for i in range(lines):
            user = f"user{i:05d}.{rng.randrange(10**6):06d}"
            doc: dict[str, Any] = {
                "id": i,
                "email": f"{user}@example.com",
                "name": f"{rng.choice(words).title()} {rng.choice(words).title()}",
                "amount_cents": rng.randrange(10**7),
                "note": f"contact {user}@mail.example.org ",
            }
            text = json.dumps(doc, separators=(",", ":"))
            pad = size - len(text)
            if pad < 0:
                raise BenchError(f"record size {size} is too small for the JSON payload")
            doc["note"] += "".join(rng.choice(words) + " " for _ in range(pad // 4 + 2))[:pad]
            text = json.dumps(doc, separators=(",", ":"))
            assert len(text.encode()) == size, len(text)
            f.write(text + "\n")
    return path


def settle(pid: int) -> float:
    """Wait until the gateway is idle (its ledger indexer has caught up with what the run
    left); seconds waited."""
    t0 = time.monotonic()
    last = proc_stats(pid).cpu_s
    while time.monotonic() - t0 < SETTLE_MAX_S:
        time.sleep(SETTLE_STEP_S)
        now = proc_stats(pid).cpu_s
        if now - last < SETTLE_IDLE_CPU_S:
            break
        last = now
    return time.monotonic() - t0


def ledger_records(store: Path, topic: str, since_ns: int = 0) -> dict[str, int]:
    """Records of ``topic`` the gateway's store holds chunk entries for: produced (client
    to server) and fetched (server to client), by the per-record SHA-256 lists, and
    the chunk entries (batches) that hold them. A
    read-only look at the SQLite store while the gateway runs (WAL readers are cheap);
    entries older than ``since_ns`` are skipped unread."""
    q = (
        "SELECT json_extract(c, '$.direction'), "
        "sum(json_array_length(json_extract(c, '$.chunk.record_sha256'))), count(*) "
        "FROM (SELECT CAST(canonical AS TEXT) AS c FROM ledger_entries "
        "WHERE kind = 'chunk' AND ts_ns >= ?) "
        "WHERE json_extract(c, '$.chunk.topic') = ? GROUP BY 1"
    )
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        rows = db.execute(q, (since_ns, topic)).fetchall()
    got = {str(d): (int(n or 0), int(b)) for d, n, b in rows}
    return {
        "produced": got.get("c2s", (0, 0))[0],
        "fetched": got.get("s2c", (0, 0))[0],
        "produced_batches": got.get("c2s", (0, 0))[1],
        "fetched_batches": got.get("s2c", (0, 0))[1],
    }


def sample_values(ep: Endpoint, topic: str, n: int, timeout_s: float = 30.0) -> list[bytes]:
    """The values of the first ``n`` records of ``topic`` as a consumer on ``ep`` gets
    them (confluent-kafka, a fresh group, from the earliest offset)."""
    from confluent_kafka import Consumer, KafkaException

    c = Consumer(
        {
            **ep.librdkafka,
            "group.id": f"bench-sample-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[bytes] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise BenchError(f"reading {topic} via {ep.name}: {KafkaException(m.error())}")
            got.append(m.value() or b"")
    finally:
        c.close()
    return got
