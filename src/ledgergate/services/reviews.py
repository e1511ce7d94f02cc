"""Just-in-time reviews kept in the store: requests, decisions, and their use.

``ReviewService`` is synchronous and store-backed: the gateway calls it on a worker
thread (a held statement, an access window at connect time), the REST API on its worker
thread; the CLI reaches it through the API (a reviewer acts as themselves). Every step
is a ``core.review`` transition committed together with its ledger entry (kind
``review.<state after>``, with ``review{id,state,actor,event}``, the requester as
``identity``, the rule, the connection, the statement as the connection records
commands and its parameters as a digest only) and one outbox row for notifications.
Several processes share the store: a change is written only if the review is still as
it was read (else computed again on the new one), so a decision made anywhere moves the
review once, and an approved statement runs exactly once; the store's review epoch
moves with every change, which is how a gateway holding a statement notices.

What entries, outbox rows and the approval record say is ``services.review_ledger``'s.
Must not hold the statement itself (the gateway does), deliver notifications
(``services.notify`` drains the outbox), or put parameter values in an entry.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ledgergate.core.config import Config
from ledgergate.core.identity import roles_of
from ledgergate.core.ledger.canonical import canonical_json
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.policy.engine import PolicySet
from ledgergate.core.policy.rules import PolicyRule, PolicySettings
from ledgergate.core.review import (
    GATEWAY,
    Review,
    ReviewError,
    activate,
    cancel,
    decide,
    end,
    execute,
    expire,
    new_access,
    new_command,
    record_use,
)
from ledgergate.services import policy_rules
from ledgergate.services import review_ledger as rl
from ledgergate.services.ledger import LedgerUnavailable, LedgerWriter
from ledgergate.services.tokens import record_change
from ledgergate.store.base import ReviewRow, Store

__all__ = ["KINDS", "ReviewService"]

log = logging.getLogger("ledgergate.reviews")

KINDS = rl.KINDS  # the ledger entry kinds this service writes

# Another process changed the review between our read and our write: read it again and
# compute the step anew this many times before giving up.
CHANGE_ATTEMPTS = 8
# Reviews moved by one expire_due call; the rest wait for the next call (a gateway calls
# it every few seconds), so one call never holds the write lock for long.
MAX_DUE_BATCH = 200
# Reviews one list answers at most.
MAX_LIST = 1000
# The notification a step queues (``services.notify`` delivers these five events); a
# partial approval, a statement run, a window opened, used or ended queue none.
_OUTBOX_EVENT = {
    "request": "requested",
    "approve": "approved",
    "deny": "denied",
    "expire": "expired",
    "cancel": "cancelled",
}
_DECIDERS = frozenset({"reviewer", "admin"})


class _Moved(Exception):
    """The stored review is not the one the step was computed from."""


def _new_id() -> str:
    return "rv_" + secrets.token_hex(6)


def _json(doc: Mapping[str, Any]) -> str:
    """A stored review or outbox body: canonical JSON text."""
    return canonical_json(doc).decode("utf-8")


def _row(r: Review, now_ns: int) -> ReviewRow:
    return ReviewRow(
        r.id,
        r.kind,
        r.state,
        r.connection,
        r.requester,
        r.binding,
        r.created_ns,
        now_ns,
        r.due_ns,
        _json(r.as_dict()),
    )


def _read(row: ReviewRow) -> Review:
    damaged = ReviewError(f"review {row.id[:40]!r} is damaged in the store", "damaged")
    try:
        doc = json.loads(row.body)
    except (ValueError, RecursionError):
        raise damaged from None
    if not isinstance(doc, dict):
        raise damaged
    try:
        return Review.from_dict(doc)
    except ReviewError:
        raise damaged from None


class ReviewService:
    """Reviews over one store handle and a ledger writer on that same handle (so a step
    and its entry commit together). Use from one thread."""

    def __init__(
        self,
        store: Store,
        writer: LedgerWriter,
        config: Config,
        *,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        if writer.store is not store or writer.journal is not None:
            raise ValueError(
                "ReviewService needs a non-journaled ledger writer on its own store handle "
                "(e.g. a shared api@<gateway> stream), so a step and its entry commit together"
            )
        self.store = store
        self.writer = writer
        self.config = config
        self._new_id = new_id
        self._levels: Mapping[str, str] = {c.name: c.recording for c in config.connections}

    # -- reading ----------------------------------------------------------------------------
    def epoch(self) -> int:
        """The store's review epoch: it moves with every change of any review."""
        return self.store.review_epoch()

    def get(self, review_id: str) -> Review | None:
        row = self.store.get_review(review_id)
        return None if row is None else _read(row)

    def list(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        connection: str | None = None,
        requester: str | None = None,
        reviewer: str | None = None,
        reviewer_groups: Sequence[str] | None = None,
        limit: int = MAX_LIST,
    ) -> builtins.list[Review]:
        """Reviews matching every filter, newest first. With ``reviewer_groups`` (and
        ``reviewer``): only those this reviewer may still decide on (pending, a group in
        common, not their own, not decided by them yet)."""
        mine = reviewer_groups is not None
        rows = self.store.list_reviews(
            states=("pending",) if mine else ((state,) if state else ()),
            kind=kind,
            connection=connection,
            requester=requester,
            limit=None if mine else max(0, min(limit, MAX_LIST)),
        )
        out: builtins.list[Review] = []
        for row in rows:
            r = _read(row)
            if mine:
                groups = set(reviewer_groups or ())
                if (
                    r.requester == reviewer
                    or not groups.intersection(r.requirement.groups)
                    or any(d.reviewer == reviewer for d in r.decisions)
                    or (state is not None and state != r.state)
                ):
                    continue
            out.append(r)
            if len(out) >= min(limit, MAX_LIST):
                break
        return out

    def record(self, review_id: str, *, raw: bool = True) -> dict[str, Any]:
        """The whole approval record for evidence (``review_ledger.approval_record``):
        the review, the ledger entries of its steps, the commands run under it.
        ``raw=False`` (auditors, who never see data): statement and parameters as the
        ledger shows them."""
        r = self._get(review_id)
        return rl.approval_record(self.store, r, self._level(r), raw=raw)

    def redacted(self, r: Review) -> dict[str, Any]:
        """The fields of ``r.as_dict()`` that carry data, as the ledger shows them."""
        return rl.redacted(r, self._level(r))

    def _level(self, r: Review) -> str:
        """The recording level of the review's connection (unknown: ``redacted``)."""
        return self._levels.get(r.connection, "redacted")

    # -- requests ---------------------------------------------------------------------------
    def request_command(
        self,
        *,
        identity: str,
        groups: Sequence[str],
        connection: str,
        rule: PolicyRule,
        statement: str,
        params: Sequence[str | None] = (),
        session_id: str | None = None,
        justification: str | None = None,
        now_ns: int,
        identity_kind: str = "user",
    ) -> Review:
        """A pending review of one statement (from the gateway, which holds it or
        answers with the review's id). The same statement from the same identity on the
        same connection, still pending under the same rule, is that review again: a
        client sending it again does not ask the reviewers twice."""
        r = new_command(
            self._new_id(),
            rule,
            requester=identity,
            requester_kind=identity_kind,
            groups=groups,
            connection=connection,
            statement=statement,
            params=params,
            session_id=session_id,
            justification=justification,
            now_ns=now_ns,
        )
        for row in self.store.list_reviews(states=("pending",), kind="command", binding=r.binding):
            old = _read(row)
            if (
                old.requester == identity
                and old.connection == connection
                and old.rule_id == rule.id
                and now_ns < old.expires_ns
            ):
                return old
        self._create(r, now_ns)
        return r

    def access_rule(self, groups: Sequence[str], connection: str) -> PolicyRule | None:
        """The access review rule the effective policy applies to ``connection`` for
        these groups (the first one), if any."""
        settings: PolicySettings = policy_rules.load(self.store, self.config.policy)[1]
        ps = PolicySet(settings)
        gs = frozenset(groups)
        for rule in settings.rules:
            review = rule.review
            if review is not None and review.kind == "access" and ps.applies(rule, connection, gs):
                return rule
        return None

    def request_access(
        self,
        *,
        identity: str,
        groups: Sequence[str],
        connection: str,
        duration_ns: int,
        justification: str | None,
        now_ns: int,
        identity_kind: str = "user",
    ) -> Review:
        """A pending request for an access window on ``connection``, under the access
        review rule that applies to the requester there."""
        if self.config.connections and connection not in self._levels:
            raise ReviewError(f"no connection {connection[:100]!r}", "not found")
        rule = self.access_rule(groups, connection)
        if rule is None:
            raise ReviewError(
                f"no access review rule applies to you on {connection!r}: "
                "there is nothing to request",
                "no rule",
            )
        r = new_access(
            self._new_id(),
            rule,
            requester=identity,
            requester_kind=identity_kind,
            groups=groups,
            connection=connection,
            duration_ns=duration_ns,
            justification=justification,
            now_ns=now_ns,
        )
        for row in self.store.list_reviews(
            states=("pending", "approved", "active"),
            kind="access",
            connection=connection,
            requester=identity,
        ):
            old = _read(row)
            if old.due_ns is not None and now_ns < old.due_ns:
                raise ReviewError(
                    f"{old.id} on {connection} is already {old.state}; cancel it first",
                    "duplicate",
                )
        self._create(r, now_ns)
        return r

    # -- decisions and the requester's own steps -----------------------------------------------
    def decide(
        self,
        review_id: str,
        *,
        reviewer: str,
        reviewer_groups: Sequence[str],
        approve: bool,
        reason: str,
        now_ns: int,
    ) -> Review:
        """A reviewer's approval or denial, with its reason. The reviewer holds the
        reviewer or admin role, is in one of the rule's reviewer groups, and is never
        the requester (admins included)."""
        if not _DECIDERS.intersection(roles_of(reviewer, reviewer_groups, self.config.roles)):
            raise ReviewError("deciding on a request needs the reviewer or admin role", "forbidden")
        ident = self.store.get_identity(reviewer)
        if ident is not None and ident.disabled_ns is not None:
            raise ReviewError(f"identity {reviewer!r} is disabled", "forbidden")
        r = self._get(review_id)
        if r.state == "pending" and now_ns >= r.expires_ns:
            self._expire_one(review_id, now_ns)
            raise ReviewError("the request expired before this decision", "expired")
        groups = tuple(reviewer_groups)
        try:
            return self._apply(
                review_id, lambda x: decide(x, reviewer, groups, approve, reason, now_ns), now_ns
            )
        except ReviewError as e:
            if e.reason == "self-approval":
                self._record_refusal(r, reviewer, "self-approval", str(e), now_ns)
            raise

    def _record_refusal(self, r: Review, actor: str, event: str, why: str, now_ns: int) -> None:
        """A refused step that says something about the people involved (a requester
        deciding on their own request) goes on the ledger as ``review.refused``; the
        review itself does not change."""
        fields = {
            "review": {"id": r.id, "kind": r.kind, "state": r.state, "event": event,
                       "actor": actor},
            "identity": r.identity(),
            "connection": r.connection,
            "rule": r.rule_id,
            "reason": why,
        }  # fmt: skip
        try:
            self.writer.append([Draft(now_ns, "review.refused", fields)], now_ns)
        except LedgerUnavailable:
            log.warning("review %s: the refused %s could not be recorded", r.id, event)

    def cancel(
        self, review_id: str, *, actor: str, reason: str | None = None, now_ns: int
    ) -> Review:
        """The requester withdraws a pending request or an unused approval, or ends an
        active window early; the gateway (``actor`` ``core.review.GATEWAY``) cancels a
        held statement whose client went away."""
        r = self._get(review_id)
        if r.state == "active":
            if actor not in (r.requester, GATEWAY):
                raise ReviewError("only the requester can end their window", "forbidden")
            return self.end_access(
                review_id,
                actor=actor,
                reason=reason or "ended early by the requester",
                now_ns=now_ns,
            )
        return self._apply(review_id, lambda x: cancel(x, actor, reason, now_ns), now_ns)

    def expire_due(self, now_ns: int) -> builtins.list[Review]:
        """Expire pending requests past their time and approvals left unused, and end
        windows that closed; return the reviews moved (a gateway calls this every few
        seconds; the API before it answers)."""
        out: builtins.list[Review] = []
        for row in self.store.reviews_due(now_ns, MAX_DUE_BATCH):
            try:
                moved = self._expire_one(row.id, now_ns)
            except ReviewError as e:
                if e.reason != "damaged":
                    raise
                # One unreadable row must not stop every other review from moving.
                log.error("%s; the sweep leaves it as it is", e)
                continue
            if moved is not None:
                out.append(moved)
        return out

    def _expire_one(self, review_id: str, now_ns: int) -> Review | None:
        def step(r: Review) -> Review:
            if r.state == "active":
                if r.window_end_ns is None or now_ns < r.window_end_ns:
                    raise ReviewError("the window is still open", "not due")
                return end(r, GATEWAY, "the window closed", now_ns)
            return expire(r, now_ns)

        try:
            return self._apply(review_id, step, now_ns)
        except ReviewError as e:
            if e.reason in ("not due", "state", "not found"):
                return None  # another process moved it first
            raise

    # -- use ----------------------------------------------------------------------------------
    def consume_command(
        self,
        *,
        identity: str,
        connection: str,
        binding: str,
        session_id: str,
        now_ns: int,
    ) -> Review | None:
        """The approved, unused, still valid review of this exact statement (by its
        binding hash, ``core.review.binding_hash``) for this identity on this connection,
        now marked executed by ``session_id``; None if there is none. Exactly once: of
        two gateways asking at the same moment, one gets it."""
        rows = self.store.list_reviews(states=("approved",), kind="command", binding=binding)
        found = sorted(
            (r for r in map(_read, rows) if r.requester == identity and r.connection == connection),
            key=lambda r: (r.decided_ns or 0, r.id),
        )
        for r in found:
            if r.valid_until_ns is None or now_ns >= r.valid_until_ns:
                continue
            try:
                return self._apply(r.id, lambda x: execute(x, session_id, now_ns), now_ns)
            except ReviewError:
                continue  # used or expired meanwhile
        return None

    def record_execution(self, review_id: str, *, session_id: str, ts_ns: int) -> Review:
        """Evidence: ``session_id`` ran under this review (a session opened in an access
        window; the session of an executed statement is recorded by ``consume_command``
        already). Recording a session twice changes nothing."""
        return self._apply(review_id, lambda x: record_use(x, session_id, ts_ns), ts_ns)

    def active_access(
        self,
        *,
        identity: str,
        connection: str,
        now_ns: int,
        session_id: str | None = None,
    ) -> Review | None:
        """The approved access window of ``identity`` on ``connection`` covering now
        (made ``active`` at its first use; ``session_id``, if given, recorded), or
        None."""
        rows = self.store.list_reviews(
            states=("approved", "active"), kind="access", connection=connection, requester=identity
        )
        open_ = [
            r
            for r in map(_read, rows)
            if r.window_start_ns is not None
            and r.window_end_ns is not None
            and r.window_start_ns <= now_ns < r.window_end_ns
        ]
        if not open_:
            return None
        r = max(open_, key=lambda x: (x.state == "active", x.window_end_ns or 0, x.id))
        try:
            if r.state == "approved":
                r = self._apply(
                    r.id, lambda x: x if x.state == "active" else activate(x, now_ns), now_ns
                )
            if session_id is not None:
                r = self.record_execution(r.id, session_id=session_id, ts_ns=now_ns)
        except ReviewError as e:
            if e.reason in ("state", "expired"):
                return None  # ended, cancelled or closed meanwhile
            raise
        return r

    def end_access(
        self, review_id: str, *, actor: str, reason: str | None = None, now_ns: int
    ) -> Review:
        """Close an active window (its time is up, or it is ended early)."""
        return self._apply(review_id, lambda x: end(x, actor, reason, now_ns), now_ns)

    # -- committing ------------------------------------------------------------------------
    def _get(self, review_id: str) -> Review:
        r = self.get(review_id)
        if r is None:
            raise ReviewError(f"no review {review_id[:40]!r}", "not found")
        return r

    def _create(self, r: Review, now_ns: int) -> None:
        try:
            self._commit(None, r, now_ns)
        except _Moved:  # the random id is taken: astronomically unlikely, never silent
            raise ReviewError("could not allocate a review id; try again", "busy") from None

    def _apply(self, review_id: str, step: Callable[[Review], Review], now_ns: int) -> Review:
        """Read the review, compute ``step`` on it, write the result with its entry, unless
        another process changed the review meanwhile; then do it again on theirs."""
        for _ in range(CHANGE_ATTEMPTS):
            row = self.store.get_review(review_id)
            if row is None:
                raise ReviewError(f"no review {review_id[:40]!r}", "not found")
            before = _read(row)
            after = step(before)
            if after is before or after == before:
                return before
            try:
                self._commit(row.body, after, now_ns)
            except _Moved:
                continue
            return after
        raise ReviewError("the review kept changing meanwhile; try again", "busy")

    def _commit(self, expect: str | None, after: Review, now_ns: int) -> None:
        """Write ``after`` (if the stored review's body is still ``expect``; None: it
        must not exist yet) with its ledger entry and its outbox row, together."""
        step = after.history[-1]
        entry = Draft(now_ns, f"review.{after.state}", rl.entry_fields(after, self._level(after)))
        row = _row(after, now_ns)
        notice = _OUTBOX_EVENT.get(step.event)
        body = _json(rl.notice(after, notice, self._level(after))) if notice else None

        def change(st: Store) -> None:
            cur = st.get_review(after.id)
            if (None if cur is None else cur.body) != expect:
                raise _Moved()
            st.put_review(row)
            if notice is not None and body is not None:
                st.add_outbox(after.id, notice, body, now_ns)

        try:
            record_change(self.store, self.writer, entry, change)
        except LedgerUnavailable as e:
            if isinstance(e.__cause__, _Moved):
                raise _Moved() from None
            raise
