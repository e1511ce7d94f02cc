"""One PostgreSQL session through the gateway, and its relay phase.

Owns a client connection's state and, once the handshake (``proxy.pg_connect``) has
started the relay, everything until close: hands bytes to the sans-IO ``Relay`` from
Protocol callbacks (no awaits on the hot path) and carries out the actions it returns, in
order; statements held for review, policy changes, the session deadline, flow control and
close. Must not await on the relay path, must not parse protocol bytes itself, and must
never put the backend credential in an error, a log line or a ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, assert_never

from ledgergate.core.config import Connection
from ledgergate.core.identity import SessionFacts
from ledgergate.core.masking.plan import MaskPlanner
from ledgergate.core.policy.engine import PolicySet, SessionPolicy
from ledgergate.core.recording import SessionRecorder
from ledgergate.proxy.review import ReviewAnswer, ReviewAsk, params_text
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    Authenticate,
    BackendReady,
    CancelBackend,
    ClientClosed,
    ClientData,
    Close,
    Committed,
    Fail,
    Inspect,
    Record,
    SendToClient,
    SendToServer,
    ServerClosed,
    ServerData,
    StartClientTls,
    StartServerTls,
    Verdict,
)
from ledgergate.wire.pg.session import MAX_HELD, Guard, NeedsReview, Relay

if TYPE_CHECKING:
    from ledgergate.proxy.pg import PgGateway

__all__ = ["PgSession"]

log = logging.getLogger("ledgergate.pg")
# A session told to end waits for the server message in flight to finish (so the client
# can parse the FATAL error); a server stalled mid-message gets this long, then the
# connection is closed without it.
END_GRACE_S = 5.0
now_ns = time.time_ns


def _guard(policy: SessionPolicy) -> Guard:
    """The relay's guard over a session's policy (statement text read as UTF-8)."""

    def guard(op: str, text: bytes) -> tuple[str, str] | NeedsReview | None:
        d = policy.check(text.decode("utf-8", "replace"))
        if d.review is not None:
            return NeedsReview(d.review)
        return None if d.allowed else (d.rule or "policy", d.message or "refused")

    return guard


class _Side(asyncio.Protocol):
    """One socket's callbacks, forwarded to the session; queues data during handshakes."""

    def __init__(self, session: PgSession, client: bool) -> None:
        self.s = session
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.relaying = False
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its API.
        self.transport = transport  # type: ignore[assignment]
        if self.client:
            self.s.gw.start_session(self.s)

    def data_received(self, data: bytes) -> None:
        if self.relaying:
            if self.client:
                self.s.on_client_data(data)
            else:
                self.s.on_server_data(data)
        else:
            self.queue.put_nowait(data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        if self.relaying:
            if self.client:
                self.s.on_client_closed()
            else:
                self.s.on_server_closed()
        else:
            self.queue.put_nowait(None)

    def pause_writing(self) -> None:
        self.s.peer_paused(self.client)

    def resume_writing(self) -> None:
        self.s.peer_resumed(self.client)

    async def read(self) -> bytes:
        data = await self.queue.get()
        if data is None:
            raise ConnectionResetError("peer closed the connection")
        return data


class PgSession:
    """One client connection through the gateway."""

    def __init__(self, gw: PgGateway) -> None:
        self.gw = gw
        self.c = _Side(self, True)
        self.s: _Side | None = None
        self.relay = Relay()
        self.recorder: SessionRecorder | None = None
        # Time-ordered ids: sessions sort by start, and the ledger's session index takes
        # the entries of concurrent sessions on neighbouring pages (fewer pages per commit).
        self.session_id = f"s_{time.time_ns() // 1000:x}{secrets.token_hex(5)}"
        self.source: dict[str, Any] = {"ip": None, "port": None}
        self.conn: Connection | None = None
        self.identity: dict[str, Any] | None = None
        self.closed = False
        self.close_reason = ""
        self.done = asyncio.Event()
        self._paused_server = set[str]()
        self._paused_client = set[str]()
        self.registration: tuple[int, bytes] | None = None
        self.relaying = False
        # What the session was admitted on (re-checked by the gateway's watch), and the
        # instant it must end at the latest (checked at every client read: an int compare).
        self.facts: SessionFacts | None = None
        # A statement held for review: (ticket, rule, the desk's task); why it was withdrawn.
        self._review: tuple[int, str, asyncio.Task[ReviewAnswer]] | None = None
        self._withdrawn: str | None = None
        self.window_id: str | None = None  # the access review it was admitted under
        self.policy: SessionPolicy | None = None
        self.deadline_ns = 2**63 - 1
        self.deadline_reason = ""
        self._deadline_timer: asyncio.TimerHandle | None = None

    # -- relay (Protocol callbacks; no awaits) ---------------------------------------------
    def start_relay(self, greeting: bytes, leftover: bytes) -> None:
        assert self.c.transport is not None and self.s is not None
        self.ct = self.c.transport
        assert self.s.transport is not None
        self.st = self.s.transport
        self.ct.write(greeting)
        self.relaying = True
        log.info(
            "session %s open: %s via %r from %s",
            self.session_id,
            (self.identity or {}).get("subject"),
            self.conn.name if self.conn else None,
            self.source["ip"],
        )
        self.gw.sink.on_failure.append(self._ledger_failed)
        self._arm_deadline()
        # Drain bytes that arrived while we were in the handshake, then switch to callbacks.
        for side in (self.s, self.c):
            while not side.queue.empty():
                data = side.queue.get_nowait()
                if data is None:
                    (self.on_client_closed if side.client else self.on_server_closed)()
                    return
                (self.on_client_data if side.client else self.on_server_data)(data)
            side.relaying = True
        if leftover:
            self.on_client_data(leftover)

    def _arm_deadline(self) -> None:
        """End the session when its credential (or the connection's session limit) runs
        out, even in the middle of a result stream nobody is sending commands on."""
        if self.deadline_ns >= 2**62:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (self.deadline_ns - now_ns()) / 1e9)
        self._deadline_timer = loop.call_at(
            loop.time() + delay, self.end, self.deadline_reason or "token expired"
        )

    def end(self, why: str) -> None:
        """End the session because its identity may no longer hold it: a
        ``session.terminated`` entry, a FATAL error the client prints, then close. Once
        only: a session already ending (waiting for the server message in flight to
        finish) is not ended again, so two re-checks racing record one termination."""
        if self.closed or not self.relaying or self.relay.ending:
            return
        if self.recorder is not None:
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [self.recorder.event(now_ns(), "session.terminated", reason=why)]
                )
        log.info("session %s terminated: %s", self.session_id, why)
        self.terminate("28000", f"ledgergate: session ended: {why}", f"terminated: {why}")

    def planner(
        self, policy: SessionPolicy | None, catalog: Mapping[tuple[int, int], str]
    ) -> MaskPlanner:
        """The mask planner for this session's result sets and COPY data."""
        return MaskPlanner(
            policy.mask if policy is not None else [],
            catalog,
            self.gw.masking_key,
            self._mask_report,
            refs=policy.masked_refs if policy is not None else None,
            search_path=policy.settings.search_path if policy is not None else None,
        )

    def _mask_report(self, items: list[dict[str, Any]], rows: int) -> None:
        if self.recorder is None:
            return
        with contextlib.suppress(LedgerUnavailable):
            self.gw.sink.submit([self.recorder.event(now_ns(), "mask", masking=items, rows=rows)])

    def apply_policy(self, policies: PolicySet | None) -> None:
        """Take a changed policy (the gateway rebuilt it): deny/allow decisions and the
        ``policy`` version the session's entries name change from its next statement (a
        statement prepared before is decided again at its next Bind); a result shaper
        plans result sets from now on with the new mask rules (one being sent finishes
        as it began). A session that now needs masking but was opened without a shaper
        is ended: it never reads unmasked data."""
        if self.closed or not self.relaying or self.conn is None or self.facts is None:
            return
        new = None if policies is None else policies.for_session(self.conn.name, self.facts.groups)
        if new is self.policy:
            return
        self.policy, relay = new, self.relay
        if new is not None and new.mask and relay.shaper is None:
            self.end("policy changed: masking now applies to this session")
            return
        if new is not None and new.guarded:
            relay.set_guard(_guard(new))  # statements prepared before are decided again
            if relay.refusal_tag == "0":
                relay.refusal_tag = secrets.token_hex(6)
        elif relay.guard is not None:
            relay.set_guard(lambda op, text: None)  # refusals in flight still rewritten
        if relay.shaper is not None:
            # No catalog snapshot: columns are matched by their output names.
            planner = self.planner(new, self.gw.cached_catalog(self.conn.name))
            relay.shaper.planner = planner.plan
            relay.shaper.copy_planner = planner.plan_copy
        if self.recorder is not None:
            self.recorder.set_policy(new.version if new is not None else None)
        log.info("session %s: policy %s", self.session_id, new.version if new else "none")

    def on_client_data(self, data: bytes) -> None:
        t = now_ns()
        if t >= self.deadline_ns:
            self.end(self.deadline_reason or "token expired")
            return
        self._dispatch(self.relay.feed(ClientData(data, t)))
        if self.relay.held_bytes > MAX_HELD:
            self._pause_client("held")
        if self.relay.waiting_bytes > MAX_HELD:  # behind a statement held for review
            self._pause_client("review")

    def on_server_data(self, data: bytes) -> None:
        self._dispatch(self.relay.feed(ServerData(data, now_ns())))
        if self.gw.sink.congested:
            self._pause_server("ledger")
            self.gw.sink.when_uncongested(lambda: self._resume_server("ledger"))

    def on_client_closed(self) -> None:
        self._dispatch(self.relay.feed(ClientClosed(now_ns())))

    def on_server_closed(self) -> None:
        self._dispatch(self.relay.feed(ServerClosed(now_ns())))

    def _dispatch(self, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case SendToClient(data=d):
                    self.ct.write(d)
                case SendToServer(data=d):
                    self.st.write(d)
                case Record(seen=seen, durable=durable, ticket=ticket):
                    assert self.recorder is not None
                    try:
                        self.gw.sink.submit(
                            self.recorder.drafts(seen),
                            functools.partial(self._committed, ticket) if durable else None,
                        )
                    except LedgerUnavailable as e:
                        self._ledger_failed(e)
                        return
                case Close(reason=r):
                    self._close(r)
                case Inspect():
                    self._inspect(a)
                case (
                    StartClientTls()
                    | StartServerTls()
                    | Authenticate()
                    | CancelBackend()
                    | BackendReady()
                    | Fail()
                ):
                    raise AssertionError(f"handshake action {a!r} during relay")
                case _:
                    assert_never(a)

    # -- review ------------------------------------------------------------------------
    def _inspect(self, ins: Inspect) -> None:
        """A statement held for review: ask the gateway's desk, feed back its answer."""
        rule = self.policy.review_rule(ins.rule) if self.policy is not None else None
        desk = self.gw.reviews
        if rule is None or desk is None or self.facts is None or self.conn is None:
            # No desk (or the rule vanished with a policy change): nobody can approve it.
            self._verdict(ins.ticket, ReviewAnswer(False, "no reviewer can be asked"), ins.rule)
            return
        ask = ReviewAsk(
            session_id=self.session_id,
            identity=self.facts.identity,
            groups=self.facts.groups,
            connection=self.conn.name,
            rule=rule,
            op=ins.op,
            statement=ins.text.decode("utf-8", "replace"),
            params=params_text(ins.params, ins.formats),
        )
        task = asyncio.get_running_loop().create_task(desk.ask(ask, self._notice))
        self._review = (ins.ticket, ins.rule, task)
        task.add_done_callback(self._reviewed)

    def _notice(self, text: str) -> None:
        if not self.closed:  # never inside a server message being relayed
            self._dispatch(self.relay.notice(m.notice_response(text)))

    def _reviewed(self, task: asyncio.Task[ReviewAnswer]) -> None:
        review, self._review = self._review, None
        if review is None or self.closed:
            return
        ticket, rule, _ = review
        if task.cancelled():
            why = self._withdrawn or "the review was withdrawn"
            answer = ReviewAnswer(False, why, "57014")
        elif (err := task.exception()) is not None:
            log.error("session %s: review failed: %r", self.session_id, err)
            answer = ReviewAnswer(False, "the review could not be completed (fail closed)")
        else:
            answer = task.result()
        self._verdict(ticket, answer, rule)

    def _verdict(self, ticket: int, answer: ReviewAnswer, rule: str) -> None:
        v = Verdict(ticket, answer.approved, rule, answer.message, answer.code, now_ns())
        self._dispatch(self.relay.feed(v))
        self._resume_client("review")

    def withdraw_review(self, why: str) -> bool:
        """Cancel the wait for a held statement's review (a CancelRequest, the client gone)."""
        if self._review is None:
            return False
        self._withdrawn = why
        self._review[2].cancel()
        return True

    def terminate(self, code: str, message: str, reason: str) -> None:
        """End a relaying session from the gateway's side with a FATAL error, at the next
        server message boundary (forced after ``END_GRACE_S`` if the server stalls)."""
        if not self.relaying or self.closed:
            return
        self._dispatch(self.relay.end(m.error_response(code, message), reason))
        if not self.closed:
            loop = asyncio.get_running_loop()
            loop.call_later(END_GRACE_S, self._close, reason)

    def _committed(self, ticket: int, err: BaseException | None) -> None:
        if self.closed:
            return
        if err is not None:
            self._ledger_failed(err)
            return
        self._dispatch(self.relay.feed(Committed(ticket)))
        if "held" in self._paused_client and self.relay.held_bytes <= MAX_HELD:
            self._resume_client("held")

    def _ledger_failed(self, err: BaseException | None) -> None:
        if self.closed:
            return
        log.error("session %s stopped: the ledger cannot be written", self.session_id)
        self.ct.write(
            m.error_response(
                "58000", "ledgergate: the audit ledger cannot be written; the session is stopped"
            )
        )
        self._close("ledger unavailable", record=False)

    def _close(self, reason: str, *, record: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.relay.closed = True
        if self._review is not None:  # nobody waits for it any more: withdraw it
            self._withdrawn = f"the session ended: {reason}"
            self._review[2].cancel()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if self.registration is not None:
            self.gw.cancel_registry.pop(self.registration, None)
        self.ct.close()
        self.st.close()
        log.info("session %s closed: %s", self.session_id, reason)
        if record and self.recorder is not None:
            with contextlib.suppress(LedgerUnavailable):
                self.gw.sink.submit(
                    [
                        self.recorder.event(
                            now_ns(),
                            "session.close",
                            outcome=reason,
                            stats=self.relay.stats.as_dict(),
                        )
                    ]
                )
        self.done.set()

    # -- flow control -------------------------------------------------------------------
    def peer_paused(self, client: bool) -> None:
        # The client's socket buffer is full: stop reading the server, and vice versa.
        if client:
            self._pause_server("client-buffer")
        else:
            self._pause_client("server-buffer")

    def peer_resumed(self, client: bool) -> None:
        if client:
            self._resume_server("client-buffer")
        else:
            self._resume_client("server-buffer")

    def _pause_server(self, why: str) -> None:
        if not self._paused_server and self.s and self.s.transport:
            self.s.transport.pause_reading()
        self._paused_server.add(why)

    def _resume_server(self, why: str) -> None:
        self._paused_server.discard(why)
        if not self._paused_server and self.s and self.s.transport and not self.closed:
            self.s.transport.resume_reading()

    def _pause_client(self, why: str) -> None:
        if not self._paused_client and self.c.transport:
            self.c.transport.pause_reading()
        self._paused_client.add(why)

    def _resume_client(self, why: str) -> None:
        self._paused_client.discard(why)
        if not self._paused_client and self.c.transport and not self.closed:
            self.c.transport.resume_reading()
