"""The ledgergate configuration model: one YAML document, validated.

Owns the shape of the configuration and its defaults; pure (no file or environment
access: secrets given as ``env:VAR`` or ``file:PATH`` are resolved by ``services.config``).
Validation errors name the offending key, e.g. ``connections.0.sslmode``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Config",
    "ConfigError",
    "Connection",
    "Credentials",
    "LedgerSettings",
    "PostgresListener",
    "parse_config",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_NS = {
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 86400 * 1_000_000_000,
    "w": 7 * 86400 * 1_000_000_000,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the bad key."""


def parse_duration(text: str | int) -> int:
    """Parse ``30s``, ``15m``, ``8h``, ``7d``, ``2w`` (bare integers are seconds) into ns."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return text * 1_000_000_000
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 15m, 8h, 7d)")
    return int(m.group(1)) * _UNIT_NS[m.group(2) or "s"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Strict):
    """The backend credential the gateway holds. ``password`` is ``env:VAR``, ``file:PATH``
    or a literal; it is resolved at start and never echoed anywhere."""

    user: str
    password: str | None = None

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"Credentials(user={self.user!r}, password=<hidden>)"

    __str__ = __repr__


class Connection(_Strict):
    name: str
    type: Literal["postgres"] = "postgres"
    address: str  # host:port
    database: str
    credentials: Credentials
    sslmode: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    sslrootcert: str | None = None  # CA bundle for verify-full (default: system store)
    recording: Literal["metadata", "redacted", "full"] = "redacted"
    connect_timeout: float = 10.0
    # Backend authentication methods the gateway accepts (libpq's require_auth); unset:
    # any. ``[scram-sha-256]`` refuses a downgrade to cleartext or MD5.
    require_auth: list[Literal["scram-sha-256", "md5", "password", "none"]] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be 1-63 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v)
        return v

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]


def split_address(v: str, default_port: int = 5432) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` → (host, port)."""
    host, port = v, default_port
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            raise ValueError(f"{v!r} is not host:port")
        host = v[1:end]
        rest = v[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{v!r} is not host:port")
            port = int(rest[1:])
    elif v.count(":") == 1:
        host, p = v.rsplit(":", 1)
        if not p.isdigit():
            raise ValueError(f"{v!r} is not host:port")
        port = int(p)
    if not host or not (0 < port < 65536):
        raise ValueError(f"{v!r} is not host:port")
    return host, port


class PostgresListener(_Strict):
    address: str = "0.0.0.0:15432"
    # Cleartext password over a plaintext connection exposes the token: allowed only
    # when this says so (loopback demos, tests).
    allow_plaintext: bool = False
    # A client must finish its startup handshake within this many seconds.
    handshake_timeout: float = 15.0

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v, 15432)
        return v


class Listeners(_Strict):
    postgres: PostgresListener = PostgresListener()


class TlsSettings(_Strict):
    cert: str | None = None  # default: <data_dir>/tls/server.crt, generated on first start
    key: str | None = None


class LedgerSettings(_Strict):
    stream: str | None = None  # default: gateway@<hostname>
    checkpoint_every_entries: int = Field(1000, ge=1)
    checkpoint_every_seconds: float = Field(10.0, gt=0)
    # fsync every commit (survive power loss); off still survives kill -9 of the gateway.
    fsync: bool = False
    # How many chunk entries may wait for the group commit before sessions are paused.
    queue_depth: int = Field(10_000, ge=16)
    key: str | None = None  # default: <data_dir>/keys/ledger.ed25519


class Config(_Strict):
    data_dir: str = "./ledgergate-data"
    store: str | None = None  # default: sqlite:///<data_dir>/ledgergate.db
    gateway_name: str | None = None  # default: the host name
    listeners: Listeners = Listeners()
    tls: TlsSettings = TlsSettings()
    ledger: LedgerSettings = LedgerSettings()
    connections: list[Connection] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for i, c in enumerate(self.connections):
            if c.name in seen:
                raise ValueError(f"connections.{i}.name: duplicate connection name {c.name!r}")
            seen.add(c.name)
        return self

    def connection(self, name: str) -> Connection | None:
        for c in self.connections:
            if c.name == name:
                return c
        return None


def parse_config(doc: object) -> Config:
    """Validate a parsed YAML document; raise ConfigError naming each bad key."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("the configuration must be a mapping of keys to values")
    try:
        return Config.model_validate(doc)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{loc}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
