"""Identities: verified claims, roles, connection grants, and whether a session may live.

Owns the pure rules of "who is this and what may they reach": the claims an identity
provider vouched for (``Claims``), roles and grants evaluated over identity names and
groups, and the verdict on an open session given what is known now (token, identity,
grants, time). No I/O, no clock: time and facts arrive as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ledgergate.core.config import Roles

__all__ = [
    "ROLES",
    "Claims",
    "GrantRule",
    "IdentityError",
    "SessionFacts",
    "end_reason",
    "granted",
    "roles_of",
    "within_scope",
]

ROLES = ("admin", "auditor", "reviewer", "user")


class IdentityError(ValueError):
    """A presented credential or assertion is not acceptable; the message is safe to
    show to the client and to record (it never contains the credential)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason  # a short code for ledger entries, e.g. "token expired"


@dataclass(frozen=True, slots=True)
class Claims:
    """What an identity provider vouched for, after every check passed."""

    subject: str  # the identity's name in ledgergate (e.g. an e-mail address)
    sub: str  # the provider's own subject identifier
    groups: tuple[str, ...]
    email: str | None
    expires_ns: int  # when the assertion stops being valid
    issuer: str  # the OIDC issuer or the SAML IdP entity id
    source: str  # "oidc" | "saml"


def roles_of(name: str, groups: Iterable[str], roles: Roles) -> frozenset[str]:
    """Every authenticated identity is a ``user``; the configuration adds the others by
    identity name or by group."""
    gs = set(groups)
    out = {"user"}
    for role in ("admin", "auditor", "reviewer"):
        members = getattr(roles, role)
        if name in members.identities or gs.intersection(members.groups):
            out.add(role)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class GrantRule:
    """Who may open sessions on which connections (names or shell-style globs)."""

    connections: tuple[str, ...]
    groups: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    origin: str = "config"  # "config" or the API grant's id

    def covers(self, connection: str) -> bool:
        return any(fnmatchcase(connection, p) for p in self.connections)

    def admits(self, name: str, groups: Iterable[str]) -> bool:
        return name in self.identities or bool(set(self.groups).intersection(groups))


def granted(
    connection: str, name: str, groups: Iterable[str], rules: Iterable[GrantRule] | None
) -> GrantRule | None:
    """The first rule letting ``name`` (with ``groups``) reach ``connection``; ``None``
    when none does. ``rules`` of ``None`` means no grants are configured at all: every
    authenticated identity may connect (an open deployment, warned about at start)."""
    gs = tuple(groups)
    if rules is None:
        return GrantRule(("*",), (), (name,), origin="open")
    for rule in rules:
        if rule.covers(connection) and rule.admits(name, gs):
            return rule
    return None


def within_scope(connection: str, scope: Sequence[str] | None) -> bool:
    """Whether a token limited to ``scope`` (names or globs; ``None``: unlimited) may be
    used on ``connection``."""
    return scope is None or any(fnmatchcase(connection, p) for p in scope)


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What an open session was admitted on, for re-checking it later."""

    session_id: str
    identity: str
    groups: tuple[str, ...]
    connection: str
    token_id: str | None  # None for an IdP JWT presented as the password
    started_ns: int
    expires_ns: int  # the credential's own expiry (token or JWT ``exp``)
    max_session_ns: int | None  # the connection's limit on a session's length
    scope: tuple[str, ...] | None = None

    def deadline(self) -> tuple[int, str]:
        """When the session must end at the latest, and why."""
        if self.max_session_ns is not None:
            cap = self.started_ns + self.max_session_ns
            if cap < self.expires_ns:
                return cap, "maximum session length reached"
        return self.expires_ns, "token expired"


def end_reason(
    facts: SessionFacts,
    now_ns: int,
    *,
    token_revoked: bool = False,
    token_missing: bool = False,
    identity_disabled: bool = False,
    still_granted: bool = True,
) -> str | None:
    """Why the session must end now, or ``None`` if it may go on. Revocation and
    disabling are named before expiry: they are what an investigator looks for."""
    if token_revoked or token_missing:
        return "token revoked"
    if identity_disabled:
        return "identity disabled"
    if not still_granted:
        return "grant removed"
    at, why = facts.deadline()
    if now_ns >= at:
        return why
    return None
