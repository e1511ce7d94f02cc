"""messages.py: startup packets, the messages the gateway builds, and the decoders of
Query/Parse/Bind/ErrorResponse, checked against captured psql and server bytes."""

from __future__ import annotations

import struct

import pytest

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.frames import FrameError, iter_messages
from tests.wire.pg.vectors import SESSIONS, client_bytes, load, server_bytes

PSQL = load("frontend_psql")
PSQL_SSL, PSQL_STARTUP, PSQL_PASSWORD = (bytes.fromhex(r) for r in PSQL["reads"])


def test_psql_sslrequest() -> None:
    assert m.parse_startup_packet(PSQL_SSL) == m.SslRequest()
    assert m.ssl_request() == PSQL_SSL


def test_psql_startup_message() -> None:
    p = m.parse_startup_packet(PSQL_STARTUP)
    assert isinstance(p, m.StartupMessage)
    assert (p.major, p.minor, p.version) == (3, 0, m.PROTOCOL_3_0)
    assert p.get(b"user") == PSQL["expect"]["user"].encode()
    assert p.get(b"database") == PSQL["expect"]["database"].encode()
    assert p.get(b"application_name") == b"psql"
    assert p.get(b"options") is None and p.get(b"options", b"-") == b"-"
    assert m.startup_message(p.version, list(p.params)) == PSQL_STARTUP


@pytest.mark.parametrize(
    "packet",
    [
        PSQL_STARTUP + b"\x00",  # trailing bytes beyond the length
        PSQL_STARTUP[:-1],  # shorter than its length
        struct.pack("!I", len(PSQL_STARTUP) - 1) + PSQL_STARTUP[4:-1],  # no terminator
        struct.pack("!I", len(PSQL_STARTUP) + 1) + PSQL_STARTUP[4:] + b"\x00",  # bytes after
        m.startup_message(m.PROTOCOL_3_0, [])[:7],
        b"",
    ],
)
def test_malformed_startup_packets(packet: bytes) -> None:
    with pytest.raises(FrameError):
        m.parse_startup_packet(packet)


def test_startup_packet_truncated_anywhere_is_refused() -> None:
    for i in range(len(PSQL_STARTUP)):
        with pytest.raises(FrameError):
            m.parse_startup_packet(struct.pack("!I", i) + PSQL_STARTUP[4:i] if i >= 4 else b"")


def test_startup_packet_over_the_server_limit() -> None:
    big = m.startup_message(m.PROTOCOL_3_0, [(b"options", b"x" * 10_000)])
    with pytest.raises(FrameError, match="length"):
        m.parse_startup_packet(big)


@pytest.mark.parametrize("major,minor", [(4, 0), (2, 0), (1234, 5677)])
def test_other_protocol_majors_are_refused(major: int, minor: int) -> None:
    packet = m.startup_message((major << 16) | minor, [(b"user", b"u")])
    with pytest.raises(FrameError, match="unsupported frontend protocol"):
        m.parse_startup_packet(packet)


def test_protocol_3_2_is_a_startup_message() -> None:
    packet = m.startup_message(0x0003_0002, [(b"user", b"u"), (b"_pq_.x", b"1")])
    p = m.parse_startup_packet(packet)
    assert isinstance(p, m.StartupMessage)
    assert (p.major, p.minor) == (3, 2)


def test_gssencrequest() -> None:
    assert m.parse_startup_packet(struct.pack("!II", 8, 80877104)) == m.GssEncRequest()
    for code in (80877103, 80877104):
        with pytest.raises(FrameError):
            m.parse_startup_packet(struct.pack("!II", 12, code) + b"\x00" * 4)


@pytest.mark.parametrize("secret", [b"\x01\x02\x03\x04", bytes(32), bytes(range(256))])
def test_cancel_request_round_trip(secret: bytes) -> None:
    packet = m.cancel_request(4242, secret)
    assert packet[:12] == struct.pack("!III", 12 + len(secret), 80877102, 4242)
    assert m.parse_startup_packet(packet) == m.CancelRequest(4242, secret)


@pytest.mark.parametrize("secret", [b"", b"abc", bytes(257)])
def test_cancel_request_with_a_bad_secret_length(secret: bytes) -> None:
    with pytest.raises(FrameError, match="CancelRequest"):
        m.parse_startup_packet(m.cancel_request(1, secret))


def test_server_messages_match_the_documented_bytes() -> None:
    assert m.auth_ok() == b"R\x00\x00\x00\x08\x00\x00\x00\x00"
    assert m.auth_cleartext() == b"R\x00\x00\x00\x08\x00\x00\x00\x03"
    assert m.ready_for_query() == b"Z\x00\x00\x00\x05I"
    assert m.ready_for_query(b"T") == b"Z\x00\x00\x00\x05T"
    assert m.backend_key_data(7, b"\x00\x00\x00\x09") == (
        b"K\x00\x00\x00\x0c\x00\x00\x00\x07\x00\x00\x00\x09"
    )


def test_error_response_round_trip() -> None:
    raw = m.error_response("3D000", "no\x00 such db", detail="d", hint="h")
    ((tag, body),) = iter_messages(raw)
    assert tag == b"E"
    assert m.parse_error_fields(body) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "3D000",
        "M": "no such db",
        "D": "d",
        "H": "h",
    }
    ((tag, body),) = iter_messages(m.error_response("08P01", "x", severity="ERROR"))
    assert m.parse_error_fields(body)["S"] == "ERROR"
    ((tag, body),) = iter_messages(m.notice_response("careful"))
    assert tag == b"N"
    assert m.parse_error_fields(body) == {
        "S": "NOTICE",
        "V": "NOTICE",
        "C": "00000",
        "M": "careful",
    }


def test_error_fields_of_a_truncated_body() -> None:
    with pytest.raises(FrameError):
        m.parse_error_fields(b"SERROR")
    assert m.parse_error_fields(b"") == {}


@pytest.mark.parametrize("name", SESSIONS)
def test_server_errors_and_notices_decode(name: str) -> None:
    v = load(name)
    msgs = list(iter_messages(server_bytes(v)))
    errors = [m.parse_error_fields(b) for t, b in msgs if t == b"E"]
    notices = [m.parse_error_fields(b) for t, b in msgs if t == b"N"]
    assert errors == v["expect"]["errors"]
    assert notices == v["expect"]["notices"]


def decode_commands(data: bytes) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for tag, body in iter_messages(data):
        if tag == b"Q":
            out.append({"op": "query", "text": m.parse_query(body).decode()})
        elif tag == b"P":
            p = m.parse_parse(body)
            out.append(
                {
                    "op": "parse",
                    "statement": p.statement.decode(),
                    "text": p.query.decode(),
                    "param_types": list(p.param_types),
                }
            )
        elif tag == b"B":
            b = m.parse_bind(body)
            out.append(
                {
                    "op": "bind",
                    "portal": b.portal.decode(),
                    "statement": b.statement.decode(),
                    "formats": list(b.formats),
                    "params": [None if x is None else x.hex() for x in b.params],
                }
            )
    return out


@pytest.mark.parametrize("name", SESSIONS)
def test_client_commands_decode(name: str) -> None:
    v = load(name)
    assert decode_commands(client_bytes(v)) == v["expect"]["commands"]


def command_bodies() -> list[tuple[bytes, bytes]]:
    out = []
    for name in SESSIONS:
        out += [(t, b) for t, b in iter_messages(client_bytes(load(name))) if t in b"QPB"]
    return out


@pytest.mark.parametrize("tag,body", command_bodies())
def test_truncated_commands_are_refused(tag: bytes, body: bytes) -> None:
    decode = {b"Q": m.parse_query, b"P": m.parse_parse, b"B": m.parse_bind}[tag]
    # Bind's result-format codes (the last 2 + 2n bytes) are not decoded: stop before them.
    last = len(body) - 2 if tag == b"B" else len(body)
    for i in range(last):
        with pytest.raises(FrameError):
            decode(body[:i])


@pytest.mark.parametrize("tag,body", [(t, b) for t, b in command_bodies() if t in b"QP"])
def test_commands_with_trailing_bytes_are_refused(tag: bytes, body: bytes) -> None:
    decode = {b"Q": m.parse_query, b"P": m.parse_parse}[tag]
    for trailing in (b"x", b"\x00", b"\x00\x00\x00\x00"):
        with pytest.raises(FrameError):
            decode(body + trailing)


def test_bind_formats() -> None:
    def bind(formats: list[int], params: list[bytes | None]) -> bytes:
        body = b"p\x00s\x00" + struct.pack(f"!H{len(formats)}H", len(formats), *formats)
        body += struct.pack("!H", len(params))
        for x in params:
            body += struct.pack("!i", -1) if x is None else struct.pack("!i", len(x)) + x
        return body + struct.pack("!H", 0)

    b = m.parse_bind(bind([], [b"1", None]))
    assert (b.portal, b.statement, b.params) == (b"p", b"s", (b"1", None))
    assert b.param_format(1) == 0
    assert m.parse_bind(bind([1], [b"\x00\x01", b"x"])).param_format(1) == 1
    assert m.parse_bind(bind([0, 1], [b"a", b"b"])).param_format(1) == 1
    with pytest.raises(FrameError, match="format count"):
        m.parse_bind(bind([0, 1], [b"a", b"b", b"c"]))
    with pytest.raises(FrameError, match="parameter length"):
        m.parse_bind(b"\x00\x00\x00\x00\x00\x01" + struct.pack("!i", -2))
