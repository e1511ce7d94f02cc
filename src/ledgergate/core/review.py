"""Just-in-time reviews: the state machine of one request for a human's approval.

A review is either a held ``command`` (one statement, bound by hash to its text, its
parameters, the identity and the connection) or an ``access`` window (a connection for
a duration). Its rules, with ``TRANSITIONS`` the authority:

- ``pending``: reviewers decide. An approval that does not yet meet the requirement is
  kept (``vote``: still pending); the one that meets it approves (``approve``); any
  deny denies. Nobody decides on their own request, admins included; a reviewer is a
  member of one of the rule's reviewer groups, decides once, and always gives a
  reason. The requirement: ``min_approvals`` approvals, and with ``all_groups`` every
  listed group approved by a member of its own (one person cannot stand for two
  groups). A request nobody decided on expires at ``expires_ns``; the requester (or
  the gateway, when the client gave up on a held statement) may cancel it.
- ``approved``: a command runs once (``execute``), before ``valid_until_ns``; an access
  window (``window_start_ns`` to ``window_end_ns``, starting at the approval) becomes
  ``active`` at its first use. Unused past that time it ``expire``\\s; the requester may
  still withdraw it (``cancel``).
- ``active``: sessions opened in the window are recorded (``use``); it ``end``\\s when
  the window closes or the requester ends it early.
- ``denied``, ``expired``, ``cancelled``, ``executed``, ``ended`` are final: no state
  leaves them. An ``executed`` review still takes ``use`` (evidence of where the
  statement ran; the state stays).

Every function returns a new ``Review`` with the step appended to ``history`` (who,
why, when) or raises ``ReviewError``: an event a state does not take is an error,
never ignored. The values themselves and their stored form are in
``core.review_record`` (re-exported here). Pure: ids and times arrive as arguments; no
I/O, clock or logging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, get_args

from ledgergate.core.policy.rules import PolicyRule, ReviewAction
from ledgergate.core.review_record import (
    KINDS,
    STATES,
    Execution,
    Kind,
    Requirement,
    Review,
    ReviewDecision,
    ReviewError,
    State,
    Transition,
    binding_hash,
    params_hash,
    statement_hash,
)

__all__ = [
    "EVENTS",
    "GATEWAY",
    "KINDS",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "Event",
    "Execution",
    "Kind",
    "Requirement",
    "Review",
    "ReviewDecision",
    "ReviewError",
    "State",
    "Transition",
    "activate",
    "binding_hash",
    "cancel",
    "decide",
    "end",
    "execute",
    "expire",
    "new_access",
    "new_command",
    "next_state",
    "params_hash",
    "record_use",
    "requirement_met",
    "statement_hash",
]

Event = Literal["vote", "approve", "deny", "expire", "cancel", "execute", "activate", "use", "end"]
EVENTS: tuple[Event, ...] = get_args(Event)

TRANSITIONS: Mapping[tuple[State, Event], State] = {
    ("pending", "vote"): "pending",
    ("pending", "approve"): "approved",
    ("pending", "deny"): "denied",
    ("pending", "expire"): "expired",
    ("pending", "cancel"): "cancelled",
    ("approved", "execute"): "executed",
    ("approved", "activate"): "active",
    ("approved", "expire"): "expired",
    ("approved", "cancel"): "cancelled",
    ("executed", "use"): "executed",
    ("active", "use"): "active",
    ("active", "end"): "ended",
}
# Events only one kind of review takes.
_ONLY: Mapping[Event, Kind] = {
    "execute": "command",
    "activate": "access",
    "end": "access",
}
# Final: no event leads out of the state (``use`` on an executed review stays put).
TERMINAL: frozenset[State] = frozenset(
    s for s in STATES if not any(src == s and dst != s for (src, _), dst in TRANSITIONS.items())
)

# The actor named when the gateway itself acts (the client cancelled a held statement,
# a window closed).
GATEWAY = "gateway"
# A reason or a justification is read by people and copied into every notification:
# a paragraph, not a document.
MAX_REASON = 1000
# A review shows reviewers the whole statement and its parameters; one larger than this
# is no statement a person can review (and it is refused, so the gateway fails closed).
MAX_STATEMENT = 1 << 20
MAX_PARAMS_CHARS = 1 << 20


# -- the table ---------------------------------------------------------------------------
def next_state(state: State, event: Event, kind: Kind) -> State:
    """Where ``event`` takes a ``kind`` review in ``state``; ``ReviewError`` if nowhere."""
    only = _ONLY.get(event)
    if only is not None and only != kind:
        raise ReviewError(f"a review of kind {kind} cannot {event}", "state")
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise ReviewError(f"the review is {state}: it cannot {event} now", "state")
    return target


def _step(
    r: Review, event: Event, actor: str, reason: str | None, now_ns: int, **changes: Any
) -> Review:
    state = next_state(r.state, event, r.kind)
    return replace(
        r,
        state=state,
        history=(*r.history, Transition(event, state, actor, reason, now_ns)),
        **changes,
    )


# -- creating ------------------------------------------------------------------------------
def _clean(v: str | None, what: str) -> str:
    """``v`` stripped ("" for None): at most ``MAX_REASON`` characters of text that can be
    recorded (a lone surrogate cannot: it has no UTF-8 form)."""
    t = (v or "").strip()
    if len(t) > MAX_REASON:
        raise ReviewError(f"{what} is longer than {MAX_REASON} characters", "too long")
    if not t.isascii():
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise ReviewError(f"{what} is not valid text", "bad request") from None
    return t


def _text(v: str | None, what: str, reason: str) -> str:
    t = _clean(v, what)
    if not t:
        raise ReviewError(f"{what} is required", reason)
    return t


def _justification(action: ReviewAction, text: str | None) -> str | None:
    what = "a justification (why this is needed)"
    if action.justification:
        return _text(text, what, "justification required")
    return _clean(text, what) or None


def _action(rule: PolicyRule, kind: Kind, requester: str, requester_kind: str) -> ReviewAction:
    """The ``kind`` review ``rule`` asks for, once the request names who asks."""
    if rule.review is None or rule.review.kind != kind:
        article = "an" if kind == "access" else "a"
        raise ReviewError(f"rule {rule.id!r} is not {article} {kind} review rule", "bad request")
    if not requester or requester == GATEWAY:
        raise ReviewError("a request names who asks", "bad request")
    if requester_kind not in ("user", "service"):
        raise ReviewError("the requester is a user or a service", "bad request")
    return rule.review


def _pending(
    review_id: str,
    rule_id: str,
    action: ReviewAction,
    kind: Kind,
    *,
    requester: str,
    requester_kind: str,
    groups: Sequence[str],
    connection: str,
    binding: str,
    justification: str | None,
    now_ns: int,
    **fields: Any,
) -> Review:
    """A new pending review: what both kinds hold (``fields``: the kind's own)."""
    why = _justification(action, justification)
    return Review(
        id=review_id,
        kind=kind,
        state="pending",
        rule_id=rule_id,
        connection=connection,
        requester=requester,
        requester_kind=requester_kind,
        requester_groups=tuple(groups),
        requirement=Requirement.of(action),
        binding=binding,
        created_ns=now_ns,
        expires_ns=now_ns + action.seconds("ttl") * 10**9,
        justification=why,
        history=(Transition("request", "pending", requester, why, now_ns),),
        **fields,
    )


def new_command(
    review_id: str,
    rule: PolicyRule,
    *,
    requester: str,
    requester_kind: str,
    groups: Sequence[str],
    connection: str,
    statement: str,
    params: Sequence[str | None],
    session_id: str | None,
    justification: str | None,
    now_ns: int,
) -> Review:
    """A pending review of one statement (with its parameter values)."""
    action = _action(rule, "command", requester, requester_kind)
    if len(statement) > MAX_STATEMENT:
        raise ReviewError(
            f"a statement to review is at most {MAX_STATEMENT} characters", "too long"
        )
    ps = tuple(params)
    if sum(len(p) for p in ps if p is not None) > MAX_PARAMS_CHARS:
        raise ReviewError(
            f"parameters to review are at most {MAX_PARAMS_CHARS} characters", "too long"
        )
    return _pending(
        review_id,
        rule.id,
        action,
        "command",
        requester=requester,
        requester_kind=requester_kind,
        groups=groups,
        connection=connection,
        binding=binding_hash(requester, connection, statement, ps),
        justification=justification,
        now_ns=now_ns,
        statement=statement,
        params=ps,
        session_id=session_id,
        approval_valid_ns=action.seconds("approval_valid") * 10**9,
    )


def new_access(
    review_id: str,
    rule: PolicyRule,
    *,
    requester: str,
    requester_kind: str,
    groups: Sequence[str],
    connection: str,
    duration_ns: int,
    justification: str | None,
    now_ns: int,
) -> Review:
    """A pending request for an access window of ``duration_ns`` on ``connection``."""
    action = _action(rule, "access", requester, requester_kind)
    if duration_ns <= 0:
        raise ReviewError("an access window lasts a positive time (e.g. 30m)", "bad request")
    if duration_ns > action.seconds("max_duration") * 10**9:
        raise ReviewError(
            f"rule {rule.id!r} allows windows of at most {action.max_duration}", "too long"
        )
    return _pending(
        review_id,
        rule.id,
        action,
        "access",
        requester=requester,
        requester_kind=requester_kind,
        groups=groups,
        connection=connection,
        binding=binding_hash(requester, connection, None),
        justification=justification,
        now_ns=now_ns,
        duration_ns=duration_ns,
    )


# -- deciding ------------------------------------------------------------------------------
def requirement_met(req: Requirement, decisions: Sequence[ReviewDecision]) -> bool:
    """``min_approvals`` approvals; with ``all_groups``, also a distinct approver who is
    a member of each listed group (a matching of groups to approvers)."""
    approvers = [d for d in decisions if d.approve]
    if len(approvers) < req.min_approvals:
        return False
    if not req.all_groups:
        return True
    holder: dict[int, int] = {}  # approver index -> the group index it stands for

    def place(g: int, tried: set[int]) -> bool:
        for i, d in enumerate(approvers):
            if i in tried or req.groups[g] not in d.groups:
                continue
            tried.add(i)
            if i not in holder or place(holder[i], tried):
                holder[i] = g
                return True
        return False

    return all(place(g, set()) for g in range(len(req.groups)))


def decide(
    review: Review,
    reviewer: str,
    reviewer_groups: Sequence[str],
    approve: bool,
    reason: str,
    now_ns: int,
) -> Review:
    """Record one reviewer's decision (see the module docstring for who may)."""
    if review.state != "pending":
        raise ReviewError(f"the review is {review.state}: it takes no decision now", "state")
    if now_ns >= review.expires_ns:
        raise ReviewError("the request expired before this decision", "expired")
    if reviewer == review.requester:
        raise ReviewError(
            "nobody decides on their own request (admins included); ask another reviewer",
            "self-approval",
        )
    groups = tuple(reviewer_groups)
    if not set(groups).intersection(review.requirement.groups):
        raise ReviewError(
            f"{reviewer} is in none of the reviewer groups of rule {review.rule_id!r} "
            f"({', '.join(review.requirement.groups)})",
            "not a reviewer",
        )
    if any(d.reviewer == reviewer for d in review.decisions):
        raise ReviewError(f"{reviewer} already decided on this request", "already decided")
    why = _text(reason, "a reason for the decision", "reason required")
    decisions = (*review.decisions, ReviewDecision(reviewer, groups, approve, why, now_ns))
    if not approve:
        return _step(review, "deny", reviewer, why, now_ns, decisions=decisions, decided_ns=now_ns)
    if not requirement_met(review.requirement, decisions):
        return _step(review, "vote", reviewer, why, now_ns, decisions=decisions)
    if review.kind == "command":
        valid = {"valid_until_ns": now_ns + review.approval_valid_ns}
    else:
        assert review.duration_ns is not None
        valid = {"window_start_ns": now_ns, "window_end_ns": now_ns + review.duration_ns}
    return _step(
        review, "approve", reviewer, why, now_ns, decisions=decisions, decided_ns=now_ns, **valid
    )


# -- afterwards ------------------------------------------------------------------------------
def expire(review: Review, now_ns: int) -> Review:
    """A pending request nobody decided on in time, or an approval left unused."""
    due = review.due_ns
    if review.state == "active" or due is None or now_ns < due:
        raise ReviewError(f"the review is {review.state} and not due to expire", "not due")
    why = "no decision in time" if review.state == "pending" else "the approval was not used"
    return _step(review, "expire", GATEWAY, why, now_ns)


def cancel(review: Review, actor: str, reason: str | None, now_ns: int) -> Review:
    """The requester withdraws the request (or its unused approval); or the gateway does,
    when the client that was waiting for it went away."""
    if actor not in (review.requester, GATEWAY):
        raise ReviewError("only the requester can cancel a request", "forbidden")
    why = _clean((reason or "").strip()[:MAX_REASON], "a reason") or (
        "cancelled by the requester" if actor == review.requester else "the client went away"
    )
    return _step(review, "cancel", actor, why, now_ns)


def execute(review: Review, session_id: str, now_ns: int) -> Review:
    """The approved statement runs: once, within the approval's validity."""
    if review.state == "approved" and review.kind == "command":
        assert review.valid_until_ns is not None
        if now_ns >= review.valid_until_ns:
            raise ReviewError("the approval is no longer valid", "expired")
    return _step(
        review,
        "execute",
        GATEWAY,
        None,
        now_ns,
        executions=(*review.executions, Execution(session_id, now_ns)),
    )


def _in_window(review: Review, now_ns: int) -> None:
    start, stop = review.window_start_ns, review.window_end_ns
    if start is not None and stop is not None and not start <= now_ns < stop:
        raise ReviewError("the access window is closed", "expired")


def activate(review: Review, now_ns: int) -> Review:
    """The first use of an approved access window."""
    if review.state == "approved" and review.kind == "access":
        _in_window(review, now_ns)
    return _step(review, "activate", review.requester, None, now_ns)


def record_use(review: Review, session_id: str, now_ns: int) -> Review:
    """A session opened inside an active window, or where an executed statement ran
    (evidence). A session already recorded is recorded once: the review comes back
    unchanged."""
    if review.state == "active":
        _in_window(review, now_ns)
    if review.state in ("active", "executed") and any(
        e.session_id == session_id for e in review.executions
    ):
        return review
    return _step(
        review,
        "use",
        review.requester,
        None,
        now_ns,
        executions=(*review.executions, Execution(session_id, now_ns)),
    )


def end(review: Review, actor: str, reason: str | None, now_ns: int) -> Review:
    """An active window closes (its time is up, or it is ended early)."""
    why = _clean((reason or "").strip()[:MAX_REASON], "a reason") or "the window closed"
    return _step(review, "end", actor, why, now_ns)
