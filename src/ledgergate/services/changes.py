"""Change notices from the store, as asyncio wake-ups for the gateway's watchers.

Owns the one thread per gateway that listens for the PostgreSQL store's ``NOTIFY``
(``store.ChangeListener``) and turns each notice ("access", "policy", "review") into a
wake-up of the coroutines waiting on that kind. The watchers (session re-checks, policy
refresh, review holds) then read the store's epoch as before: a notice only says "look
now", the epoch stays the truth, so a lost notice costs a delay, never a decision.

On an engine without notices (SQLite) ``wait`` simply sleeps for the watcher's poll
interval. Must not decide anything; it only wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from ledgergate.store import ChangeListener, PostgresStore, Store, StoreError

__all__ = ["KINDS", "ChangeFeed"]

log = logging.getLogger("ledgergate.changes")

KINDS = ("access", "policy", "review")
# With notices, watchers still look at the store this often (a notice lost while the
# listener reconnected is caught up here).
BACKSTOP_S = 10.0
# How long the listening thread blocks per wait: it notices a stop within this.
LISTEN_WAIT_S = 0.5
# After the listener's connection fails: wait this long before listening again (the
# watchers fall back to their poll interval meanwhile).
RETRY_S = 2.0


class ChangeFeed:
    """Wake-ups for the kinds of change a store announces. ``notices`` says whether
    this store announces changes at all (watchers may then poll less often)."""

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open_store = open_store
        self._events: dict[str, asyncio.Event] = {k: asyncio.Event() for k in KINDS}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.notices = False
        self.received = 0  # notices delivered to the loop (for tests and metrics)

    def start(self, store: Store) -> None:
        """Start listening if ``store`` announces changes (call on the event loop)."""
        if not isinstance(store, PostgresStore):
            return
        self._loop = asyncio.get_running_loop()
        self.notices = True
        self._thread = threading.Thread(target=self._run, name="store-notices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LISTEN_WAIT_S * 4)
            self._thread = None

    def interval(self, poll_s: float) -> float:
        """How long a watcher that polls every ``poll_s`` waits between looks: with
        notices, they wake it, and the poll is only the backstop for a lost one."""
        return max(poll_s, BACKSTOP_S) if self.notices else poll_s

    async def wait(self, kinds: tuple[str, ...], timeout: float) -> bool:
        """Until a notice of one of ``kinds`` arrives (True) or ``timeout`` seconds pass.
        Each kind has one watcher: a wake-up is consumed by it."""
        events = [self._events[k] for k in kinds]
        if not self.notices:
            await asyncio.sleep(timeout)
            return False
        if not any(ev.is_set() for ev in events):
            waiters = [asyncio.ensure_future(ev.wait()) for ev in events]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        woken = False
        for ev in events:
            if ev.is_set():
                ev.clear()
                woken = True
        return woken

    def _wake(self, kinds: set[str]) -> None:
        for k in kinds:
            ev = self._events.get(k)
            if ev is not None:
                self.received += 1
                ev.set()

    def _run(self) -> None:
        store: Store | None = None
        listener: ChangeListener | None = None
        while not self._stop.is_set():
            try:
                if listener is None:
                    store = self._open_store()
                    assert isinstance(store, PostgresStore)
                    listener = ChangeListener(store)
                got = listener.wait(LISTEN_WAIT_S)
            except (StoreError, AssertionError) as e:
                log.warning("store change notices unavailable (%s); polling meanwhile", e)
                if listener is not None:
                    listener.close()
                if store is not None:
                    store.close()
                listener, store = None, None
                self._stop.wait(RETRY_S)
                continue
            if got and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed under us
                    self._loop.call_soon_threadsafe(self._wake, got)
        if listener is not None:
            listener.close()
        if store is not None:
            store.close()
