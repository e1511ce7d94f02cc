"""pgbench select-only through the gateway on each store engine, and through two gateways
behind HAProxy, side by side with direct in one run.

    .venv/bin/python bench/store_compare.py [--seconds 15] [--reps 3] [--clients 8]

Paths: ``direct``; ``gw-sqlite`` (one gateway, the embedded SQLite store);
``gw-postgresql`` (one gateway, a PostgreSQL store: a second cluster with its durability
on, as a production store runs); ``2gw-haproxy`` (two gateways on that PostgreSQL store,
one ledger key, behind HAProxy in TCP mode, pgbench's connections spread over both).
Every path records every statement (``recording: redacted``, the command durable before
it is forwarded). Runs are interleaved, ``reps`` of each; the table gives median TPS and
ratios taken within each repetition (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cluster import Endpoint, GatewayProcess, PgCluster
from tests.integration.haproxy import HaProxy

DBNAME = "bench"
PATHS = ("direct", "gw-sqlite", "gw-postgresql", "2gw-haproxy")


def log(msg: str) -> None:
    print(f"[store_compare] {msg}", file=sys.stderr, flush=True)


def pgbench(ep: Endpoint, seconds: int, clients: int) -> float:
    r = subprocess.run(
        ["pgbench", "-n", "-S", "-c", str(clients), "-j", "2", "-T", str(seconds)],
        capture_output=True,
        text=True,
        env=ep.libpq_env(),
        timeout=seconds + 120,
    )
    m = re.search(r"tps = ([\d.]+)", r.stdout)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"pgbench on {ep.name} failed: {r.stderr[-2000:]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--scale", type=int, default=10)
    a = ap.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lg-store-bench-")))
        backend = PgCluster(
            tls=False,
            settings={"log_statement": "none", "shared_buffers": "256MB", "autovacuum": "off"},
        )
        stack.callback(backend.stop)
        backend.start()
        backend.psql(f"CREATE DATABASE {DBNAME}")
        direct = Endpoint(
            "direct", backend.host, backend.port, DBNAME, "postgres", backend.password
        )
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(a.scale)],
            check=True,
            capture_output=True,
            env=direct.libpq_env(),
        )
        store = PgCluster(
            tls=False,
            settings={
                "fsync": "on",
                "synchronous_commit": "on",
                "full_page_writes": "on",
                "log_statement": "none",
            },
        )
        stack.callback(store.stop)
        store.start()
        store.psql("CREATE DATABASE ledgergate")
        pg_store = (
            f"store: postgresql://postgres@127.0.0.1:{store.port}/ledgergate?sslmode=disable\n"
            f"store_password: {store.password}\n"
        )
        shared_key = work / "ledger.ed25519"
        endpoints: dict[str, Endpoint] = {"direct": direct}

        def gateway(name: str, extra: str) -> GatewayProcess:
            gw = GatewayProcess(work, backend, DBNAME, name=name, extra_yaml=extra)
            stack.callback(gw.stop)
            return gw

        endpoints["gw-sqlite"] = gateway("gw-sqlite", "").start()
        endpoints["gw-postgresql"] = gateway("gw-postgresql", pg_store).start()
        pair_yaml = pg_store + f"ledger: {{key: {shared_key}, key_name: ledgergate/bench}}\n"
        a_ep = gateway("gw-a", "gateway_name: gw-a\n" + pair_yaml).start()
        b_ep = gateway("gw-b", "gateway_name: gw-b\n" + pair_yaml).start()
        lb = HaProxy([("127.0.0.1", a_ep.port), ("127.0.0.1", b_ep.port)]).start()
        stack.callback(lb.stop)
        endpoints["2gw-haproxy"] = Endpoint(
            "2gw-haproxy", "127.0.0.1", lb.port, a_ep.dbname, a_ep.user, a_ep.password
        )
        # one token for both: gw-a minted it in the shared store
        log(f"paths ready; {a.reps} reps x {len(PATHS)} paths x {a.seconds}s")
        runs: list[dict[str, float]] = []
        for rep in range(a.reps):
            got: dict[str, float] = {}
            for name in PATHS:
                got[name] = pgbench(endpoints[name], a.seconds, a.clients)
                log(f"rep {rep + 1} {name}: {got[name]:.0f} tps")
                time.sleep(1)
            runs.append(got)
    print(
        f"pgbench -S, {a.clients} clients, {a.seconds}s x {a.reps} reps, scale {a.scale}, "
        "every statement on the ledger"
    )
    print(f"{'path':<15}{'TPS (median)':>14}{'vs direct':>11}{'vs gw-sqlite':>14}")
    for name in PATHS:
        tps = statistics.median(r[name] for r in runs)
        vd = statistics.median(r[name] / r["direct"] for r in runs)
        vs = statistics.median(r[name] / r["gw-sqlite"] for r in runs)
        print(f"{name:<15}{tps:>14,.0f}{vd:>10.2f}x{vs:>13.2f}x")


if __name__ == "__main__":
    main()
