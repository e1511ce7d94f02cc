"""handshake.py as transcripts: events in, expected actions out.

FrontendHandshake is driven with what a real psql sent (frontend_psql.json) and with
hand-built packets for the paths psql does not take; BackendHandshake replays real
PostgreSQL 15 handshakes (handshake_*.json) and talks to a SCRAM server simulated here
with the RFC 7677 example.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Any

import pytest

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    Authenticate,
    BackendReady,
    CancelBackend,
    ClientData,
    Close,
    Fail,
    SendToClient,
    SendToServer,
    ServerData,
    StartClientTls,
    StartServerTls,
    TlsStarted,
)
from ledgergate.wire.pg.frames import build, iter_messages
from ledgergate.wire.pg.handshake import BackendHandshake, FrontendHandshake
from tests.wire.pg.vectors import HANDSHAKES, bytewise, load, make_backend, whole

# --- helpers -------------------------------------------------------------------------------

PSQL = load("frontend_psql")
PSQL_SSL, PSQL_STARTUP, PSQL_PASSWORD = (bytes.fromhex(r) for r in PSQL["reads"])
TOKEN = PSQL["expect"]["password"].encode()
STARTUP = m.parse_startup_packet(PSQL_STARTUP)
assert isinstance(STARTUP, m.StartupMessage)
GSSENC = struct.pack("!II", 8, 80877104)
AUTH_CLEARTEXT = SendToClient(m.auth_cleartext())


def sqlstate(error: bytes) -> str:
    ((tag, body),) = iter_messages(error)
    assert tag == b"E"
    return m.parse_error_fields(body)["C"]


def message(error: bytes) -> str:
    ((_, body),) = iter_messages(error)
    return m.parse_error_fields(body)["M"]


def front(*, tls: bool = True, plaintext: bool = False) -> FrontendHandshake:
    return FrontendHandshake(tls_available=tls, allow_plaintext=plaintext, connections={"app"})


def cd(data: bytes) -> ClientData:
    return ClientData(data, 0)


def feed_all(hs: FrontendHandshake, chunks: list[bytes]) -> list[Action]:
    out: list[Action] = []
    for chunk in chunks:
        out += hs.feed(cd(chunk))
    return out


def only_fail(actions: list[Action]) -> Fail:
    assert len(actions) == 1 and isinstance(actions[0], Fail), actions
    return actions[0]


def password(pw: bytes) -> bytes:
    return build(b"p", pw + b"\x00")


# --- FrontendHandshake ----------------------------------------------------------------------


def test_sslrequest_answered_s_then_tls_then_password() -> None:
    hs = front()
    assert hs.feed(cd(PSQL_SSL)) == [SendToClient(b"S"), StartClientTls()]
    assert hs.feed(TlsStarted()) == []
    assert hs.tls
    assert hs.feed(cd(PSQL_STARTUP)) == [AUTH_CLEARTEXT]
    assert (hs.user, hs.connection) == ("alice", "app")
    assert hs.feed(cd(PSQL_PASSWORD)) == [Authenticate(STARTUP, TOKEN)]
    assert hs.feed(cd(b"")) == []


@pytest.mark.parametrize("cut", [whole, bytewise], ids=["whole", "bytewise"])
def test_real_psql_without_tls(cut: Callable[[bytes], list[bytes]]) -> None:
    """psql's bytes (sslmode=prefer) fed as one read and a byte at a time; with trailing
    bytes (a pipelined query) left over for the relay."""
    trailing = build(b"Q", b"SELECT 1\x00")
    for extra in (b"", trailing):
        hs = front(tls=False, plaintext=True)
        actions = feed_all(hs, cut(PSQL_SSL + PSQL_STARTUP + PSQL_PASSWORD + extra))
        assert actions == [SendToClient(b"N"), AUTH_CLEARTEXT, Authenticate(STARTUP, TOKEN)]
        assert hs.leftover() == extra
        assert hs.leftover() == b""


def test_psql_reads_as_captured() -> None:
    hs = front(tls=False, plaintext=True)
    assert hs.feed(cd(PSQL_SSL)) == [SendToClient(b"N")]
    assert hs.feed(cd(PSQL_STARTUP)) == [AUTH_CLEARTEXT]
    assert hs.feed(cd(PSQL_PASSWORD)) == [Authenticate(STARTUP, TOKEN)]


def test_gssencrequest_answered_n_then_ssl() -> None:
    hs = front()
    assert hs.feed(cd(GSSENC)) == [SendToClient(b"N")]
    assert hs.feed(cd(PSQL_SSL)) == [SendToClient(b"S"), StartClientTls()]


@pytest.mark.parametrize("split", [False, True], ids=["same-read", "next-read"])
def test_data_after_sslrequest_is_refused(split: bool) -> None:
    """CVE-2021-23222: bytes sent before the TLS handshake must not be read as TLS-protected."""
    hs = front()
    if split:
        assert hs.feed(cd(PSQL_SSL)) == [SendToClient(b"S"), StartClientTls()]
        fail = only_fail(hs.feed(cd(PSQL_STARTUP)))
    else:
        fail = only_fail(hs.feed(cd(PSQL_SSL + PSQL_STARTUP)))
    assert sqlstate(fail.to_client) == "08P01"
    assert "after SSLRequest" in fail.reason


def test_plaintext_is_refused_unless_allowed() -> None:
    fail = only_fail(front().feed(cd(PSQL_STARTUP)))
    assert sqlstate(fail.to_client) == "28000"
    assert "TLS" in message(fail.to_client)
    assert front(plaintext=True).feed(cd(PSQL_STARTUP)) == [AUTH_CLEARTEXT]
    assert front(tls=False, plaintext=True).feed(cd(PSQL_STARTUP)) == [AUTH_CLEARTEXT]


def test_unknown_connection() -> None:
    packet = m.startup_message(m.PROTOCOL_3_0, [(b"user", b"alice"), (b"database", b"nope")])
    fail = only_fail(front(plaintext=True).feed(cd(packet)))
    assert sqlstate(fail.to_client) == "3D000"
    assert '"nope"' in message(fail.to_client)


def test_connection_defaults_to_the_user_name() -> None:
    hs = front(plaintext=True)
    packet = m.startup_message(m.PROTOCOL_3_0, [(b"user", b"app")])
    assert hs.feed(cd(packet)) == [AUTH_CLEARTEXT]
    assert hs.connection == "app"


@pytest.mark.parametrize(
    "params,code",
    [
        ([(b"database", b"app")], "28000"),
        ([(b"user", b""), (b"database", b"app")], "28000"),
        ([(b"user", b"a"), (b"database", b"app"), (b"replication", b"database")], "0A000"),
        ([(b"user", b"a"), (b"database", b"app"), (b"replication", b"true")], "0A000"),
    ],
)
def test_refused_startup_parameters(params: list[tuple[bytes, bytes]], code: str) -> None:
    fail = only_fail(front(plaintext=True).feed(cd(m.startup_message(m.PROTOCOL_3_0, params))))
    assert sqlstate(fail.to_client) == code


def test_replication_off_is_accepted() -> None:
    params = [(b"user", b"a"), (b"database", b"app"), (b"replication", b"false")]
    hs = front(plaintext=True)
    assert hs.feed(cd(m.startup_message(m.PROTOCOL_3_0, params))) == [AUTH_CLEARTEXT]


@pytest.mark.parametrize("length", [0, 4, 7, 10_001, 0x7FFF_FFFF, 0xFFFF_FFFF])
def test_startup_length_out_of_range(length: int) -> None:
    fail = only_fail(front().feed(cd(struct.pack("!I", length) + PSQL_STARTUP[4:])))
    assert sqlstate(fail.to_client) == "08P01"


def test_startup_length_at_the_limit_waits_for_the_rest() -> None:
    hs = front(plaintext=True)
    assert hs.feed(cd(struct.pack("!I", 10_000) + PSQL_STARTUP[4:])) == []


def test_cancel_request() -> None:
    hs = front()
    secret = b"\xde\xad\xbe\xef"
    assert hs.feed(cd(m.cancel_request(1234, secret))) == [
        CancelBackend(1234, secret),
        Close("cancel request"),
    ]
    assert hs.feed(cd(PSQL_STARTUP)) == []  # done: nothing more is read


def test_protocol_4_is_refused() -> None:
    packet = m.startup_message(4 << 16, [(b"user", b"alice"), (b"database", b"app")])
    fail = only_fail(front(plaintext=True).feed(cd(packet)))
    assert sqlstate(fail.to_client) == "08P01"
    assert "protocol 4.0" in message(fail.to_client)


def test_protocol_3_2_is_accepted() -> None:
    hs = front(plaintext=True)
    packet = m.startup_message(0x0003_0002, [(b"user", b"alice"), (b"database", b"app")])
    assert hs.feed(cd(packet)) == [AUTH_CLEARTEXT]
    assert hs.startup is not None and hs.startup.minor == 2


@pytest.mark.parametrize(
    "data,code",
    [
        (build(b"Q", b"SELECT 1\x00"), "28000"),  # not a password message
        (b"p" + struct.pack("!I", 16_385), "08P01"),  # absurdly long
        (b"p" + struct.pack("!I", 4), "08P01"),  # too short for a string
        (build(b"p", b"tok\x00extra"), "08P01"),
        (build(b"p", b"no-terminator"), "08P01"),
    ],
)
def test_bad_password_messages(data: bytes, code: str) -> None:
    hs = front(plaintext=True)
    assert hs.feed(cd(PSQL_STARTUP)) == [AUTH_CLEARTEXT]
    fail = only_fail(hs.feed(cd(data)))
    assert sqlstate(fail.to_client) == code


def test_sslrequest_inside_tls_and_unexpected_tls() -> None:
    hs = front()
    hs.feed(cd(PSQL_SSL))
    hs.feed(TlsStarted())
    only_fail(hs.feed(cd(PSQL_SSL)))
    only_fail(front().feed(TlsStarted()))


def test_after_a_failure_nothing_is_read() -> None:
    hs = front()
    only_fail(hs.feed(cd(struct.pack("!I", 3))))
    assert hs.feed(cd(PSQL_STARTUP)) == []

    # --- BackendHandshake: replays of real servers --------------------------------------------


def replay(
    v: dict[str, Any], cut: Callable[[bytes], list[bytes]], trailing: bytes = b""
) -> tuple[list[bytes], list[Action]]:
    hs = make_backend(v)
    sends: list[bytes] = []
    others: list[Action] = []

    def take(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, SendToServer):
                sends.append(a.data)
            else:
                others.append(a)

    take(hs.start())
    recvs = [bytes.fromhex(s["recv"]) for s in v["steps"] if "recv" in s]
    for i, data in enumerate(recvs):
        for chunk in cut(data + (trailing if i == len(recvs) - 1 else b"")):
            take(hs.feed(ServerData(chunk, 0)))
    return sends, others


def expected_ready(v: dict[str, Any]) -> BackendReady:
    e = v["expect"]
    return BackendReady(
        e["pid"],
        bytes.fromhex(e["secret"]),
        bytes.fromhex(e["greeting"]),
        bytes.fromhex(e["negotiate"]),
        e["status"].encode(),
    )


@pytest.mark.parametrize("name", HANDSHAKES)
@pytest.mark.parametrize("cut", [whole, bytewise], ids=["whole", "bytewise"])
def test_replay_real_handshakes(name: str, cut: Callable[[bytes], list[bytes]]) -> None:
    v = load(name)
    sends, others = replay(v, cut)
    assert sends == [bytes.fromhex(s["send"]) for s in v["steps"] if "send" in s]
    if v["expect"]["outcome"] == "ready":
        assert others == [expected_ready(v)]
    else:
        fail = only_fail(others)
        assert sqlstate(fail.to_client) == "08006"


@pytest.mark.parametrize("name", [n for n in HANDSHAKES if load(n)["expect"]["outcome"] == "ready"])
def test_replay_with_trailing_bytes_fails(name: str) -> None:
    """Bytes after the first ReadyForQuery, before the gateway said anything, are refused."""
    _, others = replay(load(name), whole, trailing=build(b"S", b"a\x00b\x00"))
    only_fail(others)


def test_greeting_keeps_the_server_bytes() -> None:
    v = load("handshake_scram")
    ready = expected_ready(v)
    server = b"".join(bytes.fromhex(s["recv"]) for s in v["steps"] if "recv" in s)
    params = {
        body.split(b"\x00")[0].decode(): body.split(b"\x00")[1].decode()
        for tag, body in iter_messages(ready.greeting)
    }
    assert params == v["expect"]["parameters"]
    assert params["session_authorization"] == "lg_backend_svc"
    assert ready.greeting in server


def test_negotiate_protocol_version_is_kept() -> None:
    v = load("handshake_protocol_3_2")
    ((tag, body),) = iter_messages(bytes.fromhex(v["expect"]["negotiate"]))
    assert tag == b"v"
    newest, n = struct.unpack_from("!II", body)
    assert (newest, n, body[8:]) == (0x0003_0000, 1, b"_pq_.lg_option\x00")
    _, others = replay(v, whole)
    assert others == [expected_ready(v)]


def test_wrong_password_error_reveals_neither_password_nor_backend_user() -> None:
    v = load("handshake_scram_wrong_password")
    assert v["expect"]["error"]["C"] == "28P01"
    for cut in (whole, bytewise):
        _, others = replay(v, cut)
        fail = only_fail(others)
        for text in (fail.to_client, fail.reason.encode()):
            assert v["backend"]["password"].encode() not in text
            assert v["backend"]["user"].encode() not in text
        assert b'connection "app"' in fail.to_client


def test_a_forged_server_signature_fails_a_real_exchange() -> None:
    v = load("handshake_scram")
    steps = [dict(s) for s in v["steps"]]
    last = bytes.fromhex(steps[-1]["recv"])
    i = last.index(b"v=") + 2
    forged = last[:i] + (b"A" if last[i : i + 1] != b"A" else b"B") + last[i + 1 :]
    steps[-1] = {"recv": forged.hex()}
    _, others = replay({**v, "steps": steps}, whole)
    fail = only_fail(others)
    assert "signature" in fail.reason


# --- BackendHandshake: hand-built transcripts ----------------------------------------------


BACKEND_USER = "lg_backend_svc"
BACKEND_PW = "Backend-s3cret-pw"
GREETING = (
    build(b"S", b"server_version\x0015.20\x00")
    + build(b"N", b"SNOTICE\x00C00000\x00Mhello\x00\x00")
    + build(b"S", b"client_encoding\x00UTF8\x00")
)
KEY = build(b"K", struct.pack("!I", 77) + b"\x01\x02\x03\x04")
READY = BackendReady(77, b"\x01\x02\x03\x04", GREETING, b"", b"I")


def backend(**kw: Any) -> BackendHandshake:
    args: dict[str, Any] = dict(
        user=BACKEND_USER,
        password=BACKEND_PW,
        database="postgres",
        client=STARTUP,
        sslmode="disable",
        nonce=bytes(range(18)),
        connection="app",
    )
    args.update(kw)
    return BackendHandshake(**args)


def auth(code: int, extra: bytes = b"") -> bytes:
    return build(b"R", struct.pack("!I", code) + extra)


def sd(data: bytes) -> ServerData:
    return ServerData(data, 0)


def expected_startup(user: str = BACKEND_USER) -> bytes:
    return m.startup_message(
        m.PROTOCOL_3_0,
        [
            (b"user", user.encode()),
            (b"database", b"postgres"),
            (b"application_name", b"psql"),
        ],
    )


def test_trust() -> None:
    hs = backend(password=None)
    assert hs.start() == [SendToServer(expected_startup())]
    assert hs.feed(sd(auth(0) + GREETING + KEY + m.ready_for_query())) == [READY]


def test_trust_a_byte_at_a_time() -> None:
    hs = backend(password=None)
    hs.start()
    out: list[Action] = []
    for chunk in bytewise(auth(0) + GREETING + KEY + m.ready_for_query(b"T")):
        out += hs.feed(sd(chunk))
    assert out == [BackendReady(77, b"\x01\x02\x03\x04", GREETING, b"", b"T")]


def test_cleartext() -> None:
    hs = backend()
    hs.start()
    pw = BACKEND_PW.encode()
    assert hs.feed(sd(auth(3))) == [
        SendToServer(b"p" + struct.pack("!I", len(pw) + 5) + pw + b"\0")
    ]
    assert hs.feed(sd(auth(0) + KEY + m.ready_for_query())) == [
        BackendReady(77, b"\x01\x02\x03\x04", b"", b"", b"I")
    ]


def test_md5_with_a_known_hash() -> None:
    hs = backend(user="user", password="pencil")
    hs.start()
    # 'md5' || md5(md5('pencil' || 'user') || salt), computed by PostgreSQL 15 itself.
    expected = b"md54376eb6913b38f9aaff38dc7cf19ca76\x00"
    assert hs.feed(sd(auth(5, b"\x01\x02\x03\x04"))) == [SendToServer(build(b"p", expected))]


def test_password_needed_but_none_held() -> None:
    for code in (3, 5, 10):
        hs = backend(password=None)
        hs.start()
        extra = b"\x01\x02\x03\x04" if code == 5 else b"SCRAM-SHA-256\x00\x00"
        fail = only_fail(hs.feed(sd(auth(code, extra))))
        assert "password" in fail.reason


@pytest.mark.parametrize(
    "data",
    [
        auth(7),  # GSS
        auth(9),  # SSPI
        auth(10, b"SCRAM-SHA-1\x00\x00"),
        auth(11, b"r=x"),  # SASLContinue without SASL
        auth(12, b"v=x"),  # SASLFinal without SASL
        build(b"R", b"\x00\x00"),  # short
        build(b"S", b"a\x00b\x00"),  # ParameterStatus before AuthenticationOk
        build(b"Z", b"I"),
        b"R\x00\x00\x00\x03",  # impossible length
    ],
)
def test_bad_authentication_requests(data: bytes) -> None:
    hs = backend()
    hs.start()
    only_fail(hs.feed(sd(data)))
    only_fail(hs.feed(sd(data)))  # still an action, never an exception


def test_unexpected_message_in_the_greeting() -> None:
    hs = backend(password=None)
    hs.start()
    only_fail(hs.feed(sd(auth(0) + build(b"D", b"\x00\x00"))))
    hs = backend(password=None)
    hs.start()
    only_fail(hs.feed(sd(auth(0) + build(b"K", b"\x00\x00"))))


def test_a_non_auth_server_error_keeps_its_sqlstate() -> None:
    hs = backend()
    hs.start()
    err = build(b"E", b'SFATAL\x00C3D000\x00Mdatabase "gone" does not exist\x00\x00')
    fail = only_fail(hs.feed(sd(err)))
    assert sqlstate(fail.to_client) == "3D000"


def test_auth_error_reveals_neither_password_nor_backend_user() -> None:
    hs = backend()
    hs.start()
    hs.feed(sd(auth(3)))
    err = build(
        b"E",
        b'SFATAL\x00C28P01\x00Mpassword authentication failed for user "'
        + BACKEND_USER.encode()
        + b'"\x00\x00',
    )
    fail = only_fail(hs.feed(sd(err)))
    assert sqlstate(fail.to_client) == "08006"
    for text in (fail.to_client, fail.reason.encode(), repr(hs).encode()):
        assert BACKEND_PW.encode() not in text
        assert BACKEND_USER.encode() not in text


@pytest.mark.parametrize("sslmode", ["require", "verify-full"])
def test_tls_required_but_refused(sslmode: str) -> None:
    hs = backend(sslmode=sslmode)
    assert hs.start() == [SendToServer(m.ssl_request())]
    fail = only_fail(hs.feed(sd(b"N")))
    assert sslmode in fail.reason


def test_prefer_continues_in_plaintext() -> None:
    hs = backend(sslmode="prefer")
    assert hs.start() == [SendToServer(m.ssl_request())]
    assert hs.feed(sd(b"N")) == [SendToServer(expected_startup())]
    assert not hs.tls


@pytest.mark.parametrize("sslmode", ["prefer", "require", "verify-full"])
def test_tls_accepted(sslmode: str) -> None:
    hs = backend(sslmode=sslmode)
    hs.start()
    assert hs.feed(sd(b"S")) == [StartServerTls()]
    assert hs.feed(TlsStarted()) == [SendToServer(expected_startup())]
    assert hs.tls


@pytest.mark.parametrize("answer", [b"SX", b"S" + auth(0), b"E", b"NN", b""])
def test_bad_answers_to_sslrequest(answer: bytes) -> None:
    """Bytes after 'S' would be read as if TLS-protected (CVE-2021-23214)."""
    hs = backend(sslmode="prefer")
    hs.start()
    only_fail(hs.feed(sd(answer)))


def test_unexpected_tls_started() -> None:
    hs = backend()
    hs.start()
    only_fail(hs.feed(TlsStarted()))


def test_startup_forwards_client_parameters_but_not_identity() -> None:
    client = m.StartupMessage(
        0x0003_0002,
        (
            (b"user", b"alice"),
            (b"database", b"app"),
            (b"replication", b"false"),
            (b"options", b"-c search_path=x"),
            (b"_pq_.opt", b"1"),
        ),
    )
    hs = backend(client=client)
    assert hs.start() == [
        SendToServer(
            m.startup_message(
                0x0003_0002,
                [
                    (b"user", BACKEND_USER.encode()),
                    (b"database", b"postgres"),
                    (b"options", b"-c search_path=x"),
                    (b"_pq_.opt", b"1"),
                ],
            )
        )
    ]


def test_negotiate_protocol_version_before_auth_ok() -> None:
    negotiate = build(b"v", struct.pack("!II", 0x0003_0000, 1) + b"_pq_.opt\x00")
    hs = backend(password=None)
    hs.start()
    assert hs.feed(sd(negotiate + auth(0) + GREETING + KEY + m.ready_for_query())) == [
        BackendReady(77, b"\x01\x02\x03\x04", GREETING, negotiate, b"I")
    ]


def test_data_after_ready_for_query() -> None:
    hs = backend(password=None)
    hs.start()
    only_fail(hs.feed(sd(auth(0) + KEY + m.ready_for_query() + b"Z")))


# --- SCRAM against a server simulated from RFC 5802 / RFC 7677 ------------------------------

RFC_NONCE = base64.b64decode(b"rOprNGfwEbeRWgbNEkqO")
RFC_SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode(b"W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SIGNATURE = b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange (RFC 5802 section 3)."""

    def __init__(self, password: bytes, salt: bytes, iterations: int) -> None:
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        self.stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.salt, self.iterations = salt, iterations

    def first(self, client_first: bytes) -> bytes:
        assert client_first.startswith(b"n,,")
        self.client_first_bare = client_first[3:]
        nonce = dict(x.split(b"=", 1) for x in self.client_first_bare.split(b","))[b"r"]
        self.server_first = (
            b"r="
            + nonce
            + RFC_SERVER_NONCE
            + b",s="
            + base64.b64encode(self.salt)
            + b",i=%d" % self.iterations
        )
        return self.server_first

    def final(self, client_final: bytes) -> bytes:
        without_proof, proof = client_final.rsplit(b",p=", 1)
        auth_message = self.client_first_bare + b"," + self.server_first + b"," + without_proof
        signature = hmac.digest(self.stored_key, auth_message, "sha256")
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if hashlib.sha256(client_key).digest() != self.stored_key:
            return b"e=invalid-proof"
        return b"v=" + base64.b64encode(hmac.digest(self.server_key, auth_message, "sha256"))


def sasl_body(sent: bytes) -> bytes:
    ((tag, body),) = iter_messages(sent)
    assert tag == b"p"
    return body


def scram_until_final(password: str = "pencil") -> tuple[BackendHandshake, ScramServer, bytes]:
    """Runs the exchange up to the server-final message; returns it unsent."""
    server = ScramServer(b"pencil", RFC_SALT, 4096)
    hs = backend(user="user", password=password, nonce=RFC_NONCE)
    assert hs.start() == [SendToServer(expected_startup("user"))]
    (initial,) = hs.feed(sd(auth(10, b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00")))
    assert isinstance(initial, SendToServer)
    body = sasl_body(initial.data)
    assert body.startswith(b"SCRAM-SHA-256\x00")
    (n,) = struct.unpack_from("!I", body, 14)
    client_first = body[18:]
    assert n == len(client_first)
    assert client_first == b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
    server_first = server.first(client_first)
    (response,) = hs.feed(sd(auth(11, server_first)))
    assert isinstance(response, SendToServer)
    return hs, server, server.final(sasl_body(response.data))


def test_scram_with_the_rfc_example() -> None:
    hs, _, server_final = scram_until_final()
    assert server_final.startswith(b"v=")
    assert hs.feed(sd(auth(12, server_final))) == []
    assert hs.feed(sd(auth(0) + GREETING + KEY + m.ready_for_query())) == [READY]


def test_scram_a_byte_at_a_time() -> None:
    hs, _, server_final = scram_until_final()
    out: list[Action] = []
    for chunk in bytewise(auth(12, server_final) + auth(0) + GREETING + KEY + m.ready_for_query()):
        out += hs.feed(sd(chunk))
    assert out == [READY]


def test_scram_rfc_signature_is_wrong_for_an_empty_user_name() -> None:
    """6rriTR… signs the RFC's exchange for user 'user'; PostgreSQL clients send 'n=',
    so in this exchange it is a wrong server signature and must fail."""
    hs, _, _ = scram_until_final()
    fail = only_fail(hs.feed(sd(auth(12, b"v=" + RFC_SIGNATURE))))
    assert "signature" in fail.reason
    assert sqlstate(fail.to_client) == "08006"


def test_scram_wrong_password_is_refused_by_the_server() -> None:
    hs, _, server_final = scram_until_final(password="not-pencil")
    assert server_final == b"e=invalid-proof"
    err = build(
        b"E", b'SFATAL\x00C28P01\x00Mpassword authentication failed for user "user"\x00\x00'
    )
    fail = only_fail(hs.feed(sd(err)))
    assert b"not-pencil" not in fail.to_client and b"not-pencil" not in fail.reason.encode()


def test_scram_auth_ok_without_server_signature_fails() -> None:
    """A server (or a man in the middle) that skips SASLFinal must not be trusted: the
    server's proof of knowing the password is the point of SCRAM."""
    hs, _, _ = scram_until_final()
    only_fail(hs.feed(sd(auth(0) + GREETING + KEY + m.ready_for_query())))


def test_scram_server_error_attribute() -> None:
    hs, _, _ = scram_until_final()
    fail = only_fail(hs.feed(sd(auth(12, b"e=other-error"))))
    assert "other-error" in fail.reason


@pytest.mark.parametrize(
    ("request_", "method"),
    [(3, "password"), (5, "md5"), (0, "none")],
)
def test_require_auth_refuses_a_downgrade_without_sending_the_password(
    request_: int, method: str
) -> None:
    secret = "held-backend-secret"
    hs = BackendHandshake(
        user="svc",
        password=secret,
        database="app",
        client=m.StartupMessage(m.PROTOCOL_3_0, ((b"user", b"alice"), (b"database", b"app"))),
        sslmode="disable",
        nonce=b"n" * 18,
        connection="app",
        require_auth=frozenset({"scram-sha-256"}),
    )
    hs.start()
    body = struct.pack("!I", request_) + (b"salt" if request_ == 5 else b"")
    actions = hs.feed(ServerData(b"R" + struct.pack("!I", len(body) + 4) + body, 0))
    assert len(actions) == 1 and isinstance(actions[0], Fail)
    assert method in actions[0].reason
    assert secret.encode() not in actions[0].to_client
    assert not any(isinstance(a, SendToServer) for a in actions)
