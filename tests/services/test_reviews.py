"""Just-in-time reviews over a real store: access windows and held commands from request
to use, who may decide (never the requester, admins included), N-of-M and all-groups,
expiry, cancelling, an approved statement consumed exactly once by two gateways, the
``review.*`` entries and the outbox, and the approval record. Two store handles stand
for two processes sharing the database."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ledgergate.core.config import Config, parse_config
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.policy.rules import PolicyRule
from ledgergate.core.review import GATEWAY, Review, ReviewError, binding_hash, statement_hash
from ledgergate.services import policy_rules
from ledgergate.services.audit import verify_store
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.reviews import KINDS, ReviewService
from ledgergate.store import Store
from tests.services.synth import T0, Ledger

S = 10**9
M = 60 * S
DELETE = "DELETE FROM orders WHERE id = $1"


def _conn(name: str, recording: str = "redacted") -> dict[str, Any]:
    return {
        "name": name,
        "address": "127.0.0.1:5432",
        "database": name,
        "credentials": {"user": "u"},
        "recording": recording,
    }


def config(*rules: dict[str, Any]) -> Config:
    return parse_config(
        {
            "connections": [_conn("prod"), _conn("meta", "metadata"), _conn("staging")],
            "roles": {
                "admin": {"identities": ["root", "alice"]},
                "reviewer": {"groups": ["dba", "security"]},
            },
            "policy": {"rules": list(rules)},
        }
    )


ACCESS = {
    "id": "prod-access",
    "connections": ["prod", "meta"],
    "except_groups": ["oncall"],
    "review": {
        "kind": "access",
        "reviewers": ["dba"],
        "justification": True,
        "max_duration": "1h",
        "ttl": "10m",
    },
}
DELETES = {
    "id": "prod-deletes",
    "connections": ["prod", "meta"],
    "review": {
        "kind": "command",
        "when": {"kinds": ["delete"]},
        "reviewers": ["dba", "security"],
        "min_approvals": 2,
        "approval_valid": "5m",
        "ttl": "10m",
        "wait": "answer",
    },
}
CFG = config(ACCESS, DELETES)
DELETE_RULE = PolicyRule.model_validate(DELETES)


class Process:
    """One process's view: its own store handle, a shared stream, a ReviewService."""

    def __init__(self, led: Ledger, cfg: Config, stream: str) -> None:
        self.store: Store = led.store()
        self.writer = LedgerWriter.open(
            self.store, stream, led.signer, shared=True, owns_store=False
        )
        self.svc = ReviewService(self.store, self.writer, cfg)

    def close(self) -> None:
        self.writer.close(T0)
        self.store.close()


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path)


@pytest.fixture
def procs(led: Ledger) -> Iterator[tuple[Process, Process]]:
    a, b = Process(led, CFG, "api@gw"), Process(led, CFG, "gateway-reviews@gw")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def one(procs: tuple[Process, Process]) -> ReviewService:
    return procs[0].svc


@pytest.fixture
def two(procs: tuple[Process, Process]) -> ReviewService:
    return procs[1].svc


def entries(st: Store, kind: str | None = None) -> list[dict[str, Any]]:
    kinds = [kind] if kind else list(KINDS)
    return [json.loads(e.canonical) for e in st.find_entries(kinds=kinds)]


def ask_access(svc: ReviewService, who: str = "erin", **kw: Any) -> Review:
    args: dict[str, Any] = {
        "identity": who,
        "groups": ["eng"],
        "connection": "prod",
        "duration_ns": 30 * M,
        "justification": "INC-4211 fix stuck orders",
        "now_ns": T0,
    }
    args.update(kw)
    return svc.request_access(**args)


def ask_delete(svc: ReviewService, who: str = "erin", **kw: Any) -> Review:
    args: dict[str, Any] = {
        "identity": who,
        "groups": ["eng"],
        "connection": "prod",
        "rule": DELETE_RULE,
        "statement": DELETE,
        "params": ["4111111111111111"],
        "session_id": "s-ask",
        "now_ns": T0,
    }
    args.update(kw)
    return svc.request_command(**args)


def approve(svc: ReviewService, rid: str, who: str, *groups: str, at: int = T0 + S) -> Review:
    return svc.decide(
        rid, reviewer=who, reviewer_groups=groups, approve=True, reason=f"ok by {who}", now_ns=at
    )


# -- access windows -----------------------------------------------------------------------------
def test_an_access_window_from_request_to_end(
    led: Ledger, procs: tuple[Process, Process], one: ReviewService, two: ReviewService
) -> None:
    e0 = two.epoch()
    r = ask_access(one)
    assert r.state == "pending" and r.rule_id == "prod-access" and two.epoch() > e0
    assert two.active_access(identity="erin", connection="prod", now_ns=T0 + S) is None
    # approved through the other process
    a = approve(two, r.id, "bob", "dba", at=T0 + M)
    assert a.state == "approved" and (a.window_start_ns, a.window_end_ns) == (T0 + M, T0 + 31 * M)
    assert one.active_access(identity="erin", connection="staging", now_ns=T0 + 2 * M) is None
    assert one.active_access(identity="bob", connection="prod", now_ns=T0 + 2 * M) is None
    live = one.active_access(identity="erin", connection="prod", now_ns=T0 + 2 * M, session_id="s1")
    assert live is not None and live.state == "active"
    again = two.active_access(
        identity="erin", connection="prod", now_ns=T0 + 3 * M, session_id="s2"
    )
    assert again is not None and [e.session_id for e in again.executions] == ["s1", "s2"]
    assert one.active_access(identity="erin", connection="prod", now_ns=T0 + 31 * M) is None
    assert [x.id for x in one.expire_due(T0 + 31 * M)] == [r.id]
    assert one.get(r.id).state == "ended"  # type: ignore[union-attr]
    assert one.expire_due(T0 + 32 * M) == []

    st = procs[0].store
    steps = [(e["kind"], e["review"]["event"], e["review"]["actor"]) for e in entries(st)]
    assert sorted(steps) == sorted(
        [
            ("review.pending", "request", "erin"),
            ("review.approved", "approve", "bob"),
            ("review.active", "activate", "erin"),
            ("review.active", "use", "erin"),
            ("review.active", "use", "erin"),
            ("review.ended", "end", GATEWAY),
        ]
    )
    (req,) = entries(st, "review.pending")
    assert req["justification"] == "INC-4211 fix stuck orders" and req["connection"] == "prod"
    assert req["identity"] == {"kind": "user", "subject": "erin", "groups": ["eng"]}
    assert req["window"] == {"duration_ns": 30 * M, "start_ns": None, "end_ns": None}
    assert req["requirement"] == {"min_approvals": 1, "groups": ["dba"], "all_groups": False}
    (ok,) = entries(st, "review.approved")
    assert ok["decision"] == {"reviewer": "bob", "groups": ["dba"], "approve": True}
    assert ok["reason"] == "ok by bob" and ok["window"]["end_ns"] == T0 + 31 * M
    # entries are on both processes' streams; the ledger verifies
    assert {e.stream for e in st.find_entries(kinds=KINDS)} == {"api@gw", "gateway-reviews@gw"}
    assert verify_store(st, [led.signer.verifier]).ok
    # a notification for the request and for the decision (not for the window's use)
    events = [o.event for o in st.list_outbox(r.id)]
    assert events == ["requested", "approved"]
    body = json.loads(st.list_outbox(r.id)[1].body)
    assert body["event"] == "approved" and body["path"] == f"/reviews/{r.id}"
    seen = body
    assert (seen["id"], seen["state"], seen["actor"], seen["reason"]) == (
        r.id,
        "approved",
        "bob",
        "ok by bob",
    )
    assert seen["justification"] == "INC-4211 fix stuck orders" and seen["statement"] is None
    assert seen["decisions"][0]["reviewer"] == "bob" and seen["reviewers"] == ["dba"]
    assert seen["window_end_ns"] == T0 + 31 * M and body["include_statement"] is True


def test_access_requests_are_checked(one: ReviewService, led: Ledger) -> None:
    with pytest.raises(ReviewError) as e:
        ask_access(one, justification=" ")
    assert e.value.reason == "justification required"
    with pytest.raises(ReviewError, match="at most 1h") as e:
        ask_access(one, duration_ns=2 * 60 * M)
    with pytest.raises(ReviewError, match="nothing to request") as e:
        ask_access(one, connection="staging")
    assert e.value.reason == "no rule"
    with pytest.raises(ReviewError, match="nothing to request"):
        ask_access(one, groups=["eng", "oncall"])  # except_groups: oncall needs no review
    with pytest.raises(ReviewError, match="no connection") as e:
        ask_access(one, connection="nope")
    assert e.value.reason == "not found"
    r = ask_access(one)
    with pytest.raises(ReviewError, match=f"{r.id} on prod is already pending") as e:
        ask_access(one)
    assert e.value.reason == "duplicate"
    assert ask_access(one, connection="meta").state == "pending"
    assert ask_access(one, who="frank").requester == "frank"
    # a rule kept in the store counts (the effective policy)
    st = one.store
    policy_rules.put_rule(
        st,
        one.writer,
        CFG.policy,
        "staging-access",
        {"connections": ["staging"], "review": {"kind": "access", "reviewers": ["dba"]}},
        now_ns=T0,
        by="api:root",
    )
    s = ask_access(one, connection="staging", justification=None)
    assert s.rule_id == "staging-access" and s.justification is None


# -- who decides ---------------------------------------------------------------------------------
def test_nobody_approves_their_own_request_admins_included(one: ReviewService) -> None:
    r = ask_access(one, who="alice", groups=["dba", "eng"])  # alice: admin and in dba
    for approve_ in (True, False):
        with pytest.raises(ReviewError, match="own request") as e:
            one.decide(
                r.id,
                reviewer="alice",
                reviewer_groups=["dba", "eng"],
                approve=approve_,
                reason="trust me",
                now_ns=T0 + S,
            )
        assert e.value.reason == "self-approval"
    # each attempt is on the ledger, for the insights report; the review did not move
    refused = [json.loads(x.canonical) for x in one.store.find_entries(kinds=("review.refused",))]
    assert [
        (x["review"]["event"], x["review"]["actor"], x["review"]["state"]) for x in refused
    ] == [("self-approval", "alice", "pending")] * 2
    with pytest.raises(ReviewError, match="needs the reviewer or admin role") as e:
        approve(one, r.id, "erin", "eng")
    assert e.value.reason == "forbidden"
    with pytest.raises(ReviewError, match="none of the reviewer groups") as e:
        approve(one, r.id, "root")  # an admin, but in no reviewer group of the rule
    assert e.value.reason == "not a reviewer"
    with pytest.raises(ReviewError, match="none of the reviewer groups"):
        approve(one, r.id, "sam", "security")  # a reviewer, of another group
    with pytest.raises(ReviewError) as e:
        one.decide(
            r.id, reviewer="bob", reviewer_groups=["dba"], approve=True, reason="", now_ns=T0
        )
    assert e.value.reason == "reason required"
    with pytest.raises(ReviewError) as e:
        approve(one, "rv_nope", "bob", "dba")
    assert e.value.reason == "not found"
    assert one.get(r.id).state == "pending"  # type: ignore[union-attr]
    assert approve(one, r.id, "bob", "dba").state == "approved"


def test_a_disabled_reviewer_cannot_decide(one: ReviewService) -> None:
    from ledgergate.services.identities import set_disabled

    r = ask_access(one)
    set_disabled(one.store, one.writer, "bob", disabled=True, now_ns=T0, by="cli:root")
    with pytest.raises(ReviewError, match="disabled"):
        approve(one, r.id, "bob", "dba")


def test_n_of_m_across_two_processes(one: ReviewService, two: ReviewService) -> None:
    r = ask_delete(one)
    first = approve(one, r.id, "bob", "dba")
    assert first.state == "pending" and first.approvals == 1
    with pytest.raises(ReviewError) as e:
        approve(two, r.id, "bob", "dba")
    assert e.value.reason == "already decided"
    done = approve(two, r.id, "sam", "security", at=T0 + 2 * S)
    assert done.state == "approved" and done.valid_until_ns == T0 + 2 * S + 5 * M
    votes = entries(one.store, "review.pending")
    assert [(v["review"]["event"], v.get("approvals")) for v in votes] == [
        ("request", None),
        ("vote", 1),
    ]
    assert [o.event for o in one.store.list_outbox(r.id)] == ["requested", "approved"]


def test_all_groups(led: Ledger) -> None:
    rule = {
        **ACCESS,
        "review": {**ACCESS["review"], "reviewers": ["dba", "security"], "all_groups": True},
    }
    p = Process(led, config(rule), "api@gw")
    try:
        r = ask_access(p.svc)
        assert approve(p.svc, r.id, "d1", "dba").state == "pending"
        assert approve(p.svc, r.id, "d2", "dba").state == "pending"
        assert approve(p.svc, r.id, "s1", "security").state == "approved"
    finally:
        p.close()


def test_a_deny_denies_and_stops_everything(one: ReviewService, two: ReviewService) -> None:
    r = ask_delete(one)
    approve(one, r.id, "bob", "dba")
    d = two.decide(
        r.id,
        reviewer="sam",
        reviewer_groups=["security"],
        approve=False,
        reason="use the runbook",
        now_ns=T0 + 2 * S,
    )
    assert d.state == "denied" and d.decided_ns == T0 + 2 * S
    with pytest.raises(ReviewError) as e:
        approve(one, r.id, "carl", "dba")
    assert e.value.reason == "state"
    b = binding_hash("erin", "prod", DELETE, ["4111111111111111"])
    assert (
        one.consume_command(
            identity="erin", connection="prod", binding=b, session_id="s", now_ns=T0 + 3 * S
        )
        is None
    )
    (denied,) = entries(one.store, "review.denied")
    assert denied["reason"] == "use the runbook" and denied["decision"]["approve"] is False


# -- expiry and cancelling -------------------------------------------------------------------------
def test_requests_expire_and_then_take_no_decision(one: ReviewService, two: ReviewService) -> None:
    r = ask_access(one)
    assert one.expire_due(T0 + 10 * M - 1) == []
    with pytest.raises(ReviewError) as e:
        approve(two, r.id, "bob", "dba", at=T0 + 10 * M)  # expired, not yet swept
    assert e.value.reason == "expired"
    assert two.get(r.id).state == "expired"  # type: ignore[union-attr]
    assert one.expire_due(T0 + 11 * M) == []  # already moved, once
    (gone,) = entries(one.store, "review.expired")
    assert gone["reason"] == "no decision in time" and gone["review"]["actor"] == GATEWAY
    # an approval nobody used expires too
    c = ask_delete(one)
    approve(one, c.id, "bob", "dba")
    approve(one, c.id, "sam", "security", at=T0 + 2 * S)
    assert [x.id for x in two.expire_due(T0 + 2 * S + 5 * M)] == [c.id]
    assert two.get(c.id).state == "expired"  # type: ignore[union-attr]


def test_cancel(one: ReviewService, two: ReviewService) -> None:
    r = ask_access(one)
    with pytest.raises(ReviewError) as e:
        one.cancel(r.id, actor="bob", now_ns=T0 + S)
    assert e.value.reason == "forbidden"
    c = two.cancel(r.id, actor="erin", now_ns=T0 + S)
    assert c.state == "cancelled"
    held = ask_delete(one)
    g = two.cancel(held.id, actor=GATEWAY, reason="the client cancelled", now_ns=T0 + S)
    assert g.state == "cancelled" and g.history[-1].reason == "the client cancelled"
    # the requester ends an open window early
    w = ask_access(one, connection="meta")
    approve(one, w.id, "bob", "dba")
    one.active_access(identity="erin", connection="meta", now_ns=T0 + 2 * S)
    with pytest.raises(ReviewError) as e:
        one.cancel(w.id, actor="bob", now_ns=T0 + 3 * S)
    assert e.value.reason == "forbidden"
    ended = one.cancel(w.id, actor="erin", now_ns=T0 + 3 * S)
    assert ended.state == "ended" and ended.history[-1].reason == "ended early by the requester"
    assert [o.event for o in one.store.list_outbox(w.id)] == ["requested", "approved"]
    with pytest.raises(ReviewError) as e:
        one.cancel(w.id, actor="erin", now_ns=T0 + 4 * S)
    assert e.value.reason == "state"


# -- held commands ------------------------------------------------------------
def test_an_approved_statement_runs_exactly_once(one: ReviewService, two: ReviewService) -> None:
    r = ask_delete(one)
    assert ask_delete(two, session_id="s-again").id == r.id  # asked again: the same review
    assert len(one.store.list_reviews()) == 1
    b = binding_hash("erin", "prod", DELETE, ["4111111111111111"])
    assert r.binding == b

    def consume(svc: ReviewService, **kw: Any) -> Review | None:
        args: dict[str, Any] = {
            "identity": "erin",
            "connection": "prod",
            "binding": b,
            "session_id": "s-run",
            "now_ns": T0 + 3 * S,
        }
        args.update(kw)
        return svc.consume_command(**args)

    assert consume(one) is None  # not approved yet
    approve(one, r.id, "bob", "dba")
    approve(two, r.id, "sam", "security", at=T0 + 2 * S)
    other = binding_hash("erin", "prod", DELETE, ["4111111111111112"])
    assert consume(one, binding=other) is None  # other parameters
    assert consume(one, identity="frank") is None
    assert consume(one, connection="meta") is None
    assert consume(one, now_ns=T0 + 2 * S + 5 * M) is None  # the approval ran out
    ran = consume(two)
    assert ran is not None and ran.state == "executed" and ran.executions[0].session_id == "s-run"
    assert consume(one) is None and consume(two) is None  # once
    (x,) = entries(one.store, "review.executed")
    assert x["session_id"] == "s-run" and x["review"]["actor"] == GATEWAY
    # evidence of a session recorded twice changes nothing
    assert one.record_execution(r.id, session_id="s-run", ts_ns=T0 + 4 * S) == ran


def test_two_gateways_racing_for_one_approval(led: Ledger) -> None:
    setup = Process(led, CFG, "api@gw")
    r = ask_delete(setup.svc)
    approve(setup.svc, r.id, "bob", "dba")
    approve(setup.svc, r.id, "sam", "security")
    setup.close()
    got: list[Review | None] = []
    start = threading.Barrier(6)

    def gateway(i: int) -> None:
        p = Process(led, CFG, f"gw{i}-reviews@gw")
        start.wait()
        got.append(
            p.svc.consume_command(
                identity="erin",
                connection="prod",
                binding=r.binding,
                session_id=f"s{i}",
                now_ns=T0 + 3 * S,
            )
        )
        p.close()

    threads = [threading.Thread(target=gateway, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and sum(g is not None for g in got) == 1


def test_entries_never_hold_parameter_values(one: ReviewService) -> None:
    secret = "4111111111111111"
    r = ask_delete(one, statement="DELETE FROM cards WHERE pan = '5500000000000004'")
    m = ask_delete(one, connection="meta")
    raw = b"".join(e.canonical for e in one.store.find_entries(kinds=KINDS))
    assert secret.encode() not in raw and b"5500000000000004" not in raw
    cmds = {e["connection"]: e["command"] for e in entries(one.store, "review.pending")}
    assert cmds["prod"]["text"] == "DELETE FROM cards WHERE pan = ?"
    assert cmds["prod"]["text_sha256"] == statement_hash(r.statement or "")
    assert cmds["prod"]["params"]["count"] == 1 and len(cmds["prod"]["params"]["sha256"]) == 64
    assert cmds["meta"]["text"] is None  # metadata recording: no statement text
    assert m.statement == DELETE and m.params == (secret,)  # the review itself keeps them
    notices = [json.loads(o.body) for o in one.store.list_outbox()]
    assert all(
        secret not in o.body and "5500000000000004" not in o.body for o in one.store.list_outbox()
    )
    assert [(n["connection"], n["include_statement"]) for n in notices] == [
        ("prod", True),
        ("meta", False),
    ]
    assert notices[0]["statement"] == "DELETE FROM cards WHERE pan = ?"
    assert notices[1]["statement"] is None  # metadata recording: no text


def test_the_service_needs_a_writer_on_its_own_store(led: Ledger) -> None:
    st, other = led.store(), led.store()
    w = LedgerWriter.open(other, "api@gw", led.signer, shared=True, owns_store=False)
    with pytest.raises(ValueError, match="own store handle"):
        ReviewService(st, w, CFG)
    w.close(T0)
    st.close()
    other.close()


# -- listing and the record --------------------------------------------------
def test_list_and_mine_to_review(one: ReviewService) -> None:
    a = ask_access(one)
    d = ask_delete(one, who="bob", groups=["dba"])
    c = ask_access(one, who="frank", connection="meta", now_ns=T0 + S)
    one.cancel(c.id, actor="frank", now_ns=T0 + 2 * S)
    listed = [r.id for r in one.list()]
    assert listed[0] == c.id and set(listed[1:]) == {a.id, d.id}  # newest first
    assert [r.id for r in one.list(state="cancelled")] == [c.id]
    assert {r.id for r in one.list(kind="access")} == {a.id, c.id}
    assert [r.id for r in one.list(requester="bob")] == [d.id]
    assert [r.id for r in one.list(connection="meta")] == [c.id]
    mine = one.list(reviewer="bob", reviewer_groups=["dba"])
    assert [r.id for r in mine] == [a.id]  # not his own, not a cancelled one
    assert {r.id for r in one.list(reviewer="sam", reviewer_groups=["security"])} == {d.id}
    approve(one, d.id, "sam", "security")
    assert one.list(reviewer="sam", reviewer_groups=["security"]) == []  # decided already
    assert {r.id for r in one.list(reviewer="carl", reviewer_groups=["dba"])} == {a.id, d.id}


def test_the_record_names_steps_sessions_and_commands(led: Ledger, one: ReviewService) -> None:
    r = ask_access(one)
    approve(one, r.id, "bob", "dba", at=T0 + M)
    one.active_access(identity="erin", connection="prod", now_ns=T0 + 2 * M, session_id="s1")

    def cmd(ts: int, text: str) -> Draft:
        return Draft(
            ts,
            "command",
            {
                "session_id": "s1",
                "connection": "prod",
                "command": {"seq": 1, "op": "query", "text": text, "text_sha256": "x"},
            },
        )

    w = led.writer()
    w.append([cmd(T0 + 3 * M, "SELECT ?"), cmd(T0 + 40 * M, "SELECT late")], T0 + 40 * M)
    w.close(T0 + 40 * M)
    rec = one.record(r.id)
    assert rec["state"] == "active" and rec["requester"]["subject"] == "erin"
    assert [d["reviewer"] for d in rec["decisions"]] == ["bob"]
    assert [e["session_id"] for e in rec["executions"]] == ["s1"]
    assert [e["kind"] for e in rec["entries"]] == [
        "review.pending",
        "review.approved",
        "review.active",
        "review.active",
    ]
    assert all(len(e["entry_hash"]) == 64 for e in rec["entries"])
    assert [c["text"] for c in rec["commands"]] == ["SELECT ?"]  # inside the window only
    with pytest.raises(ReviewError):
        one.record("rv_nope")


# -- damaged rows and entries ---------------------------------------------------------------
def test_a_damaged_review_does_not_stop_the_sweep(one: ReviewService) -> None:
    bad = ask_access(one)
    good = ask_access(one, who="frank")
    row = one.store.get_review(bad.id)
    assert row is not None
    one.store.put_review(replace(row, body='{"kind": "access"}', due_ns=T0))  # due first
    moved = one.expire_due(T0 + 10 * M)
    assert [r.id for r in moved] == [good.id]
    with pytest.raises(ReviewError) as e:
        one.get(bad.id)
    assert e.value.reason == "damaged"


@pytest.mark.parametrize("canonical", [b"[1]", b"not json", b'{"command": "x", "review": 7}'])
def test_a_tampered_command_entry_does_not_fail_the_record(
    led: Ledger, one: ReviewService, canonical: bytes
) -> None:
    r = ask_access(one)
    approve(one, r.id, "bob", "dba", at=T0 + M)
    one.active_access(identity="erin", connection="prod", now_ns=T0 + 2 * M, session_id="s1")
    w = led.writer()
    w.append(
        [
            Draft(
                T0 + 3 * M,
                "command",
                {"session_id": "s1", "connection": "prod", "command": {"text": "SELECT ?"}},
            )
        ],
        T0 + 3 * M,
    )
    w.close(T0 + 3 * M)
    with one.store.transaction():
        one.store._db.execute(  # type: ignore[attr-defined]
            "UPDATE entries SET canonical=? WHERE kind='command'", (canonical,)
        )
    rec = one.record(r.id)
    assert [(c["session_id"], c["text"]) for c in rec["commands"]] == [("s1", None)]
