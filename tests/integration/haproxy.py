"""HAProxy (from Debian) in TCP mode in front of several gateways, for the tests of
gateways side by side: one address, round-robin over the backends, a health check that
takes a dead gateway out within a fraction of a second."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.gateway import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_TIMEOUT_S = 10


class HaProxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lg-haproxy-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        servers = "\n".join(
            f"  server gw{i} {h}:{p} check inter 200ms fall 1 rise 2"
            for i, (h, p) in enumerate(self.backends)
        )
        return (
            "global\n  maxconn 1000\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n"
            "  timeout server 60s\n  retries 2\n  option redispatch\n"
            f"frontend gateways\n  bind 127.0.0.1:{self.port}\n  default_backend gws\n"
            f"backend gws\n  balance roundrobin\n{servers}\n"
        )

    def start(self) -> HaProxy:
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(self._config())
        with open(self.dir / "haproxy.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "haproxy.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("haproxy did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
