"""Sending the insights report on a schedule (``insights.webhook``, every ``insights.every``).

A runtime addon of the first gateway process: it looks once a minute whether the last
report it sent (``<data_dir>/insights/last.json``) is older than ``every``; if so, it
builds the report for the period that just ended (``insights.period``, default
``every``) from the store, on its own thread, and POSTs it as JSON:
``{"kind": "ledgergate.insights", "since_ns", "until_ns", "text": <Markdown>, "insights":
<the findings>}``. A webhook that fails is tried again at the next look; the time is
recorded only once one took it. Gateways side by side each send their own, so configure
the webhook on one of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from ledgergate.core.config import parse_duration
from ledgergate.services.config import Settings, resolve_secret
from ledgergate.services.insights import InsightsOptions, collect
from ledgergate.services.insights_report import render_markdown

if TYPE_CHECKING:
    from ledgergate.services.gateway import GatewayRuntime

__all__ = ["InsightsSender"]

log = logging.getLogger("ledgergate.insights")

# How often the schedule is looked at.
LOOK_EVERY_S = 60.0
# A webhook must answer within this long.
SEND_TIMEOUT_S = 30.0


class InsightsSender:
    def __init__(self, settings: Settings, *, look_every_s: float = LOOK_EVERY_S) -> None:
        cfg = settings.config.insights
        assert cfg.webhook is not None
        self.settings = settings
        self.url = resolve_secret(cfg.webhook, what="insights.webhook") or ""
        token = resolve_secret(cfg.token, what="insights.token") if cfg.token else None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.every_ns = parse_duration(cfg.every)
        self.period_ns = parse_duration(cfg.period) if cfg.period else self.every_ns
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else True
        )
        self.look_every_s = look_every_s
        self.state_path = settings.data_dir / "insights" / "last.json"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="insights")
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, runtime: GatewayRuntime) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self._pool.shutdown(wait=True)

    def _last(self) -> int:
        try:
            return int(json.loads(self.state_path.read_text())["sent_until_ns"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _build(self, now: int) -> dict[str, Any]:
        store = self.settings.open_store()
        try:
            ins = collect(store, InsightsOptions(now - self.period_ns, now, now_ns=now))
        finally:
            store.close()
        return {
            "kind": "ledgergate.insights",
            "gateway": self.settings.gateway_name,
            "since_ns": now - self.period_ns,
            "until_ns": now,
            "text": render_markdown(ins),
            "insights": ins.as_dict(),
        }

    async def send_if_due(self) -> bool:
        now = time.time_ns()
        if now - self._last() < self.every_ns:
            return False
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._pool, self._build, now)
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S, verify=self.verify) as client:
            r = await client.post(self.url, json=body, headers=self.headers)
            r.raise_for_status()
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps({"sent_until_ns": now}))
        log.info("insights report sent")
        return True

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.send_if_due()
            except (httpx.HTTPError, OSError) as e:
                log.warning("the insights webhook did not take the report: %s", type(e).__name__)
            except Exception:
                log.exception("building the insights report failed")
            try:
                async with asyncio.timeout(self.look_every_s):
                    await self._stop.wait()
            except TimeoutError:
                pass
