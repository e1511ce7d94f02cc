"""Policy evaluation: which rules apply to a session, and the decision on a statement.

Order, for a session on a connection by an identity with groups:
1. a statement the parser cannot read is refused (rule ``unparseable``) unless the
   policy says ``unparseable: allow``;
2. guardrails (``deny`` rules), in file order: the first that matches refuses;
3. least privilege (``allow`` rules): where any applies, every statement must match a
   clause of one of them (transaction control is always allowed);
   where results are masked, ``COPY ... TO`` is refused (its rows are not masked yet);
4. what is left is allowed; ``mask`` rules then shape the results (``core.masking``).
A multi-statement string is refused whole when any of its statements is.
Every decision names the policy version (a digest of the effective policy: the file's
section and the rules kept in the store, see ``core.policy.effective``), so a ledger
entry says which policy it was decided under. Pure and cached: the per-session object
keeps a bounded cache of decisions by statement text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from pglast.parser import ParseError, fingerprint

from ledgergate.core.policy.copy import copy_facts
from ledgergate.core.policy.http import RequestView, request_allowed, request_matches
from ledgergate.core.policy.rules import AllowClause, DenyConditions, PolicyRule, PolicySettings
from ledgergate.core.policy.sql import Statement, classify

__all__ = ["Decision", "PolicySet", "SessionPolicy", "policy_version"]

# Distinct statement texts whose decision a session keeps: an application repeats a few
# hundred; a client sending endless distinct literals just re-parses (bounded memory).
DECISION_CACHE = 4096
# Distinct (connection, groups) combinations whose rule selection is kept.
SESSION_CACHE = 1024


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str | None = None
    message: str | None = None
    review: str | None = None  # allowed once a human approves it under this review rule


ALLOW = Decision(True)


def _table_in(name: str, patterns: Iterable[str], search_path: list[str], strict: bool) -> bool:
    """Does the table ``name`` (as written: ``schema.table`` or ``table``) match a glob?
    Unqualified names are looked up on the search path: for allow-lists (``strict``) on
    its first schema only; for guardrails on any of its schemas (a pattern whose schema
    is ``*`` matches them whatever the path). Deny ``search_path_changes`` where a
    changed path would matter."""
    for p in patterns:
        pat = p if "." in p else f"*.{p}"
        if "." in name:
            if fnmatchcase(name, pat):
                return True
            continue
        schemas = search_path[:1] if strict else search_path
        if any(fnmatchcase(f"{s}.{name}", pat) for s in schemas):
            return True
        if not strict and pat.startswith("*.") and fnmatchcase(name, pat[2:]):
            return True
    return False


def _fn_in(name: str, patterns: Iterable[str]) -> bool:
    bare = name.rsplit(".", 1)[-1]
    return any(fnmatchcase(name, p) or fnmatchcase(bare, p) for p in patterns)


def _denies(c: DenyConditions, st: Statement, search_path: list[str]) -> bool:
    checks: list[bool] = []
    if c.kinds is not None:
        checks.append(any(k in c.kinds for k in (st.kinds or (st.kind,))))
    if c.tables is not None:
        checks.append(
            any(_table_in(t, c.tables, search_path, False) for t in (*st.reads, *st.writes))
        )
    if c.writes is not None:
        checks.append(any(_table_in(t, c.writes, search_path, False) for t in st.writes))
    if c.functions is not None:
        checks.append(any(_fn_in(f, c.functions) for f in st.functions))
    if c.without_where:
        checks.append(st.where is False)
    if c.copy_program:
        checks.append(st.copy_program)
    if c.do_blocks:
        checks.append(st.do_block)
    if c.alter_system:
        checks.append(st.alter_system)
    if c.role_changes:
        checks.append(st.role_change)
    if c.search_path_changes:
        checks.append(st.search_path_change)
    if c.regex is not None:
        checks.append(re.search(c.regex, st.text) is not None)
    return bool(checks) and all(checks)


def _allows(clauses: Iterable[AllowClause], st: Statement, search_path: list[str]) -> bool:
    tables = (*st.reads, *st.writes)
    for cl in clauses:
        if (
            cl.kinds is not None
            and st.kind in cl.kinds
            and all(_table_in(t, cl.tables, search_path, True) for t in tables)
        ):
            return True
    return False


class SessionPolicy:
    """The rules that apply to one (connection, groups), with a decision cache."""

    def __init__(self, settings: PolicySettings, rules: list[PolicyRule], version: str) -> None:
        self.settings = settings
        self.version = version
        # Rules about HTTP and S3 requests (core.policy.http) apart from those about SQL.
        self.request_deny = [r for r in rules if r.deny is not None and r.deny.about_requests]
        self.request_allow = [
            r for r in rules if r.allow is not None and any(c.about_requests for c in r.allow)
        ]
        self.request_review = [
            r
            for r in rules
            if r.review is not None
            and r.review.kind == "command"
            and r.review.when is not None
            and r.review.when.about_requests
        ]
        rules = [
            r
            for r in rules
            if r not in self.request_deny
            and r not in self.request_allow
            and r not in self.request_review
        ]
        # Masking of HTTP and S3 bodies: rules with fields or detectors.
        self.request_mask = [
            r for r in rules if r.mask is not None and (r.mask.fields or r.mask.detectors)
        ]
        self.deny = [r for r in rules if r.deny is not None]
        self.allow = [r for r in rules if r.allow is not None]
        self.mask = [
            r for r in rules if r.mask is not None and (r.mask.columns or r.mask.detectors)
        ]
        # Review rules: statements held for a human (command), the connection reachable
        # only inside an approved window (access; services.access checks it at connect).
        self.review = [r for r in rules if r.review is not None and r.review.kind == "command"]
        self.access = [r for r in rules if r.review is not None and r.review.kind == "access"]
        # A session with masking is guarded too: COPY ... TO would carry unmasked rows.
        self.guarded = bool(self.deny or self.allow or self.mask or self.review)
        # Rules whose request conditions name object keys (a batch delete is then
        # decided key by key).
        self.keys_matter = any(
            c is not None and c.keys is not None
            for r in (*self.request_deny, *self.request_review)
            for c in ((r.deny,) if r.deny is not None else (r.review.when,) if r.review else ())
        ) or any(cl.keys is not None for r in self.request_allow for cl in (r.allow or ()))
        self.requests_guarded = bool(self.request_deny or self.request_allow or self.request_review)
        # Decisions by statement fingerprint (the parse tree without its constants):
        # `WHERE aid = 1` and `WHERE aid = 2` share one. Only decisions no constant could
        # change go there (no regex rule, no set_config call); the rest by exact text.
        self._by_shape: OrderedDict[str, Decision] = OrderedDict()
        self._by_text: OrderedDict[str, Decision] = OrderedDict()
        self._shape_ok = not any(r.deny and r.deny.regex for r in self.deny) and not any(
            r.review and r.review.when and r.review.when.regex for r in self.review
        )
        self._refs: OrderedDict[str, frozenset[str]] = OrderedDict()

    def masked_refs(self, sql: str) -> frozenset[str]:
        """The mask rules whose columns the statement mentions by column name, whatever
        it computes from them: for result columns the catalog cannot attribute
        (``lower(email)``, ``email || ''``), which are then masked too."""
        if not self.mask:
            return frozenset()
        got = self._refs.get(sql)
        if got is not None:
            return got
        c = classify(sql)
        names = {ref.rsplit(".", 1)[-1] for st in c.statements for ref in st.columns}
        out = frozenset(
            r.id
            for r in self.mask
            if r.mask is not None
            and any(fnmatchcase(n, p.rsplit(".", 1)[-1]) for n in names for p in r.mask.columns)
        )
        self._refs[sql] = out
        if len(self._refs) > DECISION_CACHE:
            self._refs.popitem(last=False)
        return out

    def check(self, sql: str) -> Decision:
        if not self.guarded:
            return ALLOW
        try:
            shape: str | None = fingerprint(sql)
        except ParseError:
            shape = None
        except Exception:  # anything libpg_query refuses is decided (refused) below
            shape = None
        if shape is not None:
            got = self._by_shape.get(shape)
            if got is not None:
                self._by_shape.move_to_end(shape)
                return got
        got = self._by_text.get(sql)
        if got is not None:
            self._by_text.move_to_end(sql)
            return got
        d, constant_free = self._decide(sql)
        cache, key = (
            (self._by_shape, shape)
            if shape is not None and constant_free and self._shape_ok
            else (self._by_text, sql)
        )
        cache[key] = d
        if len(cache) > DECISION_CACHE:
            cache.popitem(last=False)
        return d

    def _decide(self, sql: str) -> tuple[Decision, bool]:
        """The decision, and whether no constant in the text could change it."""
        c = classify(sql)
        if c.error is not None:
            if self.settings.unparseable == "allow":
                return ALLOW, False
            return Decision(
                False,
                "unparseable",
                "the statement could not be parsed, and this connection is guarded",
            ), False
        # set_config's arguments and COPY's options (FORMAT binary or csv) are constants
        # that change the decision: such statements are cached by their text.
        constant_free = not any(
            f.rsplit(".", 1)[-1] == "set_config" for st in c.statements for f in st.functions
        ) and not any(st.kind == "copy" for st in c.statements)
        return self._judge(c.statements, sql), constant_free

    def _judge(self, statements: tuple[Statement, ...], sql: str = "") -> Decision:
        sp = self.settings.search_path
        for st in statements:
            if self.mask and st.kind == "copy" and st.copy_direction == "to":
                why = (
                    _copy_unmaskable(sql)
                    if len(statements) == 1
                    else "COPY ... TO is sent alone where results are masked"
                )
                if why is not None:
                    return Decision(False, "mask-copy-out", why)
            for r in self.deny:
                assert r.deny is not None
                if _denies(r.deny, st, sp):
                    return Decision(False, r.id, r.message or f"refused by guardrail {r.id}")
            if (
                self.allow
                and st.kind != "transaction"
                and not any(_allows(r.allow or (), st, sp) for r in self.allow)
            ):
                r = self.allow[0]
                return Decision(
                    False, r.id, r.message or f"not allowed for you on this connection ({st.kind})"
                )
        # Nothing refused: does a human have to approve it first? (The first review rule
        # any of its statements matches; a multi-statement string is held whole.)
        for r in self.review:
            assert r.review is not None and r.review.when is not None
            if any(_denies(r.review.when, st, sp) for st in statements):
                return Decision(True, r.id, r.message, review=r.id)
        return ALLOW

    def review_rule(self, rule_id: str) -> PolicyRule | None:
        """The review rule called ``rule_id`` among this session's."""
        return next(
            (r for r in (*self.review, *self.request_review, *self.access) if r.id == rule_id),
            None,
        )

    def check_request(self, r: RequestView) -> Decision:
        """The decision on an HTTP or S3 request: the first guardrail it matches refuses
        it; where allow rules about requests apply, it must match one of their clauses;
        then the first review rule it matches holds it for a human."""
        for rule in self.request_deny:
            assert rule.deny is not None
            if request_matches(rule.deny, r):
                return Decision(False, rule.id, rule.message or f"refused by guardrail {rule.id}")
        if self.request_allow and not any(
            request_allowed(rule.allow or [], r) for rule in self.request_allow
        ):
            rule = self.request_allow[0]
            return Decision(
                False,
                rule.id,
                rule.message or f"not allowed for you on this connection ({r.operation})",
            )
        for rule in self.request_review:
            assert rule.review is not None and rule.review.when is not None
            if request_matches(rule.review.when, r):
                return Decision(True, rule.id, rule.message, review=rule.id)
        return ALLOW


def _copy_unmaskable(sql: str) -> str | None:
    """Why the data of a ``COPY ... TO`` could not be masked in flight, or None. Its data
    is masked when it comes to the client in text or CSV (``core.masking.plan``); to a
    server file or program it never passes the gateway, in binary it is not rewritten."""
    try:
        facts = copy_facts(sql)
    except ValueError as e:
        return f"COPY ... TO with options that cannot be read is refused where masked: {e}"
    if facts is None:
        return "COPY ... TO a file or program is refused where results are masked; use STDOUT"
    if facts.format.format == "binary":
        return "binary COPY ... TO is refused where results are masked; use FORMAT text or csv"
    return None


def policy_version(settings: PolicySettings) -> str:
    """The digest naming a policy (the file's section, or the effective policy of the
    file and the store): equal policies have equal versions, whoever computes them."""
    doc = json.dumps(settings.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "pol_" + hashlib.sha256(doc.encode()).hexdigest()[:16]


class PolicySet:
    """The whole policy section; hands out ``SessionPolicy`` objects, shared per
    (connection, groups) so their decision caches are shared too."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self.version = policy_version(settings)
        self._sessions: OrderedDict[tuple[str, frozenset[str]], SessionPolicy | None] = (
            OrderedDict()
        )

    def applies(self, rule: PolicyRule, connection: str, groups: frozenset[str]) -> bool:
        if not any(fnmatchcase(connection, p) for p in rule.connections):
            return False
        if rule.groups is not None and not groups.intersection(rule.groups):
            return False
        return not groups.intersection(rule.except_groups)

    def for_session(self, connection: str, groups: Iterable[str]) -> SessionPolicy | None:
        """The rules for a session, or None when none apply (nothing is parsed then)."""
        key = (connection, frozenset(groups))
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        rules = [r for r in self.settings.rules if self.applies(r, connection, key[1])]
        sp = SessionPolicy(self.settings, rules, self.version) if rules else None
        self._sessions[key] = sp
        if len(self._sessions) > SESSION_CACHE:
            self._sessions.popitem(last=False)
        return sp
