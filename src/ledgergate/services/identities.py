"""Identities: logins, service accounts, disabling, API grants and the stale report.

Use-cases shared by the REST API, SCIM and the CLI. Every change is an ``admin.*`` (or
``login.*``) ledger entry naming who changed what, committed with the change (see
``tokens.record_change``). Disabling an identity revokes nothing by itself: open
sessions end at the gateway's next re-check (the access epoch moves, so gateways notice
within a second), and new connections and logins are refused while it stays disabled.
Must never put a token, an assertion or a password in an entry or an error.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ledgergate.core.identity import Claims, GrantRule, IdentityError
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.tokens import TokenRecord, create_token, record_change
from ledgergate.store.base import GrantRow, IdentityRow, Store

__all__ = [
    "StaleIdentity",
    "add_grant",
    "create_service_account",
    "identity_dict",
    "login",
    "remove_grant",
    "set_disabled",
    "stale_identities",
    "store_rules",
]

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
# Groups per identity we keep: an IdP sending thousands is misconfigured, and every
# token and ledger entry carries them.
MAX_GROUPS = 256


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name != name.strip():
        raise IdentityError("an identity name is 1-200 printable characters", "bad name")


def _groups(groups: Sequence[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(g for g in groups if isinstance(g, str) and g))
    if len(out) > MAX_GROUPS:
        raise IdentityError(f"more than {MAX_GROUPS} groups", "too many groups")
    return out


def identity_dict(row: IdentityRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "kind": row.kind,
        "source": row.source,
        "email": row.email,
        "display_name": row.display_name,
        "groups": list(row.groups),
        "disabled": row.disabled_ns is not None,
        "disabled_ns": row.disabled_ns,
        "disabled_by": row.disabled_by,
        "disabled_reason": row.disabled_reason,
        "scim_id": row.scim_id,
        "external_id": row.external_id,
        "created_ns": row.created_ns,
        "updated_ns": row.updated_ns,
        "last_login_ns": row.last_login_ns,
        "description": row.description,
    }


def _who(row: IdentityRow | None, name: str, kind: str = "user") -> dict[str, Any]:
    if row is None:
        return {"kind": kind, "subject": name, "groups": []}
    return {"kind": row.kind, "subject": row.name, "groups": list(row.groups)}


def login(
    store: Store,
    writer: LedgerWriter,
    claims: Claims,
    *,
    now_ns: int,
    session_ttl_ns: int,
    via: str,
) -> tuple[str, TokenRecord]:
    """Mint a short-lived gateway token for a verified login (``via``: "oidc-device",
    "oidc-browser", "saml", ...). The identity is created or updated with the groups the
    provider sent; a disabled identity is refused (and the refusal recorded)."""
    _check_name(claims.subject)
    groups = _groups(claims.groups)
    row = store.get_identity(claims.subject)
    who = {"kind": "user", "subject": claims.subject, "groups": list(groups)}
    if row is not None and row.disabled_ns is not None:
        writer.append(
            [
                Draft(
                    now_ns,
                    "login.fail",
                    {
                        "identity": who,
                        "via": via,
                        "issuer": claims.issuer,
                        "reason": "identity disabled",
                    },
                )
            ],
            now_ns,
        )
        raise IdentityError(f"identity {claims.subject!r} is disabled", "identity disabled")
    if row is None:
        new = IdentityRow(
            name=claims.subject,
            kind="user",
            source=claims.source,
            email=claims.email,
            groups=groups,
            created_ns=now_ns,
            updated_ns=now_ns,
            last_login_ns=now_ns,
        )
    else:
        new = replace(
            row,
            email=claims.email or row.email,
            groups=groups,
            updated_ns=now_ns,
            last_login_ns=now_ns,
        )
    # The gateway token never outlives the session length an admin configured; the
    # provider's assertion only has to be valid now (ID tokens often live minutes).
    return create_token(
        store,
        writer,
        identity=claims.subject,
        kind="user",
        ttl_ns=session_ttl_ns,
        now_ns=now_ns,
        created_by=f"{via}:{claims.issuer}",
        purpose="session",
        groups=groups,
        max_ttl_ns=session_ttl_ns,
        also=lambda st: st.put_identity(new),
    )


def create_service_account(
    store: Store,
    writer: LedgerWriter,
    *,
    name: str,
    groups: Sequence[str],
    description: str | None,
    now_ns: int,
    by: str,
) -> IdentityRow:
    """A non-human identity (CI job, AI agent) that admins issue API tokens to."""
    _check_name(name)
    if store.get_identity(name) is not None:
        raise IdentityError(f"identity {name!r} already exists", "exists")
    row = IdentityRow(
        name=name,
        kind="service",
        source="local",
        groups=_groups(groups),
        created_ns=now_ns,
        updated_ns=now_ns,
        description=description,
    )
    entry = Draft(
        now_ns,
        "admin.service_account.create",
        {"identity": _who(row, name), "by": by, "description": description},
    )
    record_change(store, writer, entry, lambda st: st.put_identity(row))
    return row


def set_disabled(
    store: Store,
    writer: LedgerWriter,
    name: str,
    *,
    disabled: bool,
    now_ns: int,
    by: str,
    reason: str | None = None,
    via: str = "api",
) -> bool:
    """Disable (or enable) an identity; True if that changed anything. An identity the
    gateway has never seen can be disabled in advance (a record is created)."""
    _check_name(name)
    row = store.get_identity(name)
    if row is not None and (row.disabled_ns is not None) == disabled:
        return False
    if row is None:
        if not disabled:
            raise IdentityError(f"no identity {name!r}", "unknown identity")
        row = IdentityRow(name=name, kind="user", source="local", created_ns=now_ns)
    new = replace(
        row,
        disabled_ns=now_ns if disabled else None,
        disabled_by=by if disabled else None,
        disabled_reason=reason if disabled else None,
        updated_ns=now_ns,
    )
    entry = Draft(
        now_ns,
        "admin.identity.disable" if disabled else "admin.identity.enable",
        {"identity": _who(row, name), "by": by, "via": via, "reason": reason},
    )
    record_change(store, writer, entry, lambda st: st.put_identity(new))
    return True


def store_rules(store: Store) -> list[GrantRule]:
    return [
        GrantRule(g.connections, g.groups, g.identities, origin=g.id) for g in store.list_grants()
    ]


def add_grant(
    store: Store,
    writer: LedgerWriter,
    *,
    connections: Sequence[str],
    groups: Sequence[str],
    identities: Sequence[str],
    now_ns: int,
    by: str,
) -> GrantRow:
    if not connections or not all(connections):
        raise IdentityError("a grant names at least one connection", "bad grant")
    if not groups and not identities:
        raise IdentityError("a grant names at least one group or identity", "bad grant")
    row = GrantRow(
        "gr_" + secrets.token_hex(6),
        tuple(connections),
        _groups(groups),
        tuple(identities),
        now_ns,
        by,
    )
    entry = Draft(
        now_ns,
        "admin.grant.create",
        {
            "grant_id": row.id,
            "connections": list(row.connections),
            "groups": list(row.groups),
            "identities": list(row.identities),
            "by": by,
        },
    )
    record_change(store, writer, entry, lambda st: st.insert_grant(row))
    return row


def remove_grant(
    store: Store, writer: LedgerWriter, grant_id: str, *, now_ns: int, by: str
) -> bool:
    if not any(g.id == grant_id for g in store.list_grants()):
        return False
    entry = Draft(now_ns, "admin.grant.delete", {"grant_id": grant_id, "by": by})
    record_change(store, writer, entry, lambda st: st.delete_grant(grant_id))
    return True


@dataclass(frozen=True, slots=True)
class StaleIdentity:
    identity: str
    reason: str  # "long session" | "old token"
    detail: dict[str, Any]


def stale_identities(
    store: Store,
    *,
    now_ns: int,
    session_longer_than_ns: int,
    token_older_than_ns: int,
) -> list[StaleIdentity]:
    """Identities whose sessions have been open (streaming) longer than a threshold, or
    who hold active tokens older than a threshold: the offboarding report."""
    out: list[StaleIdentity] = []
    for t in store.list_tokens():
        if t.revoked_ns is None and now_ns < t.expires_ns:
            age = now_ns - t.created_ns
            if age > token_older_than_ns:
                out.append(
                    StaleIdentity(
                        t.identity,
                        "old token",
                        {
                            "token_id": t.id,
                            "age_s": age // 10**9,
                            "purpose": t.purpose,
                            "last_used_ns": t.last_used_ns,
                        },
                    )
                )
    opened = store.find_entries(kinds=("session.open",), until_ns=now_ns - session_longer_than_ns)
    if opened:
        ids = [e.session_id for e in opened if e.session_id]
        ended = {
            e.session_id
            for e in store.find_entries(
                kinds=("session.close", "session.terminated"), session_ids=ids
            )
        }
        for e in opened:
            if e.session_id and e.session_id not in ended:
                out.append(
                    StaleIdentity(
                        e.identity or "?",
                        "long session",
                        {
                            "session_id": e.session_id,
                            "connection": e.connection,
                            "open_s": (now_ns - e.ts_ns) // 10**9,
                        },
                    )
                )
    return sorted(out, key=lambda s: (s.identity, s.reason))
