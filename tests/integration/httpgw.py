"""A gateway in front of the test REST API (`HttpApi`) and the clients users point at it.

`HttpGateway` starts a ``ledgergate serve`` with one ``http`` connection (``api``) whose
held credential (bearer, basic or a named header, as the API wants) comes from the
environment, and the HTTPS listener on a free port. Clients call
``https://localhost:PORT/api/<path>`` with a ledgergate token and trust the gateway's own
certificate. Reading the ledger back goes through the store, as ``sessions show`` does.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.gateway import Gateway, free_port
from tests.integration.httpapi import HttpApi

# Environment variables the held credential is read from (``env:`` in the config).
ENV_TOKEN = "LG_TEST_HTTP_TOKEN"
ENV_PASSWORD = "LG_TEST_HTTP_PASSWORD"
ENV_VALUE = "LG_TEST_HTTP_HEADER"


def held_auth(api: HttpApi, kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the connection's ``auth`` section, its environment) for ``kind`` of held
    credential: ``bearer`` (``api.token``), ``basic`` (``api.basic``), ``header``."""
    if kind == "bearer":
        return {"type": "bearer", "token": f"env:{ENV_TOKEN}"}, {ENV_TOKEN: api.token}
    if kind == "basic":
        assert api.basic is not None, "the API was started without --basic"
        user, _, password = api.basic.partition(":")
        auth = {"type": "basic", "user": user, "password": f"env:{ENV_PASSWORD}"}
        return auth, {ENV_PASSWORD: password}
    if kind == "header":
        assert api.header is not None, "the API was started without --header"
        auth = {"type": "header", "header": api.header[0], "value": f"env:{ENV_VALUE}"}
        return auth, {ENV_VALUE: api.header[1]}
    raise ValueError(kind)


class HttpGateway:
    def __init__(
        self,
        workdir: Path,
        api: HttpApi,
        *,
        auth: str = "bearer",
        extra_auth: tuple[str, ...] = (),
        tls: bool = True,
        name: str = "api",
        connection: dict[str, Any] | None = None,
        listener: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``extra_auth``: more connections to the same API, ``<name>-<kind>``, each
        holding that kind of credential."""
        self.api = api
        self.name = name
        self.tls = tls
        self.http_port = free_port()
        conns, env = [], {}
        for conn_name, kind in [(name, auth), *((f"{name}-{k}", k) for k in extra_auth)]:
            section, more_env = held_auth(api, kind)
            env.update(more_env)
            conn = {"name": conn_name, "type": "http", "base_url": api.url, "auth": section}
            if api.tls:
                conn["ca_file"] = str(api.ca_cert_path)
            conn.update(connection or {})
            conns.append(conn)
        more = dict(extra or {})
        http = {"address": f"127.0.0.1:{self.http_port}", "tls": tls, **(listener or {})}
        listeners = {"http": http, **more.pop("listeners", {})}
        self.gw = Gateway(workdir, conns, env=env, extra={"listeners": listeners, **more})

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> HttpGateway:
        self.gw.start()
        return self

    def stop(self) -> None:
        self.gw.stop()

    # -- where clients go --------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.http_port}"

    def url(self, path: str, connection: str | None = None) -> str:
        """The gateway URL of ``path`` on the connection (``/api/reports``)."""
        return f"{self.endpoint}/{connection or self.name}{path}"

    @property
    def ca(self) -> str:
        return str(self.gw.data_dir / "tls" / "server.crt")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def client(self, token: str | None, connection: str | None = None, **kw: Any) -> httpx.Client:
        """An httpx client of the connection (base URL ``/<connection>``) sending
        ``token`` as a bearer token (none when None)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(
            base_url=self.url("", connection),
            verify=self.ssl_context() if self.tls else False,
            headers=headers,
            timeout=kw.pop("timeout", 30.0),
            **kw,
        )

    def curl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        """``curl`` with the gateway's certificate trusted (add the URL and options)."""
        return subprocess.run(
            ["curl", "-sS", "--cacert", self.ca, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    # -- tokens ------------------------------------------------------------------------------
    def token(
        self, identity: str = "alice", kind: str = "user", ttl: str = "1h", *more: str
    ) -> str:
        return self.gw.token(identity, kind, ttl, *more)

    def token_id(self, identity: str) -> str:
        rows = json.loads(self.gw.cli("token", "list", "--identity", identity, "--json").stdout)
        return str(rows[-1]["id"])

    # -- the ledger --------------------------------------------------------------------------
    def indexed(self, timeout: float = 10.0) -> None:
        self.gw.indexed(timeout)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every entry in the store (once indexed), as documents, in stream order."""
        return self.gw.entries(kind)

    def canonical(self) -> list[str]:
        """Every entry's canonical JSON as stored (for leak checks)."""
        self.indexed()
        db = self.gw.db()
        try:
            rows = db.execute("SELECT canonical FROM ledger_entries").fetchall()
        finally:
            db.close()
        return [r[0].decode() if isinstance(r[0], bytes) else str(r[0]) for r in rows]

    def of(self, kind: str, subject: str) -> list[dict[str, Any]]:
        """The ``kind`` entries of identity ``subject``."""
        return [
            e for e in self.entries(kind) if (e.get("identity") or {}).get("subject") == subject
        ]

    def wait_for(self, kind: str, subject: str, timeout: float = 10.0) -> dict[str, Any]:
        """The last ``kind`` entry of ``subject``, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.of(kind, subject)
            if got:
                return got[-1]
            time.sleep(0.1)
        raise AssertionError(f"no {kind} entry for {subject}")
