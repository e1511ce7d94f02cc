"""Throughput of LedgerWriter.append for batches of chunk-like entries (not a test).

.venv/bin/python -m tests.services.bench_ledger [entries] [batch] [--fsync]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.services.synth import T0, Ledger, chunk_drafts


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    batch = int(args[1]) if len(args) > 1 else 100
    fsync = "--fsync" in sys.argv
    drafts = chunk_drafts(n)
    with tempfile.TemporaryDirectory() as d:
        led = Ledger(Path(d))
        w = led.writer(fsync=fsync)
        t = time.perf_counter()
        for i in range(0, n, batch):
            w.append(drafts[i : i + batch], T0 + i * 1000)
        dt = time.perf_counter() - t
        w.close(T0 + n * 1000)
        print(
            f"append: {n} entries in batches of {batch}: {n / dt:,.0f} entries/s"
            f" ({dt / (n / batch) * 1e3:.2f} ms per batch, fsync={fsync})"
        )
        from ledgergate.services.audit import verify_store

        st = led.store()
        t = time.perf_counter()
        rep = verify_store(st, [led.signer.verifier])
        dt = time.perf_counter() - t
        print(f"verify: {rep.entries} entries: {rep.entries / dt:,.0f} entries/s ok={rep.ok}")


if __name__ == "__main__":
    main()
