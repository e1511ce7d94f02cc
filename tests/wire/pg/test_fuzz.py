"""Fuzzing the PostgreSQL sessions with hypothesis: no input crashes the gateway.

Arbitrary bytes, fed in arbitrary splits, to FrontendHandshake, BackendHandshake and the
Relay (both directions): every feed returns actions (errors become ``Fail`` or an
ErrorResponse followed by ``Close``), never an exception, never a hang; lengths beyond
the limits are refused. Inputs mix random bytes with real captured streams (and mutations
of them) so the fuzzing reaches the later states too. The example count comes from the
hypothesis profile in tests/conftest.py (``ci`` by default, ``deep`` by hand).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    Authenticate,
    BackendReady,
    CancelBackend,
    ChunkSeen,
    ClientClosed,
    ClientData,
    Close,
    CommandSeen,
    Committed,
    Event,
    Fail,
    Record,
    SendToClient,
    SendToServer,
    ServerClosed,
    ServerData,
    StartClientTls,
    StartServerTls,
    TlsStarted,
)
from ledgergate.wire.pg.frames import MAX_MESSAGE, MAX_STARTUP, build, iter_messages
from ledgergate.wire.pg.handshake import (
    MAX_PASSWORD_MESSAGE,
    FrontendHandshake,
)
from ledgergate.wire.pg.session import Relay
from tests.wire.pg.vectors import SESSIONS, client_bytes, load, make_backend, server_bytes

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PSQL_READS = [bytes.fromhex(r) for r in load("frontend_psql")["reads"]]
FRONT_PIECES = [
    *PSQL_READS,
    struct.pack("!II", 8, 80877104),  # GSSENCRequest
    m.cancel_request(7, b"\x00\x00\x00\x01"),
    m.startup_message(0x0003_0002, [(b"user", b"u"), (b"database", b"app")]),
    m.startup_message(4 << 16, [(b"user", b"u")]),
    build(b"p", b"tok\x00"),
    build(b"Q", b"SELECT 1\x00"),
]


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into reads at arbitrary points."""
    if not data:
        return st.just([data])
    return st.lists(st.integers(0, len(data)), max_size=12).map(
        lambda cuts: [
            data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
        ]
    )


@st.composite
def mutated(draw: st.DrawFn, pieces: list[bytes]) -> bytes:
    """Real pieces and random bytes concatenated, a few bytes overwritten, maybe cut short."""
    parts = draw(
        st.lists(st.one_of(st.sampled_from(pieces), st.binary(max_size=40)), min_size=1, max_size=6)
    )
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def well_formed_error(data: bytes) -> str:
    ((tag, body),) = iter_messages(data)
    assert tag == b"E"
    fields = m.parse_error_fields(body)
    assert fields["S"] == "FATAL"
    return fields["C"]


# --- FrontendHandshake ------------------------------------------------------------------------


def drive_front(hs: FrontendHandshake, chunks: list[bytes]) -> list[Action]:
    """Feed like the shell: TlsStarted right after StartClientTls; stop at an end."""
    out: list[Action] = []
    for chunk in chunks:
        actions = hs.feed(ClientData(chunk, 0))
        if any(isinstance(a, StartClientTls) for a in actions):
            actions += hs.feed(TlsStarted())
        out += actions
        for a in actions:
            assert isinstance(
                a, SendToClient | StartClientTls | Authenticate | CancelBackend | Close | Fail
            ), a
            if isinstance(a, Fail):
                assert well_formed_error(a.to_client)
        if any(isinstance(a, Fail | Close | Authenticate) for a in actions):
            break
    return out


@FUZZ
@given(
    data=st.data(),
    tls=st.booleans(),
    plaintext=st.booleans(),
    stream=st.one_of(st.binary(max_size=300), mutated(FRONT_PIECES)),
)
def test_frontend_handshake_never_raises(
    data: st.DataObject, tls: bool, plaintext: bool, stream: bytes
) -> None:
    chunks = data.draw(splits(stream))
    hs = FrontendHandshake(tls_available=tls, allow_plaintext=plaintext, connections={"app"})
    actions = drive_front(hs, chunks)
    assert sum(isinstance(a, Fail | Close | Authenticate) for a in actions) <= 1


@FUZZ
@given(
    length=st.one_of(st.integers(0, 7), st.integers(MAX_STARTUP + 1, 0xFFFF_FFFF)),
    rest=st.binary(max_size=20),
)
def test_frontend_refuses_startup_lengths_beyond_limits(length: int, rest: bytes) -> None:
    hs = FrontendHandshake(tls_available=True, allow_plaintext=True, connections={"app"})
    (fail,) = hs.feed(ClientData(struct.pack("!I", length) + rest, 0))
    assert isinstance(fail, Fail)


@FUZZ
@given(length=st.one_of(st.integers(0, 4), st.integers(MAX_PASSWORD_MESSAGE + 1, 0xFFFF_FFFF)))
def test_frontend_refuses_password_lengths_beyond_limits(length: int) -> None:
    hs = FrontendHandshake(tls_available=False, allow_plaintext=True, connections={"app"})
    hs.feed(ClientData(PSQL_READS[1], 0))
    (fail,) = hs.feed(ClientData(b"p" + struct.pack("!I", length), 0))
    assert isinstance(fail, Fail)


# --- BackendHandshake -------------------------------------------------------------------------

HANDSHAKE_NAMES = [
    "handshake_trust",
    "handshake_scram",
    "handshake_md5",
    "handshake_cleartext",
    "handshake_protocol_3_2",
    "handshake_scram_wrong_password",
]


def recorded_server(name: str) -> bytes:
    return b"".join(bytes.fromhex(s["recv"]) for s in load(name)["steps"] if "recv" in s)


@st.composite
def server_stream(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(HANDSHAKE_NAMES))
    real = recorded_server(name)
    kind = draw(st.sampled_from(["random", "flip", "cut"]))
    if kind == "random":
        return name, draw(st.binary(max_size=300))
    data = bytearray(real)
    if kind == "flip":  # overwrite (never insert) bytes: a SCRAM 'i=4096' stays 4 digits
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return name, bytes(data[: draw(st.integers(0, len(data)))])


@FUZZ
@given(
    data=st.data(),
    stream=server_stream(),
    sslmode=st.sampled_from(["disable", "prefer", "require", "verify-full"]),
)
def test_backend_handshake_never_raises(
    data: st.DataObject, stream: tuple[str, bytes], sslmode: str
) -> None:
    name, raw = stream
    v = load(name)
    hs = make_backend(v, sslmode)
    actions = hs.start()
    ended = False
    for chunk in data.draw(splits(raw)):
        if ended:
            break
        if any(isinstance(a, StartServerTls) for a in actions):
            actions = hs.feed(TlsStarted())
        else:
            actions = hs.feed(ServerData(chunk, 0))
        for a in actions:
            assert isinstance(a, SendToServer | StartServerTls | BackendReady | Fail), a
            if isinstance(a, Fail):
                well_formed_error(a.to_client)
                if v["backend"]["password"]:
                    assert v["backend"]["password"].encode() not in a.to_client
                    assert v["backend"]["password"] not in a.reason
        ended = any(isinstance(a, BackendReady | Fail) for a in actions)


@FUZZ
@given(
    length=st.one_of(st.integers(0, 3), st.integers((1 << 20) + 1, 0xFFFF_FFFF)),
    tag=st.sampled_from(b"RSKZEv"),
)
def test_backend_refuses_frame_lengths_beyond_limits(length: int, tag: int) -> None:
    hs = make_backend(load("handshake_trust"), "disable")
    hs.start()
    (fail,) = hs.feed(ServerData(bytes([tag]) + struct.pack("!I", length), 0))
    assert isinstance(fail, Fail)


# --- Relay --------------------------------------------------------------------------------

CLIENT_PIECES = [
    build(t, b) for name in SESSIONS for t, b in iter_messages(client_bytes(load(name)))
] + [build(b"X"), build(b"F", struct.pack("!IHH", 1, 0, 0) + b"\x00\x00")]
SERVER_PIECES = [
    build(t, b) for name in SESSIONS for t, b in iter_messages(server_bytes(load(name)))
]


def check_relay_actions(actions: list[Action]) -> None:
    for a in actions:
        assert isinstance(a, Record | SendToServer | SendToClient | Close), a
        if isinstance(a, Record):
            for s in a.seen:
                assert isinstance(s, CommandSeen | ChunkSeen)


@FUZZ
@given(
    data=st.data(),
    stream=st.one_of(st.binary(max_size=300), mutated(CLIENT_PIECES)),
    server=st.one_of(st.binary(max_size=200), mutated(SERVER_PIECES)),
)
def test_relay_never_raises(data: st.DataObject, stream: bytes, server: bytes) -> None:
    """Client and server reads interleaved with commits and closes in any order."""
    events: list[Event] = [ClientData(c, 0) for c in data.draw(splits(stream))]
    events += [ServerData(c, 0) for c in data.draw(splits(server))]
    events += [Committed(i) for i in range(1, 4)] + [ClientClosed(0), ServerClosed(0)]
    order = data.draw(st.permutations(events))
    r = Relay()
    closed = False
    for e in order:
        actions = r.feed(e)
        check_relay_actions(actions)
        if closed:  # after Close only undelivered server chunks may still be recorded
            assert all(isinstance(a, Record) for a in actions), actions
        for a in actions:
            if isinstance(a, SendToClient) and a.data[:1] == b"E" and isinstance(e, ClientData):
                assert well_formed_error(a.data) == "08P01"
        closed = closed or any(isinstance(a, Close) for a in actions)
        assert r.held_bytes >= 0


@FUZZ
@given(data=st.data(), stream=mutated(CLIENT_PIECES))
def test_relay_client_outcome_does_not_depend_on_read_boundaries(
    data: st.DataObject, stream: bytes
) -> None:
    def outcome(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], bytes, bool]:
        r = Relay()
        commands: list[tuple[str, bytes]] = []
        sent = bytearray()
        for c in chunks:
            pending: list[Event] = [ClientData(c, 0)]
            while pending:
                for a in r.feed(pending.pop()):
                    if isinstance(a, Record):
                        commands += [(s.op, s.raw) for s in a.seen if isinstance(s, CommandSeen)]
                        if a.durable:
                            pending.append(Committed(a.ticket))
                    elif isinstance(a, SendToServer):
                        sent += a.data
                    elif isinstance(a, Close):
                        return commands, bytes(sent), True
        return commands, bytes(sent), False

    whole = outcome([stream])
    split = outcome(data.draw(splits(stream)))
    assert split[2] == whole[2]  # a protocol error whatever the boundaries, or none
    if not whole[2]:
        assert split == whole


@st.composite
def server_frames(draw: st.DrawFn) -> bytes:
    """Server frames of any type, mostly honest lengths, sometimes impossible ones."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 25))):
        tag = draw(st.sampled_from(b"DdCZTNAsIHGc" + bytes([draw(st.integers(0, 255))])))
        body = draw(st.binary(max_size=24))
        if tag == ord("C") and draw(st.booleans()):
            body = draw(st.sampled_from([b"SELECT ", b"INSERT 0 ", b"COPY "])) + b"%d\x00" % (
                draw(st.integers(0, 10**9))
            )
        length = len(body) + 4
        if draw(st.integers(0, 9)) == 0:
            length = draw(st.integers(0, 3))
        out += bytes([tag]) + struct.pack("!I", length) + body
    return bytes(out)


@FUZZ
@given(data=st.data(), stream=st.one_of(server_frames(), mutated(SERVER_PIECES)))
def test_relay_server_counts_do_not_depend_on_read_boundaries(
    data: st.DataObject, stream: bytes
) -> None:
    def counts(chunks: list[bytes]) -> tuple[int, list[bytes], bytes]:
        r = Relay()
        rows, tags, sent = 0, [], bytearray()
        for c in chunks:
            actions = r.feed(ServerData(c, 0))
            check_relay_actions(actions)
            rec, send = actions
            assert isinstance(rec, Record) and isinstance(send, SendToClient)
            (seen,) = rec.seen
            assert isinstance(seen, ChunkSeen)
            rows += seen.rows
            tags += seen.tags
            sent += send.data
        return rows, tags, bytes(sent)

    whole = counts([stream])
    assert whole[2] == stream
    assert counts(data.draw(splits(stream))) == whole
    assert counts([stream[i : i + 1] for i in range(len(stream))]) == whole


@FUZZ
@given(
    length=st.one_of(st.integers(0, 3), st.integers(MAX_MESSAGE + 1, 0xFFFF_FFFF)),
    tag=st.sampled_from(b"QPBdSX"),
)
def test_relay_refuses_client_lengths_beyond_limits(length: int, tag: int) -> None:
    r = Relay()
    send, close = r.feed(ClientData(bytes([tag]) + struct.pack("!I", length), 0))
    assert isinstance(send, SendToClient) and isinstance(close, Close)
    assert well_formed_error(send.data) == "08P01"


def _guard(op: str, text: bytes) -> tuple[str, str] | None:
    return ("r", "no") if b"drop" in text.lower() else None


class _Mask:
    def mask(self, values: list[bytes | None]) -> list[bytes | None] | None:
        return [None if v is None else b"*" for v in values]

    def finish(self) -> None:
        pass


@FUZZ
@given(
    data=st.data(),
    stream=st.one_of(st.binary(max_size=300), mutated(CLIENT_PIECES)),
    server=st.one_of(st.binary(max_size=200), mutated(SERVER_PIECES)),
)
def test_guarded_and_masked_relay_never_raises(
    data: st.DataObject, stream: bytes, server: bytes
) -> None:
    """The same, with a guard and a result shaper (which decodes server messages)."""
    from ledgergate.wire.pg.results import ResultShaper

    events: list[Event] = [ClientData(c, 0) for c in data.draw(splits(stream))]
    events += [ServerData(c, 0) for c in data.draw(splits(server))]
    events += [Committed(i) for i in range(1, 4)] + [ClientClosed(0), ServerClosed(0)]
    r = Relay()
    r.guard = _guard
    r.set_shaper(ResultShaper(lambda fields, sql: _Mask()))
    for e in data.draw(st.permutations(events)):
        check_relay_actions(r.feed(e))
        assert r.held_bytes >= 0
