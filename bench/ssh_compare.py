#!/usr/bin/env python3
"""SSH direct to sshd vs through a bastion (ProxyJump-style) vs through the gateway.

One command, one figure: starts OpenSSH's sshd (the test fixture's, on loopback) and
``ledgergate serve`` with one ``ssh`` connection to it (recording: redacted, every chunk
on the ledger), then, rotating the order of the paths from one repetition to the next:
- ``scp-up``: ``scp`` (SFTP protocol) of a file to the host;
- ``sftp-get``: ``sftp`` get of the same file back;
- ``keystroke``: round trips of one typed character in an interactive shell (the
  terminal's echo), with asyncssh as the client.
The files live on tmpfs (/dev/shm) so the disk is not what is measured. The bastion is
the peer a gateway replaces: the same sshd as a jump host (``ProxyCommand ssh -W``),
bytes relayed without recording. Reports medians: MB/s and the gateway's ratios to
direct and to the bastion, the gateway's CPU seconds per GiB and its resident set
(start, peak), keystroke p50/p99 and what each relay adds to direct's.

    .venv/bin/python bench/ssh_compare.py                          # the figure (1 GiB)
    .venv/bin/python bench/ssh_compare.py --size 64MiB --reps 1    # smoke test

Everything it starts is stopped and deleted on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncssh
from _cluster import proc_stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.sshd import Sshd  # noqa: E402
from tests.integration.sshgw import SshGateway  # noqa: E402

PATHS = ("direct", "bastion", "gateway")
MiB, GiB = 1 << 20, 1 << 30
TARGET_X_DIRECT = 0.5  # transfers: gateway MB/s vs direct
TARGET_ADDED_P50_MS = 2.0  # keystrokes: added to direct's p50
SHM = Path("/dev/shm")


def _size(v: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(KiB|MiB|GiB)?", v.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{v!r}: a size such as 64MiB or 1GiB")
    return int(m.group(1)) * {"KiB": 1024, "MiB": MiB, "GiB": GiB, None: 1}[m.group(2)]


class Paths:
    """The ssh command-line options and environment of each path."""

    def __init__(self, sshd: Sshd, gw: SshGateway, token: str) -> None:
        self.sshd, self.gw, self.token = sshd, gw, token

    def target(self, path: str) -> str:
        return "web@127.0.0.1" if path == "gateway" else f"{self.sshd.user}@127.0.0.1"

    def options(self, path: str) -> list[str]:
        if path == "gateway":
            return self.gw.ssh_options(BatchMode="no")
        opts = self.sshd.client_options()
        if path == "bastion":
            jump = " ".join(["ssh", *opts, "-W", "%h:%p", f"{self.sshd.user}@127.0.0.1"])
            opts += ["-o", f"ProxyCommand={jump}"]
        return opts

    def env(self, path: str) -> dict[str, str]:
        return self.gw.env(self.token) if path == "gateway" else dict(os.environ)


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_stats(self.pid).rss_kb)
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def transfer(p: Paths, path: str, work: str, src: Path, size: int) -> float:
    """Seconds for one transfer of ``size`` bytes."""
    remote = SHM / f"lgbench-remote-{os.getpid()}.bin"
    local = SHM / f"lgbench-local-{os.getpid()}.bin"
    if work == "scp-up":
        argv = ["scp", "-q", *p.options(path), str(src), f"{p.target(path)}:{remote}"]
    else:
        batch = SHM / f"lgbench-batch-{os.getpid()}"
        batch.write_text(f"get {src} {local}\n")
        argv = ["sftp", "-q", *p.options(path), "-b", str(batch), p.target(path)]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=p.env(path), timeout=600)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{work} via {path} failed: {r.stderr.strip()}")
    got = remote if work == "scp-up" else local
    if got.stat().st_size != size:
        raise RuntimeError(f"{work} via {path}: {got.stat().st_size} bytes arrived, not {size}")
    got.unlink()
    return took


async def _keystrokes(p: Paths, path: str, n: int) -> list[float]:
    kw: dict[str, Any] = {"known_hosts": None, "agent_path": None, "config": None}
    sshd = p.sshd
    key = asyncssh.read_private_key(str(sshd.client_key))
    tunnel = None
    if path == "gateway":
        conn = await asyncssh.connect(
            "127.0.0.1", p.gw.port, username="web", password=p.token, client_keys=None, **kw
        )
    else:
        if path == "bastion":
            tunnel = await asyncssh.connect(
                "127.0.0.1", sshd.port, username=sshd.user, client_keys=[key], **kw
            )
        conn = await asyncssh.connect(
            "127.0.0.1", sshd.port, username=sshd.user, client_keys=[key], tunnel=tunnel, **kw
        )
    try:
        chan, sess = await conn.create_session(
            _Echo, "cat", term_type="xterm", term_size=(80, 24), encoding=None
        )
        await asyncio.sleep(0.3)
        sess.buf.clear()
        times = []
        for _ in range(n):
            sess.got.clear()
            t0 = time.perf_counter()
            chan.write(b"x")
            await asyncio.wait_for(sess.got.wait(), 5)
            times.append((time.perf_counter() - t0) * 1000)
            sess.buf.clear()
        chan.close()
        return times
    finally:
        conn.close()
        if tunnel is not None:
            tunnel.close()


class _Echo(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.got = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.buf += data
        if b"x" in self.buf:
            self.got.set()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=_size, default=GiB)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keystrokes", type=int, default=300)
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lg-bench-ssh-"))
    src = SHM / f"lgbench-src-{os.getpid()}.bin"
    with open(src, "wb") as f:
        for _ in range(a.size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(a.size % MiB))
    sshd = Sshd().start()
    gw = SshGateway(work / "gw", sshd, extra={"ledger": {"checkpoint_every_entries": 1000}})
    results: dict[str, Any] = {"size": a.size, "reps": a.reps, "transfers": {}, "keys": {}}
    try:
        gw.start()
        assert gw.gw.proc is not None
        pid = gw.gw.proc.pid
        p = Paths(sshd, gw, gw.token("bench", "8h"))
        rss_start = proc_stats(pid).rss_kb
        for w in ("scp-up", "sftp-get"):
            secs: dict[str, list[float]] = {x: [] for x in PATHS}
            cpu: list[float] = []
            with RssSampler(pid) as rss:
                for rep in range(a.reps):
                    order = PATHS[rep % 3 :] + PATHS[: rep % 3]
                    for path in order:
                        before = proc_stats(pid).cpu_s
                        secs[path].append(transfer(p, path, w, src, a.size))
                        if path == "gateway":
                            cpu.append((proc_stats(pid).cpu_s - before) / (a.size / GiB))
                        mbs_now = a.size / secs[path][-1] / 1e6
                        line = f"[ssh] {w} {path} rep {rep + 1}: {mbs_now:.0f} MB/s"
                        print(line, file=sys.stderr)
            mbs = {x: a.size / statistics.median(v) / 1e6 for x, v in secs.items()}
            results["transfers"][w] = {
                "mb_s": mbs,
                "x_direct": statistics.median(
                    d / g for d, g in zip(secs["direct"], secs["gateway"], strict=True)
                ),
                "x_bastion": statistics.median(
                    b / g for b, g in zip(secs["bastion"], secs["gateway"], strict=True)
                ),
                "gateway_cpu_s_per_gib": statistics.median(cpu),
                "gateway_rss_kb": {"start": rss_start, "peak": rss.peak},
            }
        for path in PATHS:
            times = asyncio.run(_keystrokes(p, path, a.keystrokes))
            results["keys"][path] = {"p50": pct(times, 0.5), "p99": pct(times, 0.99)}
    finally:
        gw.stop()
        sshd.stop()
        src.unlink(missing_ok=True)
        (SHM / f"lgbench-batch-{os.getpid()}").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


def report(r: dict[str, Any]) -> None:
    print(f"\nSSH through the gateway: {r['size'] / GiB:.2f} GiB, {r['reps']} repetitions, "
          f"medians; recording redacted\n")  # fmt: skip
    print("| transfer | direct MB/s | bastion MB/s | gateway MB/s | gateway × direct | "
          "gateway × bastion | gateway CPU s/GiB | gateway RSS start → peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for w, t in r["transfers"].items():
        m = t["mb_s"]
        rss = t["gateway_rss_kb"]
        print(f"| {w} | {m['direct']:.0f} | {m['bastion']:.0f} | {m['gateway']:.0f} | "
              f"{t['x_direct']:.2f} (target ≥ {TARGET_X_DIRECT}) | {t['x_bastion']:.2f} | "
              f"{t['gateway_cpu_s_per_gib']:.1f} | {rss['start'] / 1024:.0f} → "
              f"{rss['peak'] / 1024:.0f} |")  # fmt: skip
    k = r["keys"]
    d = k["direct"]
    print("\n| keystroke round trip | p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("|---|---|---|---|---|")
    for path, v in k.items():
        print(f"| {path} | {v['p50']:.2f} | {v['p99']:.2f} | {v['p50'] - d['p50']:.2f} | "
              f"{v['p99'] - d['p99']:.2f} |")  # fmt: skip
    print(f"\ntarget: the gateway adds ≤ {TARGET_ADDED_P50_MS} ms at p50")


if __name__ == "__main__":
    main()
