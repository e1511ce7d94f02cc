"""Where a relayed PostgreSQL query's CPU goes inside the gateway, stage by stage.

    .venv/bin/python bench/pg_stages.py [--queries N] [--group G] [--reps R]

Drives the gateway's own code in one process, without sockets, for pgbench's select-only
query (simple protocol, one row back) at ``recording: redacted``:

- ``wire``: the sans-IO relay (``wire/pg/session.Relay``): the client's Query split and
  captured, held until committed, released; the server's answer walked.
- ``recording``: the entry drafts of what the relay saw (``core/recording``): the
  command (redacted text, its digest) and the result chunk (its digest, rows, tag).
- ``sealing``: the ledger writer's append of the drafts of ``G`` queries at a time (the
  group commit; 8 pgbench clients share a commit about 4 queries at a time): chain,
  Merkle tree, canonical encoding, the journal's write.
- ``indexing``: the store indexer's thread committing those entries to SQLite (commands
  as rows, chunks in blocks), measured as that thread's own CPU time.

The first three run on the gateway's event-loop thread, the last on its own thread;
``bench/pgbench_compare.py`` prices the whole gateway against pgbouncer, this shows what
a change to one stage is worth. CPU time per query, best of R runs each; the machine's
noise moves all stages together, so compare stages within one run.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.ledger import Draft, Signer
from ledgergate.core.recording import SessionRecorder
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store import open_store
from ledgergate.wire.pg.events import ClientData, Committed, Record, ServerData
from ledgergate.wire.pg.session import Relay

BASE = {
    "session_id": "s_18e2b3c4d5e6f7a8b9c0d1",
    "connection": "bench",
    "identity": {"kind": "user", "subject": "alice@example.com", "groups": ["dba"]},
    "source": {"ip": "127.0.0.1", "port": 54321},
    "policy": "3f1c0e9a",
}


def _msg(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


def _query(i: int) -> bytes:
    return _msg(b"Q", b"SELECT abalance FROM pgbench_accounts WHERE aid = %d;\x00" % i)


# RowDescription (one int4 column), one DataRow, CommandComplete, ReadyForQuery: what the
# backend answers select-only's query with, in one read.
ANSWER = (
    _msg(b"T", b"\x00\x01abalance\x00" + b"\x00" * 6 + b"\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00")
    + _msg(b"D", b"\x00\x01\x00\x00\x00\x04-123")
    + _msg(b"C", b"SELECT 1\x00")
    + _msg(b"Z", b"I")
)


def _thread_cpu(tid: int) -> float:
    """User plus system CPU seconds of thread ``tid`` of this process."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(queries: int, group: int, workdir: Path) -> dict[str, float]:
    """CPU seconds per stage for ``queries`` queries."""
    relay = Relay()
    rec = SessionRecorder(dict(BASE), "redacted")
    signer = Signer("bench", Ed25519PrivateKey.generate())
    writer = LedgerWriter.open(
        open_store(f"sqlite:///{workdir / 'store.db'}"),
        "gw-bench",
        signer,
        journal_root=workdir / "journal",
    )
    assert writer.indexer is not None
    indexer_tid = writer.indexer._thread.native_id
    assert indexer_tid is not None
    idx0 = _thread_cpu(indexer_tid)
    clock = time.thread_time
    # Stage by stage for each group of queries, as the gateway interleaves them: what one
    # stage allocates is freed as the gateway frees it (run over all queries at once,
    # the same work measured up to three times slower, in fresh memory).
    queries_in = [_query(i) for i in range(queries)]
    ts = time.time_ns()
    wire = recording = sealing = 0.0
    for g in range(0, queries, group):
        seen = []
        t0 = clock()
        for q in queries_in[g : g + group]:
            ticket = 0
            for a in relay.feed(ClientData(q, ts)):
                if isinstance(a, Record):
                    seen.append(a.seen)
                    ticket = a.ticket
            relay.feed(Committed(ticket))
            for a in relay.feed(ServerData(ANSWER, ts)):
                if isinstance(a, Record):
                    seen.append(a.seen)
        t1 = clock()
        drafts: list[Draft] = []
        for s in seen:
            drafts += rec.drafts(s)
        t2 = clock()
        writer.append(drafts, ts)
        t3 = clock()
        wire += t1 - t0
        recording += t2 - t1
        sealing += t3 - t2
    while writer.index_backlog():  # the indexer's thread still has entries to commit
        time.sleep(0.001)
    indexing = _thread_cpu(indexer_tid) - idx0
    writer.close(time.time_ns())
    return {"wire": wire, "recording": recording, "sealing": sealing, "indexing": indexing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--group", type=int, default=4, help="queries per ledger commit (4)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    best: dict[str, float] = {}
    for _ in range(a.reps):
        with tempfile.TemporaryDirectory(prefix="lg-bench-stages-") as d:
            r = run(a.queries, a.group, Path(d))
        for k, v in r.items():
            best[k] = min(best.get(k, v), v)
    total = sum(best.values())
    print(
        f"ledgergate PostgreSQL path by stage: {a.queries} select-only queries, "
        f"{a.group} per ledger commit, best of {a.reps}; Python {sys.version.split()[0]}"
    )
    print(f"{'stage':12s} {'thread':10s} {'µs/query':>9s} {'share':>6s}")
    for k, v in best.items():
        thread = "indexer" if k == "indexing" else "loop"
        us = v / a.queries * 1e6
        print(f"{k:12s} {thread:10s} {us:9.1f} {v / total * 100:5.0f}%")
    print(f"{'total':12s} {'':10s} {total / a.queries * 1e6:9.1f}")


if __name__ == "__main__":
    main()
