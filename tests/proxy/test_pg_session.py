"""A relaying session ended from the gateway's side (identity re-checks, access windows):
one ``session.terminated`` entry however many re-checks race, the FATAL error at the
next server message boundary."""

from __future__ import annotations

import asyncio
from typing import Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.recording import SessionRecorder
from ledgergate.proxy.pg_session import PgSession
from ledgergate.wire.pg.events import ServerData


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


class Sink:
    congested = False

    def __init__(self) -> None:
        self.drafts: list[Draft] = []

    def submit(self, drafts: list[Draft], on_commit: Any = None) -> None:
        self.drafts += drafts


class Gateway:
    def __init__(self) -> None:
        self.sink = Sink()
        self.cancel_registry: dict[Any, Any] = {}


def relaying_session(gw: Gateway) -> PgSession:
    s = PgSession(gw)  # type: ignore[arg-type]
    s.recorder = SessionRecorder({"session_id": s.session_id}, "metadata")
    s.ct, s.st = Transport(), Transport()
    s.relaying = True
    return s


def test_racing_re_checks_end_a_session_once() -> None:
    async def run() -> tuple[PgSession, Gateway]:
        gw = Gateway()
        s = relaying_session(gw)
        # half of a DataRow is forwarded: the end waits for the rest of it
        row = b"D" + (10).to_bytes(4, "big") + b"\x00\x01" + (0).to_bytes(4, "big")
        s._dispatch(s.relay.feed(ServerData(row[:7], 1)))
        s.end("identity disabled")
        s.end("identity disabled")  # the second re-check, before the boundary
        assert not s.closed and s.relay.ending
        s.on_server_data(row[7:] + b"Z\x00\x00\x00\x05I")
        return s, gw

    s, gw = asyncio.run(run())
    term = [d for d in gw.sink.drafts if d.kind == "session.terminated"]
    assert [d.fields["reason"] for d in term] == ["identity disabled"]
    assert s.closed and s.ct.closed  # type: ignore[attr-defined]
    sent = b"".join(s.ct.sent)  # type: ignore[attr-defined]
    # the whole DataRow, then the FATAL error; what the server sent after it is not relayed
    row = b"D" + (10).to_bytes(4, "big") + b"\x00\x01" + (0).to_bytes(4, "big")
    assert sent.startswith(row) and sent[len(row) : len(row) + 1] == b"E"
    assert b"session ended: identity disabled" in sent and b"Z\x00\x00\x00\x05I" not in sent
