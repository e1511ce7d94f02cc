#!/usr/bin/env python3
"""Direct PostgreSQL vs pgbouncer vs the ledgergate gateway, side by side.

One command, one figure: starts a throwaway PostgreSQL (TLS off on every path, SCRAM to
the backend), loads pgbench data, starts pgbouncer (session mode) and ``ledgergate
serve``, then runs each workload through each path, alternating the paths within every
repetition so that drift on the machine hits them alike. Reports medians over the
repetitions as ratios (vs direct, vs pgbouncer), the relays' CPU per transaction from
/proc and the gateway's peak RSS. Absolute numbers are only comparable within one run.

    .venv/bin/python bench/pgbench_compare.py                   # the published figure
    .venv/bin/python bench/pgbench_compare.py --quick           # smoke test (~1 min)
    .venv/bin/python bench/pgbench_compare.py --paths direct,pgbouncer --json out.json
    .venv/bin/python bench/pgbench_compare.py --paths direct,gateway,gateway-guarded,\
gateway-masked --workloads select-simple,pii-select   # what guardrails and masking cost

Everything it starts is stopped and deleted on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _cluster import (
    LEDGERGATE,
    BenchError,
    Endpoint,
    GatewayProcess,
    Pgbouncer,
    PgCluster,
    PythonRelay,
    proc_stats,
)

PATHS = (
    "direct",
    "pgbouncer",
    "python-relay",
    "gateway",
    "gateway-guarded",
    "gateway-masked",
    "gateway-scanned",
    "gateway-reviewed",
    "gateway-workers",
)
DEFAULT_PATHS = ("direct", "pgbouncer", "gateway")
# The gateway as several relay processes on one port (listeners.postgres.workers), one
# per core of this 2-core machine kind.
WORKERS = {"gateway-workers": 2}
# The gateway with a policy, to price it against the plain gateway in the same run:
# guardrails that every pgbench statement is checked against (and passes); masking of
# the PII table's columns by column rule; and the same plus a content detector that
# scans every text value (its free-text column holds an e-mail in every row).
POLICIES = {
    "gateway-guarded": (
        "policy:\n"
        "  rules:\n"
        "    - {id: no-ddl, deny: {kinds: [ddl]}}\n"
        "    - {id: no-bulk, deny: {kinds: [update, delete], without_where: true}}\n"
        "    - {id: no-files, deny: {functions: [pg_read_file, lo_export, 'dblink*']}}\n"
        "    - {id: no-escape, deny: {copy_program: true, do_blocks: true}}\n"
    ),
    "gateway-masked": (
        "policy:\n"
        "  rules:\n"
        "    - {id: email, mask: {columns: ['*.*.email'], function: partial, keep_domain: true}}\n"
        "    - {id: card, mask: {columns: ['*.*.card'], function: partial, keep_last: 4}}\n"
    ),
    # The guardrails plus a command review rule no pgbench statement matches: what a
    # review rule costs the statements it does not hold (target: nothing).
    "gateway-reviewed": (
        "policy:\n"
        "  rules:\n"
        "    - {id: no-ddl, deny: {kinds: [ddl]}}\n"
        "    - {id: no-bulk, deny: {kinds: [update, delete], without_where: true}}\n"
        "    - {id: no-files, deny: {functions: [pg_read_file, lo_export, 'dblink*']}}\n"
        "    - {id: no-escape, deny: {copy_program: true, do_blocks: true}}\n"
        "    - id: billing-writes\n"
        "      review: {kind: command, when: {kinds: [update, delete], tables: ['billing.*']},"
        " reviewers: [dba]}\n"
    ),
    "gateway-scanned": (
        "policy:\n"
        "  rules:\n"
        "    - {id: email, mask: {columns: ['*.*.email'], function: partial, keep_domain: true}}\n"
        "    - {id: card, mask: {columns: ['*.*.card'], function: partial, keep_last: 4}}\n"
        "    - {id: notes, mask: {detectors: [email], function: redact}}\n"
    ),
}
DBNAME = "bench"
PGBENCH = shutil.which("pgbench") or "/usr/bin/pgbench"
PSQL = shutil.which("psql") or "/usr/bin/psql"
MB = 1_000_000
# pgbench and psql read from PostgreSQL over loopback; a hung child must not hang the
# benchmark, so each run gets its nominal length plus this much.
RUN_GRACE_S = 120


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    title: str
    pgbench_args: tuple[str, ...]
    latency: bool = False  # per-transaction log, p50 latency


EIGHT = ("-c", "8", "-j", "2")
WORKLOADS = (
    Workload("select-simple", "select-only -M simple, 8 clients", ("-S", "-M", "simple", *EIGHT)),
    Workload(
        "select-extended", "select-only -M extended, 8 clients", ("-S", "-M", "extended", *EIGHT)
    ),
    Workload(
        "select-prepared", "select-only -M prepared, 8 clients", ("-S", "-M", "prepared", *EIGHT)
    ),
    Workload("tpcb", "TPC-B-like, 8 clients", ("-M", "simple", *EIGHT)),
    Workload(
        "select-1client",
        "select-only -M simple, 1 client",
        ("-S", "-M", "simple", "-c", "1", "-j", "1"),
        latency=True,
    ),
)
COPY_KEY = "copy-out"
PII_KEY = "pii-select"  # a PII-heavy SELECT result: MB/s with and without masking
# The same COPY with --big-rows (10 M) rows, once (first repetition): the relay's memory
# sampled while ~700 MB cross it must stay flat.
BIG_KEY = "big-result"
MBS_KEYS = (COPY_KEY, PII_KEY, BIG_KEY)
BY_KEY = {w.key: w for w in WORKLOADS}
ALL_KEYS = (*BY_KEY, COPY_KEY, BIG_KEY)
# How often the relay's resident set is sampled during the big result.
RSS_SAMPLE_S = 0.1
EXTRA_KEYS = (PII_KEY,)  # not in the default set; name them with --workloads


# -- runs --------------------------------------------------------------------------------


@contextlib.contextmanager
def relay_meter(ep: Endpoint, into: dict[str, Any]) -> Iterator[None]:
    """Adds the relay's CPU seconds and peak RSS over the block to `into`."""
    before = proc_stats(ep.relay_pid) if ep.relay_pid else None
    yield
    if ep.relay_pid and before:
        after = proc_stats(ep.relay_pid)
        into["relay_cpu_s"] = round(after.cpu_s - before.cpu_s, 4)
        into["relay_peak_rss_kb"] = after.peak_rss_kb


def _float(pattern: str, text: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise BenchError(f"pgbench output lacks {pattern!r}:\n{text}")
    return float(m.group(1))


def run_pgbench(ep: Endpoint, w: Workload, seconds: int, logdir: Path, tag: str) -> dict[str, Any]:
    cmd = [PGBENCH, "-n", "-T", str(seconds), *w.pgbench_args]
    prefix = logdir / tag
    if w.latency:
        cmd += ["-l", f"--log-prefix={prefix}"]
    out: dict[str, Any] = {}
    with relay_meter(ep, out):
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=ep.libpq_env(),
            cwd=logdir,
            timeout=seconds + RUN_GRACE_S,
        )
    if r.returncode != 0:
        raise BenchError(f"pgbench via {ep.name} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
    out["tps"] = _float(r"^tps = ([\d.]+)", r.stdout)
    out["transactions"] = int(
        _float(r"^number of transactions actually processed: (\d+)", r.stdout)
    )
    out["latency_avg_ms"] = _float(r"^latency average = ([\d.]+) ms", r.stdout)
    if out["transactions"] and "relay_cpu_s" in out:
        out["relay_cpu_us_per_tx"] = round(out["relay_cpu_s"] / out["transactions"] * 1e6, 2)
    if w.latency:
        lat = []
        for f in logdir.glob(f"{tag}.*"):
            with open(f) as fh:
                lat += [int(line.split()[2]) for line in fh if line.strip()]
            f.unlink()
        lat.sort()
        out["p50_us"] = statistics.median(lat)
        out["p99_us"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return out


def run_copy(ep: Endpoint, rows: int) -> dict[str, Any]:
    """COPY a generated result to psql's stdout and count the bytes as they arrive."""
    sql = f"COPY (SELECT g, md5(g::text), now() FROM generate_series(1, {rows}) g) TO STDOUT"
    return run_bytes(ep, sql)


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` and its children to their current RSS (``clear_refs`` 5,
    Linux >= 4.0, needs the right to write it); False if it could not be done."""
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


def run_big(ep: Endpoint, rows: int) -> dict[str, Any]:
    """The large COPY with the relay's resident set sampled throughout: RSS at the start,
    the peak (sampled, and VmHWM when it could be reset first) and at the end."""
    if not ep.relay_pid:
        return run_copy(ep, rows)
    pid = ep.relay_pid
    hwm_reset = _reset_peak(pid)
    start = proc_stats(pid).rss_kb
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(RSS_SAMPLE_S):
            with contextlib.suppress(OSError):
                samples.append(proc_stats(pid).rss_kb)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = run_copy(ep, rows)
    finally:
        done.set()
        t.join()
    end = proc_stats(pid)
    peak = max([start, end.rss_kb, *samples])
    if hwm_reset:
        peak = max(peak, end.peak_rss_kb)
    out.update(
        rss_start_kb=start,
        rss_peak_kb=peak,
        rss_end_kb=end.rss_kb,
        rss_growth_kb=peak - start,
        rss_samples=len(samples),
        hwm_reset=hwm_reset,
    )
    return out


def run_pii(ep: Endpoint) -> dict[str, Any]:
    """SELECT the PII table to psql's stdout (unaligned) and count the bytes."""
    return run_bytes(ep, "SELECT id, email, card, notes FROM bench_pii", ("-A", "-t"))


def run_bytes(ep: Endpoint, sql: str, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    total = 0
    first = None
    with relay_meter(ep, out):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", *flags, "-c", sql],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ep.libpq_env(),
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            fd = proc.stdout.fileno()
            with contextlib.suppress(OSError, AttributeError):
                import fcntl  # Linux: a 1 MiB pipe means ~16x fewer reads

                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
            while chunk := os.read(fd, 1 << 20):
                if first is None:
                    first = time.perf_counter() - t0
                total += len(chunk)
            err = proc.stderr.read().decode(errors="replace")
            rc = proc.wait(RUN_GRACE_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        elapsed = time.perf_counter() - t0
    if rc != 0:
        raise BenchError(f"psql via {ep.name} failed ({rc}): {err}")
    out.update(
        bytes=total,
        seconds=round(elapsed, 4),
        first_byte_s=round(first or 0.0, 4),
        mb_s=round(total / MB / elapsed, 2),
    )
    if "relay_cpu_s" in out:
        out["relay_cpu_s_per_100mb"] = round(out["relay_cpu_s"] / (total / (100 * MB)), 4)
    return out


# -- orchestration -----------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


PII_SQL = (
    "CREATE TABLE bench_pii AS SELECT g AS id, "
    "'customer' || g || '@example.com' AS email, "
    "'4242 4242 4242 ' || lpad((g % 10000)::text, 4, '0') AS card, "
    "'called ' || g || ' times, wrote from user' || g || '@mail.example.org about order '"
    " || g AS notes FROM generate_series(1, {rows}) g"
)


def start_paths(
    stack: contextlib.ExitStack,
    workdir: Path,
    names: list[str],
    scale: int,
    pii_rows: int = 0,
) -> tuple[PgCluster, dict[str, Endpoint], dict[str, str]]:
    t0 = time.monotonic()
    cluster = PgCluster(
        tls=False,
        settings={
            "log_statement": "none",  # the test default ('all') would dominate the figures
            "shared_buffers": "256MB",
            "max_connections": 100,
            "autovacuum": "off",  # background work would land on whichever path runs next
        },
    )
    stack.callback(cluster.stop)
    cluster.start()
    cluster.psql(f"CREATE DATABASE {DBNAME}")
    direct = Endpoint("direct", cluster.host, cluster.port, DBNAME, "postgres", cluster.password)
    log(f"postgres on {cluster.port} ({time.monotonic() - t0:.1f}s); pgbench -i -s {scale} ...")
    r = subprocess.run(
        [PGBENCH, "-i", "-q", "-s", str(scale)],
        capture_output=True,
        text=True,
        env=direct.libpq_env(),
        timeout=3600,
    )
    if r.returncode != 0:
        raise BenchError(f"pgbench -i failed:\n{r.stderr}")
    if pii_rows:
        cluster.psql(PII_SQL.format(rows=pii_rows), DBNAME)
    versions = {
        "postgres": cluster.psql("SHOW server_version").strip(),
        "pgbench": _version([PGBENCH, "--version"]),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
    }
    endpoints = {"direct": direct}
    if "pgbouncer" in names:
        bouncer = Pgbouncer(workdir, cluster, DBNAME)
        stack.callback(bouncer.stop)
        endpoints["pgbouncer"] = bouncer.start()
        versions["pgbouncer"] = _version([shutil.which("pgbouncer") or "pgbouncer", "--version"])
    if "python-relay" in names:
        relay = PythonRelay(workdir, cluster, DBNAME)
        stack.callback(relay.stop)
        endpoints["python-relay"] = relay.start()
    for name in [n for n in names if n.startswith("gateway")]:
        gw = GatewayProcess(
            workdir,
            cluster,
            DBNAME,
            name=name,
            extra_yaml=POLICIES.get(name, ""),
            workers=WORKERS.get(name, 1),
        )
        stack.callback(gw.stop)
        endpoints[name] = gw.start()
    if any(n.startswith("gateway") for n in names):
        versions["ledgergate"] = _version(
            [sys.executable, "-c", "import importlib.metadata as m;print(m.version('ledgergate'))"]
        )
        versions["ledgergate_bin"] = str(LEDGERGATE)
    log(
        f"paths ready in {time.monotonic() - t0:.1f}s: "
        + ", ".join(f"{n}:{endpoints[n].port}" for n in names)
    )
    return cluster, {n: endpoints[n] for n in names}, versions


def _version(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return (r.stdout.strip().splitlines() or ["?"])[0]


def reset_state(cluster: PgCluster) -> None:
    """What pgbench does before a run unless -n (vacuum, empty the history), and what
    autovacuum would do, plus a checkpoint: done directly and in the foreground so that
    every run starts alike and no path pays for the previous run's dead rows or dirty
    pages."""
    t0 = time.monotonic()
    cluster.psql(
        "TRUNCATE pgbench_history;\n"
        "VACUUM pgbench_branches, pgbench_tellers, pgbench_accounts;\n"
        "CHECKPOINT;\n",
        DBNAME,
    )
    if (spent := time.monotonic() - t0) > 2:
        log(f"(vacuum and checkpoint between runs took {spent:.1f}s)")


def run_all(
    args: argparse.Namespace, cluster: PgCluster, endpoints: dict[str, Endpoint], workdir: Path
) -> list[dict[str, Any]]:
    names = list(endpoints)
    logdir = workdir / "pgbench-logs"
    logdir.mkdir()
    if args.warmup:
        for ep in endpoints.values():
            run_pgbench(ep, WORKLOADS[0], args.warmup, logdir, f"warmup-{ep.name}")
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for key in args.workloads:
            for name in order:
                ep = endpoints[name]
                reset_state(cluster)
                if key == BIG_KEY:
                    if rep > 0:
                        continue  # once: it is a memory figure, and long
                    res = run_big(ep, args.big_rows)
                elif key == COPY_KEY:
                    res = run_copy(ep, args.rows)
                elif key == PII_KEY:
                    res = run_pii(ep)
                else:
                    res = run_pgbench(ep, BY_KEY[key], args.seconds, logdir, f"{key}-{name}-{rep}")
                runs.append({"workload": key, "path": name, "rep": rep, **res})
                log(f"[rep {rep + 1}/{args.reps}] {key:<16} {name:<10} " + _brief(res))
    return runs


def _brief(res: dict[str, Any]) -> str:
    if "mb_s" in res:
        s = f"{res['mb_s']:8.1f} MB/s ({res['bytes'] / MB:.1f} MB in {res['seconds']:.2f}s)"
    else:
        s = f"{res['tps']:9.0f} tps"
        if "p50_us" in res:
            s += f"  p50 {res['p50_us']:.0f} µs"
    if "relay_cpu_s" in res:
        s += f"  relay CPU {res['relay_cpu_s']:.2f}s"
    return s


# -- summary -----------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Medians over reps per (workload, path). Ratios and added latency are taken per
    repetition (the paths of one repetition ran back to back), then their median."""
    rows = []
    for key in dict.fromkeys(r["workload"] for r in runs):
        by_rep: dict[int, dict[str, dict[str, Any]]] = {}
        for r in runs:
            if r["workload"] == key:
                by_rep.setdefault(r["rep"], {})[r["path"]] = r
        reps = list(by_rep.values())
        rows += [
            _summarize_path(key, name, reps) for name in names if any(name in rep for rep in reps)
        ]
    return rows


def _summarize_path(key: str, name: str, reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    metric = "mb_s" if key in MBS_KEYS else "tps"
    mine = [rep[name] for rep in reps if name in rep]

    def med(field: str) -> float | None:
        return _median([r[field] for r in mine if r.get(field) is not None])

    def per_rep(f: Callable[[dict[str, Any], dict[str, Any]], float], base: str) -> float | None:
        return _median([f(rep[name], rep[base]) for rep in reps if name in rep and base in rep])

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return float(a[metric] / b[metric])

    row: dict[str, Any] = {
        "workload": key,
        "path": name,
        "reps": len(mine),
        metric: med(metric),
        "vs_direct": per_rep(ratio, "direct"),
        "vs_pgbouncer": per_rep(ratio, "pgbouncer"),
        "vs_gateway": per_rep(ratio, "gateway"),
        "relay_cpu_s": med("relay_cpu_s"),
        "relay_peak_rss_kb": max(r.get("relay_peak_rss_kb") or 0 for r in mine) or None,
    }
    if key in MBS_KEYS:
        row.update(bytes=med("bytes"), relay_cpu_s_per_100mb=med("relay_cpu_s_per_100mb"))
    if key == BIG_KEY:
        for f in ("rss_start_kb", "rss_peak_kb", "rss_end_kb", "rss_growth_kb"):
            row[f] = med(f)
    else:
        row["relay_cpu_us_per_tx"] = med("relay_cpu_us_per_tx")
    if any("p50_us" in r for r in mine):
        row.update(
            p50_us=med("p50_us"),
            p99_us=med("p99_us"),
            added_p50_us=per_rep(lambda a, b: a["p50_us"] - b["p50_us"], "direct"),
        )
    return row


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def render(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    cfg, ver = meta["config"], meta["versions"]
    lines = [
        f"ledgergate bench: pgbench scale {cfg['scale']}, {cfg['seconds']} s × {cfg['reps']} "
        f"reps (median), {ver['cpus']} CPUs, PostgreSQL {ver['postgres']}"
        + (f", {ver['pgbouncer']}" if "pgbouncer" in ver else ""),
    ]
    pgbench = [r for r in summary if r["workload"] not in MBS_KEYS]
    if pgbench:
        lines += [
            "",
            f"{'workload':<36}{'path':<17}{'TPS':>9}{'×direct':>9}{'×pgbouncer':>11}"
            f"{'relay CPU/tx':>14}{'p50':>9}{'+p50':>9}{'relay RSS':>11}",
        ]
    titles = {w.key: w.title for w in WORKLOADS}
    last = None
    for row in pgbench:
        title = titles[row["workload"]] if row["workload"] != last else ""
        last = row["workload"]
        added = row.get("added_p50_us") if row["path"] != "direct" else None
        lines.append(
            f"{title:<36}{row['path']:<17}{_fmt(row['tps'], '9.0f')}"
            f"{_fmt(row['vs_direct'], '9.2f')}{_fmt(row['vs_pgbouncer'], '11.2f')}"
            f"{_fmt(row['relay_cpu_us_per_tx'], '11.1f', ' µs'):>14}"
            f"{_fmt(row.get('p50_us'), '6.0f', ' µs'):>9}"
            f"{_fmt(added, '+6.0f', ' µs'):>9}"
            f"{_fmt(_mb(row['relay_peak_rss_kb']), '8.1f', ' MB'):>11}"
        )
    copy = [r for r in summary if r["workload"] == COPY_KEY]
    pii = [r for r in summary if r["workload"] == PII_KEY]
    if pii:
        lines += [
            "",
            f"PII-heavy result: SELECT of {pii[0]['bytes'] / MB:.1f} MB to psql",
            f"{'path':<17}{'MB/s':>9}{'×direct':>9}{'×gateway':>10}{'relay CPU s/100 MB':>20}",
        ]
        for row in pii:
            lines.append(
                f"{row['path']:<17}{_fmt(row['mb_s'], '9.1f')}{_fmt(row['vs_direct'], '9.2f')}"
                f"{_fmt(row['vs_gateway'], '10.2f')}"
                f"{_fmt(row['relay_cpu_s_per_100mb'], '18.3f', ' s'):>20}"
            )
    costs = []
    for row in summary:
        if row["path"] == "gateway-guarded" and row["vs_gateway"] is not None:
            costs.append(f"guardrails on {row['workload']}: {row['vs_gateway']:.2f}× the gateway")
        if row["path"] == "gateway-masked" and row["vs_gateway"] is not None:
            costs.append(f"masking on {row['workload']}: {row['vs_gateway']:.2f}× the gateway")
        if row["path"] == "gateway-reviewed" and row["vs_gateway"] is not None:
            costs.append(
                f"guardrails + an unmatched review rule on {row['workload']}: "
                f"{row['vs_gateway']:.2f}× the gateway"
            )
        if row["path"] == "gateway-scanned" and row["vs_gateway"] is not None:
            costs.append(
                f"masking + e-mail detector on {row['workload']}: "
                f"{row['vs_gateway']:.2f}× the gateway"
            )
    if costs:
        lines += ["", *costs]
    if copy:
        size = copy[0]["bytes"] / MB
        lines += [
            "",
            f"large result: COPY of {cfg['rows']:,} rows to psql (≈{size:.1f} MB)",
            f"{'path':<17}{'MB/s':>9}{'×direct':>9}{'×pgbouncer':>11}"
            f"{'relay CPU s/100 MB':>20}{'relay RSS':>11}",
        ]
        for row in copy:
            lines.append(
                f"{row['path']:<17}{_fmt(row['mb_s'], '9.1f')}{_fmt(row['vs_direct'], '9.2f')}"
                f"{_fmt(row['vs_pgbouncer'], '11.2f')}"
                f"{_fmt(row['relay_cpu_s_per_100mb'], '18.3f', ' s'):>20}"
                f"{_fmt(_mb(row['relay_peak_rss_kb']), '8.1f', ' MB'):>11}"
            )
    big = [r for r in summary if r["workload"] == BIG_KEY]
    if big:
        lines += [
            "",
            f"memory: COPY of {cfg['big_rows']:,} rows to psql (≈{big[0]['bytes'] / MB:.0f} MB), "
            "once; the relay's resident set sampled every "
            f"{RSS_SAMPLE_S * 1000:.0f} ms",
            f"{'path':<17}{'MB/s':>9}{'×direct':>9}{'RSS start':>12}{'peak':>11}{'end':>11}"
            f"{'growth':>11}",
        ]
        for row in big:
            lines.append(
                f"{row['path']:<17}{_fmt(row['mb_s'], '9.1f')}{_fmt(row['vs_direct'], '9.2f')}"
                f"{_fmt(_mb(row.get('rss_start_kb')), '9.1f', ' MB'):>12}"
                f"{_fmt(_mb(row.get('rss_peak_kb')), '8.1f', ' MB'):>11}"
                f"{_fmt(_mb(row.get('rss_end_kb')), '8.1f', ' MB'):>11}"
                f"{_fmt(_kb_as_mb(row.get('rss_growth_kb')), '+8.1f', ' MB'):>11}"
            )
    if meta.get("gateway_peak_rss_kb"):
        lines += [
            "",
            f"gateway peak RSS over the whole run (VmHWM): "
            f"{meta['gateway_peak_rss_kb'] / 1024:.1f} MB",
        ]
    return "\n".join(lines)


def _gateway_peak(gw: Endpoint | None, runs: list[dict[str, Any]]) -> int | None:
    """The gateway's peak RSS over the run: VmHWM now, and as read after each workload
    (the memory run resets VmHWM to measure its own peak)."""
    if gw is None or not gw.relay_pid:
        return None
    seen = [proc_stats(gw.relay_pid).peak_rss_kb]
    for r in runs:
        if r["path"] == "gateway":
            seen += [r.get("relay_peak_rss_kb") or 0, r.get("rss_peak_kb") or 0]
    return max(seen)


def _mb(kb: int | None) -> float | None:
    return kb / 1024 if kb else None


def _kb_as_mb(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--paths",
        default=",".join(DEFAULT_PATHS),
        help=f"comma-separated, from: {','.join(PATHS)} (default: {','.join(DEFAULT_PATHS)}); "
        "gateway-guarded, -reviewed, -masked and -scanned price the policy against the "
        "plain gateway; python-relay is a bare Python byte relay (bench/byte_relay.py), "
        "the floor under any relay written in Python",
    )
    p.add_argument(
        "--workloads",
        default=",".join(ALL_KEYS),
        help=f"comma-separated subset of: {','.join((*ALL_KEYS, *EXTRA_KEYS))} "
        f"(default: {','.join(ALL_KEYS)})",
    )
    p.add_argument("--pii-rows", type=int, default=300_000, help="rows in the PII table (300000)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    p.add_argument("--seconds", type=int, default=None, help="seconds per pgbench run (15)")
    p.add_argument("--rows", type=int, default=None, help="rows in the large result (2000000)")
    p.add_argument(
        "--big-rows",
        type=int,
        default=None,
        help="rows in the memory run (big-result, once; default 10000000)",
    )
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="seconds of select-only per path before measuring (3)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test: reps 1, seconds 5, rows 200000, warmup 1"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the runs and the summary as JSON to FILE (or stdout: -)",
    )
    args = p.parse_args(argv)
    quick = {"reps": 1, "seconds": 5, "rows": 200_000, "big_rows": 1_000_000, "warmup": 1}
    full = {"reps": 3, "seconds": 15, "rows": 2_000_000, "big_rows": 10_000_000, "warmup": 3}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    chosen = {s.strip() for s in args.workloads.split(",") if s.strip()}
    known = (*ALL_KEYS, *EXTRA_KEYS)
    args.workloads = [k for k in known if k in chosen]  # always in the table's order
    if bad := [x for x in args.paths if x not in PATHS] + sorted(chosen - set(known)):
        p.error(f"unknown path or workload: {', '.join(bad)}")
    if not args.paths or args.reps < 1 or args.seconds < 1 or min(args.rows, args.big_rows) < 1:
        p.error("need at least one path, and positive --reps, --seconds, --rows")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(tempfile.mkdtemp(prefix="lg-bench-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            workdir.chmod(0o711)  # pgbouncer runs as postgres and must reach its own dir
            pii = args.pii_rows if PII_KEY in args.workloads else 0
            cluster, endpoints, versions = start_paths(stack, workdir, args.paths, args.scale, pii)
            runs = run_all(args, cluster, endpoints, workdir)
            gw = endpoints.get("gateway")
            meta: dict[str, Any] = {
                "config": {
                    k: getattr(args, k)
                    for k in (
                        "paths",
                        "workloads",
                        "reps",
                        "seconds",
                        "rows",
                        "big_rows",
                        "scale",
                        "warmup",
                    )
                },
                "versions": versions,
                "gateway_peak_rss_kb": _gateway_peak(gw, runs),
            }
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except BenchError as e:
        log(f"bench failed: {e}")
        return 1
    summary = summarize(runs, args.paths)
    if args.json:
        doc = json.dumps({**meta, "summary": summary, "runs": runs}, indent=2)
        if args.json == "-":
            print(doc)
        else:
            Path(args.json).write_text(doc + "\n")
    if args.json != "-":
        print(render(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
