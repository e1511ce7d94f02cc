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
    "authenticate_login",
    "authenticate_ssh_key",
    "create_token",
    "list_tokens",
    "record_change",
    "revoke_token",
    "rotate_token",
    "ssh_fingerprint",
    "ssh_key_hash",
]

PREFIX = "lgt_"
# A forgotten credential must die by itself: a year (and a leap day) at most.
MAX_TTL_NS = 366 * 86_400 * 10**9
# token_urlsafe(32) is 43 characters; anything longer is not one of ours and is not
# hashed (bounds the work an unauthenticated client can cause).
_TOKEN = re.compile(r"^lgt_[A-Za-z0-9_-]{43}$")
_IDENTITY = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
TokenKind = Literal["user", "service"]
# last_used is written at most this often per token: a connection storm with one token
# must not become a write per connection (the figure is shown to the minute).
TOUCH_EVERY_NS = 10 * 10**9
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
    purpose: str = "api"
    groups: tuple[str, ...] = ()
    connections: tuple[str, ...] | None = None
    rotated_from: str | None = None

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
            r.purpose,
            r.groups,
            r.connections,
            r.rotated_from,
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
            "purpose": self.purpose,
            "groups": list(self.groups),
            "connections": None if self.connections is None else list(self.connections),
            "rotated_from": self.rotated_from,
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
    expires_ns: int = 0
    connections: tuple[str, ...] | None = None  # the token's scope (None: unlimited)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def ssh_key_hash(blob: bytes) -> bytes:
    """The stored form of an SSH public key registered as a credential (its blob is
    what the client proves it holds the private half of)."""
    return hashlib.sha256(b"ledgergate ssh public key\0" + blob).digest()


def ssh_fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob (``SHA256:…``)."""
    import base64

    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _identity(kind: str, subject: str, groups: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"kind": kind, "subject": subject, "groups": list(groups)}


def create_token(
    store: Store,
    writer: LedgerWriter,
    *,
    identity: str,
    kind: str,
    ttl_ns: int,
    now_ns: int,
    created_by: str,
    purpose: str = "api",
    groups: tuple[str, ...] = (),
    connections: tuple[str, ...] | None = None,
    max_ttl_ns: int = MAX_TTL_NS,
    rotated_from: str | None = None,
    also: Callable[[Store], object] | None = None,
    after: Callable[[Store, TokenRow], object] | None = None,
    access_key: str | None = None,
    ssh_key: bytes | None = None,
) -> tuple[str, TokenRecord]:
    """Mint a token for ``identity``; return (token, record). The caller shows the token
    once; only its hash is stored. ``groups`` are bound to it now; ``connections``
    limits where it may be used. ``also`` runs in the same transaction (e.g. revoking
    the token this one rotates), ``after`` once the row is in (an S3 access key
    attached to it). Raises ``TokenError`` for a bad request."""
    if kind not in KINDS:
        raise TokenError("the token kind must be 'user' or 'service'")
    if not _IDENTITY.match(identity) or identity != identity.strip():
        raise TokenError("the identity must be 1-200 printable characters")
    if ttl_ns <= 0:
        raise TokenError("a token must expire: give a positive time to live (e.g. --ttl 8h)")
    if ttl_ns > min(max_ttl_ns, MAX_TTL_NS):
        cap = min(max_ttl_ns, MAX_TTL_NS)
        raise TokenError(f"a token may live at most {_days(cap)} (the configured maximum)")
    if connections is not None and not all(connections):
        raise TokenError("a connection scope must name connections (names or globs)")
    # An SSH public key registered as the credential (``ssh_key``, its blob) has no
    # secret to show: the client proves it holds the private key at each login.
    token = "" if ssh_key is not None else PREFIX + secrets.token_urlsafe(32)
    if ssh_key is not None:
        old = store.token_by_hash(ssh_key_hash(ssh_key))
        if old is not None:
            state = (
                "revoked" if old.revoked_ns is not None
                else "expired" if now_ns >= old.expires_ns
                else "active"
            )  # fmt: skip
            raise TokenError(
                f"this SSH key is already registered as {old.id} ({state}, for "
                f"{old.identity!r}); a key is registered once: make a new key pair"
            )
    row = TokenRow(
        id="tok_" + secrets.token_hex(8),
        token_hash=ssh_key_hash(ssh_key) if ssh_key is not None else _hash(token),
        identity=identity,
        kind=kind,
        created_ns=now_ns,
        expires_ns=now_ns + ttl_ns,
        revoked_ns=None,
        last_used_ns=None,
        created_by=created_by,
        purpose=purpose,
        groups=tuple(groups),
        connections=None if connections is None else tuple(connections),
        rotated_from=rotated_from,
    )
    body: dict[str, Any] = {
        "token_id": row.id,
        "identity": _identity(kind, identity, row.groups),
        "expires_ns": row.expires_ns,
        "purpose": purpose,
        "by": created_by,
    }
    if row.connections is not None:
        body["connections"] = list(row.connections)
    if rotated_from is not None:
        body["rotated_from"] = rotated_from
    if access_key is not None:
        body["access_key_id"] = access_key  # the id, as AWS logs it; never the secret
    if ssh_key is not None:
        body["ssh_key"] = ssh_fingerprint(ssh_key)

    def change(st: Store) -> None:
        if also is not None:
            also(st)
        st.insert_token(row)
        if after is not None:
            after(st, row)

    record_change(store, writer, Draft(now_ns, "token.created", body), change)
    return token, TokenRecord.from_row(row)


def _days(ns: int) -> str:
    d = ns // (86_400 * 10**9)
    return f"{d} days" if d >= 1 else f"{ns // 10**9} seconds"


def record_change(
    store: Store, writer: LedgerWriter, entry: Draft, change: Callable[[Store], object]
) -> None:
    """Apply ``change`` and append its ledger entry atomically when the writer uses the
    same store; otherwise ledger first (an entry without a change is harmless, a change
    without its entry is not)."""
    if writer.store is store:

        def apply(st: Store) -> None:
            change(st)

        writer.append([entry], entry.ts_ns, also=apply)
        return
    writer.append([entry], entry.ts_ns)
    with store.transaction():
        change(store)


def authenticate(store: Store, token: str, now_ns: int) -> AuthResult:
    """Check a presented token. Revoked wins over expired; unknown says nothing more."""
    if not _TOKEN.match(token):
        return AuthResult(False, None, None, "unknown token")
    return _check_row(store, store.token_by_hash(_hash(token)), now_ns, "unknown token")


def _check_row(store: Store, row: TokenRow | None, now_ns: int, unknown: str) -> AuthResult:
    if row is None:
        return AuthResult(False, None, None, unknown)
    ident = _identity(row.kind, row.identity, row.groups)
    if row.revoked_ns is not None:
        return AuthResult(False, ident, row.id, "token revoked", row.expires_ns)
    if now_ns >= row.expires_ns:
        return AuthResult(False, ident, row.id, "token expired", row.expires_ns)
    if row.last_used_ns is None or now_ns - row.last_used_ns >= TOUCH_EVERY_NS:
        store.touch_token(row.id, now_ns)
    return AuthResult(True, ident, row.id, None, row.expires_ns, row.connections)


def authenticate_ssh_key(store: Store, blob: bytes, now_ns: int) -> AuthResult:
    """An SSH public key registered as a credential (``create_token(ssh_key=…)``)."""
    return _check_row(store, store.token_by_hash(ssh_key_hash(blob)), now_ns, "unknown SSH key")


def authenticate_login(store: Store, token_id: str, now_ns: int) -> AuthResult:
    """The login an SSH certificate the gateway issued was bound to (its token id):
    the certificate works while that login does."""
    return _check_row(store, store.token_by_id(token_id), now_ns, "unknown login")


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
    record_change(store, writer, entry, lambda st: done.append(st.revoke_token(token_id, now_ns)))
    return bool(done and done[0])


def rotate_token(
    store: Store,
    writer: LedgerWriter,
    token_id: str,
    *,
    now_ns: int,
    by: str,
    ttl_ns: int | None = None,
    max_ttl_ns: int = MAX_TTL_NS,
    keep_expiry: bool = False,
) -> tuple[str, TokenRecord]:
    """Replace an active token by a new one with the same identity, groups and scope
    (and the same lifetime unless ``ttl_ns`` is given; ``keep_expiry``: expiring when
    the old one would have, what an owner who is not an admin gets: a new secret, never
    a longer life); the old one is revoked in the same transaction, so its sessions end
    at their next re-check."""
    if token_id.startswith(PREFIX):
        raise TokenError("give the token's id (tok_…), not the token itself")
    row = store.token_by_id(token_id)
    if row is None:
        raise TokenError(f"no token {token_id[:40]!r}")
    if row.revoked_ns is not None or now_ns >= row.expires_ns:
        raise TokenError(f"{token_id} is no longer active; create a new token instead")
    if row.purpose in ("s3", "s3-session"):
        raise TokenError(f"{token_id} is an S3 access key: create a new one, then revoke it")
    if row.purpose == "ssh-key":
        raise TokenError(
            f"{token_id} is an SSH key: register the new key (token create --ssh-key), "
            "then revoke this one"
        )
    if keep_expiry:
        if ttl_ns is not None:
            raise TokenError("a rotated token keeps its expiry here; only an admin sets one")
        ttl = row.expires_ns - now_ns
    else:
        ttl = ttl_ns if ttl_ns is not None else row.expires_ns - row.created_ns
    return create_token(
        store,
        writer,
        identity=row.identity,
        kind=row.kind,
        ttl_ns=ttl,
        now_ns=now_ns,
        created_by=by,
        purpose=row.purpose,
        groups=row.groups,
        connections=row.connections,
        max_ttl_ns=max_ttl_ns,
        rotated_from=row.id,
        also=lambda st: st.revoke_token(row.id, now_ns),
    )


def list_tokens(store: Store, identity: str | None = None) -> list[TokenRecord]:
    return [TokenRecord.from_row(r) for r in store.list_tokens(identity)]
