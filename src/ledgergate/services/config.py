"""Loading the configuration file and resolving what it points to.

Owns: reading the YAML file, resolving ``env:VAR`` / ``file:PATH`` secrets, and the
default locations under the data directory (store, TLS certificate, ledger key). Never
logs or returns a secret in an error message.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from ledgergate.core.config import (
    Config,
    ConfigError,
    Connection,
    Credentials,
    parse_config,
    split_address,
)
from ledgergate.store import Store, open_store

__all__ = ["Settings", "load_settings", "resolve_secret"]

DEFAULT_CONFIG_NAMES = ("ledgergate.yaml", "ledgergate.yml")


def resolve_secret(spec: str | None, *, what: str, whole: bool = False) -> str | None:
    """``env:VAR`` → the variable, ``file:PATH`` → the file's first line (``whole``: all
    of it, for a private key), else the literal.

    Errors name ``what`` (e.g. ``connections.demo.credentials.password``) and the source,
    never the value.
    """
    if spec is None:
        return None
    if spec.startswith("env:"):
        var = spec[4:]
        val = os.environ.get(var)
        if val is None:
            raise ConfigError(f"{what}: environment variable {var} is not set")
        return val
    if spec.startswith("file:"):
        path = Path(spec[5:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None
        if whole:
            return text
        return text.splitlines()[0] if text else ""
    return spec


@dataclass(frozen=True, slots=True)
class Settings:
    """A validated configuration plus the paths derived from it."""

    config: Config
    source: Path | None  # the file it came from, if any
    data_dir: Path
    store_url: str  # never holds a password (that is ``store_password``)
    tls_cert: Path
    tls_key: Path
    ledger_key: Path
    payload_key: Path
    gateway_name: str
    stream: str
    # This process's place among ``listeners.postgres.workers`` relay processes, and what
    # its supervisor handed it: the per-run key cancel keys are routed by, and the
    # listening sockets it bound (see ``services.workers``).
    worker: int = 0
    worker_key: bytes = dataclasses.field(default=b"", repr=False)
    listen_fds: tuple[int, ...] = ()
    store_password: str | None = dataclasses.field(default=None, repr=False)

    def open_store(self, *, durable: bool = False) -> Store:
        """A new handle on the configured store (one per thread, see ``store.base``)."""
        return open_store(self.store_url, durable=durable, password=self.store_password)

    def for_worker(
        self, worker: int, key: bytes = b"", listen_fds: tuple[int, ...] = ()
    ) -> Settings:
        """The settings of relay process ``worker``: the first keeps the gateway's ledger
        stream, the others append to ``<stream>.w<N>`` (a stream has one writer)."""
        stream = self.stream if worker == 0 else f"{self.stream}.w{worker}"
        return dataclasses.replace(
            self, stream=stream, worker=worker, worker_key=key, listen_fds=listen_fds
        )

    @property
    def run_dir(self) -> Path:
        """Sockets the relay processes of one gateway reach each other on."""
        return self.data_dir / "run"

    @property
    def key_name(self) -> str:
        """The ledger signing key's name in signed notes and verifier keys."""
        return self.config.ledger.key_name or f"ledgergate/{self.gateway_name}"

    @property
    def journal_root(self) -> Path:
        """Where the gateway's ledger stream is journaled before the store indexes it."""
        return self.data_dir / "journal"

    @property
    def access_key_key(self) -> Path:
        """The key S3 access-key secrets are sealed under in the store."""
        return self.data_dir / "keys" / "access-keys.key"

    @property
    def ssh_user_ca(self) -> Path:
        """The SSH user CA's key: it signs the certificates people get after login."""
        return self.data_dir / "keys" / "ssh_user_ca"

    @property
    def cli_stream(self) -> str:
        """The stream the CLI's admin actions (tokens...) are appended to."""
        return f"cli@{self.gateway_name}"

    def backend_password(self, conn: Connection) -> str | None:
        """The held password (None when there is none, or the agent holds it)."""
        if not isinstance(conn.credentials, Credentials):
            return None
        return resolve_secret(
            conn.credentials.password, what=f"connections.{conn.name}.credentials.password"
        )


def load_settings(
    path: str | os.PathLike[str] | None = None, *, data_dir: str | None = None
) -> Settings:
    """Read ``path`` (or ./ledgergate.yaml if present, else the embedded default)."""
    source: Path | None = None
    doc: object = {}
    if path is None:
        for name in DEFAULT_CONFIG_NAMES:
            if Path(name).is_file():
                path = name
                break
    if path is not None:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {source}: {e.strerror}") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} is not valid YAML: {e}") from None
    cfg = parse_config(doc)
    base = source.parent if source is not None else Path.cwd()
    ddir = Path(data_dir) if data_dir else Path(cfg.data_dir)
    if not ddir.is_absolute():
        ddir = (base / ddir).resolve()
    store = cfg.store or f"sqlite:///{ddir / 'ledgergate.db'}"
    gw = cfg.gateway_name or socket.gethostname()
    return Settings(
        config=cfg,
        source=source,
        data_dir=ddir,
        store_url=store,
        store_password=resolve_secret(cfg.store_password, what="store_password"),
        tls_cert=Path(cfg.tls.cert) if cfg.tls.cert else ddir / "tls" / "server.crt",
        tls_key=Path(cfg.tls.key) if cfg.tls.key else ddir / "tls" / "server.key",
        ledger_key=Path(cfg.ledger.key) if cfg.ledger.key else ddir / "keys" / "ledger.ed25519",
        payload_key=ddir / "keys" / "payload.key",
        gateway_name=gw,
        stream=cfg.ledger.stream or f"gateway@{gw}",
    )


def api_public_url(settings: Settings, bound_port: int | None = None) -> str:
    """The REST API's address as people reach it (links in notifications, logins)."""
    api = settings.config.listeners.api
    if api.public_url:
        return api.public_url.rstrip("/")
    if api.address is None:
        return ""
    host, port = split_address(api.address, 18443)
    if host in ("0.0.0.0", "::"):
        host = settings.gateway_name
    return f"{'https' if api.tls else 'http'}://{host}:{bound_port or port}"
