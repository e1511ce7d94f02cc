"""Helper processes the integration tests start (test identity providers): spawn one in
its own process group with its output in a log file, wait until it answers over HTTP,
and stop the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

__all__ = ["spawn_until_ready", "stop_group"]


def spawn_until_ready(
    cmd: Sequence[str], *, cwd: Path, log: Path, ready_url: str, what: str, timeout_s: float
) -> tuple[subprocess.Popen[bytes], httpx.Response]:
    """Start ``cmd`` and poll ``ready_url`` until it answers 200; return the process and
    that answer. If it exits or does not answer in time, raise with its log."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text()}")
        try:
            r = httpx.get(ready_url, timeout=1)
            if r.status_code == 200:
                return proc, r
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_group(proc)
            raise RuntimeError(f"{what} did not start:\n{log.read_text()}")
        time.sleep(0.1)


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
