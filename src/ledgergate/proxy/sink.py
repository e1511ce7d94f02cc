"""The ledger sink: group commit of entry drafts shared by all sessions.

Owns the hand-off between sessions and the ledger writer. Sessions call ``submit``;
everything submitted during one turn of the event loop is appended in ONE transaction,
so concurrent sessions share each commit; durable submissions get their ``on_commit``
callback right after it.

Two modes, one contract:
- inline (default): the commit runs on the loop at the end of the turn. Without fsync a
  commit is one write to the stream's journal (the store is indexed from it by the
  writer's own thread), less than a hop to a thread and back (measured: a thread hop per
  durable command cost ~250 µs at one client).
- threaded (``fsync``): an fsync costs milliseconds, so commits run on a dedicated
  thread and the loop keeps relaying other sessions meanwhile.

Rules: submission order is stream order. Nothing is dropped: while more than ``depth``
drafts wait, or the writer's store lags its journal too far (``Writer.congested``),
``congested`` is true and sessions pause their reads until the resume callbacks run.
If an append fails the sink fails closed: every waiting and later submission gets
``LedgerUnavailable`` and the ``on_failure`` callbacks run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from ledgergate.core.ledger.entry import Draft

__all__ = ["LedgerSink", "LedgerUnavailable", "OnCommit"]

log = logging.getLogger("ledgergate.ledger")

# Drafts appended per transaction at most: bounds the time one commit holds the loop.
MAX_BATCH = 2000
# Chunk entries (non-durable) ride along with the next command's commit; without one
# they are committed after this delay, or at once when this many are waiting. A commit
# per result chunk would double the commits of a query-response workload.
CHUNK_DELAY = 0.002
CHUNK_EAGER = 256

OnCommit = Callable[[BaseException | None], None]


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be written; traffic stops (fail closed)."""


class Writer(Protocol):
    @property
    def congested(self) -> bool: ...
    def index_backlog(self) -> int: ...
    def on_drained(self, cb: Callable[[], None]) -> None: ...
    def append(self, drafts: list[Draft], now_ns: int) -> object: ...
    def checkpoint(self, now_ns: int) -> object: ...
    def close(self, now_ns: int) -> object: ...


class LedgerSink:
    def __init__(
        self,
        open_writer: Callable[[], Writer],
        *,
        depth: int,
        checkpoint_seconds: float,
        loop: asyncio.AbstractEventLoop,
        threaded: bool = False,
    ) -> None:
        self._open_writer = open_writer
        self._writer: Writer | None = None
        self.depth = depth
        self._checkpoint_seconds = checkpoint_seconds
        self._loop = loop
        self.threaded = threaded
        self._lock = threading.Condition()
        self._pending: deque[tuple[list[Draft], OnCommit | None]] = deque()
        self._npending = 0
        self._scheduled = False
        self._stop = False
        self.error: BaseException | None = None
        self._resume: list[Callable[[], None]] = []
        self.on_failure: list[Callable[[BaseException], None]] = []
        self._thread: threading.Thread | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.appended = 0
        self.batches = 0
        self.kinds: Counter[str] = Counter()  # entries appended, by kind (for metrics)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._writer = await loop.run_in_executor(None, self._open_writer)
        except Exception as e:
            raise LedgerUnavailable(f"the ledger cannot be opened: {e}") from None

        def drained() -> None:  # on the writer's indexer thread
            loop.call_soon_threadsafe(self._drained)

        self._writer.on_drained(drained)
        if self.threaded:
            self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
            self._thread.start()
        else:
            self._ticker = loop.call_later(self._checkpoint_seconds, self._tick)

    async def close(self) -> None:
        log.info("ledger sink: %d entries in %d commits", self.appended, self.batches)
        if self._ticker is not None:
            self._ticker.cancel()
        if self.threaded and self._thread is not None:
            with self._lock:
                self._stop = True
                self._lock.notify()
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            return
        self._flush()
        if self._writer is not None:
            try:
                self._writer.close(time.time_ns())
            except Exception as e:
                log.error("ledger close failed: %s", e)

    # -- loop side ------------------------------------------------------------------------
    def index_backlog(self) -> int:
        """Bytes journaled and not yet in the store (0 without a journal)."""
        return self._writer.index_backlog() if self._writer is not None else 0

    @property
    def congested(self) -> bool:
        w = self._writer
        return self._npending > self.depth or (w is not None and w.congested)

    def _drained(self) -> None:
        """The writer's store caught up with its journal."""
        if not self.congested and self._resume:
            resume, self._resume = self._resume, []
            for r in resume:
                r()

    def submit(self, drafts: list[Draft], on_commit: OnCommit | None = None) -> None:
        """Queue drafts for the next group commit; ``on_commit`` runs after it."""
        if self.error is not None:
            raise LedgerUnavailable(str(self.error))
        if self.threaded:
            with self._lock:
                self._pending.append((drafts, on_commit))
                self._npending += len(drafts)
                self._lock.notify()
            return
        self._pending.append((drafts, on_commit))
        self._npending += len(drafts)
        if self._scheduled:
            return
        if on_commit is not None or self._npending >= CHUNK_EAGER:
            self._scheduled = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._loop.call_soon(self._loop.call_soon, self._flush)
        elif self._timer is None:
            self._timer = self._loop.call_later(CHUNK_DELAY, self._flush)

    async def commit(self, drafts: list[Draft]) -> None:
        """Append drafts and wait until they are committed (session open, auth...)."""
        fut: asyncio.Future[None] = self._loop.create_future()

        def done(err: BaseException | None) -> None:
            if fut.done():
                return
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(LedgerUnavailable(str(err)))

        self.submit(drafts, done)
        await fut

    def when_uncongested(self, cb: Callable[[], None]) -> None:
        self._resume.append(cb)

    # -- inline mode --------------------------------------------------------------------
    def _flush(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, callbacks = self._take()
            self._append(batch)
            self._npending -= len(batch)
            self._settle(callbacks, self._npending <= self.depth)

    def _tick(self) -> None:
        self._flush()
        if self.error is None and self._writer is not None:
            try:
                self._writer.checkpoint(time.time_ns())
            except Exception as e:
                log.error("ledger checkpoint failed: %s", e)
        self._ticker = self._loop.call_later(self._checkpoint_seconds, self._tick)

    # -- shared -------------------------------------------------------------------------
    def _take(self) -> tuple[list[Draft], list[OnCommit]]:
        batch: list[Draft] = []
        callbacks: list[OnCommit] = []
        pending = self._pending
        while pending and len(batch) < MAX_BATCH:
            drafts, cb = pending.popleft()
            batch.extend(drafts)
            if cb is not None:
                callbacks.append(cb)
        return batch, callbacks

    def _append(self, batch: list[Draft]) -> None:
        if not batch or self.error is not None:
            return
        assert self._writer is not None
        try:
            self._writer.append(batch, time.time_ns())
            self.appended += len(batch)
            self.batches += 1
            self.kinds.update([d.kind for d in batch])
        except Exception as e:  # fail closed; sessions get the reason
            log.error("ledger append failed, stopping traffic: %s", e)
            self.error = e

    def _settle(self, callbacks: list[OnCommit], uncongested: bool) -> None:
        err = self.error
        for cb in callbacks:
            cb(err)
        if err is not None:
            failed, self.on_failure = self.on_failure, []
            for f in failed:
                f(err)
            # Waiters queued behind the failure learn it too.
            while self._pending:
                _, cbs = self._take()
                for cb in cbs:
                    cb(err)
            self._npending = 0
        if uncongested and self._resume and not self.congested:
            resume, self._resume = self._resume, []
            for r in resume:
                r()

    # -- threaded mode ------------------------------------------------------------------
    def _run(self) -> None:
        assert self._writer is not None
        last_cp = time.monotonic()
        while True:
            with self._lock:
                while not self._pending and not self._stop:
                    remaining = self._checkpoint_seconds - (time.monotonic() - last_cp)
                    if remaining <= 0:
                        break
                    self._lock.wait(remaining)
                batch, callbacks = self._take()
                stop = self._stop and not self._pending
            self._append(batch)
            with self._lock:
                self._npending -= len(batch)
                uncongested = self._npending <= self.depth
            if batch or callbacks:
                self._loop.call_soon_threadsafe(self._settle, callbacks, uncongested)
            if time.monotonic() - last_cp >= self._checkpoint_seconds and self.error is None:
                try:
                    self._writer.checkpoint(time.time_ns())
                except Exception as e:
                    log.error("ledger checkpoint failed: %s", e)
                last_cp = time.monotonic()
            if stop:
                try:
                    self._writer.close(time.time_ns())
                except Exception as e:
                    log.error("ledger close failed: %s", e)
                return
