"""The S3 paths s3_compare.py measures, started on loopback, and what measures them.

versitygw comes from the test-suite's `S3Server` (one implementation of "a throwaway S3
server"); this module adds what stands in front of it: nginx as a plain reverse proxy and
a ``ledgergate serve`` with one ``s3`` connection, each with its files in a work
directory, on a free port, with an exact pid for /proc. Also: a resident-set sampler, a
per-thread CPU reader, and a small-request load generator (uvloop, Protocol callbacks,
pre-signed requests sent again and again on keep-alive connections) cheap enough that
the paths, not it, set the rate.

It runs no workload and prints nothing; s3_compare.py does that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import uvloop
from _cluster import CLK_TCK, LEDGERGATE, BenchError, proc_stats, stop_process, wait_listening
from botocore.config import Config
from tests.integration.pgcluster import clean_env, free_port
from tests.integration.s3server import REGION, S3Server

__all__ = [
    "Endpoint",
    "GatewayS3",
    "Nginx",
    "RssSampler",
    "S3Server",
    "backend_pid",
    "direct",
    "hammer",
    "machine_busy_s",
    "thread_cpu",
]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# A 1 GiB request through a slow path must not look hung to the client.
READ_TIMEOUT_S = 600
# How often the relay's resident set is sampled during the large transfers.
RSS_SAMPLE_S = 0.1


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a client sends S3 requests on one path, with which key, and which process
    relays them (None: direct)."""

    name: str
    url: str  # scheme://host:port
    access_key: str
    secret_key: str
    relay_pid: int | None = None
    verify: bool | str = True  # CA bundle for the gateway's generated certificate

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.url.split("://", 1)[1].rpartition(":")
        return host, int(port)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client as a user would make one (path-style addressing), with no
        retries (a failed request must fail the run, not be hidden in its time)."""
        s3 = {"addressing_style": "path", **config.pop("s3", {})}
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            verify=self.verify,
            config=Config(
                s3=s3,
                retries={"max_attempts": 1, "mode": "standard"},
                read_timeout=READ_TIMEOUT_S,
                max_pool_connections=16,
                **config,
            ),
        )


def direct(s3: S3Server) -> Endpoint:
    return Endpoint("direct", s3.endpoint, s3.access_key, s3.secret_key)


def backend_pid(s3: S3Server) -> int | None:
    proc = s3._proc  # the test helper keeps its Popen private; its pid is all we read
    return proc.pid if proc is not None else None


class Nginx:
    """nginx as a plain reverse proxy in front of versitygw: no request or response
    buffering, no body size limit, HTTP/1.1 keep-alive to the upstream, and the client's
    Host header passed on unchanged so that a signature made for nginx's address still
    verifies at versitygw (which checks the signed Host value, not that it is its own)."""

    def __init__(
        self, workdir: Path, s3: S3Server, workers: int = 1, buffers: str | None = None
    ) -> None:
        self.dir = workdir / "nginx"
        self.s3 = s3
        self.workers = workers
        # proxy_buffer_size and client_body_buffer_size: unbuffered proxying moves each
        # direction through one buffer of this size (nginx's default: one page, 4-16 KiB).
        self.buffers = buffers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Endpoint:
        if not Path(NGINX).exists():
            raise BenchError(f"{NGINX} not found: apt-get install -y nginx")
        self.dir.mkdir()
        port = free_port()
        d = self.dir
        conf = d / "nginx.conf"
        buffers = ""
        if self.buffers:
            buffers = f"    proxy_buffer_size {self.buffers};\n"
            buffers += f"    proxy_buffers 4 {self.buffers};\n"  # nginx checks they fit
            buffers += f"    proxy_busy_buffers_size {self.buffers};\n"
            buffers += f"    client_body_buffer_size {self.buffers};\n"
        conf.write_text(
            "daemon off;\nmaster_process on;\n"
            f"worker_processes {self.workers};\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "  access_log off;\n"
            f"  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
            f"  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n"
            f"  scgi_temp_path {d}/scgi;\n"
            f"  upstream s3 {{ server 127.0.0.1:{self.s3.port}; keepalive 32; }}\n"
            "  server {\n"
            f"    listen 127.0.0.1:{port};\n"
            "    client_max_body_size 0;\n"
            "    proxy_request_buffering off;\n"
            "    proxy_buffering off;\n"
            "    proxy_http_version 1.1;\n"
            f"{buffers}"
            "    location / {\n"
            "      proxy_pass http://s3;\n"
            "      proxy_set_header Host $http_host;\n"
            '      proxy_set_header Connection "";\n'
            "    }\n"
            "  }\n"
            "}\n"
        )
        log = d / "error.log"
        with open(log, "ab") as out:  # errors before the config is read go to stderr
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(d), "-c", str(conf)],
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(port, self.proc, log, "nginx")
        return Endpoint(
            "nginx",
            f"http://127.0.0.1:{port}",
            self.s3.access_key,
            self.s3.secret_key,
            self.proc.pid,
        )

    def stop(self) -> None:
        stop_process(self.proc)  # SIGTERM: fast shutdown of master and workers
        self.proc = None


class GatewayS3:
    """``ledgergate serve -c <yaml>`` with one ``s3`` connection (``logs``) to versitygw
    and its HTTP listener (plaintext, or TLS with the generated certificate), and an
    access key issued with ``token create --s3``. The PostgreSQL listener, always on,
    gets a free loopback port of its own."""

    SECRET_ENV = "BENCH_S3_SECRET"

    def __init__(self, workdir: Path, s3: S3Server, *, name: str, tls: bool) -> None:
        self.name = name
        self.tls = tls
        self.dir = workdir / name
        self.s3 = s3
        self.config = self.dir / "ledgergate.yaml"
        self.env = clean_env(**{self.SECRET_ENV: s3.secret_key})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "gateway.log"

    def start(self) -> Endpoint:
        if not LEDGERGATE.exists():
            raise BenchError(f"{LEDGERGATE} not found: run scripts/install-deps")
        self.dir.mkdir()
        port = free_port()
        tls = "true" if self.tls else "false"
        self.config.write_text(
            f"data_dir: {self.dir / 'data'}\n"
            "listeners:\n"
            f'  postgres: {{address: "127.0.0.1:{free_port()}"}}\n'
            f'  http: {{address: "127.0.0.1:{port}", tls: {tls}, allow_plaintext: true}}\n'
            "connections:\n"
            "  - name: logs\n"
            "    type: s3\n"
            f"    endpoint: {self.s3.endpoint}\n"
            f"    region: {self.s3.region}\n"
            "    recording: redacted\n"
            f"    credentials: {{access_key_id: {self.s3.access_key}, "
            f'secret_access_key: "env:{self.SECRET_ENV}"}}\n'
        )
        key_id, secret = self._key()
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
        # The certificate the listener serves was generated at the first start (or by
        # token create); it is self-signed for localhost, so clients use that name.
        scheme, host = ("https", "localhost") if self.tls else ("http", "127.0.0.1")
        verify: bool | str = str(self.dir / "data" / "tls" / "server.crt") if self.tls else True
        return Endpoint(
            self.name, f"{scheme}://{host}:{port}", key_id, secret, self.proc.pid, verify
        )

    def _key(self) -> tuple[str, str]:
        cmd = [str(LEDGERGATE), "token", "create", "--identity", "bench", "--kind", "service"]
        cmd += ["--ttl", "4h", "--s3", "-c", str(self.config)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.dir)
        lines = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        if r.returncode != 0 or "AWS_SECRET_ACCESS_KEY" not in lines:
            raise BenchError(f"ledgergate token create --s3 failed ({r.returncode}): {r.stderr}")
        return lines["AWS_ACCESS_KEY_ID"].strip(), lines["AWS_SECRET_ACCESS_KEY"].strip()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# -- measuring ---------------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each thread of ``pid``: {tid: (name, seconds)}."""
    out: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
                fields = rest.split()
                name = head.partition("(")[2]
                out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK  # less idle and iowait


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` and its children to their current RSS (clear_refs 5)."""
    pids = [pid]
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as f:
        pids += [int(c) for c in f.read().split()]
    try:
        for p in pids:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
    except OSError:
        return False
    return True


@dataclass(slots=True)
class RssSampler:
    """VmRSS of ``pid`` (and its children) every 100 ms while the block runs; start,
    peak (also VmHWM when it could be reset first) and growth in KiB."""

    pid: int
    samples: list[int] = field(default_factory=list)

    @contextlib.contextmanager
    def run(self, into: dict[str, Any]) -> Iterator[None]:
        hwm = reset_peak(self.pid)
        start = proc_stats(self.pid).rss_kb
        done = threading.Event()

        def sample() -> None:
            while not done.wait(RSS_SAMPLE_S):
                with contextlib.suppress(OSError):
                    self.samples.append(proc_stats(self.pid).rss_kb)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()
        end = proc_stats(self.pid)
        peak = max([start, end.rss_kb, *self.samples])
        if hwm:
            peak = max(peak, end.peak_rss_kb)
        into.update(
            rss_start_kb=start, rss_peak_kb=peak, rss_growth_kb=peak - start, rss_end_kb=end.rss_kb
        )


# -- the small-request load generator ----------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


class _Client(asyncio.Protocol):
    """One connection sending the same request again as soon as the previous answer is
    complete, until ``deadline``; a server that answers ``Connection: close`` gets a new
    connection (counted). Understands Content-Length answers only (S3 GET and HEAD have
    one); anything else fails the run."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buf = bytearray()
        self.need = -1  # body bytes still expected; -1: reading a head
        self.closing = False  # the answer being read said Connection: close
        self.busy = False  # a request is out
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.busy = True
        self.sent = time.perf_counter()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[: end + 2])
            if not head.startswith(b"HTTP/1.1 2"):
                self.run.bad.append(bytes(buf[:300]))
            if _CHUNKED.search(head):
                self.run.fail(BenchError(f"chunked answer not understood: {head[:300]!r}"))
                return
            m = _CONTENT_LENGTH.search(head)
            self.need = 0 if self.run.head or m is None else int(m.group(1))
            self.closing = _CLOSE.search(head) is not None
            del buf[: end + 4]
        if len(buf) < self.need:
            return
        if len(buf) > self.need:
            self.run.fail(BenchError(f"{len(buf) - self.need} bytes past the answer"))
            return
        now = time.perf_counter()
        self.run.latencies.append(now - self.sent)
        buf.clear()
        self.need = -1
        self.busy = False
        if now >= self.run.deadline or self.run.bad:
            self.run.finished()
        elif not self.closing:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.run.fail(BenchError(f"connection lost with a request out: {exc}"))
        elif self.closing and time.perf_counter() < self.run.deadline and not self.run.bad:
            self.run.reconnects += 1
            self.run.connect()


@dataclass(slots=True)
class _Run:
    host: str
    port: int
    tls: ssl.SSLContext | None
    request: bytes
    head: bool
    deadline: float
    conns: int
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]
    latencies: list[float] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)
    clients: list[_Client] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    reconnects: int = 0
    left: int = 0

    def connect(self) -> None:
        c = _Client(self)
        self.clients.append(c)
        task = self.loop.create_task(
            self.loop.create_connection(lambda: c, self.host, self.port, ssl=self.tls)
        )
        self.tasks.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.fail(exc)

    def finished(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or BenchError("failed"))


async def _hammer(
    host: str,
    port: int,
    request: bytes,
    head: bool,
    conns: int,
    seconds: float,
    tls: ssl.SSLContext | None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    run = _Run(host, port, tls, request, head, t0 + seconds, conns, loop, loop.create_future())
    run.left = conns
    for _ in range(conns):
        run.connect()
    try:
        await asyncio.wait_for(run.done, seconds + READ_TIMEOUT_S)
    finally:
        for c in run.clients:
            if c.transport is not None:
                c.transport.close()
    elapsed = time.perf_counter() - t0
    if run.bad:
        raise BenchError(f"{len(run.bad)} requests failed, e.g.: {run.bad[0]!r}")
    lat = sorted(run.latencies)
    return {
        "requests": len(lat),
        "seconds": round(elapsed, 3),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1e3, 3),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, 3),
        "reconnects": run.reconnects,
    }


def hammer(
    url: str, head: bool, conns: int, seconds: float, verify: bool | str = True
) -> dict[str, Any]:
    """Send the pre-signed ``url`` (GET, or HEAD) on ``conns`` keep-alive connections
    for ``seconds``; requests/s, latency percentiles and the load generator's own CPU
    (this process: user + system seconds, and µs per request)."""
    scheme, _, rest = url.partition("://")
    tls = None
    if scheme == "https":
        tls = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    hostport, _, target = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    method = b"HEAD" if head else b"GET"
    request = (
        method
        + b" /"
        + target.encode()
        + b" HTTP/1.1\r\nHost: "
        + hostport.encode()
        + b"\r\nUser-Agent: s3_compare\r\n\r\n"
    )
    cpu0 = os.times()
    out = uvloop.run(_hammer(host, int(port), request, head, conns, seconds, tls))
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    out["loadgen_cpu_s"] = round(cpu, 3)
    out["loadgen_cpu_us_per_req"] = round(cpu / max(out["requests"], 1) * 1e6, 1)
    out["loadgen_core_share"] = round(cpu / out["seconds"], 3)
    return out
