"""Evidence exports run for the API (the console's Evidence page): each a bundle of a
period written by ``evidence.export_evidence`` on a thread of its own, with its own
store handle, while callers poll its progress and download the zip when it is done.

Jobs live in the process that started them (a replica behind a balancer answers only
for its own); their bundles go to ``<data_dir>/exports/``. At most ``MAX_JOBS`` are
kept: starting one more forgets the oldest finished one and deletes its bundle. One
export runs at a time (they read the whole period); others wait their turn.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.services.audit import ProofError
from ledgergate.services.config import Settings
from ledgergate.services.evidence.bundle import export_evidence
from ledgergate.services.evidence.records import state_snapshot
from ledgergate.services.ledger import LedgerUnavailable
from ledgergate.store import StoreError

__all__ = ["EvidenceJobs", "ExportJob", "JobError"]

log = logging.getLogger("ledgergate.evidence")

# Jobs (and their bundles) kept per process: an auditor's recent exports, not an archive.
MAX_JOBS = 20


class JobError(Exception):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "unknown" | "not ready" | "full"


@dataclass
class ExportJob:
    id: str
    by: str
    since_ns: int | None
    until_ns: int | None
    framework: str
    started_ns: int
    path: Path
    state: str = "queued"  # queued | running | done | failed
    done: int = 0
    total: int | None = None
    finished_ns: int | None = None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    future: Future[None] | None = None

    @property
    def bundle_url(self) -> str:
        return f"/api/v1/evidence/exports/{self.id}/bundle"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "by": self.by,
            "since_ns": self.since_ns,
            "until_ns": self.until_ns,
            "framework": self.framework,
            "state": self.state,
            "entries_done": self.done,
            "entries_total": self.total,
            "started_ns": self.started_ns,
            "finished_ns": self.finished_ns,
            "error": self.error,
            "summary": self.summary,
            "bundle": self.bundle_url if self.state == "done" else None,
        }


class EvidenceJobs:
    def __init__(self, settings: Settings, signer: Signer) -> None:
        self._settings = settings
        self._signer = signer
        self._dir = settings.data_dir / "exports"
        self._jobs: OrderedDict[str, ExportJob] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-export")

    def start(
        self, *, by: str, since_ns: int | None, until_ns: int | None, framework: str
    ) -> ExportJob:
        with self._lock:
            if len(self._jobs) >= MAX_JOBS:
                old = next((j for j in self._jobs.values() if j.state in ("done", "failed")), None)
                if old is None:
                    raise JobError("too many evidence exports are running; wait for one", "full")
                del self._jobs[old.id]
                old.path.unlink(missing_ok=True)
            jid = "ex_" + secrets.token_hex(8)
            self._dir.mkdir(parents=True, exist_ok=True)
            job = ExportJob(
                id=jid,
                by=by,
                since_ns=since_ns,
                until_ns=until_ns,
                framework=framework,
                started_ns=time.time_ns(),
                path=self._dir / f"evidence-{jid}.zip",
            )
            self._jobs[jid] = job
            job.future = self._pool.submit(self._run, job)
            return job

    def _run(self, job: ExportJob) -> None:
        job.state = "running"

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            store = self._settings.open_store()
            try:
                now = time.time_ns()
                summary = export_evidence(
                    store,
                    self._signer,
                    job.path,
                    since_ns=job.since_ns,
                    until_ns=job.until_ns,
                    framework=job.framework,
                    state=state_snapshot(store, self._settings.config, now),
                    now_ns=now,
                    progress=progress,
                )
            finally:
                store.close()
        except (StoreError, LedgerUnavailable, ProofError, OSError, ValueError) as e:
            # the project's own words (what `evidence export` prints), shown to the caller
            job.state, job.error = "failed", str(e)[:500]
        except Exception:  # foreign: its text stays in the log, the API keeps serving
            log.exception("evidence export %s failed", job.id)
            job.state, job.error = "failed", "the export failed; the gateway's log says why"
        else:
            job.summary = {
                "entries": summary.entries,
                "streams": list(summary.streams),
                "records": dict(summary.records),
                "signed": list(summary.signed),
            }
            job.done = job.total = summary.entries
            job.state = "done"
        job.finished_ns = time.time_ns()

    def get(self, job_id: str) -> ExportJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"no evidence export {job_id[:40]!r}", "unknown")
        return job

    def list(self) -> list[ExportJob]:
        return list(reversed(self._jobs.values()))

    def bundle(self, job_id: str) -> Path:
        job = self.get(job_id)
        if job.state != "done":
            raise JobError(f"evidence export {job_id} is {job.state}", "not ready")
        return job.path

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
