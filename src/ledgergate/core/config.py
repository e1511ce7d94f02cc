"""The ledgergate configuration model: one YAML document, validated.

Owns the shape of the configuration and its defaults; pure (no file or environment
access: secrets given as ``env:VAR`` or ``file:PATH`` are resolved by ``services.config``).
Validation errors name the offending key, e.g. ``connections.0.sslmode``.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ledgergate.core.policy.rules import PolicySettings

__all__ = [
    "CONNECTION_TYPES",
    "NOTIFY_EVENTS",
    "AgentHeld",
    "AnyConnection",
    "ApiListener",
    "Config",
    "ConfigError",
    "Connection",
    "Credentials",
    "FileWitness",
    "Grant",
    "HttpAuth",
    "HttpConnection",
    "HttpListener",
    "HttpsWitness",
    "IdentitySettings",
    "InsightsSettings",
    "LedgerSettings",
    "NotificationSettings",
    "NotifyEvent",
    "OidcSettings",
    "PostgresConnection",
    "PostgresListener",
    "RetentionRule",
    "Roles",
    "S3Connection",
    "S3Credentials",
    "S3Witness",
    "SamlSettings",
    "SiemSettings",
    "SshConnection",
    "SshCredentials",
    "SshListener",
    "SyslogWitness",
    "WebhookSettings",
    "Witness",
    "format_duration",
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


def parse_time(text: str, now_ns: int) -> int:
    """ISO 8601 (``2026-11-23``, ``2026-11-23T10:00:00Z``, ``...+02:00``; UTC when no
    offset), ``now``, or relative to ``now_ns`` (``-1h``, ``-30m``, ``-7d``) → ns since
    the epoch. Raises ValueError naming what it accepts."""
    t = text.strip()
    if t == "now":
        return now_ns
    if t.startswith("-"):
        try:
            got = now_ns - parse_duration(t[1:])
        except ValueError:
            raise ValueError(f"{text!r} is not a relative time (use e.g. -30m, -1h, -7d)") from None
        if got < 0:
            raise ValueError(f"{text!r} reaches back before 1970")
        return got
    try:
        when = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-11-23T10:00Z) nor relative (-1h)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    got = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    if got < 0:
        raise ValueError(f"{text!r} is before 1970")
    return got


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


def format_duration(ns: int) -> str:
    """``ns`` for people, to the second: ``45s``, ``30m``, ``1h30m``, ``2d``."""
    s = ns // 1_000_000_000
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s")]
    return "".join(f"{n}{u}" for n, u in parts if n) or "0s"


def _check_name(v: str) -> str:
    if not _NAME.match(v):
        raise ValueError("must be 1-63 letters, digits, '_', '.' or '-'")
    return v


# The name of a connection or a webhook: it appears in ledger entries, logs and URLs.
Name = Annotated[str, AfterValidator(_check_name)]


def _check_unique(names: list[str], key: str, what: str) -> None:
    """Refuse a name given twice in the list at ``key``, naming the second place."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{key}.{i}.name: duplicate {what} name {name!r}")
        seen.add(name)


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


class AgentHeld(_Strict):
    """``credentials: agent:NAME``: the credential stays with agent NAME (``ledgergate
    agent --credential``), which logs in to the server itself; the gateway never holds
    it."""

    agent: str = Field(min_length=1, max_length=200)


class _ConnectionBase(_Strict):
    """What every connection has, whatever its protocol."""

    name: Name
    recording: Literal["metadata", "redacted", "full"] = "redacted"
    connect_timeout: float = 10.0
    # A session on this connection ends when it has lasted this long (e.g. ``4h``),
    # whatever its token says; unset: only the token and the identity bound it.
    max_session: str | None = None
    # The agent (the name of its service identity) that carries this connection's
    # backend legs from inside a network the gateway cannot reach; the server's address
    # is then resolved on the agent's side (see ``ledgergate agent``).
    via: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("max_session")
    @classmethod
    def _max_session(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("must be a positive duration")
        return v

    @property
    def max_session_ns(self) -> int | None:
        return parse_duration(self.max_session) if self.max_session else None


class Connection(_ConnectionBase):
    """A PostgreSQL server (``type: postgres``, the default)."""

    type: Literal["postgres"] = "postgres"
    address: str  # host:port
    database: str
    credentials: Credentials | AgentHeld
    sslmode: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    sslrootcert: str | None = None  # CA bundle for verify-full (default: system store)
    # Backend authentication methods the gateway accepts (libpq's require_auth); unset:
    # any. ``[scram-sha-256]`` refuses a downgrade to cleartext or MD5.
    require_auth: list[Literal["scram-sha-256", "md5", "password", "none"]] | None = None

    @field_validator("credentials", mode="before")
    @classmethod
    def _agent_held(cls, v: object) -> object:
        if isinstance(v, str):
            agent = v.removeprefix("agent:")
            if agent == v or not agent:
                raise ValueError("must be {user, password} or agent:AGENT (held by an agent)")
            return {"agent": agent}
        return v

    @model_validator(mode="after")
    def _agent_login(self) -> Connection:
        if isinstance(self.credentials, AgentHeld):
            if self.via != self.credentials.agent:
                raise ValueError(
                    f"credentials: agent:{self.credentials.agent} needs "
                    f"via: {self.credentials.agent} (the agent that holds them carries the "
                    "connection)"
                )
            told = self.model_fields_set & {"sslmode", "sslrootcert", "require_auth"}
            if told:
                raise ValueError(
                    f"{', '.join(sorted(told))}: with credentials held by the agent, TLS to "
                    "the server and the login run on the agent (its --credential)"
                )
        return self

    @property
    def agent_login(self) -> bool:
        """The agent logs in to the server; the gateway holds no credential for it."""
        return isinstance(self.credentials, AgentHeld)

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


PostgresConnection = Connection


class S3Credentials(_Strict):
    """The access key the gateway signs with towards the storage; ``secret_access_key``
    is ``env:VAR``, ``file:PATH`` or a literal, resolved at start, never shown."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key=<hidden>)"

    __str__ = __repr__


def _check_base_url(v: str) -> str:
    check_http_url(v)
    parts = urlsplit(v)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must be scheme://host[:port][/path] (no query, fragment or user)")
    return v.rstrip("/")


class _HttpBackend(_ConnectionBase):
    # Verify the backend's TLS certificate (against ``ca_file``, or the system store).
    verify_tls: bool = True
    ca_file: str | None = None
    # A request must be answered (headers) within this many seconds.
    response_timeout: float = 300.0

    @property
    def scheme(self) -> str:
        return urlsplit(self.target_url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.target_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.target_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def base_path(self) -> str:
        return urlsplit(self.target_url).path.rstrip("/")

    @property
    def target_url(self) -> str:
        """The backend's URL (the S3 endpoint, the API's base URL)."""
        raise NotImplementedError


class S3Connection(_HttpBackend):
    """An S3-compatible object store (``type: s3``). Clients sign with a key ledgergate
    issued; the gateway checks it, then signs again with ``credentials``."""

    type: Literal["s3"]
    endpoint: str  # http(s)://host[:port]
    region: str = "us-east-1"
    # How the gateway addresses buckets at the storage: ``/bucket/key`` or
    # ``bucket.host/key``.
    addressing: Literal["path", "virtual"] = "path"
    credentials: S3Credentials
    # The buckets clients may reach (names or globs); unset: every bucket the key sees.
    buckets: list[str] | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _check_base_url(v)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", v):
            raise ValueError("must be a region name such as us-east-1")
        return v

    @property
    def target_url(self) -> str:
        return self.endpoint


class HttpAuth(_Strict):
    """The credential the gateway adds to every request towards an HTTP API: a bearer
    token, basic auth, a named header, or nothing. Values may be ``env:``/``file:``."""

    type: Literal["none", "bearer", "basic", "header"] = "none"
    token: str | None = None  # bearer
    user: str | None = None  # basic
    password: str | None = None  # basic
    header: str | None = None  # header: its name, e.g. X-Api-Key
    value: str | None = None  # header: its value

    @model_validator(mode="after")
    def _complete(self) -> HttpAuth:
        need = {
            "none": (),
            "bearer": ("token",),
            "basic": ("user", "password"),
            "header": ("header", "value"),
        }[self.type]
        for key in need:
            if not getattr(self, key):
                raise ValueError(f"auth type {self.type} needs {key}")
        if self.header is not None and not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", self.header):
            raise ValueError("header must be an HTTP header name")
        return self

    def __repr__(self) -> str:
        return f"HttpAuth(type={self.type!r}, <hidden>)"

    __str__ = __repr__


class HttpConnection(_HttpBackend):
    """An HTTP API (``type: http``): clients call ``/<name>/<path>`` on the gateway with
    their ledgergate token; the gateway calls ``base_url/<path>`` with ``auth``."""

    type: Literal["http"]
    base_url: str
    auth: HttpAuth = HttpAuth()

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        return _check_base_url(v)

    @property
    def target_url(self) -> str:
        return self.base_url


class KafkaCredentials(_Strict):
    """The SASL credential the gateway authenticates to the brokers with; ``password``
    is ``env:VAR``, ``file:PATH`` or a literal, resolved at start, never shown."""

    mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    user: str
    password: str

    def __repr__(self) -> str:
        return f"KafkaCredentials(mechanism={self.mechanism!r}, user={self.user!r}, <hidden>)"

    __str__ = __repr__


# Node ids are added to a connection's broker port base; KRaft clusters number brokers
# from 0 or 1 upwards, and a shared cluster past a few hundred brokers is out of scope.
MAX_KAFKA_NODE_ID = 999


class KafkaConnection(_ConnectionBase):
    """An Apache Kafka cluster (``type: kafka``). Clients bootstrap from ``listen`` and
    reach broker N through the gateway at ``advertised_host:broker_ports + N``; the
    gateway talks to the brokers with ``credentials`` (SASL), over TLS unless ``tls``
    is false."""

    type: Literal["kafka"]
    bootstrap: list[str] = Field(min_length=1)  # the brokers' host:port
    credentials: KafkaCredentials | None = None  # none: the brokers ask for no SASL
    tls: bool = True
    verify_tls: bool = True
    ca_file: str | None = None
    # Where clients bootstrap (the gateway's address for this cluster).
    listen: str
    # The host name clients use for the gateway in broker addresses (default: the
    # gateway's name, ``LEDGERGATE_GATEWAY_NAME`` or this machine's).
    advertised_host: str | None = None
    # Broker N is served on ``broker_ports + N`` (default: the ``listen`` port + 1).
    broker_ports: int | None = Field(None, ge=1, le=65535)
    # A broker must answer a request within this many seconds (plus the client's own
    # timeout for requests that wait by design, such as Fetch and JoinGroup).
    request_timeout: float = 120.0

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, v: list[str]) -> list[str]:
        for a in v:
            split_address(a, 9092)
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_address(v, 19092)
        return v

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_address(self.listen, 19092)

    @property
    def bootstrap_addresses(self) -> list[tuple[str, int]]:
        return [split_address(a, 9092) for a in self.bootstrap]

    @property
    def target_url(self) -> str:
        return "kafka://" + ",".join(self.bootstrap)

    def broker_port(self, node_id: int) -> int:
        """The gateway's port for broker ``node_id`` (ConfigError past the valid range)."""
        base = self.broker_ports or self.listen_address[1] + 1
        port = base + node_id
        if not 0 <= node_id <= MAX_KAFKA_NODE_ID or port > 65535:
            raise ConfigError(
                f"connections.{self.name}: broker node id {node_id} has no gateway port "
                f"(broker_ports {base} + node id must stay below 65536)"
            )
        return port


class SshCredentials(_Strict):
    """How the gateway logs in to an SSH host as ``user``: with a held private key
    (``private_key``: OpenSSH or PEM text, with an optional ``passphrase``), a password,
    or a certificate made for each session (``certificate_authority``: a user CA's
    private key that the host trusts with ``TrustedUserCAKeys``; the certificate's key
    id names the identity and the ledger session, so the host's own log points back at
    the ledger). Each is ``env:``/``file:``/literal, resolved at start, never shown."""

    user: str = Field(min_length=1, max_length=200)
    private_key: str | None = None
    passphrase: str | None = None
    password: str | None = None
    certificate_authority: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SshCredentials:
        given = [self.private_key, self.password, self.certificate_authority]
        if sum(x is not None for x in given) != 1:
            raise ValueError("give one of private_key, password or certificate_authority")
        return self

    def __repr__(self) -> str:
        return f"SshCredentials(user={self.user!r}, <hidden>)"

    __str__ = __repr__


class SshConnection(_ConnectionBase):
    """An SSH host (``type: ssh``). People reach it with ``ssh -p PORT CONNECTION@GATEWAY``
    (or ``IDENTITY+CONNECTION@GATEWAY``); the gateway logs in to ``host`` with
    ``credentials`` after checking the host's key against ``host_key`` (an OpenSSH public
    key line, pinned) or ``known_hosts`` (a file); one of them is required."""

    type: Literal["ssh"]
    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    host_key: str | None = None
    known_hosts: str | None = None
    credentials: SshCredentials

    @model_validator(mode="after")
    def _pinned(self) -> SshConnection:
        if self.host_key is None and self.known_hosts is None:
            raise ValueError(
                "pin the host's key: host_key (an OpenSSH public key line) or known_hosts "
                "(a file); the gateway never trusts a host key on first use"
            )
        return self

    @property
    def target_url(self) -> str:
        return f"ssh://{self.credentials.user}@{self.host}:{self.port}"


def _connection_type(v: object) -> str:
    if isinstance(v, dict):
        return str(v.get("type", "postgres"))
    return str(getattr(v, "type", "postgres"))


AnyConnection = Annotated[
    Annotated[Connection, Tag("postgres")]
    | Annotated[S3Connection, Tag("s3")]
    | Annotated[HttpConnection, Tag("http")]
    | Annotated[KafkaConnection, Tag("kafka")]
    | Annotated[SshConnection, Tag("ssh")],
    Discriminator(_connection_type),
]
CONNECTION_TYPES = ("postgres", "s3", "http", "kafka", "ssh")


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


# Relay processes on one PostgreSQL port at most (the worker's index is a byte of the
# cancel keys it hands out).
MAX_WORKERS = 64


class PostgresListener(_Strict):
    address: str = "0.0.0.0:15432"
    # Cleartext password over a plaintext connection exposes the token: allowed only
    # when this says so (loopback demos, tests).
    allow_plaintext: bool = False
    # A client must finish its startup handshake within this many seconds.
    handshake_timeout: float = 15.0
    # Relay processes sharing the port (SO_REUSEPORT; the kernel spreads connections over
    # them), each with its own event loop and ledger stream: a Python relay uses one
    # core per process.
    workers: int = Field(1, ge=1, le=MAX_WORKERS)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v, 15432)
        return v


class ApiListener(_Strict):
    """The REST API (login callbacks, whoami, tokens, identities, SCIM). Off unless an
    address is given; served over TLS with the gateway's certificate unless ``tls`` is
    false (loopback demos, tests)."""

    address: str | None = None  # e.g. 0.0.0.0:18443
    tls: bool = True
    # The URL clients and the IdP use to reach the API (redirects, SAML ACS, links);
    # default: built from the address.
    public_url: str | None = None
    # The bearer token Prometheus sends for /metrics (``env:``/``file:``/literal);
    # unset: /metrics answers anyone who reaches the listener (it carries counts only).
    metrics_token: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            split_address(v, 18443)
        return v


class HttpListener(_Strict):
    """The HTTPS listener for ``s3`` and ``http`` connections (on when one is declared).
    TLS with the gateway's certificate unless ``tls`` is false; over plaintext a bearer
    or basic token would travel in the clear, so it is refused unless
    ``allow_plaintext`` says so (AWS signatures never carry the secret and are taken)."""

    address: str = "0.0.0.0:19443"
    tls: bool = True
    allow_plaintext: bool = False
    # A client must send a request's headers within this many seconds of starting it
    # (slow-header clients), and may stay idle between requests this long.
    header_timeout: float = 30.0
    idle_timeout: float = 120.0
    # A body read that makes no progress for this long ends the request.
    body_timeout: float = 120.0

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v, 19443)
        return v


class KafkaListener(_Strict):
    """How the gateway serves Kafka clients (each ``kafka`` connection names its own
    ports). TLS with the gateway's certificate unless ``tls`` is false; over plaintext a
    SASL/PLAIN token travels in the clear, so it is refused unless ``allow_plaintext``
    says so."""

    tls: bool = True
    allow_plaintext: bool = False
    # A client must finish TLS and SASL within this many seconds of connecting.
    handshake_timeout: float = 15.0
    # A client connection with no request for this long is closed (Kafka's own
    # connections.max.idle.ms is 10 minutes).
    idle_timeout: float = 600.0


class SshListener(_Strict):
    """Where people and automation reach ``ssh`` connections (on when one is declared).
    The gateway's host key is ``host_key`` (generated once under the data directory when
    unset)."""

    address: str = "0.0.0.0:12222"
    host_key: str | None = None
    # A client must finish key exchange and authentication within this many seconds.
    login_timeout: float = Field(30.0, gt=0)
    # Authentication attempts per connection before it is closed (OpenSSH's MaxAuthTries).
    max_auth_tries: int = Field(6, ge=1, le=100)
    # The ciphers clients are offered. AES-GCM alone by default: the others cost the
    # gateway far more per packet (see the README's SSH benchmark); add
    # chacha20-poly1305@openssh.com or aes128-ctr for clients without AES-GCM.
    ciphers: list[str] = Field(
        default_factory=lambda: ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"],
        min_length=1,
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v, 12222)
        return v


class AgentListener(_Strict):
    """Where agents in private networks dial in (``ledgergate agent``), over TLS with the
    gateway's certificate. Off unless an address is given."""

    address: str | None = None  # e.g. 0.0.0.0:18444
    # An agent must say who it is within this many seconds of connecting.
    handshake_timeout: float = Field(10.0, gt=0)
    # How long a session waits for its agent to bring the backend leg.
    leg_timeout: float = Field(10.0, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            split_address(v, 18444)
        return v


class Listeners(_Strict):
    postgres: PostgresListener = PostgresListener()
    http: HttpListener = HttpListener()
    kafka: KafkaListener = KafkaListener()
    ssh: SshListener = SshListener()
    api: ApiListener = ApiListener()
    agent: AgentListener = AgentListener()
    # On SIGTERM the gateway stops accepting, reports itself not ready, and lets open
    # sessions finish for up to this many seconds before ending them (then it signs the
    # final checkpoint). SIGINT ends them at once.
    drain_timeout: float = Field(15.0, ge=0, le=3600)


def _durations(*names: str) -> classmethod:  # type: ignore[type-arg]
    """A pydantic validator checking that the named fields are positive durations."""

    def check(cls: type, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("must be a positive duration (e.g. 30s, 15m, 8h)")
        return v

    return field_validator(*names)(classmethod(check))


class OidcSettings(_Strict):
    """An OpenID Connect provider: people log in through it (device flow or a browser
    redirect to a loopback port), and its JWTs may be accepted as passwords."""

    issuer: str  # discovery at <issuer>/.well-known/openid-configuration
    client_id: str
    client_secret: str | None = None  # env:VAR / file:PATH; public clients use PKCE alone
    # ``aud`` values accepted in ID tokens and IdP JWTs; default: [client_id].
    audience: list[str] | None = None
    scopes: list[str] = ["openid", "profile", "email"]
    # The claim naming the identity (falls back to ``sub`` when absent) and its groups.
    username_claim: str = "email"
    groups_claim: str = "groups"
    # Asymmetric algorithms only: ``none`` and HMAC are never accepted.
    algorithms: list[str] = ["RS256", "PS256", "ES256", "EdDSA"]
    clock_skew: str = "60s"
    # An IdP-issued JWT (ID or access token) is accepted as the PostgreSQL password.
    accept_jwt_passwords: bool = False
    # How long discovery and the JWKS are cached; an unknown ``kid`` refetches sooner.
    jwks_cache: str = "10m"
    # CA bundle for the provider's TLS (default: the system store).
    ca_file: str | None = None

    _positive = _durations("clock_skew", "jwks_cache")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        allowed = {
            "RS256",
            "RS384",
            "RS512",
            "PS256",
            "PS384",
            "PS512",
            "ES256",
            "ES384",
            "ES512",
            "EdDSA",
        }
        bad = [a for a in v if a not in allowed]
        if bad:
            raise ValueError(
                f"{', '.join(bad)} not allowed: only asymmetric algorithms "
                f"({', '.join(sorted(allowed))})"
            )
        if not v:
            raise ValueError("at least one algorithm is needed")
        return v

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        if not (v.startswith("https://") or _loopback_http(v)):
            raise ValueError("the issuer must be an https:// URL (http only on loopback)")
        return v  # compared byte for byte with ``iss``: never normalised


def _loopback_http(url: str) -> bool:
    return bool(re.match(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", url))


class SamlSettings(_Strict):
    """A SAML 2.0 identity provider, for companies without OIDC."""

    idp_metadata: str  # a file path, or an https:// URL
    entity_id: str | None = None  # default: <api public url>/saml/metadata
    # Attributes carrying the identity name (default: the NameID) and the groups.
    username_attribute: str | None = None
    groups_attribute: str = "groups"
    # The SP's signing key and certificate; default: generated under <data_dir>/saml/.
    key: str | None = None
    cert: str | None = None
    clock_skew: str = "60s"

    _positive = _durations("clock_skew")


class IdentitySettings(_Strict):
    # Gateway tokens minted at login live this long.
    session_ttl: str = "8h"
    # API tokens for service accounts may not live longer than this.
    max_api_token_ttl: str = "90d"
    # Open sessions are re-checked this often (and at each new command).
    recheck_interval: str = "30s"
    oidc: OidcSettings | None = None
    saml: SamlSettings | None = None

    _positive = _durations("session_ttl", "max_api_token_ttl", "recheck_interval")


class RoleMembers(_Strict):
    groups: list[str] = []
    identities: list[str] = []


class Roles(_Strict):
    """Who holds which role: by IdP group or by identity name. Everyone authenticated is
    a ``user``; roles add API rights (admin: everything; auditor: evidence, never data;
    reviewer: reviews)."""

    admin: RoleMembers = RoleMembers()
    auditor: RoleMembers = RoleMembers()
    reviewer: RoleMembers = RoleMembers()


class Grant(_Strict):
    """Who may open sessions on which connections. ``connections`` are names or globs."""

    connections: list[str]
    groups: list[str] = []
    identities: list[str] = []

    @model_validator(mode="after")
    def _someone(self) -> Grant:
        if not self.groups and not self.identities:
            raise ValueError("a grant names at least one group or identity")
        if not self.connections:
            raise ValueError("a grant names at least one connection")
        return self


class TlsSettings(_Strict):
    cert: str | None = None  # default: <data_dir>/tls/server.crt, generated on first start
    key: str | None = None


class FileWitness(_Strict):
    """Checkpoints appended to a file (JSON lines), e.g. on storage the gateway's operator
    cannot rewrite (a WORM mount, another host's share)."""

    type: Literal["file"]
    path: str


class SyslogWitness(_Strict):
    """Checkpoints sent as RFC 5424 messages over TCP (RFC 6587 octet counting), TLS
    unless ``tls`` is false, to a syslog receiver (rsyslog, a SIEM)."""

    type: Literal["syslog"]
    address: str  # host:port
    tls: bool = True
    ca_file: str | None = None  # default: the system's trust store
    app_name: str = Field("ledgergate", pattern=r"^[!-~]{1,48}$")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v, 6514)
        return v


class HttpsWitness(_Strict):
    """Checkpoints POSTed as JSON to an HTTPS endpoint (a transparency log, a notary),
    with a bearer token when one is given (``env:``/``file:``)."""

    type: Literal["https"]
    url: str
    token: str | None = None
    ca_file: str | None = None
    timeout: float = Field(10.0, gt=0, le=120)

    def __repr__(self) -> str:  # the token (and a webhook URL) may be credentials
        return "HttpsWitness(<hidden>)"

    __str__ = __repr__

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        check_http_url(v)
        return v


class S3Witness(_Strict):
    """Checkpoints PUT as objects ``<prefix><stream>/<size, 20 digits>.note`` into a bucket
    of an S3-compatible store (one with object lock, or owned by another team, keeps them
    out of the operator's reach), signed with SigV4."""

    type: Literal["s3"]
    endpoint: str  # http(s)://host[:port]
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = "ledgergate/checkpoints/"
    region: str = "us-east-1"
    access_key_id: str
    secret_access_key: str  # env:/file:/literal, never shown
    ca_file: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _check_base_url(v)

    def __repr__(self) -> str:
        return f"S3Witness(endpoint={self.endpoint!r}, bucket={self.bucket!r}, secret=<hidden>)"

    __str__ = __repr__


Witness = Annotated[
    FileWitness | SyslogWitness | HttpsWitness | S3Witness, Field(discriminator="type")
]


class LedgerSettings(_Strict):
    stream: str | None = None  # default: gateway@<hostname>
    checkpoint_every_entries: int = Field(1000, ge=1)
    checkpoint_every_seconds: float = Field(10.0, gt=0)
    # fsync every commit (survive power loss); off still survives kill -9 of the gateway.
    fsync: bool = False
    # How many chunk entries may wait for the group commit before sessions are paused.
    queue_depth: int = Field(10_000, ge=16)
    key: str | None = None  # default: <data_dir>/keys/ledger.ed25519
    # The key's name in signed checkpoints and verifier keys (default:
    # ledgergate/<gateway_name>). Gateways side by side that share one key share its name.
    key_name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[^\s+]+$")
    # Where each signed checkpoint is published as it is signed, outside the gateway's
    # reach, so `audit verify --witness` can catch a store rewritten after the fact.
    witnesses: list[Witness] = []


# The review events a webhook can subscribe to: one per state a review enters.
NotifyEvent = Literal["requested", "approved", "denied", "expired", "cancelled"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)
# A webhook answers within a minute or is treated as down: a notifier holding a
# connection longer only delays the retries of a receiver that is not coming back.
MAX_WEBHOOK_TIMEOUT_NS = 60 * 1_000_000_000
# Ten attempts with exponential backoff span hours; past twenty the review has expired.
MAX_WEBHOOK_ATTEMPTS = 20


def check_http_url(v: str, *, secret_ok: bool = False) -> str:
    """An absolute ``http(s)://host...`` URL (or, with ``secret_ok``, an ``env:VAR`` /
    ``file:PATH`` reference resolved later). The message never quotes the value: a Slack
    webhook URL is itself a credential."""
    if secret_ok and (v.startswith("env:") or v.startswith("file:")):
        if len(v.split(":", 1)[1]) == 0:
            raise ValueError("env:/file: needs a variable name or a path")
        return v
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname or any(c.isspace() for c in v):
        raise ValueError("must be an absolute http(s) URL with a host")
    return v


class WebhookSettings(_Strict):
    """One receiver of review notifications. ``json``: the signed canonical JSON body
    (``secret`` is the HMAC key, required); ``slack``: a Slack incoming-webhook message
    with Approve/Deny link buttons (a ``secret``, if given, signs the request headers
    too). ``url`` and ``secret`` may be ``env:VAR`` / ``file:PATH`` (a Slack webhook URL
    is a credential)."""

    name: Name
    url: str
    format: Literal["json", "slack"] = "json"
    secret: str | None = Field(None, validate_default=True)
    events: list[NotifyEvent] = list(NOTIFY_EVENTS)
    timeout: str = "5s"  # per attempt, whole request
    max_attempts: int = Field(6, ge=1, le=MAX_WEBHOOK_ATTEMPTS)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v, secret_ok=True)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("format") == "json" and not v:
            raise ValueError("is required for format json (the HMAC key, e.g. env:VAR)")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[NotifyEvent]) -> list[NotifyEvent]:
        if not v:
            raise ValueError(f"at least one event is needed ({', '.join(NOTIFY_EVENTS)})")
        if len(set(v)) != len(v):
            raise ValueError("an event is listed twice")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        ns = parse_duration(v)
        if ns <= 0 or ns > MAX_WEBHOOK_TIMEOUT_NS:
            raise ValueError("must be a positive duration of at most 60s (e.g. 5s, 500ms)")
        return v

    @property
    def timeout_ns(self) -> int:
        return parse_duration(self.timeout)

    def __repr__(self) -> str:  # the URL and the secret may be credentials
        return f"WebhookSettings(name={self.name!r}, format={self.format!r}, url=<hidden>)"

    __str__ = __repr__


class NotificationSettings(_Strict):
    """Who hears about just-in-time reviews (request, decision, expiry)."""

    # Base of the links in notifications (``<console_url>/reviews/<id>``); default: the
    # API listener's public URL, filled in by the caller.
    console_url: str | None = None
    webhooks: list[WebhookSettings] = []

    @field_validator("console_url")
    @classmethod
    def _console_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        check_http_url(v)
        parts = urlsplit(v)
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment (links are built on it)")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationSettings:
        _check_unique([w.name for w in self.webhooks], "webhooks", "webhook")
        return self


class SiemSettings(_Strict):
    """A continuous forwarder of ledger entries to a SIEM: syslog (RFC 5424 over TCP,
    TLS unless ``tls`` is false) carrying CEF or OCSF, or OCSF JSON POSTed to an HTTPS
    endpoint. It resumes from a cursor after a restart: at least once, nothing lost."""

    type: Literal["syslog", "https"]
    format: Literal["cef", "ocsf"] = "cef"
    address: str | None = None  # syslog: host:port
    url: str | None = None  # https
    tls: bool = True
    ca_file: str | None = None
    token: str | None = None  # https: bearer token (env:/file:/literal)
    app_name: str = Field("ledgergate", pattern=r"^[!-~]{1,48}$")
    # Chunk entries are most of a ledger; a SIEM rarely wants each one.
    include_chunks: bool = False
    # Where a forwarder with no cursor yet starts: the streams' current end, or the
    # first entry of each.
    start_at: Literal["now", "beginning"] = "now"

    def __repr__(self) -> str:  # the token (and a webhook URL) may be credentials
        return "SiemSettings(<hidden>)"

    __str__ = __repr__

    @model_validator(mode="after")
    def _target(self) -> SiemSettings:
        if self.type == "syslog":
            if self.address is None:
                raise ValueError("a syslog forwarder needs address: host:port")
            split_address(self.address, 6514)
        else:
            if self.url is None:
                raise ValueError("an https forwarder needs url")
            check_http_url(self.url)
            if self.format != "ocsf":
                raise ValueError("an https forwarder sends OCSF (format: ocsf)")
        return self


class InsightsSettings(_Strict):
    """The insights report sent to a webhook on a schedule (``every``, e.g. ``7d``): a
    JSON POST with the period, the findings, and the report as Markdown in ``text``
    (what Slack and most chat webhooks show)."""

    webhook: str | None = None  # http(s) URL, or env:/file: holding one
    token: str | None = None  # a bearer token for it (env:/file:/literal)
    every: str = "7d"
    period: str | None = None  # default: ``every``
    ca_file: str | None = None

    def __repr__(self) -> str:  # the token (and a webhook URL) may be credentials
        return "InsightsSettings(<hidden>)"

    __str__ = __repr__

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v, secret_ok=True)

    @field_validator("every", "period")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("must be a positive duration")
        return v


class RetentionRule(_Strict):
    """Payloads purged after ``payloads_after``, entries pruned after ``entries_after``
    (a stub keeps each one's place and hash: the ledger still verifies), for the entries
    of the ``connections`` (names or globs) and ``kinds`` (unset: every kind)."""

    name: Name
    connections: list[str] = ["*"]
    kinds: list[str] | None = None
    payloads_after: str | None = None
    entries_after: str | None = None

    @model_validator(mode="after")
    def _durations(self) -> RetentionRule:
        if self.payloads_after is None and self.entries_after is None:
            raise ValueError("a retention rule says payloads_after, entries_after or both")
        for what in ("payloads_after", "entries_after"):
            v = getattr(self, what)
            if v is not None and parse_duration(v) <= 0:
                raise ValueError(f"{what} must be a positive duration")
        return self


class Config(_Strict):
    data_dir: str = "./ledgergate-data"
    store: str | None = None  # default: sqlite:///<data_dir>/ledgergate.db
    # The PostgreSQL store's password (env:VAR, file:PATH or a literal; never shown),
    # kept out of the ``store`` URL; libpq's PGPASSFILE works too.
    store_password: str | None = None
    gateway_name: str | None = None  # default: the host name
    listeners: Listeners = Listeners()
    tls: TlsSettings = TlsSettings()
    ledger: LedgerSettings = LedgerSettings()
    connections: list[AnyConnection] = []
    identity: IdentitySettings = IdentitySettings()
    roles: Roles = Roles()
    # Unset: any authenticated identity may reach every connection (a warning is logged
    # at start). Set (even empty): only what a grant here or through the API allows.
    grants: list[Grant] | None = None
    # Guardrails, least-privilege allow-lists and masking (see core.policy.rules).
    policy: PolicySettings = PolicySettings()
    # Webhook and Slack notifications of just-in-time reviews (services.notify).
    notifications: NotificationSettings = NotificationSettings()
    # What is kept how long (``ledgergate retention run``): the first rule that matches
    # an entry decides.
    retention: list[RetentionRule] = []
    # Forwarders of the ledger's entries to SIEMs, as they are written.
    siem: list[SiemSettings] = []
    # The insights report, sent on a schedule (``ledgergate insights`` makes it by hand).
    insights: InsightsSettings = InsightsSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        _check_unique([c.name for c in self.connections], "connections", "connection")
        return self

    def connection(
        self, name: str
    ) -> Connection | S3Connection | HttpConnection | KafkaConnection | SshConnection | None:
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
            # the union's tag ("connections.0.s3.endpoint") is not a key of the file
            parts = [
                str(p)
                for i, p in enumerate(err["loc"])
                if not (i == 2 and err["loc"][0] == "connections" and p in CONNECTION_TYPES)
            ]
            loc = ".".join(parts) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{loc}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
