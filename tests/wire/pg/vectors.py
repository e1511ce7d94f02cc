"""Load the PostgreSQL vectors (tests/vectors/pg/*.json) and cut byte streams into reads.

The vectors are real captures (see tests/vectors/pg/capture.py for how each was
recorded); byte fields are hex. Every decoder test feeds them three ways: whole, one byte
at a time, and with trailing bytes; the server direction of the relay is also fed at
every split point and at random splits.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.handshake import BackendHandshake

DIR = Path(__file__).resolve().parents[2] / "vectors" / "pg"


@cache
def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DIR / f"{name}.json").read_text())
    return doc


def names(prefix: str) -> list[str]:
    return sorted(p.stem for p in DIR.glob(f"{prefix}*.json"))


SESSIONS = names("session_")
HANDSHAKES = names("handshake_")


def client_bytes(v: dict[str, Any]) -> bytes:
    return b"".join(bytes.fromhex(e["c2s"]) for e in v["exchanges"])


def server_reads(v: dict[str, Any]) -> list[bytes]:
    """The server's bytes read by read, as the capturing socket received them."""
    return [bytes.fromhex(r) for e in v["exchanges"] for r in e["s2c"]]


def server_bytes(v: dict[str, Any]) -> bytes:
    return b"".join(server_reads(v))


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def two_ways(data: bytes) -> Iterator[list[bytes]]:
    """Every split of ``data`` into two reads (the first may be empty)."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def random_splits(data: bytes, rng: random.Random, most: int = 40) -> list[bytes]:
    """``data`` cut at up to ``most`` random points (reads are never empty)."""
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(most, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def make_backend(v: dict[str, Any], sslmode: str | None = None) -> BackendHandshake:
    """The BackendHandshake a captured handshake vector describes (``sslmode`` overrides)."""
    b, cs = v["backend"], v["client_startup"]
    client = m.StartupMessage(
        cs["version"], tuple((k.encode(), x.encode()) for k, x in cs["params"])
    )
    return BackendHandshake(
        user=b["user"],
        password=b["password"],
        database=b["database"],
        client=client,
        sslmode=sslmode or b["sslmode"],
        nonce=bytes.fromhex(b["nonce"]),
        connection=b["connection"],
    )
