"""Policy rules kept in the store: the effective policy, and adding, replacing and
removing rules through the API or the CLI.

The effective policy is the configuration file's rules (read-only here: they belong to
the file) followed by the stored rules in their order, validated as a whole
(``core.policy.effective``); its version is the digest of the whole, so every ledger
entry names the exact policy it was decided under. Every change is an
``admin.policy.put`` / ``admin.policy.delete`` entry naming the caller, the rule and the
policy versions before and after, committed with the change; the store's policy epoch
moves with it, which is how every gateway sharing the store notices (within a second).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ledgergate.core.ledger.canonical import CanonicalError, canonical_json
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.policy.effective import PolicyError, combine, rule_document
from ledgergate.core.policy.engine import PolicySet, policy_version
from ledgergate.core.policy.rules import PolicySettings
from ledgergate.services.ledger import LedgerUnavailable, LedgerWriter
from ledgergate.services.tokens import record_change
from ledgergate.store.base import PolicyRuleRow, Store

__all__ = [
    "PolicyChangeError",
    "RuleChange",
    "current",
    "delete_rule",
    "effective",
    "load",
    "policy_set",
    "put_rule",
]

# Stored rules at most: every statement not yet in a session's decision cache is checked
# against each deny rule that applies, so thousands of rules would slow every new
# statement; a policy that needs more is a configuration file's job.
MAX_STORED_RULES = 1000
# Another admin changed the stored rules between our read and our write: compute again
# against their change this many times before giving up.
CHANGE_ATTEMPTS = 5


class PolicyChangeError(Exception):
    """A change that cannot be made. ``reason``: "invalid" (the rule or the resulting
    policy), "file rule" (it belongs to the configuration file), "unknown rule",
    "busy" (the rules kept changing meanwhile)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Moved(Exception):
    """The stored rules changed since they were read (inside the write transaction)."""


@dataclass(frozen=True, slots=True)
class RuleChange:
    rule_id: str
    action: str  # "put" | "delete"
    rule: dict[str, Any]
    position: int
    created: bool
    old_version: str | None  # None: the policy before did not validate
    new_version: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "source": "api",
            "action": self.action,
            "created": self.created,
            "position": self.position,
            "rule": self.rule,
            "old_version": self.old_version,
            "new_version": self.new_version,
        }


def _documents(rows: Sequence[PolicyRuleRow]) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    for r in rows:
        try:
            body = json.loads(r.body)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser
            raise PolicyError(f"rule {r.id!r}: its stored body is not JSON") from None
        if not isinstance(body, dict):
            raise PolicyError(f"rule {r.id!r}: its stored body is not a mapping")
        out.append((r.id, body))
    return out


def effective(file: PolicySettings, rows: Sequence[PolicyRuleRow]) -> PolicySettings:
    """The file's policy section followed by the stored rules; raises ``PolicyError``."""
    return combine(file, _documents(rows))


def load(store: Store, file: PolicySettings) -> tuple[int, PolicySettings, list[PolicyRuleRow]]:
    """(policy epoch, effective policy, stored rows). The epoch is read first: the rules
    read after it are at least that new, so a poller that saw it misses no change."""
    epoch = store.policy_epoch()
    rows = store.list_policy_rules()
    return epoch, effective(file, rows), rows


def current(store: Store, file: PolicySettings) -> tuple[PolicySet, list[PolicyRuleRow]]:
    """The effective policy (for describing and explaining) and the stored rows."""
    _, settings, rows = load(store, file)
    return PolicySet(settings), rows


def policy_set(settings: PolicySettings) -> PolicySet | None:
    """What a gateway enforces: None when there is no rule at all (nothing is parsed)."""
    return PolicySet(settings) if settings.rules else None


def _version(file: PolicySettings, rows: Sequence[PolicyRuleRow]) -> str | None:
    try:
        return policy_version(effective(file, rows))
    except PolicyError:
        return None


# A change computed from what the store held at ``epoch``: its entry, the rows to write,
# the rule to remove, and what to answer.
_Plan = tuple[int, Draft, list[PolicyRuleRow], str | None, RuleChange]


def _change(
    epoch: int, puts: Sequence[PolicyRuleRow], delete: str | None
) -> Callable[[Store], None]:
    def change(st: Store) -> None:
        if st.policy_epoch() != epoch:
            raise _Moved()
        if delete is not None:
            st.delete_policy_rule(delete)
        for row in puts:
            st.put_policy_rule(row)

    return change


def _apply(store: Store, writer: LedgerWriter, plan: Callable[[], _Plan]) -> RuleChange:
    """Write a planned change with its ledger entry, unless the stored rules moved since
    the plan read them; then plan again (a change is always computed against the rules
    it replaces, so the versions in its entry are exact)."""
    for _ in range(CHANGE_ATTEMPTS):
        epoch, entry, puts, delete, result = plan()
        try:
            record_change(store, writer, entry, _change(epoch, puts, delete))
        except _Moved:
            continue
        except LedgerUnavailable as e:
            if isinstance(e.__cause__, _Moved):
                continue
            raise
        return result
    raise PolicyChangeError("the stored policy rules kept changing meanwhile; try again", "busy")


def _file_rule(rule_id: str) -> PolicyChangeError:
    return PolicyChangeError(
        f"rule {rule_id!r} belongs to the configuration file; change it there", "file rule"
    )


def put_rule(
    store: Store,
    writer: LedgerWriter,
    file: PolicySettings,
    rule_id: str,
    doc: object,
    *,
    position: int | None = None,
    now_ns: int,
    by: str,
) -> RuleChange:
    """Create or replace the stored rule ``rule_id`` with ``doc`` (the rule without its
    id, or with the same id). ``position``: its place among the stored rules (0 first;
    past the end: last); unset, a replaced rule keeps its place and a new one goes last."""
    if any(r.id == rule_id for r in file.rules):
        raise _file_rule(rule_id)
    if position is not None and position < 0:
        raise PolicyChangeError("position: a place among the stored rules, 0 or more", "invalid")
    try:
        rule = rule_document(rule_id, doc)
        # Stored and put on the ledger as canonical JSON: a string that is not valid
        # Unicode (a lone surrogate, which a JSON body can spell) is the rule's fault.
        body = canonical_json(rule).decode("utf-8")
    except PolicyError as e:
        raise PolicyChangeError(str(e), "invalid") from None
    except CanonicalError as e:
        raise PolicyChangeError(f"rule {rule_id!r}: {e}", "invalid") from None

    def plan() -> _Plan:
        epoch = store.policy_epoch()
        rows = store.list_policy_rules()
        before = {r.id: r for r in rows}
        order = [r.id for r in rows]
        prev = before.get(rule_id)
        if prev is None and len(rows) >= MAX_STORED_RULES:
            raise PolicyChangeError(
                f"at most {MAX_STORED_RULES} rules are kept in the store; "
                "put the rest in the configuration file",
                "invalid",
            )
        at = len(order)
        if prev is not None:
            at = order.index(rule_id)
            order.remove(rule_id)
        at = min(position if position is not None else at, len(order))
        order.insert(at, rule_id)
        new_row = PolicyRuleRow(
            rule_id,
            body,
            at,
            prev.created_ns if prev is not None else now_ns,
            prev.created_by if prev is not None else by,
            now_ns,
            by,
        )
        after = [
            new_row if rid == rule_id else replace(before[rid], position=i)
            for i, rid in enumerate(order)
        ]
        try:
            new_version = policy_version(effective(file, after))
        except PolicyError as e:
            raise PolicyChangeError(str(e), "invalid") from None
        puts = [r for r in after if r.id == rule_id or before[r.id].position != r.position]
        result = RuleChange(
            rule_id, "put", rule, at, prev is None, _version(file, rows), new_version
        )
        entry = Draft(
            now_ns,
            "admin.policy.put",
            {
                "rule_id": rule_id,
                "rule": rule,
                "position": at,
                "created": prev is None,
                "old_version": result.old_version,
                "new_version": new_version,
                "by": by,
            },
        )
        return epoch, entry, puts, None, result

    return _apply(store, writer, plan)


def delete_rule(
    store: Store,
    writer: LedgerWriter,
    file: PolicySettings,
    rule_id: str,
    *,
    now_ns: int,
    by: str,
) -> RuleChange:
    """Remove the stored rule ``rule_id`` (the rules after it move up one place)."""

    def plan() -> _Plan:
        epoch = store.policy_epoch()
        rows = store.list_policy_rules()
        gone = next((r for r in rows if r.id == rule_id), None)
        if gone is None:
            if any(r.id == rule_id for r in file.rules):
                raise _file_rule(rule_id)
            raise PolicyChangeError(f"no stored policy rule {rule_id!r}", "unknown rule")
        rest = [r for r in rows if r.id != rule_id]
        after = [replace(r, position=i) for i, r in enumerate(rest)]
        puts = [r for r, was in zip(after, rest, strict=True) if r.position != was.position]
        try:
            (_, body), *_ = _documents([gone])
        except PolicyError:
            body = {}  # a damaged body: removing it is the way out
        result = RuleChange(
            rule_id,
            "delete",
            dict(body),
            gone.position,
            False,
            _version(file, rows),
            _version(file, after),
        )
        entry = Draft(
            now_ns,
            "admin.policy.delete",
            {
                "rule_id": rule_id,
                "rule": result.rule,
                "old_version": result.old_version,
                "new_version": result.new_version,
                "by": by,
            },
        )
        return epoch, entry, puts, rule_id, result

    return _apply(store, writer, plan)
