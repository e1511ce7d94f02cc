"""Change notices as wake-ups: on a PostgreSQL store a change committed by any handle
wakes the watcher of its kind at once; on SQLite the watcher simply polls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ledgergate.services.changes import BACKSTOP_S, ChangeFeed
from ledgergate.store import PolicyRuleRow, open_store
from tests.storeserver import STORE_PASSWORD, fresh_store_url


def test_a_commit_anywhere_wakes_the_watcher_of_its_kind() -> None:
    url, _ = fresh_store_url("postgresql")

    def opener() -> object:
        return open_store(url, password=STORE_PASSWORD)

    async def main() -> None:
        mine = open_store(url, password=STORE_PASSWORD)
        other = open_store(url, password=STORE_PASSWORD)
        feed = ChangeFeed(opener)  # type: ignore[arg-type]
        feed.start(mine)
        try:
            assert feed.notices and feed.interval(0.25) == BACKSTOP_S
            await feed.wait(("access", "policy", "review"), 2)  # the listener is up
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, other.bump_access_epoch)
            assert await feed.wait(("access",), 5) is True
            assert time.monotonic() - t0 < 1.0
            # another kind does not wake this watcher, and its own wake-up waits for it
            rule = PolicyRuleRow("r", "{}", 0, 1, None, 1, None)
            await loop.run_in_executor(None, other.put_policy_rule, rule)
            assert await feed.wait(("access",), 0.5) is False
            assert await feed.wait(("policy",), 5) is True
        finally:
            await asyncio.get_running_loop().run_in_executor(None, feed.stop)
            mine.close()
            other.close()

    asyncio.run(main())


def test_sqlite_has_no_notices_and_polls(tmp_path: Path) -> None:
    st = open_store(f"sqlite://{tmp_path / 'l.db'}")

    async def main() -> None:
        feed = ChangeFeed(lambda: st)
        feed.start(st)
        assert not feed.notices and feed.interval(0.25) == 0.25
        t0 = time.monotonic()
        assert await feed.wait(("access",), 0.2) is False
        assert time.monotonic() - t0 >= 0.19

    asyncio.run(main())
    st.close()
