"""The ledger sink: group commit of entry drafts off the event loop.

Owns the bounded hand-off between sessions (on the event loop) and the ledger writer
(on one dedicated thread). Sessions call ``submit``; the thread takes everything
pending, appends it in one transaction and resolves the futures of durable submissions
with one wake-up of the loop per batch, so concurrent sessions share each commit.

Rules: order of submission is order in the stream. Nothing is dropped: when more than
``depth`` drafts wait, ``congested`` is true and sessions pause their reads until the
sink calls their resume callbacks. If an append fails the sink fails closed: every
waiting and later submission gets ``LedgerUnavailable`` and ``on_failure`` callbacks run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ledgergate.core.ledger.entry import Draft

__all__ = ["LedgerSink", "LedgerUnavailable"]

log = logging.getLogger("ledgergate.ledger")

# Drafts appended per transaction at most: bounds commit latency under load.
MAX_BATCH = 2000


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be written; traffic stops (fail closed)."""


class Writer(Protocol):
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
    ) -> None:
        self._open_writer = open_writer
        self.depth = depth
        self._checkpoint_seconds = checkpoint_seconds
        self._loop = loop
        self._cv = threading.Condition()
        self._pending: deque[tuple[list[Draft], asyncio.Future[None] | None]] = deque()
        self._npending = 0
        self._stop = False
        self.error: BaseException | None = None
        self._resume: list[Callable[[], None]] = []
        self.on_failure: list[Callable[[BaseException], None]] = []
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._ready = threading.Event()
        self.appended = 0
        self.batches = 0

    # -- loop side ------------------------------------------------------------------------
    async def start(self) -> None:
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self.error is not None:
            raise LedgerUnavailable(f"the ledger cannot be opened: {self.error}") from None

    @property
    def congested(self) -> bool:
        return self._npending > self.depth

    def submit(self, drafts: list[Draft], *, durable: bool) -> asyncio.Future[None] | None:
        """Queue drafts; for durable ones return a future resolved once committed."""
        if self.error is not None:
            raise LedgerUnavailable(str(self.error))
        fut: asyncio.Future[None] | None = self._loop.create_future() if durable else None
        with self._cv:
            self._pending.append((drafts, fut))
            self._npending += len(drafts)
            self._cv.notify()
        return fut

    async def commit(self, drafts: list[Draft]) -> None:
        fut = self.submit(drafts, durable=True)
        assert fut is not None
        await fut

    def when_uncongested(self, cb: Callable[[], None]) -> None:
        self._resume.append(cb)

    async def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # -- writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            writer = self._open_writer()
        except BaseException as e:  # reported by start()
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        last_cp = time.monotonic()
        while True:
            with self._cv:
                while not self._pending and not self._stop:
                    remaining = self._checkpoint_seconds - (time.monotonic() - last_cp)
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                batch: list[Draft] = []
                futs: list[asyncio.Future[None]] = []
                while self._pending and len(batch) < MAX_BATCH:
                    drafts, fut = self._pending.popleft()
                    batch.extend(drafts)
                    if fut is not None:
                        futs.append(fut)
                stop = self._stop and not self._pending
            if batch and self.error is None:
                try:
                    writer.append(batch, time.time_ns())
                    self.appended += len(batch)
                    self.batches += 1
                except BaseException as e:  # fail closed; the reason goes to sessions
                    log.error("ledger append failed, stopping traffic: %s", e)
                    self.error = e
            with self._cv:
                self._npending -= len(batch)
                uncongested = self._npending <= self.depth
            self._loop.call_soon_threadsafe(self._settle, futs, uncongested)
            if time.monotonic() - last_cp >= self._checkpoint_seconds and self.error is None:
                try:
                    writer.checkpoint(time.time_ns())
                except BaseException as e:
                    log.error("ledger checkpoint failed: %s", e)
                last_cp = time.monotonic()
            if stop:
                try:
                    writer.close(time.time_ns())
                except BaseException as e:
                    log.error("ledger close failed: %s", e)
                return

    def _settle(self, futs: list[asyncio.Future[None]], uncongested: bool) -> None:
        err = self.error
        for f in futs:
            if f.done():
                continue
            if err is None:
                f.set_result(None)
            else:
                f.set_exception(LedgerUnavailable(str(err)))
        if err is not None:
            cbs, self.on_failure = self.on_failure, []
            for cb in cbs:
                cb(err)
        if uncongested and self._resume:
            cbs2, self._resume = self._resume, []
            for cb2 in cbs2:
                cb2()
