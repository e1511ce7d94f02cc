"""The sessions list at 100,000 sessions: the REST API, the console page, and
``page_sessions`` alone, against the web console's target of under a second.

    .venv/bin/python bench/console_sessions.py [--sessions 100000] [--reps 20]
        [--engines sqlite,postgresql] [--analyze] [--profile] [--json [FILE]]

Writes ``--sessions`` sessions into a fresh store through the project's own
``LedgerWriter`` (chain, checkpoints and indexes as a gateway leaves them), on two
gateway streams sharing one ledger key (an HA pair): ~200 identities (users and
services, Zipf-distributed activity), 5 connections (3 PostgreSQL, an HTTP API, an S3
store), each session an ``auth.ok``, its ``session.open``, a few commands and result
chunks, and a ``session.close`` with its outcome, except ~1 % left open. With
``postgresql`` the same ledger goes into a throwaway PostgreSQL store (``PgCluster``,
as ``evidence_search.py`` starts it), then ``VACUUM ANALYZE entries``: what autovacuum
does by itself within a minute of such a load, done before the timing rather than in
the middle of it. The SQLite store is measured as the gateway leaves it, without
planner statistics (nothing in ledgergate runs ``ANALYZE``); ``--analyze`` runs
``ANALYZE`` on it first, to show what the statistics change.

Then starts ``ledgergate serve`` on that store with its API listener (TLS, its own
generated certificate) and an admin token, and times, ``--reps`` times each with the
cases interleaved within a repetition: ``GET /api/v1/sessions`` (first page; the 20th
page, its cursor found by following ``next``; filters identity, connection, protocol,
outcome=open), and the console's ``GET /console/sessions`` (first page, an identity
filter), each over one keep-alive HTTPS connection, body read. The same queries then go
to ``page_sessions`` on a store opened in this process (no HTTP, no rendering), which
splits the cost. ``--profile`` runs each case slower than 300 ms (HTTP p50) once more
under cProfile and prints where it went. Everything lives in a temporary directory, deleted
on exit (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import random
import shutil
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for p in (str(REPO), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _cluster import LEDGERGATE, PgCluster, proc_stats, stop_process, wait_listening  # noqa: E402
from evidence_search import BUILD_BATCH, CHECKPOINT_EVERY, _chunk, _statement  # noqa: E402
from tests.integration.pgcluster import clean_env, free_port  # noqa: E402

from ledgergate.core.ledger.entry import Draft  # noqa: E402
from ledgergate.core.recording import SessionRecorder  # noqa: E402
from ledgergate.services.config import load_settings  # noqa: E402
from ledgergate.services.keys import load_or_create_ledger_signer  # noqa: E402
from ledgergate.services.ledger import LedgerWriter  # noqa: E402
from ledgergate.services.sessions import SessionPage, page_sessions  # noqa: E402
from ledgergate.store import open_store  # noqa: E402
from ledgergate.wire.pg.events import CommandSeen  # noqa: E402

TARGET_MS = 1000.0  # the console issue's: the sessions list answers in under a second
PROFILE_OVER_MS = 300.0  # --profile: cases slower than this (HTTP p50) are profiled
GATEWAY = "console-bench"  # the served gateway; its own stream is gateway@console-bench
# The seeded sessions are on other streams (an HA pair that shares the store and the
# ledger key), so the served gateway's start does not close the ~1 % left open as its
# own previous run's orphans (services.restart).
STREAMS = ("gateway@gw-a", "gateway@gw-b")
ADMIN = "ada"
COOKIE = "__Host-ledgergate"  # api/console/auth.py
PAGE = 50  # the console's PAGE_SIZE and the API's default limit
DEEP_PAGE = 20  # "the 20th page"
SPAN_S = 60 * 86400  # the sessions' time span: the last 60 days
OPEN_SHARE = 0.01  # sessions never closed
# (name, type, share of sessions)
CONNECTIONS: tuple[tuple[str, str, float], ...] = (
    ("prod-orders", "postgres", 0.35),
    ("prod-billing", "postgres", 0.25),
    ("analytics", "postgres", 0.20),
    ("internal-api", "http", 0.12),
    ("reports-bucket", "s3", 0.08),
)
OUTCOMES = (  # (outcome of a closed session, weight)
    ("client closed", 0.93),
    ("server closed the connection", 0.03),
    ("token expired", 0.02),
    ("session ended: token revoked", 0.01),
    ("session ended: identity disabled", 0.01),
)
GROUPS = ("dev", "dba", "analyst", "sre", "support", "finance")


def log(msg: str) -> None:
    print(f"[console_sessions] {msg}", file=sys.stderr, flush=True)


# -- the synthetic ledger --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Who:
    subject: str
    kind: str
    groups: tuple[str, ...]


def identities(n: int = 200) -> list[Who]:
    """``n`` identities: one in ten a service, the rest people in one or two groups."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        if i % 10 == 3:
            out.append(Who(f"svc-{i:03d}", "service", ()))
        else:
            groups = tuple(sorted(set(rng.sample(GROUPS, rng.randint(1, 2)))))
            out.append(Who(f"user-{i:03d}", "user", groups))
    return out


def pg_interior(rng: random.Random, rec: SessionRecorder, t: int, n: list[int]) -> list[Draft]:
    """1–4 statements with their result chunks (evidence_search.py's generators)."""
    out: list[Draft] = []
    for _ in range(rng.randint(1, 4)):
        t += rng.randrange(50_000_000, 2_000_000_000)
        what, sql = _statement(rng)
        out.extend(rec.command(CommandSeen("query", t, sql.encode(), sql.encode())))
        chunks = rng.randint(1, 2) if what == "select" else 1
        for j in range(chunks):
            t += rng.randrange(100_000, 3_000_000)
            n[0] += 1
            last = j == chunks - 1
            rows = rng.randrange(1, 100) if what == "select" else 0
            out.append(
                _chunk(rec, t, j + 1, rows, f"{what.upper()} {rows}" if last else None, n[0])
            )
    return out


def other_interior(rng: random.Random, rec: SessionRecorder, t: int, n: list[int]) -> list[Draft]:
    """HTTP and S3 sessions: a few chunks (their request entries are not what the list
    reads; only the entry count matters here)."""
    out = []
    for j in range(rng.randint(1, 4)):
        t += rng.randrange(10_000_000, 500_000_000)
        n[0] += 1
        out.append(_chunk(rec, t, j + 1, 1, None, n[0]))
    return out


def session(
    rng: random.Random, sid: int, who: Who, conn: str, kind: str, t: int, n: list[int]
) -> tuple[list[Draft], str | None]:
    """One session's entries, and its outcome (None: left open)."""
    base = {
        "session_id": f"s_{sid:08x}{rng.getrandbits(32):08x}",
        "connection": conn,
        "identity": {"kind": who.kind, "subject": who.subject, "groups": list(who.groups)},
        "source": {"ip": f"10.{sid % 4}.{sid % 251}.{10 + sid % 200}", "port": 40000 + sid % 20000},
    }
    rec = SessionRecorder(base, "redacted")
    client = {"application_name": "psql", "user": who.subject, "database": conn}
    if kind != "postgres":
        client = {"protocol": kind, "user_agent": "python-httpx/0.28"}
    out = [
        rec.event(t, "auth.ok", token_id=f"tok_{who.subject}", tls=True, via="token"),
        rec.event(
            t + 1_000_000,
            "session.open",
            client=client,
            tls={"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
            recording="redacted",
        ),
    ]
    inner = (pg_interior if kind == "postgres" else other_interior)(rng, rec, t + 2_000_000, n)
    out.extend(inner)
    if rng.random() < OPEN_SHARE:
        return out, None
    outcome = rng.choices([o for o, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
    kinds = Counter(d.kind for d in inner)
    stats = {"commands": kinds["command"], "chunks": kinds["chunk"], "bytes_c2s": 0,
             "bytes_s2c": 0, "rows": 0}  # fmt: skip
    end = out[-1].ts_ns + 1_000_000
    out.append(rec.event(end, "session.close", outcome=outcome, stats=stats))
    return out, outcome


@dataclass
class Built:
    entries: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    by_identity: Counter[str] = field(default_factory=Counter)
    by_connection: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


def build(url: str, password: str | None, root: Path, sessions: int, now_ns: int) -> Built:
    """Write ``sessions`` sessions, alternately on each of ``STREAMS``, each stream's in
    time order, over the last ``SPAN_S`` seconds."""
    rng = random.Random(1)
    who = identities()
    weights = [1 / (i + 1) for i in range(len(who))]  # Zipf: a few busy, a long tail
    conns = [c for c, _, _ in CONNECTIONS]
    ctype = {c: k for c, k, _ in CONNECTIONS}
    cw = [w for _, _, w in CONNECTIONS]
    signer = load_or_create_ledger_signer(root / "keys" / "ledger.ed25519", f"ledgergate/{GATEWAY}")
    writers = [
        LedgerWriter.open(
            open_store(url, password=password),
            s,
            signer,
            checkpoint_every_entries=CHECKPOINT_EVERY,
            checkpoint_every_seconds=10.0**9,  # synthetic clock: sign by entries only
        )
        for s in STREAMS
    ]
    per_stream = max(1, sessions // len(STREAMS))
    gap_ns = SPAN_S * 10**9 // per_stream  # mean time between one stream's sessions
    clock = [now_ns - SPAN_S * 10**9] * len(STREAMS)
    batches: list[list[Draft]] = [[] for _ in STREAMS]
    out = Built()
    n = [0]
    t0 = time.perf_counter()
    try:
        for sid in range(sessions):
            k = sid % len(STREAMS)
            w = rng.choices(who, weights)[0]
            conn = rng.choices(conns, cw)[0]
            start = clock[k] + int(rng.expovariate(1 / gap_ns))
            drafts, outcome = session(rng, sid, w, conn, ctype[conn], start, n)
            clock[k] = drafts[-1].ts_ns
            out.by_identity[w.subject] += 1
            out.by_connection[conn] += 1
            out.outcomes[outcome or "open"] += 1
            for d in drafts:
                out.kinds[d.kind] += 1
            batch = batches[k]
            batch.extend(drafts)
            if len(batch) >= BUILD_BATCH:
                writers[k].append(batch, batch[-1].ts_ns)
                batches[k] = []
            if sid and sid % 20_000 == 0:
                log(f"{sid:,} sessions written ({time.perf_counter() - t0:.0f} s)")
        for k, batch in enumerate(batches):
            if batch:
                writers[k].append(batch, batch[-1].ts_ns)
    finally:
        for k, wr in enumerate(writers):
            wr.close(clock[k])
    out.seconds = time.perf_counter() - t0
    out.entries = sum(out.kinds.values())
    return out


# -- the gateway -----------------------------------------------------------------------------
class Served:
    """``ledgergate serve`` on the seeded store: the API listener over TLS with the
    generated certificate, every connection declared (nothing is dialled at start)."""

    def __init__(self, root: Path, url: str | None, password: str | None) -> None:
        self.root = root
        self.config = root / "ledgergate.yaml"
        self.log = root / "gateway.log"
        self.api_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        store = f"store: {url}\nstore_password: {password}\n" if url else ""
        conns = []
        for name, kind, _ in CONNECTIONS:
            if kind == "postgres":
                conns.append(
                    f"  - {{name: {name}, type: postgres, address: '127.0.0.1:9', "
                    f"database: {name}, credentials: {{user: app, password: x}}}}"
                )
            elif kind == "http":
                conns.append(f"  - {{name: {name}, type: http, base_url: 'http://127.0.0.1:9'}}")
            else:
                conns.append(
                    f"  - {{name: {name}, type: s3, endpoint: 'http://127.0.0.1:9', "
                    "credentials: {access_key_id: k, secret_access_key: s}}"
                )
        self.config.write_text(
            f"data_dir: {root}\n"
            f"gateway_name: {GATEWAY}\n" + store + "listeners:\n"
            f"  postgres: {{address: '127.0.0.1:{free_port()}'}}\n"
            f"  http: {{address: '127.0.0.1:{free_port()}'}}\n"
            f"  api: {{address: '127.0.0.1:{self.api_port}'}}\n"
            "  drain_timeout: 0\n"
            f"roles: {{admin: {{identities: [{ADMIN}]}}}}\n"
            "connections:\n" + "\n".join(conns) + "\n"
        )

    def start(self) -> None:
        if not LEDGERGATE.exists():
            raise SystemExit(f"{LEDGERGATE} not found: run scripts/install-deps")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(LEDGERGATE), "serve", "-c", str(self.config)],
                cwd=self.root,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(self.api_port, self.proc, self.log, "ledgergate serve (API)")

    def token(self) -> str:
        r = subprocess.run(
            [
                str(LEDGERGATE),
                "token",
                "create",
                "--identity",
                ADMIN,
                "--kind",
                "user",
                "--ttl",
                "1h",
                "-c",
                str(self.config),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=self.root,
            timeout=120,
        )
        lines = r.stdout.strip().splitlines()
        if r.returncode != 0 or not lines:
            raise RuntimeError(f"ledgergate token create failed ({r.returncode}): {r.stderr}")
        return lines[-1].strip()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# -- the cases -------------------------------------------------------------------------------
@dataclass
class Case:
    key: str
    label: str
    path: str  # /api/v1/sessions or /console/sessions
    query: dict[str, str]  # the request's query string
    direct: dict[str, Any]  # page_sessions' keyword arguments
    ms_http: list[float] = field(default_factory=list)
    ms_direct: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # the gateway's CPU over the timed requests
    rows: int = 0
    rows_direct: int = 0
    kib: float = 0.0


def cases(built: Built) -> list[Case]:
    ranked = built.by_identity.most_common()
    busy, busy_n = ranked[0]
    quiet, quiet_n = ranked[-1]
    mid, mid_n = ranked[len(ranked) // 2]
    conn = "analytics"
    pg = frozenset(c for c, k, _ in CONNECTIONS if k == "postgres")
    s3 = frozenset(c for c, k, _ in CONNECTIONS if k == "s3")
    api, con = "/api/v1/sessions", "/console/sessions"
    conn_n = built.by_connection[conn]
    open_n = built.outcomes["open"]
    pg_n = sum(built.by_connection[c] for c in pg)
    s3_n = sum(built.by_connection[c] for c in s3)
    return [
        Case("first", "API first page", api, {}, {}),
        Case("deep", f"API page {DEEP_PAGE} (cursor)", api, {}, {}),
        Case("identity", f"API identity={mid} ({mid_n:,} sessions)", api,
             {"identity": mid}, {"identity": mid}),
        Case("identity-busy", f"API identity={busy} ({busy_n:,})", api,
             {"identity": busy}, {"identity": busy}),
        Case("identity-quiet", f"API identity={quiet} ({quiet_n:,})", api,
             {"identity": quiet}, {"identity": quiet}),
        Case("connection", f"API connection={conn} ({conn_n:,})", api,
             {"connection": conn}, {"connection": conn}),
        Case("protocol", f"API protocol=postgres ({pg_n:,})", api,
             {"protocol": "postgres"}, {"connections": pg}),
        Case("protocol-s3", f"API protocol=s3 ({s3_n:,})", api,
             {"protocol": "s3"}, {"connections": s3}),
        Case("outcome-open", f"API outcome=open ({open_n:,})", api,
             {"outcome": "open"}, {"outcome": "open"}),
        Case("console", "console first page", con, {}, {}),
        Case("console-identity", f"console identity={mid}", con,
             {"identity": mid}, {"identity": mid}),
    ]  # fmt: skip


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


@dataclass
class Http:
    client: httpx.Client
    token: str

    def get(self, case: Case) -> httpx.Response:
        headers = (
            {"Cookie": f"{COOKIE}={self.token}"}
            if case.path.startswith("/console")
            else {"Authorization": f"Bearer {self.token}"}
        )
        r = self.client.get(
            case.path + ("?" + urlencode(case.query) if case.query else ""), headers=headers
        )
        if r.status_code != 200:
            raise RuntimeError(f"{case.key}: HTTP {r.status_code}: {r.text[:500]}")
        return r


def count_rows(case: Case, r: httpx.Response) -> int:
    if case.path.startswith("/api"):
        return len(r.json()["sessions"])
    return r.text.count("/console/sessions/s_")  # each row links to its session


def deep_cursor(http: Http, direct: Callable[..., SessionPage]) -> tuple[str, float]:
    """The cursor of page ``DEEP_PAGE``, by following ``next`` from the first page, over
    HTTP and directly (the same, or the bench is wrong); and the walk's time over HTTP."""
    case = Case("walk", "", "/api/v1/sessions", {}, {})
    t0 = time.perf_counter()
    for _ in range(DEEP_PAGE - 1):
        nxt = http.get(case).json()["next"]
        if nxt is None:
            raise SystemExit(f"fewer than {DEEP_PAGE} pages: use more --sessions")
        case.query = {"cursor": nxt}
    walk = time.perf_counter() - t0
    cursor: str | None = None
    for _ in range(DEEP_PAGE - 1):
        cursor = direct(cursor=cursor).next_cursor
    if cursor != case.query["cursor"]:
        raise RuntimeError(f"page {DEEP_PAGE}: the API says {case.query}, page_sessions {cursor}")
    return cursor, walk


def measure(engine: str, served: Served, reps: int, built: Built, profile: bool) -> dict[str, Any]:
    token = served.token()
    ca = ssl.create_default_context(cafile=str(served.root / "tls" / "server.crt"))
    store = load_settings(served.config).open_store()
    try:
        with httpx.Client(
            base_url=f"https://localhost:{served.api_port}", verify=ca, timeout=120
        ) as client:
            http = Http(client, token)

            def direct(**kw: Any) -> SessionPage:
                return page_sessions(store, limit=PAGE, **kw)

            todo = cases(built)
            cursor, walk_s = deep_cursor(http, direct)
            for c in todo:
                if c.key == "deep":
                    c.query, c.direct = {"cursor": cursor}, {"cursor": cursor}
                r = http.get(c)  # warm: the first request of each, untimed
                c.rows, c.kib = count_rows(c, r), len(r.content) / 1024
                c.rows_direct = len(direct(**c.direct).sessions)
            assert served.proc is not None
            pid = served.proc.pid
            for rep in range(reps):
                for c in todo:
                    cpu0 = proc_stats(pid).cpu_s
                    t0 = time.perf_counter()
                    r = http.get(c)
                    c.ms_http.append((time.perf_counter() - t0) * 1e3)
                    c.cpu_s += proc_stats(pid).cpu_s - cpu0
                    t0 = time.perf_counter()
                    direct(**c.direct)
                    c.ms_direct.append((time.perf_counter() - t0) * 1e3)
                if rep == 0 or (rep + 1) % 5 == 0:
                    log(f"{engine}: rep {rep + 1}/{reps}")
            profiles: dict[str, str] = {}
            if profile:
                for c in todo:
                    if statistics.median(c.ms_http) > PROFILE_OVER_MS:
                        profiles[c.key] = profiled(lambda c=c: direct(**c.direct))
    finally:
        store.close()
    return {"cases": todo, "walk_s": walk_s, "profiles": profiles}


def profiled(fn: Callable[[], object]) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("cumulative").print_stats(14)
    st.sort_stats("tottime").print_stats(8)
    keep = (line for line in out.getvalue().splitlines() if line.strip())
    return "\n".join(line for line in keep if not line.lstrip().startswith(("Ordered", "List")))


# -- the report ------------------------------------------------------------------------------
def verdict(c: Case) -> str:
    p95, top = pct(c.ms_http, 0.95), max(c.ms_http)
    if top < TARGET_MS:
        return f"under 1 s (max {top:.0f} ms, {TARGET_MS / top:.1f}× headroom)"
    if p95 < TARGET_MS:
        return f"under 1 s at p95 ({p95:.0f} ms) but not always (max {top:.0f} ms)"
    return f"OVER 1 s (p95 {p95:.0f} ms)"


def table(engine: str, res: dict[str, Any], built: Built, reps: int) -> str:
    n = sum(built.by_identity.values())
    lines = [
        f"\n{engine}: {n:,} sessions ({built.outcomes['open']:,} left open), "
        f"{len(built.by_identity)} identities, {len(built.by_connection)} connections, "
        f"{built.entries:,} entries on {len(STREAMS)} streams (written in {built.seconds:.0f} s, "
        f"{built.entries / built.seconds:,.0f} entries/s); {reps} reps, ms",
        "",
        "| case | rows | KiB | HTTP p50 | p95 | max | page_sessions p50 | p95 | max "
        "| HTTP − direct p50 | gateway CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["cases"]:
        h50, d50 = statistics.median(c.ms_http), statistics.median(c.ms_direct)
        rows = f"{c.rows}" if c.rows == c.rows_direct else f"{c.rows} ({c.rows_direct} direct)"
        lines.append(
            f"| {c.label} | {rows} | {c.kib:.0f} | {h50:.1f} | {pct(c.ms_http, 0.95):.1f} "
            f"| {max(c.ms_http):.1f} | {d50:.1f} | {pct(c.ms_direct, 0.95):.1f} "
            f"| {max(c.ms_direct):.1f} | {h50 - d50:+.1f} | {c.cpu_s / reps * 1e3:.0f} |"
        )
    lines.append(
        f"\nwalking pages 1–{DEEP_PAGE - 1} by `next` over HTTP to find page {DEEP_PAGE}'s "
        f"cursor: {res['walk_s'] * 1e3:.0f} ms in all"
    )
    lines.append(f"\nagainst the {TARGET_MS / 1000:.0f} s target (HTTP, end to end):")
    for c in res["cases"]:
        lines.append(f"  {c.label}: {verdict(c)}")
    for key, text in res["profiles"].items():
        lines.append(f"\ncProfile of page_sessions for {key} (one call):\n{text}")
    return "\n".join(lines)


def as_json(engine: str, res: dict[str, Any], built: Built) -> dict[str, Any]:
    return {
        "engine": engine,
        "sessions": sum(built.by_identity.values()),
        "entries": built.entries,
        "build_s": built.seconds,
        "kinds": dict(built.kinds),
        "outcomes": dict(built.outcomes),
        "walk_s": res["walk_s"],
        "cases": [
            {"key": c.key, "label": c.label, "rows": c.rows, "kib": c.kib,
             "ms_http": c.ms_http, "ms_direct": c.ms_direct, "cpu_s": c.cpu_s}
            for c in res["cases"]
        ],
    }  # fmt: skip


# -- main ------------------------------------------------------------------------------------
@contextlib.contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the gateway, PostgreSQL and files go."""

    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_engine(engine: str, a: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    tmp = Path(tempfile.mkdtemp(prefix=f"lg-bench-sessions-{engine}-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    root = tmp / "data"
    root.mkdir()
    url: str | None = None
    password: str | None = None
    if engine == "sqlite":
        seed_url = f"sqlite://{root / 'ledgergate.db'}"
    elif engine == "postgresql":
        pg = PgCluster(tls=False, settings={"log_statement": "none", "shared_buffers": "256MB"})
        stack.callback(pg.stop)
        pg.start()
        pg.psql("CREATE DATABASE sessions")
        url = seed_url = f"postgresql://postgres@{pg.host}:{pg.port}/sessions?sslmode=disable"
        password = pg.password
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    log(f"{engine}: writing {a.sessions:,} sessions into {root}")
    built = build(seed_url, password, root, a.sessions, time.time_ns() - 60 * 10**9)
    log(f"{engine}: {built.entries:,} entries in {built.seconds:.0f} s")
    stats = "no planner statistics"
    if engine == "postgresql":
        pg.psql("VACUUM ANALYZE entries", dbname="sessions")
        stats = "after VACUUM ANALYZE"
    elif a.analyze:
        with contextlib.closing(sqlite3.connect(root / "ledgergate.db")) as db:
            db.execute("ANALYZE")
        stats = "after ANALYZE (--analyze)"
    served = Served(root, url, password)
    stack.callback(served.stop)
    t0 = time.perf_counter()
    served.start()
    log(f"{engine}: gateway up in {time.perf_counter() - t0:.1f} s")
    res = measure(engine, served, a.reps, built, a.profile)
    served.stop()
    a.results.append(as_json(engine, res, built))
    return table(f"{engine} ({stats})", res, built, a.reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--engines", default="sqlite", help="sqlite,postgresql")
    ap.add_argument(
        "--analyze", action="store_true", help="run ANALYZE on the SQLite store before timing"
    )
    ap.add_argument(
        "--profile", action="store_true", help=f"cProfile cases over {PROFILE_OVER_MS:.0f} ms"
    )
    ap.add_argument("--json", nargs="?", const="-", help="write the results as JSON (- : stdout)")
    a = ap.parse_args()
    a.results = []
    started = time.perf_counter()
    reports = []
    with stopped_on_sigterm(), contextlib.ExitStack() as stack:
        for engine in (e for e in a.engines.split(",") if e):
            reports.append(run_engine(engine, a, stack))
    doc = {
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": " ".join(["bench/console_sessions.py", *sys.argv[1:]]),
        "elapsed_s": time.perf_counter() - started,
        "engines": a.results,
    }
    if a.json is not None:
        text = json.dumps(doc, indent=2)
        if a.json == "-":
            print(text)
            return
        Path(a.json).write_text(text)
    print(
        f"python {doc['python']}, {doc['machine']}; page size {PAGE}; whole run "
        f"{doc['elapsed_s'] / 60:.1f} min; target: the sessions list in under "
        f"{TARGET_MS / 1000:.0f} s"
    )
    for text in reports:
        print(text)


if __name__ == "__main__":
    main()
