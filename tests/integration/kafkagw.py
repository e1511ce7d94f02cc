"""A gateway in front of a real Kafka cluster, and the clients users point at it.

`KafkaGateway` starts a ``ledgergate serve`` with one ``kafka`` connection (``events``)
to a `KafkaCluster` (the gateway authenticates to the brokers with the cluster's SCRAM
admin user), issues ledgergate tokens through the CLI as an admin would, and builds the
settings of confluent-kafka, aiokafka and kcat aimed at the gateway (SASL_SSL with the
gateway's certificate). Reading the ledger back goes through the store.
"""

from __future__ import annotations

import random
import socket
import ssl
from pathlib import Path
from typing import Any

from tests.integration.gateway import Gateway, free_port
from tests.integration.kafkaserver import KafkaCluster

# Broker node ids the fixtures use are small; a block this wide covers them.
PORT_BLOCK = 16


def free_block(n: int = PORT_BLOCK) -> int:
    """A first port such that ``first .. first+n-1`` are free on loopback now."""
    for _ in range(200):
        first = random.randint(20000, 60000 - n)
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

    def indexed(self, timeout: float = 10.0) -> None:
        self.gw.indexed(timeout)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.gw.entries(kind)
