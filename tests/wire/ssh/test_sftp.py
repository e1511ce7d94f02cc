"""sftp.py and sftp_encode.py: SFTP version 3 packets read both ways, fed whole, one byte
at a time and with trailing bytes; OpenSSH's real bytes; bytes written by hand; every
refusal; encode→decode round trips and arbitrary bytes under hypothesis."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.ssh.sftp import (
    EXTENSION_ARGS,
    MAX_PACKET,
    REQUEST_ARGS,
    SSH_FX_PERMISSION_DENIED,
    Attrs,
    ClientReader,
    Init,
    Name,
    PacketType,
    Request,
    Response,
    ServerReader,
    SftpError,
    Status,
    Version,
    status,
    status_name,
)
from ledgergate.wire.ssh.sftp_encode import (
    encode_attrs,
    encode_init,
    encode_request,
    encode_response,
    encode_version,
)
from tests.wire.ssh.vectors import load, reads, stream

T = PacketType
U32 = 2**32 - 1
U64 = 2**64 - 1
A = Attrs(size=5, uid=1000, gid=100, permissions=0o100644, atime=1, mtime=2)

REQUESTS = [
    Request(T.OPEN, 1, path=b"/up.bin", pflags=0x1A, attrs=Attrs(permissions=0o644)),
    Request(T.CLOSE, 2, handle=b"\x00\x00\x00\x01"),
    Request(T.READ, 3, handle=b"h", offset=2**40, length=32768),
    Request(T.WRITE, 4, handle=b"h", offset=7, data=b"payload"),
    Request(T.LSTAT, 5, path=b"/a"),
    Request(T.FSTAT, 6, handle=b"h"),
    Request(T.SETSTAT, 7, path=b"/a", attrs=A),
    Request(T.FSETSTAT, 8, handle=b"h", attrs=Attrs(extended=((b"k", b"v"),))),
    Request(T.OPENDIR, 9, path=b"/d"),
    Request(T.READDIR, 10, handle=b"d"),
    Request(T.REMOVE, 11, path=b"/a"),
    Request(T.MKDIR, 12, path=b"/d", attrs=Attrs(permissions=0o755)),
    Request(T.RMDIR, 13, path=b"/d"),
    Request(T.REALPATH, 14, path=b"."),
    Request(T.STAT, 15, path=b"/a"),
    Request(T.RENAME, 16, path=b"/a", path2=b"/b"),
    Request(T.READLINK, 17, path=b"/l"),
    Request(T.SYMLINK, 18, path=b"target", path2=b"/l"),
    Request(T.EXTENDED, 19, name=b"posix-rename@openssh.com", path=b"/a", path2=b"/b"),
    Request(T.EXTENDED, 20, name=b"hardlink@openssh.com", path=b"/a", path2=b"/b"),
    Request(T.EXTENDED, 21, name=b"statvfs@openssh.com", path=b"/"),
    Request(T.EXTENDED, 22, name=b"fsync@openssh.com", handle=b"h"),
    Request(T.EXTENDED, 23, name=b"lsetstat@openssh.com", path=b"/l", attrs=A),
    Request(T.EXTENDED, 24, name=b"expand-path@openssh.com", path=b"~/x"),
    Request(
        T.EXTENDED,
        25,
        name=b"copy-data",
        handle=b"src",
        offset=1,
        length=2**33,
        handle2=b"dst",
        offset2=3,
    ),
    Request(T.EXTENDED, 26, name=b"limits@openssh.com", data=b""),
    Request(T.EXTENDED, U32, name=b"vendor@example.com", data=b"\x01\x02opaque"),
]
RESPONSES = [
    Response(T.STATUS, 1, code=3, message=b"denied", language=b"en"),
    Response(T.HANDLE, 2, handle=b"\x00\x00\x00\x01"),
    Response(T.DATA, 3, data=b"bytes read"),
    Response(T.NAME, 4, names=(Name(b"a", b"-rw-r--r-- a", A), Name(b"b", b"b", Attrs()))),
    Response(T.ATTRS, 5, attrs=A),
    Response(T.EXTENDED_REPLY, 6, data=b"\x00" * 11),
    Response(T.STATUS, U32, code=1, message=b"End of file", language=b""),
]
CLIENT = encode_init(3) + b"".join(encode_request(q) for q in REQUESTS)
SERVER = encode_version(3, ((b"posix-rename@openssh.com", b"1"),)) + b"".join(
    encode_response(r) for r in RESPONSES
)
CLIENT_EVENTS = [Init(3), *REQUESTS]
SERVER_EVENTS = [Version(3, ((b"posix-rename@openssh.com", b"1"),)), *RESPONSES]


def feed(reader: ClientReader | ServerReader, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for c in chunks:
        out.extend(reader.feed(c))
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- the three ways, both directions --------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "data", "events"),
    [(ClientReader, CLIENT, CLIENT_EVENTS), (ServerReader, SERVER, SERVER_EVENTS)],
    ids=["client", "server"],
)
def test_every_packet_whole_bytewise_and_with_trailing_bytes(
    make: type[ClientReader] | type[ServerReader], data: bytes, events: list[object]
) -> None:
    assert feed(make(), [data]) == events
    r = make()
    assert feed(r, bytewise(data)) == events
    assert r.pending == 0
    r = make()
    tail = encode_request(REQUESTS[0]) if make is ClientReader else encode_response(RESPONSES[0])
    assert feed(r, [data + tail[:7]]) == events
    assert r.pending == 7
    assert feed(r, [tail[7:]]) == [REQUESTS[0] if make is ClientReader else RESPONSES[0]]


def test_end_is_each_packet_stream_offset() -> None:
    ends = [e.end for e in ClientReader().feed(CLIENT)]
    sizes = [len(encode_init(3))] + [len(encode_request(q)) for q in REQUESTS]
    assert ends == [sum(sizes[: i + 1]) for i in range(len(sizes))]


def test_openssh_session_vector() -> None:
    """OpenSSH 9.2's sftp and sftp-server, read by read: every packet decodes, in each of
    the three ways, to what the capture script's own reading says."""
    v = load("session_openssh")
    steps = reads(v)
    expect = v["expect"]
    c2s, s2c = stream(steps, "c2s"), stream(steps, "s2c")
    for chunks in ([c2s], bytewise(c2s), [c2s + b"\x00\x00"], [b for d, b in steps if d == "c2s"]):
        events = feed(ClientReader(), chunks)
        assert isinstance(events[0], Init)
        assert events[0].version == 3
        got = [(q.type, q.id, q.path, q.path2, q.name) for q in events[1:]]  # type: ignore[attr-defined]
        want = [
            (
                r["type"],
                r["id"],
                *(r[k].encode() if k in r else None for k in ("path", "path2", "extension")),
            )
            for r in expect["requests"]
        ]
        assert got == want
    for chunks in ([s2c], bytewise(s2c), [s2c + b"\x00\x00"]):
        events = feed(ServerReader(), chunks)
        assert isinstance(events[0], Version)
        assert (b"posix-rename@openssh.com", b"1") in events[0].extensions
        codes = {
            str(r.id): (r.code if r.type is T.STATUS else 0)  # type: ignore[attr-defined]
            for r in events[1:]
        }
        assert codes == expect["status_by_id"]
    # The upload's one WRITE carries the file; the download's DATA too.
    (write,) = [q for q in feed(ClientReader(), [c2s]) if getattr(q, "type", 0) is T.WRITE]
    assert write.data_len == expect["files"]["up.bin"]["size"]  # type: ignore[attr-defined]


# --- bytes written by hand, not by the encoder ----------------------------------------------


def test_hand_written_client_bytes() -> None:
    path = b"/tmp/f"
    open_ = struct.pack(">IBI", 1 + 4 + 4 + len(path) + 4 + 4 + 4, 3, 9) + struct.pack(
        ">I", len(path)
    )
    open_ += path + struct.pack(">III", 0x1A, 0x4, 0o600)
    write = struct.pack(">IBII", 1 + 4 + 4 + 1 + 8 + 4 + 3, 6, 10, 1) + b"H"
    write += struct.pack(">QI", 5, 3) + b"abc"
    data = bytes.fromhex("000000050100000003") + open_ + write
    assert ClientReader().feed(data) == [
        Init(3),
        Request(T.OPEN, 9, path=path, pflags=0x1A, attrs=Attrs(permissions=0o600)),
        Request(T.WRITE, 10, handle=b"H", offset=5, data=b"abc"),
    ]


def test_hand_written_server_bytes() -> None:
    # VERSION 3 with one extension pair: length 25, type 2, version, "fsync@x.co", "11"
    version = bytes.fromhex("0000001902000000030000000a") + b"fsync@x.co"
    version += bytes.fromhex("00000002") + b"11"
    status_ = struct.pack(">IBIII", 1 + 4 + 4 + 4 + 2 + 4, 101, 4, 2, 2) + b"no"
    status_ += struct.pack(">I", 0)
    short_status = struct.pack(">IBII", 9, 101, 5, 1)  # the code alone, as early servers
    assert ServerReader().feed(version + status_ + short_status) == [
        Version(3, ((b"fsync@x.co", b"11"),)),
        Response(T.STATUS, 4, code=2, message=b"no"),
        Response(T.STATUS, 5, code=1),
    ]


def test_status_packet_bytes() -> None:
    packet = status(7, SSH_FX_PERMISSION_DENIED, "denied by policy")
    assert packet == (
        struct.pack(">IBIII", 1 + 4 + 4 + 4 + 16 + 4 + 2, 101, 7, 3, 16)
        + b"denied by policy"
        + b"\x00\x00\x00\x02en"
    )
    r = ServerReader()
    r.feed(encode_version())
    assert r.feed(packet) == [
        Response(T.STATUS, 7, code=3, message=b"denied by policy", language=b"en")
    ]


def test_status_names() -> None:
    assert [status_name(c) for c in Status] == [
        "ok",
        "eof",
        "no_such_file",
        "permission_denied",
        "failure",
        "bad_message",
        "no_connection",
        "connection_lost",
        "op_unsupported",
    ]
    assert status_name(42) == "status_42"


def test_attrs_encoding() -> None:
    assert encode_attrs(Attrs()) == b"\x00\x00\x00\x00"
    assert encode_attrs(Attrs(size=1)) == bytes.fromhex("00000001" + "0000000000000001")
    ext = encode_attrs(Attrs(extended=((b"a", b"b"),)))
    assert ext == bytes.fromhex("80000000" + "00000001" + "0000000161" + "0000000162")


# --- payloads are views, not copies ----------------------------------------------------------


def test_a_write_in_one_read_is_not_copied() -> None:
    r = ClientReader()
    r.feed(encode_init())
    data = encode_request(Request(T.WRITE, 1, handle=b"h", offset=0, data=b"x" * 1000))
    (q,) = r.feed(data)
    assert isinstance(q, Request)
    assert isinstance(q.data, memoryview)
    assert q.data.obj is data


def test_data_split_across_reads_is_assembled() -> None:
    r = ServerReader()
    r.feed(encode_version())
    packet = encode_response(Response(T.DATA, 1, data=bytes(range(256)) * 4))
    assert r.feed(packet[:100]) == []
    (p,) = r.feed(packet[100:])
    assert isinstance(p, Response)
    assert p.data == bytes(range(256)) * 4


# --- refusals ------------------------------------------------------------------------------

INIT = encode_init()
VERSION = encode_version()


def _packet(t: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, t) + body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode_request(REQUESTS[4]), "before INIT"),
        (INIT + INIT, "second SFTP INIT"),
        (encode_init(2), "version 2"),
        (INIT + VERSION, "VERSION cannot come from the client"),
        (INIT + encode_response(RESPONSES[0]), "STATUS cannot come from the client"),
        (INIT + _packet(99, b"\0\0\0\1"), "unknown SFTP packet type 99"),
        (INIT + b"\x00\x00\x00\x00", "length 0"),
        (INIT + struct.pack(">I", MAX_PACKET + 1), f"outside 1..{MAX_PACKET}"),
        (INIT + _packet(3, b"\0\0\0\1\0\0\0\x10/short"), "OPEN packet ends inside its path"),
        (INIT + _packet(5, b"\0\0\0\1\0\0\0\1h\0\0"), "READ packet ends inside its offset"),
        (INIT + _packet(6, b"\0\0\0\1\0\0\0\1h" + bytes(8) + b"\0\0\1\0ab"), "inside its data"),
        (INIT + _packet(17, b"\0\0"), "STAT packet ends inside its id"),
        (INIT + _packet(9, b"\0\0\0\1\0\0\0\1a\0\0\0\x10"), "flags 0x10 beyond version 3"),
        (INIT + _packet(4, b"\0\0\0\1\0\0\1\1" + bytes(257)), "257-byte handle"),
        (
            INIT + _packet(9, b"\0\0\0\1\0\0\0\1a\x80\0\0\0\xff\xff\xff\xff"),
            "claims 4294967295 extended attrs",
        ),
    ],
)
def test_client_refusals(data: bytes, message: str) -> None:
    with pytest.raises(SftpError, match=message):
        ClientReader().feed(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode_response(RESPONSES[0]), "STATUS before VERSION"),
        (encode_version(4), "version 4"),
        (VERSION + VERSION, "second SFTP VERSION"),
        (VERSION + INIT, "INIT cannot come from the server"),
        (VERSION + encode_request(REQUESTS[0]), "OPEN cannot come from the server"),
        (VERSION + _packet(104, b"\0\0\0\1\0\1\0\0"), "claims 65536 names"),
        (VERSION + _packet(103, b"\0\0\0\1\0\0\0\5abc"), "DATA packet ends inside its data"),
        (VERSION + _packet(101, b"\0\0\0\1\0\0\0\0\0\0\0\5ab"), "inside its message"),
    ],
)
def test_server_refusals(data: bytes, message: str) -> None:
    with pytest.raises(SftpError, match=message):
        ServerReader().feed(data)


def test_a_length_past_the_cap_is_refused_at_its_prefix() -> None:
    r = ClientReader()
    r.feed(INIT)
    with pytest.raises(SftpError):
        r.feed(struct.pack(">I", MAX_PACKET + 1))
    r = ClientReader(limit=100)
    r.feed(INIT)
    assert r.feed(encode_request(Request(T.WRITE, 1, handle=b"", data=b"x" * 70)))
    with pytest.raises(SftpError):
        r.feed(encode_request(Request(T.WRITE, 1, handle=b"", data=b"x" * 100)))


def test_the_largest_openssh_write_fits() -> None:
    """OpenSSH moves 255 KiB per WRITE (limits@openssh.com): the packet fits MAX_PACKET."""
    r = ClientReader()
    r.feed(INIT)
    big = encode_request(Request(T.WRITE, 1, handle=b"\0" * 4, data=bytes(255 * 1024)))
    (q,) = r.feed(big)
    assert isinstance(q, Request)
    assert q.data_len == 255 * 1024


def test_trailing_bytes_inside_a_packet_are_ignored() -> None:
    """As sftp-server does: a packet longer than its fields is read for its fields."""
    r = ClientReader()
    r.feed(INIT)
    assert r.feed(_packet(17, b"\0\0\0\7\0\0\0\1a" + b"junk")) == [Request(T.STAT, 7, path=b"a")]


def test_encoders_refuse_the_wrong_direction() -> None:
    with pytest.raises(ValueError, match="not a request"):
        encode_request(Request(T.STATUS, 1))
    with pytest.raises(ValueError, match="not a response"):
        encode_response(Response(T.OPEN, 1))


# --- hypothesis -----------------------------------------------------------------------------

names = st.binary(max_size=24)
u32s = st.integers(0, U32)
# uid and gid, atime and mtime: both or neither (one flag each)
attrs = st.one_of(
    st.builds(Attrs),
    st.builds(
        Attrs,
        size=st.none() | st.integers(0, U64),
        permissions=st.none() | u32s,
        extended=st.lists(st.tuples(names, names), max_size=3).map(tuple),
    ),
    st.builds(Attrs, uid=u32s, gid=u32s, atime=u32s, mtime=u32s),
)
KIND: dict[str, st.SearchStrategy[Any]] = {
    "str": names,
    "handle": st.binary(max_size=256),
    "u32": st.integers(0, U32),
    "u64": st.integers(0, U64),
    "data": st.binary(max_size=300),
    "rest": st.binary(max_size=40),
    "attrs": attrs,
}


@st.composite
def requests(draw: st.DrawFn) -> Request:
    t = draw(st.sampled_from(sorted(REQUEST_ARGS)))
    args: dict[str, Any] = {f: draw(KIND[k]) for f, k in REQUEST_ARGS[t]}
    if t is T.EXTENDED:
        args["name"] = draw(st.sampled_from(sorted(EXTENSION_ARGS)) | names)
        extra = EXTENSION_ARGS.get(args["name"], (("data", "rest"),))
        args.update({f: draw(KIND[k]) for f, k in extra})
    return Request(t, draw(st.integers(0, U32)), **args)


responses = st.one_of(
    st.builds(
        lambda i, c, m, lang: Response(T.STATUS, i, code=c, message=m, language=lang),
        st.integers(0, U32),
        st.integers(0, U32),
        names,
        names,
    ),
    st.builds(lambda i, h: Response(T.HANDLE, i, handle=h), st.integers(0, U32), KIND["handle"]),
    st.builds(lambda i, d: Response(T.DATA, i, data=d), st.integers(0, U32), KIND["data"]),
    st.builds(
        lambda i, n: Response(T.NAME, i, names=tuple(n)),
        st.integers(0, U32),
        st.lists(st.builds(Name, names, names, attrs), max_size=4),
    ),
    st.builds(lambda i, a: Response(T.ATTRS, i, attrs=a), st.integers(0, U32), attrs),
    st.builds(
        lambda i, d: Response(T.EXTENDED_REPLY, i, data=d), st.integers(0, U32), KIND["rest"]
    ),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(c % (len(data) + 1) for c in cuts)
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@given(st.lists(requests(), max_size=8), st.lists(st.integers(0, 10**6), max_size=6))
def test_requests_round_trip_in_any_split(qs: list[Request], cuts: list[int]) -> None:
    data = INIT + b"".join(encode_request(q) for q in qs)
    assert feed(ClientReader(), _split(data, cuts)) == [Init(3), *qs]


@given(st.lists(responses, max_size=8), st.lists(st.integers(0, 10**6), max_size=6))
def test_responses_round_trip_in_any_split(ps: list[Response], cuts: list[int]) -> None:
    data = VERSION + b"".join(encode_response(p) for p in ps)
    assert feed(ServerReader(), _split(data, cuts)) == [Version(3), *ps]


def _only_sftp_errors(reader: ClientReader | ServerReader, chunks: list[bytes]) -> None:
    try:
        for c in chunks:
            reader.feed(c)
    except SftpError:
        pass
    assert reader.pending <= MAX_PACKET + 4


@given(st.binary(max_size=600), st.lists(st.integers(0, 10**6), max_size=4))
def test_arbitrary_bytes_raise_only_sftp_errors(data: bytes, cuts: list[int]) -> None:
    _only_sftp_errors(ClientReader(), _split(data, cuts))
    _only_sftp_errors(ServerReader(), _split(data, cuts))
    # past the handshake, so the bytes reach the request and response decoders
    _only_sftp_errors(ClientReader(), [INIT, *_split(data, cuts)])
    _only_sftp_errors(ServerReader(), [VERSION, *_split(data, cuts)])


@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_mutated_requests_raise_only_sftp_errors(qs: list[Request], data: st.DataObject) -> None:
    """Real packets with bytes changed, cut or inserted: lengths and counts that lie."""
    raw = bytearray(b"".join(encode_request(q) for q in qs))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if op == "set":
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[at]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    _only_sftp_errors(ClientReader(), [INIT, bytes(raw)])


@given(st.lists(responses, min_size=1, max_size=4), st.data())
def test_mutated_responses_raise_only_sftp_errors(ps: list[Response], data: st.DataObject) -> None:
    raw = bytearray(b"".join(encode_response(p) for p in ps))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    _only_sftp_errors(ServerReader(), [VERSION, bytes(raw)])
