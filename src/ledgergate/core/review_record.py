"""A just-in-time review as a record: what it holds, its stored form, and the hashes
binding an approval to what was asked.

Owns the frozen values of ``core.review``'s state machine (``Review`` and its
requirement, decisions, executions and history) and ``Review.as_dict``/``from_dict``,
the JSON form stored, answered by the API and read by notifications. The rules of moving
a review live in ``core.review``, never here. Pure: no I/O, clock or logging.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from ledgergate.core.ledger.canonical import CanonicalError, canonical_json
from ledgergate.core.policy.rules import ReviewAction

__all__ = [
    "KINDS",
    "STATES",
    "Execution",
    "Kind",
    "Requirement",
    "Review",
    "ReviewDecision",
    "ReviewError",
    "State",
    "Transition",
    "binding_hash",
    "params_hash",
    "statement_hash",
]

State = Literal[
    "pending", "approved", "denied", "expired", "cancelled", "executed", "active", "ended"
]
Kind = Literal["command", "access"]
STATES: tuple[State, ...] = get_args(State)
KINDS: tuple[Kind, ...] = get_args(Kind)


class ReviewError(ValueError):
    """A step the review cannot take; the message is safe to show to the caller.
    ``reason`` is a short code: "state", "expired", "not due", "self-approval",
    "not a reviewer", "already decided", "reason required", "justification required",
    "too long", "bad request", "damaged" (and the services' own: "not found", "no rule",
    "duplicate", "forbidden", "busy")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Requirement:
    """Who must approve: ``min_approvals`` approvals by members of ``groups``; with
    ``all_groups`` also one approver of its own for each group."""

    min_approvals: int
    groups: tuple[str, ...]
    all_groups: bool = False

    @classmethod
    def of(cls, action: ReviewAction) -> Requirement:
        return cls(action.min_approvals, tuple(dict.fromkeys(action.reviewers)), action.all_groups)

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_approvals": self.min_approvals,
            "groups": list(self.groups),
            "all_groups": self.all_groups,
        }


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    reviewer: str
    groups: tuple[str, ...]  # the reviewer's groups when deciding
    approve: bool
    reason: str
    ts_ns: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "reviewer": self.reviewer,
            "groups": list(self.groups),
            "approve": self.approve,
            "reason": self.reason,
            "ts_ns": self.ts_ns,
        }


@dataclass(frozen=True, slots=True)
class Execution:
    """A session that ran under the approval (the command's, or one opened in a window)."""

    session_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of the review's history. ``event`` is "request" for the first one."""

    event: str
    state: State  # the state after the step
    actor: str
    reason: str | None
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Review:
    id: str
    kind: Kind
    state: State
    rule_id: str
    connection: str
    requester: str
    requester_kind: str  # "user" | "service"
    requester_groups: tuple[str, ...]
    requirement: Requirement
    binding: str  # binding_hash(requester, connection, statement, params), hex
    created_ns: int
    expires_ns: int  # a pending request expires then
    justification: str | None = None
    # command
    statement: str | None = None
    params: tuple[str | None, ...] = ()
    session_id: str | None = None  # the session that asked
    approval_valid_ns: int = 0
    valid_until_ns: int | None = None  # set at the approval
    # access
    duration_ns: int | None = None
    window_start_ns: int | None = None  # set at the approval
    window_end_ns: int | None = None
    # the record
    decided_ns: int | None = None
    decisions: tuple[ReviewDecision, ...] = ()
    executions: tuple[Execution, ...] = ()
    history: tuple[Transition, ...] = ()

    @property
    def approvals(self) -> int:
        return sum(1 for d in self.decisions if d.approve)

    @property
    def due_ns(self) -> int | None:
        """When this review must move by itself (expire, or end), if ever."""
        if self.state == "pending":
            return self.expires_ns
        if self.state == "approved":
            return self.valid_until_ns if self.kind == "command" else self.window_end_ns
        if self.state == "active":
            return self.window_end_ns
        return None

    def identity(self) -> dict[str, Any]:
        """The requester as ledger entries name an identity: ``{kind, subject, groups}``."""
        return {
            "kind": self.requester_kind,
            "subject": self.requester,
            "groups": list(self.requester_groups),
        }

    def as_dict(self) -> dict[str, Any]:
        """The whole approval record, JSON types only (also its stored form)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "rule_id": self.rule_id,
            "connection": self.connection,
            "requester": self.identity(),
            "requirement": self.requirement.as_dict(),
            "binding": self.binding,
            "created_ns": self.created_ns,
            "expires_ns": self.expires_ns,
            "justification": self.justification,
            "statement": self.statement,
            "params": None if self.kind == "access" else list(self.params),
            "session_id": self.session_id,
            "approval_valid_ns": self.approval_valid_ns,
            "valid_until_ns": self.valid_until_ns,
            "duration_ns": self.duration_ns,
            "window_start_ns": self.window_start_ns,
            "window_end_ns": self.window_end_ns,
            "decided_ns": self.decided_ns,
            "approvals": self.approvals,
            "decisions": [d.as_dict() for d in self.decisions],
            "executions": [{"session_id": e.session_id, "ts_ns": e.ts_ns} for e in self.executions],
            "history": [
                {
                    "event": t.event,
                    "state": t.state,
                    "actor": t.actor,
                    "reason": t.reason,
                    "ts_ns": t.ts_ns,
                }
                for t in self.history
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Review:
        """Read ``as_dict``'s form back; ``ReviewError("damaged")`` if it is not one."""
        try:
            kind, state = d["kind"], d["state"]
            if kind not in KINDS or state not in STATES:
                raise ValueError("unknown kind or state")
            who, req = d["requester"], d["requirement"]
            return cls(
                id=str(d["id"]),
                kind=cast(Kind, kind),
                state=cast(State, state),
                rule_id=str(d["rule_id"]),
                connection=str(d["connection"]),
                requester=str(who["subject"]),
                requester_kind=str(who["kind"]),
                requester_groups=tuple(str(g) for g in who["groups"]),
                requirement=Requirement(
                    int(req["min_approvals"]),
                    tuple(str(g) for g in req["groups"]),
                    bool(req["all_groups"]),
                ),
                binding=str(d["binding"]),
                created_ns=int(d["created_ns"]),
                expires_ns=int(d["expires_ns"]),
                justification=_opt_str(d.get("justification")),
                statement=_opt_str(d.get("statement")),
                params=tuple(None if p is None else str(p) for p in d.get("params") or ()),
                session_id=_opt_str(d.get("session_id")),
                approval_valid_ns=int(d.get("approval_valid_ns") or 0),
                valid_until_ns=_opt_int(d.get("valid_until_ns")),
                duration_ns=_opt_int(d.get("duration_ns")),
                window_start_ns=_opt_int(d.get("window_start_ns")),
                window_end_ns=_opt_int(d.get("window_end_ns")),
                decided_ns=_opt_int(d.get("decided_ns")),
                decisions=tuple(
                    ReviewDecision(
                        str(x["reviewer"]),
                        tuple(str(g) for g in x["groups"]),
                        bool(x["approve"]),
                        str(x["reason"]),
                        int(x["ts_ns"]),
                    )
                    for x in d.get("decisions") or ()
                ),
                executions=tuple(
                    Execution(str(x["session_id"]), int(x["ts_ns"]))
                    for x in d.get("executions") or ()
                ),
                history=tuple(
                    Transition(
                        str(x["event"]),
                        _state(x["state"]),
                        str(x["actor"]),
                        _opt_str(x.get("reason")),
                        int(x["ts_ns"]),
                    )
                    for x in d.get("history") or ()
                ),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ReviewError(
                f"a stored review is damaged ({type(e).__name__})", "damaged"
            ) from None


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def _opt_int(v: object) -> int | None:
    return None if v is None else int(cast(int, v))


def _state(v: object) -> State:
    if v not in STATES:
        raise ValueError("unknown state")
    return v


# -- hashes -----------------------------------------------------------------------------
def binding_hash(
    identity: str, connection: str, statement: str | None, params: Sequence[str | None] = ()
) -> str:
    """SHA-256 (hex) of the canonical JSON of what an approval is bound to: the same
    identity, connection, statement text (exactly) and parameter values give the same
    hash, anything else another one. An access window binds no statement (null)."""
    doc = {
        "v": 1,
        "identity": identity,
        "connection": connection,
        "statement": statement,
        "params": None if statement is None else list(params),
    }
    try:
        return hashlib.sha256(canonical_json(doc)).hexdigest()
    except CanonicalError:
        raise ReviewError("the statement is not valid text", "bad request") from None


def statement_hash(statement: str) -> str:
    return hashlib.sha256(statement.encode("utf-8", "surrogatepass")).hexdigest()


def params_hash(params: Sequence[str | None]) -> str:
    """SHA-256 of the parameter values' canonical JSON: what entries record instead of
    the values."""
    try:
        return hashlib.sha256(canonical_json(list(params))).hexdigest()
    except CanonicalError:
        raise ReviewError("a parameter is not valid text", "bad request") from None
