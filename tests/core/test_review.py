"""The review state machine: the transition table (every state and event, both kinds),
requests and their limits, decisions (self-approval, reviewer groups, N-of-M,
all-groups), expiry, cancelling, running an approved statement once, access windows,
and the stored form."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import pytest

from ledgergate.core.policy.rules import PolicyRule
from ledgergate.core.review import (
    EVENTS,
    GATEWAY,
    KINDS,
    STATES,
    TERMINAL,
    Event,
    Kind,
    Requirement,
    Review,
    ReviewDecision,
    ReviewError,
    State,
    activate,
    binding_hash,
    cancel,
    decide,
    end,
    execute,
    expire,
    new_access,
    new_command,
    next_state,
    record_use,
    requirement_met,
)

S = 10**9
M = 60 * S
T0 = 1_790_000_000 * S


def rule(kind: str = "command", **review: Any) -> PolicyRule:
    body: dict[str, Any] = {"kind": kind, "reviewers": ["dba"], **review}
    if kind == "command":
        body.setdefault("when", {"kinds": ["delete"]})
    return PolicyRule.model_validate({"id": f"review-{kind}", "review": body})


def command(**review: Any) -> Review:
    return new_command(
        "rv_1",
        rule(**review),
        requester="alice",
        requester_kind="user",
        groups=["eng"],
        connection="prod",
        statement="DELETE FROM orders WHERE id = $1",
        params=["42"],
        session_id="s1",
        justification="INC-4211 fix stuck orders",
        now_ns=T0,
    )


def access(duration_ns: int = 30 * M, **review: Any) -> Review:
    return new_access(
        "rv_2",
        rule("access", **review),
        requester="alice",
        requester_kind="user",
        groups=["eng"],
        connection="prod",
        duration_ns=duration_ns,
        justification="INC-4211",
        now_ns=T0,
    )


def ask_access(r: PolicyRule, **over: Any) -> Review:
    """``new_access`` under ``r`` with plain arguments, ``over`` replacing some."""
    args: dict[str, Any] = {
        "requester": "a",
        "requester_kind": "user",
        "groups": [],
        "connection": "prod",
        "duration_ns": M,
        "justification": None,
        "now_ns": T0,
    }
    return new_access("rv", r, **(args | over))


def ok(r: Review, who: str = "bob", groups: tuple[str, ...] = ("dba",), at: int = T0 + S) -> Review:
    return decide(r, who, groups, True, "looks right", at)


# -- the table -------------------------------------------------------------------------------
EXPECTED: dict[tuple[State, Event], State] = {
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
ONLY: dict[Event, Kind] = {"execute": "command", "activate": "access", "end": "access"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("state", STATES)
def test_every_state_and_event(state: State, event: Event, kind: Kind) -> None:
    want = EXPECTED.get((state, event))
    if want is None or ONLY.get(event, kind) != kind:
        with pytest.raises(ReviewError) as e:
            next_state(state, event, kind)
        assert e.value.reason == "state"
    else:
        assert next_state(state, event, kind) == want


def test_final_states_are_left_by_nothing() -> None:
    assert {"denied", "expired", "cancelled", "executed", "ended"} == TERMINAL
    for state in TERMINAL:
        for event in EVENTS:
            for kind in KINDS:
                with contextlib.suppress(ReviewError):
                    assert next_state(state, event, kind) == state


# -- requests -------------------------------------------------------------------------------
def test_a_command_request_binds_statement_params_identity_and_connection() -> None:
    r = command(ttl="30m", approval_valid="5m")
    assert (r.state, r.kind, r.rule_id, r.requester) == (
        "pending",
        "command",
        "review-command",
        "alice",
    )
    assert r.expires_ns == T0 + 30 * M and r.approval_valid_ns == 5 * M
    assert r.binding == binding_hash("alice", "prod", "DELETE FROM orders WHERE id = $1", ["42"])
    assert r.requirement == Requirement(1, ("dba",), False)
    assert r.history[0].event == "request" and r.history[0].actor == "alice"
    assert r.due_ns == r.expires_ns and r.state not in TERMINAL


def test_binding_hash_changes_with_anything_bound() -> None:
    base = binding_hash("alice", "prod", "DELETE FROM t", ["1", None])
    assert base == binding_hash("alice", "prod", "DELETE FROM t", ("1", None))
    others = {
        binding_hash("bob", "prod", "DELETE FROM t", ["1", None]),
        binding_hash("alice", "staging", "DELETE FROM t", ["1", None]),
        binding_hash("alice", "prod", "DELETE FROM t ", ["1", None]),
        binding_hash("alice", "prod", "DELETE FROM t", ["1", ""]),
        binding_hash("alice", "prod", "DELETE FROM t", ["1"]),
        binding_hash("alice", "prod", None),
    }
    assert base not in others and len(others) == 6
    assert len(base) == 64


def test_justification_is_required_when_the_rule_says_so() -> None:
    with pytest.raises(ReviewError) as e:
        ask_access(rule("access", justification=True), justification="  ")
    assert e.value.reason == "justification required"
    r = access(justification=True)
    assert r.justification == "INC-4211"
    with pytest.raises(ReviewError) as e:
        ask_access(rule("access"), justification="x" * 1001)
    assert e.value.reason == "too long"


def test_an_access_window_is_positive_and_at_most_max_duration() -> None:
    with pytest.raises(ReviewError, match="at most 1h") as e:
        access(duration_ns=61 * M, max_duration="1h")
    assert e.value.reason == "too long"
    with pytest.raises(ReviewError, match="positive"):
        access(duration_ns=0)
    assert access(duration_ns=60 * M, max_duration="1h").duration_ns == 60 * M


def test_requests_need_the_right_rule_and_a_requester() -> None:
    with pytest.raises(ReviewError, match="not an access review rule"):
        ask_access(rule("command"))
    with pytest.raises(ReviewError, match="names who asks"):
        ask_access(rule("access"), requester=GATEWAY)
    with pytest.raises(ReviewError) as e:
        new_command(
            "rv",
            rule(),
            requester="a",
            requester_kind="user",
            groups=[],
            connection="p",
            statement="x" * ((1 << 20) + 1),
            params=[],
            session_id=None,
            justification=None,
            now_ns=T0,
        )
    assert e.value.reason == "too long"


# -- decisions ----------------------------------------------------------------------------------
def test_nobody_approves_their_own_request() -> None:
    r = command()
    for groups in (("dba",), ("dba", "admins")):
        with pytest.raises(ReviewError, match="own request") as e:
            decide(r, "alice", groups, True, "mine", T0 + S)
        assert e.value.reason == "self-approval"
        with pytest.raises(ReviewError, match="own request"):
            decide(r, "alice", groups, False, "mine", T0 + S)


def test_a_reviewer_is_in_a_reviewer_group_decides_once_and_gives_a_reason() -> None:
    r = command(min_approvals=2)
    with pytest.raises(ReviewError, match="none of the reviewer groups") as e:
        decide(r, "bob", ("eng",), True, "fine", T0 + S)
    assert e.value.reason == "not a reviewer"
    for blank in ("", "   "):
        with pytest.raises(ReviewError) as e:
            decide(r, "bob", ("dba",), True, blank, T0 + S)
        assert e.value.reason == "reason required"
    r = ok(r)
    assert r.state == "pending" and r.approvals == 1 and r.history[-1].event == "vote"
    with pytest.raises(ReviewError) as e:
        ok(r)
    assert e.value.reason == "already decided"


def test_one_deny_denies() -> None:
    r = ok(command(min_approvals=3))
    r = decide(r, "carol", ("dba",), False, "  not during the freeze ", T0 + 2 * S)
    assert r.state == "denied" and r.decided_ns == T0 + 2 * S
    assert r.decisions[-1] == ReviewDecision(
        "carol", ("dba",), False, "not during the freeze", T0 + 2 * S
    )
    assert (
        r.history[-1].reason == "not during the freeze" and r.state in TERMINAL and r.due_ns is None
    )
    with pytest.raises(ReviewError) as e:
        ok(r, "dave")
    assert e.value.reason == "state"


def test_n_of_m_approvals() -> None:
    r = command(min_approvals=3, approval_valid="5m")
    r = ok(r, "b1")
    r = ok(r, "b2")
    assert r.state == "pending" and r.valid_until_ns is None
    r = ok(r, "b3", at=T0 + 10 * S)
    assert r.state == "approved" and r.approvals == 3
    assert r.decided_ns == T0 + 10 * S and r.valid_until_ns == T0 + 10 * S + 5 * M
    assert [t.event for t in r.history] == ["request", "vote", "vote", "approve"]


def test_all_groups_needs_an_approver_of_its_own_per_group() -> None:
    r = command(reviewers=["dba", "security"], all_groups=True)
    both = ok(r, "ann", ("dba", "security"))
    assert both.state == "pending"  # one person cannot stand for both groups
    assert ok(both, "bo", ("dba",)).state == "approved"  # ann for security, bo for dba
    r2 = ok(ok(r, "d1", ("dba",)), "d2", ("dba",))
    assert r2.state == "pending" and r2.approvals == 2
    assert ok(r2, "s1", ("security",)).state == "approved"
    # and min_approvals in all
    r3 = command(reviewers=["dba", "security"], all_groups=True, min_approvals=3)
    r3 = ok(ok(r3, "d", ("dba",)), "s", ("security",))
    assert r3.state == "pending" and ok(r3, "x", ("dba",)).state == "approved"


def test_requirement_matching() -> None:
    req = Requirement(1, ("a", "b", "c"), True)

    def d(name: str, *groups: str) -> ReviewDecision:
        return ReviewDecision(name, groups, True, "ok", 0)

    assert not requirement_met(req, [d("1", "a", "b"), d("2", "a", "b")])
    assert requirement_met(req, [d("1", "a", "b"), d("2", "a", "b"), d("3", "b", "c")])
    assert not requirement_met(req, [d("1", "a", "b", "c"), d("2", "c"), d("3", "c")])
    assert not requirement_met(Requirement(2, ("a",), False), [d("1", "a")])
    no = ReviewDecision("9", ("a", "b", "c"), False, "no", 0)
    assert not requirement_met(req, [no, d("2", "a"), d("3", "b")])


def test_a_decision_after_the_request_expired_is_refused() -> None:
    r = command(ttl="10m")
    with pytest.raises(ReviewError) as e:
        ok(r, at=T0 + 10 * M)
    assert e.value.reason == "expired"


# -- expiry and cancelling ----------------------------------------------------------------------
def test_expiry_of_requests_and_of_unused_approvals() -> None:
    r = command(ttl="10m", approval_valid="5m")
    with pytest.raises(ReviewError) as e:
        expire(r, T0 + 10 * M - 1)
    assert e.value.reason == "not due"
    gone = expire(r, T0 + 10 * M)
    assert gone.state == "expired" and gone.history[-1].actor == GATEWAY
    assert gone.history[-1].reason == "no decision in time"
    a = ok(r, at=T0 + M)
    assert a.due_ns == T0 + 6 * M
    with pytest.raises(ReviewError):
        expire(a, T0 + 6 * M - 1)
    assert expire(a, T0 + 6 * M).history[-1].reason == "the approval was not used"
    w = ok(access(duration_ns=30 * M), at=T0 + M)
    assert (w.window_start_ns, w.window_end_ns) == (T0 + M, T0 + 31 * M)
    assert expire(w, T0 + 31 * M).state == "expired"
    live = activate(w, T0 + 2 * M)
    with pytest.raises(ReviewError):
        expire(live, T0 + 40 * M)  # an open window ends; it does not expire


def test_cancel_by_the_requester_or_the_gateway_only() -> None:
    r = command()
    with pytest.raises(ReviewError) as e:
        cancel(r, "bob", None, T0)
    assert e.value.reason == "forbidden"
    c = cancel(r, "alice", None, T0 + S)
    assert c.state == "cancelled" and c.history[-1].reason == "cancelled by the requester"
    g = cancel(r, GATEWAY, None, T0 + S)
    assert g.history[-1].actor == GATEWAY and g.history[-1].reason == "the client went away"
    assert cancel(ok(r), "alice", "not needed", T0 + 2 * S).state == "cancelled"
    with pytest.raises(ReviewError):
        cancel(c, "alice", None, T0 + 3 * S)


# -- running ----------------------------------------------------------------------------------
def test_an_approved_statement_runs_once_within_its_validity() -> None:
    a = ok(command(approval_valid="5m"), at=T0 + M)
    with pytest.raises(ReviewError) as e:
        execute(command(), "s1", T0 + M)
    assert e.value.reason == "state"
    with pytest.raises(ReviewError) as e:
        execute(a, "s1", T0 + 6 * M)
    assert e.value.reason == "expired"
    x = execute(a, "s9", T0 + 2 * M)
    assert x.state == "executed" and [e.session_id for e in x.executions] == ["s9"]
    assert x.state in TERMINAL and x.due_ns is None
    with pytest.raises(ReviewError) as e:
        execute(x, "s9", T0 + 3 * M)
    assert e.value.reason == "state"
    assert record_use(x, "s9", T0 + 3 * M) is x  # already recorded
    with pytest.raises(ReviewError):
        execute(ok(access()), "s1", T0 + 2 * S)


def test_an_access_window_activates_records_sessions_and_ends() -> None:
    a = ok(access(duration_ns=30 * M), at=T0 + M)
    with pytest.raises(ReviewError) as e:
        activate(a, T0 + 31 * M)
    assert e.value.reason == "expired"
    live = activate(a, T0 + 2 * M)
    assert live.state == "active" and live.due_ns == T0 + 31 * M
    used = record_use(record_use(live, "s1", T0 + 3 * M), "s2", T0 + 4 * M)
    assert [e.session_id for e in used.executions] == ["s1", "s2"]
    assert record_use(used, "s1", T0 + 5 * M) is used
    with pytest.raises(ReviewError):
        record_use(used, "s3", T0 + 31 * M)
    done = end(used, GATEWAY, None, T0 + 31 * M)
    assert done.state == "ended" and done.history[-1].reason == "the window closed"
    with pytest.raises(ReviewError):
        record_use(a, "s1", T0 + 2 * M)  # approved, not yet active


# -- the stored form ---------------------------------------------------------------------------
def test_the_record_round_trips() -> None:
    r = command(min_approvals=2)
    r = decide(ok(r), "carol", ("dba", "ops"), True, "yes", T0 + 2 * S)
    r = execute(r, "s1", T0 + 3 * S)
    assert Review.from_dict(r.as_dict()) == r
    a = end(
        record_use(activate(ok(access()), T0 + 2 * S), "s1", T0 + 3 * S),
        "alice",
        "done",
        T0 + 4 * S,
    )
    d = a.as_dict()
    assert Review.from_dict(d) == a and d["params"] is None and d["statement"] is None
    assert d["requester"] == {"kind": "user", "subject": "alice", "groups": ["eng"]}
    assert [h["event"] for h in d["history"]] == ["request", "approve", "activate", "use", "end"]
    for bad in (
        {},
        {**d, "state": "limbo"},
        {**d, "decisions": [{"reviewer": "x"}]},
        {**d, "created_ns": float("inf")},  # json.loads reads Infinity
        {**d, "requirement": {**d["requirement"], "min_approvals": float("inf")}},
        {**d, "history": ["request"]},
    ):
        with pytest.raises(ReviewError) as e:
            Review.from_dict(bad)
        assert e.value.reason == "damaged"


def test_functions_return_new_values() -> None:
    r = command()
    before = replace(r)
    ok(r)
    cancel(r, "alice", None, T0)
    assert r == before


def test_text_that_cannot_be_recorded_is_refused() -> None:
    """A lone surrogate (JSON can spell one) has no UTF-8 form: no ledger entry, stored
    review or notification could hold it, so the step is refused, not half made."""
    r = command()
    with pytest.raises(ReviewError, match="not valid text") as e:
        decide(r, "bob", ("dba",), True, "ok \ud800", T0 + S)
    assert e.value.reason == "bad request"
    with pytest.raises(ReviewError, match="not valid text"):
        cancel(r, "alice", "\udfff", T0 + S)
    with pytest.raises(ReviewError, match="not valid text"):
        ask_access(rule("access"), justification="INC \ud800")
    live = activate(ok(access()), T0 + 2 * S)
    with pytest.raises(ReviewError, match="not valid text"):
        end(live, "alice", "\ud800", T0 + 3 * S)
    assert decide(r, "bob", ("dba",), True, "ok ✓ ünïcode", T0 + S).state == "approved"
