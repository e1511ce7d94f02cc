"""One SSH session channel relayed to the host: a shell, an exec command or SFTP.

Owns, per session channel a client opens through the gateway:
- what the client asks (pty-req, env, then shell, exec or subsystem), decided by policy
  (``core.policy.ssh``) and, where a review rule holds it, by a reviewer; a refusal is
  told on the channel's stderr with exit status 1 (SFTP: the channel closes) and
  recorded as ``decision.block``;
- the ``command`` entry, durable before the request reaches the host; then the host's
  channel, opened with the same terminal, size and modes;
- the relay both ways, each read a ``chunk`` entry (``core.recording_ssh``) submitted
  before the bytes are passed on, with flow control both ways (a side whose window is
  full pauses the other's reads); window changes, signals and breaks passed on;
- the close: the host's exit status (or signal) becomes the client's and closes the
  command (``command.result``).
A ledger that cannot be written ends the channel (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import asyncssh

from ledgergate.core.policy.engine import Decision
from ledgergate.core.policy.ssh import check_channel, check_exec
from ledgergate.proxy.review import ReviewAsk
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.proxy.ssh.sftp_relay import SftpRelay

if TYPE_CHECKING:
    from ledgergate.proxy.ssh.server import SshClientConn

__all__ = ["ChannelRelay"]

log = logging.getLogger("ledgergate.ssh")
now_ns = time.time_ns

# Bytes a channel holds from the client while its host channel is being opened (or its
# command reviewed); past this the client's reads pause.
MAX_EARLY = 1 << 20
# Environment variables passed on to the host (as OpenSSH's default AcceptEnv).
PASS_ENV = ("LANG", "LC_")
# The largest data packet the host may send the gateway on a channel (asyncssh offers
# 32 KiB). An SFTP DATA reply to a 32 KiB READ is 13 bytes longer, so at 32 KiB the host
# splits every reply in two packets, each decrypted and handled on its own; at 128 KiB
# a reply is one packet. (bench/ssh_compare.py, two A/B runs: the gateway at 0.77-0.83x
# the bastion's sftp get against 0.67-0.78x before; CPU per GiB within the noise.)
HOST_MAX_PACKET = 128 * 1024


class _HostSide(asyncssh.SSHClientSession[bytes]):
    """The host's end of a relayed channel: what the host sends goes to the client."""

    def __init__(self, relay: ChannelRelay) -> None:
        self.relay = relay

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.relay.from_host(data, datatype)

    def eof_received(self) -> bool:
        self.relay.host_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.relay.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.relay.exit_signal = (signal, core_dumped, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.host_closed(exc)

    def pause_writing(self) -> None:  # the host reads slower than the client sends
        self.relay.pause_client("host")

    def resume_writing(self) -> None:
        self.relay.resume_client("host")


class ChannelRelay(asyncssh.SSHServerSession[bytes]):
    """The client's end of one session channel (asyncssh calls these on its loop)."""

    def __init__(self, client: SshClientConn, number: int) -> None:
        self.client = client
        self.number = number  # the channel's number in this connection, for the ledger
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.host: asyncssh.SSHClientChannel[bytes] | None = None
        self.op: str | None = None
        self.command: str | None = None
        self.subsystem: str | None = None
        self.pty: tuple[str, tuple[int, int, int, int], Any] | None = None
        self.cmd_seq = 0
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str] | None = None
        self._early: list[tuple[bytes, bool]] = []  # (data, eof) before the host is there
        self._early_size = 0
        self._pauses: set[str] = set()  # why the client's reads are paused
        self._host_paused = False  # the client's window is full: the host's reads wait
        self._result_written = False
        self._done = False
        self._task: asyncio.Task[None] | None = None
        self.sftp: SftpRelay | None = None

    # -- what the client asks ----------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self.pty = (term_type, term_size, term_modes)
        return True

    def shell_requested(self) -> bool:
        self.op = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.op, self.command = "exec", command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.op, self.subsystem = "sftp", subsystem
        return True

    def session_started(self) -> None:
        self._task = self.client.spawn(self._start())

    # -- starting --------------------------------------------------------------------------
    async def _start(self) -> None:
        c = self.client
        s = c.session
        if c.closed or s is None or s.closed or s.ended is not None:
            self._refuse("ledgergate: the session is ending", record=False)
            return
        assert self.chan is not None and self.op is not None
        fields: dict[str, Any] = {}
        if self.command is not None:
            fields["text"] = self.command
        if self.subsystem is not None:
            fields["subsystem"] = self.subsystem
        if self.pty is not None:
            term, size, _ = self.pty
            fields["pty"] = {"term": term, "cols": size[0], "rows": size[1]}
        decision = self._decide()
        try:
            if not decision.allowed:
                s.sink.submit(
                    [
                        s.recorder.blocked_request(
                            now_ns(),
                            self.op,
                            self.number,
                            decision.rule,
                            decision.message or "",
                            **fields,
                        )
                    ]
                )
                self._refuse(f"ledgergate: refused by rule {decision.rule}: {decision.message}")
                return
            if decision.review is not None and not await self._reviewed(decision):
                return
            self.cmd_seq, draft = s.recorder.request(now_ns(), self.op, self.number, **fields)
            await s.sink.commit([draft])
        except LedgerUnavailable:
            self._refuse("ledgergate: the audit ledger is unavailable: nothing was run")
            return
        try:
            await self._open_host()
        except (OSError, asyncssh.Error) as e:
            log.info("ssh %s: host channel refused: %s", s.session_id, e)
            self._finish_result("failed", reason=f"the host refused the channel: {e}")
            self._refuse(f"ledgergate: the host refused: {e}", record=False)
            return
        early, self._early = self._early, []
        self._early_size = 0
        for data, eof in early:
            if eof:
                self.client_eof_now()
            else:
                self.to_host(data)
        if self._early_size < MAX_EARLY:
            self.resume_client("early")

    @property
    def interactive(self) -> bool:
        """A terminal a person types into: a shell, or any command run with a PTY
        (``ssh -t host bash``), recorded and decided as a shell."""
        return self.op == "shell" or (self.op == "exec" and self.pty is not None)

    def _decide(self) -> Decision:
        s = self.client.session
        assert s is not None
        sp = s.policy()
        if self.op == "exec" and self.command is not None:
            d = check_exec(sp, self.command, unparseable=s.unparseable)
            if d.allowed and self.interactive:
                shell = check_channel(sp, "shell")
                if not shell.allowed:
                    return shell
            return d
        return check_channel(sp, self.op or "")

    async def _reviewed(self, decision: Decision) -> bool:
        """Hold the request until a reviewer decides; True when approved."""
        s = self.client.session
        assert s is not None and self.chan is not None and decision.review is not None
        desk = s.reviews
        sp = s.policy()
        rule = sp.review_rule(decision.review) if sp is not None else None
        if desk is None or rule is None:
            message = "this command needs a review, and reviews are not available"
            text = {"text": self.command} if self.command is not None else {}
            s.sink.submit(
                [
                    s.recorder.blocked_request(
                        now_ns(), self.op or "exec", self.number, decision.review, message,
                        **text,
                    )
                ]
            )  # fmt: skip
            self._refuse(f"ledgergate: {message}")
            return False
        ask = ReviewAsk(
            session_id=s.session_id,
            identity=s.facts.identity,
            groups=s.facts.groups,
            connection=s.conn_name,
            rule=rule,
            op=self.op or "exec",
            statement=self.command or self.op or "",
            params=(),
        )

        def notice(text: str) -> None:
            if self.chan is not None and not self._done:
                with contextlib.suppress(OSError):
                    self.chan.write_stderr(f"ledgergate: {text}\r\n".encode())

        answer = await desk.ask(ask, notice)
        if not answer.approved:
            message = answer.message or "the review was not approved"
            fields: dict[str, Any] = {"text": self.command} if self.command is not None else {}
            if answer.review_id is not None:
                fields["review"] = {"id": answer.review_id}
            s.sink.submit(
                [
                    s.recorder.blocked_request(
                        now_ns(), self.op or "exec", self.number, rule.id, message, **fields
                    )
                ]
            )
            self._refuse(f"ledgergate: {message}")
            return False
        return True

    async def _open_host(self) -> None:
        s = self.client.session
        assert s is not None and self.chan is not None
        env = {
            k: v
            for k, v in self.chan.get_environment().items()
            if any(k == p or (p.endswith("_") and k.startswith(p)) for p in PASS_ENV)
        }
        kw: dict[str, Any] = {"encoding": None, "env": env or ()}
        if self.pty is not None:
            term, size, modes = self.pty
            kw.update(term_type=term, term_size=size, term_modes=modes, request_pty="force")
        else:
            kw["request_pty"] = False
        if self.op == "exec":
            kw["command"] = self.command
        elif self.op == "sftp":
            kw["subsystem"] = self.subsystem
        kw["max_pktsize"] = HOST_MAX_PACKET
        host, _ = await s.upstream.create_session(lambda: _HostSide(self), **kw)
        if self._done:
            host.close()
            return
        self.host = host
        if self.op == "sftp":
            self.sftp = SftpRelay(self, s)

    def _refuse(self, message: str, record: bool = True) -> None:
        """Tell the client why, and end the channel with exit status 1."""
        self._done = True
        chan = self.chan
        if chan is None:
            return
        with contextlib.suppress(OSError):
            # on an SFTP channel too: stderr is apart from the SFTP stream, and sftp and
            # scp print it
            chan.write_stderr((message + "\r\n").encode("utf-8", "replace"))
            chan.exit(1)

    # -- the relay -------------------------------------------------------------------------
    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._done:
            return
        if self.host is None:
            self._early.append((bytes(data), False))
            self._early_size += len(data)
            if self._early_size >= MAX_EARLY:
                self.pause_client("early")
            return
        self.to_host(data)

    def to_host(self, data: bytes) -> None:
        s = self.client.session
        assert s is not None and self.host is not None
        if self.sftp is not None:
            try:
                self.sftp.from_client(data)
            except LedgerUnavailable:
                self.client.fail_closed()
            self._ledger_pressure()
            return
        try:
            s.sink.submit(
                [s.recorder.data(now_ns(), self.cmd_seq, self.number, "stdin", data, keep=False)]
            )
        except LedgerUnavailable:
            self.client.fail_closed()
            return
        self.host.write(data)
        self._ledger_pressure()

    def eof_received(self) -> bool:
        if self.host is None:
            self._early.append((b"", True))
        else:
            self.client_eof_now()
        return True

    def client_eof_now(self) -> None:
        if self.sftp is not None:
            self.sftp.eof()  # behind the requests still waiting for the ledger
            return
        if self.host is not None:
            with contextlib.suppress(OSError):
                self.host.write_eof()

    def from_host(self, data: bytes, datatype: asyncssh.DataType) -> None:
        s = self.client.session
        if s is None or self.chan is None or self._done:
            return
        stream = "stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout"
        if self.sftp is not None and stream == "stdout":
            try:
                self.sftp.from_host(data)
            except LedgerUnavailable:
                self.client.fail_closed()
            self._ledger_pressure()
            return
        keep = s.recorder.level == "full" or (self.interactive and s.recorder.level != "metadata")
        try:
            s.sink.submit(
                [s.recorder.data(now_ns(), self.cmd_seq, self.number, stream, data, keep=keep)]
            )
        except LedgerUnavailable:
            self.client.fail_closed()
            return
        with contextlib.suppress(OSError):
            if stream == "stderr":
                self.chan.write_stderr(data)
            else:
                self.chan.write(data)
        self._ledger_pressure()

    def host_eof(self) -> None:
        if self.chan is not None and not self._done:
            with contextlib.suppress(OSError):
                self.chan.write_eof()

    def protocol_error(self, why: str) -> None:
        """The channel's stream broke its protocol: recorded, the channel ends."""
        log.info("ssh %s channel %d: %s", self.client.conn_id, self.number, why)
        self._finish_result("failed", reason=why)
        self.end(why, "channel closed")

    def host_closed(self, exc: Exception | None) -> None:
        if self.sftp is not None:
            self.sftp.finish()
            self.sftp = None
        if self._done:
            return
        self._done = True
        if self.exit_signal is not None:
            sig, core, msg = self.exit_signal
            self._finish_result("signal", exit_signal=sig, core_dumped=core)
            with contextlib.suppress(OSError):
                if self.chan is not None:
                    self.chan.exit_with_signal(sig, core, msg)
        elif self.exit_status is not None:
            self._finish_result("ok" if self.exit_status == 0 else "failed",
                                exit_status=self.exit_status)  # fmt: skip
            with contextlib.suppress(OSError):
                if self.chan is not None:
                    self.chan.exit(self.exit_status)
        else:
            self._finish_result("closed", reason=str(exc) if exc else "the host closed it")
            with contextlib.suppress(OSError):
                if self.chan is not None:
                    self.chan.close()

    def _finish_result(self, outcome: str, **fields: Any) -> None:
        s = self.client.session
        if s is None or self.cmd_seq == 0 or self._result_written:
            return
        self._result_written = True
        with contextlib.suppress(LedgerUnavailable):
            s.sink.submit(
                [s.recorder.result(now_ns(), self.cmd_seq, self.op or "", outcome, **fields)]
            )

    # -- the terminal ----------------------------------------------------------------------
    def _terminal_event(self, kind: str, **fields: Any) -> bool:
        """Record a terminal event (resize, signal, break) before it is passed on; False
        when the ledger cannot take it (then it is not passed on)."""
        s = self.client.session
        if s is None or not self.cmd_seq:
            return self.host is None  # nothing reaches the host before the command does
        try:
            s.sink.submit(
                [
                    s.recorder.event(
                        now_ns(), kind,
                        command={"seq": self.cmd_seq, "op": self.op, "protocol": "ssh"},
                        **fields,
                    )
                ]
            )  # fmt: skip
        except LedgerUnavailable:
            self.client.fail_closed()
            return False
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if not self._terminal_event("terminal.resize", terminal={"cols": width, "rows": height}):
            return
        if self.host is not None:
            with contextlib.suppress(OSError):
                self.host.change_terminal_size(width, height, pixwidth, pixheight)
        elif self.pty is not None:
            self.pty = (self.pty[0], (width, height, pixwidth, pixheight), self.pty[2])

    def signal_received(self, signal: str) -> None:
        if self.host is not None and self._terminal_event("terminal.signal", signal=signal):
            with contextlib.suppress(OSError):
                self.host.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.host is not None and self._terminal_event("terminal.break", msec=msec):
            with contextlib.suppress(OSError):
                self.host.send_break(msec)
            return True
        return False

    # -- flow control and ending -------------------------------------------------------------
    def pause_client(self, why: str) -> None:
        if not self._pauses and self.chan is not None:
            self.chan.pause_reading()
        self._pauses.add(why)

    def resume_client(self, why: str) -> None:
        if why in self._pauses:
            self._pauses.discard(why)
            if not self._pauses and self.chan is not None:
                self.chan.resume_reading()

    def _ledger_pressure(self) -> None:
        """The ledger lags: both directions wait until it catches up (nothing is
        dropped, and memory stays bounded)."""
        s = self.client.session
        if s is None or not s.sink.congested or "ledger" in self._pauses:
            return
        self.pause_client("ledger")
        if self.host is not None:
            self.host.pause_reading()

        def resume() -> None:
            self.resume_client("ledger")
            if self.host is not None and not self._host_paused:
                self.host.resume_reading()

        s.sink.when_uncongested(resume)

    def pause_writing(self) -> None:  # the client reads slower than the host sends
        self._host_paused = True
        if self.host is not None:
            self.host.pause_reading()

    def resume_writing(self) -> None:
        self._host_paused = False
        if self.host is not None and "ledger" not in self._pauses:
            self.host.resume_reading()

    def end(self, why: str, what: str = "session ended") -> None:
        """The session (or this channel) ends: the person is told why on the terminal,
        the channel closes."""
        self._finish_result("terminated", reason=why)
        if self.chan is not None and not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                self.chan.write_stderr(f"\r\nledgergate: {what}: {why}\r\n".encode())
                self.chan.exit(255)
        if self.host is not None:
            with contextlib.suppress(OSError):
                self.host.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish_result("closed", reason="the client closed the channel" if exc is None
                            else f"the client's channel was lost: {exc}")  # fmt: skip
        self._done = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.sftp is not None:
            self.sftp.finish()
            self.sftp = None
        if self.host is not None:
            with contextlib.suppress(OSError):
                self.host.close()
        self.client.channel_closed(self)
