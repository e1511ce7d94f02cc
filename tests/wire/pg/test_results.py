"""Transcripts of the result shaper: columns attributed from RowDescription (also for an
Execute the client did not Describe), DataRows rewritten with correct lengths, partial
messages held back, and the expectation queue kept in step through errors."""

from __future__ import annotations

import struct

import pytest

from ledgergate.wire.pg.events import ClientData, Committed, Record, SendToClient, ServerData
from ledgergate.wire.pg.frames import FrameError, build, iter_messages
from ledgergate.wire.pg.results import (
    Field,
    ResultShaper,
    build_data_row,
    parse_data_row,
    parse_row_description,
)
from ledgergate.wire.pg.session import Relay

CUSTOMERS = 16400


def row_description(*cols: tuple[bytes, int, int]) -> bytes:
    body = struct.pack("!h", len(cols))
    for name, table, attnum in cols:
        body += name + b"\x00" + struct.pack("!IhIhih", table, attnum, 25, -1, -1, 0)
    return build(b"T", body)


def data_row(*vals: bytes | None) -> bytes:
    return build_data_row(list(vals))


class Redact:
    """Masks the column at (CUSTOMERS, 2) and counts."""

    def __init__(self, fields: tuple[Field, ...]) -> None:
        self.cols = [i for i, f in enumerate(fields) if (f.table_oid, f.attnum) == (CUSTOMERS, 2)]
        self.masked = 0
        self.finished = False

    def mask(self, values: list[bytes | None]) -> list[bytes | None] | None:
        if not self.cols:
            return None
        out = list(values)
        for i in self.cols:
            if out[i] is not None:
                out[i] = b"****"
                self.masked += 1
        return out

    def finish(self) -> None:
        self.finished = True


def planner(plans: list[Redact]):  # type: ignore[no-untyped-def]
    def plan(fields: tuple[Field, ...], sql: bytes) -> Redact:
        p = Redact(fields)
        plans.append(p)
        return p

    return plan


T = row_description((b"id", CUSTOMERS, 1), (b"e", CUSTOMERS, 2))
ROWS = data_row(b"1", b"ann@example.com") + data_row(b"2", None)
DONE = build(b"C", b"SELECT 2\x00") + build(b"Z", b"I")


def test_codecs_round_trip() -> None:
    vals: list[bytes | None] = [b"a", None, b"", b"xyz"]
    assert parse_data_row(data_row(*vals)[5:]) == vals
    (f1, f2) = parse_row_description(T[5:])
    assert (f1.name, f1.table_oid, f1.attnum, f2.attnum) == (b"id", CUSTOMERS, 1, 2)


def test_a_simple_query_result_is_masked() -> None:
    plans: list[Redact] = []
    sh = ResultShaper(planner(plans))
    sh.client(ord("Q"), build(b"Q", b"SELECT id, email AS e FROM customers\x00"))
    r = sh.server(T + ROWS + DONE)
    msgs = list(iter_messages(r.out))
    rows = [parse_data_row(b) for t, b in msgs if t == b"D"]
    assert rows == [[b"1", b"****"], [b"2", None]]
    assert r.rows == 2 and r.tags == [b"SELECT 2"] and r.changed
    assert plans[0].masked == 1 and plans[0].finished


@pytest.mark.parametrize("step", [1, 2, 5, 11])
def test_partial_messages_wait_for_the_rest(step: int) -> None:
    sh = ResultShaper(planner([]))
    sh.client(ord("Q"), build(b"Q", b"SELECT 1\x00"))
    data = T + ROWS + DONE
    out = b""
    for i in range(0, len(data), step):
        out += sh.server(data[i : i + step]).out
    assert sh.partial == 0
    assert next(parse_data_row(b) for t, b in iter_messages(out) if t == b"D") == [b"1", b"****"]


def test_an_execute_without_describe_gets_one_and_its_answer_is_consumed() -> None:
    plans: list[Redact] = []
    sh = ResultShaper(planner(plans))
    parse = build(b"P", b"s1\x00SELECT id, email FROM customers\x00\x00\x00")
    bind = build(b"B", b"\x00s1\x00" + struct.pack("!hhh", 0, 0, 0))
    execute = build(b"E", b"\x00" + struct.pack("!i", 0))
    sync = build(b"S")
    sent = b"".join(sh.client(m[0], m) for m in (parse, bind, execute, sync))
    kinds = [t for t, _ in iter_messages(sent)]
    assert kinds == [b"P", b"B", b"D", b"E", b"S"]  # a Describe('P') before the Execute
    reply = build(b"1") + build(b"2") + T + ROWS + DONE
    r = sh.server(reply)
    got = [t for t, _ in iter_messages(r.out)]
    assert got == [b"1", b"2", b"D", b"D", b"C", b"Z"]  # our RowDescription is not forwarded
    assert plans[0].masked == 1
    # the prepared statement again, Bind + Execute only: still attributed
    sent = b"".join(sh.client(m[0], m) for m in (bind, execute, sync))
    r = sh.server(build(b"2") + T + ROWS + DONE)
    assert next(parse_data_row(b) for t, b in iter_messages(r.out) if t == b"D") == [
        b"1",
        b"****",
    ]


def test_an_error_skips_the_rest_of_the_batch() -> None:
    sh = ResultShaper(planner([]))
    bind = build(b"B", b"\x00nope\x00" + struct.pack("!hhh", 0, 0, 0))
    execute = build(b"E", b"\x00" + struct.pack("!i", 0))
    for m in (bind, execute, build(b"S")):
        sh.client(m[0], m)
    err = build(b"E", b"SERROR\x00C26000\x00Mno such statement\x00\x00")
    r = sh.server(err + build(b"Z", b"I"))
    assert [t for t, _ in iter_messages(r.out)] == [b"E", b"Z"]
    # and the next query is matched properly
    sh.client(ord("Q"), build(b"Q", b"SELECT 1\x00"))
    r = sh.server(T + ROWS + DONE)
    assert b"ann@example.com" not in r.out


def test_the_relay_records_bytes_in_and_out() -> None:
    rel = Relay()
    rel.set_shaper(ResultShaper(planner([])))
    acts = rel.feed(ClientData(build(b"Q", b"SELECT 1\x00"), 1))
    for a in acts:
        if isinstance(a, Record) and a.durable:
            rel.feed(Committed(a.ticket))
    acts = rel.feed(ServerData(T + ROWS + DONE, 2))
    rec = next(a for a in acts if isinstance(a, Record))
    chunk = rec.seen[0]
    sent = b"".join(a.data for a in acts if isinstance(a, SendToClient))
    assert chunk.data == T + ROWS + DONE and chunk.out == sent and chunk.rows == 2
    assert b"ann@example.com" in chunk.data and b"ann@example.com" not in sent


def test_a_malformed_row_description_closes_the_session_without_rows() -> None:
    rel = Relay()
    rel.set_shaper(ResultShaper(planner([])))
    for a in rel.feed(ClientData(build(b"Q", b"SELECT 1\x00"), 1)):
        if isinstance(a, Record) and a.durable:
            rel.feed(Committed(a.ticket))
    acts = rel.feed(ServerData(build(b"T", b"\x00\x05") + ROWS, 2))
    sent = b"".join(a.data for a in acts if isinstance(a, SendToClient))
    assert [t for t, _ in iter_messages(sent)] == [b"E"]
    assert b"ann@example.com" not in sent and rel.closed


# -- COPY TO STDOUT ---------------------------------------------------------------------


class UpperCopy:
    """A COPY plan that upper-cases whole lines, one row per line."""

    def __init__(self) -> None:
        self.buf = b""
        self.finished = False

    def feed(self, data: bytes) -> tuple[bytes, int]:
        self.buf += data
        head, sep, self.buf = self.buf.rpartition(b"\n")
        return (head + sep).upper(), (head + sep).count(b"\n")

    def finish(self) -> None:
        if self.buf:
            raise ValueError("a row was cut")
        self.finished = True


def copy_out(ncols: int, fmt: int = 0) -> bytes:
    return build(b"H", struct.pack("!bh", fmt, ncols) + struct.pack("!h", fmt) * ncols)


COPY_DONE = build(b"c") + build(b"C", b"COPY 2\x00") + build(b"Z", b"I")


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_copy_data_is_rewritten_whole_rows_at_a_time(step: int) -> None:
    seen: list[tuple[bytes, int, bool]] = []
    plans: list[UpperCopy] = []

    def copy_planner(sql: bytes, ncols: int, binary: bool) -> UpperCopy:
        seen.append((sql, ncols, binary))
        plans.append(UpperCopy())
        return plans[-1]

    sh = ResultShaper(planner([]), copy_planner)
    sh.client(ord("Q"), build(b"Q", b"COPY t TO STDOUT\x00"))
    # rows split across CopyData messages, as the protocol allows
    data = copy_out(2) + build(b"d", b"a\tb\nc") + build(b"d", b"\td\n") + COPY_DONE
    out = b""
    rows = 0
    for i in range(0, len(data), step):
        r = sh.server(data[i : i + step])
        out += r.out
        rows += r.rows
    assert rows == 2  # CopyData messages, for the chunk entries, as the plain walk counts
    msgs = list(iter_messages(out))
    assert b"".join(b for t, b in msgs if t == b"d") == b"A\tB\nC\tD\n"
    assert [t for t, _ in msgs if t != b"d"] == [b"H", b"c", b"C", b"Z"]
    assert seen == [(b"COPY t TO STDOUT", 2, False)] and plans[0].finished
    assert sh.copy_rows == 2


def test_a_refused_copy_answers_an_error_and_drops_its_data() -> None:
    from ledgergate.wire.pg.results import CopyRefusal

    def refuse(sql: bytes, ncols: int, binary: bool) -> UpperCopy:
        raise CopyRefusal("its columns cannot be attributed")

    for copy_planner in (refuse, None):
        sh = ResultShaper(planner([]), copy_planner)
        sh.client(ord("Q"), build(b"Q", b"COPY t TO STDOUT\x00"))
        r = sh.server(copy_out(1) + build(b"d", b"secret\n") + COPY_DONE)
        msgs = list(iter_messages(r.out))
        assert [t for t, _ in msgs] == [b"E", b"Z"]
        assert b"secret" not in r.out and b"42501" in msgs[0][1]
        # the next statement's results pass as usual
        sh.client(ord("Q"), build(b"Q", b"SELECT 1\x00"))
        r = sh.server(T + ROWS + DONE)
        assert [t for t, _ in iter_messages(r.out)] == [b"T", b"D", b"D", b"C", b"Z"]


def test_a_copy_cut_inside_a_row_is_a_protocol_error() -> None:
    sh = ResultShaper(planner([]), lambda sql, n, b: UpperCopy())
    sh.client(ord("Q"), build(b"Q", b"COPY t TO STDOUT\x00"))
    with pytest.raises(FrameError):
        sh.server(copy_out(1) + build(b"d", b"half a row") + COPY_DONE)


def test_replication_copy_both_cannot_pass_a_masked_session() -> None:
    sh = ResultShaper(planner([]), lambda sql, n, b: UpperCopy())
    sh.client(ord("Q"), build(b"Q", b"START_REPLICATION SLOT s LOGICAL 0/0\x00"))
    with pytest.raises(FrameError, match="CopyBoth"):
        sh.server(build(b"W", struct.pack("!bh", 0, 0)) + build(b"d", b"raw row"))
