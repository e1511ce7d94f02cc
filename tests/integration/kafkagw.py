"""A gateway in front of a real Kafka cluster, and the clients users point at it.

`KafkaGateway` starts a ``ledgergate serve`` with one ``kafka`` connection (``events``)
to a `KafkaCluster` (the gateway authenticates to the brokers with the cluster's SCRAM
admin user), issues ledgergate tokens through the CLI as an admin would, and builds the
settings of confluent-kafka, aiokafka and kcat aimed at the gateway (SASL_SSL with the
gateway's certificate), of kafka-python, and of Kafka's Java clients (a properties file).
Reading the ledger back goes through the store.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
from pathlib import Path
from typing import Any, ClassVar

from ledgergate.wire.kafka import messages as km
from tests.integration.gateway import Gateway, free_port
from tests.integration.kafkaserver import KafkaCluster

# Broker node ids the fixtures use are small; a block this wide covers them.
PORT_BLOCK = 16


def free_block(n: int = PORT_BLOCK) -> int:
    """A first port such that ``first .. first+n-1`` are free on loopback now."""
    for _ in range(200):
        # below the kernel's ephemeral range (32768-60999): no client socket opened later
        # (a store connection, a test's client) can take one of these ports from us
        first = random.randint(20000, 32000 - n)
        socks = []
        try:
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


class KafkaGateway:
    def __init__(
        self,
        workdir: Path,
        cluster: KafkaCluster,
        *,
        connection: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        tls: bool = True,
    ) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.broker_ports = free_block()
        self.tls = tls
        conn = {
            "name": "events",
            "type": "kafka",
            "bootstrap": cluster.bootstrap.split(","),
            "tls": False,
            "credentials": {
                "mechanism": "SCRAM-SHA-512",
                "user": cluster.admin_user,
                "password": "env:LG_TEST_KAFKA_PASSWORD",
            },
            "listen": f"127.0.0.1:{self.port}",
            "advertised_host": "localhost",
            "broker_ports": self.broker_ports,
            **(connection or {}),
        }
        more = dict(extra or {})
        listeners = more.pop("listeners", {})
        self.gw = Gateway(
            workdir,
            [conn],
            env={"LG_TEST_KAFKA_PASSWORD": cluster.admin_password},
            extra={"listeners": {"kafka": {"tls": tls}, **listeners}, **more},
        )

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.gw.data_dir / "tls" / "server.crt")

    def start(self) -> KafkaGateway:
        self.gw.start()
        return self

    def stop(self) -> None:
        self.gw.stop()

    def token(self, identity: str = "etl", ttl: str = "1h", *more: str) -> str:
        return self.gw.token(identity, "service", ttl, *more)

    def conf(self, token: str, *, user: str = "etl", mechanism: str = "PLAIN") -> dict[str, Any]:
        """confluent-kafka settings: SASL/PLAIN (user, token) or OAUTHBEARER over TLS."""
        c: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL" if self.tls else "SASL_PLAINTEXT",
        }
        if self.tls:
            c["ssl.ca.location"] = self.ca
        if mechanism == "PLAIN":
            c.update({"sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": token})
        else:
            c.update(
                {
                    "sasl.mechanism": "OAUTHBEARER",
                    "oauth_cb": lambda _cfg: (token, 4102444800.0),
                }
            )
        return c

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def kcat_args(self, token: str, user: str = "etl") -> list[str]:
        args = [
            "kcat",
            "-b",
            self.bootstrap,
            "-X",
            f"security.protocol={'SASL_SSL' if self.tls else 'SASL_PLAINTEXT'}",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            f"sasl.username={user}",
            "-X",
            f"sasl.password={token}",
        ]
        if self.tls:
            args += ["-X", f"ssl.ca.location={self.ca}"]
        return args

    def aiokafka_args(
        self, token: str, *, user: str = "etl", mechanism: str = "PLAIN"
    ) -> dict[str, Any]:
        """aiokafka's keyword arguments: SASL/PLAIN (user, token) or OAUTHBEARER (through
        an ``AbstractTokenProvider``) over TLS."""
        from aiokafka.abc import AbstractTokenProvider

        args: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL" if self.tls else "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
        }
        if self.tls:
            args["ssl_context"] = self.ssl_context()
        if mechanism == "PLAIN":
            args.update({"sasl_plain_username": user, "sasl_plain_password": token})
        else:

            class Provider(AbstractTokenProvider):
                async def token(self) -> str:
                    return token

            args["sasl_oauth_token_provider"] = Provider()
        return args

    def kafka_python_args(self, token: str, *, user: str = "etl") -> dict[str, Any]:
        """kafka-python's keyword arguments: SASL/PLAIN (user, token) over TLS."""
        args: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL" if self.tls else "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": user,
            "sasl_plain_password": token,
        }
        if self.tls:
            args["ssl_cafile"] = self.ca
        return args

    def client_properties(self, path: Path, token: str, *, user: str = "etl") -> Path:
        """A Java client configuration aimed at the gateway (SASL/PLAIN with the token,
        the gateway's certificate trusted) written to ``path``, for the tools'
        ``--command-config``."""

        def quote(v: str) -> str:
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

        props = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL" if self.tls else "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
            f"required username={quote(user)} password={quote(token)};",
        }
        if self.tls:
            props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": self.ca})
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def chunks(self, topic: str, direction: str | None = None) -> list[dict[str, Any]]:
        """The ``chunk`` entries of ``topic`` (``c2s`` produced, ``s2c`` fetched)."""
        return [
            e
            for e in self.entries("chunk")
            if e["chunk"]["topic"] == topic and direction in (None, e["direction"])
        ]

    def indexed(self, timeout: float = 10.0) -> None:
        self.gw.indexed(timeout)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.gw.entries(kind)


K = km.ApiKey


class Raw:
    """A raw TLS connection to the gateway speaking the protocol by hand (bad input,
    exact requests). Every one opened is closed by ``Raw.close_all()`` (the test
    modules call it after each test)."""

    _open: ClassVar[list[Raw]] = []

    def __init__(self, g: KafkaGateway) -> None:
        sock = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        try:
            self.s = g.ssl_context().wrap_socket(sock, server_hostname="localhost")
        except BaseException:
            sock.close()
            raise
        self.corr = 0
        Raw._open.append(self)

    def close(self) -> None:
        self.s.close()

    @classmethod
    def close_all(cls) -> None:
        while cls._open:
            cls._open.pop().close()

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def request(self, key: int, version: int, msg: dict[str, Any]) -> None:
        self.corr += 1
        body = km.encode_request_header(key, version, self.corr, "raw") + km.encode_request(
            key, version, msg
        )
        self.send(struct.pack(">i", len(body)) + body)

    def response(self, key: int, version: int) -> dict[str, Any]:
        size = struct.unpack(">i", self._read(4))[0]
        frame = self._read(size)
        hs = km.response_header_size(key, version, frame)
        return km.decode_response(key, version, frame[hs:])

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            got = self.s.recv(n - len(out))
            if not got:
                raise ConnectionError("closed")
            out += got
        return out

    def closed(self) -> bool:
        try:
            self.s.settimeout(10)
            return self.s.recv(1) == b""
        except (ConnectionError, ssl.SSLError, OSError):
            return True

    def login(self, token: str) -> None:
        self.request(K.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
        assert self.response(K.SASL_HANDSHAKE, 1)["error_code"] == 0
        self.request(K.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\0raw\0" + token.encode()})
        r = self.response(K.SASL_AUTHENTICATE, 2)
        assert r["error_code"] == 0, r
        assert r["session_lifetime_ms"] > 0
