"""A real syslog receiver for the tests: rsyslogd from Debian in the foreground, taking
RFC 5425 syslog over TCP (TLS with a throwaway CA, or plain) on a loopback port and
writing every message it receives to one file, one line each:
``<received time> <hostname> <app> <procid> <msgid> <structured data> <message>``.

`Rsyslog(tls=...)` starts it (``port``, ``out``, ``ca`` for the client), waits until the
port answers, and stops it (and deletes its directory) on ``stop()``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pgcluster import free_port
from tests.integration.procs import stop_group
from tests.integration.s3server import make_tls

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
START_TIMEOUT_S = 20.0

_TEMPLATE = (
    'template(name="lgraw" type="string" string="%timegenerated:::date-rfc3339% '
    '%hostname% %app-name% %procid% %msgid% %structured-data% %msg%\\n")'
)


class Rsyslog:
    def __init__(self, *, tls: bool = True) -> None:
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="lg-rsyslog-"))
        self.port = 0
        self.out = self.dir / "received.log"
        self.ca: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        lines = [f'global(workDirectory="{self.dir}" maxMessageSize="64k")']
        if self.tls:
            t = make_tls(self.dir / "tls")
            self.ca = t.ca
            lines.append(
                f'global(DefaultNetstreamDriverCAFile="{t.ca}" '
                f'DefaultNetstreamDriverCertFile="{t.cert}" '
                f'DefaultNetstreamDriverKeyFile="{t.key}")'
            )
            lines.append(
                'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                'StreamDriver.AuthMode="anon")'
            )
        else:
            lines.append('module(load="imtcp")')
        lines.append(f'input(type="imtcp" address="127.0.0.1" port="{self.port}")')
        lines.append(_TEMPLATE)
        lines.append(f'*.* action(type="omfile" file="{self.out}" template="lgraw")')
        return "\n".join(lines) + "\n"

    def start(self) -> Rsyslog:
        self.port = free_port()
        conf = self.dir / "rsyslog.conf"
        conf.write_text(self._config())
        log = (self.dir / "rsyslogd.log").open("wb")
        self._proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"rsyslogd exited: {(self.dir / 'rsyslogd.log').read_text()[-2000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("rsyslogd did not listen in time") from None
                time.sleep(0.05)

    def received(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self) -> None:
        stop_group(self._proc)
        self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def rsyslog() -> Iterator[Rsyslog]:
    """A receiver over TLS, for one test."""
    r = Rsyslog(tls=True).start()
    try:
        yield r
    finally:
        r.stop()
