"""session.py (Relay) as transcripts, and its server-direction walk fed at every split.

The server bytes are real captures (tests/vectors/pg/session_*.json). Whatever the read
boundaries, the rows and CommandComplete tags the relay reports, and the bytes it passes
on, must be the same as for the whole stream.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable

import pytest

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    ChunkSeen,
    ClientClosed,
    ClientData,
    Close,
    CommandSeen,
    Committed,
    Event,
    Record,
    SendToClient,
    SendToServer,
    ServerClosed,
    ServerData,
)
from ledgergate.wire.pg.frames import build, iter_messages
from ledgergate.wire.pg.session import Relay
from tests.wire.pg.vectors import (
    SESSIONS,
    bytewise,
    client_bytes,
    load,
    random_splits,
    server_bytes,
    server_reads,
    two_ways,
    whole,
)

Q1 = build(b"Q", b"SELECT 1\x00")
Q2 = build(b"Q", b"SELECT 2\x00")
FLUSH = build(b"H")
SYNC = build(b"S")
TERMINATE = build(b"X")


def query_seen(raw: bytes, ts: int = 0) -> CommandSeen:
    return CommandSeen("query", ts, raw, text=m.parse_query(raw[5:]))


def run(relay: Relay, events: Iterable[Event]) -> list[Action]:
    out: list[Action] = []
    for e in events:
        out += relay.feed(e)
    return out


def sqlstate_and_severity(error: bytes) -> tuple[str, str]:
    ((tag, body),) = iter_messages(error)
    assert tag == b"E"
    f = m.parse_error_fields(body)
    return f["C"], f["S"]


# --- client -> server: held until committed ------------------------------------------------


def test_query_is_held_until_committed() -> None:
    r = Relay()
    assert r.feed(ClientData(Q1, 10)) == [Record((query_seen(Q1, 10),), True, 1)]
    assert r.held_bytes == len(Q1)
    assert r.feed(Committed(1)) == [SendToServer(Q1)]
    assert r.held_bytes == 0
    assert r.feed(Committed(1)) == []
    assert r.stats.commands == 1 and r.stats.bytes_c2s == len(Q1)


def test_pipelined_messages_stay_behind_a_held_command() -> None:
    r = Relay()
    assert r.feed(ClientData(Q1, 1)) == [Record((query_seen(Q1, 1),), True, 1)]
    assert r.feed(ClientData(FLUSH, 2)) == []  # no command, but must not overtake Q1
    assert r.feed(ClientData(Q2, 3)) == [Record((query_seen(Q2, 3),), True, 2)]
    assert r.feed(ClientData(SYNC, 4)) == []
    assert r.held_bytes == len(Q1 + FLUSH + Q2 + SYNC)
    assert r.feed(Committed(1)) == [SendToServer(Q1 + FLUSH)]
    assert r.feed(Committed(2)) == [SendToServer(Q2 + SYNC)]
    assert r.held_bytes == 0
    assert r.feed(ClientData(SYNC, 5)) == [SendToServer(SYNC)]


def test_a_later_commit_releases_everything_before_it() -> None:
    r = Relay()
    run(r, [ClientData(Q1, 0), ClientData(FLUSH, 0), ClientData(Q2, 0)])
    assert r.feed(Committed(2)) == [SendToServer(Q1 + FLUSH + Q2)]
    assert r.feed(Committed(1)) == []


def test_commands_in_one_read_share_one_durable_record() -> None:
    v = load("session_extended")
    data = bytes.fromhex(v["exchanges"][0]["c2s"])
    frames = [build(t, b) for t, b in iter_messages(data)]  # P B D E S
    r = Relay()
    assert r.feed(ClientData(data, 7)) == [
        Record(
            (
                CommandSeen(
                    "parse",
                    7,
                    frames[0],
                    text=b"SELECT $1::int + 1 AS x, $2::text AS y, $3::text AS z",
                    statement=b"s1",
                ),
                CommandSeen("bind", 7, frames[1], statement=b"s1", portal=b"", nparams=3),
            ),
            True,
            1,
        )
    ]
    assert r.feed(Committed(1)) == [SendToServer(data)]


def test_function_call() -> None:
    raw = build(b"F", struct.pack("!IHHIH", 1234, 0, 1, 1, 0) + b"1" + struct.pack("!H", 0))
    r = Relay()
    assert r.feed(ClientData(raw, 0)) == [
        Record((CommandSeen("function", 0, raw, text=b"fn:1234"),), True, 1)
    ]


def test_copy_in_data_is_recorded_as_c2s() -> None:
    v = load("session_copy_in")
    q_create, q_copy, copy = (bytes.fromhex(e["c2s"]) for e in v["exchanges"])
    r = Relay()
    for ticket, q in enumerate((q_create, q_copy), 1):
        assert r.feed(ClientData(q, 0)) == [Record((query_seen(q),), True, ticket)]
        assert r.feed(Committed(ticket)) == [SendToServer(q)]
    assert r.feed(ClientData(copy, 9)) == [
        Record((ChunkSeen("c2s", 1, 9, copy, 2, (), True),), False, 0),
        SendToServer(copy),
    ]


def test_copy_data_behind_a_held_command_is_recorded_but_waits() -> None:
    copy = build(b"d", b"1\tone\n")
    r = Relay()
    run(r, [ClientData(Q1, 0)])
    assert r.feed(ClientData(copy, 1)) == [
        Record((ChunkSeen("c2s", 1, 1, copy, 1, (), True),), False, 0)
    ]
    assert r.feed(Committed(1)) == [SendToServer(Q1 + copy)]


def test_partial_client_frames_wait_for_the_rest() -> None:
    r = Relay()
    assert r.feed(ClientData(Q1[:3], 0)) == []
    assert r.feed(ClientData(Q1[3:-1], 0)) == []
    assert r.feed(ClientData(Q1[-1:] + SYNC[:2], 5)) == [Record((query_seen(Q1, 5),), True, 1)]
    assert r.feed(Committed(1)) == [SendToServer(Q1)]
    assert r.feed(ClientData(SYNC[2:], 0)) == [SendToServer(SYNC)]


@pytest.mark.parametrize(
    "data",
    [
        build(b"x"),  # unknown type
        build(b"Z", b"I"),  # a backend message type
        b"Q\x00\x00\x00\x03",  # impossible length
        b"Q\x7f\xff\xff\xff",  # beyond the 1 GiB limit
        build(b"Q", b"SELECT 1"),  # no NUL
        build(b"P", b"s\x00SELECT 1\x00\x00"),  # truncated Parse
        build(b"B", b"\x00\x00\x00"),  # truncated Bind
        build(b"F", b"\x00\x00"),  # truncated FunctionCall
    ],
)
def test_invalid_frontend_messages_end_the_session(data: bytes) -> None:
    r = Relay()
    run(r, [ClientData(Q1, 0)])
    actions = r.feed(ClientData(data, 0))
    assert len(actions) == 2
    send, close = actions
    assert isinstance(send, SendToClient) and isinstance(close, Close)
    assert sqlstate_and_severity(send.data) == ("08P01", "FATAL")
    assert close.reason.startswith("protocol error")
    assert r.feed(Committed(1)) == []  # the held bytes never reach the server
    assert r.feed(ServerData(b"x", 0)) == []


# --- server -> client ------------------------------------------------------------------------


def test_server_data_is_recorded_then_sent() -> None:
    v = load("session_simple_query")
    data = server_bytes(v)
    r = Relay()
    assert r.feed(ServerData(data, 5)) == [
        Record((ChunkSeen("s2c", 1, 5, data, 3, (b"SELECT 3",), True),), False, 0),
        SendToClient(data),
    ]
    assert r.stats.as_dict() == {
        "commands": 0,
        "chunks": 1,
        "rows": 3,
        "bytes_c2s": 0,
        "bytes_s2c": len(data),
    }


def test_server_data_flows_while_client_commands_are_held() -> None:
    r = Relay()
    run(r, [ClientData(Q1, 0)])
    z = m.ready_for_query()
    assert r.feed(ServerData(z, 0))[-1] == SendToClient(z)


def test_server_data_after_the_client_closed_is_recorded_undelivered() -> None:
    r = Relay()
    assert r.feed(ClientClosed(0)) == [Close("client disconnected")]
    data = server_bytes(load("session_copy_out"))
    assert r.feed(ServerData(data, 3)) == [
        Record((ChunkSeen("s2c", 1, 3, data, 5, (b"COPY 5",), False),), False, 0)
    ]
    actions = r.feed(ServerClosed(4))
    assert not any(isinstance(a, SendToClient) for a in actions)


def test_server_closed_mid_stream() -> None:
    r = Relay()
    run(
        r,
        [
            ClientData(Q1, 0),
            Committed(1),
            ServerData(server_bytes(load("session_large_rows"))[:3000], 0),
        ],
    )
    actions = r.feed(ServerClosed(0))
    assert len(actions) == 2
    send, close = actions
    assert isinstance(send, SendToClient)
    assert sqlstate_and_severity(send.data) == ("08006", "FATAL")
    assert close == Close("backend closed the connection")
    assert r.feed(ServerData(b"Z", 0)) == []


def test_terminate_then_server_closed_is_clean() -> None:
    r = Relay()
    assert r.feed(ClientData(TERMINATE, 0)) == [SendToServer(TERMINATE)]
    assert r.feed(ServerClosed(0)) == [Close("client terminated")]


def test_terminate_then_client_closed_is_clean() -> None:
    r = Relay()
    run(r, [ClientData(TERMINATE, 0)])
    assert r.feed(ClientClosed(0)) == [Close("client terminated")]


# --- the server walk at every read boundary -----------------------------------------------


def walk(chunks: Iterable[bytes]) -> tuple[int, list[bytes], bytes, Relay]:
    """Rows, tags and forwarded bytes for server data fed as ``chunks``."""
    r = Relay()
    rows, tags, sent = 0, [], bytearray()
    for chunk in chunks:
        actions = r.feed(ServerData(chunk, 0))
        rec, send = actions
        assert isinstance(rec, Record) and isinstance(send, SendToClient)
        (seen,) = rec.seen
        assert isinstance(seen, ChunkSeen) and seen.data == chunk == send.data
        rows += seen.rows
        tags += seen.tags
        sent += send.data
    assert r.stats.rows == rows
    return rows, tags, bytes(sent), r


def expected(name: str) -> tuple[int, list[bytes]]:
    e = load(name)["expect"]
    return e["rows"], [t.encode() for t in e["tags"]]


@pytest.mark.parametrize("name", SESSIONS)
def test_server_walk_whole_bytewise_and_as_captured(name: str) -> None:
    data = server_bytes(load(name))
    for chunks in (whole(data), bytewise(data), server_reads(load(name))):
        rows, tags, sent, _ = walk(chunks)
        assert (rows, tags) == expected(name)
        assert sent == data


@pytest.mark.parametrize("name", SESSIONS)
def test_server_walk_with_trailing_bytes(name: str) -> None:
    """The start of a next message after the vector: half a header is not counted yet;
    the rest of the DataRow and a whole CommandComplete are counted in the next read."""
    data = server_bytes(load(name))
    nxt = build(b"D", b"\x00\x01\x00\x00\x00\x01x") + build(b"C", b"SELECT 1\x00")
    rows, tags, _, r = walk([data + nxt[:3]])
    assert (rows, tags) == expected(name)
    rec, _ = r.feed(ServerData(nxt[3:], 0))
    assert isinstance(rec, Record)
    (seen,) = rec.seen
    assert isinstance(seen, ChunkSeen)
    assert (seen.rows, seen.tags) == (1, (b"SELECT 1",))


def test_tags_split_across_reads() -> None:
    cc = build(b"C", b"INSERT 0 2\x00")
    for i in range(len(cc) + 1):
        for j in range(i, len(cc) + 1):
            _, tags, _, _ = walk([cc[:i], cc[i:j], cc[j:], m.ready_for_query()])
            assert tags == [b"INSERT 0 2"], (i, j)


def test_odd_server_frames_never_raise() -> None:
    """The backend is trusted to frame, but garbage must not crash the walk: a tag with no
    NUL, impossible lengths, a tag longer than MAX_TAG."""
    odd = [
        b"C\x00\x00\x00\x08abcd" + m.ready_for_query(),
        b"C\x00\x00\x00\x00D\x00\x00\x00\x02" + m.ready_for_query(),
        build(b"C", b"x" * 1000 + b"\x00"),
    ]
    for data in odd:
        want = walk(whole(data))[:2]
        assert walk(bytewise(data))[:2] == want
        for chunks in two_ways(data):
            assert walk(chunks)[:2] == want
    assert walk(whole(odd[0]))[1] == [b"abcd"]
    assert walk(bytewise(odd[2]))[1] == [b"x" * 256]


@pytest.mark.parametrize("name", SESSIONS)
def test_server_walk_at_every_split_in_two(name: str) -> None:
    data = server_bytes(load(name))
    want = expected(name)
    for chunks in two_ways(data):
        rows, tags, sent, _ = walk(chunks)
        assert (rows, tags) == want, f"split at {len(chunks[0])}"
        assert sent == data


@pytest.mark.parametrize("name", SESSIONS)
def test_server_walk_at_random_splits(name: str) -> None:
    data = server_bytes(load(name))
    rng = random.Random(name)
    for _ in range(100):
        rows, tags, sent, _ = walk(random_splits(data, rng, most=rng.randint(2, 60)))
        assert (rows, tags) == expected(name)
        assert sent == data


def test_server_walk_at_every_split_in_three() -> None:
    data = server_bytes(load("session_notify"))
    want = expected("session_notify")
    for i in range(1, len(data)):
        for j in range(i, len(data)):
            rows, tags, _, _ = walk([data[:i], data[i:j], data[j:]])
            assert (rows, tags) == want, (i, j)


# --- the client direction at every read boundary --------------------------------------------


def client_walk(chunks: Iterable[bytes]) -> tuple[list[tuple[str, bytes]], int, bytes]:
    """Commands (op, raw), COPY IN messages and the bytes released to the server, committing
    every durable record as soon as it is asked for."""
    r = Relay()
    commands: list[tuple[str, bytes]] = []
    copy_in = 0
    sent = bytearray()
    pending = [ClientData(c, 0) for c in chunks]
    events: list[Event] = []
    while pending or events:
        actions = r.feed(events.pop(0) if events else pending.pop(0))
        for a in actions:
            if isinstance(a, Record):
                for s in a.seen:
                    if isinstance(s, CommandSeen):
                        commands.append((s.op, s.raw))
                    else:
                        assert s.direction == "c2s"
                        copy_in += s.rows
                if a.durable:
                    events.append(Committed(a.ticket))
            elif isinstance(a, SendToServer):
                sent += a.data
            else:
                raise AssertionError(a)
    assert r.held_bytes == 0
    return commands, copy_in, bytes(sent)


@pytest.mark.parametrize("name", SESSIONS)
def test_client_walk_whole_bytewise_splits_and_trailing(name: str) -> None:
    v = load(name)
    data = client_bytes(v)
    want_ops = [c["op"] for c in v["expect"]["commands"]]
    want_copy = v["expect"]["copy_in_messages"]
    ways: list[list[bytes]] = [whole(data), bytewise(data), *two_ways(data)]
    for chunks in ways:
        commands, copy_in, sent = client_walk(chunks)
        assert [op for op, _ in commands] == want_ops
        assert copy_in == want_copy
        assert sent == data
    commands, _, sent = client_walk([data + Q1[:-1]])  # trailing: an unfinished Query
    assert sent == data and [op for op, _ in commands] == want_ops


def _sent(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendToClient))


@pytest.mark.parametrize("split", [1, 3, 5, 7, 12])
def test_end_waits_for_the_server_message_in_flight(split: int) -> None:
    """The FATAL error of a gateway-side end never lands inside a half-forwarded server
    message: the rest of that message is relayed (and recorded) first, nothing after."""
    row = build(b"D", struct.pack("!hi", 1, 6) + b"abcdef")
    nxt = build(b"D", struct.pack("!hi", 1, 1) + b"z")
    err = m.error_response("28000", "ledgergate: session ended: token expired")
    r = Relay()
    out = r.feed(ServerData(row[:split], 1))
    assert r.end(err, "terminated: token expired") == []
    assert r.ending and not r.closed
    out += r.feed(ServerData(row[split:] + nxt, 2))
    assert _sent(out) == row + err
    assert out[-1] == Close("terminated: token expired")
    recorded = [c for a in out if isinstance(a, Record) for c in a.seen]
    assert b"".join(c.data for c in recorded) == row  # the next message was never relayed
    assert sum(c.rows for c in recorded) == 1
    assert r.closed and r.feed(ServerData(nxt, 3)) == []


def test_end_at_a_message_boundary_is_immediate() -> None:
    err = m.error_response("28000", "ledgergate: session ended: token revoked")
    r = Relay()
    r.feed(ServerData(build(b"Z", b"I"), 1))
    assert r.end(err, "terminated") == [SendToClient(err), Close("terminated")]
    assert r.end(err, "again") == []


ADMIN_SHUTDOWN = m.error_response(
    "57P01", "terminating connection due to administrator command", severity="FATAL"
)


@pytest.mark.parametrize("split", [None, 3])
def test_a_backend_that_ends_the_session_is_the_only_one_to_say_so(split: int | None) -> None:
    """pg_terminate_backend, a shutdown: the backend's FATAL reaches the client and the
    session closes with no error of the gateway's after it (a client would read two)."""
    r = Relay()
    run(r, [ClientData(Q1, 0), Committed(1), ServerData(m.ready_for_query(), 0)])
    reads = [ADMIN_SHUTDOWN] if split is None else [ADMIN_SHUTDOWN[:split], ADMIN_SHUTDOWN[split:]]
    sent = b"".join(
        a.data for d in reads for a in r.feed(ServerData(d, 1)) if isinstance(a, SendToClient)
    )
    assert sent == ADMIN_SHUTDOWN
    assert r.feed(ServerClosed(2)) == [Close("the server ended the session")]


def test_a_close_after_a_plain_error_still_gets_the_gateways_word() -> None:
    r = Relay()
    run(r, [ClientData(Q1, 0), Committed(1)])
    r.feed(ServerData(m.error_response("42P01", "no such table", severity="ERROR"), 1))
    actions = r.feed(ServerClosed(2))
    assert isinstance(actions[0], SendToClient)
    assert sqlstate_and_severity(actions[0].data) == ("08006", "FATAL")


@pytest.mark.parametrize(
    ("data", "goodbye"),
    [
        (ADMIN_SHUTDOWN, True),
        (m.ready_for_query() + ADMIN_SHUTDOWN, True),
        (m.error_response("57P01", "x", severity="PANIC"), True),
        (m.error_response("42P01", "x", severity="ERROR"), False),
        (ADMIN_SHUTDOWN + m.ready_for_query(), False),
        (ADMIN_SHUTDOWN[:-1], False),
        (b"", False),
        (None, False),
        (b"E\x00\x00\x00\x02", False),
    ],
)
def test_said_goodbye(data: bytes | None, goodbye: bool) -> None:
    from ledgergate.wire.pg.session import said_goodbye

    assert said_goodbye(data) is goodbye
