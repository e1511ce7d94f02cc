"""Export, verify and search a ledger of a million entries: time, memory, latency.

Entries/s and peak RSS of each operation, and search latency, at two ledger sizes in
one run.

    .venv/bin/python bench/evidence_search.py [--entries 1000000] [--smaller 4] [--reps 3]
        [--engines sqlite,postgresql] [--workdir /tmp/lg-bench-evidence] [--json [FILE]]

Builds (SQLite: once, then reused from ``--workdir``) a ledger of ``--entries`` entries as
a gateway writes them, and one ``--smaller`` times smaller: sessions of several
identities on several PostgreSQL connections (``auth.ok``, ``session.open``, redacted
statements over many tables, their result chunks, ~80 % of all entries, some
``decision.block`` and ``mask`` entries, ``session.close``), a signed checkpoint every
1000 entries, and a few admin changes on the CLI's stream. With ``postgresql`` the same
ledgers are written into a throwaway PostgreSQL store (rebuilt every run).

Every operation runs in its own child process under GNU time, so the peak RSS (``%M``)
is that operation's, and its wall time includes the interpreter's start (measured apart:
``ledgergate --help``, and ``python3`` importing what verify.py imports): ``audit
verify``, ``audit export --format jsonl``, ``audit verify --bundle`` of that export,
``evidence export``, ``evidence verify``, the bundle's own ``python3 verify.py`` (on the
interpreter ``python3`` names, not the project's), the first ``search`` (which indexes
every entry: the catch-up, from an empty index), then 50 searches of rare and common
words, table names and quoted phrases, with and without ``--identity``, ``--connection``
or ``--kind`` (in one process, the store opened once, as the API serves them; p50/p95),
and one search through the CLI. Within each repetition every operation runs on both
sizes back to back; the table gives medians, and the ratio of the larger ledger's time
to the smaller's (less the start, within each repetition; linear = ``--smaller``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.pgcluster import PgCluster  # noqa: E402
from tests.storedb import StoreDb  # noqa: E402

from ledgergate.core.ledger.entry import Draft  # noqa: E402
from ledgergate.core.recording import SessionRecorder  # noqa: E402
from ledgergate.services.config import load_settings  # noqa: E402
from ledgergate.services.keys import load_or_create_ledger_signer  # noqa: E402
from ledgergate.services.ledger import LedgerWriter  # noqa: E402
from ledgergate.services.search import refresh, search  # noqa: E402
from ledgergate.store import open_store  # noqa: E402
from ledgergate.wire.pg.events import CommandSeen  # noqa: E402

LEDGERGATE = REPO / ".venv" / "bin" / "ledgergate"
TIME = "/usr/bin/time"  # GNU time (Debian package `time`): each child's peak RSS
PYTHON = sys.executable
# The bundle's verify.py runs on a plain Python with `cryptography`, not the project's.
PYTHON3 = PYTHON  # set by main() to what `python3` runs
VERIFY_IMPORTS = "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey"
GATEWAY = "bench"
STREAM = f"gateway@{GATEWAY}"
CHECKPOINT_EVERY = 1000  # the gateway's default (ledger.checkpoint_every_entries)
# Drafts per append while building: a gateway's group commit holds a few to a few
# hundred entries; checkpoints land within this many entries of every 1000th.
BUILD_BATCH = 100
T0 = 1_790_000_000 * 10**9  # synthetic wall clock (ns)
# Bump when the generated ledger changes, so a cached one is built again.
GENERATOR = 1

IDENTITIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("alice", "user", ("dba",)),
    ("bob", "user", ("dev",)),
    ("carol", "user", ("dev",)),
    ("dave", "user", ("analyst",)),
    ("erin", "user", ("analyst",)),
    ("frank", "user", ("dev",)),
    ("grace", "user", ("sre",)),
    ("heidi", "user", ("support",)),
    ("ivan", "user", ("contractor",)),
    ("etl-nightly", "service", ()),
    ("billing-svc", "service", ()),
    ("reporting-svc", "service", ()),
)
CONNECTIONS = ("prod-orders", "prod-billing", "analytics", "staging", "crm-replica")
MASKED_CONNECTIONS = ("prod-billing", "crm-replica")
FAMILIES = ("orders", "invoices", "customers", "shipments", "payments", "products", "refunds")
SUFFIXES = 40  # orders_0 .. orders_39, used unevenly
# Tables a statement names once in a few thousand: the "rare word" queries.
RARE_TABLES = (
    "legal_holds",
    "gdpr_erasures",
    "chargeback_disputes",
    "payroll_adjustments",
    "vendor_bank_accounts",
    "fraud_signals",
    "tax_exemptions",
    "escrow_releases",
)
BLOCK_RULES = (
    ("no-delete-without-where", "DELETE without WHERE is not allowed on this connection"),
    ("no-ddl-in-prod", "DDL is not allowed on production connections"),
    ("no-truncate", "TRUNCATE is not allowed"),
)


# -- the synthetic ledger --------------------------------------------------------------------
def _table(rng: random.Random) -> str:
    if rng.random() < 0.002:
        return rng.choice(RARE_TABLES)
    n = min(int(rng.paretovariate(0.8)) - 1, SUFFIXES - 1)
    return f"{rng.choice(FAMILIES)}_{n}"


def _statement(rng: random.Random) -> tuple[str, str]:
    """(kind, SQL with literals; the recorder redacts them as the gateway does)."""
    t = _table(rng)
    r = rng.random()
    if r < 0.60:
        return "select", rng.choice(
            (
                f"SELECT id, status, total FROM {t} WHERE id = {rng.randrange(10**6)}",
                f"SELECT * FROM {t} WHERE customer_id = {rng.randrange(10**5)} LIMIT 50",
                f"select count(*) from {t} where created_at > '2026-0{rng.randrange(1, 10)}-01'",
                f"SELECT o.id, c.email FROM {t} o JOIN customers_{rng.randrange(SUFFIXES)} c "
                f"ON c.id = o.customer_id WHERE o.status = 'open'",
            )
        )
    if r < 0.72:
        return (
            "insert",
            f"INSERT INTO {t} (id, status, note) VALUES ({rng.randrange(10**7)}, 'new', 'x')",
        )
    if r < 0.84:
        return "update", f"UPDATE {t} SET status = 'paid' WHERE id = {rng.randrange(10**6)}"
    if r < 0.90:
        return "delete", f"DELETE FROM {t} WHERE created_at < '2025-01-01' AND status = 'void'"
    return "tx", rng.choice(("BEGIN", "COMMIT", "ROLLBACK"))


def _chunk(rec: SessionRecorder, ts: int, seq: int, rows: int, tag: str | None, n: int) -> Draft:
    """A result chunk entry in the shape ``SessionRecorder.chunk`` gives (digests of a
    counter rather than of 8 KiB of data, to build a million of them quickly)."""
    digest = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()
    chunk = {"seq": seq, "size": 8192 if rows > 1 else 64 + rows * 40, "sha256_in": digest,
             "sha256_out": digest, "rows": rows}  # fmt: skip
    fields = {**rec.base, "direction": "s2c", "chunk": chunk, "outcome": "forwarded"}
    if tag is not None:
        fields["tags"] = [tag]
    return Draft(ts, "chunk", fields, (), True)


def session_drafts(rng: random.Random, sid: int, t: int, counter: list[int]) -> list[Draft]:
    """One session's entries, as the PostgreSQL relay records them (``redacted``)."""
    subject, kind, groups = rng.choice(IDENTITIES)
    conn = rng.choice(CONNECTIONS)
    session_id = f"s_{sid:08x}{rng.getrandbits(32):08x}"
    base = {
        "session_id": session_id,
        "connection": conn,
        "identity": {"kind": kind, "subject": subject, "groups": list(groups)},
        "source": {"ip": f"10.0.{sid % 7}.{10 + sid % 200}", "port": 40000 + sid % 20000},
    }
    rec = SessionRecorder(base, "redacted")
    out = [
        rec.event(t, "auth.ok", token_id=f"tok_{subject}", tls=True, via="token", grant="g1"),
        rec.event(
            t + 1_000_000,
            "session.open",
            client={"application_name": "psql", "user": subject, "database": conn},
            tls={"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
            backend={"pid": 1000 + sid % 30000, "tls": False},
            recording="redacted",
        ),
    ]
    t += 2_000_000
    commands = rng.randint(2, 60) if kind == "service" else rng.randint(1, 30)
    nchunks = rows_total = 0
    for _ in range(commands):
        t += rng.randrange(50_000_000, 2_000_000_000)
        what, sql = _statement(rng)
        if what == "delete" and rng.random() < 0.1:
            sql = sql.split(" WHERE ")[0]
        raw = sql.encode()
        if (what == "delete" and " WHERE " not in sql) or rng.random() < 0.005:
            rule, message = BLOCK_RULES[0] if what == "delete" else rng.choice(BLOCK_RULES[1:])
            out.append(rec.blocked(CommandSeen("query", t, raw, raw, blocked=(rule, message))))
            continue
        out.extend(rec.command(CommandSeen("query", t, raw, raw)))
        if what == "select":
            chunks = 1 + min(int(rng.expovariate(1 / 7.5)), 200)
            for j in range(chunks):
                t += rng.randrange(100_000, 3_000_000)
                rows = 100 if j < chunks - 1 else rng.randrange(1, 100)
                tag = f"SELECT {100 * (chunks - 1) + rows}" if j == chunks - 1 else None
                counter[0] += 1
                out.append(_chunk(rec, t, j + 1, rows, tag, counter[0]))
                rows_total += rows
            nchunks += chunks
            if conn in MASKED_CONNECTIONS and rng.random() < 0.3:
                masked = rng.randrange(1, 100 * chunks)
                items = [{"field": "email", "source": "customers.email", "detector_or_rule":
                          "email", "rule": "pii-email", "count": masked}]  # fmt: skip
                out.append(rec.event(t, "mask", masking=items, rows=masked))
        else:
            t += rng.randrange(100_000, 3_000_000)
            counter[0] += 1
            tag = {"insert": "INSERT 0 1", "update": "UPDATE 1", "delete": "DELETE 3"}.get(
                what, sql
            )
            out.append(_chunk(rec, t, 1, 0, tag, counter[0]))
            nchunks += 1
    t += 1_000_000
    stats = {"commands": commands, "chunks": nchunks, "bytes_c2s": 0, "bytes_s2c": 0,
             "rows": rows_total}  # fmt: skip
    out.append(rec.event(t, "session.close", outcome="client closed", stats=stats))
    return out


def gateway_drafts(n: int, seed: int = 1) -> Iterator[Draft]:
    """Exactly ``n`` entries of the gateway's stream, session after session (the last
    one cut short), a few seconds to minutes between sessions."""
    rng = random.Random(seed)
    t, sid, made, counter = T0, 0, 0, [0]
    while made < n:
        sid += 1
        t += int(rng.expovariate(1 / 40) * 10**9) + 10**9
        drafts = session_drafts(rng, sid, t, counter)
        t = drafts[-1].ts_ns
        yield from drafts[: n - made]
        made += len(drafts)


def cli_drafts(t: int) -> list[Draft]:
    """Admin changes on the CLI's stream: tokens and identities created."""
    out = []
    for i, (subject, kind, groups) in enumerate(IDENTITIES):
        ident = {"kind": kind, "subject": subject, "groups": list(groups)}
        out.append(Draft(t + i * 10**9, "identity.created", {"identity": ident, "by": "cli:root"}))
        expires = t + 90 * 86400 * 10**9
        body = {"token_id": f"tok_{subject}", "identity": ident, "expires_ns": expires,
                "purpose": "bench", "by": "cli:root"}  # fmt: skip
        out.append(Draft(t + i * 10**9 + 1, "token.created", body))
    return out


@dataclass
class Ledger:
    """One ledger to measure: its data directory (config, keys) and store."""

    engine: str
    entries: int  # the gateway stream's; ``total`` adds the CLI stream
    root: Path
    url: str
    password: str | None
    total: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    build_s: float | None = None  # None: reused from an earlier run

    @property
    def config(self) -> Path:
        return self.root / "ledgergate.yaml"

    @property
    def vkey(self) -> str:
        return (self.root / "keys" / "ledger.ed25519.pub").read_text().strip()

    def write_config(self) -> None:
        text = f"data_dir: .\ngateway_name: {GATEWAY}\n"
        if self.engine == "postgresql":
            text += f"store: {self.url}\nstore_password: {self.password}\n"
        self.config.write_text(text)


def build(led: Ledger) -> None:
    """Write the ledger into its (empty) store."""
    signer = load_or_create_ledger_signer(
        led.root / "keys" / "ledger.ed25519", f"ledgergate/{GATEWAY}"
    )
    kinds: Counter[str] = Counter()
    t0 = time.perf_counter()
    w = LedgerWriter.open(
        open_store(led.url, password=led.password),
        STREAM,
        signer,
        checkpoint_every_entries=CHECKPOINT_EVERY,
        checkpoint_every_seconds=10.0**9,  # synthetic clock: sign by entries only
    )
    batch: list[Draft] = []
    last = T0
    for d in gateway_drafts(led.entries):
        kinds[d.kind] += 1
        batch.append(d)
        if len(batch) == BUILD_BATCH:
            w.append(batch, batch[-1].ts_ns)
            last = batch[-1].ts_ns
            batch = []
    if batch:
        w.append(batch, batch[-1].ts_ns)
        last = batch[-1].ts_ns
    w.close(last)
    cli = LedgerWriter.open(
        open_store(led.url, password=led.password), f"cli@{GATEWAY}", signer, shared=True
    )
    admin = cli_drafts(T0)
    for d in admin:
        kinds[d.kind] += 1
        cli.append([d], d.ts_ns)
    cli.close(admin[-1].ts_ns)
    led.build_s = time.perf_counter() - t0
    led.kinds = dict(kinds)
    led.total = sum(kinds.values())


def sqlite_ledger(workdir: Path, n: int) -> Ledger:
    """The SQLite ledger of ``n`` entries under ``workdir``, built unless it is there."""
    root = workdir / f"sqlite-{n}"
    led = Ledger("sqlite", n, root, f"sqlite://{root / 'ledgergate.db'}", None)
    marker = root / "built.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads(marker.read_text())
        if meta["generator"] == GENERATOR and meta["entries"] == n:
            led.total, led.kinds = meta["total"], meta["kinds"]
            led.write_config()
            return led
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    led.write_config()
    log(f"building the SQLite ledger of {n:,} entries in {root}")
    build(led)
    meta = {"generator": GENERATOR, "entries": n, "total": led.total, "kinds": led.kinds,
            "build_s": led.build_s}  # fmt: skip
    marker.write_text(json.dumps(meta, indent=2))
    log(f"built in {led.build_s:.0f} s ({n / (led.build_s or 1):,.0f} entries/s)")
    return led


def postgresql_ledger(workdir: Path, n: int, host: str, port: int, password: str) -> Ledger:
    root = workdir / f"postgresql-{n}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    url = f"postgresql://postgres@{host}:{port}/ledger_{n}?sslmode=disable"
    led = Ledger("postgresql", n, root, url, password)
    led.write_config()
    log(f"building the PostgreSQL ledger of {n:,} entries")
    build(led)
    log(f"built in {led.build_s:.0f} s ({n / (led.build_s or 1):,.0f} entries/s)")
    return led


def reset_search_index(led: Ledger) -> None:
    """Empty the search index, so the next search catches up from the first entry."""
    with StoreDb(led.url, led.password) as db:
        if led.engine == "sqlite":
            db.execute("DELETE FROM search_docs")
            db.execute("INSERT INTO search_fts(search_fts) VALUES ('delete-all')")
            db.execute("DELETE FROM search_progress")
        else:
            db.execute("TRUNCATE search_docs, search_progress")
        db.commit()


# -- queries ---------------------------------------------------------------------------------
def queries() -> list[dict[str, Any]]:
    """The searches timed once the index is up to date: (class, query, filters)."""
    q: list[dict[str, Any]] = []

    def add(cls: str, text: str, **filters: Any) -> None:
        q.append({"class": cls, "query": text, **filters})

    for t in RARE_TABLES:
        add("rare word", t)
    for t in ("orders_3", "invoices_12", "customers_7", "payments_25", "refunds_38",
              "shipments_0", "products_9", "invoices_0"):  # fmt: skip
        add("table name", t)
    for w in ("select", "from", "where", "status", "update", "delete", "insert", "count"):
        add("common word", w)
    for p in ('"delete from invoices_3"', '"select id, status, total from orders_1"',
              '"where id"', '"insert into products_5"', '"set status" paid',
              '"group by" region', '"join customers_4"', '"legal_holds where"'):  # fmt: skip
        add("quoted phrase", p)
    for who, text in (("alice", "select"), ("bob", "delete"), ("etl-nightly", "insert"),
                      ("dave", "orders_3"), ("heidi", "fraud_signals"), ("ivan", "customers"),
                      ("grace", '"where id"'), ("carol", '"delete from invoices_3"'),
                      ("billing-svc", "payments_2"), ("erin", "update")):  # fmt: skip
        add("with --identity", text, identity=who)
    for conn, text in (("prod-billing", "invoices"), ("analytics", "count"),
                       ("staging", "delete"), ("crm-replica", "customers_0")):  # fmt: skip
        add("with --connection", text, connection=conn)
    add("rule name", "no-delete-without-where")
    add("rule name", "no ddl in prod")
    add("with --kind", "delete", kinds=["decision.block"])
    add("with --kind", "select", kinds=["command"])
    return q


def run_queries(config: Path, qs: list[dict[str, Any]]) -> dict[str, Any]:
    """In a child: time each query on one open store, as the API serves searches."""
    store = load_settings(config).open_store()
    t0 = time.perf_counter()
    seen = refresh(store)  # up to date already: what each search does first
    refresh_s = time.perf_counter() - t0
    search(store, "warmup")
    out = []
    for q in qs:
        t0 = time.perf_counter()
        hits = search(
            store,
            q["query"],
            identity=q.get("identity"),
            connection=q.get("connection"),
            kinds=q.get("kinds", ()),
        )
        out.append({**q, "ms": (time.perf_counter() - t0) * 1e3, "hits": len(hits)})
    store.close()
    return {"refresh_s": refresh_s, "refresh_seen": seen, "queries": out}


# -- children --------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    rss_mib: float
    stdout: str


def log(msg: str) -> None:
    print(f"[evidence_search] {msg}", file=sys.stderr, flush=True)


def child(cmd: list[str], cwd: Path, out: Path) -> Run:
    """Run ``cmd`` to its end: its wall time and its own peak RSS. The RSS comes from GNU
    time (``%M``: wait4's ru_maxrss of the child it forks): a child started from this
    process directly would report at least this process's own RSS, which Linux keeps
    as the child's high-water mark across its exec."""
    rss = out.with_suffix(".rss")
    err = out.with_suffix(".err")
    with out.open("wb") as so, err.open("wb") as se:
        t0 = time.perf_counter()
        code = subprocess.call(
            [TIME, "-f", "%M", "-o", str(rss), *cmd], cwd=cwd, stdout=so, stderr=se
        )
        dt = time.perf_counter() - t0
    if code != 0:
        tail = err.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{tail}")
    kib = int(rss.read_text().split()[-1])
    return Run(dt, kib / 1024, out.read_text(errors="replace"))


@dataclass
class Op:
    key: str
    label: str


OPS = (
    Op("cli-start", "`ledgergate --help` (interpreter start and imports)"),
    Op("py3-start", "`python3` start, importing what verify.py imports"),
    Op("audit-verify", "`audit verify`"),
    Op("audit-export", "`audit export --format jsonl`"),
    Op("bundle-verify", "`audit verify --bundle` (that export)"),
    Op("evidence-export", "`evidence export`"),
    Op("evidence-verify", "`evidence verify`"),
    Op("verify-py", "`python3 verify.py` (from the bundle)"),
    Op("search-catchup", "`search` first call: index catch-up from empty"),
    Op("search-queries", "`search` once indexed, in one process (p50 / p95)"),
    Op("search-cli", "`search orders_3` through the CLI (process wall)"),
)


def measure(op: str, led: Ledger, out: Path, qfile: Path) -> dict[str, Any]:
    """One operation on one ledger in a child process."""
    lg, cfg = str(LEDGERGATE), str(led.config)
    jsonl, zpath = out / "export.jsonl", out / "evidence.zip"
    res: dict[str, Any] = {}
    if op == "cli-start":
        r = child([lg, "--help"], out, out / "start.out")
    elif op == "py3-start":
        imports = "import argparse, base64, hashlib, json, zipfile; " + VERIFY_IMPORTS
        r = child([PYTHON3, "-c", imports], out, out / "py3.out")
    elif op == "audit-verify":
        r = child([lg, "audit", "verify", "-c", cfg, "--json"], out, out / "verify.out")
        rep = json.loads(r.stdout)
        assert rep["ok"], rep
        res["entries"] = sum(s["entries"] for s in rep["streams"])
    elif op == "audit-export":
        r = child([lg, "audit", "export", "-c", cfg, "--format", "jsonl", "-o", str(jsonl)],
                  out, out / "export.out")  # fmt: skip
        res["output_mb"] = jsonl.stat().st_size / 1e6
    elif op == "bundle-verify":
        r = child([lg, "audit", "verify", "--bundle", str(jsonl), "--key", led.vkey, "--json"],
                  out, out / "bverify.out")  # fmt: skip
        assert json.loads(r.stdout)["ok"]
    elif op == "evidence-export":
        r = child([lg, "evidence", "export", "-c", cfg, "-o", str(zpath), "--quiet"],
                  out, out / "evidence.out")  # fmt: skip
        res["output_mb"] = zpath.stat().st_size / 1e6
        with zipfile.ZipFile(zpath) as zf:
            (out / "verify.py").write_bytes(zf.read("verify.py"))
    elif op == "evidence-verify":
        r = child([lg, "evidence", "verify", str(zpath), "--key", led.vkey, "--json"],
                  out, out / "everify.out")  # fmt: skip
        rep = json.loads(r.stdout)
        assert rep["ok"], rep["problems"][:5]
        res["records"] = rep["records"]
    elif op == "verify-py":
        r = child([PYTHON3, str(out / "verify.py"), str(zpath), "--key", led.vkey, "--json"],
                  out, out / "verifypy.out")  # fmt: skip
        assert json.loads(r.stdout)["ok"]
    elif op == "search-catchup":
        reset_search_index(led)
        r = child([lg, "search", "-c", cfg, "select", "--json"], out, out / "catchup.out")
        res["hits"] = len(json.loads(r.stdout))
    elif op == "search-queries":
        r = child([PYTHON, __file__, "--child-queries", cfg, str(qfile)], out, out / "q.out")
        doc = json.loads(r.stdout)
        ms = [q["ms"] for q in doc["queries"]]
        res.update(doc)
        res["p50_ms"] = statistics.median(ms)
        res["p95_ms"] = statistics.quantiles(ms, n=20)[-1] if len(ms) > 1 else ms[0]
    elif op == "search-cli":
        r = child([lg, "search", "-c", cfg, "orders_3", "--json"], out, out / "scli.out")
    else:
        raise ValueError(op)
    res.update(seconds=r.seconds, rss_mib=r.rss_mib)
    return res


# -- the report ------------------------------------------------------------------------------
def _cell(op: str, runs: list[dict[str, Any]], n: int) -> tuple[str, str, str]:
    """(time, rate, peak RSS) cells: medians over the repetitions."""
    s = statistics.median(r["seconds"] for r in runs)
    rss = statistics.median(r["rss_mib"] for r in runs)
    if op == "search-queries":
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p95 = statistics.median(r["p95_ms"] for r in runs)
        return f"{p50:.1f} / {p95:.1f} ms", "", f"{rss:.0f}"
    rate = "" if op in ("cli-start", "py3-start", "search-cli") else f"{n / s:,.0f}"
    return f"{s:.1f} s" if s >= 10 else f"{s:.2f} s", rate, f"{rss:.0f}"


def _ratio(op: str, rb: list[dict[str, Any]], rs: list[dict[str, Any]], per: Any) -> float:
    """Median over the repetitions of the larger ledger's time over the smaller's, less
    the interpreter's start measured in the same repetition (p50 for the searches)."""
    if op == "search-queries":
        return statistics.median(b["p50_ms"] / s["p50_ms"] for b, s in zip(rb, rs, strict=True))
    start = "py3-start" if op == "verify-py" else "cli-start"
    big, small = (per[k]["ops"].get(start) for k in per)
    if op in ("cli-start", "py3-start", "search-cli") or not big or not small:
        return statistics.median(b["seconds"] / s["seconds"] for b, s in zip(rb, rs, strict=True))
    return statistics.median(
        (b["seconds"] - b0["seconds"]) / (s["seconds"] - s0["seconds"])
        for b, s, b0, s0 in zip(rb, rs, big, small, strict=True)
    )


def table(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    big, small = sizes
    lines = []
    for engine, per in result["engines"].items():
        nb, ns = (per[str(s)]["total"] for s in sizes)
        lines.append(f"\n{engine}: {nb:,} and {ns:,} entries\n")
        lines.append(
            f"| operation | {big:,}: time | entries/s | peak RSS MiB | {small:,}: time "
            f"| entries/s | peak RSS MiB | time × for {big // small}× the entries, net of "
            "start | RSS growth |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for op in OPS:
            rb, rs = per[str(big)]["ops"].get(op.key), per[str(small)]["ops"].get(op.key)
            if not rb or not rs:
                continue
            cb, cs = _cell(op.key, rb, nb), _cell(op.key, rs, ns)
            ratio = _ratio(op.key, rb, rs, per)
            grow = statistics.median(r["rss_mib"] for r in rb) - statistics.median(
                r["rss_mib"] for r in rs
            )
            lines.append(
                f"| {op.label} | {cb[0]} | {cb[1]} | {cb[2]} | {cs[0]} | {cs[1]} | {cs[2]} "
                f"| {ratio:.2f} | {grow:+.0f} MiB |"
            )
    return "\n".join(lines)


def query_table(result: dict[str, Any]) -> str:
    """Searches by class of query at both sizes (every repetition's searches pooled)."""
    big, small = (str(n) for n in result["sizes"])
    lines = []
    for engine, per in result["engines"].items():
        if not per[big]["ops"].get("search-queries") or not per[small]["ops"].get("search-queries"):
            continue
        by: dict[str, dict[str, list[float]]] = {}
        hits: dict[str, list[int]] = {}
        for size in (big, small):
            for r in per[size]["ops"]["search-queries"]:
                for q in r["queries"]:
                    by.setdefault(q["class"], {big: [], small: []})[size].append(q["ms"])
                    if size == big:
                        hits.setdefault(q["class"], []).append(q["hits"])
        nb, ns = per[big]["total"], per[small]["total"]
        lines.append(f"\n{engine}: searches by class of query")
        lines.append(
            f"| query class | searches | p50 ms, {nb:,} | max ms, {nb:,} | p50 ms, {ns:,} "
            f"| hits at {nb:,} (min–max, limit 100) |"
        )
        lines.append("|---|---|---|---|---|---|")
        reps = len(per[big]["ops"]["search-queries"])
        for cls, ms in by.items():
            lines.append(
                f"| {cls} | {len(ms[big]) // reps} | {statistics.median(ms[big]):.1f} "
                f"| {max(ms[big]):.1f} | {statistics.median(ms[small]):.1f} "
                f"| {min(hits[cls])}–{max(hits[cls])} |"
            )
        refresh = [
            statistics.median(r["refresh_s"] * 1e3 for r in per[n]["ops"]["search-queries"])
            for n in (big, small)
        ]
        lines.append(
            f"\nthe refresh every search starts with, nothing to index: {refresh[0]:.1f} ms "
            f"at {nb:,} entries, {refresh[1]:.1f} ms at {ns:,}"
        )
    return "\n".join(lines)


def outputs(result: dict[str, Any]) -> str:
    lines = []
    for engine, per in result["engines"].items():
        for d in per.values():
            o = d["ops"]
            parts = [f"{engine} {d['total']:,} entries:"]
            if d.get("build_s"):
                parts.append(f"built in {d['build_s']:.0f} s;")
            if o.get("audit-export"):
                parts.append(f"JSONL export {o['audit-export'][-1]['output_mb']:,.0f} MB;")
            if o.get("evidence-export"):
                parts.append(f"evidence bundle {o['evidence-export'][-1]['output_mb']:,.0f} MB")
            if o.get("evidence-verify"):
                parts.append(f"({o['evidence-verify'][-1]['records']:,} records)")
            lines.append(" ".join(parts))
    return "\n".join(lines)


def real_python3() -> str:
    """The interpreter ``python3`` names (not a pyenv shim, whose own children would
    count in the peak RSS)."""
    found = shutil.which("python3")
    if found is None:
        return PYTHON
    r = subprocess.run(
        [found, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True
    )
    return r.stdout.strip() or found


def revision() -> str:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return r.stdout.strip()

    dirty = " + uncommitted changes in src/" if git("status", "--porcelain", "src") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-queries":
        qs = json.loads(Path(sys.argv[3]).read_text())
        print(json.dumps(run_queries(Path(sys.argv[2]), qs)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument(
        "--smaller", type=int, default=4, help="the second ledger is this many times smaller"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", default="sqlite", help="sqlite,postgresql")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lg-bench-evidence"))
    ap.add_argument(
        "--ops",
        default=",".join(o.key for o in OPS),
        help="a subset of the operations (they run in this order; the verifications read "
        "the exports, the searches the index the catch-up built)",
    )
    ap.add_argument("--json", nargs="?", const="-", help="write the results as JSON (- : stdout)")
    a = ap.parse_args()
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} is missing: apt-get install -y time")
    global PYTHON3
    PYTHON3 = real_python3()
    sizes = [a.entries, a.entries // a.smaller]
    ops = [o for o in a.ops.split(",") if o]
    unknown = set(ops) - {o.key for o in OPS}
    if unknown:
        raise SystemExit(f"unknown operations: {', '.join(sorted(unknown))}")
    engines = [e for e in a.engines.split(",") if e]
    a.workdir.mkdir(parents=True, exist_ok=True)
    qfile = a.workdir / "queries.json"
    qfile.write_text(json.dumps(queries()))
    started = time.perf_counter()
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "sizes": sizes,
        "reps": a.reps,
        "python3": PYTHON3,
        "revision": revision(),
        "command": " ".join(["bench/evidence_search.py", *sys.argv[1:]]),
        "engines": {},
    }
    with contextlib.ExitStack() as stack:
        for engine in engines:
            ledgers: dict[int, Ledger] = {}
            if engine == "sqlite":
                for n in sizes:
                    ledgers[n] = sqlite_ledger(a.workdir, n)
            elif engine == "postgresql":
                pg = PgCluster(
                    tls=False, settings={"log_statement": "none", "shared_buffers": "256MB"}
                )
                stack.callback(pg.stop)
                pg.start()
                for n in sizes:
                    pg.psql(f"CREATE DATABASE ledger_{n}")
                    ledgers[n] = postgresql_ledger(a.workdir, n, pg.host, pg.port, pg.password)
            else:
                raise SystemExit(f"unknown engine {engine!r}")
            per: dict[str, Any] = {
                str(n): {"total": led.total, "kinds": led.kinds, "build_s": led.build_s, "ops": {}}
                for n, led in ledgers.items()
            }
            result["engines"][engine] = per
            outs = {n: a.workdir / f"out-{engine}-{n}" for n in sizes}
            for o in outs.values():
                o.mkdir(exist_ok=True)
            for rep in range(a.reps):
                for op in (o for o in OPS if o.key in ops):
                    for n in sizes:
                        got = measure(op.key, ledgers[n], outs[n], qfile)
                        per[str(n)]["ops"].setdefault(op.key, []).append(got)
                        extra = f", p50 {got['p50_ms']:.1f} ms" if "p50_ms" in got else ""
                        log(f"{engine} rep {rep + 1} {op.key} {n:,}: {got['seconds']:.2f} s, "
                            f"{got['rss_mib']:.0f} MiB{extra}")  # fmt: skip
            for o in outs.values():
                shutil.rmtree(o, ignore_errors=True)
    result["elapsed_s"] = time.perf_counter() - started
    end = revision()
    if end != result["revision"]:  # the tree changed under the run: say so
        result["revision"] += f", {end} at the end"
    if a.json is not None:
        text = json.dumps(result, indent=2, default=str)
        if a.json == "-":
            print(text)
            return
        Path(a.json).write_text(text)
    first = next(iter(result["engines"].values()))
    mix = first[str(sizes[0])]["kinds"]
    total = sum(mix.values())
    print(
        f"python {result['python']}, {result['machine']}; {a.reps} reps, medians; "
        f"whole run {result['elapsed_s'] / 60:.1f} min; {result['revision']}; "
        f"verify.py on {PYTHON3}"
    )
    print(
        "mix: "
        + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1]))
    )
    print(table(result))
    print(query_table(result))
    print()
    print(outputs(result))


if __name__ == "__main__":
    main()
