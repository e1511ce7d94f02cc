"""The SASL messages a Kafka client sends the gateway: PLAIN (RFC 4616) and OAUTHBEARER
(RFC 7628), server side.

Owns reading the client's one message of each mechanism into who it says it is and the
credential it carries (a ledgergate token, or an IdP-issued JWT for OAUTHBEARER), and
the server's error answer for OAUTHBEARER. Deciding whether the credential is good is
not here (the shell asks the access service). Sans-IO; never puts the credential into an
error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MECHANISMS", "SaslError", "SaslHello", "oauth_error", "read_oauthbearer", "read_plain"]

# What the gateway offers in SaslHandshake, in its order of preference.
MECHANISMS = ("OAUTHBEARER", "PLAIN")
# A token, a JWT or a user name is far below this; a longer message is refused unread.
MAX_SASL = 16 * 1024

_KEY = re.compile(rb"^[A-Za-z]+$")


class SaslError(ValueError):
    """The client's SASL message is malformed (the message never holds the credential)."""


@dataclass(frozen=True, slots=True)
class SaslHello:
    user: str  # the authentication id (PLAIN) or authzid (OAUTHBEARER); may be empty
    credential: str
    extensions: tuple[tuple[str, str], ...] = ()


def read_plain(msg: bytes) -> SaslHello:
    """``[authzid] NUL authcid NUL passwd`` → (authcid or authzid, passwd)."""
    if len(msg) > MAX_SASL:
        raise SaslError("SASL/PLAIN message too long")
    parts = msg.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("SASL/PLAIN message must be authzid NUL user NUL password")
    try:
        authzid, authcid, passwd = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SaslError("SASL/PLAIN message is not UTF-8") from None
    if not passwd:
        raise SaslError("SASL/PLAIN password (the ledgergate token) is empty")
    return SaslHello(authcid or authzid, passwd)


def read_oauthbearer(msg: bytes) -> SaslHello:
    """``gs2-header ^A auth=Bearer <token> ^A [key=value ^A]* ^A`` (RFC 7628 §3.1)."""
    if len(msg) > MAX_SASL:
        raise SaslError("SASL/OAUTHBEARER message too long")
    gs2, sep, rest = msg.partition(b"\x01")
    if not sep or not rest.endswith(b"\x01\x01"):
        raise SaslError("SASL/OAUTHBEARER message is not gs2-header ^A kvpairs ^A")
    fields = gs2.split(b",")
    if len(fields) < 2 or fields[0] not in (b"n", b"y"):
        raise SaslError("SASL/OAUTHBEARER gs2 header must be 'n,a=<authzid>,' (no channel binding)")
    authzid = b""
    if fields[1].startswith(b"a="):
        authzid = fields[1][2:].replace(b"=2C", b",").replace(b"=3D", b"=")
    elif fields[1]:
        raise SaslError("SASL/OAUTHBEARER gs2 header has an unknown attribute")
    token: str | None = None
    ext: list[tuple[str, str]] = []
    for kv in rest[:-2].split(b"\x01"):
        key, eq, value = kv.partition(b"=")
        if not eq or not _KEY.match(key):
            raise SaslError("SASL/OAUTHBEARER key/value pair is malformed")
        try:
            v = value.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslError("SASL/OAUTHBEARER value is not UTF-8") from None
        if key == b"auth":
            scheme, _, tok = v.partition(" ")
            if scheme.lower() != "bearer" or not tok.strip():
                raise SaslError("SASL/OAUTHBEARER auth must be 'Bearer <token>'")
            token = tok.strip()
        else:
            ext.append((key.decode("ascii"), v))
    if token is None:
        raise SaslError("SASL/OAUTHBEARER message has no auth=Bearer <token>")
    try:
        user = authzid.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("SASL/OAUTHBEARER authzid is not UTF-8") from None
    return SaslHello(user, token, tuple(ext))


def oauth_error(status: str = "invalid_token") -> bytes:
    """The server's error challenge (RFC 7628 §3.2.2), as JSON."""
    return b'{"status":"' + status.encode("ascii") + b'"}'
