"""Several relay processes on one PostgreSQL port (``listeners.postgres.workers``).

A Python relay uses one core per process, so with ``workers: N`` the ``ledgergate serve``
process becomes a supervisor of N relay processes:
- it first makes what they share (data directory, TLS certificate, ledger, payload and
  masking keys, the store's schema), so they never race to create it;
- it starts N copies of its own command line with ``--worker K``. Each has its own event
  loop, its own listener on the same address (``SO_REUSEPORT``: the kernel spreads the
  connections) and its own ledger stream (see ``Settings.for_worker``). Worker 0 alone
  serves the REST API and delivers webhooks;
- it passes SIGINT/SIGTERM on and waits for every worker's final checkpoint;
- a worker that exits on its own is started again after ``RESTART_DELAY_S`` (its journal is
  replayed at start); the sessions it carried end, as they would with one process;
- workers get SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from ledgergate.services import keys
from ledgergate.services.config import Settings
from ledgergate.store import open_store

__all__ = ["prepare", "supervise"]

log = logging.getLogger("ledgergate")

RESTART_DELAY_S = 1.0
# How long the workers get to close their sessions and sign their final checkpoints.
STOP_GRACE_S = 30.0
_PR_SET_PDEATHSIG = 1


def prepare(settings: Settings) -> None:
    """Create what every worker would otherwise create at its first start."""
    s = settings
    s.data_dir.mkdir(parents=True, exist_ok=True)
    s.run_dir.mkdir(mode=0o700, exist_ok=True)
    keys.load_or_create_ledger_signer(s.ledger_key, s.key_name)
    keys.load_or_create_payload_key(s.payload_key)
    if not s.config.policy.masking_key:
        keys.load_or_create_payload_key(s.data_dir / "keys" / "masking.key")
    keys.load_or_create_tls(s.tls_cert, s.tls_key, [s.gateway_name, "localhost"])
    open_store(s.store_url).close()  # runs the schema migrations once


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def supervise(command: Sequence[str], workers: int) -> int:
    """Run ``command + ["--worker", K]`` for K in 0..workers-1 until SIGINT/SIGTERM; return
    the exit status (0 when every worker stopped cleanly)."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(k: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*command, "--worker", str(k)],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    procs = [start(k) for k in range(workers)]
    restart_at: dict[int, float] = {}
    status = 0
    while not stopping:
        time.sleep(0.2)
        for k, p in enumerate(procs):
            if p.poll() is None or stopping:
                continue
            if p.returncode == 2:  # refused its configuration: so will the others
                log.error("worker %d refused to start; stopping", k)
                stopping, status = True, 2
                break
            due = restart_at.setdefault(k, time.monotonic() + RESTART_DELAY_S)
            if time.monotonic() >= due:
                log.error("worker %d exited with %s; starting it again", k, p.returncode)
                del restart_at[k]
                procs[k] = start(k)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            rc = p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        if rc not in (0, -signal.SIGTERM) and status == 0:
            status = 1
    sys.stdout.flush()
    return status
