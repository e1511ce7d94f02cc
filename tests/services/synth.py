"""Synthetic ledgers for tests: PostgreSQL backend messages and the session entries the
gateway writes (see the entry contract in the services.sessions docstring)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.keys import (
    PayloadCipher,
    load_or_create_ledger_signer,
    load_or_create_payload_key,
)
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store import Store, open_store
from ledgergate.wire.pg.frames import build
from tests.storedb import StoreDb
from tests.storeserver import store_for

INT4, TEXT = 23, 25
T0 = 1_790_000_000 * 10**9  # a fixed wall-clock origin (ns)


# -- backend messages ------------------------------------------------------------------------
def row_description(cols: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack("!h", len(cols))
    for name, oid in cols:
        body += name.encode() + b"\x00" + struct.pack("!ihihih", 0, 0, oid, -1, -1, 0)
    return build(b"T", body)


def data_row(values: Sequence[str | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            body += struct.pack("!i", -1)
        else:
            b = v.encode()
            body += struct.pack("!i", len(b)) + b
    return build(b"D", body)


def command_complete(tag: str) -> bytes:
    return build(b"C", tag.encode() + b"\x00")


def ready() -> bytes:
    return build(b"Z", b"I")


def error_response(message: str, code: str = "42P01") -> bytes:
    body = b"SERROR\x00VERROR\x00C" + code.encode() + b"\x00M" + message.encode() + b"\x00\x00"
    return build(b"E", body)


def query_message(sql: str) -> bytes:
    return build(b"Q", sql.encode() + b"\x00")


def result(cols: Sequence[tuple[str, int]], rows: Sequence[Sequence[str | None]]) -> bytes:
    out = row_description(cols) + b"".join(data_row(r) for r in rows)
    return out + command_complete(f"SELECT {len(rows)}") + ready()


# -- session entries ---------------------------------------------------------------------------
def base(session_id: str, subject: str | None, connection: str) -> dict[str, Any]:
    ident = {"kind": "user", "subject": subject, "groups": []} if subject else None
    return {
        "session_id": session_id,
        "connection": connection,
        "identity": ident,
        "source": {"ip": "127.0.0.1", "port": 50000},
    }


def session_drafts(
    session_id: str,
    subject: str,
    connection: str,
    t0: int,
    recording: str,
    exchanges: Sequence[tuple[str, Sequence[bytes]]],
    *,
    step_ns: int = 10**9,
) -> list[Draft]:
    """auth.ok, session.open, then per (sql, result chunks): a command and its chunks,
    then session.close. Entries are ``step_ns`` apart."""
    b = base(session_id, subject, connection)
    full = recording == "full"
    t = t0
    out = [Draft(t, "auth.ok", {**b, "token_id": "tok_test", "claimed_user": subject})]
    t += step_ns
    out.append(
        Draft(
            t,
            "session.open",
            {
                **b,
                "client": {
                    "application_name": "psql",
                    "user": subject,
                    "database": connection,
                    "protocol": "3.0",
                },
                "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
                "backend": {"pid": 4242, "tls": False},
                "recording": recording,
            },
        )
    )
    rows_total = 0
    nbytes = 0
    for i, (sql, chunks) in enumerate(exchanges, 1):
        t += step_ns
        raw = query_message(sql)
        cmd: dict[str, Any] = {
            "seq": i,
            "op": "query",
            "text": None if recording == "metadata" else sql,
            "text_sha256": sha256(sql.encode()).hexdigest(),
            "statement": None,
            "portal": None,
            "params": {"count": 0, "sha256": sha256(b"").hexdigest()},
        }
        payloads: tuple[tuple[str, bytes], ...] = ()
        if full:
            d = sha256(raw).hexdigest()
            cmd["payload"] = d
            payloads = ((d, raw),)
        out.append(Draft(t, "command", {**b, "command": cmd}, payloads))
        for j, data in enumerate(chunks, 1):
            t += step_ns
            digest = sha256(data).hexdigest()
            rows = data.count(b"D\x00")  # good enough for synthetic data
            rows_total += rows
            nbytes += len(data)
            chunk: dict[str, Any] = {
                "seq": j,
                "size": len(data),
                "rows": rows,
                "sha256_in": digest,
                "sha256_out": digest,
            }
            cp: tuple[tuple[str, bytes], ...] = ()
            if full:
                chunk["payload"] = digest
                cp = ((digest, data),)
            out.append(
                Draft(
                    t,
                    "chunk",
                    {**b, "direction": "s2c", "chunk": chunk, "outcome": "forwarded"},
                    cp,
                )
            )
    t += step_ns
    stats = {
        "commands": len(exchanges),
        "chunks": sum(len(c) for _, c in exchanges),
        "bytes_c2s": 0,
        "bytes_s2c": nbytes,
        "rows": rows_total,
    }
    out.append(Draft(t, "session.close", {**b, "outcome": "client closed", "stats": stats}))
    return out


def chunk_drafts(n: int, t0: int = T0, session_id: str = "s_bench") -> list[Draft]:
    """``n`` chunk-like entries, as the gateway writes for result data."""
    b = base(session_id, "alice", "demo")
    out = []
    for i in range(n):
        digest = sha256(i.to_bytes(8, "big")).hexdigest()
        out.append(
            Draft(
                t0 + i * 1000,
                "chunk",
                {
                    **b,
                    "direction": "s2c",
                    "chunk": {
                        "seq": i,
                        "size": 8192,
                        "rows": 100,
                        "sha256_in": digest,
                        "sha256_out": digest,
                    },
                    "tags": ["SELECT 100"],
                    "outcome": "forwarded",
                },
            )
        )
    return out


# -- a data directory ---------------------------------------------------------------------------
class Ledger:
    """A store, key and payload key under ``root`` laid out as ``services.config`` does
    for ``data_dir: root`` and ``gateway_name: gw``."""

    def __init__(self, root: Path, gateway: str = "gw") -> None:
        self.root = root
        self.gateway = gateway
        self.url, self.password = store_for(root)
        self.db_path = root / "ledgergate.db"  # the SQLite engine's file
        self.key_path = root / "keys" / "ledger.ed25519"
        self.signer: Signer = load_or_create_ledger_signer(self.key_path, f"ledgergate/{gateway}")
        self.cipher = PayloadCipher(load_or_create_payload_key(root / "keys" / "payload.key"))
        self.stream = f"gateway@{gateway}"

    def store(self) -> Store:
        return open_store(self.url, password=self.password)

    def db(self) -> StoreDb:
        """Raw SQL on this ledger's store (either engine); close it after use."""
        return StoreDb(self.url, self.password)

    def writer(self, stream: str | None = None, **kw: Any) -> LedgerWriter:
        kw.setdefault("cipher", self.cipher)
        return LedgerWriter.open(self.store(), stream or self.stream, self.signer, **kw)

    def write(self, drafts: Sequence[Draft], *, batch: int = 7, **kw: Any) -> None:
        w = self.writer(**kw)
        for i in range(0, len(drafts), batch):
            part = drafts[i : i + batch]
            w.append(part, part[-1].ts_ns)
        w.close(drafts[-1].ts_ns if drafts else T0)
