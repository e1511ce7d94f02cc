"""Record the PostgreSQL vectors in this directory from real servers and a real psql.

Run by hand (not by pytest) when a vector must be added or re-recorded:

    .venv/bin/python -m tests.vectors.pg.capture

It writes one JSON file per vector. What it needs:
- a PostgreSQL 15 with trust auth on 127.0.0.1:5432 (user and database ``postgres``) for
  the session vectors (``session_*.json``) and the protocol-3.2 handshake;
- the PostgreSQL binaries (tests/integration/pgcluster.py starts throwaway clusters with
  scram-sha-256, md5 and password auth, TLS off) for the auth handshakes;
- ``psql`` for the client-side capture (``frontend_psql.json``).

Every byte is what a real peer sent, read by read as the socket delivered it. The
``expect`` blocks are computed here by a small parser of this script's own (not
ledgergate's), from the PostgreSQL protocol documentation, so the tests compare the
gateway against an independent reading of the bytes. Handshakes towards servers are
driven by ledgergate's ``BackendHandshake`` with a fixed nonce; the server accepting the
exchange is what proves those client bytes right.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TRUST = ("127.0.0.1", 5432)
SOURCE = "PostgreSQL {version}, captured by tests/vectors/pg/capture.py"

# --- an independent, minimal reading of the protocol ------------------------------------


def frames(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(type, body, raw) of each whole typed message; the stream must end on a boundary."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("!I", data, pos + 1)
        raw = data[pos : pos + 1 + length]
        assert len(raw) == 1 + length, "stream ends inside a message"
        out.append((chr(data[pos]), raw[5:], raw))
        pos += 1 + length
    return out


def cstrings(body: bytes) -> list[bytes]:
    return body.split(b"\x00")


def fields(body: bytes) -> dict[str, str]:
    out = {}
    for part in body.rstrip(b"\x00").split(b"\x00"):
        out[chr(part[0])] = part[1:].decode()
    return out


def describe_client(data: bytes) -> dict[str, Any]:
    tags, commands, copy_in = [], [], 0
    for t, body, _ in frames(data):
        tags.append(t)
        if t == "Q":
            commands.append({"op": "query", "text": body[:-1].decode()})
        elif t == "P":
            name, query, rest = body.split(b"\x00", 2)
            (n,) = struct.unpack_from("!H", rest, 0)
            types = list(struct.unpack_from(f"!{n}I", rest, 2))
            commands.append(
                {
                    "op": "parse",
                    "statement": name.decode(),
                    "text": query.decode(),
                    "param_types": types,
                }
            )
        elif t == "B":
            portal, stmt, rest = body.split(b"\x00", 2)
            (nf,) = struct.unpack_from("!H", rest, 0)
            formats = list(struct.unpack_from(f"!{nf}H", rest, 2))
            pos = 2 + 2 * nf
            (np_,) = struct.unpack_from("!H", rest, pos)
            pos += 2
            params: list[str | None] = []
            for _ in range(np_):
                (ln,) = struct.unpack_from("!i", rest, pos)
                pos += 4
                if ln < 0:
                    params.append(None)
                else:
                    params.append(rest[pos : pos + ln].hex())
                    pos += ln
            commands.append(
                {
                    "op": "bind",
                    "portal": portal.decode(),
                    "statement": stmt.decode(),
                    "formats": formats,
                    "params": params,
                }
            )
        elif t == "d":
            copy_in += 1
    return {"c2s_messages": tags, "commands": commands, "copy_in_messages": copy_in}


def describe_server(data: bytes) -> dict[str, Any]:
    tags, cc, errors, notices, notifications, rows = [], [], [], [], [], 0
    status = None
    for t, body, _ in frames(data):
        tags.append(t)
        if t in "Dd":
            rows += 1
        elif t == "C":
            cc.append(body[:-1].decode())
        elif t == "E":
            errors.append(fields(body))
        elif t == "N":
            notices.append(fields(body))
        elif t == "A":
            (pid,) = struct.unpack_from("!I", body, 0)
            channel, payload, _ = cstrings(body[4:])
            notifications.append(
                {"pid": pid, "channel": channel.decode(), "payload": payload.decode()}
            )
        elif t == "Z":
            status = body.decode()
    return {
        "s2c_messages": tags,
        "rows": rows,
        "tags": cc,
        "errors": errors,
        "notices": notices,
        "notifications": notifications,
        "status": status,
    }


def build(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


def startup(version: int, params: list[tuple[str, str]]) -> bytes:
    body = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in params) + b"\x00"
    return struct.pack("!II", len(body) + 8, version) + body


def query(sql: str) -> bytes:
    return build(b"Q", sql.encode() + b"\x00")


def parse(name: str, sql: str, types: list[int]) -> bytes:
    body = name.encode() + b"\x00" + sql.encode() + b"\x00" + struct.pack("!H", len(types))
    return build(b"P", body + b"".join(struct.pack("!I", t) for t in types))


def bind(portal: str, stmt: str, params: list[bytes | None], formats: list[int]) -> bytes:
    body = portal.encode() + b"\x00" + stmt.encode() + b"\x00"
    body += struct.pack("!H", len(formats)) + b"".join(struct.pack("!H", f) for f in formats)
    body += struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    return build(b"B", body + struct.pack("!H", 0))


def describe_portal(name: str) -> bytes:
    return build(b"D", b"P" + name.encode() + b"\x00")


def execute(portal: str, max_rows: int) -> bytes:
    return build(b"E", portal.encode() + b"\x00" + struct.pack("!I", max_rows))


SYNC = build(b"S", b"")
COPY_DONE = build(b"c", b"")


def copy_data(data: bytes) -> bytes:
    return build(b"d", data)


# --- recording ----------------------------------------------------------------------------


class Conn:
    """One plaintext connection that records every read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.w.write(data)
        await self.w.drain()

    async def until(self, last: bytes) -> list[bytes]:
        """Reads until a whole message of type ``last`` ends a read."""
        reads: list[bytes] = []
        buf = b""
        while True:
            chunk = await asyncio.wait_for(self.r.read(65536), 10)
            if not chunk:
                raise ConnectionError("server closed")
            reads.append(chunk)
            buf += chunk
            try:
                fr = frames(buf)
            except (AssertionError, struct.error):  # the read ended inside a message
                continue
            if fr and fr[-1][0].encode() == last:
                return reads

    async def close(self) -> None:
        self.w.write(build(b"X", b""))
        self.w.close()


async def session_vector(
    name: str, description: str, script: list[tuple[bytes, bytes]], version: str
) -> None:
    """``script``: (client bytes, the message type that ends the server's answer)."""
    c = await Conn.open(*TRUST)
    await c.send(startup(196608, [("user", "postgres"), ("database", "postgres")]))
    await c.until(b"Z")
    exchanges = []
    for c2s, last in script:
        await c.send(c2s)
        exchanges.append({"c2s": c2s.hex(), "s2c": [r.hex() for r in await c.until(last)]})
    await c.close()
    client = b"".join(bytes.fromhex(e["c2s"]) for e in exchanges)
    server = b"".join(bytes.fromhex(r) for e in exchanges for r in e["s2c"])
    write(
        name,
        {
            "description": description,
            "source": SOURCE.format(version=version),
            "exchanges": exchanges,
            "expect": {**describe_client(client), **describe_server(server)},
        },
    )


def write(name: str, doc: dict[str, Any]) -> None:
    path = HERE / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print("wrote", path.relative_to(HERE.parent.parent.parent))


async def sessions(version: str) -> None:
    await session_vector(
        "session_simple_query",
        "psql-style simple query: RowDescription, three DataRows (one NULL column), "
        "CommandComplete, ReadyForQuery",
        [
            (
                query(
                    "SELECT g AS n, 'row ' || g AS label, NULL::text AS nothing "
                    "FROM generate_series(1, 3) AS g"
                ),
                b"Z",
            )
        ],
        version,
    )
    await session_vector(
        "session_extended",
        "extended protocol: Parse (named, typed), Bind (text, one NULL), Describe portal, "
        "Execute, Sync; then an unnamed statement executed 2 rows at a time "
        "(PortalSuspended)",
        [
            (
                parse("s1", "SELECT $1::int + 1 AS x, $2::text AS y, $3::text AS z", [23, 25, 25])
                + bind("", "s1", [b"41", b"hunter2-secret", None], [0])
                + describe_portal("")
                + execute("", 0)
                + SYNC,
                b"Z",
            ),
            (
                parse("", "SELECT g FROM generate_series(1, 5) AS g", [])
                + bind("p1", "", [], [])
                + execute("p1", 2)
                + execute("p1", 0)
                + SYNC,
                b"Z",
            ),
        ],
        version,
    )
    await session_vector(
        "session_copy_out",
        "COPY ... TO STDOUT: CopyOutResponse, one CopyData per row, CopyDone, "
        "CommandComplete COPY 5",
        [(query("COPY (SELECT g, 'v' || g FROM generate_series(1, 5) AS g) TO STDOUT"), b"Z")],
        version,
    )
    await session_vector(
        "session_copy_in",
        "COPY ... FROM STDIN: CopyInResponse, then the client sends three rows in two "
        "CopyData messages and CopyDone; CommandComplete COPY 3",
        [
            (query("CREATE TEMP TABLE lg_copy (a int, b text)"), b"Z"),
            (query("COPY lg_copy FROM STDIN"), b"G"),
            (copy_data(b"1\tone\n") + copy_data(b"2\ttwo\n3\tthree\n") + COPY_DONE, b"Z"),
        ],
        version,
    )
    await session_vector(
        "session_notify",
        "LISTEN and NOTIFY in one simple query: the session's own NotificationResponse "
        "arrives before ReadyForQuery",
        [(query("LISTEN lg_chan; NOTIFY lg_chan, 'hello payload'"), b"Z")],
        version,
    )
    await session_vector(
        "session_error",
        "errors: division by zero in a simple query, then a Parse of bad SQL in the "
        "extended protocol (ErrorResponse, then ReadyForQuery after Sync)",
        [
            (query("SELECT 1/0"), b"Z"),
            (parse("", "SELEC 1", []) + bind("", "", [], []) + execute("", 0) + SYNC, b"Z"),
        ],
        version,
    )
    await session_vector(
        "session_multi_statement",
        "one Query carrying five statements, with semicolons inside a string and a "
        "dollar-quoted string; an empty query",
        [
            (
                query(
                    "SELECT 1 AS a; SELECT 'x;y' AS b; SELECT $$p;q$$ AS c; "
                    "CREATE TEMP TABLE lg_m (i int); INSERT INTO lg_m VALUES (1), (2)"
                ),
                b"Z",
            ),
            (query(""), b"Z"),
        ],
        version,
    )
    await session_vector(
        "session_notice",
        "a NoticeResponse raised by a DO block",
        [(query("DO $$BEGIN RAISE NOTICE 'lg notice %', 42; END$$"), b"Z")],
        version,
    )
    await session_vector(
        "session_large_rows",
        "80 rows of 1000 bytes each: DataRows that span the server's reads",
        [
            (
                query("SELECT g, repeat(chr(97 + g % 26), 1000) FROM generate_series(1, 80) AS g"),
                b"Z",
            )
        ],
        version,
    )


# --- handshakes against real servers, driven by BackendHandshake -------------------------


async def backend_vector(
    name: str,
    description: str,
    host: str,
    port: int,
    backend: dict[str, Any],
    client: tuple[int, list[tuple[str, str]]],
    version: str,
) -> None:
    from ledgergate.wire.pg import messages as m
    from ledgergate.wire.pg.events import BackendReady, Fail, SendToServer, ServerData
    from ledgergate.wire.pg.handshake import BackendHandshake

    cs = m.StartupMessage(client[0], tuple((k.encode(), v.encode()) for k, v in client[1]))
    hs = BackendHandshake(
        user=backend["user"],
        password=backend["password"],
        database=backend["database"],
        client=cs,
        sslmode=backend["sslmode"],
        nonce=bytes.fromhex(backend["nonce"]),
        connection=backend["connection"],
    )
    c = await Conn.open(host, port)
    steps: list[dict[str, str]] = []
    pending = hs.start()
    outcome: Any = None
    while outcome is None:
        for a in pending:
            if isinstance(a, SendToServer):
                steps.append({"send": a.data.hex()})
                await c.send(a.data)
            elif isinstance(a, BackendReady | Fail):
                outcome = a
            else:
                raise AssertionError(a)
        if outcome is not None:
            break
        data = await asyncio.wait_for(c.r.read(65536), 10)
        if not data:
            raise ConnectionError("server closed")
        steps.append({"recv": data.hex()})
        pending = hs.feed(ServerData(data, 0))
    c.w.close()
    # The independent reading: the server's bytes after the SSL answer, as messages.
    recv = b"".join(bytes.fromhex(s["recv"]) for s in steps if "recv" in s)
    if backend["sslmode"] != "disable":
        assert recv[:1] == b"N"
        recv = recv[1:]
    msgs = frames(recv)
    expect: dict[str, Any] = {"s2c_messages": [t for t, _, _ in msgs]}
    if any(t == "E" for t, _, _ in msgs):
        expect["outcome"] = "fail"
        expect["error"] = next(fields(b) for t, b, _ in msgs if t == "E")
    else:
        expect["outcome"] = "ready"
        k = next(b for t, b, _ in msgs if t == "K")
        expect["pid"] = struct.unpack_from("!I", k)[0]
        expect["secret"] = k[4:].hex()
        expect["greeting"] = b"".join(r for t, _, r in msgs if t in "SN").hex()
        expect["parameters"] = {
            cstrings(b)[0].decode(): cstrings(b)[1].decode() for t, b, _ in msgs if t == "S"
        }
        expect["negotiate"] = b"".join(r for t, _, r in msgs if t == "v").hex()
        expect["status"] = next(b for t, b, _ in msgs if t == "Z").decode()
    write(
        name,
        {
            "description": description,
            "source": SOURCE.format(version=version),
            "backend": backend,
            "client_startup": {"version": client[0], "params": client[1]},
            "steps": steps,
            "expect": expect,
        },
    )
    assert expect["outcome"] == ("fail" if name.endswith("wrong_password") else "ready"), outcome


def backend(user: str, password: str | None, sslmode: str) -> dict[str, Any]:
    # A fixed nonce makes the client's SCRAM messages reproducible on replay.
    return {
        "user": user,
        "password": password,
        "database": "postgres",
        "sslmode": sslmode,
        "nonce": bytes(range(1, 19)).hex(),
        "connection": "app",
    }


PSQL_CLIENT = (
    196608,
    [
        ("user", "alice"),
        ("database", "app"),
        ("application_name", "psql"),
        ("client_encoding", "UTF8"),
    ],
)


async def handshakes(version: str) -> None:
    from tests.integration.pgcluster import PgCluster

    await backend_vector(
        "handshake_trust",
        "trust auth, no TLS (sslmode=disable): AuthenticationOk at once",
        *TRUST,
        backend("postgres", None, "disable"),
        PSQL_CLIENT,
        version,
    )
    await backend_vector(
        "handshake_protocol_3_2",
        "the client asked for protocol 3.2 and a _pq_ option: PostgreSQL 15 answers "
        "NegotiateProtocolVersion before AuthenticationOk",
        *TRUST,
        backend("postgres", None, "disable"),
        (0x0003_0002, [("user", "alice"), ("database", "app"), ("_pq_.lg_option", "on")]),
        version,
    )
    pw = "Backend-s3cret-pw"
    for auth, name, desc in (
        (
            "scram-sha-256",
            "handshake_scram",
            "SCRAM-SHA-256; sslmode=prefer and the server "
            "answers N (TLS off), so the exchange continues in plaintext",
        ),
        ("md5", "handshake_md5", "md5 auth, sslmode=prefer answered N"),
        ("password", "handshake_cleartext", "cleartext password auth, sslmode=prefer answered N"),
    ):
        with PgCluster(auth=auth, tls=False) as cl:  # type: ignore[arg-type]
            cl.create_role("lg_backend_svc", pw)
            await backend_vector(
                name,
                desc,
                cl.host,
                cl.port,
                backend("lg_backend_svc", pw, "prefer"),
                PSQL_CLIENT,
                version,
            )
            if auth == "scram-sha-256":
                await backend_vector(
                    "handshake_scram_wrong_password",
                    "SCRAM with a wrong held password: the server ends with 28P01",
                    cl.host,
                    cl.port,
                    backend("lg_backend_svc", "not-the-Pw-99", "prefer"),
                    PSQL_CLIENT,
                    version,
                )


# --- what a real psql sends to a gateway --------------------------------------------------


async def frontend_psql() -> None:
    """psql (sslmode=prefer) against a fake server that answers N to SSLRequest, asks for
    a cleartext password, then refuses it."""
    reads: list[bytes] = []
    done = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = b""
        state = 0
        while True:
            chunk = await r.read(65536)
            if not chunk:
                break
            reads.append(chunk)
            buf += chunk
            if state == 0 and len(buf) >= 8:  # SSLRequest
                buf = buf[8:]
                w.write(b"N")
                state = 1
            if state == 1 and len(buf) >= 4 and len(buf) >= struct.unpack("!I", buf[:4])[0]:
                buf = buf[struct.unpack("!I", buf[:4])[0] :]
                w.write(build(b"R", struct.pack("!I", 3)))
                state = 2
            if state == 2 and len(buf) >= 5 and len(buf) >= 1 + struct.unpack("!I", buf[1:5])[0]:
                w.write(build(b"E", b"SFATAL\x00C28P01\x00Mnope\x00\x00"))
                await w.drain()
                w.close()
                break
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = "lg_tok_EXAMPLE-token"
    proc = await asyncio.create_subprocess_exec(
        "psql",
        "-X",
        "-w",
        "-d",
        f"host=127.0.0.1 port={port} user=alice dbname=app sslmode=prefer gssencmode=disable "
        "application_name=psql",
        "-c",
        "SELECT 1",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.wait_for(done.wait(), 10)
    await proc.wait()
    server.close()
    out = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    write(
        "frontend_psql",
        {
            "description": "what psql sends with sslmode=prefer when the server answers N to "
            "SSLRequest and asks for a cleartext password",
            "source": f"{out}, captured by tests/vectors/pg/capture.py",
            "reads": [r.hex() for r in reads],
            "expect": {
                "user": "alice",
                "database": "app",
                "password": env["PGPASSWORD"],
            },
        },
    )


async def main() -> None:
    c = await Conn.open(*TRUST)
    await c.send(startup(196608, [("user", "postgres"), ("database", "postgres")]))
    greeting = b"".join(await c.until(b"Z"))
    await c.close()
    params = {cstrings(b)[0]: cstrings(b)[1] for t, b, _ in frames(greeting) if t == "S"}
    version = params[b"server_version"].decode()
    await sessions(version)
    await handshakes(version)
    await frontend_psql()


if __name__ == "__main__":
    asyncio.run(main())
