"""The continuous SIEM forwarder: the gateway's entries sent to a SIEM as they are written,
at least once, nothing lost across restarts.

A runtime addon per ``siem:`` target. Every round it reads, from the store (its own handle
on its own thread), the entries of the gateway's streams past its cursor, maps each with
``services.siem`` (CEF or OCSF), sends them in order, and moves its cursor
(``<data_dir>/siem/<n>-<type>.json``: stream -> next seq) only once the target took them.
A target that is down is retried every round from the same place, so a restart or an
outage delays events and never drops one; what was sent but not yet recorded in the
cursor when the gateway died is sent again (at least once). The final entries, written
as the gateway stops, are sent before it exits. The hot path never waits for a SIEM.

Syslog: one RFC 5424 message per entry (MSGID the entry kind, structured data
``[entry@32473 stream seq hash]``, the CEF line or OCSF JSON as the message), over TCP
with TLS. HTTPS: OCSF events as a JSON array per batch, with a bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from ledgergate.core.config import SiemSettings
from ledgergate.services import siem
from ledgergate.services.config import Settings, resolve_secret
from ledgergate.services.cursor import CursorFile
from ledgergate.services.syslog_out import send_syslog
from ledgergate.store.base import Store
from ledgergate.wire import syslog

if TYPE_CHECKING:
    from ledgergate.services.gateway import GatewayRuntime

__all__ = ["SiemForwarder"]

log = logging.getLogger("ledgergate.siem")

# How often new entries are looked for.
FORWARD_INTERVAL_S = 1.0
# Entries read and sent per stream per round at most (a SIEM back after an outage
# catches up over several rounds).
BATCH = 2000
# A target that does not take a batch within this long is tried again next round.
SEND_TIMEOUT_S = 30.0
# Failures of one target are logged at most this often.
LOG_EVERY_S = 60.0
_SD_ID = "entry@32473"  # a documentation enterprise number (RFC 5612)
_CHUNK = b'"kind":"chunk"'


class SiemForwarder:
    def __init__(
        self, settings: Settings, index: int, target: SiemSettings, streams: Sequence[str]
    ):
        self.settings = settings
        self.target = target
        self.streams = list(streams)
        # one cursor per process: relay workers each forward their own stream
        self.name = f"{index}-{target.type}" + (f".w{settings.worker}" if settings.worker else "")
        self.cursor_file = CursorFile(settings.data_dir / "siem" / f"{self.name}.json")
        self.cursor = self.cursor_file.at
        self.tls: ssl.SSLContext | None = None
        if target.tls and target.type == "syslog":
            self.tls = ssl.create_default_context(cafile=target.ca_file)
        self.token = (
            resolve_secret(target.token, what=f"siem.{index}.token") if target.token else None
        )
        self.version = siem.product_version()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="siem")
        self._store: Store | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._logged_at = 0.0
        self.sent = 0

    # -- the addon -------------------------------------------------------------------------
    async def start(self, runtime: GatewayRuntime) -> None:
        runtime.after_ledger.append(self.close)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        """After the ledger closed: send what is left, then let go."""
        for _ in range(100):  # bounded: a long backlog is the next start's
            if not await self.forward_once():
                break
        if self._store is not None:
            self._pool.submit(self._store.close)
        self._pool.shutdown(wait=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = await self.forward_once()
            except Exception:
                log.exception("forwarding to the SIEM failed")
                busy = 0
            if busy:
                continue  # a backlog: go on at once
            try:
                async with asyncio.timeout(FORWARD_INTERVAL_S):
                    await self._stop.wait()
            except TimeoutError:
                pass

    # -- one round ---------------------------------------------------------------------------
    def _read(self) -> dict[str, list[tuple[int, bytes, bytes]]]:
        if self._store is None:
            self._store = self.settings.open_store()
        st = self._store
        out: dict[str, list[tuple[int, bytes, bytes]]] = {}
        fresh = False
        for stream in self.streams:
            top = st.max_seq(stream)
            if stream not in self.cursor:
                # first run: from the stream's end, or its beginning (kept at once, so a
                # crash before the first send cannot move "now" past unsent entries)
                self.cursor[stream] = (
                    0 if self.target.start_at == "beginning" or top is None else top + 1
                )
                fresh = True
            start = self.cursor[stream]
            if top is None or start > top:
                continue
            out[stream] = list(st.iter_entries(stream, start, min(start + BATCH, top + 1)))
        if fresh:
            self.cursor_file.save()
        return out

    async def forward_once(self) -> int:
        """Send each stream's next batch; how many entries were sent."""
        loop = asyncio.get_running_loop()
        batches = await loop.run_in_executor(self._pool, self._read)
        sent = 0
        for stream, rows in batches.items():
            if not rows:
                continue
            events = [
                (orjson.loads(data), h.hex())
                for _, data, h in rows
                if self.target.include_chunks or _CHUNK not in data
            ]
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self._send(stream, events)
            except (OSError, TimeoutError, ssl.SSLError, httpx.HTTPError) as e:
                self._failed(e)
                return sent
            self.cursor[stream] = rows[-1][0] + 1
            await loop.run_in_executor(self._pool, self._save)
            sent += len(rows)
            self.sent += len(events)
        return sent

    def _save(self) -> None:
        self.cursor_file.save()

    def _failed(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("SIEM %s does not take events: %s", self.name, type(e).__name__)

    async def _send(self, stream: str, events: list[tuple[dict[str, Any], str]]) -> None:
        if not events:
            return
        t = self.target
        if t.type == "syslog":
            assert t.address is not None
            await send_syslog(t.address, self.tls, [self._message(d, h) for d, h in events])
            return
        assert t.url is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=t.ca_file) if t.ca_file else True
        )
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S, verify=verify) as client:
            r = await client.post(
                t.url, json=[siem.ocsf_event(d, h) for d, h in events], headers=headers
            )
            r.raise_for_status()

    def _message(self, doc: dict[str, Any], entry_hash: str) -> bytes:
        kind = str(doc.get("kind") or "")
        text = (
            siem.cef_line(doc, entry_hash, version=self.version)
            if self.target.format == "cef"
            else siem.ocsf_json(doc, entry_hash)
        )
        return syslog.message(
            facility=syslog.FACILITY_AUTHPRIV,
            severity=syslog.SEVERITY_INFO,
            ts_ns=int(doc.get("ts_ns") or 0),
            hostname=self.settings.gateway_name.replace(" ", "-")[:255] or None,
            app_name=self.target.app_name,
            msgid=kind[:32] if kind and all("!" <= c <= "~" for c in kind) else None,
            data=[
                syslog.Element(
                    _SD_ID,
                    {
                        "stream": str(doc.get("stream")),
                        "seq": str(doc.get("seq")),
                        "hash": entry_hash,
                    },
                )
            ],
            msg=text,
        )
