"""S3 access keys: an access key id and secret issued by ledgergate for an identity.

An access key is a token (``purpose: s3``) with everything a token has — identity,
groups, a mandatory expiry, revocation, a connection scope — plus a key id clients put
in their AWS signatures and a secret they sign with. A SigV4 verifier needs the secret
itself, so it is stored sealed (AES-256-GCM under ``<data_dir>/keys/access-keys.key``),
never as a hash. Creating and revoking are ``token.created``/``token.revoked`` entries.
Never logs or records a secret.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from ledgergate.services import tokens
from ledgergate.services.keys import SecretSealer
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store.base import Store, TokenRow

__all__ = ["PURPOSE", "AccessKey", "create_access_key", "is_key_id", "lookup"]

PURPOSE = "s3"
# AWS key ids are 20 upper-case letters and digits; ours start with LG so a reader can
# tell them from AWS's (AKIA…, ASIA…).
_KEY_ID = re.compile(r"^LG[A-Z2-7]{18}$")


@dataclass(frozen=True, slots=True)
class AccessKey:
    key_id: str
    token: TokenRow
    secret: str

    def __repr__(self) -> str:
        return f"AccessKey({self.key_id!r}, token={self.token.id!r}, secret=<hidden>)"


def is_key_id(text: str) -> bool:
    return bool(_KEY_ID.match(text))


def create_access_key(
    store: Store,
    writer: LedgerWriter,
    sealer: SecretSealer,
    *,
    identity: str,
    kind: str,
    ttl_ns: int,
    now_ns: int,
    created_by: str,
    groups: tuple[str, ...] = (),
    connections: tuple[str, ...] | None = None,
    max_ttl_ns: int = tokens.MAX_TTL_NS,
    purpose: str = PURPOSE,
) -> tuple[str, str, tokens.TokenRecord]:
    """Issue an access key; return (key id, secret, record). The caller shows the
    secret once. Raises ``tokens.TokenError`` for a bad request (as for tokens)."""
    key_id = "LG" + base64.b32encode(secrets.token_bytes(15)).decode("ascii")[:18]
    secret = secrets.token_urlsafe(30)  # 40 characters, as AWS's
    sealed = sealer.seal(key_id, secret)

    def attach(st: Store, row: TokenRow) -> None:
        st.insert_access_key(key_id, row.id, sealed)

    # The token row carries the identity, expiry and scope; its bearer form is never
    # shown (an access key is used by signing, not by presenting a token).
    _, record = tokens.create_token(
        store,
        writer,
        identity=identity,
        kind=kind,
        ttl_ns=ttl_ns,
        now_ns=now_ns,
        created_by=created_by,
        purpose=purpose,
        groups=groups,
        connections=connections,
        max_ttl_ns=max_ttl_ns,
        after=attach,
        access_key=key_id,
    )
    return key_id, secret, record


def lookup(store: Store, sealer: SecretSealer, key_id: str) -> AccessKey | None:
    """The access key ``key_id`` names, with its secret; None if there is none."""
    if not is_key_id(key_id):
        return None
    got = store.access_key(key_id)
    if got is None:
        return None
    row, sealed = got
    return AccessKey(key_id, row, sealer.open(key_id, sealed))
