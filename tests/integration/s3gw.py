"""A gateway in front of a real S3 server (versitygw) and the clients users point at it.

`S3Gateway` starts a ``ledgergate serve`` with one ``s3`` connection (``logs``) to an
`S3Server`, issues access keys through the CLI as an admin would, and builds boto3
clients (and environments for the aws CLI, rclone and curl) aimed at the gateway's
HTTPS listener. Reading the ledger back goes through the store, as ``sessions show``
does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.integration.gateway import Gateway, free_port
from tests.integration.s3server import S3Server


class S3Gateway:
    def __init__(
        self,
        workdir: Path,
        s3: S3Server,
        *,
        tls: bool = True,
        connection: dict[str, Any] | None = None,
        extra_connections: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.s3 = s3
        self.http_port = free_port()
        self.tls = tls
        conn = {
            "name": "logs",
            "type": "s3",
            "endpoint": s3.endpoint,
            "region": s3.region,
            "credentials": {
                "access_key_id": s3.access_key,
                "secret_access_key": "env:LG_TEST_S3_SECRET",
            },
            **(connection or {}),
        }
        if s3.tls:
            conn.setdefault("ca_file", str(s3.ca_cert_path))
        more = dict(extra or {})
        listeners = more.pop("listeners", {})
        self.gw = Gateway(
            workdir,
            [conn, *(extra_connections or [])],
            env={"LG_TEST_S3_SECRET": s3.secret_key},
            extra={
                "listeners": {
                    "http": {"address": f"127.0.0.1:{self.http_port}", "tls": tls},
                    **listeners,
                },
                **more,
            },
        )

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.http_port}"

    @property
    def ca(self) -> str:
        return str(self.gw.data_dir / "tls" / "server.crt")

    def start(self) -> S3Gateway:
        self.gw.start()
        return self

    def stop(self) -> None:
        self.gw.stop()

    def key(self, identity: str = "etl", ttl: str = "1h", *more: str) -> tuple[str, str]:
        """Issue an access key through the CLI; (key id, secret)."""
        out = self.gw.cli(
            "token",
            "create",
            "--identity",
            identity,
            "--kind",
            "service",
            "--ttl",
            ttl,
            "--s3",
            *more,
        )
        lines = dict(line.split("=", 1) for line in out.stdout.strip().splitlines() if "=" in line)
        return lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"]

    def token_id(self, key_id: str) -> str:
        db = self.gw.db()
        try:
            return str(
                db.execute("SELECT token_id FROM access_keys WHERE key_id=?", (key_id,)).fetchone()[
                    0
                ]
            )
        finally:
            db.close()

    def client(self, key: tuple[str, str], **config: Any) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            region_name=self.s3.region,
            verify=self.ca if self.tls else True,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                **config,
            ),
        )

    def aws_env(self, key: tuple[str, str]) -> dict[str, str]:
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": key[0],
            "AWS_SECRET_ACCESS_KEY": key[1],
            "AWS_DEFAULT_REGION": self.s3.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_CA_BUNDLE": self.ca,
        }

    def indexed(self, timeout: float = 10.0) -> None:
        self.gw.indexed(timeout)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every entry in the store (once indexed), as documents, in stream order."""
        return self.gw.entries(kind)
