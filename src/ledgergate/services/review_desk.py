"""The gateway's review desk: held statements meet the review service, and reviewers
hear about them.

Owns, for one gateway process: a worker thread with its own store handle and a ledger
writer (stream ``reviews@<gateway>``) running ``ReviewService``; the answer for each
statement a session holds (``proxy.review.ReviewDesk``); one poll of the store's review
epoch (every ``POLL_S``) that wakes the sessions waiting on a review whichever process
decided it (another gateway, the API, the CLI); expiring what is due; and draining the
notification outbox to the configured webhooks (``services.notify``), each attempt a
``review.notified`` entry.

The answer for a held statement:
1. an approval already given for exactly this statement, parameters, identity and
   connection, unused and still valid, is used (once): it runs;
2. otherwise a review is requested. ``wait: answer``: the statement fails at once with
   the review's id (send it again once approved); ``wait: hold``: the client gets a
   NOTICE naming the review and how to approve it, and waits until it is approved (it
   runs), denied (it fails naming the reviewer and the reason), or the rule's
   ``timeout`` passes (the review is cancelled; it fails saying so). A cancelled wait
   (a CancelRequest, the client gone) cancels the review.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.review import GATEWAY, Review, ReviewError, binding_hash
from ledgergate.proxy.review import ReviewAnswer, ReviewAsk
from ledgergate.services.changes import ChangeFeed
from ledgergate.services.config import Settings
from ledgergate.services.reviews import ReviewService
from ledgergate.services.worker import LedgerWorker
from ledgergate.store import Store

__all__ = ["POLL_S", "GatewayReviewDesk"]

log = logging.getLogger("ledgergate")
T = TypeVar("T")

# How often the store's review epoch is polled: a decision made anywhere reaches the
# held statement within about this long.
POLL_S = 0.25
# Due reviews (pending past their time, approvals unused, windows closed) are expired
# and the outbox drained this often.
SWEEP_S = 2.0
OUTBOX_BATCH = 50
OUTBOX_LEASE_NS = 120 * 1_000_000_000
# A failed delivery (after the notifier's own retries) is tried again this much later.
OUTBOX_RETRY_NS = 60 * 1_000_000_000


class GatewayReviewDesk:
    def __init__(
        self,
        settings: Settings,
        signer: Signer,
        *,
        console_url: str = "",
        notifier: Any = None,
    ) -> None:
        self.settings = settings
        self.config = settings.config
        self.console_url = console_url.rstrip("/")
        self._signer = signer
        self.notifier = notifier  # services.notify.Notifier, or None (no webhooks)
        self.attempts: list[dict[str, Any]] = []  # the notifier's records of the drain
        self._worker = LedgerWorker(
            settings.open_store, f"reviews@{settings.gateway_name}", signer, name="review"
        )
        self._waiting: dict[str, list[asyncio.Future[Review]]] = {}
        self._poll: asyncio.Task[None] | None = None
        # Set by the gateway: the access windows its open sessions were admitted in, and
        # how to end those sessions when a window is ended early or cancelled.
        self.windows_in_use: Callable[[], set[str]] = set
        self.close_window: Callable[[str, str], object] = lambda review_id, why: None
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by the gateway: wake-ups from the store's change notices.
        self.changes = ChangeFeed(settings.open_store)
        self._owner = f"{settings.gateway_name}:{id(self):x}"

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self._worker.start()
        self._poll = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        await self._worker.close()
        if self.notifier is not None:
            await self.notifier.aclose()

    @property
    def _store(self) -> Store | None:
        return self._worker.store

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await self._worker.run(fn, *args, **kw)

    async def _svc(self, fn: Callable[[ReviewService], T]) -> T:
        return await self._worker.call(lambda st, w: fn(ReviewService(st, w, self.config)))

    # -- held statements ----------------------------------------------------------------
    def link(self, review_id: str) -> str:
        return f"{self.console_url}/reviews/{review_id}" if self.console_url else ""

    async def ask(self, ask: ReviewAsk, notice: Callable[[str], None]) -> ReviewAnswer:
        action = ask.rule.review
        assert action is not None
        binding = binding_hash(ask.identity, ask.connection, ask.statement, ask.params)

        def consume(svc: ReviewService) -> Review | None:
            return svc.consume_command(
                identity=ask.identity,
                connection=ask.connection,
                binding=binding,
                session_id=ask.session_id,
                now_ns=time.time_ns(),
            )

        used = await self._svc(consume)
        if used is not None:
            return ReviewAnswer(True, review_id=used.id)
        review = await self._svc(
            lambda svc: svc.request_command(
                identity=ask.identity,
                groups=ask.groups,
                connection=ask.connection,
                rule=ask.rule,
                statement=ask.statement,
                params=ask.params,
                session_id=ask.session_id,
                now_ns=time.time_ns(),
            )
        )
        how = f"approve with `ledgergate reviews approve {review.id} --reason ...`"
        if link := self.link(review.id):
            how += f" or at {link}"
        if action.wait == "answer":
            return ReviewAnswer(
                False,
                f"review {review.id} required ({how}); send the statement again once approved",
                review_id=None,
            )
        notice(f"ledgergate: review {review.id} required by rule {ask.rule.id} — {how}")
        timeout = action.seconds("timeout")
        try:
            decided = await asyncio.wait_for(self._until_decided(review.id), timeout)
        except asyncio.CancelledError:
            await self._withdraw(review.id, "the client withdrew the statement")
            raise
        except TimeoutError:
            await self._withdraw(review.id, f"nobody decided within {action.timeout}")
            return ReviewAnswer(False, f"review {review.id} timed out after {action.timeout}")
        if decided.state == "approved":
            used = await self._svc(consume)
            if used is not None:
                return ReviewAnswer(True, review_id=used.id)
            return ReviewAnswer(False, f"review {review.id}'s approval could not be used")
        if decided.state == "denied":
            d = next((x for x in decided.decisions if not x.approve), None)
            who = f" by {d.reviewer}: {d.reason}" if d is not None else ""
            return ReviewAnswer(False, f"review {review.id} denied{who}")
        return ReviewAnswer(False, f"review {review.id} {decided.state}")

    async def _withdraw(self, review_id: str, reason: str) -> None:
        def go(svc: ReviewService) -> None:
            with contextlib.suppress(ReviewError):  # decided meanwhile: nothing to withdraw
                svc.cancel(review_id, actor=GATEWAY, reason=reason, now_ns=time.time_ns())

        try:
            await self._svc(go)
        except Exception:
            log.exception("withdrawing review %s failed", review_id)

    async def _until_decided(self, review_id: str) -> Review:
        fut: asyncio.Future[Review] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(review_id, []).append(fut)
        try:
            # Decided before we started waiting? (The poll only sees later changes.)
            now = await self._svc(lambda svc: svc.get(review_id))
            if now is not None and now.state != "pending":
                return now
            return await fut
        finally:
            waiters = self._waiting.get(review_id, [])
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiting.pop(review_id, None)

    # -- access windows -----------------------------------------------------------------
    async def access_window(
        self, identity: str, groups: tuple[str, ...], connection: str
    ) -> tuple[bool, Review | None, str | None]:
        """At connect: (may connect, the window it connects in, why not). Where an
        access review rule applies, only inside an approved window (made active now)."""

        def go(svc: ReviewService) -> tuple[bool, Review | None, str | None]:
            rule = svc.access_rule(groups, connection)
            if rule is None:
                return True, None, None
            r = svc.active_access(identity=identity, connection=connection, now_ns=time.time_ns())
            if r is None:
                return (
                    False,
                    None,
                    f"connection {connection!r} needs an approved access request (rule "
                    f"{rule.id}): ledgergate request access {connection} --for 30m "
                    '--reason "..."',
                )
            return True, r, None

        return await self._svc(go)

    def used(self, review_id: str, session_id: str) -> None:
        """Evidence: ``session_id`` was opened in the access window of ``review_id``."""

        async def go() -> None:
            try:
                await self._svc(
                    lambda svc: svc.record_execution(
                        review_id, session_id=session_id, ts_ns=time.time_ns()
                    )
                )
            except Exception:
                log.exception("recording session %s under review %s failed", session_id, review_id)

        task = asyncio.get_running_loop().create_task(go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the poll -----------------------------------------------------------------------
    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        epoch = await self._svc(lambda svc: svc.epoch())
        last_sweep = 0.0
        while True:
            await self.changes.wait(("review",), min(self.changes.interval(POLL_S), SWEEP_S))
            try:
                if loop.time() - last_sweep >= SWEEP_S:
                    last_sweep = loop.time()
                    await self._svc(lambda svc: svc.expire_due(time.time_ns()))
                    await self._drain()
                now = await self._svc(lambda svc: svc.epoch())
                windows = self.windows_in_use()
                if now == epoch or not (self._waiting or windows):
                    epoch = now
                    continue
                epoch = now
                ids = list(self._waiting)
                got = await self._svc(partial(_states, ids=[*ids, *windows]))
                for rid in ids:
                    r = got.get(rid)
                    if r is not None and r.state != "pending":
                        for fut in self._waiting.pop(rid, []):
                            if not fut.done():
                                fut.set_result(r)
                for rid in windows:
                    r = got.get(rid)
                    if r is None or r.state not in ("approved", "active"):
                        state = "gone" if r is None else r.state
                        self.close_window(rid, f"the access window of review {rid} was {state}")
            except Exception:  # the store is busy or gone: keep serving, try again
                log.exception("the review poll failed; retrying")

    async def _drain(self) -> None:
        """Deliver due outbox rows to the webhooks, recording each attempt."""
        if self.notifier is None:
            return
        from ledgergate.core.config import NOTIFY_EVENTS

        def claim(svc: ReviewService) -> list[Any]:
            assert self._store is not None
            return self._store.claim_outbox(
                self._owner, time.time_ns(), OUTBOX_BATCH, OUTBOX_LEASE_NS
            )

        rows = await self._svc(claim)
        for row in rows:
            if row.event not in NOTIFY_EVENTS:  # a partial vote, a use: nobody to tell
                await self._run(self._mark, row.id, None)
                continue
            self.attempts.clear()
            try:
                results = await self.notifier.deliver(row.event, json.loads(row.body))
                ok = all(r.ok for r in results)
            except Exception as e:  # a malformed body: recorded, not retried forever
                log.error("notification %s for review %s failed: %r", row.event, row.review_id, e)
                results, ok = [], False
            summary = [
                {
                    "target": r.target,
                    "delivered": r.ok,
                    "attempts": r.attempts,
                    "status": r.status,
                    "error": r.error,
                }
                for r in results
            ]
            tried = [dict(a) for a in self.attempts]
            await self._run(self._record, row, summary, tried)
            await self._run(self._mark, row.id, None if ok else "delivery failed")

    def _record(
        self, row: Any, deliveries: list[dict[str, Any]], attempts: list[dict[str, Any]]
    ) -> None:
        writer = self._worker.writer
        assert writer is not None
        now = time.time_ns()
        writer.append(
            [
                Draft(
                    now,
                    "review.notified",
                    {
                        "review": {"id": row.review_id},
                        "event": row.event,
                        "deliveries": deliveries,
                        "attempts": attempts,
                    },
                )
            ],
            now,
        )

    def _mark(self, row_id: int, error: str | None) -> None:
        assert self._store is not None
        now = time.time_ns()
        if error is None:
            self._store.mark_outbox_delivered(row_id, now)
        else:
            self._store.mark_outbox_failed(row_id, error, now + OUTBOX_RETRY_NS)


def _states(svc: ReviewService, ids: list[str]) -> dict[str, Review | None]:
    return {i: svc.get(i) for i in ids}
