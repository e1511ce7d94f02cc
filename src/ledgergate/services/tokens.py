"""Gateway tokens: minted once, stored as a hash, always expiring, revocable.

A token is ``lgt_`` + 32 random bytes (URL-safe base64). Only SHA-256(token) is stored
and looked up; the token is returned once to its creator. Minting and revoking are
ledger entries (``token.created``, ``token.revoked``) committed in the same transaction
as the change. Must never put a token or its hash in a ledger entry, a log line or an
error message.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ledgergate.core.ledger.entry import Draft
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store.base import Store, TokenRow

__all__ = [
    "MAX_TTL_NS",
    "PREFIX",
    "AuthResult",
    "TokenError",
    "TokenRecord",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
]

PREFIX = "lgt_"
# A forgotten credential must die by itself: a year (and a leap day) at most.
MAX_TTL_NS = 366 * 86_400 * 10**9
# token_urlsafe(32) is 43 characters; anything longer is not one of ours and is not
# hashed (bounds the work an unauthenticated client can cause).
_TOKEN = re.compile(r"^lgt_[A-Za-z0-9_-]{43}$")
_IDENTITY = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
TokenKind = Literal["user", "service"]
KINDS: tuple[str, ...] = ("user", "service")


class TokenError(ValueError):
    """A token request that cannot be honoured; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is known about a token, never the token or its hash."""

    id: str
    identity: str
    kind: str
    created_ns: int
    expires_ns: int
    revoked_ns: int | None
    last_used_ns: int | None
    created_by: str | None

    @classmethod
    def from_row(cls, r: TokenRow) -> TokenRecord:
        return cls(
            r.id,
            r.identity,
            r.kind,
            r.created_ns,
            r.expires_ns,
            r.revoked_ns,
            r.last_used_ns,
            r.created_by,
        )

    def status(self, now_ns: int) -> str:
        if self.revoked_ns is not None:
            return "revoked"
        return "expired" if now_ns >= self.expires_ns else "active"

    def as_dict(self, now_ns: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "identity": self.identity,
            "kind": self.kind,
            "created_ns": self.created_ns,
            "expires_ns": self.expires_ns,
            "revoked_ns": self.revoked_ns,
            "last_used_ns": self.last_used_ns,
            "created_by": self.created_by,
        }
        if now_ns is not None:
            d["status"] = self.status(now_ns)
        return d


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    identity: dict[str, Any] | None  # {"kind", "subject", "groups"}
    token_id: str | None
    reason: str | None  # "unknown token" | "token expired" | "token revoked"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def _identity(kind: str, subject: str) -> dict[str, Any]:
    return {"kind": kind, "subject": subject, "groups": []}


def create_token(
    store: Store,
    writer: LedgerWriter,
    *,
    identity: str,
    kind: str,
    ttl_ns: int,
    now_ns: int,
    created_by: str,
) -> tuple[str, TokenRecord]:
    """Mint a token for ``identity``; return (token, record). The caller shows the token
    once; only its hash is stored. Raises ``TokenError`` for a bad request."""
    if kind not in KINDS:
        raise TokenError("the token kind must be 'user' or 'service'")
    if not _IDENTITY.match(identity) or identity != identity.strip():
        raise TokenError("the identity must be 1-200 printable characters")
    if ttl_ns <= 0:
        raise TokenError("a token must expire: give a positive time to live (e.g. --ttl 8h)")
    if ttl_ns > MAX_TTL_NS:
        raise TokenError("a token may live at most 366 days")
    token = PREFIX + secrets.token_urlsafe(32)
    row = TokenRow(
        id="tok_" + secrets.token_hex(8),
        token_hash=_hash(token),
        identity=identity,
        kind=kind,
        created_ns=now_ns,
        expires_ns=now_ns + ttl_ns,
        revoked_ns=None,
        last_used_ns=None,
        created_by=created_by,
    )
    entry = Draft(
        now_ns,
        "token.created",
        {
            "token_id": row.id,
            "identity": _identity(kind, identity),
            "expires_ns": row.expires_ns,
            "by": created_by,
        },
    )
    _record(store, writer, entry, lambda st: st.insert_token(row))
    return token, TokenRecord.from_row(row)


def _record(
    store: Store, writer: LedgerWriter, entry: Draft, change: Callable[[Store], None]
) -> None:
    """Apply ``change`` and append its ledger entry atomically when the writer uses the
    same store; otherwise ledger first (an entry without a change is harmless, a change
    without its entry is not)."""
    if writer.store is store:
        writer.append([entry], entry.ts_ns, also=change)
        return
    writer.append([entry], entry.ts_ns)
    with store.transaction():
        change(store)


def authenticate(store: Store, token: str, now_ns: int) -> AuthResult:
    """Check a presented token. Revoked wins over expired; unknown says nothing more."""
    if not _TOKEN.match(token):
        return AuthResult(False, None, None, "unknown token")
    row = store.token_by_hash(_hash(token))
    if row is None:
        return AuthResult(False, None, None, "unknown token")
    ident = _identity(row.kind, row.identity)
    if row.revoked_ns is not None:
        return AuthResult(False, ident, row.id, "token revoked")
    if now_ns >= row.expires_ns:
        return AuthResult(False, ident, row.id, "token expired")
    store.touch_token(row.id, now_ns)
    return AuthResult(True, ident, row.id, None)


def revoke_token(store: Store, writer: LedgerWriter, token_id: str, now_ns: int, by: str) -> bool:
    """Revoke a token; True if it was active until now, False if it was already revoked.
    Raises ``TokenError`` for an unknown id."""
    if token_id.startswith(PREFIX):
        raise TokenError("give the token's id (tok_…), not the token itself")
    row = store.token_by_id(token_id)
    if row is None:
        raise TokenError(f"no token {token_id[:40]!r}")
    if row.revoked_ns is not None:
        return False
    entry = Draft(
        now_ns,
        "token.revoked",
        {"token_id": token_id, "identity": _identity(row.kind, row.identity), "by": by},
    )
    done: list[bool] = []
    _record(store, writer, entry, lambda st: done.append(st.revoke_token(token_id, now_ns)))
    return bool(done and done[0])


def list_tokens(store: Store) -> list[TokenRecord]:
    return [TokenRecord.from_row(r) for r in store.list_tokens()]
