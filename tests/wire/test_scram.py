"""scram.py: SCRAM-SHA-256 client math (RFC 5802 / RFC 7677) and the MD5 password hash.

The RFC 7677 example is checked twice: against a reference implementation written
here from RFC 5802 (which must itself reproduce the RFC's numbers), and against
``ScramClient`` with its user name set to the RFC's 'user' (PostgreSQL sends an empty
one, so the wire messages differ from the RFC's). A real exchange with PostgreSQL 15
(handshake_scram.json) is replayed too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from ledgergate.wire.pg.frames import iter_messages
from ledgergate.wire.scram import ScramClient, ScramError, md5_password
from tests.wire.pg.vectors import load

# RFC 7677, section 3.
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = b"rOprNGfwEbeRWgbNEkqO"
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
# ScramClient base64-encodes the raw nonce it is given.
RAW_NONCE = base64.b64decode(RFC_CLIENT_NONCE)


def reference(password: bytes, first_bare: bytes, server_first: bytes) -> tuple[bytes, bytes]:
    """RFC 5802 section 3, for gs2 header 'n,,': (client-final-message, server-final)."""
    attrs = dict(p.split(b"=", 1) for p in server_first.split(b","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password, base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    without_proof = b"c=" + base64.b64encode(b"n,,") + b",r=" + attrs[b"r"]
    auth = first_bare + b"," + server_first + b"," + without_proof
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_sig = hmac.new(server_key, auth, hashlib.sha256).digest()
    return (without_proof + b",p=" + base64.b64encode(proof), b"v=" + base64.b64encode(server_sig))


def rfc_client() -> ScramClient:
    c = ScramClient(RFC_PASSWORD, RAW_NONCE)
    c._first_bare = b"n=user,r=" + RFC_CLIENT_NONCE  # the RFC's user name; PostgreSQL's is ""
    return c


def test_reference_reproduces_rfc7677() -> None:
    assert reference(b"pencil", RFC_CLIENT_FIRST[3:], RFC_SERVER_FIRST) == (
        RFC_CLIENT_FINAL,
        RFC_SERVER_FINAL,
    )


def test_scram_client_reproduces_rfc7677() -> None:
    c = rfc_client()
    assert c.first() == RFC_CLIENT_FIRST
    assert c.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    c.verify(RFC_SERVER_FINAL)


def test_scram_client_as_postgresql_uses_it() -> None:
    c = ScramClient(RFC_PASSWORD, RAW_NONCE)
    assert c.mechanism == "SCRAM-SHA-256"
    assert c.first() == b"n,,n=,r=" + RFC_CLIENT_NONCE
    final, server_final = reference(b"pencil", b"n=,r=" + RFC_CLIENT_NONCE, RFC_SERVER_FIRST)
    assert c.final(RFC_SERVER_FIRST) == final
    c.verify(server_final)
    with pytest.raises(ScramError, match="signature is wrong"):
        c.verify(RFC_SERVER_FINAL)  # right for user 'user', wrong for this exchange


@pytest.mark.parametrize(
    "server_final",
    [
        b"v=" + base64.b64encode(bytes(32)),
        b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        b"v=",
        b"x=1",
        b"v=not base64!",
    ],
)
def test_a_wrong_server_signature_fails(server_final: bytes) -> None:
    c = rfc_client()
    c.final(RFC_SERVER_FIRST)
    with pytest.raises(ScramError):
        c.verify(server_final)


def test_server_error_attribute() -> None:
    c = rfc_client()
    c.final(RFC_SERVER_FIRST)
    with pytest.raises(ScramError, match="invalid-proof"):
        c.verify(b"e=invalid-proof")


def test_verify_before_final_fails() -> None:
    with pytest.raises(ScramError):
        rfc_client().verify(RFC_SERVER_FINAL)


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # nonce not extended
        b"r=someoneelse%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        b"r=rOprNGfwEbeRWgbNEkqOxx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
        b"r=rOprNGfwEbeRWgbNEkqOxx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",
        b"r=rOprNGfwEbeRWgbNEkqOxx,s=@@@,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxx,i=4096",
        b"garbage",
        b"",
    ],
)
def test_malformed_server_first(server_first: bytes) -> None:
    with pytest.raises(ScramError):
        rfc_client().final(server_first)


def test_channel_binding_headers() -> None:
    y = ScramClient("pw", b"n", client_supports_cb=True)
    assert y.first().startswith(b"y,,n=,r=")
    assert y.final(b"r=" + base64.b64encode(b"n") + b"X,s=AAAA,i=1").startswith(b"c=eSws,")
    cert_hash = bytes(range(32))
    p = ScramClient("pw", b"n", cbind=("tls-server-end-point", cert_hash))
    assert p.mechanism == "SCRAM-SHA-256-PLUS"
    assert p.first().startswith(b"p=tls-server-end-point,,n=,r=")
    final = p.final(b"r=" + base64.b64encode(b"n") + b"X,s=AAAA,i=1")
    c = dict(x.split(b"=", 1) for x in final.split(b","))[b"c"]
    assert base64.b64decode(c) == b"p=tls-server-end-point,," + cert_hash


def test_repr_and_errors_do_not_show_the_password() -> None:
    c = ScramClient("Very-secret-pw", RAW_NONCE)
    assert "Very-secret-pw" not in repr(c)
    c.final(RFC_SERVER_FIRST)
    with pytest.raises(ScramError) as e:
        c.verify(RFC_SERVER_FINAL)
    assert "Very-secret-pw" not in str(e.value)


def test_replays_a_real_postgresql_exchange() -> None:
    v = load("handshake_scram")
    sends = [bytes.fromhex(s["send"]) for s in v["steps"] if "send" in s]
    recvs = b"".join(bytes.fromhex(s["recv"]) for s in v["steps"] if "recv" in s)[1:]  # 'N'
    auth = [body[4:] for tag, body in iter_messages(recvs) if tag == b"R"]
    server_first, server_final = auth[1], auth[2]
    c = ScramClient(v["backend"]["password"], bytes.fromhex(v["backend"]["nonce"]))
    # SASLInitialResponse: mechanism, int32 length, client-first-message.
    assert sends[2].endswith(c.first())
    assert sends[3][5:] == c.final(server_first)
    c.verify(server_final)


def test_md5_password() -> None:
    # Computed by PostgreSQL 15 itself:
    # SELECT 'md5' || md5(convert_to(md5('pencil' || 'user'), 'UTF8') || '\x01020304'::bytea)
    assert md5_password(b"user", b"pencil", b"\x01\x02\x03\x04") == (
        b"md54376eb6913b38f9aaff38dc7cf19ca76"
    )


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("user", ["etl", "a,b=c"])
def test_against_scramp_server(mech: str, user: str) -> None:
    """An independent server (scramp) accepts the client's proof for both digests, with
    the user name escaped as RFC 5802 says, and the client checks the server's
    signature; a wrong password is refused by that server."""
    import scramp

    digest = "sha512" if mech.endswith("512") else "sha256"
    m = scramp.ScramMechanism(mech)
    salt, stored, server_key, iters = m.make_auth_info("s3cret", iteration_count=4096)

    def exchange(password: str) -> None:
        c = ScramClient(password, b"0123456789abcdef", user=user, digest=digest)
        assert c.mechanism == mech
        seen: list[str] = []

        def lookup(name: str) -> tuple[bytes, bytes, bytes, int]:
            seen.append(name)
            return salt, stored, server_key, iters

        server = m.make_server(lookup)
        server.set_client_first(c.first().decode())
        assert seen == [user]
        final = c.final(server.get_server_first().encode())
        server.set_client_final(final.decode())
        c.verify(server.get_server_final().encode())

    exchange("s3cret")
    with pytest.raises(scramp.ScramException):
        exchange("wrong")
