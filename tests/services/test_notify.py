"""The notifier against real HTTP receivers on 127.0.0.1: signed delivery, retries with
backoff, Retry-After, timeouts, non-retried refusals, concurrency, what is recorded, and
the Slack message as it arrives."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ledgergate.core.config import ConfigError, NotificationSettings, parse_config
from ledgergate.core.notify import NotifyError, SignatureError, verify_signature
from ledgergate.services.notify import DeliveryResult, Notifier
from tests.core.test_notify import command_review, decided

CONSOLE = "https://gw.example:8443"
SECRET = "whsec-receiver-secret"
BASE = 0.01  # backoff base in tests: 10 ms, 20 ms, 40 ms ...

# A scripted answer: a status, (status, headers), or "hang" (answer nothing until the
# test ends; the notifier's timeout fires first).
Answer = int | tuple[int, dict[str, str]] | str


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: str  # "ok", the SignatureError's message, or "unsigned"
    at: float


@dataclass
class Receiver:
    """A webhook receiver: answers from ``script`` in order, then ``then``."""

    script: list[Answer]
    secret: str | None = SECRET
    then: Answer = 200
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        sig = headers.get("X-Ledgergate-Signature")
        if self.secret is None:
            verified = "unsigned" if sig is None else "signed"
        else:
            try:
                verify_signature(self.secret, sig, body, time.time())
                verified = "ok"
            except SignatureError as e:
                verified = str(e)
        with self.lock:
            self.seen.append(Seen(path, headers, body, verified, time.monotonic()))
            return self.script.pop(0) if self.script else self.then

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(s.body) for s in self.seen]


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            ans = rx.answer(self.path, dict(self.headers.items()), body)
            if ans == "hang":
                rx.release.wait(10)
                return
            status, headers = ans if isinstance(ans, tuple) else (ans, {})
            assert isinstance(status, int)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receivers() -> Iterator[Any]:
    started: list[tuple[ThreadingHTTPServer, Receiver, threading.Thread]] = []

    def start(*script: Answer, secret: str | None = SECRET, then: Answer = 200) -> Receiver:
        rx = Receiver(list(script), secret, then)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rx))
        server.daemon_threads = True
        server.block_on_close = False
        t = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        t.start()
        rx.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        started.append((server, rx, t))
        return rx

    yield start
    for server, rx, t in started:
        rx.release.set()
        server.shutdown()
        server.server_close()
        t.join(5)


def hook(rx: Receiver | str, name: str = "hook", **kw: Any) -> dict[str, Any]:
    url = rx if isinstance(rx, str) else rx.url
    return {"name": name, "url": url, "secret": SECRET, **kw}


def notif(*hooks: dict[str, Any], console: str | None = CONSOLE) -> NotificationSettings:
    top: dict[str, Any] = {"webhooks": list(hooks)}
    if console:
        top["console_url"] = console
    return parse_config({"notifications": top}).notifications


class Run:
    """A notifier with a recording ``record`` and ``sleep`` (which does sleep)."""

    def __init__(self, settings: NotificationSettings, **kw: Any) -> None:
        self.records: list[dict[str, Any]] = []
        self.delays: list[float] = []
        kw.setdefault("backoff_base", BASE)
        self.notifier = Notifier(settings, self.records.append, sleep=self.sleep, **kw)

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(min(seconds, 0.05))  # Retry-After tests ask for seconds

    def deliver(self, event: str, review: dict[str, Any], **kw: Any) -> list[DeliveryResult]:
        async def go() -> list[DeliveryResult]:
            async with self.notifier as n:
                return await n.deliver(event, review, **kw)

        return asyncio.run(go())

    def outcomes(self, target: str = "hook") -> list[tuple[int, str, int | None, str | None]]:
        return [
            (r["attempt"], r["outcome"], r["status"], r["error"])
            for r in self.records
            if r["target"] == target
        ]


# -- delivery ---------------------------------------------------------------------------


def test_a_signed_json_delivery(receivers: Any) -> None:
    rx = receivers()
    run = Run(notif(hook(rx)))
    (res,) = run.deliver("requested", command_review())
    assert res.ok and res.attempts == 1 and res.status == 200 and res.error is None
    assert res.target == "hook" and res.event == "requested" and res.review_id == "rev_01"
    (seen,) = rx.seen
    assert seen.verified == "ok" and seen.path == "/hook"
    assert seen.headers["X-Ledgergate-Event"] == "requested"
    assert seen.headers["X-Ledgergate-Delivery"] == res.delivery_id
    assert seen.headers["X-Ledgergate-Attempt"] == "1"
    assert seen.headers["Content-Type"] == "application/json"
    body = json.loads(seen.body)
    assert body["delivery_id"] == res.delivery_id and body["review"]["id"] == "rev_01"
    assert body["links"]["approve"] == f"{CONSOLE}/reviews/rev_01?action=approve"
    (rec,) = run.records
    assert rec == {
        "target": "hook",
        "format": "json",
        "event": "requested",
        "review_id": "rev_01",
        "delivery_id": res.delivery_id,
        "attempt": 1,
        "max_attempts": 6,
        "outcome": "delivered",
        "status": 200,
        "error": None,
        "duration_ms": rec["duration_ms"],
        "retry_in_ms": None,
    }
    assert isinstance(rec["duration_ms"], int) and rec["duration_ms"] >= 0
    assert run.delays == []


def test_server_errors_are_retried_with_exponential_backoff(receivers: Any) -> None:
    rx = receivers(500, 503)
    run = Run(notif(hook(rx)))
    (res,) = run.deliver("requested", command_review())
    assert res.ok and res.attempts == 3 and res.status == 200
    assert run.outcomes() == [
        (1, "retry", 500, "http_500"),
        (2, "retry", 503, "http_503"),
        (3, "delivered", 200, None),
    ]
    # jitter keeps each delay within [half, all] of base * 2**(n-1)
    assert len(run.delays) == 2
    for n, d in enumerate(run.delays, 1):
        assert BASE * 2 ** (n - 1) / 2 <= d <= BASE * 2 ** (n - 1)
    assert [r["retry_in_ms"] for r in run.records] == [round(d * 1000) for d in run.delays] + [None]
    # one delivery: the same id and body on every attempt, each attempt signed afresh
    assert [s.verified for s in rx.seen] == ["ok"] * 3
    assert len({s.headers["X-Ledgergate-Delivery"] for s in rx.seen}) == 1
    assert len({s.body for s in rx.seen}) == 1
    assert [s.headers["X-Ledgergate-Attempt"] for s in rx.seen] == ["1", "2", "3"]


def test_giving_up_after_max_attempts(receivers: Any) -> None:
    rx = receivers(then=502)
    run = Run(notif(hook(rx, max_attempts=4)))
    (res,) = run.deliver("requested", command_review())
    assert not res.ok and res.attempts == 4 and res.status == 502 and res.error == "http_502"
    assert len(rx.seen) == 4 and len(run.delays) == 3
    assert [o for _, o, _, _ in run.outcomes()] == ["retry", "retry", "retry", "failed"]


def test_backoff_is_capped() -> None:
    n = Notifier(notif(), lambda _: None, backoff_base=1.0, backoff_cap=4.0)
    assert all(2.0 <= n._delay(a, None) <= 4.0 for a in range(3, 20))
    assert 0.5 <= n._delay(1, None) <= 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_client_errors_are_not_retried(receivers: Any, status: int) -> None:
    rx = receivers(status)
    run = Run(notif(hook(rx)))
    (res,) = run.deliver("requested", command_review())
    assert not res.ok and res.attempts == 1 and res.status == status
    assert run.outcomes() == [(1, "failed", status, f"http_{status}")]
    assert len(rx.seen) == 1 and run.delays == []


def test_408_and_429_are_retried(receivers: Any) -> None:
    rx = receivers(408, 429)
    run = Run(notif(hook(rx)))
    (res,) = run.deliver("requested", command_review())
    assert res.ok and res.attempts == 3
    assert [s for _, _, s, _ in run.outcomes()] == [408, 429, 200]


def test_retry_after_is_honoured_up_to_the_cap(receivers: Any) -> None:
    rx = receivers((429, {"Retry-After": "2"}), (503, {"Retry-After": "3600"}))
    run = Run(notif(hook(rx)), retry_after_cap=30.0)
    (res,) = run.deliver("requested", command_review())
    assert res.ok and res.attempts == 3
    assert run.delays == [2.0, 30.0]
    assert [r["retry_in_ms"] for r in run.records] == [2000, 30000, None]


def test_retry_after_as_an_http_date(receivers: Any) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 20))
    rx = receivers((429, {"Retry-After": when}))
    run = Run(notif(hook(rx)))
    (res,) = run.deliver("requested", command_review())
    assert res.ok and 15 <= run.delays[0] <= 21


def test_a_hanging_receiver_times_out_and_is_retried(receivers: Any) -> None:
    rx = receivers("hang")
    run = Run(notif(hook(rx, timeout="200ms")))
    t0 = time.monotonic()
    (res,) = run.deliver("requested", command_review())
    assert res.ok and res.attempts == 2
    ((_, outcome, status, error), _) = run.outcomes()
    assert outcome == "retry" and status is None and error in ("Timeout", "ReadTimeout")
    assert 150 <= run.records[0]["duration_ms"] < 2000
    assert time.monotonic() - t0 < 3


def test_a_refused_connection_is_retried_and_reported_by_class() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = Run(notif(hook(f"http://127.0.0.1:{port}/hook", max_attempts=2)))
    (res,) = run.deliver("requested", command_review())
    assert not res.ok and res.attempts == 2 and res.status is None
    assert res.error == "ConnectError"
    assert run.outcomes() == [
        (1, "retry", None, "ConnectError"),
        (2, "failed", None, "ConnectError"),
    ]


def test_a_redirect_is_not_followed(receivers: Any) -> None:
    other = receivers()
    rx = receivers((302, {"Location": other.url}))
    run = Run(notif(hook(rx)))
    (res,) = run.deliver("requested", command_review())
    assert not res.ok and res.status == 302 and res.attempts == 1
    assert other.seen == []


def test_targets_are_delivered_concurrently_and_a_slow_one_blocks_none(receivers: Any) -> None:
    slow = receivers(then="hang")
    failing = receivers(then=500)
    fast = receivers()
    run = Run(
        notif(
            hook(slow, "slow", timeout="300ms", max_attempts=2),
            hook(failing, "failing", max_attempts=3),
            hook(fast, "fast"),
        )
    )
    t0 = time.monotonic()
    results = run.deliver("requested", command_review())
    assert [r.target for r in results] == ["slow", "failing", "fast"]  # config order
    assert [r.ok for r in results] == [False, False, True]
    assert fast.seen[0].at - t0 < 0.5  # in turn it would wait >= 0.6 s for the slow one
    assert len(slow.seen) == 2 and len(failing.seen) == 3
    first = [r["target"] for r in run.records]
    assert first.index("fast") < first.index("slow")
    assert time.monotonic() - t0 < 3


def test_only_subscribed_targets_receive_an_event(receivers: Any) -> None:
    a, b = receivers(), receivers()
    run = Run(notif(hook(a, "decisions", events=["approved", "denied"]), hook(b, "all")))
    assert run.notifier.subscribed("requested") == ["all"]
    assert run.notifier.subscribed("denied") == ["decisions", "all"]
    (res,) = run.deliver("requested", command_review())
    assert res.target == "all" and a.seen == [] and len(b.seen) == 1
    results = Run(notif(hook(a, "decisions", events=["approved"]))).deliver("approved", decided())
    assert [r.ok for r in results] == [True]
    assert a.bodies()[0]["event"] == "approved"


def test_statement_text_left_out_on_request(receivers: Any) -> None:
    rx = receivers()
    Run(notif(hook(rx))).deliver("requested", command_review(), include_statement=False)
    assert b"DROP TABLE" not in rx.seen[0].body
    assert rx.bodies()[0]["review"]["statement"]["text"] is None


def test_a_malformed_review_raises_before_anything_is_sent(receivers: Any) -> None:
    rx = receivers()
    run = Run(notif(hook(rx)))
    with pytest.raises(NotifyError, match=r"needs review.state 'approved'"):
        run.deliver("approved", command_review())
    with pytest.raises(NotifyError, match="unknown event"):
        Run(notif(hook(rx, events=["approved"]))).deliver("executed", command_review())
    assert rx.seen == [] and run.records == []


def test_nothing_subscribed_sends_nothing() -> None:
    run = Run(notif())
    assert run.deliver("requested", command_review()) == []
    assert run.records == []


def test_a_failing_record_callback_does_not_stop_delivery(receivers: Any) -> None:
    rx = receivers(500)

    def record(_: dict[str, Any]) -> None:
        raise OSError("ledger unavailable")

    async def go() -> list[DeliveryResult]:
        async with Notifier(notif(hook(rx)), record, backoff_base=BASE) as n:
            return await n.deliver("requested", command_review())

    (res,) = asyncio.run(go())
    assert res.ok and res.attempts == 2


def test_records_carry_no_secret_url_or_signature(receivers: Any) -> None:
    rx = receivers(500)
    run = Run(notif(hook(rx)))
    run.deliver("requested", command_review())
    text = json.dumps(run.records)
    sig = rx.seen[0].headers["X-Ledgergate-Signature"]
    for leak in (SECRET, rx.url, "127.0.0.1", sig.split("v1=")[1], "DROP TABLE"):
        assert leak not in text
    assert SECRET not in repr(run.notifier.targets) and rx.url not in repr(run.notifier.targets)


# -- Slack ------------------------------------------------------------------------------


def test_slack_message_as_received(receivers: Any) -> None:
    rx = receivers(secret=None)
    run = Run(notif({"name": "slack", "url": rx.url, "format": "slack"}))
    (res,) = run.deliver("requested", command_review())
    assert res.ok
    (seen,) = rx.seen
    assert seen.verified == "unsigned"
    assert SECRET.encode() not in seen.body
    msg = json.loads(seen.body)
    assert set(msg) == {"text", "blocks"}
    section, actions = msg["blocks"]
    assert section["type"] == "section" and "DROP TABLE audit_tmp" in section["text"]["text"]
    assert [(b["text"]["text"], b["url"]) for b in actions["elements"]] == [
        ("Approve", f"{CONSOLE}/reviews/rev_01?action=approve"),
        ("Deny", f"{CONSOLE}/reviews/rev_01?action=deny"),
    ]
    assert run.records[0]["format"] == "slack"


def test_a_slack_target_with_a_secret_is_signed_in_headers_only(receivers: Any) -> None:
    rx = receivers()
    Run(notif(hook(rx, format="slack"))).deliver("requested", command_review())
    assert rx.seen[0].verified == "ok" and SECRET.encode() not in rx.seen[0].body


# -- settings resolved at start ---------------------------------------------------------


def test_url_and_secret_from_the_environment(
    receivers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = receivers()
    monkeypatch.setenv("HOOK_URL", rx.url)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    run = Run(notif({"name": "hook", "url": "env:HOOK_URL", "secret": "env:HOOK_SECRET"}))
    (res,) = run.deliver("requested", command_review())
    assert res.ok and rx.seen[0].verified == "ok"


def test_a_missing_secret_fails_at_start_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    s = notif({"name": "hook", "url": "https://h.example/", "secret": "env:NO_SUCH_VAR"})
    with pytest.raises(ConfigError, match=r"notifications.webhooks.0.secret: .*NO_SUCH_VAR"):
        Notifier(s, lambda _: None)


def test_a_resolved_url_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_URL", "ftp://h.example/SECRETPATH")
    s = notif({"name": "hook", "url": "env:HOOK_URL", "secret": "s"})
    with pytest.raises(ConfigError, match=r"notifications.webhooks.0.url: .*http") as e:
        Notifier(s, lambda _: None)
    assert "SECRETPATH" not in str(e.value)


def test_console_url_from_the_caller_when_the_settings_have_none(receivers: Any) -> None:
    rx = receivers()
    with pytest.raises(ConfigError, match=r"notifications.console_url"):
        Notifier(notif(hook(rx), console=None), lambda _: None)
    run = Run(notif(hook(rx), console=None), console_url="http://127.0.0.1:18443/")
    run.deliver("requested", command_review())
    assert rx.bodies()[0]["links"]["review"] == "http://127.0.0.1:18443/reviews/rev_01"
