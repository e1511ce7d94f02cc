"""Gateway tokens: minted once, stored as a hash, expiring, revocable.

A token is ``lgt_`` + 32 random bytes (URL-safe). Only SHA-256(token) is stored; neither
the token nor its hash ever goes into a ledger entry, a log line or an error.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store.sqlite import SqliteStore

__all__ = ["MAX_TTL_NS", "AuthResult", "authenticate", "create_token", "list_tokens", "revoke_token"]

MAX_TTL_NS = 366 * 86400 * 10**9
PREFIX = "lgt_"


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    identity: dict[str, Any] | None
    token_id: str | None
    reason: str | None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(store: SqliteStore, writer: LedgerWriter, *, identity: str, kind: str,
                 ttl_ns: int, now_ns: int, created_by: str) -> tuple[str, str]:
    """Mint a token; return (token, token_id). The token is shown once by the caller."""
    if kind not in ("user", "service"):
        raise ValueError("kind must be user or service")
    if not identity or len(identity) > 200:
        raise ValueError("identity must be 1-200 characters")
    if ttl_ns <= 0:
        raise ValueError("a token needs an expiry (--ttl)")
    if ttl_ns > MAX_TTL_NS:
        raise ValueError("a token may live at most 366 days")
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(8)
    expires = now_ns + ttl_ns
    with store.tx():
        store.insert_token((token_id, _hash(token), identity, kind, now_ns, expires, created_by))
    writer.append([Draft(now_ns, "token.created", {
        "token_id": token_id, "identity": {"kind": kind, "subject": identity, "groups": []},
        "expires_ns": expires, "by": created_by})], now_ns)
    return token, token_id


def authenticate(store: SqliteStore, token: str, now_ns: int) -> AuthResult:
    row = store.token_by_hash(_hash(token)) if token.startswith(PREFIX) else None
    if row is None:
        return AuthResult(False, None, None, "unknown token")
    token_id, identity, kind, expires, revoked = row
    ident = {"kind": kind, "subject": identity, "groups": []}
    if revoked is not None:
        return AuthResult(False, ident, token_id, "token revoked")
    if expires <= now_ns:
        return AuthResult(False, ident, token_id, "token expired")
    store.touch_token(token_id, now_ns)
    return AuthResult(True, ident, token_id, None)


def revoke_token(store: SqliteStore, writer: LedgerWriter, token_id: str, now_ns: int, by: str) -> bool:
    with store.tx():
        done = store.revoke_token(token_id, now_ns)
    if done:
        writer.append([Draft(now_ns, "token.revoked", {"token_id": token_id, "by": by})], now_ns)
    return done


def list_tokens(store: SqliteStore) -> list[dict[str, Any]]:
    keys = ("id", "identity", "kind", "created_ns", "expires_ns", "revoked_ns", "last_used_ns", "created_by")
    return [dict(zip(keys, r, strict=True)) for r in store.tokens()]
