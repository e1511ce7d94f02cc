#!/usr/bin/env python3
"""The reference Python relay for the benchmark: bytes in, bytes out, nothing else.

    byte_relay.py LISTEN_PORT BACKEND_PORT

A TCP relay on uvloop with asyncio Protocol callbacks (PERF-NOTES.md's fastest Python
relay): each read is written to the other side as it arrived, with flow control (a full
socket buffer on one side pauses reading on the other), and no parsing, no ledger, no
authentication of its own (the client authenticates to PostgreSQL through it). It is the
``python-relay`` path of pgbench_compare.py: what any relay written in Python costs on
this machine, the floor under the gateway's figures. Binds 127.0.0.1 only; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop


class _Half(asyncio.Protocol):
    """One socket; ``peer`` is the other one's protocol."""

    def __init__(self, peer: _Half | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # client bytes before the backend is connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Client(_Half):
    def __init__(self, backend_port: int) -> None:
        super().__init__()
        self.backend_port = backend_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, backend = await loop.create_connection(
                lambda: _Half(self), "127.0.0.1", self.backend_port
            )
        except OSError:
            self.transport.close()
            return
        self.peer = backend
        for data in self.pending:
            backend.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()
        if self.transport.is_closing():
            backend.transport.close()  # type: ignore[union-attr]
        else:
            self.transport.resume_reading()


async def serve(listen_port: int, backend_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(backend_port), "127.0.0.1", listen_port)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with server:
        await stop


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
