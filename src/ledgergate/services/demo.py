"""Throwaway demo backends for the embedded default: what ``ledgergate serve`` shows a
new user on a machine with no server of theirs.

Owns starting, and stopping at exit, a PostgreSQL cluster (when a server is installed
and nothing answers on 127.0.0.1:5432) and an S3-compatible server (versitygw, when
``scripts/install-s3server`` built it), each on a free loopback port with generated
credentials, and the demo connections to them. The PostgreSQL cluster runs as the
``postgres`` user when the gateway runs as root (initdb refuses root), so it lives in a
directory that user owns (``/var/tmp/ledgergate-demo-<id>``) rather than under the
gateway's private data directory; everything else lives under ``<data_dir>/demo``.
Credentials are generated per start and never printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ledgergate.core.config import (
    AnyConnection,
    Connection,
    Credentials,
    S3Connection,
    S3Credentials,
)
from ledgergate.wire.s3 import sigv4

__all__ = ["DemoBackends", "versitygw_binary"]

log = logging.getLogger("ledgergate.demo")
PGBIN = Path(os.environ.get("LEDGERGATE_PGBIN", "/usr/lib/postgresql/15/bin"))
VERSITYGW = "versitygw-v1.8.0"
# How long a demo server may take to answer after it was started.
START_TIMEOUT_S = 30.0


def versitygw_binary() -> Path | None:
    """The versitygw that ``scripts/install-s3server`` built, if it did."""
    cache = os.environ.get("LEDGERGATE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ledgergate"
    )
    p = Path(cache) / VERSITYGW / "versitygw"
    return p if os.access(p, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def _wait(port: int, proc: subprocess.Popen[bytes] | None, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(port):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"the demo {what} did not start:\n{tail}")


def _create_bucket(port: int, key: str, secret: str, bucket: str) -> None:
    """CreateBucket, signed with the server's root key (SigV4, ``wire.s3``)."""
    target = f"/{bucket}".encode()
    headers = [(b"host", f"127.0.0.1:{port}".encode())]
    signed, _ = sigv4.sign_headers(
        b"PUT",
        target,
        headers,
        access_key=key,
        secret=secret,
        region="us-east-1",
        service="s3",
        amz_date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        payload_hash=sigv4.EMPTY_SHA256,
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("PUT", target.decode(), headers={k.decode(): v.decode() for k, v in signed})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"the demo bucket was not created: {r.status} {body[:300]!r}")
    finally:
        conn.close()


class DemoBackends:
    """Start with ``start()`` (returns the demo connections), stop with ``stop()``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / "demo"
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._pg_stop: list[str] | None = None
        self._pg_user: dict[str, Any] = {}
        self.s3: dict[str, str] | None = None  # endpoint, bucket (for the banner)

    def start(self) -> list[AnyConnection]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        out: list[AnyConnection] = []
        pg = self._postgres()
        if pg is not None:
            out.append(pg)
        s3 = self._s3()
        if s3 is not None:
            out.append(s3)
        return out

    # -- PostgreSQL ----------------------------------------------------------------------
    def _postgres(self) -> Connection | None:
        if _answers(5432):  # a local server: the demo uses it, as before
            return Connection(
                name="demo",
                address="127.0.0.1:5432",
                database="postgres",
                credentials=Credentials(user="postgres", password=None),
                sslmode="prefer",
            )
        if not (PGBIN / "initdb").exists():
            log.info("no PostgreSQL server installed: the demo has no database")
            return None
        root = os.geteuid() == 0
        if root:
            pw = pwd.getpwnam("postgres")
            tag = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
            base = Path(f"/var/tmp/ledgergate-demo-{tag}")
            self._pg_user = {"user": pw.pw_uid, "group": pw.pw_gid}
        else:
            base = self.dir / "postgres"
        data = base / "data"
        password = secrets.token_urlsafe(24)
        port = _free_port()
        shutil.rmtree(base, ignore_errors=True)  # throwaway: a fresh cluster per start
        base.mkdir(mode=0o700, parents=True)
        if root:
            os.chown(base, self._pg_user["user"], self._pg_user["group"])
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if root:
            os.chown(pwfile, self._pg_user["user"], self._pg_user["group"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        subprocess.run(
            [
                str(PGBIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=base,
            **self._pg_user,
        )
        pwfile.unlink()
        logf = base / "postgres.log"
        subprocess.run(
            [
                str(PGBIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(logf),
                "-w",
                "-o",
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base}",
                "start",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=base,
            **self._pg_user,
        )
        self._pg_stop = [str(PGBIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
        self._pg_base = base
        _wait(port, None, "PostgreSQL", logf)
        return Connection(
            name="demo",
            address=f"127.0.0.1:{port}",
            database="postgres",
            credentials=Credentials(user="postgres", password=password),
            sslmode="disable",
            require_auth=["scram-sha-256"],
        )

    # -- S3 -------------------------------------------------------------------------------
    def _s3(self) -> S3Connection | None:
        binary = versitygw_binary()
        if binary is None:
            log.info("versitygw is not installed (scripts/install-s3server): no S3 demo")
            return None
        root = self.dir / "s3"
        shutil.rmtree(root, ignore_errors=True)
        (root / "data").mkdir(parents=True)
        (root / "meta").mkdir()
        key = "DEMO" + secrets.token_hex(8).upper()
        secret = secrets.token_urlsafe(30)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "ROOT_"))}
        env.update(ROOT_ACCESS_KEY_ID=key, ROOT_SECRET_ACCESS_KEY=secret)
        logf = root / "versitygw.log"
        with logf.open("ab") as out:
            proc = subprocess.Popen(
                [
                    str(binary),
                    "--port",
                    f"127.0.0.1:{port}",
                    "--region",
                    "us-east-1",
                    "posix",
                    "--sidecar",
                    str(root / "meta"),
                    str(root / "data"),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs.append(("versitygw", proc))
        _wait(port, proc, "S3 server", logf)
        _create_bucket(port, key, secret, "demo")
        os.environ["LEDGERGATE_DEMO_S3_SECRET"] = secret  # resolved as env: below
        self.s3 = {"endpoint": f"http://127.0.0.1:{port}", "bucket": "demo"}
        return S3Connection(
            name="demo-s3",
            type="s3",
            endpoint=f"http://127.0.0.1:{port}",
            credentials=S3Credentials(
                access_key_id=key, secret_access_key="env:LEDGERGATE_DEMO_S3_SECRET"
            ),
        )

    def stop(self) -> None:
        for _, proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self._procs.clear()
        if self._pg_stop is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
            subprocess.run(self._pg_stop, capture_output=True, env=env, **self._pg_user)
            shutil.rmtree(self._pg_base, ignore_errors=True)
            self._pg_stop = None
