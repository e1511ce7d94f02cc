"""Shared fixtures for the ledger core tests: vectors, a fixed signing key, and a
factory that builds a sealed stream with signed checkpoints."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.ledger import Chain, Checkpoint, Draft, SealedEntry, Signer, StreamState

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "ledger"
STREAM = "gw-test-1"
KEY_NAME = "ledgergate.test/ledger"
SEED = bytes(range(32))  # a fixed key keeps notes and failures reproducible


def chunk_draft(i: int) -> Draft:
    """A typical chunk entry: ten fields, three nested objects."""
    return Draft(
        ts_ns=1_732_300_000_000_000_000 + i * 1_000,
        kind="chunk",
        fields={
            "session_id": f"6f1c0e9a-8c4d-4b1e-9a3f-{i:012d}",
            "connection": "prod-db",
            "identity": {"kind": "user", "subject": "alice@example.com", "groups": ["dba"]},
            "source": {"ip": "10.1.2.3", "port": 54321},
            "direction": "server_to_client",
            "chunk": {"seq": i, "size": 8192, "sha256_in": "ab" * 32, "sha256_out": "ab" * 32},
            "outcome": "forwarded",
        },
    )


@dataclass
class Built:
    stream: str
    entries: list[SealedEntry]
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[int, bytes, bytes]]:
        return [(e.seq, e.canonical, e.entry_hash) for e in self.entries]

    def hashes(self) -> list[bytes]:
        return [e.entry_hash for e in self.entries]


@pytest.fixture(scope="session")
def vector() -> Callable[[str], Any]:
    def load(name: str) -> Any:
        return json.loads((VECTORS / name).read_text(encoding="utf-8"))

    return load


@pytest.fixture(scope="session")
def chunk() -> Callable[[int], Draft]:
    return chunk_draft


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer(KEY_NAME, Ed25519PrivateKey.from_private_bytes(SEED))


@pytest.fixture(scope="session")
def other_signer() -> Signer:
    return Signer("someone.else/ledger", Ed25519PrivateKey.from_private_bytes(bytes(32)))


@pytest.fixture(scope="session")
def build(signer: Signer) -> Callable[..., Built]:
    """build(n, checkpoints_at=(...), stream=STREAM) -> Built: n sealed chunk entries
    and a signed note for the tree at each size in ``checkpoints_at``."""

    def make(n: int, checkpoints_at: Sequence[int] = (), stream: str = STREAM) -> Built:
        chain = Chain(StreamState.genesis(stream))
        out = Built(stream, [])
        for i in range(n):
            out.entries.append(chain.seal(chunk_draft(i)))
            if i + 1 in checkpoints_at:
                cp = Checkpoint(stream, i + 1, chain.state.tree.root(), 1_000 + i)
                out.notes.append(signer.sign(cp))
        return out

    return make
