"""Sending review notifications to webhooks: concurrent, retried, recorded.

Owns the ``Notifier``: it resolves each configured webhook's URL and secret once, builds
the body with ``core.notify`` (JSON signed with HMAC, or a Slack message), posts it to
every webhook subscribed to the event at the same time, and retries a failed attempt
with exponential backoff and jitter. Every attempt is passed to the ``record`` callback
(the caller writes it to the ledger) as::

    {"target", "format", "event", "review_id", "delivery_id", "attempt", "max_attempts",
     "outcome": "delivered" | "retry" | "failed", "status": int | None,
     "error": str | None, "duration_ms": int, "retry_in_ms": int | None}

``error`` is an exception's class name or ``http_<status>``; never the URL (a Slack URL is
a credential), the secret, the signature or a response body.

Retried: connection errors, timeouts (the attempt's whole request, not one read), 408,
429, 5xx; ``Retry-After`` is honoured up to ``retry_after_cap``. Not retried: any other
4xx and 3xx (redirects are not followed: a webhook URL that moved is a configuration
error, and following it would hand the signed body to another host). A webhook that is
slow or down never delays another one's delivery, and nothing it does raises out of
``deliver``; a malformed review (a caller's bug) raises ``NotifyError`` before any send.
``deliver`` returns when every webhook has succeeded or given up, so a caller that must
not wait for that runs it in a task of its own.

Must not: log or record a secret, URL or body; follow redirects; read response bodies.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ledgergate.core.config import (
    ConfigError,
    NotificationSettings,
    WebhookSettings,
    check_http_url,
)
from ledgergate.core.notify import event_view, json_body, request_headers, slack_body
from ledgergate.services.config import resolve_secret

__all__ = ["DeliveryResult", "Notifier", "RecordFn"]

log = logging.getLogger("ledgergate.notify")

RecordFn = Callable[[dict[str, Any]], None]
SleepFn = Callable[[float], Awaitable[None]]
Outcome = Literal["delivered", "retry", "failed"]

USER_AGENT = "ledgergate-notify/1"
# Backoff before attempt n+1 is base * 2**(n-1), jittered to [half, all] of it, and
# never more than this: six attempts from a 1 s base span about half a minute, ten about
# eight minutes, which is as long as a pending review is worth chasing.
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0
# A receiver asking for a longer pause (Retry-After) is given at most this much.
DEFAULT_RETRY_AFTER_CAP_S = 120.0
_RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one webhook's delivery of one event ended."""

    target: str
    event: str
    review_id: str
    delivery_id: str
    ok: bool
    attempts: int
    status: int | None  # the last HTTP status, if any answer came
    error: str | None  # the last failure: an exception class name or http_<status>
    duration_ms: int  # from the first attempt to the end, backoff included


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    url: str
    format: Literal["json", "slack"]
    secret: str | None
    events: frozenset[str]
    timeout_s: float
    max_attempts: int

    def __repr__(self) -> str:  # the URL and the secret are credentials
        return f"_Target(name={self.name!r}, format={self.format!r})"


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    error: str | None
    retry: bool
    retry_after_s: float | None


class Notifier:
    """Delivers review events to the configured webhooks. Use as ``async with`` or call
    ``aclose()``; one instance is shared by every review of the process."""

    def __init__(
        self,
        settings: NotificationSettings,
        record: RecordFn,
        *,
        console_url: str | None = None,
        backoff_base: float = DEFAULT_BACKOFF_BASE_S,
        backoff_cap: float = DEFAULT_BACKOFF_CAP_S,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP_S,
        client: httpx.AsyncClient | None = None,
        sleep: SleepFn = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """``console_url`` is the base of the links when the settings name none (the
        caller passes the API's public URL). Secrets (``env:``/``file:``) are resolved
        here: a missing one raises ``ConfigError`` naming the key, at start."""
        base = settings.console_url or console_url
        if settings.webhooks and not base:
            raise ConfigError("notifications.console_url: needed for the links (no API URL)")
        if base:
            try:
                check_http_url(base)
            except ValueError as e:
                raise ConfigError(f"notifications.console_url: {e}") from None
        self.console_url = (base or "").rstrip("/")
        self.targets: tuple[_Target, ...] = tuple(
            _resolve(i, w) for i, w in enumerate(settings.webhooks)
        )
        self._record = record
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retry_after_cap = retry_after_cap
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def subscribed(self, event: str) -> list[str]:
        """The names of the webhooks that receive ``event``."""
        return [t.name for t in self.targets if event in t.events]

    async def deliver(
        self, event: str, review: Mapping[str, Any], *, include_statement: bool = True
    ) -> list[DeliveryResult]:
        """Post ``event`` about ``review`` to every subscribed webhook, concurrently;
        one result per webhook, in configuration order. ``include_statement=False``
        (the connection's recording level forbids statement text) sends its digest only.
        Raises only ``NotifyError`` (a malformed review or event), before any send, even
        when no webhook is subscribed."""
        view = event_view(event, review, include_statement=include_statement)
        targets = [t for t in self.targets if event in t.events]
        bodies: list[tuple[_Target, str, bytes]] = []
        for t in targets:  # every body is built first: a bad review sends nothing
            delivery_id = "dlv_" + secrets.token_hex(16)
            if t.format == "json":
                body = json_body(
                    event,
                    review,
                    console_url=self.console_url,
                    delivery_id=delivery_id,
                    include_statement=include_statement,
                )
            else:
                body = slack_body(
                    event, review, console_url=self.console_url, include_statement=include_statement
                )
            bodies.append((t, delivery_id, body))
        if not bodies:
            return []
        review_id: str = view["id"]
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._deliver_one(t, event, review_id, did, body))
                for t, did, body in bodies
            ]
        return [task.result() for task in tasks]

    async def _deliver_one(
        self, t: _Target, event: str, review_id: str, delivery_id: str, body: bytes
    ) -> DeliveryResult:
        start = time.monotonic()
        attempt, last = 0, _Attempt(None, None, False, None)
        while attempt < t.max_attempts:
            attempt += 1
            t0 = time.monotonic()
            last = await self._attempt(t, event, delivery_id, attempt, body)
            ok = last.error is None
            final = ok or not last.retry or attempt >= t.max_attempts
            delay = None if final else self._delay(attempt, last.retry_after_s)
            outcome: Outcome = "delivered" if ok else ("failed" if final else "retry")
            self._emit(
                {
                    "target": t.name,
                    "format": t.format,
                    "event": event,
                    "review_id": review_id,
                    "delivery_id": delivery_id,
                    "attempt": attempt,
                    "max_attempts": t.max_attempts,
                    "outcome": outcome,
                    "status": last.status,
                    "error": last.error,
                    "duration_ms": _ms(time.monotonic() - t0),
                    "retry_in_ms": None if delay is None else _ms(delay),
                }
            )
            if delay is None:
                break
            await self._sleep(delay)
        return DeliveryResult(
            target=t.name,
            event=event,
            review_id=review_id,
            delivery_id=delivery_id,
            ok=last.error is None,
            attempts=attempt,
            status=last.status,
            error=last.error,
            duration_ms=_ms(time.monotonic() - start),
        )

    async def _attempt(
        self, t: _Target, event: str, delivery_id: str, attempt: int, body: bytes
    ) -> _Attempt:
        headers = request_headers(
            event=event,
            delivery_id=delivery_id,
            attempt=attempt,
            body=body,
            secret=t.secret,
            timestamp=int(self._clock()),
        )
        try:
            async with asyncio.timeout(t.timeout_s):
                req = self._client.build_request(
                    "POST", t.url, content=body, headers=headers, timeout=t.timeout_s
                )
                resp = await self._client.send(req, stream=True)  # the body is never read
                await resp.aclose()
        except (TimeoutError, httpx.TimeoutException) as e:
            name = "Timeout" if isinstance(e, TimeoutError) else type(e).__name__
            return _Attempt(None, name, True, None)
        except httpx.TransportError as e:  # connection refused, reset, TLS, protocol
            return _Attempt(None, type(e).__name__, True, None)
        except Exception as e:  # a bug here must not cancel the other webhooks
            log.warning("webhook %s: unexpected %s", t.name, type(e).__name__)
            return _Attempt(None, type(e).__name__, False, None)
        code = resp.status_code
        if 200 <= code < 300:
            return _Attempt(code, None, False, None)
        retry = code in _RETRY_STATUSES or code >= 500
        after = _retry_after(resp.headers.get("Retry-After"), self._clock()) if retry else None
        return _Attempt(code, f"http_{code}", retry, after)

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        step = min(self._backoff_cap, self._backoff_base * (1 << (attempt - 1)))
        delay = step / 2 + self._rng.uniform(0, step / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._retry_after_cap))
        return delay

    def _emit(self, delivery: dict[str, Any]) -> None:
        try:
            self._record(delivery)
        except Exception as e:  # the caller's ledger; one failure must not stop sending
            log.error(
                "webhook %s: recording attempt %d failed: %s",
                delivery["target"],
                delivery["attempt"],
                type(e).__name__,
            )


def _resolve(i: int, w: WebhookSettings) -> _Target:
    where = f"notifications.webhooks.{i}"
    url = resolve_secret(w.url, what=f"{where}.url") or ""
    try:
        check_http_url(url)
    except ValueError as e:
        raise ConfigError(f"{where}.url: {e}") from None
    secret = resolve_secret(w.secret, what=f"{where}.secret")
    if w.format == "json" and not secret:
        raise ConfigError(f"{where}.secret: empty (the HMAC key of a json webhook)")
    return _Target(
        name=w.name,
        url=url,
        format=w.format,
        secret=secret or None,
        events=frozenset(w.events),
        timeout_s=w.timeout_ns / 1e9,
        max_attempts=w.max_attempts,
    )


def _retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
