"""The policy configuration: guardrails, least-privilege allow-lists and masking rules.

Owns the shape of the ``policy:`` section of the YAML file and its validation (clear
errors naming the key, like the rest of the configuration). Pure: evaluation lives in
``core.policy.engine``. A rule is scoped by connection globs and by groups (``groups``:
only members; ``except_groups``: everyone but members) and does exactly one thing:

- ``deny`` (a guardrail): refuse statements matching ALL of its given conditions;
- ``allow`` (least privilege): where such a rule applies, a statement must match one of
  its clauses, else it is refused;
- ``mask``: rewrite result values of matching columns (``schema.table.column`` globs)
  and/or values in which content detectors find something;
- ``review``: a human must approve first. ``kind: command`` holds matching statements
  (``when``: the guardrail conditions) until reviewers approve; ``kind: access`` makes
  the connection reachable only inside an approved, time-boxed access window. The
  rule's ``groups``/``except_groups`` say whose requests need review (and who may skip).
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "REQUEST_CONDITIONS",
    "AllowClause",
    "DenyConditions",
    "MaskAction",
    "PolicyRule",
    "PolicySettings",
    "ReviewAction",
]

KINDS = (
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "ddl",
    "dcl",
    "copy",
    "utility",
    "transaction",
    "call",
    "do",
    "explain",
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _kinds(v: list[str]) -> list[str]:
    bad = [k for k in v if k not in KINDS]
    if bad:
        raise ValueError(f"unknown statement kind {bad[0]!r} (one of: {', '.join(KINDS)})")
    return v


# Conditions on HTTP and S3 requests (``core.policy.http``); the others are about SQL
# statements. A rule's conditions are about one or the other, never both. ``topics`` and
# ``consumer_groups`` are Kafka's (``core.policy.kafka``).
REQUEST_CONDITIONS = (
    "operations",
    "methods",
    "buckets",
    "keys",
    "paths",
    "headers",
    "topics",
    "consumer_groups",
    "commands",
)


def _upper(cls: type, v: list[str] | None) -> list[str] | None:
    """HTTP methods compared as upper case."""
    return None if v is None else [m.upper() for m in v]


def _lower_keys(cls: type, v: dict[str, str] | None) -> dict[str, str] | None:
    """Header names compared as lower case."""
    return None if v is None else {k.lower(): p for k, p in v.items()}


def _check_commands(v: list[str] | None) -> list[str] | None:
    """Command patterns are split as a shell would (quotes), so they must split."""
    if v is not None:
        for p in v:
            try:
                if not shlex.split(p):
                    raise ValueError("an empty command pattern")
            except ValueError as e:
                raise ValueError(f"command pattern {p!r}: {e}") from None
    return v


def _request_validators() -> tuple[Any, Any]:
    """The pydantic validators of ``methods`` and ``headers`` (shared by deny and allow)."""
    return (
        field_validator("methods")(classmethod(_upper)),
        field_validator("headers")(classmethod(_lower_keys)),
    )


def _request_conditions(model: BaseModel) -> tuple[bool, bool]:
    """(has SQL conditions, has request conditions)."""
    sql = any(
        getattr(model, f) not in (None, False)
        for f in type(model).model_fields
        if f not in REQUEST_CONDITIONS
    )
    req = any(getattr(model, f) is not None for f in REQUEST_CONDITIONS)
    return sql, req


class DenyConditions(_Strict):
    """A statement (or, with the request conditions, an HTTP or S3 request) matches when
    every condition given here holds (at least one)."""

    kinds: list[str] | None = None
    tables: list[str] | None = None  # any table read or written matches a glob
    writes: list[str] | None = None  # any table written matches a glob
    functions: list[str] | None = None  # any function called matches a glob
    without_where: bool | None = None  # UPDATE/DELETE with no WHERE (TRUNCATE counts)
    copy_program: bool | None = None
    do_blocks: bool | None = None
    alter_system: bool | None = None
    role_changes: bool | None = None
    search_path_changes: bool | None = None
    regex: str | None = None  # last resort, on the statement's text
    # HTTP and S3 requests: the S3 API name (PutObject, Delete*, PutBucket*), the HTTP
    # method, bucket and object-key globs, path globs (``/api/admin/*``, the path after
    # the connection's name), and header globs (``{content-type: "text/*"}``).
    operations: list[str] | None = None
    methods: list[str] | None = None
    buckets: list[str] | None = None
    keys: list[str] | None = None
    paths: list[str] | None = None
    headers: dict[str, str] | None = None
    # Kafka: topic and consumer-group globs; ``operations`` names Kafka APIs
    # (DeleteTopics, Alter*) or the classes produce, consume, describe, admin, group.
    topics: list[str] | None = None
    consumer_groups: list[str] | None = None
    # SSH: exec command lines, argv-aware (``core.policy.ssh``): ``rm -rf *``,
    # ``kubectl * delete *``, ``sudo *``; ``paths`` and ``operations`` name SFTP's.
    commands: list[str] | None = None

    @field_validator("kinds")
    @classmethod
    def _k(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _kinds(v)

    _commands = field_validator("commands")(classmethod(lambda cls, v: _check_commands(v)))
    _methods = _request_validators()[0]
    _headers = _request_validators()[1]

    @property
    def about_requests(self) -> bool:
        return _request_conditions(self)[1]

    @field_validator("regex")
    @classmethod
    def _re(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except (re.error, OverflowError, RecursionError) as e:
                raise ValueError(f"not a usable regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _some(self) -> DenyConditions:
        if all(getattr(self, f) in (None, False) for f in type(self).model_fields):
            raise ValueError("a deny rule needs at least one condition")
        sql, req = _request_conditions(self)
        if sql and req:
            raise ValueError(
                "conditions are about SQL statements or about HTTP/S3 requests "
                f"({', '.join(REQUEST_CONDITIONS)}), not both in one rule"
            )
        return self


class AllowClause(_Strict):
    """SQL: statements of these ``kinds`` on these ``tables``. HTTP/S3: requests whose
    every given condition holds (``operations``, ``methods``, ``buckets``, ``keys``,
    ``paths``, ``headers``, as in ``DenyConditions``)."""

    kinds: list[str] | None = None
    tables: list[str] = ["*"]  # every table read or written must match one glob
    operations: list[str] | None = None
    methods: list[str] | None = None
    buckets: list[str] | None = None
    keys: list[str] | None = None
    paths: list[str] | None = None
    headers: dict[str, str] | None = None
    topics: list[str] | None = None
    consumer_groups: list[str] | None = None
    commands: list[str] | None = None

    @field_validator("kinds")
    @classmethod
    def _k(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _kinds(v)

    _commands = field_validator("commands")(classmethod(lambda cls, v: _check_commands(v)))
    _methods = _request_validators()[0]
    _headers = _request_validators()[1]

    @model_validator(mode="after")
    def _one_kind(self) -> AllowClause:
        req = any(getattr(self, f) is not None for f in REQUEST_CONDITIONS)
        if self.kinds is None and not req:
            raise ValueError("an allow clause names statement kinds or request conditions")
        if self.kinds is not None and req:
            raise ValueError("an allow clause is about SQL statements or requests, not both")
        return self

    @property
    def about_requests(self) -> bool:
        return self.kinds is None


class MaskAction(_Strict):
    columns: list[str] = []  # schema.table.column globs ("*.*.email", "public.customers.*")
    detectors: list[str] = []  # content detectors, on every text value of the result
    # HTTP and S3 bodies (JSON, CSV, text): JSON paths such as "$.users[*].email" or
    # "$..card" (a CSV column by its header: the path's last name). Kafka record values
    # too (JSON; detectors on text values).
    fields: list[str] = []
    # Kafka: only records of these topics (globs); unset: every topic.
    topics: list[str] | None = None
    function: Literal["redact", "partial", "tokenize", "null", "fixed"] = "redact"
    keep_last: int = Field(4, ge=0, le=64)
    keep_domain: bool = False
    replacement: str = "****"

    @model_validator(mode="after")
    def _some(self) -> MaskAction:
        if not self.columns and not self.detectors and not self.fields:
            raise ValueError("a mask rule names columns, fields, detectors, or some of them")
        from ledgergate.core.masking.document import parse_path  # (plan imports rules)

        for f in self.fields:
            parse_path(f)
        for c in self.columns:
            if c.count(".") != 2:
                raise ValueError(f"{c!r}: a column is schema.table.column (globs allowed)")
        return self


def _seconds(v: str | int) -> int:
    from ledgergate.core.config import parse_duration  # config imports this module

    return parse_duration(v) // 1_000_000_000


class ReviewAction(_Strict):
    """Who must approve what before it runs (see ``core.review`` for the states)."""

    kind: Literal["command", "access"]
    when: DenyConditions | None = None  # command: which statements need review
    reviewers: list[str]  # reviewer groups; a reviewer is in one of them, never the requester
    min_approvals: int = Field(1, ge=1, le=16)
    # every listed reviewer group must approve (so at least one approval per group, and
    # min_approvals in all)
    all_groups: bool = False
    justification: bool = False  # a request must say why
    # command: how long the client waits for a decision (hold), and how long an approved
    # statement stays valid to run (answer); access: the longest window one may ask for.
    timeout: str = "10m"
    max_duration: str = "4h"
    ttl: str = "1h"  # a request no reviewer decides on expires after this
    approval_valid: str = "15m"  # an approved command runs within this, once
    # hold: the client's statement waits for the decision; answer: it fails at once with
    # the review id, and runs once, when sent again after approval (automation).
    wait: Literal["hold", "answer"] = "hold"

    @field_validator("timeout", "max_duration", "ttl", "approval_valid")
    @classmethod
    def _d(cls, v: str) -> str:
        if _seconds(v) <= 0:
            raise ValueError("must be a positive duration (e.g. 30s, 15m, 8h)")
        return v

    @field_validator("reviewers")
    @classmethod
    def _r(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a review rule names at least one reviewer group")
        return v

    @model_validator(mode="after")
    def _shape(self) -> ReviewAction:
        if self.kind == "command" and self.when is None:
            raise ValueError("a command review rule says which statements (when: ...)")
        if self.kind == "access" and self.when is not None:
            raise ValueError("an access review rule covers the whole connection: no 'when'")
        return self

    def seconds(self, name: str) -> int:
        """One of the durations in seconds."""
        return _seconds(getattr(self, name))


class PolicyRule(_Strict):
    id: str
    connections: list[str] = ["*"]
    groups: list[str] | None = None  # only members of these groups (unset: everyone)
    except_groups: list[str] = []
    message: str | None = None  # what the client is told on a refusal
    deny: DenyConditions | None = None
    allow: list[AllowClause] | None = None
    mask: MaskAction | None = None
    review: ReviewAction | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("a rule id is 1-63 letters, digits, '_', '.', ':' or '-'")
        return v

    @model_validator(mode="after")
    def _one(self) -> PolicyRule:
        n = sum(x is not None for x in (self.deny, self.allow, self.mask, self.review))
        if n != 1:
            raise ValueError("a rule has exactly one of deny, allow, mask or review")
        if self.allow is not None and not self.allow:
            raise ValueError("an allow rule lists at least one clause")
        return self


class PolicySettings(_Strict):
    rules: list[PolicyRule] = []
    # A statement the parser cannot read on a guarded connection: "deny" (fail closed)
    # or "allow" (a named, explicit choice).
    unparseable: Literal["deny", "allow"] = "deny"
    # Unqualified table names are resolved against these schemas (and SET search_path is
    # refused where an allow rule applies unless it is allowed as a utility statement).
    search_path: list[str] = ["public"]
    # The keyed tokenization secret: env:VAR / file:PATH; default: generated under
    # <data_dir>/keys/masking.key.
    masking_key: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> PolicySettings:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"duplicate rule id {r.id!r}")
            seen.add(r.id)
        return self
