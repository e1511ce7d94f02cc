"""SCRAM client (RFC 5802; SHA-256 per RFC 7677, SHA-512 as Kafka uses it) and
PostgreSQL's MD5 password hash.

Owns the math of the gateway authenticating to a backend with the held credential, for
every protocol that speaks SCRAM (PostgreSQL's SASL, Kafka's SaslAuthenticate).
Sans-IO: the client nonce comes in as an argument; built on hashlib/hmac only.
Errors never include the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["ScramClient", "ScramError", "md5_password"]


class ScramError(ValueError):
    """The server's SCRAM messages are malformed or do not prove it knows the password."""


def md5_password(user: bytes, password: bytes, salt: bytes) -> bytes:
    """``'md5' || md5(md5(password || user) || salt)`` as PostgreSQL expects."""
    inner = hashlib.md5(password + user).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


def _attrs(msg: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for part in msg.split(b","):
        if len(part) < 2 or part[1:2] != b"=":
            raise ScramError("malformed SCRAM message")
        out[chr(part[0])] = part[2:]
    return out


class ScramClient:
    """One SCRAM exchange (SHA-256 unless ``digest`` says ``sha512``).

    ``first()`` → client-first-message; ``final(server_first)`` → client-final-message;
    ``verify(server_final)`` checks the server signature. PostgreSQL ignores the SCRAM
    user name (it uses the startup user), so it is sent empty as libpq does; Kafka
    authenticates the ``user`` named in the first message.
    Channel binding: ``cbind`` is (``tls-server-end-point``, cert hash) for
    SCRAM-SHA-256-PLUS, or None with ``client_supports_cb`` saying whether to send 'y'.
    """

    mechanism = "SCRAM-SHA-256"

    def __init__(
        self,
        password: str,
        nonce: bytes,
        *,
        cbind: tuple[str, bytes] | None = None,
        client_supports_cb: bool = False,
        user: str = "",
        digest: str = "sha256",
    ) -> None:
        if digest not in ("sha256", "sha512"):
            raise ValueError(f"unsupported SCRAM digest {digest!r}")
        self._digest = digest
        self.mechanism = "SCRAM-SHA-512" if digest == "sha512" else "SCRAM-SHA-256"
        self._password = password.encode("utf-8")  # SASLprep skipped: libpq does the same for ASCII
        self._nonce = base64.b64encode(nonce)
        self._cbind = cbind
        if cbind is not None:
            self._gs2 = b"p=" + cbind[0].encode() + b",,"
            self.mechanism += "-PLUS"
        else:
            self._gs2 = b"y,," if client_supports_cb else b"n,,"
        # RFC 5802 saslname: ',' and '=' escaped.
        name = user.replace("=", "=3D").replace(",", "=2C").encode("utf-8")
        self._first_bare = b"n=" + name + b",r=" + self._nonce
        self._auth_message = b""
        self._server_key = b""

    def __repr__(self) -> str:
        return f"ScramClient(mechanism={self.mechanism!r})"

    def first(self) -> bytes:
        return self._gs2 + self._first_bare

    def final(self, server_first: bytes) -> bytes:
        a = _attrs(server_first)
        try:
            nonce, salt_b64, iters = a["r"], a["s"], int(a["i"])
        except (KeyError, ValueError):
            raise ScramError("server-first-message lacks r, s or i") from None
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise ScramError("server nonce does not extend the client nonce")
        if not 1 <= iters <= 10_000_000:
            raise ScramError("unreasonable SCRAM iteration count")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
        except ValueError:
            raise ScramError("malformed SCRAM salt") from None
        h = self._digest
        salted = hashlib.pbkdf2_hmac(h, self._password, salt, iters)
        client_key = hmac.digest(salted, b"Client Key", h)
        stored_key = hashlib.new(h, client_key).digest()
        self._server_key = hmac.digest(salted, b"Server Key", h)
        cb_data = self._gs2 + (self._cbind[1] if self._cbind else b"")
        final_bare = b"c=" + base64.b64encode(cb_data) + b",r=" + nonce
        self._auth_message = self._first_bare + b"," + server_first + b"," + final_bare
        sig = hmac.digest(stored_key, self._auth_message, h)
        proof = bytes(x ^ y for x, y in zip(client_key, sig, strict=True))
        return final_bare + b",p=" + base64.b64encode(proof)

    def verify(self, server_final: bytes) -> None:
        a = _attrs(server_final)
        if "e" in a:
            raise ScramError(
                "server rejected the SCRAM exchange: " + a["e"].decode("ascii", "replace")
            )
        expected = hmac.digest(self._server_key, self._auth_message, self._digest)
        try:
            got = base64.b64decode(a.get("v", b""), validate=True)
        except ValueError:
            raise ScramError("malformed server signature") from None
        if not self._auth_message or not hmac.compare_digest(expected, got):
            raise ScramError("the server's SCRAM signature is wrong")
