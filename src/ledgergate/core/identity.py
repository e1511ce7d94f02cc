"""Identities: verified claims, roles, connection grants, and whether a session may live.

Owns the pure rules of "who is this and what may they reach": the claims an identity
provider vouched for (``Claims``), roles and grants evaluated over identity names and
groups, and the verdict on an open session given what is known now (token, identity,
grants, time). No I/O, no clock: time and facts arrive as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Claims", "IdentityError"]


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
