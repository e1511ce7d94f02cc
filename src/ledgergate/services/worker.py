"""A worker thread with its own store handle and a ledger writer on a shared stream.

SQLite handles are per thread, and a change must commit with its ledger entry on the
same handle: services that run beside the relay (the REST API's admin calls, the review
desk) each own one of these and run their store work on it, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store import Store

__all__ = ["LedgerWorker"]

T = TypeVar("T")


class LedgerWorker:
    def __init__(
        self, open_store: Callable[[], Store], stream: str, signer: Signer, *, name: str
    ) -> None:
        self._open_store = open_store
        self.stream = stream
        self._signer = signer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.store: Store | None = None
        self.writer: LedgerWriter | None = None

    async def start(self) -> None:
        await self.run(self._open)

    def _open(self) -> None:
        self.store = self._open_store()
        self.writer = LedgerWriter.open(
            self.store, self.stream, self._signer, shared=True, owns_store=False
        )

    async def close(self) -> None:
        def shut() -> None:
            if self.writer is not None:
                self.writer.close(time.time_ns())
            if self.store is not None:
                self.store.close()

        await self.run(shut)
        self._pool.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kw))

    async def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(store, writer, *args, **kw)`` on the worker thread."""

        def go() -> T:
            assert self.store is not None and self.writer is not None
            return fn(self.store, self.writer, *args, **kw)

        return await self.run(go)
