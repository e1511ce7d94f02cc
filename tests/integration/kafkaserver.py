"""Throwaway Apache Kafka clusters on loopback for integration tests and benchmarks.

`KafkaCluster` owns one cluster's whole life: N nodes in KRaft combined mode (each is a
broker and a controller; together they are the controller quorum), a fresh temporary
directory, free loopback ports, storage formatted with the SCRAM admin user already in
the metadata, and removal of everything on `stop()`. Each node listens on

- CLIENT, SASL_PLAINTEXT (`bootstrap`, `brokers`) with SCRAM-SHA-512, SCRAM-SHA-256 and
  PLAIN; CLIENT_TLS, SASL_SSL, the same with a generated CA, when ``tls=True``;
- BROKER and CONTROLLER, PLAINTEXT, between the nodes only.

There is no authorizer: any authenticated user may do anything.

The jars and the Java command lines are ``kafkatools``'s: no distribution scripts exist,
the broker and the storage tool run as Java main classes.

It must not depend on the gateway.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.integration.kafkatools import (
    _LOG4J2,
    _QUIET_CDS,
    cds_archive,
    java_command,
)
from tests.integration.pgcluster import free_port
from tests.integration.procs import stop_group
from tests.integration.s3server import START_ATTEMPTS, BackendError, TlsFiles, make_tls

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# A node is up in 1-3 s; a loaded CI machine starting three JVMs gets this long.
START_TIMEOUT_S = 90.0
FORMAT_TIMEOUT_S = 120
# Admin requests (create topic, alter SCRAM credentials) answer within a second.
ADMIN_TIMEOUT_S = 30.0
# A broker's JVM, small enough for three on a 2-core machine: SerialGC has no GC threads
# of its own; the heap holds the log cleaner's dedupe buffer (8 MB, below).
JVM_OPTIONS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
# For the test fixtures: C1 only starts three nodes about 1.5 s sooner on two cores and
# leaves the tests more CPU; benchmarks keep JVM_OPTIONS, whose C2 code is faster.
QUICK_JVM_OPTIONS = (*JVM_OPTIONS, "-XX:TieredStopAtLevel=1")
# kafka-storage format runs for half a second: C2 would only cost CPU.
FORMAT_JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
SCRAM_ITERATIONS = 8192  # Kafka's minimum is 4096
SCRAM_MECHANISMS = {
    "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512,
    "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256,
}
# The node that writes the archive gets this long for its controlled shutdown and dump.
DUMP_GRACE_S = 30.0

# What a node logs once it is a registered, unfenced broker ready for clients.
_STARTED = re.compile(rb"Kafka Server started")
_BUSY = re.compile(rb"Address already in use|BindException", re.IGNORECASE)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class _Node:
    node_id: int
    dir: Path
    client_port: int = 0
    tls_port: int = 0
    broker_port: int = 0
    controller_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    dump: Path | None = None  # where this JVM writes a class-data-sharing archive at exit

    @property
    def log(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def config(self) -> Path:
        return self.dir / "server.properties"


class KafkaCluster:
    """A throwaway KRaft cluster. Configure in the constructor, then `start()`; `stop()`
    (or leaving a ``with`` block) kills every node and deletes the directory.

    brokers: how many nodes (each a broker and a controller); 1 and 3 are tested.
    tls: also listen with SASL_SSL (`bootstrap_tls`, `ca_cert_path`).
    admin_user, admin_password: the user (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN) that
        exists from the start; the password is generated when not given.
    plain_users: more PLAIN users (name → password); PLAIN users are fixed at start.
    settings: server.properties entries added to or overriding every node's.
    jvm_options: the brokers' JVM options.
    netns: run each broker inside this network namespace (``ip netns exec``): its
        127.0.0.1 is the namespace's own, out of the host's reach, so the admin helpers
        (`admin`, `create_topic`, `add_user`), which connect from the host, cannot be
        used. Formatting the storage needs no network and runs outside.
    """

    def __init__(
        self,
        brokers: int = 1,
        *,
        tls: bool = False,
        admin_user: str = "admin",
        admin_password: str | None = None,
        plain_users: Mapping[str, str] | None = None,
        settings: Mapping[str, str | int] | None = None,
        jvm_options: Sequence[str] = JVM_OPTIONS,
        netns: str | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        self.size = brokers
        self.tls = tls
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self.plain_users = {admin_user: self.admin_password, **(plain_users or {})}
        self.settings = dict(settings or {})
        self.jvm_options = list(jvm_options)
        self.netns = netns
        self.cluster_id = ""
        self.dir: Path | None = None
        self._nodes: dict[int, _Node] = {}
        self._tls: TlsFiles | None = None

    # -- addresses and client settings -------------------------------------------------

    def _dir(self) -> Path:
        if self.dir is None:
            raise BackendError("cluster not started")
        return self.dir

    @property
    def brokers(self) -> dict[int, tuple[str, int]]:
        """Node id → (host, port) of its SASL_PLAINTEXT listener."""
        return {n.node_id: (HOST, n.client_port) for n in self._nodes.values()}

    @property
    def bootstrap(self) -> str:
        """``host:port,…`` of every node's SASL_PLAINTEXT listener."""
        return ",".join(f"{h}:{p}" for h, p in self.brokers.values())

    @property
    def tls_brokers(self) -> dict[int, tuple[str, int]]:
        """Node id → (host, port) of its SASL_SSL listener."""
        if not self.tls:
            raise BackendError("cluster has no TLS listener (tls=False)")
        return {n.node_id: (HOST, n.tls_port) for n in self._nodes.values()}

    @property
    def bootstrap_tls(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.tls_brokers.values())

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the CA that signed the brokers' certificate (for ``ssl.ca.location``)."""
        if self._tls is None:
            raise BackendError("cluster has no TLS (tls=False) or is not started")
        return self._tls.ca

    def log_path(self, node_id: int) -> Path:
        """The node's log: log4j at INFO and the JVM's own output."""
        return self._node(node_id).log

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every node's log, for error messages."""
        return "\n".join(
            f"--- node {n.node_id} ({n.log}):\n{_tail(n.log, lines)}" for n in self._nodes.values()
        )

    def sasl_config(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        mechanism: str = "SCRAM-SHA-512",
        tls: bool = False,
    ) -> dict[str, Any]:
        """confluent-kafka (librdkafka) settings, bootstrap.servers included, that log in
        as ``user`` (default: the admin) with ``mechanism``, over SASL_SSL when ``tls``."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_tls if tls else self.bootstrap,
            "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": user or self.admin_user,
            "sasl.password": self.admin_password if password is None else password,
        }
        if tls:
            conf["ssl.ca.location"] = str(self.ca_cert_path)
        return conf

    def kcat_args(self, *, tls: bool = False) -> list[str]:
        """``kcat -b … -X …`` logged in as the admin with SCRAM-SHA-512; run it with
        ``env=kcat_env()``."""
        conf = self.sasl_config(tls=tls)
        args = ["kcat", "-b", conf.pop("bootstrap.servers")]
        conf["sasl.mechanisms"] = conf.pop("sasl.mechanism")
        for key, value in conf.items():
            args += ["-X", f"{key}={value}"]
        return args

    def client_properties(
        self,
        path: Path,
        user: str | None = None,
        password: str | None = None,
        *,
        mechanism: str = "SCRAM-SHA-512",
        tls: bool = False,
    ) -> Path:
        """Write a Java client configuration (bootstrap.servers, SASL, TLS trust) to
        ``path`` for the tools' ``--command-config`` / ``--producer.config``."""
        conf = self.sasl_config(user, password, mechanism=mechanism, tls=tls)
        module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
        props = {
            "bootstrap.servers": conf["bootstrap.servers"],
            "security.protocol": conf["security.protocol"],
            "sasl.mechanism": mechanism,
            "sasl.jaas.config": f"org.apache.kafka.common.security.{module} required "
            f"username={_jaas_quote(conf['sasl.username'])} "
            f"password={_jaas_quote(conf['sasl.password'])};",
        }
        if tls:
            props.update(
                {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.ca_cert_path)}
            )
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> KafkaCluster:
        if self.dir is not None:
            raise BackendError("cluster already started")
        archive = cds_archive()  # installs Kafka (or fails) before making anything
        self.dir = Path(tempfile.mkdtemp(prefix="lg-kafka-"))
        try:
            if self.tls:
                self._tls = make_tls(self.dir / "tls")
            (self.dir / "log4j2.properties").write_text(_LOG4J2.format(level="INFO"))
            self._nodes = {i: _Node(i, self.dir / f"node-{i}") for i in range(1, self.size + 1)}
            if not archive.exists():
                token = f"{os.getpid()}-{secrets.token_hex(4)}"
                self._nodes[1].dump = archive.with_name(f".{archive.name}.{token}")
            for attempt in range(START_ATTEMPTS):
                self._assign_ports()
                self._format()
                for node in self._nodes.values():
                    self._spawn(node)
                try:
                    self._wait_started(list(self._nodes.values()))
                    return self
                except BackendError:
                    busy = any(_BUSY.search(n.log.read_bytes()) for n in self._nodes.values())
                    if not busy or attempt + 1 == START_ATTEMPTS:
                        raise
                    self._kill_all()
                    for node in self._nodes.values():
                        shutil.rmtree(node.dir / "data", ignore_errors=True)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every node and delete the directory. Idempotent. A node that is to write
        the class-data-sharing archive is stopped gracefully first."""
        for node in self._nodes.values():
            if node.dump is not None and node.proc is not None and node.proc.poll() is None:
                _terminate(node.proc, DUMP_GRACE_S)
                self._keep_archive(node)
        self._kill_all()
        self._nodes = {}
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self._tls = None

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop_broker(self, node_id: int, *, kill: bool = False) -> None:
        """Stop one node: a controlled shutdown (SIGTERM), or SIGKILL with ``kill``. Its
        data stays; `start_broker` starts it again on the same ports."""
        node = self._node(node_id)
        if kill:
            _kill(node.proc)
        else:
            stop_group(node.proc)
            self._keep_archive(node)
        node.proc = None

    def start_broker(self, node_id: int) -> None:
        """Start a stopped node again and wait until it serves clients."""
        node = self._node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            raise BackendError(f"node {node_id} is running")
        self._spawn(node)
        self._wait_started([node])

    def _node(self, node_id: int) -> _Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise BackendError(f"no node {node_id} (nodes: {sorted(self._nodes)})") from None

    def _keep_archive(self, node: _Node) -> None:
        """Put the archive that a gracefully stopped node wrote into place, atomically."""
        if node.dump is None or node.proc is None or node.proc.returncode is None:
            return
        if node.proc.returncode != -signal.SIGKILL and node.dump.exists():
            os.replace(node.dump, cds_archive())
        node.dump.unlink(missing_ok=True)
        node.dump = None

    def _kill_all(self) -> None:
        # The data is thrown away: no controlled shutdown, which would wait for the
        # quorum that the other nodes' exits are taking down.
        for node in self._nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                os.killpg(node.proc.pid, signal.SIGKILL)
        for node in self._nodes.values():
            _kill(node.proc)
            node.proc = None
            if node.dump is not None:
                node.dump.unlink(missing_ok=True)  # maybe half-written

    def _assign_ports(self) -> None:
        for node in self._nodes.values():
            node.client_port = free_port()
            node.tls_port = free_port() if self.tls else 0
            node.broker_port = free_port()
            node.controller_port = free_port()

    def _properties(self, node: _Node) -> dict[str, str | int]:
        n = self.size
        listeners = {"CLIENT": node.client_port, "BROKER": node.broker_port}
        protocols = {"CLIENT": "SASL_PLAINTEXT", "BROKER": "PLAINTEXT"}
        if self.tls:
            listeners["CLIENT_TLS"] = node.tls_port
            protocols["CLIENT_TLS"] = "SASL_SSL"
        advertised = ",".join(f"{name}://{HOST}:{port}" for name, port in listeners.items())
        listeners["CONTROLLER"] = node.controller_port
        protocols["CONTROLLER"] = "PLAINTEXT"
        props: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": ",".join(
                f"{m.node_id}@{HOST}:{m.controller_port}" for m in self._nodes.values()
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "BROKER",
            "listeners": ",".join(f"{k}://{HOST}:{v}" for k, v in listeners.items()),
            "advertised.listeners": advertised,
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(node.dir / "data"),
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            # Internal topics that fit the cluster, with one partition: creating the
            # default 50 of __consumer_offsets is a pause on the first consumer group.
            "offsets.topic.replication.factor": n,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": n,
            "transaction.state.log.min.isr": min(n, 2),
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": n,
            "share.coordinator.state.topic.min.isr": min(n, 2),
            "share.coordinator.state.topic.num.partitions": 1,
            "min.insync.replicas": 1 if n < 3 else 2,
            # Few threads and buffers: several brokers share two cores.
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 8 << 20,
            # Register and unfence sooner than with the default 2 s heartbeats. A restarted
            # node cannot register until its old session expires (default 9 s), but a
            # heartbeat late by that long means a broker that tests should see fenced.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 4000,
        }
        plain = " ".join(f"user_{u}={_jaas_quote(p)}" for u, p in self.plain_users.items())
        for name in ["client", "client_tls"] if self.tls else ["client"]:
            props[f"listener.name.{name}.sasl.enabled.mechanisms"] = (
                "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
            )
            for scram in ("scram-sha-512", "scram-sha-256"):
                props[f"listener.name.{name}.{scram}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
            props[f"listener.name.{name}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};"
            )
        if self._tls is not None:
            # A PEM keystore is one file with the (unencrypted PKCS#8) key and the chain.
            keystore = self._tls.key.parent / "keystore.pem"
            if not keystore.exists():
                keystore.touch(mode=0o600)
                keystore.write_bytes(self._tls.key.read_bytes() + self._tls.cert.read_bytes())
            props["listener.name.client_tls.ssl.keystore.type"] = "PEM"
            props["listener.name.client_tls.ssl.keystore.location"] = str(keystore)
        props.update(self.settings)
        return props

    def _format(self) -> None:
        """Write every node's configuration and run ``kafka-storage format`` on each, in
        parallel (it is one short JVM run per node)."""
        # A cluster id is 22 URL-safe base64 characters; one starting with '-' reads as
        # an option to kafka-storage's argument parser, so draw again.
        self.cluster_id = "-"
        while self.cluster_id.startswith("-"):
            self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram = f"[name={self.admin_user},password={self.admin_password}]"
        runs: list[tuple[_Node, subprocess.Popen[bytes]]] = []
        for node in self._nodes.values():
            node.dir.mkdir(parents=True, exist_ok=True)
            props = self._properties(node)
            node.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            cmd = java_command(
                "kafka.tools.StorageTool",
                *("format", "--config", str(node.config), "--cluster-id", self.cluster_id),
                *("--add-scram", f"SCRAM-SHA-512={scram}", "--add-scram", f"SCRAM-SHA-256={scram}"),
                jvm_options=FORMAT_JVM_OPTIONS,
                log_config=self._dir() / "log4j2.properties",
            )
            with (node.dir / "format.log").open("wb") as out:
                proc = subprocess.Popen(
                    cmd,
                    cwd=node.dir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            runs.append((node, proc))
        failed: list[str] = []
        for node, proc in runs:
            try:
                code = proc.wait(FORMAT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                failed.append(f"node {node.node_id} ({code}):\n{_tail(node.dir / 'format.log')}")
        if failed:
            raise BackendError("kafka-storage format failed for " + "\n".join(failed))

    def _spawn(self, node: _Node) -> None:
        jvm = list(self.jvm_options)
        if node.dump is not None:
            jvm += [f"-XX:ArchiveClassesAtExit={node.dump}", *_QUIET_CDS]
        cmd = java_command(
            "kafka.Kafka",
            str(node.config),
            jvm_options=jvm,
            log_config=self._dir() / "log4j2.properties",
            cds=node.dump is None,
        )
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        with node.log.open("ab") as out:
            out.write(f"=== {time.strftime('%H:%M:%S')} starting node {node.node_id}\n".encode())
            out.flush()
            node.proc = subprocess.Popen(
                cmd,
                cwd=node.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait_started(self, nodes: list[_Node]) -> None:
        """Wait until each node logged, since its last ``=== starting`` line, that it
        serves clients; raise with the logs' tails when one exits or time runs out."""
        offsets = {n.node_id: n.log.read_bytes().rfind(b"=== ") for n in nodes}
        waiting = {n.node_id: n for n in nodes}
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for node in list(waiting.values()):
                assert node.proc is not None
                if _STARTED.search(node.log.read_bytes(), offsets[node.node_id]):
                    del waiting[node.node_id]
                elif node.proc.poll() is not None:
                    raise BackendError(
                        f"kafka node {node.node_id} exited ({node.proc.returncode}):\n"
                        f"{self.log_tail()}"
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"kafka nodes {sorted(waiting)} did not start in {START_TIMEOUT_S:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    # -- administration ----------------------------------------------------------------

    def admin(self) -> AdminClient:
        """A confluent-kafka AdminClient logged in as the admin (SCRAM-SHA-512). Keep it
        while waiting on its futures: they fail once it is collected."""
        return AdminClient(self.sasl_config())

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> None:
        """Create a topic and wait until every broker knows a leader of each partition."""
        topic = NewTopic(name, partitions, replication, config=dict(config or {}))
        admin = self.admin()
        _result(admin.create_topics([topic])[name], f"create topic {name}")
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        for node_id, (host, port) in self.brokers.items():
            one = AdminClient({**self.sasl_config(), "bootstrap.servers": f"{host}:{port}"})
            while True:
                t = one.list_topics(name, timeout=ADMIN_TIMEOUT_S).topics.get(name)
                parts = {} if t is None or t.error is not None else t.partitions
                if len(parts) == partitions and all(p.leader >= 0 for p in parts.values()):
                    break
                if time.monotonic() > deadline:
                    raise BackendError(f"topic {name} has no leaders on node {node_id}")
                time.sleep(0.05)

    def add_user(self, name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Create a SCRAM user (or change its password) and wait until every broker lets
        it log in. PLAIN users are fixed at start: pass them as ``plain_users``."""
        if mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"add_user takes a SCRAM mechanism, not {mechanism!r}")
        info = ScramCredentialInfo(SCRAM_MECHANISMS[mechanism], SCRAM_ITERATIONS)
        upsert = UserScramCredentialUpsertion(name, info, password.encode())
        admin = self.admin()
        _result(admin.alter_user_scram_credentials([upsert])[name], f"add user {name}")
        # Each broker applies the new credential from the metadata log a moment later.
        for host, port in self.brokers.values():
            conf = self.sasl_config(name, password, mechanism=mechanism)
            one = AdminClient({**conf, "bootstrap.servers": f"{host}:{port}"})
            try:
                one.list_topics(timeout=ADMIN_TIMEOUT_S)
            except KafkaException as e:
                raise BackendError(f"new user {name} cannot log in at {host}:{port}: {e}") from None


def _result(future: Any, what: str) -> Any:
    """Wait for a confluent-kafka admin future; its failure becomes a BackendError."""
    try:
        return future.result(timeout=ADMIN_TIMEOUT_S)
    except KafkaException as e:
        err = e.args[0]
        raise BackendError(f"{what}: {err.str() if isinstance(err, KafkaError) else err}") from None


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group; SIGKILL it when it is not gone within ``grace_s``."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


# The `kafka_cluster_factory` fixture: arguments as KafkaCluster's, returns it started.
KafkaClusterFactory = Callable[..., KafkaCluster]
