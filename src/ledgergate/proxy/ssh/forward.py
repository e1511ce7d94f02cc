"""Port forwarding (``ssh -L``, direct-tcpip) that a policy rule allows, relayed and
recorded.

Owns one forwarded TCP connection: the client asks the gateway to reach HOST:PORT as
seen from the host; only an allow rule naming ``port-forward`` and the destination
(``paths: ["db.internal:5432"]``) lets it through (``core.policy.ssh.check_forward``),
else it is refused and recorded. An allowed one is a ``command`` entry (``op``
``port-forward``, its destination) made durable before the host is asked to connect;
the host's end is a direct-tcpip channel of the gateway's own login on the host; every
read each way is a ``chunk`` entry (stream ``forward``); the close is its
``command.result``. Flow control both ways, as for session channels.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import asyncssh

from ledgergate.proxy.sink import LedgerUnavailable

if TYPE_CHECKING:
    from ledgergate.proxy.ssh.server import SshSession

__all__ = ["ForwardRelay", "open_forward"]

now_ns = time.time_ns


class _HostEnd(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, relay: ForwardRelay) -> None:
        self.relay = relay

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.relay.from_host(data)

    def eof_received(self) -> bool:
        if self.relay.chan is not None:
            with contextlib.suppress(OSError):
                self.relay.chan.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.finish("closed by the host" if exc is None else str(exc))

    def pause_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.resume_reading()


class ForwardRelay(asyncssh.SSHTCPSession[bytes]):
    """The client's end of one forwarded connection."""

    def __init__(self, s: SshSession, cmd_seq: int, channel: int, where: str) -> None:
        self.s, self.cmd_seq, self.number, self.where = s, cmd_seq, channel, where
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.host: asyncssh.SSHTCPChannel[bytes] | None = None
        self.bytes = {"c2s": 0, "s2c": 0}
        self._done = False
        self._early: list[bytes] = []  # what the host sent before the client's end opened

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        early, self._early = self._early, []
        for data in early:
            with contextlib.suppress(OSError):
                chan.write(data)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._record(data, "stdin") and self.host is not None:
            with contextlib.suppress(OSError):
                self.host.write(data)

    def from_host(self, data: bytes) -> None:
        if not self._record(data, "stdout"):
            return
        if self.chan is None:
            self._early.append(bytes(data))  # bounded by the host channel's window
            return
        with contextlib.suppress(OSError):
            self.chan.write(data)

    def _record(self, data: bytes, stream: str) -> bool:
        self.bytes["c2s" if stream == "stdin" else "s2c"] += len(data)
        keep = self.s.recorder.level == "full"
        try:
            self.s.sink.submit(
                [self.s.recorder.data(now_ns(), self.cmd_seq, self.number, stream, data,
                                      keep=keep, forward=self.where)]
            )  # fmt: skip
        except LedgerUnavailable:
            self.s.client.fail_closed()
            return False
        return True

    def eof_received(self) -> bool:
        if self.host is not None:
            with contextlib.suppress(OSError):
                self.host.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.host is not None:
            self.host.pause_reading()

    def resume_writing(self) -> None:
        if self.host is not None:
            self.host.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.host is not None:
            with contextlib.suppress(OSError):
                self.host.close()
        self.finish("closed by the client" if exc is None else str(exc))

    def finish(self, why: str) -> None:
        if self._done:
            return
        self._done = True
        if self.chan is not None:
            with contextlib.suppress(OSError):
                self.chan.close()
        with contextlib.suppress(LedgerUnavailable):
            self.s.sink.submit(
                [
                    self.s.recorder.result(
                        now_ns(), self.cmd_seq, "port-forward", "closed", reason=why,
                        bytes_c2s=self.bytes["c2s"], bytes_s2c=self.bytes["s2c"],
                    )
                ]
            )  # fmt: skip


async def open_forward(
    s: SshSession, channel: int, host: str, port: int, orig: tuple[str, int]
) -> ForwardRelay:
    """The allowed forward to ``host:port``: recorded (durably), then the host's end
    opened; raises ``asyncssh.ChannelOpenError`` when the host cannot connect."""
    where = f"{host}:{port}"
    seq, draft = s.recorder.request(
        now_ns(), "port-forward", channel, target=where, origin=f"{orig[0]}:{orig[1]}"
    )
    await s.sink.commit([draft])
    relay = ForwardRelay(s, seq, channel, where)
    try:
        host_chan, _ = await s.upstream.create_connection(lambda: _HostEnd(relay), host, port)
    except asyncssh.ChannelOpenError as e:
        relay.finish(f"the host could not connect: {e.reason}")
        raise
    relay.host = host_chan
    return relay
