"""sftp_track.py: SFTP sessions as transcripts (each direction's bytes in, operation events
out), fed whole, one byte at a time and with trailing bytes; whole-file digests of
pipelined transfers answered in any order under hypothesis; gaps, overlaps, failures and
drops that must give no digest; every bound; and a real OpenSSH session, live and
recorded."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ledgergate.wire.ssh.sftp import (
    SSH_FX_EOF,
    SSH_FX_FAILURE,
    SSH_FX_OK,
    SSH_FX_PERMISSION_DENIED,
    Attrs,
    Name,
    OpenFlag,
    PacketType,
    Request,
    Response,
    SftpError,
    status,
)
from ledgergate.wire.ssh.sftp_encode import (
    encode_init,
    encode_request,
    encode_response,
    encode_version,
)
from ledgergate.wire.ssh.sftp_track import (
    MAX_HELD_PIECES,
    Data,
    Event,
    FileClosed,
    OpDone,
    OpStarted,
    SftpTracker,
    open_mode,
)
from tests.vectors.sftp import capture
from tests.wire.ssh.vectors import Steps, load, reads, three_ways

T = PacketType
H = b"\x00\x00\x00\x07"
PUT = OpenFlag.WRITE | OpenFlag.CREAT | OpenFlag.TRUNC
HELLO = [("c2s", encode_init()), ("s2c", encode_version())]


def c(q: Request) -> tuple[str, bytes]:
    return ("c2s", encode_request(q))


def s(p: Response) -> tuple[str, bytes]:
    return ("s2c", encode_response(p))


def ok(rid: int, code: int = SSH_FX_OK, message: bytes = b"") -> tuple[str, bytes]:
    return s(Response(T.STATUS, rid, code=code, message=message))


def opened(rid: int, path: bytes, pflags: int, handle: bytes = H) -> Steps:
    return [
        c(Request(T.OPEN, rid, path=path, pflags=pflags, attrs=Attrs())),
        s(Response(T.HANDLE, rid, handle=handle)),
    ]


def write(rid: int, offset: int, data: bytes, handle: bytes = H) -> tuple[str, bytes]:
    return c(Request(T.WRITE, rid, handle=handle, offset=offset, data=data))


def read(rid: int, offset: int, length: int, handle: bytes = H) -> tuple[str, bytes]:
    return c(Request(T.READ, rid, handle=handle, offset=offset, length=length))


def data(rid: int, payload: bytes) -> tuple[str, bytes]:
    return s(Response(T.DATA, rid, data=payload))


def close(rid: int, handle: bytes = H) -> Steps:
    return [c(Request(T.CLOSE, rid, handle=handle)), ok(rid)]


def run(steps: Steps, tracker: SftpTracker | None = None) -> list[Event]:
    t = tracker if tracker is not None else SftpTracker()
    out: list[Event] = []
    for d, b in steps:
        out += t.client(b) if d == "c2s" else t.server(b)
    return out


def run_three_ways(steps: Steps) -> list[Event]:
    """The events, the same whichever way the transcript is fed."""
    results = {way: run(s) for way, s in three_ways(steps).items()}
    assert results["bytewise"] == results["whole"]
    assert results["trailing"] == results["whole"]
    return results["whole"]


def closed(events: list[Event]) -> list[FileClosed]:
    return [e for e in events if isinstance(e, FileClosed)]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# --- transfers --------------------------------------------------------------------------------

CONTENT = bytes(range(256)) * 40  # 10240 bytes


def test_upload_pipelined_statuses_out_of_order() -> None:
    parts = [(0, CONTENT[:4000]), (4000, CONTENT[4000:8000]), (8000, CONTENT[8000:])]
    steps = [
        *HELLO,
        *opened(1, b"/srv/up.bin", PUT),
        *(write(10 + i, off, part) for i, (off, part) in enumerate(parts)),
        ok(12),
        ok(10),
        ok(11),
        *close(20),
    ]
    events = run_three_ways(steps)
    assert events[0] == OpStarted(
        1, "open", "/srv/up.bin", None, {"mode": "write,create,truncate", "pflags": 26}, True
    )
    assert [e for e in events if isinstance(e, Data)] == [
        Data(10 + i, "/srv/up.bin", "write", off, part) for i, (off, part) in enumerate(parts)
    ]
    writes = [e for e in events if isinstance(e, OpStarted) and e.op == "write"]
    assert [w.detail for w in writes] == [{"offset": o, "length": len(p)} for o, p in parts]
    assert {e.id for e in events if isinstance(e, OpDone) and e.outcome == "ok"} == {
        1,
        10,
        11,
        12,
        20,
    }
    assert events[-2] == OpDone(20, "close", "/srv/up.bin", "ok", 0)
    assert closed(events) == [
        FileClosed(
            "/srv/up.bin", "write,create,truncate", 0, len(CONTENT), None, sha(CONTENT), "ok", True
        )
    ]


def test_download_answered_out_of_order_with_short_reads() -> None:
    steps = [
        *HELLO,
        *opened(1, b"/srv/f", OpenFlag.READ),
        read(2, 0, 4000),
        read(3, 4000, 4000),
        read(4, 8000, 4000),
        data(4, CONTENT[8000:]),  # held: the bytes before it have not come
        data(2, CONTENT[:1500]),  # a short read: 1500 of 4000
        data(3, CONTENT[4000:8000]),  # held too
        read(5, 1500, 2500),  # the client asks for the rest
        data(5, CONTENT[1500:4000]),  # fills the gap: all of it is hashed
        read(6, len(CONTENT), 4000),
        ok(6, SSH_FX_EOF, b"End of file"),
        *close(7),
    ]
    events = run_three_ways(steps)
    reads_ = [e for e in events if isinstance(e, Data)]
    assert [(d.id, d.offset, len(d.data)) for d in reads_] == [
        (4, 8000, 2240),
        (2, 0, 1500),
        (3, 4000, 4000),
        (5, 1500, 2500),
    ]
    assert all(d.direction == "read" and d.path == "/srv/f" for d in reads_)
    assert OpDone(6, "read", "/srv/f", "eof", 1, "End of file") in events
    assert closed(events) == [
        FileClosed("/srv/f", "read", len(CONTENT), 0, sha(CONTENT), None, "ok", True)
    ]


def test_an_empty_upload_has_the_empty_digest() -> None:
    (fc,) = closed(run([*HELLO, *opened(1, b"/e", PUT), *close(2)]))
    assert fc.sha256_written == sha(b"")
    assert fc.sha256_read is None
    assert fc.sequential


def _not_sequential(steps: Steps, tracker: SftpTracker | None = None) -> FileClosed:
    (fc,) = closed(run(steps, tracker))
    assert not fc.sequential
    assert fc.sha256_read is None
    assert fc.sha256_written is None
    return fc


def test_a_gap_gives_no_digest() -> None:
    steps = [*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), write(3, 4, b"ef")]
    fc = _not_sequential([*steps, ok(2), ok(3), *close(4)])  # bytes 2..4 never written
    assert fc.bytes_written == 4


def test_a_write_not_from_zero_gives_no_digest() -> None:
    """A resumed upload (reput) starts past 0: the whole file was not seen."""
    _not_sequential([*HELLO, *opened(1, b"/f", PUT), write(2, 10, b"ab"), ok(2), *close(3)])


@pytest.mark.parametrize(
    "second",
    [(0, b"xy"), (1, b"yz"), (2, b"cd"), (3, b"d")],  # rewrite, overlap, hole then overlap
    ids=["rewrite", "overlap", "held-then-overlap", "inside-held"],
)
def test_overlapping_writes_give_no_digest(second: tuple[int, bytes]) -> None:
    first = [write(2, 0, b"ab")] if second[0] < 2 else [write(2, 2, b"cd")]
    steps = [*HELLO, *opened(1, b"/f", PUT), *first, write(3, *second), ok(2), ok(3), *close(4)]
    _not_sequential(steps)


def test_a_failed_write_gives_no_digest() -> None:
    steps = [*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), ok(2, SSH_FX_FAILURE)]
    events = run([*steps, *close(3)])
    assert OpDone(2, "write", "/f", "failure", 4) in events
    assert not closed(events)[0].sequential
    assert closed(events)[0].bytes_written == 0


def test_a_read_then_write_through_one_handle_hashes_both_ways() -> None:
    rw = OpenFlag.READ | OpenFlag.WRITE
    steps = [*HELLO, *opened(1, b"/f", rw), read(2, 0, 10), data(2, b"0123"), write(3, 0, b"ab")]
    (fc,) = closed(run([*steps, ok(3), *close(4)]))
    assert (fc.sha256_read, fc.sha256_written, fc.mode) == (sha(b"0123"), sha(b"ab"), "read,write")


def test_a_request_in_flight_at_close_gives_no_digest() -> None:
    steps = [*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), *close(3)]
    _not_sequential(steps)


def test_held_bytes_are_bounded() -> None:
    tracker = SftpTracker(max_held=1000)
    steps = [*HELLO, *opened(1, b"/f", PUT), write(2, 600, b"x" * 300)]
    run(steps, tracker)
    assert tracker.held == 300 + 256  # the piece and its bookkeeping
    run([write(3, 900, b"y" * 300)], tracker)  # would pass the bound: hashing stops
    assert tracker.held == 0
    _not_sequential([write(4, 0, b"z" * 600), ok(2), ok(3), ok(4), *close(5)], tracker)


def test_held_pieces_are_bounded() -> None:
    """Single bytes written backwards: the sorted offsets stay short, and hashing stops."""
    steps = [*HELLO, *opened(1, b"/f", PUT)]
    steps += [write(10 + i, 5000 - i, b"x") for i in range(MAX_HELD_PIECES + 1)]
    tracker = SftpTracker()
    run(steps, tracker)
    assert tracker.held == 0  # the piece past the bound stopped the file's hashing
    _not_sequential([*(ok(10 + i) for i in range(MAX_HELD_PIECES + 1)), *close(2)], tracker)


def test_fsetstat_size_and_copy_data_into_a_file_stop_its_digest() -> None:
    size = Request(T.FSETSTAT, 3, handle=H, attrs=Attrs(size=1))
    steps = [*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), ok(2), c(size), ok(3)]
    _not_sequential([*steps, *close(4)])
    copy = Request(T.EXTENDED, 5, name=b"copy-data", handle=b"src", offset=0, length=0, handle2=H)
    steps = [*HELLO, *opened(1, b"/src", OpenFlag.READ, b"src"), *opened(2, b"/dst", PUT)]
    events = run([*steps, c(copy), ok(5), *close(6, H)])
    assert (
        OpStarted(
            5,
            "extended:copy-data",
            "/src",
            "/dst",
            {"read_offset": 0, "length": 0, "write_offset": 0},
            True,
        )
        in events
    )
    assert not closed(events)[0].sequential


def test_fsetstat_to_exactly_the_bytes_written_keeps_the_digest() -> None:
    """scp (SFTP mode) opens without truncate, writes, then sets the size to what it
    wrote: the file is then exactly those bytes."""
    size = Request(T.FSETSTAT, 3, handle=H, attrs=Attrs(size=2))
    events = run([*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), ok(2), c(size), ok(3),
                  *close(4)])  # fmt: skip
    f = closed(events)[0]
    assert f.sequential and f.sha256_written == hashlib.sha256(b"ab").hexdigest()


# --- drop: the gateway answered a request itself --------------------------------------------


def test_drop_a_blocked_request() -> None:
    tracker = SftpTracker()
    events = run([*HELLO, c(Request(T.REMOVE, 5, path=b"/etc/passwd"))], tracker)
    assert events == [OpStarted(5, "remove", "/etc/passwd", None, {}, True)]
    assert tracker.drop(5, SSH_FX_PERMISSION_DENIED, "denied by policy") == [
        OpDone(5, "remove", "/etc/passwd", "permission_denied", 3, "denied by policy")
    ]
    assert tracker.outstanding == 0
    # what the gateway sends the client instead is a STATUS for that id
    assert status(5, SSH_FX_PERMISSION_DENIED, "denied by policy") == encode_response(
        Response(T.STATUS, 5, code=3, message=b"denied by policy", language=b"en")
    )
    with pytest.raises(SftpError, match="not outstanding"):
        tracker.server(encode_response(Response(T.STATUS, 5)))
    with pytest.raises(SftpError, match="nothing to drop"):
        tracker.drop(5)
    # the id is free again
    assert run([c(Request(T.STAT, 5, path=b"/x")), ok(5)], tracker)[-1].outcome == "ok"  # type: ignore[union-attr]


def test_a_dropped_write_gives_no_digest() -> None:
    tracker = SftpTracker()
    run([*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), write(3, 2, b"cd")], tracker)
    tracker.drop(3)
    _not_sequential([ok(2), *close(4)], tracker)


def test_end_locates_each_request_in_the_client_stream() -> None:
    steps = [*HELLO, c(Request(T.STAT, 1, path=b"/a")), c(Request(T.STAT, 2, path=b"/bb"))]
    events = run(steps)
    sizes = [len(b) for d, b in steps if d == "c2s"]
    assert [e.end for e in events if isinstance(e, OpStarted)] == [
        sum(sizes[:2]),
        sum(sizes[:3]),
    ]


# --- operations --------------------------------------------------------------------------------


def test_every_operation_names_its_paths() -> None:
    d = b"\x00\x00\x00\x09"
    steps = [
        *HELLO,
        c(Request(T.OPENDIR, 1, path=b"/d")),
        s(Response(T.HANDLE, 1, handle=d)),
        c(Request(T.READDIR, 2, handle=d)),
        s(Response(T.NAME, 2, names=(Name(b"a", b"-rw a", Attrs()), Name(b"\xff", b"", Attrs())))),
        *close(3, d),
        c(Request(T.MKDIR, 4, path=b"/d/n", attrs=Attrs(permissions=0o700))),
        c(Request(T.RMDIR, 5, path=b"/d/n")),
        c(Request(T.RENAME, 6, path=b"/a", path2=b"/b")),
        c(Request(T.SYMLINK, 7, path=b"target", path2=b"/d/link")),  # OpenSSH's order
        c(Request(T.READLINK, 8, path=b"/d/link")),
        c(Request(T.REALPATH, 9, path=b".")),
        c(Request(T.SETSTAT, 10, path=b"/a", attrs=Attrs(uid=1, gid=2, atime=3, mtime=4))),
        c(Request(T.LSTAT, 11, path=b"/a")),
        c(Request(T.STAT, 12, path=b"/a")),
        c(Request(T.FSTAT, 13, handle=b"nope")),
        c(Request(T.EXTENDED, 14, name=b"posix-rename@openssh.com", path=b"/a", path2=b"/c")),
        c(Request(T.EXTENDED, 15, name=b"hardlink@openssh.com", path=b"/a", path2=b"/h")),
        c(Request(T.EXTENDED, 16, name=b"statvfs@openssh.com", path=b"/")),
        c(Request(T.EXTENDED, 17, name=b"vendor@example.com", data=b"??")),
        c(Request(T.REMOVE, 18, path=b"/bad\xff")),
        c(Request(T.OPEN, 19, path=b"/r", pflags=OpenFlag.READ, attrs=Attrs())),
    ]
    events = run_three_ways(steps)
    started = {e.id: e for e in events if isinstance(e, OpStarted)}
    assert {i: (e.op, e.path, e.path2, e.modifies) for i, e in started.items()} == {
        1: ("opendir", "/d", None, False),
        2: ("readdir", "/d", None, False),
        3: ("close", "/d", None, False),
        4: ("mkdir", "/d/n", None, True),
        5: ("rmdir", "/d/n", None, True),
        6: ("rename", "/a", "/b", True),
        7: ("symlink", "/d/link", "target", True),
        8: ("readlink", "/d/link", None, False),
        9: ("realpath", ".", None, False),
        10: ("setstat", "/a", None, True),
        11: ("lstat", "/a", None, False),
        12: ("stat", "/a", None, False),
        13: ("fstat", None, None, False),
        14: ("extended:posix-rename@openssh.com", "/a", "/c", True),
        15: ("extended:hardlink@openssh.com", "/a", "/h", True),
        16: ("extended:statvfs@openssh.com", "/", None, False),
        17: ("extended:vendor@example.com", None, None, True),  # unknown: may change things
        18: ("remove", "/bad\\xff", None, True),
        19: ("open", "/r", None, False),
    }
    assert started[4].detail == {"permissions": 0o700}
    assert started[10].detail == {"uid": 1, "gid": 2, "atime": 3, "mtime": 4}
    assert started[13].detail == {"handle": b"nope".hex()}
    assert OpDone(2, "readdir", "/d", "ok", 0, "", ("a", "\\xff")) in events
    assert not closed(events)  # a directory's close is no file's


def test_fsync_names_the_file_of_its_handle() -> None:
    fsync = c(Request(T.EXTENDED, 2, name=b"fsync@openssh.com", handle=H))
    events = run([*HELLO, *opened(1, b"/f", PUT), fsync])
    assert events[-1] == OpStarted(2, "extended:fsync@openssh.com", "/f", None, {}, False)


def test_open_modes() -> None:
    assert open_mode(0x3F) == "read,write,append,create,truncate,excl"
    assert open_mode(OpenFlag.WRITE | OpenFlag.APPEND) == "write,append"
    assert open_mode(0x40) == ""


def test_finish_settles_what_is_left() -> None:
    tracker = SftpTracker()
    run([*HELLO, *opened(1, b"/f", PUT), write(2, 0, b"ab"), ok(2), write(3, 2, b"c")], tracker)
    assert tracker.finish() == [
        OpDone(3, "write", "/f", "connection_lost", 7),
        FileClosed("/f", "write,create,truncate", 0, 2, None, None, "connection_lost", False),
    ]
    assert (tracker.outstanding, tracker.open_handles, tracker.held) == (0, 0, 0)


# --- refusals and bounds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([c(Request(T.STAT, 1, path=b"/a")), c(Request(T.STAT, 1, path=b"/b"))], "reused"),
        ([ok(9)], "not outstanding"),
        ([c(Request(T.STAT, 1, path=b"/a")), data(1, b"x")], "answered stat .* with DATA"),
        ([c(Request(T.REMOVE, 1, path=b"/a")), s(Response(T.HANDLE, 1, handle=H))], "HANDLE"),
        ([*opened(1, b"/f", 1), read(2, 0, 2), data(2, b"abc")], "3 bytes for a 2-byte READ"),
        ([*opened(1, b"/f", 1), *opened(2, b"/g", 1)], "handle 00000007 again"),
    ],
)
def test_protocol_violations(steps: Steps, message: str) -> None:
    with pytest.raises(SftpError, match=message):
        run([*HELLO, *steps])


def test_outstanding_requests_and_handles_are_bounded() -> None:
    tracker = SftpTracker(max_outstanding=2)
    run([*HELLO, c(Request(T.STAT, 1, path=b"/a")), c(Request(T.STAT, 2, path=b"/a"))], tracker)
    with pytest.raises(SftpError, match="more than 2 SFTP requests"):
        run([c(Request(T.STAT, 3, path=b"/a"))], tracker)
    tracker = SftpTracker(max_handles=1)
    run([*HELLO, *opened(1, b"/f", 1)], tracker)
    with pytest.raises(SftpError, match="more than 1 SFTP handles"):
        run(opened(2, b"/g", 1, b"other"), tracker)


# --- hypothesis: pipelined transfers answered in any order -----------------------------------


@given(
    size=st.integers(0, 30_000),
    pieces=st.integers(1, 40),
    window=st.integers(1, 16),
    seed=st.integers(0, 2**32),
    upload=st.booleans(),
)
def test_pipelined_transfer_hashes_the_whole_file(
    size: int, pieces: int, window: int, seed: int, upload: bool
) -> None:
    """Requests in windows (an upload's WRITEs in any order within one), each window's
    answers permuted and coming after the next window's requests; downloads get short
    reads the client asks again for; every read is cut at random points."""
    rng = random.Random(seed)
    content = rng.randbytes(size)
    chunk = max(1, -(-size // pieces))
    steps: Steps = [*HELLO, *opened(1, b"/f", PUT if upload else OpenFlag.READ)]
    todo = [(o, min(chunk, size - o)) for o in range(0, size, chunk)]
    rid, late = 10, list[tuple[str, bytes]]()
    while todo or late:
        batch, todo = todo[:window], todo[window:]
        if upload:
            rng.shuffle(batch)
        answers = []
        for off, n in batch:
            rid += 1
            if upload:
                steps.append(write(rid, off, content[off : off + n]))
                answers.append(ok(rid))
            else:
                steps.append(read(rid, off, n))
                k = rng.randint(1, n) if rng.random() < 0.3 else n
                answers.append(data(rid, content[off : off + k]))
                if k < n:
                    todo.append((off + k, n - k))
        rng.shuffle(answers)
        steps += late
        late = answers
    if not upload:
        steps += [read(rid + 1, size, chunk), ok(rid + 1, SSH_FX_EOF)]
    steps += close(rid + 2)
    reads_: Steps = []
    for d, b in steps:
        cuts = sorted(rng.randint(0, len(b)) for _ in range(rng.randint(0, 2)))
        reads_ += [(d, b[x:y]) for x, y in zip([0, *cuts], [*cuts, len(b)], strict=True)]
    (fc,) = closed(run(reads_))
    assert fc.sequential
    if upload:
        assert (fc.sha256_written, fc.bytes_written) == (sha(content), size)
    else:
        assert (fc.sha256_read, fc.bytes_read) == (sha(content), size)


@given(
    content=st.binary(min_size=2, max_size=5000),
    chunk=st.integers(1, 1000),
    seed=st.integers(0, 2**32),
)
def test_a_transfer_with_a_piece_missing_gives_no_digest(
    content: bytes, chunk: int, seed: int
) -> None:
    rng = random.Random(seed)
    offsets = list(range(0, len(content), chunk))
    if len(offsets) < 2:
        offsets = [0, 1]
        chunk = 1
    missing = rng.randrange(len(offsets) - 1)  # never the last: a short file is no gap
    steps = [*HELLO, *opened(1, b"/f", PUT)]
    for i, off in enumerate(offsets):
        if i != missing:
            steps += [write(10 + i, off, content[off : off + chunk]), ok(10 + i)]
    _not_sequential([*steps, *close(2)])


HANDLES = [H, b"x"]
REQUEST_KINDS = ["open", "opendir", "close", "read", "write", "fsetstat", "stat", "copy"]
ANSWER_KINDS = ["status", "handle", "data", "name", "attrs", "reply", "drop"]
RIGHT = ["right"] * 14  # the answer its request expects, most of the time
actions = st.lists(
    st.tuples(
        st.sampled_from(REQUEST_KINDS + ANSWER_KINDS + RIGHT),
        st.integers(0, 99),
        st.integers(0, 99),
        st.binary(max_size=40),
    ),
    max_size=60,
)


@given(actions)
@example([("opendir", 0, 0, b""), ("right", 0, 0, b""), ("read", 2, 1, b""), ("right", 0, 0, b"x")])
def test_any_session_raises_only_sftp_errors(acts: list[tuple[str, int, int, bytes]]) -> None:
    """Opens, reads, writes, closes, answers of every type (mostly the right one) and
    drops, over two handles, answering requests that are outstanding (so the tracker gets
    far): it follows or raises SftpError, stays within its bounds, and a FileClosed that
    is not sequential has no digest. (The example: DATA read through a directory's handle
    was once held past the end.)"""
    tracker = SftpTracker(max_outstanding=6, max_handles=2, max_held=3000)
    sent: list[tuple[int, str, int]] = []  # (id, kind, READ length) not answered yet
    events = run(HELLO, tracker)
    with contextlib.suppress(SftpError):
        for n, (kind, x, y, b) in enumerate(acts):
            h, h2 = HANDLES[x % 2], HANDLES[y % 2]
            if kind in REQUEST_KINDS:
                rid = sent[y % len(sent)][0] if sent and x == 17 else 100 + n  # 17: reuse
                sent.append((rid, kind, x))
                q = {
                    "open": Request(T.OPEN, rid, path=b"/f", pflags=y % 64, attrs=Attrs()),
                    "opendir": Request(T.OPENDIR, rid, path=b"/d"),
                    "close": Request(T.CLOSE, rid, handle=h),
                    "read": Request(T.READ, rid, handle=h, offset=y, length=x),
                    "write": Request(T.WRITE, rid, handle=h, offset=y, data=b),
                    "fsetstat": Request(T.FSETSTAT, rid, handle=h, attrs=Attrs(size=y)),
                    "stat": Request(T.STAT, rid, path=b),
                    "copy": Request(T.EXTENDED, rid, name=b"copy-data", handle=h, handle2=h2),
                }[kind]
                events += run([c(q)], tracker)
                continue
            if not sent and x != 99:
                continue  # 99: answer a request never made
            rid, asked, length = sent.pop(x % len(sent)) if sent else (x, "stat", 0)
            if kind == "right":
                right = {"open": "handle", "opendir": "handle", "read": "data"}
                kind = right.get(asked, "status")
                b, y = b[:length], 0 if asked != "close" else y
            if kind == "drop":
                events += tracker.drop(rid)
                continue
            p = {
                "status": Response(T.STATUS, rid, code=y % 10),
                "handle": Response(T.HANDLE, rid, handle=h2),
                "data": Response(T.DATA, rid, data=b),
                "name": Response(T.NAME, rid, names=(Name(b, b"", Attrs()),)),
                "attrs": Response(T.ATTRS, rid, attrs=Attrs()),
                "reply": Response(T.EXTENDED_REPLY, rid, data=b),
            }[kind]
            events += run([s(p)], tracker)
            assert tracker.outstanding <= 6
            assert tracker.open_handles <= 2
            assert 0 <= tracker.held <= 3000
    events += tracker.finish()
    assert tracker.held == 0
    for e in closed(events):
        assert e.sequential or (e.sha256_read is None and e.sha256_written is None)


# --- real OpenSSH ---------------------------------------------------------------------------


def test_recorded_openssh_session() -> None:
    """tests/vectors/sftp/session_openssh.json, fed three ways: every request has its op
    and its answer, the upload and the download their file's digest."""
    v = load("session_openssh")
    events = run_three_ways(reads(v))
    expect = v["expect"]
    started = [e for e in events if isinstance(e, OpStarted)]
    assert [e.id for e in started] == [r["id"] for r in expect["requests"]]
    done = [e for e in events if isinstance(e, OpDone)]
    assert {str(e.id): e.status_code for e in done} == expect["status_by_id"]
    f = expect["files"]["up.bin"]
    up, down = closed(events)
    assert (up.sha256_written, up.bytes_written, up.sequential) == (f["sha256"], f["size"], True)
    assert (down.sha256_read, down.bytes_read, down.sequential) == (f["sha256"], f["size"], True)
    symlink = next(e for e in started if e.op == "symlink")
    assert (symlink.path or "").endswith("/d/link")
    assert symlink.path2 == "moved.bin"


@pytest.mark.skipif(not capture.available(), reason="OpenSSH's sftp and sftp-server")
def test_live_openssh_put_and_get_of_a_mebibyte(tmp_path: Path) -> None:
    """sftp -b against sftp-server through a relay that records both directions: the
    tracker, fed what the relay read, finds the put and the get of a 1 MiB random file
    with its SHA-256 and size, and the mkdir, rename, remove and rmdir succeeded."""
    local, root, work = tmp_path / "local", tmp_path / "root", tmp_path / "work"
    for d in (local, root, work):
        d.mkdir()
    content = os.urandom(1 << 20)
    (local / "up.bin").write_bytes(content)
    batch = (
        "mkdir d\nput up.bin d/up.bin\nget d/up.bin down.bin\n"
        "rename d/up.bin d/moved.bin\nrm d/moved.bin\nrmdir d\n"
    )
    steps = capture.run_session(batch, local, root, work)
    assert (local / "down.bin").read_bytes() == content
    tracker = SftpTracker()
    events = run(steps, tracker)
    assert (tracker.outstanding, tracker.open_handles, tracker.held, tracker.pending) == (
        0,
        0,
        0,
        0,
    )
    where = str(root / "d")
    up, down = closed(events)
    assert up == FileClosed(
        f"{where}/up.bin", "write,create,truncate", 0, 1 << 20, None, sha(content), "ok", True
    )
    assert down == FileClosed(f"{where}/up.bin", "read", 1 << 20, 0, sha(content), None, "ok", True)
    writes = [e for e in events if isinstance(e, Data) and e.direction == "write"]
    assert len(writes) > 1  # pipelined: OpenSSH moves at most 255 KiB per request
    ordered = sorted(writes, key=lambda w: w.offset)
    assert b"".join(bytes(w.data) for w in ordered) == content
    outcome = {
        e.op: e.outcome
        for e in events
        if isinstance(e, OpDone) and e.op in ("mkdir", "remove", "rmdir")
    }
    assert outcome == {"mkdir": "ok", "remove": "ok", "rmdir": "ok"}
    (rename,) = [e for e in events if isinstance(e, OpStarted) and "rename" in e.op]
    assert (rename.path, rename.path2) == (f"{where}/up.bin", f"{where}/moved.bin")
    assert OpDone(rename.id, rename.op, rename.path, "ok", 0, "Success") in events
