"""Several relay processes on one PostgreSQL port (``listeners.postgres.workers``).

A Python relay uses one core per process, so with ``workers: N`` the ``ledgergate serve``
process becomes a supervisor of N relay processes:
- it first makes what they share (data directory, TLS certificate, ledger, payload and
  masking keys, the store's schema, a private run directory), so they never race to
  create it;
- it binds the listening sockets itself: once without ``SO_REUSEPORT`` to prove the port
  is free (a second gateway, or anything else, on the port is refused instead of
  silently taking a share of the clients), then one ``SO_REUSEPORT`` socket per worker,
  so the kernel spreads connections over them. A dead worker's sockets are closed at
  once (the kernel gives the others its share; what was queued on them is reset), and
  started again it joins the port itself when it is up, never before;
- it starts N copies of its own command line with ``--worker K``, each handed its socket
  and, in its environment, the per-run key cancel keys are routed by
  (``proxy.pg.cancel_owner``). Each worker has its own event loop and ledger stream (see
  ``Settings.for_worker``); worker 0 alone serves the REST API and delivers webhooks;
- a worker that fails before it was ever up stops the gateway (its configuration or
  environment is refused: so would the others'); one that exits later is started again,
  after a delay that doubles while it keeps failing fast (``RestartPolicy``), while the
  others keep serving; its journal is replayed at its start. It must run with the
  configuration the others run with: one whose file was edited since refuses to start
  (``config_digest``) until the whole gateway is restarted;
- it passes SIGINT/SIGTERM on as SIGTERM and waits for every worker's final checkpoint;
  workers run in process groups of their own and ignore SIGINT (a Ctrl-C at a terminal
  is the supervisor's to pass on), and get SIGTERM if the supervisor dies
  (``die_with_parent``).
Must not serve clients itself, nor log the key.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledgergate.proxy.pg import LISTEN_BACKLOG
from ledgergate.services import keys
from ledgergate.services.config import Settings

__all__ = [
    "RestartPolicy",
    "WorkerEnv",
    "WorkerError",
    "bind_listeners",
    "config_digest",
    "die_with_parent",
    "prepare",
    "secure_run_dir",
    "supervise",
    "worker_env",
]

log = logging.getLogger("ledgergate")

# A worker that crashes is started again after this long, doubled for every crash within
# ``FAST_FAIL_S`` of its start, up to ``MAX_RESTART_DELAY_S``.
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
FAST_FAIL_S = 30.0
# How long the workers get to close their sessions and sign their final checkpoints.
STOP_GRACE_S = 30.0
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
# What the supervisor hands a worker, besides ``--worker K``.
ENV_KEY = "LEDGERGATE_WORKER_KEY"  # hex; the per-run cancel-routing key
ENV_FDS = "LEDGERGATE_LISTEN_FDS"  # comma-separated inherited listening sockets
ENV_SUPERVISOR = "LEDGERGATE_SUPERVISOR_PID"
ENV_CONFIG = "LEDGERGATE_CONFIG_DIGEST"  # what a restarted worker must still read


class WorkerError(RuntimeError):
    """A worker cannot be set up (port taken, unsafe run directory, no supervisor)."""


def secure_run_dir(path: Path) -> None:
    """Create ``path`` or take it over: a real directory (not a symlink) owned by this
    user, mode 0700. Other users must not reach the cancel sockets in it."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise WorkerError(f"{path} must be a directory owned by this user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def prepare(settings: Settings) -> None:
    """Create what every worker would otherwise create at its first start."""
    s = settings
    s.data_dir.mkdir(parents=True, exist_ok=True)
    secure_run_dir(s.run_dir)
    for old in s.run_dir.glob("pg-cancel-*.sock"):  # left by workers that were killed
        old.unlink(missing_ok=True)
    keys.load_or_create_ledger_signer(s.ledger_key, s.key_name)
    keys.load_or_create_payload_key(s.payload_key)
    if not s.config.policy.masking_key:
        keys.load_or_create_payload_key(s.data_dir / "keys" / "masking.key")
    keys.load_or_create_tls(s.tls_cert, s.tls_key, [s.gateway_name, "localhost"])
    s.open_store().close()  # runs the schema migrations once


def _socket(family: int, addr: tuple[object, ...], *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(host: str, port: int, workers: int) -> list[list[socket.socket]]:
    """For each worker, a listening socket on every address ``host`` resolves to, all in
    one ``SO_REUSEPORT`` group; raises ``WorkerError`` if anything holds the port."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise WorkerError(f"cannot resolve {host!r}: {e.strerror}") from None
    addrs = list(dict.fromkeys((info[0], info[4]) for info in infos))
    out: list[list[socket.socket]] = [[] for _ in range(workers)]
    try:
        for family, addr in addrs:
            # Proof the port is free: without SO_REUSEPORT this bind fails if any socket,
            # SO_REUSEPORT or not, is bound there.
            try:
                probe = _socket(family, addr, reuse_port=False)
            except OSError as e:
                raise WorkerError(f"cannot listen on {host}:{port}: {e.strerror}") from None
            probe.close()
            for k in range(workers):
                sock = _socket(family, addr, reuse_port=True)
                out[k].append(sock)
                sock.listen(LISTEN_BACKLOG)
    except OSError as e:
        for socks in out:
            for sock in socks:
                sock.close()
        raise WorkerError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return out


@dataclass(frozen=True, slots=True)
class WorkerEnv:
    key: bytes = field(repr=False)
    listen_fds: tuple[int, ...]
    supervisor: int
    config_digest: str


def worker_env(environ: dict[str, str] | None = None) -> WorkerEnv:
    """What the supervisor handed this worker; raises ``WorkerError`` when it was not
    started by one (``--worker`` is internal)."""
    env = os.environ if environ is None else environ
    try:
        key = bytes.fromhex(env[ENV_KEY])
        fds = tuple(int(f) for f in env[ENV_FDS].split(",") if f)
        supervisor = int(env[ENV_SUPERVISOR])
        digest = env[ENV_CONFIG]
    except (KeyError, ValueError):
        raise WorkerError("--worker is for the relay processes ledgergate starts") from None
    if len(key) < 16:
        raise WorkerError("--worker is for the relay processes ledgergate starts")
    return WorkerEnv(key, fds, supervisor, digest)


def die_with_parent(supervisor: int) -> None:
    """Get SIGTERM when the supervisor dies; exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:
        raise SystemExit(1)


@dataclass(slots=True)
class RestartPolicy:
    """When a worker that exited is started again. One that never came up is not: the
    gateway stops (``give_up``). Pure: the clock comes in as arguments."""

    ever_up: bool = False
    started_at: float = 0.0
    fails: int = 0  # exits within FAST_FAIL_S of their start, in a row

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, now: float) -> float | None:
        """Seconds to wait before the next start; None: give up (never came up)."""
        if not self.ever_up:
            return None
        self.fails = self.fails + 1 if now - self.started_at < FAST_FAIL_S else 0
        return min(MAX_RESTART_DELAY_S, RESTART_DELAY_S * float(1 << min(self.fails, 16)))


def config_digest(settings: Settings) -> str:
    """A digest of the configuration a gateway runs with (not a secret's value: ``env:``
    and ``file:`` references are compared as written)."""
    return hashlib.sha256(settings.config.model_dump_json().encode()).hexdigest()


def supervise(
    command: Sequence[str],
    workers: int,
    listeners: list[list[socket.socket]],
    run_dir: Path,
    digest: str,
) -> int:
    """Run ``command + ["--worker", K]`` for K in 0..workers-1, worker K on
    ``listeners[K]``, until SIGINT/SIGTERM; return the exit status (0 when every worker
    stopped cleanly). A worker is up once its cancel socket exists in ``run_dir``; a
    worker refuses to start when its configuration's digest is not ``digest``."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    key = secrets.token_bytes(32)

    def start(k: int) -> subprocess.Popen[bytes]:
        fds = [s.fileno() for s in listeners[k]]
        env = {
            **os.environ,
            ENV_KEY: key.hex(),
            ENV_FDS: ",".join(map(str, fds)),
            ENV_SUPERVISOR: str(os.getpid()),
            ENV_CONFIG: digest,
        }
        return subprocess.Popen(
            [*command, "--worker", str(k)],
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=fds,
            process_group=0,  # a Ctrl-C reaches the supervisor, which passes it on
        )

    policies = [RestartPolicy() for _ in range(workers)]
    procs: list[subprocess.Popen[bytes] | None] = []
    for k in range(workers):
        procs.append(start(k))
        policies[k].started(time.monotonic())
    restart_at: dict[int, float] = {}
    status = 0
    while not stopping:
        time.sleep(POLL_S)
        now = time.monotonic()
        for k, p in enumerate(procs):
            if stopping:
                break
            if p is None:
                if now >= restart_at[k]:
                    del restart_at[k]
                    procs[k] = start(k)
                    policies[k].started(now)
                continue
            if p.poll() is None:
                if not policies[k].ever_up and (run_dir / f"pg-cancel-{k}.sock").exists():
                    policies[k].ever_up = True
                continue
            delay = policies[k].exited(now)
            if delay is None:
                log.error("worker %d exited with %s before it was up; stopping", k, p.returncode)
                stopping, status = True, 2 if p.returncode == 2 else 1
                break
            log.error(
                "worker %d exited with %s; starting it again in %.0f s", k, p.returncode, delay
            )
            procs[k] = None
            restart_at[k] = now + delay
            for sock in listeners[k]:  # no client waits on a socket nobody accepts from
                sock.close()
            listeners[k] = []  # started again, it joins the port itself once it is up
    live = [(k, p) for k, p in enumerate(procs) if p is not None]
    for _, p in live:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for k, p in live:
        try:
            rc = p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop within %.0f s; killed", k, STOP_GRACE_S)
            p.kill()
            rc = p.wait()
        if rc not in (0, -signal.SIGTERM):
            log.warning("worker %d stopped with status %s", k, rc)
            status = status or 1
    for socks in listeners:
        for sock in socks:
            sock.close()
    sys.stdout.flush()
    return status
