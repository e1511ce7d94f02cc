"""The processes a benchmark compares, started on loopback and measured from /proc.

PostgreSQL comes from the test-suite's `PgCluster` (one implementation of "a throwaway
cluster"); this module adds the relays in front of it: pgbouncer in session mode and a
``ledgergate serve`` process, each with its own files in a work directory, each on a free
port, each with an exact pid so /proc/<pid> gives its CPU time and peak RSS.

It runs no workload and prints nothing; pgbench_compare.py does that.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.pgcluster import (  # noqa: E402
    SUPERUSER,
    PgCluster,
    as_postgres,
    clean_env,
    free_port,
    give_to_postgres,
)

__all__ = [
    "LEDGERGATE",
    "BenchError",
    "Endpoint",
    "GatewayProcess",
    "PgCluster",
    "Pgbouncer",
    "ProcStats",
    "PythonRelay",
    "proc_stats",
]

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# LEDGERGATE_BIN benchmarks another build, e.g. a checkout of an older commit.
LEDGERGATE = Path(os.environ.get("LEDGERGATE_BIN", REPO / ".venv" / "bin" / "ledgergate"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Relays start in well under a second; the gateway's first start also generates its
# TLS certificate and ledger key.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class BenchError(RuntimeError):
    """A process of the benchmark could not be started or measured."""


@dataclass(frozen=True, slots=True)
class ProcStats:
    cpu_s: float  # utime + stime of the process and its live child processes
    peak_rss_kb: int  # VmHWM (summed over them)
    rss_kb: int  # VmRSS (summed over them)


def proc_stats(pid: int) -> ProcStats:
    """The process's figures plus its children's (a gateway with several workers is a
    supervisor and its relay processes)."""
    own = _one_proc(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    total = [own.cpu_s, own.peak_rss_kb, own.rss_kb]
    for c in children:
        try:
            st = _one_proc(c)
        except OSError:
            continue  # exited meanwhile
        total = [total[0] + st.cpu_s, total[1] + st.peak_rss_kb, total[2] + st.rss_kb]
    return ProcStats(total[0], int(total[1]), int(total[2]))


def _one_proc(pid: int) -> ProcStats:
    with open(f"/proc/{pid}/stat") as f:
        # comm (field 2) may contain spaces; fields after the closing parenthesis are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    mem: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                mem[key] = int(value.split()[0])
    return ProcStats((utime + stime) / CLK_TCK, mem.get("VmHWM", 0), mem.get("VmRSS", 0))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a client connects for one path, and which process relays it (None: direct)."""

    name: str
    host: str
    port: int
    dbname: str
    user: str
    password: str
    relay_pid: int | None = None

    def libpq_env(self) -> dict[str, str]:
        """Environment for pgbench/psql: the password never appears on a command line."""
        return clean_env(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGDATABASE=self.dbname,
            PGUSER=self.user,
            PGPASSWORD=self.password,
            PGSSLMODE="disable",
            PGAPPNAME=f"bench-{self.name}",
        )


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{what} did not listen on {port}:\n{_tail(log)}") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _PeerRelay:
    """A relay in front of the cluster that clients go through as the superuser (the
    peers the gateway is compared with): its files under ``workdir/name``, its process."""

    name = ""
    log_name = ""

    def __init__(self, workdir: Path, cluster: PgCluster, dbname: str) -> None:
        self.dir = workdir / self.name
        self.cluster = cluster
        self.dbname = dbname
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / self.log_name

    def _endpoint(self) -> Endpoint:
        assert self.proc is not None
        return Endpoint(
            self.name,
            "127.0.0.1",
            self.port,
            self.dbname,
            SUPERUSER,
            self.cluster.password,
            self.proc.pid,
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class Pgbouncer(_PeerRelay):
    """pgbouncer in session mode in front of one database, run as the postgres user
    (pgbouncer refuses root). Clients authenticate with SCRAM as the superuser; pgbouncer
    logs in to PostgreSQL with the same password."""

    name = "pgbouncer"
    log_name = "pgbouncer.log"

    def start(self) -> Endpoint:
        self.dir.mkdir()
        self.port = free_port()
        userlist = self.dir / "userlist.txt"
        ini = self.dir / "pgbouncer.ini"
        userlist.touch(mode=0o600)
        userlist.write_text(f'"{SUPERUSER}" "{self.cluster.password}"\n')
        ini.write_text(
            "[databases]\n"
            f"{self.dbname} = host=127.0.0.1 port={self.cluster.port} dbname={self.dbname}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "pool_mode = session\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            "max_client_conn = 200\n"
            "default_pool_size = 40\n"
            "client_tls_sslmode = disable\n"
            "server_tls_sslmode = disable\n"
            f"logfile = {self.log}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        give_to_postgres(self.dir, userlist, ini)
        self.proc = subprocess.Popen(
            [PGBOUNCER, str(ini)],
            cwd=self.dir,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **as_postgres(),
        )
        wait_listening(self.port, self.proc, self.log, "pgbouncer")
        return self._endpoint()


class PythonRelay(_PeerRelay):
    """``bench/byte_relay.py``: the bare Python relay (uvloop, Protocol callbacks, bytes
    passed on as they arrive), as a reference for what any Python relay costs here."""

    SCRIPT = Path(__file__).resolve().parent / "byte_relay.py"
    name = "python-relay"
    log_name = "relay.log"

    def start(self) -> Endpoint:
        self.dir.mkdir()
        self.port = free_port()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.SCRIPT), str(self.port), str(self.cluster.port)],
                cwd=self.dir,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(self.port, self.proc, self.log, "byte_relay.py")
        return self._endpoint()


class GatewayProcess:
    """``ledgergate serve -c <yaml>`` with one connection to the benchmark database
    (plaintext listener, backend without TLS, redacted recording) and a service token."""

    PASSWORD_ENV = "BENCH_PGPASSWORD"

    def __init__(
        self,
        workdir: Path,
        cluster: PgCluster,
        dbname: str,
        *,
        name: str = "gateway",
        extra_yaml: str = "",
        workers: int = 1,
    ) -> None:
        self.name = name
        self.workers = workers
        self.dir = workdir / name
        self.cluster = cluster
        self.dbname = dbname
        self.extra_yaml = extra_yaml
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "ledgergate.yaml"
        self.env = clean_env(**{self.PASSWORD_ENV: cluster.password})

    @property
    def log(self) -> Path:
        return self.dir / "gateway.log"

    def start(self) -> Endpoint:
        if not LEDGERGATE.exists():
            raise BenchError(
                f"{LEDGERGATE} not found: run scripts/install-deps, "
                "or leave the gateway out with --paths direct,pgbouncer"
            )
        self.dir.mkdir()
        self.port = free_port()
        self.config.write_text(
            f"data_dir: {self.dir / 'data'}\n"
            "listeners:\n"
            f'  postgres: {{address: "127.0.0.1:{self.port}", allow_plaintext: true, '
            f"workers: {self.workers}}}\n"
            "connections:\n"
            "  - name: bench\n"
            "    type: postgres\n"
            f'    address: "127.0.0.1:{self.cluster.port}"\n'
            f"    database: {self.dbname}\n"
            f'    credentials: {{user: {SUPERUSER}, password: "env:{self.PASSWORD_ENV}"}}\n'
            "    sslmode: disable\n"
            "    recording: redacted\n" + self.extra_yaml
        )
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
        wait_listening(self.port, self.proc, self.log, "ledgergate serve")
        return Endpoint(self.name, "127.0.0.1", self.port, "bench", "bench", token, self.proc.pid)

    def _token(self) -> str:
        r = subprocess.run(
            [
                str(LEDGERGATE),
                "token",
                "create",
                "--identity",
                "bench",
                "--kind",
                "service",
                "--ttl",
                "2h",
                "-c",
                str(self.config),
            ],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            timeout=60,
        )
        lines = r.stdout.strip().splitlines()
        if r.returncode != 0 or not lines:
            raise BenchError(f"ledgergate token create failed ({r.returncode}): {r.stderr}")
        return lines[-1].strip()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
