#!/usr/bin/env python3
"""S3 direct to versitygw vs through nginx vs through the ledgergate gateway.

One command, one figure: starts versitygw (posix backend, keep-alive on, objects on
tmpfs), nginx as a plain reverse proxy and ``ledgergate serve`` with one ``s3``
connection, all on loopback without TLS (``gateway-tls`` adds the gateway's TLS
listener), then runs each workload through each path, rotating the order of the paths
from one repetition to the next. Reports medians over the repetitions, the gateway as
ratios of direct and of nginx (per repetition, then the median), relay and backend CPU
from /proc, and the relays' resident set sampled during the large transfers.

    .venv/bin/python bench/s3_compare.py                                  # the figure
    .venv/bin/python bench/s3_compare.py --size 64MiB --reps 1 --seconds 5  # smoke test
    .venv/bin/python bench/s3_compare.py --paths direct,gateway,gateway-tls --json out.json

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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _cluster import BenchError, proc_stats
from _s3 import (
    Endpoint,
    GatewayS3,
    Nginx,
    RssSampler,
    S3Server,
    backend_pid,
    direct,
    hammer,
    machine_busy_s,
    thread_cpu,
)
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

PATHS = ("direct", "nginx", "gateway", "gateway-tls")
DEFAULT_PATHS = ("direct", "nginx", "gateway")
TRANSFERS = {
    "put": "PutObject, one request",
    "multipart": "upload_file, 8 MiB parts, 4 threads",
    "get": "GetObject, one stream",
}
SMALL = {"get-1k": "GET 1 KiB (pre-signed)", "head-1k": "HEAD 1 KiB (pre-signed)"}
WORKLOADS = (*TRANSFERS, *SMALL)
BUCKET = "bench"
MB, MiB, GiB = 1_000_000, 1 << 20, 1 << 30
PART = 8 * MiB
# Targets printed next to the figures.
TARGET_X_DIRECT = 0.8  # large transfers: gateway MB/s vs direct
TARGET_RSS_GROWTH_KB = 64 * 1024  # large transfers: gateway resident set growth
TARGET_X_NGINX = 0.5  # small requests: gateway req/s vs nginx
WARMUP_S = 1.0
# Figures reported as their median over the repetitions.
MEDIANS = (
    "relay_cpu_s_per_gib",
    "backend_cpu_s_per_gib",
    "relay_cpu_us_per_req",
    "backend_cpu_us_per_req",
    "loadgen_cpu_us_per_req",
    "loadgen_core_share",
    "client_prep_s",
    "client_cpu_s",
    "rss_start_kb",
    "rss_growth_kb",
    "p50_ms",
    "relay_cpu_s",
    "relay_main_thread_cpu_s",
    "seconds",
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- runs --------------------------------------------------------------------------------


@contextlib.contextmanager
def meter(ep: Endpoint, vgw: int | None, into: dict[str, Any], rss: bool) -> Iterator[None]:
    """CPU seconds over the block of the relay (and per thread), of versitygw and of this
    process (the client); with ``rss`` the relay's resident set sampled throughout."""
    relay = proc_stats(ep.relay_pid).cpu_s if ep.relay_pid else None
    threads = thread_cpu(ep.relay_pid) if ep.relay_pid else {}
    backend = proc_stats(vgw).cpu_s if vgw else None
    busy = machine_busy_s()
    me = os.times()
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if rss and ep.relay_pid:
            stack.enter_context(RssSampler(ep.relay_pid).run(into))
        yield
    now = os.times()
    wall = time.perf_counter() - t0
    into["machine_cpu_s"] = round(machine_busy_s() - busy, 3)
    into["client_cpu_s"] = round(now.user - me.user + now.system - me.system, 3)
    if backend is not None and vgw:
        into["backend_cpu_s"] = round(proc_stats(vgw).cpu_s - backend, 3)
    if relay is not None and ep.relay_pid:
        into["relay_cpu_s"] = round(proc_stats(ep.relay_pid).cpu_s - relay, 3)
        after = thread_cpu(ep.relay_pid)
        per = {t: after[t][1] - threads.get(t, ("", 0.0))[1] for t in after}
        into["relay_main_thread_cpu_s"] = round(per.get(ep.relay_pid, 0.0), 3)
        into["relay_threads_busy"] = sum(1 for v in per.values() if v >= 0.05)
    ours = sum(into.get(k, 0.0) for k in ("client_cpu_s", "backend_cpu_s", "relay_cpu_s"))
    into["other_cpu_s"] = round(max(0.0, into["machine_cpu_s"] - ours), 3)
    into["other_core_share"] = round(into["other_cpu_s"] / wall, 3)


def run_transfer(
    kind: str, ep: Endpoint, src: Path, size: int, client_cfg: dict[str, Any]
) -> dict[str, Any]:
    c = ep.client(**client_cfg)
    out: dict[str, Any] = {}
    key = f"{kind}-{ep.name}-{secrets.token_hex(4)}"
    sent: list[float] = []

    def before_send(**_kw: Any) -> None:  # the request is signed: hashing is done
        sent.append(time.perf_counter())

    c.meta.events.register("before-send.s3.PutObject", before_send)
    t0 = time.perf_counter()
    if kind == "put":
        with open(src, "rb") as f:
            c.put_object(Bucket=BUCKET, Key=key, Body=f)
    elif kind == "multipart":
        cfg = TransferConfig(
            multipart_threshold=PART,
            multipart_chunksize=PART,
            max_concurrency=4,
            preferred_transfer_client="classic",
        )
        c.upload_file(str(src), BUCKET, key, Config=cfg)
    else:
        got = 0
        for chunk in c.get_object(Bucket=BUCKET, Key="big")["Body"].iter_chunks(MiB):
            got += len(chunk)
        if got != size:
            raise BenchError(f"GET via {ep.name}: {got} bytes, expected {size}")
    t1 = time.perf_counter()
    if kind != "get":
        head = c.head_object(Bucket=BUCKET, Key=key)
        c.delete_object(Bucket=BUCKET, Key=key)
        if head["ContentLength"] != size:
            raise BenchError(f"{kind} via {ep.name} stored {head['ContentLength']} bytes")
    start = sent[0] if kind == "put" else t0  # put: the request only, not the hashing
    out.update(
        seconds=round(t1 - start, 3),
        client_prep_s=round(start - t0, 3),
        mb_s=round(size / MB / (t1 - start), 1),
    )
    return out


def run_one(
    kind: str, ep: Endpoint, vgw: int | None, args: argparse.Namespace, urls: dict[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kind in TRANSFERS:
        with meter(ep, vgw, out, rss=True):
            out.update(run_transfer(kind, ep, args.src, args.size, args.client_cfg))
        per = args.size / GiB
        if "relay_cpu_s" in out:
            out["relay_cpu_s_per_gib"] = round(out["relay_cpu_s"] / per, 3)
        if "backend_cpu_s" in out:
            out["backend_cpu_s_per_gib"] = round(out["backend_cpu_s"] / per, 3)
        return out
    url = urls[f"{kind}:{ep.name}"]
    with meter(ep, vgw, out, rss=False):
        out.update(hammer(url, kind == "head-1k", args.conns, args.seconds, ep.verify))
    n = max(out["requests"], 1)
    for who in ("relay", "backend"):
        if f"{who}_cpu_s" in out:
            out[f"{who}_cpu_us_per_req"] = round(out[f"{who}_cpu_s"] / n * 1e6, 1)
    return out


def presigned(endpoints: dict[str, Endpoint]) -> dict[str, str]:
    urls = {}
    for name, ep in endpoints.items():
        c = ep.client(signature_version="s3v4")
        for kind, op in (("get-1k", "get_object"), ("head-1k", "head_object")):
            urls[f"{kind}:{name}"] = c.generate_presigned_url(
                op, Params={"Bucket": BUCKET, "Key": "small"}, ExpiresIn=4 * 3600
            )
    return urls


def run_all(
    args: argparse.Namespace, endpoints: dict[str, Endpoint], vgw: int | None
) -> list[dict[str, Any]]:
    names = list(endpoints)
    urls = presigned(endpoints)
    if any(k in SMALL for k in args.workloads):
        for name, ep in endpoints.items():  # first connections, caches, imports
            hammer(urls[f"get-1k:{name}"], False, args.conns, WARMUP_S, ep.verify)
    runs = []
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for kind in args.workloads:
            for name in order:
                res = run_one(kind, endpoints[name], vgw, args, urls)
                runs.append({"workload": kind, "path": name, "rep": rep, **res})
                log(f"[rep {rep + 1}/{args.reps}] {kind:<10} {name:<12} {_brief(res)}")
    return runs


def _brief(r: dict[str, Any]) -> str:
    s = f"{r['mb_s']:8.1f} MB/s in {r['seconds']:.2f}s" if "mb_s" in r else f"{r['rps']:8.0f} req/s"
    if "relay_cpu_s" in r:
        s += f"  relay CPU {r['relay_cpu_s']:.2f}s"
    if "rss_growth_kb" in r:
        s += f"  RSS +{r['rss_growth_kb'] / 1024:.1f} MiB"
    if "loadgen_core_share" in r:
        s += f"  loadgen {r['loadgen_core_share'] * 100:.0f}% of a core"
    return s


# -- summary -----------------------------------------------------------------------------


def _ratios(
    reps: list[dict[str, dict[str, Any]]], name: str, base: str, metric: str
) -> float | None:
    vals = [r[name][metric] / r[base][metric] for r in reps if name in r and base in r]
    return statistics.median(vals) if vals and name != base else None


def summarize(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Medians per (workload, path); ratios per repetition, then their median."""
    rows = []
    for kind in dict.fromkeys(r["workload"] for r in runs):
        by_rep: dict[int, dict[str, dict[str, Any]]] = {}
        for r in runs:
            if r["workload"] == kind:
                by_rep.setdefault(r["rep"], {})[r["path"]] = r
        reps = list(by_rep.values())
        metric = "mb_s" if kind in TRANSFERS else "rps"
        for name in names:
            mine = [rep[name] for rep in reps if name in rep]
            if not mine:
                continue
            row: dict[str, Any] = {"workload": kind, "path": name, "reps": len(mine)}
            for f in (metric, *MEDIANS):
                vals = [r[f] for r in mine if r.get(f) is not None]
                row[f] = statistics.median(vals) if vals else None
            row["value"] = row.pop(metric)
            row["x_direct"] = _ratios(reps, name, "direct", metric)
            row["x_nginx"] = _ratios(reps, name, "nginx", metric)
            peaks = [r["rss_peak_kb"] for r in mine if "rss_peak_kb" in r]
            row["rss_peak_kb"] = max(peaks) if peaks else None
            growth = [r["rss_growth_kb"] for r in mine if "rss_growth_kb" in r]
            row["rss_growth_max_kb"] = max(growth) if growth else None
            rows.append(row)
    return rows


def _f(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def _mib(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def _ok(good: bool) -> str:
    return "✓" if good else "✗"


def render(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    cfg = meta["config"]
    out = [
        f"### S3 through the gateway: {cfg['size_label']} transfers, {cfg['conns']} clients × "
        f"{cfg['seconds']} s for small requests, {cfg['reps']} reps (median), "
        f"{meta['cpus']} CPUs; client payload: {cfg['payload']}",
        "",
    ]
    big = [r for r in summary if r["workload"] in TRANSFERS]
    if big:
        out += [
            "| workload | path | MB/s | ×direct | ×nginx | relay CPU s/GiB | backend CPU s/GiB "
            "| relay RSS start | peak | growth (max) | target |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for r in big:
            target = ""
            if r["path"].startswith("gateway"):
                good_x = (r["x_direct"] or 0) >= TARGET_X_DIRECT
                good_rss = (r["rss_growth_max_kb"] or 0) <= TARGET_RSS_GROWTH_KB
                target = (
                    f"≥{TARGET_X_DIRECT}× direct {_ok(good_x)}, "
                    f"≤{TARGET_RSS_GROWTH_KB // 1024} MiB {_ok(good_rss)}"
                )
            out.append(
                f"| {r['workload']}: {TRANSFERS[r['workload']]} | {r['path']} "
                f"| {_f(r['value'], '.1f')} | {_f(r['x_direct'], '.2f')} "
                f"| {_f(r['x_nginx'], '.2f')} | {_f(r['relay_cpu_s_per_gib'], '.2f')} "
                f"| {_f(r['backend_cpu_s_per_gib'], '.2f')} "
                f"| {_f(_mib(r['rss_start_kb']), '.1f', ' MiB')} "
                f"| {_f(_mib(r['rss_peak_kb']), '.1f', ' MiB')} "
                f"| {_f(_mib(r['rss_growth_max_kb']), '+.1f', ' MiB')} | {target} |"
            )
        out.append("")
    small = [r for r in summary if r["workload"] in SMALL]
    if small:
        out += [
            "| workload | path | req/s | ×direct | ×nginx | p50 | relay CPU/req "
            "| backend CPU/req | load generator CPU/req (share of a core) | target |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for r in small:
            target = ""
            if r["path"].startswith("gateway"):
                target = f"≥{TARGET_X_NGINX}× nginx {_ok((r['x_nginx'] or 0) >= TARGET_X_NGINX)}"
            share = r["loadgen_core_share"]
            out.append(
                f"| {r['workload']}: {SMALL[r['workload']]} | {r['path']} "
                f"| {_f(r['value'], '.0f')} | {_f(r['x_direct'], '.2f')} "
                f"| {_f(r['x_nginx'], '.2f')} | {_f(r['p50_ms'], '.2f', ' ms')} "
                f"| {_f(r['relay_cpu_us_per_req'], '.0f', ' µs')} "
                f"| {_f(r['backend_cpu_us_per_req'], '.0f', ' µs')} "
                f"| {_f(r['loadgen_cpu_us_per_req'], '.0f', ' µs')} "
                f"({_f(share and share * 100, '.0f', ' %')}) | {target} |"
            )
        out.append("")
    gw = [r for r in summary if r["path"].startswith("gateway") and r["relay_cpu_s"]]
    if gw:
        out.append("gateway CPU (medians over the runs): share of one core, and of the main thread")
        for r in gw:
            busy = (r["relay_cpu_s"] or 0) / (r["seconds"] or 1)
            main = (r["relay_main_thread_cpu_s"] or 0) / (r["relay_cpu_s"] or 1)
            out.append(
                f"- {r['workload']} via {r['path']}: {r['relay_cpu_s']:.2f} s CPU over "
                f"{r['seconds']:.1f} s = {busy * 100:.0f} % of a core, "
                f"{main * 100:.0f} % of it on the event-loop thread"
            )
        out.append("")
    if meta["other_core_share"]:
        med, top = meta["other_core_share"]
        by = ", ".join(f"{k} {v * 100:.0f} %" for k, v in meta["other_by_workload"].items())
        out += [
            "CPU of everything else on the machine (kernel, other jobs) while a run was "
            f"measured: median {med * 100:.0f} %, max {top * 100:.0f} % of one core "
            f"(median by workload: {by})",
            "",
        ]
    put = [r for r in summary if r["workload"] == "put" and r["client_prep_s"]]
    if put:
        out.append(
            "put: MB/s counts the request only (from botocore's before-send to the answer); "
            "the client hashed the body first for "
            + ", ".join(f"{r['path']} {r['client_prep_s']:.2f} s" for r in put)
        )
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(|b|kib|mib|gib|kb|mb|gb)", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64MiB, 1GiB)")
    mult = {"": 1, "b": 1, "kib": 1 << 10, "mib": MiB, "gib": GiB, "kb": 1000, "mb": MB}
    return int(m.group(1)) * mult.get(m.group(2), 10**9)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"from {','.join(PATHS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"from {','.join(WORKLOADS)}")
    p.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    p.add_argument("--size", type=parse_size, default=GiB, help="large object size (1GiB)")
    p.add_argument("--seconds", type=float, default=10, help="per small-request run (10)")
    p.add_argument("--conns", type=int, default=8, help="small-request connections (8)")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes (1)")
    p.add_argument(
        "--nginx-buffers",
        metavar="SIZE",
        help="nginx proxy_buffer_size and client_body_buffer_size, e.g. 256k "
        "(default: nginx's, one page)",
    )
    p.add_argument(
        "--payload",
        choices=("default", "unsigned"),
        default="default",
        help="default: boto3's own choice over plain HTTP (SHA-256 payload hash + CRC32 "
        "header, both computed by the client before sending); unsigned: UNSIGNED-PAYLOAD "
        "and no checksum",
    )
    p.add_argument("--data-dir", type=Path, help="where objects live (/dev/shm if room)")
    p.add_argument("--json", metavar="FILE", help="write runs and summary as JSON to FILE")
    args = p.parse_args(argv)
    args.paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    chosen = {s.strip() for s in args.workloads.split(",") if s.strip()}
    args.workloads = [w for w in WORKLOADS if w in chosen]
    if bad := [x for x in args.paths if x not in PATHS] + sorted(chosen - set(WORKLOADS)):
        p.error(f"unknown path or workload: {', '.join(bad)}")
    if not args.paths or args.reps < 1 or args.seconds <= 0 or args.size < PART:
        p.error("need a path, positive --reps and --seconds, and --size of at least 8MiB")
    args.client_cfg = (
        {
            "s3": {"payload_signing_enabled": False},
            "request_checksum_calculation": "when_required",
        }
        if args.payload == "unsigned"
        else {}
    )
    return args


def data_base(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return args.data_dir
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 5 * args.size + GiB:
        return shm
    return Path(tempfile.gettempdir())


def start_paths(
    stack: contextlib.ExitStack, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, Endpoint], int | None]:
    base = data_base(args)
    # S3Server makes its directory with tempfile.mkdtemp: point that at tmpfs so that the
    # objects, not the disk, are what every path reads and writes.
    saved, tempfile.tempdir = tempfile.tempdir, str(base)
    try:
        s3 = S3Server(extra_args=("--keep-alive", "--quiet"))
        stack.callback(s3.stop)
        s3.start()
    finally:
        tempfile.tempdir = saved
    log(f"versitygw on {s3.port}, objects under {s3.root}")
    endpoints = {"direct": direct(s3)}
    if "nginx" in args.paths:
        ngx = Nginx(workdir, s3, args.nginx_workers, args.nginx_buffers)
        stack.callback(ngx.stop)
        endpoints["nginx"] = ngx.start()
    for name in (n for n in args.paths if n.startswith("gateway")):
        gw = GatewayS3(workdir, s3, name=name, tls=name == "gateway-tls")
        stack.callback(gw.stop)
        endpoints[name] = gw.start()
    root = endpoints["direct"].client()
    root.create_bucket(Bucket=BUCKET)
    root.put_object(Bucket=BUCKET, Key="small", Body=os.urandom(1024))
    args.src = Path(tempfile.mkdtemp(prefix="lg-s3-src-", dir=base)) / "object.bin"
    stack.callback(shutil.rmtree, args.src.parent, ignore_errors=True)
    with open(args.src, "wb") as f:
        for left in range(args.size, 0, -16 * MiB):
            f.write(os.urandom(min(left, 16 * MiB)))
    if "get" in args.workloads:
        with open(args.src, "rb") as f:
            root.put_object(Bucket=BUCKET, Key="big", Body=f)
    return {n: endpoints[n] for n in args.paths}, backend_pid(s3)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT too: a shell starting us in the background hands it down ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(tempfile.mkdtemp(prefix="lg-s3bench-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            t0 = time.monotonic()
            endpoints, vgw = start_paths(stack, args, workdir)
            log(f"paths ready in {time.monotonic() - t0:.1f}s: " + ", ".join(endpoints))
            runs = run_all(args, endpoints, vgw)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except (BenchError, BotoCoreError, ClientError) as e:
        log(f"bench failed: {e}")
        return 1
    size = args.size
    label = f"{size // GiB} GiB" if size % GiB == 0 else f"{size / MiB:g} MiB"
    conf = {k: getattr(args, k) for k in ("paths", "workloads", "reps", "seconds", "conns")}
    other = sorted(r["other_core_share"] for r in runs)
    meta = {
        "config": {**conf, "size": size, "size_label": label, "payload": args.payload},
        "cpus": os.cpu_count(),
        "other_core_share": (statistics.median(other), other[-1]) if other else None,
        "other_by_workload": {
            w: statistics.median(r["other_core_share"] for r in runs if r["workload"] == w)
            for w in args.workloads
        },
    }
    summary = summarize(runs, args.paths)
    if args.json:
        doc = {**meta, "summary": summary, "runs": runs}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(render(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
