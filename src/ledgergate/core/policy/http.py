"""Guardrails, allow-lists and review conditions for HTTP and S3 requests.

Owns what a policy rule's request conditions mean: ``operations`` (S3 API names,
globs: ``Delete*``), ``methods``, ``buckets``, ``keys`` (object keys, globs:
``audit/*``), ``paths`` (the path after the connection's name for HTTP APIs, ``/bucket/
key`` for S3), ``headers`` (name → value glob); for Kafka (``core.policy.kafka`` builds
the views) ``topics`` and ``consumer_groups``, with ``operations`` matching the API name
or its class (produce, consume, describe, admin, group). A condition a request has
nothing for (``keys`` on ListBuckets, ``topics`` on JoinGroup) does not hold. SSH
(``core.policy.ssh``): ``commands`` (argv-aware patterns) on exec command lines, and
``operations``/``paths`` on SFTP operations. Rules
whose conditions are about SQL never match a request, and rules about requests never
match a statement. Pure.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ledgergate.core.policy.rules import AllowClause, DenyConditions

__all__ = ["RequestView", "request_allowed", "request_matches"]


class RequestView:
    """The facts of one request the conditions are checked against."""

    __slots__ = (
        "action",
        "argv",
        "bucket",
        "consumer_group",
        "headers",
        "key",
        "method",
        "operation",
        "path",
        "topic",
    )

    def __init__(
        self,
        *,
        method: str,
        operation: str,
        path: str,
        bucket: str | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        topic: str | None = None,
        consumer_group: str | None = None,
        action: str | None = None,
        argv: tuple[str, ...] | None = None,
    ) -> None:
        self.method = method.upper()
        self.operation = operation
        self.path = path
        self.bucket = bucket
        self.key = key
        self.headers = headers or {}
        self.topic = topic
        self.consumer_group = consumer_group
        self.action = action
        self.argv = argv  # an SSH exec command's (one simple command of its line)


def _any(value: str | None, patterns: list[str]) -> bool:
    return value is not None and any(fnmatchcase(value, p) for p in patterns)


def request_matches(c: DenyConditions | AllowClause, r: RequestView) -> bool:
    """Every request condition given holds (False when none is given)."""
    checks: list[bool] = []
    if c.operations is not None:
        checks.append(_any(r.operation, c.operations) or _any(r.action, c.operations))
    if c.methods is not None:
        checks.append(r.method in c.methods)
    if c.buckets is not None:
        checks.append(_any(r.bucket, c.buckets))
    if c.keys is not None:
        checks.append(_any(r.key, c.keys))
    if c.paths is not None:
        checks.append(_any(r.path, c.paths))
    if c.headers is not None:
        checks.append(all(_any(r.headers.get(k), [p]) for k, p in c.headers.items()))
    if c.topics is not None:
        checks.append(_any(r.topic, c.topics))
    if c.consumer_groups is not None:
        checks.append(_any(r.consumer_group, c.consumer_groups))
    if c.commands is not None:
        from ledgergate.core.policy.ssh import argv_matches  # (ssh imports this module)

        argv = r.argv
        checks.append(argv is not None and any(argv_matches(p, list(argv)) for p in c.commands))
    return bool(checks) and all(checks)


def request_allowed(clauses: list[AllowClause], r: RequestView) -> bool:
    return any(request_matches(cl, r) for cl in clauses if cl.about_requests)
