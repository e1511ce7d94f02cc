#!/usr/bin/env python3
"""Kafka direct to the broker vs through the ledgergate gateway (plain relay, and with a
masking rule).

One command, one figure: starts a one-node Kafka 4.4 KRaft cluster (the test-suite's
`KafkaCluster`) and ``ledgergate serve`` with one ``kafka`` connection, once as a plain
relay and once with a policy ``mask`` rule (the gateway masks records as consumers
fetch them; the rule's effect is checked before measuring), then runs Kafka's own
kafka-producer-perf-test (1 KiB records, unthrottled, acks=all, linger.ms=5) and
kafka-consumer-perf-test (reading them back) on each path, a fresh 3-partition topic
per run, rotating the order of the paths from one repetition to the next. Reports
medians over the repetitions, ratios to direct (per repetition, then the median), the
producer's p99 latency and what a path adds to it, the gateway's CPU per MB relayed and
its resident set from /proc, and how many of the records its ledger holds.

    .venv/bin/python bench/kafka_compare.py              # the figure: 200 k records, 3 reps, ~4 min
    .venv/bin/python bench/kafka_compare.py --quick      # smoke test: 20 k records, 1 rep, ~1 min
    .venv/bin/python bench/kafka_compare.py --profile /tmp/kafka-gw   # + py-spy and perf

Everything it starts is stopped and deleted on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _cluster import BenchError, proc_stats
from _kafka import (
    Endpoint,
    GatewayKafka,
    KafkaCluster,
    RssSampler,
    broker_pid,
    consumer_perf,
    direct,
    ledger_records,
    machine_busy_s,
    producer_perf,
    sample_values,
    settle,
    thread_cpu,
    write_json_payloads,
)
from tests.integration.s3server import BackendError

PATHS = {
    "direct": "direct (SASL_PLAINTEXT, SCRAM-SHA-512)",
    "gateway": "gateway, plain relay (no policy)",
    "gateway-mask": "gateway + mask rule ($.email, email detector)",
    "gateway-plaintext": "gateway, plain relay, no TLS to the client",
}
DEFAULT_PATHS = ("direct", "gateway", "gateway-mask")
WORKLOADS = {
    "produce": "kafka-producer-perf-test",
    "consume": "kafka-consumer-perf-test",
}
PARTITIONS = 3
RECORD_SIZE = 1024
MB = 1_000_000
# Targets printed next to the figures (the Kafka issue's).
TARGET_X_DIRECT = 0.7  # gateway records/s vs direct, every message on the ledger
TARGET_RSS_GROWTH_KB = 64 * 1024  # "flat memory": the gateway's growth within a run
# Whose CPU the runs measure: the perf tool (its JVM), the broker, the gateway, the rest
# of the machine, and the machine as a whole.
CPU_SPLIT = ("client", "broker", "relay", "other", "machine")
# Figures reported as their median over the repetitions.
MEDIANS = (
    "records_s",
    "mb_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "relay_cpu_s",
    "relay_main_thread_cpu_s",
    *(f"{who}_cpu_s_per_mb" for who in CPU_SPLIT),
    "machine_busy_share",
    "client_cpu_s",
    "rss_start_kb",
    "seconds",
    "rebalance_ms",
    "other_core_share",
)
# py-spy's sampling rate for --profile.
PROFILE_RATE = 200
CLUSTER_ATTEMPTS = 3


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- runs --------------------------------------------------------------------------------


@contextlib.contextmanager
def meter(ep: Endpoint, broker: int | None, into: dict[str, Any]) -> Iterator[None]:
    """CPU seconds over the block of the gateway (in all and on its main thread), of the
    broker and of the machine; the gateway's resident set sampled throughout. The block
    ends once the gateway is idle again (its ledger indexer catches up after the tool
    exits; that work belongs to the run)."""
    pid = ep.relay_pid
    relay = proc_stats(pid).cpu_s if pid else None
    threads = thread_cpu(pid) if pid else {}
    brk = proc_stats(broker).cpu_s if broker else None
    busy = machine_busy_s()
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if pid:
            stack.enter_context(RssSampler(pid).run(into))
        yield
        if pid:
            into["settle_s"] = round(settle(pid), 2)
    wall = time.perf_counter() - t0
    into["wall_s"] = round(wall, 3)
    into["machine_cpu_s"] = round(machine_busy_s() - busy, 3)
    into["machine_busy_share"] = round(into["machine_cpu_s"] / wall / (os.cpu_count() or 1), 3)
    if brk is not None and broker:
        into["broker_cpu_s"] = round(proc_stats(broker).cpu_s - brk, 3)
    if relay is not None and pid:
        into["relay_cpu_s"] = round(proc_stats(pid).cpu_s - relay, 3)
        after = thread_cpu(pid)
        into["relay_main_thread_cpu_s"] = round(
            after.get(pid, ("", 0.0))[1] - threads.get(pid, ("", 0.0))[1], 3
        )
    ours = sum(into.get(k, 0.0) for k in ("client_cpu_s", "broker_cpu_s", "relay_cpu_s"))
    into["other_cpu_s"] = round(max(0.0, into["machine_cpu_s"] - ours), 3)
    into["other_core_share"] = round(into["other_cpu_s"] / wall, 3)


def new_topic(cluster: KafkaCluster, label: str) -> str:
    name = f"bench-{label}-{secrets.token_hex(4)}"
    cluster.create_topic(name, partitions=PARTITIONS)
    return name


def drop_topic(cluster: KafkaCluster, topic: str) -> None:
    """Delete a measured topic (frees the broker's disk; nothing waits on it)."""
    with contextlib.suppress(Exception):
        cluster.admin().delete_topics([topic])[topic].result(timeout=30)


def run_path(
    ep: Endpoint,
    cluster: KafkaCluster,
    broker: int | None,
    args: argparse.Namespace,
    records: int,
    label: str,
) -> dict[str, dict[str, Any]]:
    """Produce ``records`` into a fresh topic on ``ep``, then consume them back: one
    result per workload."""
    topic = new_topic(cluster, label)
    since = time.time_ns()
    payload = args.payload_file if (args.payload == "json" or ep.name == "gateway-mask") else None
    try:
        out = _produce_consume(ep, topic, broker, args, records, payload, since)
    except BenchError as e:
        raise BenchError(f"{e}{ep.log_tail()}") from None
    finally:
        drop_topic(cluster, topic)
    mb = records * RECORD_SIZE / MB
    for r in out.values():
        for who in CPU_SPLIT:
            if f"{who}_cpu_s" in r:
                r[f"{who}_cpu_s_per_mb"] = round(r[f"{who}_cpu_s"] / mb, 4)
    return out


def _produce_consume(
    ep: Endpoint,
    topic: str,
    broker: int | None,
    args: argparse.Namespace,
    records: int,
    payload: Path | None,
    since: int,
) -> dict[str, dict[str, Any]]:
    prod: dict[str, Any] = {"payload": "json" if payload else "random"}
    with meter(ep, broker, prod):
        prod.update(
            producer_perf(
                ep,
                topic,
                records,
                record_size=RECORD_SIZE,
                payload_file=payload,
                linger_ms=args.linger_ms,
            )
        )
    cons: dict[str, Any] = {"payload": prod["payload"]}
    with meter(ep, broker, cons):
        cons.update(consumer_perf(ep, topic, records, record_size=RECORD_SIZE))
    if ep.store is not None:
        on = ledger_records(ep.store, topic, since)
        prod["ledger_records"] = on["produced"]
        cons["ledger_records"] = on["fetched"]
        prod["ledger_batches"] = on["produced_batches"]
        cons["ledger_batches"] = on["fetched_batches"]
    return {"produce": prod, "consume": cons}


def check_masking(ep: Endpoint, cluster: KafkaCluster, args: argparse.Namespace) -> dict[str, Any]:
    """Produce a few JSON records with e-mail addresses through ``ep`` and read them back
    through it: how many come back other than sent, i.e. masked? (The mask path's label
    says what this found.)"""
    topic = new_topic(cluster, "maskcheck")
    try:
        producer_perf(
            ep, topic, 50, record_size=RECORD_SIZE, payload_file=args.payload_file, linger_ms=5
        )
        got = sample_values(ep, topic, 50)
    finally:
        drop_topic(cluster, topic)
    sent = set(args.payload_file.read_bytes().splitlines())
    changed = sum(1 for v in got if v not in sent)
    return {"read": len(got), "changed": changed}


def run_all(
    args: argparse.Namespace,
    endpoints: dict[str, Endpoint],
    cluster: KafkaCluster,
    broker: int | None,
) -> list[dict[str, Any]]:
    names = list(endpoints)
    if args.warmup:
        for name, ep in endpoints.items():  # JIT in the broker, first connections, imports
            t0 = time.monotonic()
            run_path(ep, cluster, broker, args, args.warmup, "warmup")
            log(f"warm-up {name}: {args.warmup} records in {time.monotonic() - t0:.1f}s")
    runs = []
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            ep = endpoints[name]
            res = run_path(ep, cluster, broker, args, args.records, name)
            for kind, r in res.items():
                runs.append({"workload": kind, "path": name, "rep": rep, **r})
                log(f"[rep {rep + 1}/{args.reps}] {kind:<8} {name:<18} {_brief(r)}")
            if ep.relay_pid:
                runs[-1]["rss_after_rep_kb"] = proc_stats(ep.relay_pid).rss_kb
    return runs


def _brief(r: dict[str, Any]) -> str:
    s = f"{r['records_s']:9.0f} rec/s {r['mb_s']:7.1f} MB/s"
    if "p99_ms" in r:
        s += f"  p99 {r['p99_ms']} ms"
    if "relay_cpu_s" in r:
        s += f"  gw CPU {r['relay_cpu_s']:.2f}s"
    if "rss_growth_kb" in r:
        s += f"  RSS {r['rss_peak_kb'] / 1024:.0f} MiB (+{r['rss_growth_kb'] / 1024:.1f})"
    if "ledger_records" in r:
        s += f"  ledger {r['ledger_records']}"
    s += f"  other {r['other_core_share'] * 100:.0f}%"
    return s


# -- profiling ---------------------------------------------------------------------------


def _spawn_profilers(pid: int, base: str) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    """py-spy (the thread holding the GIL, i.e. where the Python time goes; raw collapsed
    stacks) and, when there is a perf, perf (on-CPU samples of every thread, native
    symbols: the interpreter, OpenSSL, libc, the kernel) attached to ``pid``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise BenchError("py-spy not found: .venv/bin/pip install py-spy")
    procs = []
    out = Path(f"{base}.pyspy.txt")
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--gil", "--nonblocking"]
    cmd += ["--threads", "--rate", str(PROFILE_RATE), "-o", str(out)]
    procs.append(("py-spy", out, cmd))
    perf = shutil.which("perf")
    if perf:
        out = Path(f"{base}.perf.data")
        cmd = [perf, "record", "-e", "cpu-clock", "-F", "999", "-p", str(pid), "-o", str(out)]
        procs.append(("perf", out, cmd))
    started = []
    for tool, out, cmd in procs:
        with open(f"{out}.log", "wb") as f:
            started.append((tool, out, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)))
    return started


def _stop_profilers(started: list[tuple[str, Path, subprocess.Popen[bytes]]]) -> None:
    for _tool, _out, proc in started:
        proc.send_signal(signal.SIGINT)
    for _tool, _out, proc in started:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def profile(
    ep: Endpoint, cluster: KafkaCluster, args: argparse.Namespace, base: Path
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """One more produce and consume through ``ep`` with py-spy and perf sampling the
    gateway; per workload and tool the top functions by self time."""
    assert ep.relay_pid is not None
    topic = new_topic(cluster, "profile")
    tops: dict[str, dict[str, list[tuple[str, float]]]] = {}
    try:
        for kind in WORKLOADS:
            started = _spawn_profilers(ep.relay_pid, f"{base}-{ep.name}-{kind}")
            time.sleep(1.0)  # the profilers attach
            try:
                if kind == "produce":
                    json_payload = args.payload == "json" or ep.name == "gateway-mask"
                    payload = args.payload_file if json_payload else None
                    r = producer_perf(
                        ep,
                        topic,
                        args.records,
                        record_size=RECORD_SIZE,
                        payload_file=payload,
                        linger_ms=args.linger_ms,
                    )
                else:
                    r = consumer_perf(ep, topic, args.records, record_size=RECORD_SIZE)
                settle(ep.relay_pid)
            finally:
                _stop_profilers(started)
            log(f"profiled {kind} via {ep.name}: {r['records_s']:.0f} records/s")
            tops[kind] = {}
            for tool, out, _proc in started:
                if not out.exists():
                    log(f"{tool} wrote nothing: {Path(f'{out}.log').read_text()[-1000:]}")
                    continue
                if tool == "py-spy":
                    tops[kind][tool] = self_time(out)
                else:
                    tops[kind][tool] = perf_top(out, "sym")
                    tops[kind]["perf-dso"] = perf_top(out, "dso", 6)
                log(f"{tool} {kind} via {ep.name}: {out}")
    finally:
        drop_topic(cluster, topic)
    return tops


_LINE = re.compile(r":\d+\)$")
_PERF_ROW = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$")
_PERF_DSO = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s*$")


def self_time(collapsed: Path, n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` functions with the most samples as the innermost frame, as a share of
    all samples (the thread frame py-spy's --threads puts first is not a function)."""
    self_: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        self_[_LINE.sub(")", leaf)] += int(count)
        total += int(count)
    return [(f, c / total) for f, c in self_.most_common(n)] if total else []


def perf_top(data: Path, by: str, n: int = 10) -> list[tuple[str, float]]:
    """``perf report``'s top ``n`` by self time: symbols (``by="sym"``, named with their
    shared object) or shared objects (``by="dso"``)."""
    sort = "dso,sym" if by == "sym" else "dso"
    r = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--sort", sort, "--no-children"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    rows = []
    for line in r.stdout.splitlines():
        if by == "sym":
            m = _PERF_ROW.match(line)
            if m:
                rows.append((f"{m.group(2)}: {m.group(3)}", float(m.group(1)) / 100))
        elif (m2 := _PERF_DSO.match(line)) is not None:
            rows.append((m2.group(2), float(m2.group(1)) / 100))
    return rows[:n]


# -- summary -----------------------------------------------------------------------------


def _per_rep(reps: list[dict[str, dict[str, Any]]], name: str, fn: Any) -> float | None:
    vals = [fn(r[name], r["direct"]) for r in reps if name in r and "direct" in r]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals and name != "direct" else None


def summarize(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Medians per (workload, path); ratios and added latency per repetition, then their
    median."""
    rows = []
    for kind in WORKLOADS:
        by_rep: dict[int, dict[str, dict[str, Any]]] = {}
        for r in runs:
            if r["workload"] == kind:
                by_rep.setdefault(r["rep"], {})[r["path"]] = r
        reps = list(by_rep.values())
        for name in names:
            mine = [rep[name] for rep in reps if name in rep]
            if not mine:
                continue
            row: dict[str, Any] = {"workload": kind, "path": name, "reps": len(mine)}
            for f in MEDIANS:
                vals = [r[f] for r in mine if r.get(f) is not None]
                row[f] = statistics.median(vals) if vals else None
            xs = [r[name]["records_s"] / r["direct"]["records_s"] for r in reps if name in r]
            row["x_direct"] = statistics.median(xs) if xs and name != "direct" else None
            row["x_direct_range"] = (min(xs), max(xs)) if len(xs) > 1 and name != "direct" else None
            row["added_p99_ms"] = _per_rep(
                reps,
                name,
                lambda a, b: a["p99_ms"] - b["p99_ms"] if "p99_ms" in a else None,
            )
            peaks = [r["rss_peak_kb"] for r in mine if "rss_peak_kb" in r]
            row["rss_peak_kb"] = max(peaks) if peaks else None
            growth = [r["rss_growth_kb"] for r in mine if "rss_growth_kb" in r]
            row["rss_growth_max_kb"] = max(growth) if growth else None
            led = [(r["ledger_records"], r["records"]) for r in mine if "ledger_records" in r]
            row["ledger_min_share"] = min(a / b for a, b in led) if led else None
            row["payload"] = ",".join(sorted({r["payload"] for r in mine}))
            rows.append(row)
    return rows


def _f(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def _mib(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def _ok(good: bool) -> str:
    return "✓" if good else "✗"


def path_label(name: str, meta: dict[str, Any]) -> str:
    label = PATHS[name]
    if name == "gateway-mask":
        check = meta.get("mask_check")
        if check is None:
            label += " (masking not checked)"
        elif check["changed"] == 0:
            label += " (masking of Kafka records: not implemented)"
        else:
            label += (
                f" (masking checked: {check['changed']}/{check['read']} records read back masked)"
            )
    return label


def render(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    cfg = meta["config"]
    out = [
        f"### Kafka through the gateway: {cfg['records']:,} records × {RECORD_SIZE} B per run, "
        f"{PARTITIONS} partitions, 1 broker, {cfg['reps']} rep(s) (median), "
        f"{meta['cpus']} CPUs; producer acks=all linger.ms={cfg['linger_ms']} unthrottled; "
        "gateway: TLS + SASL/PLAIN token to the client, SCRAM-SHA-512 to the broker, "
        "recording redacted, ledger group commit, fsync off",
        "",
        "| workload | path | payload | records/s | MB/s | ×direct (per-rep range) | p99 "
        "| +p99 vs direct | gateway CPU s/MB | gateway RSS start | peak | growth (max) "
        "| on ledger | target |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in summary:
        target = ""
        if r["path"].startswith("gateway"):
            good_x = (r["x_direct"] or 0) >= TARGET_X_DIRECT
            good_l = r["ledger_min_share"] is not None and r["ledger_min_share"] >= 1.0
            good_rss = (r["rss_growth_max_kb"] or 0) <= TARGET_RSS_GROWTH_KB
            target = (
                f"≥{TARGET_X_DIRECT}× {_ok(good_x)}, all on ledger {_ok(good_l)}, "
                f"growth ≤{TARGET_RSS_GROWTH_KB // 1024} MiB {_ok(good_rss)}"
            )
        ledger = "–"
        if r["ledger_min_share"] is not None:
            ledger = f"{r['ledger_min_share'] * 100:.0f} %"
        p99 = _f(r["p99_ms"], ".0f", " ms") if r["workload"] == "produce" else "–"
        lo_hi = r["x_direct_range"]
        rng = f" ({lo_hi[0]:.2f}–{lo_hi[1]:.2f})" if lo_hi else ""
        out.append(
            f"| {r['workload']} | {path_label(r['path'], meta)} | {r['payload']} "
            f"| {_f(r['records_s'], ',.0f')} | {_f(r['mb_s'], '.1f')} "
            f"| {_f(r['x_direct'], '.2f')}{rng} | {p99} | {_f(r['added_p99_ms'], '+.0f', ' ms')} "
            f"| {_f(r['relay_cpu_s_per_mb'], '.4f')} "
            f"| {_f(_mib(r['rss_start_kb']), '.1f', ' MiB')} "
            f"| {_f(_mib(r['rss_peak_kb']), '.1f', ' MiB')} "
            f"| {_f(_mib(r['rss_growth_max_kb']), '+.1f', ' MiB')} | {ledger} | {target} |"
        )
    out += [
        "",
        "records/s, MB/s (MB = 10⁶ B of record values): produce as ProducerPerformance "
        "reports them; consume its fetch.* figures (group join left out; median join: "
        + ", ".join(
            f"{r['path']} {r['rebalance_ms']:.0f} ms"
            for r in summary
            if r["workload"] == "consume" and r["rebalance_ms"] is not None
        )
        + "). p99: the producer's send-to-ack latency; unthrottled, it mostly measures "
        "how long a record waits in the producer's 32 MiB buffer, i.e. throughput.",
        "MB/s counts records as produced (1024 B); masked records reach the consumer "
        "shorter (the address replaced by ****). "
        "on ledger: the fewest records of a run's topic found in the gateway's ledger "
        "(chunk entries' per-record SHA-256), produced resp. fetched, as a share of the "
        "records sent.",
    ]
    out += [
        "",
        "Where the CPU went: CPU seconds per MB (medians); the tool's include its JVM's "
        "start; everything else is the machine's busy time (/proc/stat) less the three "
        "(the kernel's loopback work not charged to them, other jobs on the machine)",
        "",
        "| workload | path | perf tool | broker | gateway | everything else | machine "
        "| machine busy (share of all CPUs) |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in summary:
        cells = " | ".join(_f(r[f"{who}_cpu_s_per_mb"], ".4f") for who in CPU_SPLIT)
        share = _f(r["machine_busy_share"] and r["machine_busy_share"] * 100, ".0f", " %")
        out.append(f"| {r['workload']} | {r['path']} | {cells} | {share} |")
    gw = [r for r in summary if r["path"].startswith("gateway") and r["relay_cpu_s"]]
    if gw:
        out += ["", "gateway CPU (medians): share of one core over the tool's run, main thread"]
        for r in gw:
            core = (r["relay_cpu_s"] or 0) / (r["seconds"] or 1)
            main = (r["relay_main_thread_cpu_s"] or 0) / (r["relay_cpu_s"] or 1)
            per_mb = r["relay_cpu_s_per_mb"]
            ceiling = (
                f", i.e. at most {1 / per_mb:.0f} MB/s per core of gateway CPU" if per_mb else ""
            )
            out.append(
                f"- {r['workload']} via {r['path']}: {r['relay_cpu_s']:.2f} s CPU over "
                f"{r['seconds']:.1f} s = {core * 100:.0f} % of a core, "
                f"{main * 100:.0f} % of it on the event-loop thread{ceiling}"
            )
    drift = meta.get("rss_drift")
    if drift:
        out += [
            "",
            "gateway RSS after each repetition: "
            + "; ".join(
                f"{k} " + " → ".join(f"{v / 1024:.0f}" for v in vs) + " MiB"
                for k, vs in drift.items()
            ),
        ]
    if meta["other_core_share"]:
        med, top = meta["other_core_share"]
        out += [
            "",
            "CPU of everything else on the machine (kernel, other jobs) while a run was "
            f"measured: median {med * 100:.0f} %, max {top * 100:.0f} % of one core",
        ]
    what = {
        "py-spy": "py-spy --gil (Python, the thread holding the GIL)",
        "perf": "perf (on-CPU, every thread, native symbols)",
    }
    for name, kinds in meta.get("profile", {}).items():
        for kind, tools in kinds.items():
            for tool, top in tools.items():
                if tool == "perf-dso":
                    continue
                out += ["", f"{what[tool]}, {kind} via {name}: top 10 by self time"]
                out += [f"{i + 1:2d}. {sh * 100:5.1f} %  {fn}" for i, (fn, sh) in enumerate(top)]
                if tool == "perf" and tools.get("perf-dso"):
                    out.append(
                        "    by object: "
                        + ", ".join(f"{d} {sh * 100:.0f} %" for d, sh in tools["perf-dso"])
                    )
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"from {','.join(PATHS)}")
    p.add_argument("--reps", type=int, help="repetitions (3; --quick: 1)")
    p.add_argument("--records", type=int, help="records per run (200000; --quick: 20000)")
    p.add_argument("--warmup", type=int, help="records per path before measuring (20000)")
    p.add_argument("--linger-ms", type=int, default=5, help="producer linger.ms (5)")
    p.add_argument(
        "--payload",
        choices=("random", "json"),
        default="random",
        help="random: ProducerPerformance's own 1 KiB payload on direct and gateway (the "
        "mask path always sends JSON lines of 1 KiB with an email field); json: JSON on "
        "every path",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 20 k records, 1 rep")
    p.add_argument(
        "--profile",
        metavar="PREFIX",
        help="afterwards, one more produce and consume through each gateway path under "
        "py-spy (--gil) and perf: PREFIX-<path>-<workload>.pyspy.txt (collapsed stacks) "
        "and .perf.data",
    )
    p.add_argument("--json", metavar="FILE", help="write runs and summary as JSON to FILE")
    args = p.parse_args(argv)
    args.paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    if bad := [x for x in args.paths if x not in PATHS]:
        p.error(f"unknown path: {', '.join(bad)}")
    if "direct" not in args.paths:
        args.paths.insert(0, "direct")  # ratios are to direct
    args.reps = args.reps or (1 if args.quick else 3)
    args.records = args.records or (20_000 if args.quick else 200_000)
    if args.warmup is None:
        args.warmup = 5_000 if args.quick else 20_000
    if args.reps < 1 or args.records < 1 or args.warmup < 0:
        p.error("need positive --reps and --records")
    return args


def start_paths(
    stack: contextlib.ExitStack, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, Endpoint], KafkaCluster, int | None, dict[str, GatewayKafka]]:
    for attempt in range(CLUSTER_ATTEMPTS):
        cluster = KafkaCluster(brokers=1)
        stack.callback(cluster.stop)
        try:
            cluster.start()
            break
        except BackendError as e:
            # kafka-storage reads a random cluster id that starts with '-' as an option
            # (about one start in 64); a new id is all it takes.
            if "--cluster-id" not in str(e) or attempt + 1 == CLUSTER_ATTEMPTS:
                raise
            log("kafka-storage format refused the cluster id; starting again")
    log(f"kafka on {cluster.bootstrap} ({cluster.dir})")
    endpoints = {"direct": direct(cluster, workdir)}
    gateways = {}
    for name in (n for n in args.paths if n.startswith("gateway")):
        gw = GatewayKafka(
            workdir,
            cluster,
            name=name,
            tls=name != "gateway-plaintext",
            mask=name == "gateway-mask",
        )
        stack.callback(gw.stop)
        endpoints[name] = gw.start()
        gateways[name] = gw
    return {n: endpoints[n] for n in args.paths}, cluster, broker_pid(cluster), gateways


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    t_start = time.monotonic()
    meta: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(tempfile.mkdtemp(prefix="lg-kafkabench-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            args.payload_file = write_json_payloads(workdir / "payload.jsonl", RECORD_SIZE)
            endpoints, cluster, broker, gateways = start_paths(stack, args, workdir)
            log(f"paths ready in {time.monotonic() - t_start:.1f}s: " + ", ".join(endpoints))
            if "gateway-mask" in endpoints:
                meta["mask_check"] = check_masking(endpoints["gateway-mask"], cluster, args)
                log(f"mask check: {meta['mask_check']}")
            runs = run_all(args, endpoints, cluster, broker)
            if args.profile:
                meta["profile"] = {
                    name: profile(ep, cluster, args, Path(args.profile))
                    for name, ep in endpoints.items()
                    if ep.relay_pid
                }
            for name, gw in gateways.items():
                if gw.proc is not None and gw.proc.poll() is not None:
                    raise BenchError(f"{name} exited ({gw.proc.returncode}); see {gw.log}")
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except (BenchError, BackendError) as e:
        log(f"bench failed: {e}")
        return 1
    other = sorted(r["other_core_share"] for r in runs)
    drift: dict[str, list[int]] = {}
    for r in runs:
        if "rss_after_rep_kb" in r:
            drift.setdefault(r["path"], []).append(r["rss_after_rep_kb"])
    meta.update(
        config={k: getattr(args, k) for k in ("paths", "reps", "records", "warmup", "linger_ms")}
        | {"payload": args.payload},
        cpus=os.cpu_count(),
        other_core_share=(statistics.median(other), other[-1]) if other else None,
        rss_drift=drift,
        wall_s=round(time.monotonic() - t_start, 1),
    )
    summary = summarize(runs, args.paths)
    if args.json:
        doc = {**meta, "summary": summary, "runs": runs}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(render(summary, meta))
    log(f"wall time {meta['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
