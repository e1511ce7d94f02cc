"""The ledger sink: group commit, ordering, backpressure and fail-closed behaviour,
with a real in-memory writer (no mocks of the sink itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ledgergate.core.ledger.entry import Draft
from ledgergate.proxy.sink import CHUNK_EAGER, LedgerSink, LedgerUnavailable


class ListWriter:
    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[list[Draft]] = []
        self.fail_after = fail_after
        self.checkpoints = 0
        self.closed = False
        self.congested = False
        self.drained: Callable[[], None] | None = None

    def on_drained(self, cb: Callable[[], None]) -> None:
        self.drained = cb

    def append(self, drafts: list[Draft], now_ns: int) -> None:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise OSError("disk full")
        self.batches.append(list(drafts))

    def checkpoint(self, now_ns: int) -> None:
        self.checkpoints += 1

    def close(self, now_ns: int) -> None:
        self.closed = True


def d(kind: str, n: int) -> Draft:
    return Draft(n, kind, {"n": n})


@pytest.mark.parametrize("threaded", [False, True])
def test_group_commit_keeps_order_and_reports_commits(threaded: bool) -> None:
    async def go() -> ListWriter:
        w = ListWriter()
        sink = LedgerSink(
            lambda: w,
            depth=100,
            checkpoint_seconds=60,
            loop=asyncio.get_running_loop(),
            threaded=threaded,
        )
        await sink.start()
        done: list[int] = []
        sink.submit([d("chunk", 1)])
        sink.submit([d("command", 2)], lambda err: done.append(2) if err is None else None)
        sink.submit([d("command", 3)], lambda err: done.append(3) if err is None else None)
        await sink.commit([d("session.open", 4)])
        assert done == [2, 3]
        await sink.close()
        return w

    w = asyncio.run(go())
    flat = [x.ts_ns for b in w.batches for x in b]
    assert flat == [1, 2, 3, 4]
    assert w.closed


def test_chunks_alone_are_committed_soon_without_a_command() -> None:
    async def go() -> ListWriter:
        w = ListWriter()
        sink = LedgerSink(
            lambda: w, depth=10_000, checkpoint_seconds=60, loop=asyncio.get_running_loop()
        )
        await sink.start()
        sink.submit([d("chunk", 1)])
        assert w.batches == []  # waits for a command commit or the short timer
        await asyncio.sleep(0.05)
        assert [x.ts_ns for b in w.batches for x in b] == [1]
        for i in range(CHUNK_EAGER):
            sink.submit([d("chunk", 10 + i)])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await sink.close()
        return w

    w = asyncio.run(go())
    assert sum(len(b) for b in w.batches) == 1 + CHUNK_EAGER


def test_fail_closed_when_the_ledger_cannot_be_written() -> None:
    async def go() -> None:
        w = ListWriter(fail_after=1)
        sink = LedgerSink(
            lambda: w, depth=100, checkpoint_seconds=60, loop=asyncio.get_running_loop()
        )
        await sink.start()
        failures: list[BaseException] = []
        sink.on_failure.append(failures.append)
        await sink.commit([d("command", 1)])  # first batch is written
        errors: list[BaseException | None] = []
        sink.submit([d("command", 2)], errors.append)
        with pytest.raises(LedgerUnavailable):
            await sink.commit([d("command", 3)])
        assert len(errors) == 1 and errors[0] is not None
        assert failures and "disk full" in str(failures[0])
        with pytest.raises(LedgerUnavailable):
            sink.submit([d("chunk", 4)])
        await sink.close()

    asyncio.run(go())


def test_a_writer_that_cannot_open_refuses_to_start() -> None:
    def broken() -> ListWriter:
        raise OSError("read-only file system")

    async def go() -> None:
        sink = LedgerSink(broken, depth=10, checkpoint_seconds=60, loop=asyncio.get_running_loop())
        with pytest.raises(LedgerUnavailable, match="cannot be opened"):
            await sink.start()

    asyncio.run(go())


def test_a_lagging_store_pauses_sessions_until_it_drains() -> None:
    """The writer's store may lag its journal; while it lags too far the sink reports
    congestion, and sessions resume when the writer says it drained (from its thread)."""

    async def go() -> list[str]:
        w = ListWriter()
        loop = asyncio.get_running_loop()
        sink = LedgerSink(lambda: w, depth=100, checkpoint_seconds=60, loop=loop)
        await sink.start()
        events: list[str] = []
        w.congested = True
        assert sink.congested
        sink.when_uncongested(lambda: events.append("resumed"))
        await sink.commit([d("command", 1)])
        assert events == []  # a commit alone does not resume while the store lags
        w.congested = False
        assert w.drained is not None
        await loop.run_in_executor(None, w.drained)  # the indexer's thread
        await asyncio.sleep(0.01)
        await sink.close()
        return events

    assert asyncio.run(go()) == ["resumed"]
