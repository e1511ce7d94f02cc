"""A private network for agent tests: a network namespace joined to the host only by a
veth pair with link-local addresses (its 127.0.0.1 is its own, out of the host's reach),
and ``ledgergate agent`` run inside it. Needs root and ``ip netns``; the tests that use
it skip where either is missing (``needs_netns``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.gateway import BIN, Gateway
from tests.integration.pgcluster import PgCluster

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and ip netns"
)


@dataclass
class Netns:
    name: str
    host_ip: str  # the host's end of the veth pair
    inner_ip: str

    def prefix(self) -> list[str]:
        """Put this before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def private_network() -> Iterator[Netns]:
    """A fresh namespace and its veth pair, removed on exit."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if, inner_if = f"lgns{tag}", f"lgh{tag}", f"lgi{tag}"
    octet = 1 + int(tag[:2], 16) % 250
    n = Netns(ns, f"169.254.{octet}.1", f"169.254.{octet}.2")
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if)
        _ip("link", "set", inner_if, "netns", ns)
        _ip("addr", "add", f"{n.host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{n.inner_ip}/30", "dev", inner_if)
        _ip("netns", "exec", ns, "ip", "link", "set", inner_if, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield n
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[Netns]:
    with private_network() as n:
        yield n


class Agent:
    """``ledgergate agent`` inside the namespace. ``targets``: more ``--target`` values
    (default: the hidden server as ``app``); ``args``/``env``: more options and
    environment (a credential the agent holds)."""

    def __init__(
        self,
        netns: Netns,
        gw: Gateway,
        port: int,
        token: str,
        pg: PgCluster | None = None,
        *,
        targets: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = gw.workdir / "agent.log"
        targets += (f"app=127.0.0.1:{pg.port}",) if pg is not None else ()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    "ip", "netns", "exec", netns.name, str(BIN), "agent",
                    "--gateway", f"{netns.host_ip}:{port}",
                    "--token", "env:AGENT_TOKEN",
                    *(a for t in targets for a in ("--target", t)),
                    "--ca", str(gw.data_dir / "tls" / "server.crt"),
                    "--server-name", "localhost",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "AGENT_TOKEN": token, **(env or {})},
            )  # fmt: skip

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"agent log lacks {text!r}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
