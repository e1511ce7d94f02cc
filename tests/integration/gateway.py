"""A real ``ledgergate serve`` process for integration tests.

Starts the gateway as users do (the console script with a YAML file), waits until it
listens, mints tokens through the CLI, and can stop it gracefully or with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.storedb import StoreDb
from tests.storeserver import store_settings

BIN = Path(sys.executable).parent / "ledgergate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    def __init__(
        self,
        workdir: Path,
        connections: list[dict[str, Any]],
        *,
        env: dict[str, str] | None = None,
        allow_plaintext: bool = False,
        ledger: dict[str, Any] | None = None,
        handshake_timeout: float = 5.0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.stream = (ledger or {}).get("stream") or "gateway@test-gw"
        self.config_path = workdir / "ledgergate.yaml"
        self.log_path = workdir / "gateway.log"
        self.env = {**os.environ, **(env or {})}
        doc: dict[str, Any] = {
            "data_dir": str(workdir / "data"),
            "gateway_name": "test-gw",
            "listeners": {
                # a test that stops a gateway with sessions open need not wait for them
                "drain_timeout": 0.5,
                "postgres": {
                    "address": f"127.0.0.1:{self.port}",
                    "allow_plaintext": allow_plaintext,
                    "handshake_timeout": handshake_timeout,
                },
            },
            "ledger": {
                "checkpoint_every_entries": 200,
                "checkpoint_every_seconds": 2,
                **(ledger or {}),
            },
            "connections": connections,
            **store_settings(workdir / "data"),
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        workdir.mkdir(parents=True, exist_ok=True)
        self._doc = doc
        self.config_path.write_text(yaml.safe_dump(doc))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def store_path(self) -> Path:
        """The SQLite store's file (only when the suite runs on SQLite)."""
        return self.data_dir / "ledgergate.db"

    @property
    def store_url(self) -> str:
        return str(self._doc.get("store") or f"sqlite://{self.store_path}")

    @property
    def store_password(self) -> str | None:
        pw = self._doc.get("store_password")
        return None if pw is None else str(pw)

    def db(self) -> StoreDb:
        """Raw SQL on this gateway's store (either engine); close it after use."""
        return StoreDb(self.store_url, self.store_password)

    def store_bytes(self) -> bytes:
        """Every byte the store holds, for "this secret is nowhere" checks."""
        with self.db() as db:
            return db.dump()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=120,
        )

    def token(
        self, identity: str = "alice", kind: str = "user", ttl: str = "1h", *more: str
    ) -> str:
        out = self.cli(
            "token", "create", "--identity", identity, "--kind", kind, "--ttl", ttl, *more
        )
        return out.stdout.strip().splitlines()[-1].strip()

    def start(self, timeout: float = 30.0) -> Gateway:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "-c", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()}")
            if b"listening for PostgreSQL" in self.log_path.read_bytes()[offset:]:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"gateway did not start: {self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self.log.close()
        return rc

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def dsn(
        self,
        token: str,
        connection: str = "app",
        user: str = "alice",
        sslmode: str = "require",
        **extra: str,
    ) -> str:
        parts = [
            f"host=127.0.0.1 port={self.port} dbname={connection} user={user} "
            f"password={token} sslmode={sslmode}"
        ]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def url(
        self, token: str, connection: str = "app", user: str = "alice", scheme: str = "postgresql"
    ) -> str:
        return f"{scheme}://{user}:{token}@127.0.0.1:{self.port}/{connection}?sslmode=require"

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every session that opened has its session.close entry in the store
        and the store holds everything the gateway journaled (a command is durable in the
        journal before it is forwarded; the store is indexed from it moments later)."""

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            journaled = self.journaled_size()
            db = self.db()
            try:
                opened, closed = db.execute(
                    "SELECT sum(CASE WHEN kind='session.open' THEN 1 ELSE 0 END), "
                    "sum(CASE WHEN kind='session.close' THEN 1 ELSE 0 END) FROM ledger_entries"
                ).fetchone()
                stored = db.execute(
                    "SELECT count(*) FROM ledger_entries WHERE stream=?", (self.stream,)
                ).fetchone()[0]
            finally:
                db.close()
            if (opened or 0) == (closed or 0) and stored >= journaled:
                return
            time.sleep(0.02)
        raise TimeoutError("sessions did not close in the ledger")

    def journaled_size(self) -> int:
        """1 + the highest seq of the gateway's stream in its journal (0 if none)."""
        from ledgergate.core.ledger.chain import entry_link
        from ledgergate.core.ledger.journal import EntryRecord, decode

        size = 0
        for seg in sorted((self.data_dir / "journal").glob("*/*.lgj")):
            try:
                records = decode(seg.read_bytes()).records
            except FileNotFoundError:
                continue  # indexed and deleted meanwhile
            for rec in records:
                if type(rec) is EntryRecord:
                    stream, seq, _ = entry_link(rec.canonical)
                    if stream == self.stream:
                        size = max(size, seq + 1)
        return size

    def indexed(self, timeout: float = 10.0) -> None:
        """Wait until the store holds everything the gateway journaled (unlike
        ``settle``, open sessions may stay open: HTTP clients keep connections alive)."""

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            db = self.db()
            try:
                stored = db.execute(
                    "SELECT count(*) FROM ledger_entries WHERE stream=?", (self.stream,)
                ).fetchone()[0]
            finally:
                db.close()
            if stored >= self.journaled_size():
                return
            time.sleep(0.02)
        raise TimeoutError("the store did not catch up with the journal")

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every entry in the store (once indexed), as documents, in stream order."""
        import json

        self.indexed()
        db = self.db()
        try:
            q = "SELECT canonical FROM ledger_entries"
            args: tuple[str, ...] = ()
            if kind is not None:
                q += " WHERE kind=?"
                args = (kind,)
            rows = db.execute(q + " ORDER BY stream, seq", args).fetchall()
        finally:
            db.close()
        return [json.loads(r[0]) for r in rows]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")
