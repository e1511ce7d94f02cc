"""Ledger core throughput: seal() and verify_stream() entries per second, and what each
store engine sustains.

    .venv/bin/python bench/ledger_throughput.py [--entries N] [--checkpoint-every K]
        [--stores sqlite,postgresql] [--store-entries M]

Seals N typical chunk entries (ten fields, three nested objects, as the PostgreSQL relay
writes them) on one stream, signing a checkpoint every K entries, then verifies the
stream from its rows and checkpoint notes, then verifies twice as many to show the
cost grows linearly. Pure CPU, one thread, no store: the figures are the ceiling the
ledger core puts on the writer and the auditor. Best of three runs each.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.ledger import Chain, Checkpoint, Draft, Signer, StreamState, verify_stream

STREAM = "gw-bench-1"


def chunk_draft(i: int) -> Draft:
    return Draft(
        ts_ns=1_732_300_000_000_000_000 + i * 1_000,
        kind="chunk",
        fields={
            "session_id": "6f1c0e9a-8c4d-4b1e-9a3f-2d7e5b8c1a00",
            "connection": "prod-db",
            "identity": {"kind": "user", "subject": "alice@example.com", "groups": ["dba"]},
            "source": {"ip": "10.1.2.3", "port": 54321},
            "direction": "server_to_client",
            "chunk": {"seq": i, "size": 8192, "sha256_in": "ab" * 32, "sha256_out": "cd" * 32},
            "outcome": "forwarded",
        },
    )


def seal(
    n: int, every: int, signer: Signer
) -> tuple[float, list[tuple[int, bytes, bytes]], list[str]]:
    drafts = [chunk_draft(i) for i in range(n)]  # built outside the timed loop
    chain = Chain(StreamState.genesis(STREAM))
    rows: list[tuple[int, bytes, bytes]] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    for d in drafts:
        e = chain.seal(d)
        rows.append((e.seq, e.canonical, e.entry_hash))
        if e.seq % every == every - 1:
            st = chain.state
            notes.append(signer.sign(Checkpoint(STREAM, st.size, st.tree.root(), e.ts_ns)))
    return time.perf_counter() - t0, rows, notes


def verify(rows: list[tuple[int, bytes, bytes]], notes: list[str], signer: Signer) -> float:
    t0 = time.perf_counter()
    rep = verify_stream(STREAM, rows, notes, [signer.verifier])
    dt = time.perf_counter() - t0
    assert rep.ok and rep.entries == len(rows), rep.problems
    return dt


STORE_BATCH = 1_000


def store_throughput(
    url: str, password: str | None, n: int, every: int, signer: Signer
) -> tuple[float, float]:
    """(append entries/s, verify entries/s) of n entries through a writer into the store."""
    from ledgergate.services.audit import verify_store
    from ledgergate.services.ledger import LedgerWriter
    from ledgergate.store import open_store

    drafts = [chunk_draft(i) for i in range(n)]
    w = LedgerWriter.open(
        open_store(url, password=password), STREAM, signer, checkpoint_every_entries=every
    )
    t0 = time.perf_counter()
    for i in range(0, n, STORE_BATCH):
        part = drafts[i : i + STORE_BATCH]
        w.append(part, part[-1].ts_ns)
    w.close(drafts[-1].ts_ns)
    append_s = time.perf_counter() - t0
    st = open_store(url, password=password)
    t0 = time.perf_counter()
    rep = verify_store(st, [signer.verifier])
    verify_s = time.perf_counter() - t0
    st.close()
    assert rep.ok and rep.entries == n, rep.first_problem()
    return n / append_s, n / verify_s


def stores(engines: list[str], n: int, every: int, signer: Signer) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.integration.pgcluster import PgCluster

    results: dict[str, tuple[float, float]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lg-bench-store-")))
        for engine in engines:
            if engine == "sqlite":
                url, pw = f"sqlite://{tmp / 'ledger.db'}", None
            elif engine == "postgresql":
                pg = PgCluster(
                    tls=False,
                    settings={
                        "fsync": "on",
                        "synchronous_commit": "on",
                        "full_page_writes": "on",
                        "log_statement": "none",
                        "shared_buffers": "128MB",
                    },
                )
                stack.callback(pg.stop)
                pg.start()
                pg.psql("CREATE DATABASE ledger")
                url = f"postgresql://postgres@{pg.host}:{pg.port}/ledger?sslmode=disable"
                pw = pg.password
            else:
                raise SystemExit(f"unknown store engine {engine!r}")
            results[engine] = store_throughput(url, pw, n, every, signer)
    base = results.get("sqlite")
    print(f"stores: {n} entries through a ledger writer, {STORE_BATCH} per transaction")
    for engine, (app, ver) in results.items():
        rel = f"  ({app / base[0]:.2f}x / {ver / base[1]:.2f}x SQLite)" if base else ""
        print(f"  {engine:<11} append {app:>9,.0f} entries/s   verify {ver:>9,.0f} entries/s{rel}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--checkpoint-every", type=int, default=1_000)
    ap.add_argument(
        "--stores", default="sqlite,postgresql", help="store engines to measure ('' for none)"
    )
    ap.add_argument("--store-entries", type=int, default=50_000)
    a = ap.parse_args()
    n, every = a.entries, a.checkpoint_every
    signer = Signer("bench/ledger", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    seal_s = min(seal(n, every, signer)[0] for _ in range(3))
    _, rows, notes = seal(2 * n, every, signer)
    half = rows[:n]
    verify_s = min(verify(half, notes[: n // every], signer) for _ in range(3))
    verify2_s = min(verify(rows, notes, signer) for _ in range(3))
    size = sum(len(r[1]) for r in half) / n
    print(
        f"python {platform.python_version()} on {platform.machine()}; "
        f"{n} chunk entries of {size:.0f} bytes, a checkpoint every {every}"
    )
    print(
        f"seal():          {n / seal_s:>10,.0f} entries/s  ({seal_s * 1e6 / n:.1f} us/entry, "
        "incl. checkpoint signing)"
    )
    print(f"verify_stream(): {n / verify_s:>10,.0f} entries/s  ({verify_s * 1e6 / n:.1f} us/entry)")
    print(f"verify_stream() x2 entries: {verify2_s / verify_s:.2f}x the time (linear = 2.00x)")
    sys.stdout.flush()
    engines = [e for e in a.stores.split(",") if e]
    if engines:
        stores(engines, a.store_entries, every, signer)


if __name__ == "__main__":
    main()
