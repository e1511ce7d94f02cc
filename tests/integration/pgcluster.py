"""Throwaway PostgreSQL clusters on loopback for integration tests and benchmarks.

`PgCluster` owns one cluster's whole life: initdb into a fresh temporary directory owned
by the ``postgres`` user (initdb refuses root; when not root it runs as the caller),
TLS with a generated CA and server certificate, a pg_hba.conf written from the chosen
method, ``log_statement = 'all'`` into a log file the tests read, and removal of
everything on `stop()`. It never touches a system PostgreSQL: each cluster gets a free
port and its own socket directory.

It must not depend on the gateway or on test-only packages (the benchmarks import it).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PGBIN = Path(os.environ.get("LEDGERGATE_PGBIN", "/usr/lib/postgresql/15/bin"))
PSQL = shutil.which("psql") or "/usr/bin/psql"
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "Sup3r-secret-backend-pw"

HbaMethod = Literal["scram-sha-256", "md5", "password", "trust"]
PasswordEncryption = Literal["scram-sha-256", "md5"]
HBA_METHODS: tuple[str, ...] = ("scram-sha-256", "md5", "password", "trust")

# initdb of an empty cluster takes about a second; generous limits only matter on a
# loaded CI machine, where a hung child must still fail the test rather than the job.
INITDB_TIMEOUT_S = 120
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
# A free port can be taken by another process between probing and binding it.
START_ATTEMPTS = 3

# Each log record starts with log_line_prefix ('%m [%p] '); PostgreSQL indents the
# continuation lines of a multi-line message with a tab.
_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(?P<pid>\d+)\] "
    r"(?P<level>[A-Z]+\d?):  (?P<text>.*)$"
)
_STATEMENT = re.compile(r"^(?:statement|execute [^:]+): (?P<sql>.*)$", re.DOTALL)


class PgClusterError(RuntimeError):
    """A cluster could not be created, started or queried; the message has the log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PG* variables (PGDATA, PGPORT, PGSSLMODE … would
    silently redirect pg_ctl and psql), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def as_postgres() -> dict[str, Any]:
    """subprocess keyword arguments that run a child as the ``postgres`` user when we are
    root (initdb, postgres and pgbouncer refuse root), and as ourselves otherwise.

    The child is the program itself (no runuser/su in between), so its pid is exact."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {
        "user": pw.pw_uid,
        "group": pw.pw_gid,
        "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid),
    }


def give_to_postgres(*paths: Path) -> None:
    """chown paths to the user the cluster runs as (a no-op when not root)."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    for p in paths:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def _owner_name() -> str:
    if os.geteuid() == 0:
        return "postgres"
    return pwd.getpwuid(os.geteuid()).pw_name


def write_tls(dirpath: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs for localhost and 127.0.0.1.
    Returns (ca.crt, server.crt, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ledgergate test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    dirpath.mkdir()
    ca_path, crt_path, key_path = dirpath / "ca.crt", dirpath / "server.crt", dirpath / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)  # PostgreSQL refuses a key readable by others
    give_to_postgres(dirpath, ca_path, crt_path, key_path)
    return ca_path, crt_path, key_path


class PgCluster:
    """One throwaway cluster. Configure in the constructor, then `start()`; `stop()` (or
    leaving a ``with`` block) shuts it down fast and deletes its directory.

    auth: the pg_hba method for TCP connections from 127.0.0.1.
    password_encryption: how role passwords are stored; defaults to md5 when auth is md5
        (otherwise PostgreSQL would answer an md5 line with SCRAM), else scram-sha-256.
    tls: ssl = on with a generated CA (`ca_cert_path`); require_tls makes the TCP line
        ``hostssl`` so plaintext connections are refused.
    settings: extra postgresql.conf settings, e.g. {"shared_buffers": "256MB"}.
    """

    def __init__(
        self,
        *,
        auth: HbaMethod = "scram-sha-256",
        password_encryption: PasswordEncryption | None = None,
        tls: bool = True,
        require_tls: bool = False,
        password: str = SUPERUSER_PASSWORD,
        settings: Mapping[str, str | int] | None = None,
        netns: str | None = None,
    ) -> None:
        if auth not in HBA_METHODS:
            raise ValueError(f"auth must be one of {HBA_METHODS}, not {auth!r}")
        if require_tls and not tls:
            raise ValueError("require_tls needs tls")
        self.auth = auth
        self.password_encryption = password_encryption or (
            "md5" if auth == "md5" else "scram-sha-256"
        )
        self.tls = tls
        self.require_tls = require_tls
        self.password = password
        self.settings = dict(settings or {})
        # Run the server inside this network namespace (``ip netns``): its 127.0.0.1 is
        # then the namespace's own, out of reach of anything outside (psql still gets in
        # through the Unix socket, which is not namespaced). Needs root.
        self.netns = netns
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self._ca: Path | None = None
        self._passwords: dict[str, str] = {SUPERUSER: password}
        self._running = False

    # -- paths -------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.root is None:
            raise PgClusterError("cluster not started")
        return self.root

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def logfile(self) -> Path:
        return self._dir() / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self._dir()

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the CA that signed the server certificate (for sslmode=verify-full)."""
        if self._ca is None:
            raise PgClusterError("cluster has no TLS (tls=False) or is not started")
        return self._ca

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> PgCluster:
        if self.root is not None:
            raise PgClusterError("cluster already started")
        self.root = Path(tempfile.mkdtemp(prefix="lg-pg-"))
        try:
            give_to_postgres(self.root)
            self._initdb()
            self._configure()
            self._start_postmaster()
            if self.password_encryption != "scram-sha-256":
                # initdb stored the superuser password as SCRAM; store it again now that
                # the server's password_encryption says otherwise.
                self.psql(f"ALTER ROLE {SUPERUSER} PASSWORD {quote_literal(self.password)}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (immediate if that hangs), then delete the directory. Idempotent."""
        if self.root is None:
            return
        if self._running or (self.data_dir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                r = self._run(
                    [
                        str(PGBIN / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        str(STOP_TIMEOUT_S),
                        "stop",
                    ],
                    check=False,
                )
                if r.returncode == 0:
                    break
        self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self._ca = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(
        self,
        cmd: list[str],
        *,
        check: bool = True,
        timeout: float = INITDB_TIMEOUT_S,
        in_netns: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        user = as_postgres()
        if in_netns and self.netns is not None:
            # enter the namespace as root, then become the server's user
            cmd = ["ip", "netns", "exec", self.netns, "runuser", "-u", SUPERUSER, "--", *cmd]
            user = {}
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self._dir(),
            env=clean_env(LC_ALL="C"),
            check=False,
            **user,
        )
        if check and r.returncode != 0:
            raise PgClusterError(
                f"{Path(cmd[0]).name} failed ({r.returncode}): "
                f"{r.stderr.strip()}\n{self._log_tail()}"
            )
        return r

    def _initdb(self) -> None:
        pwfile = self._dir() / "superuser.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password + "\n")
        give_to_postgres(pwfile)
        try:
            self._run(
                [
                    str(PGBIN / "initdb"),
                    "-D",
                    str(self.data_dir),
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile.unlink()

    def _configure(self) -> None:
        conf: dict[str, str | int] = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": 100,
            "shared_buffers": "32MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "password_encryption": self.password_encryption,
            "logging_collector": "off",
            "log_destination": "stderr",
            "log_line_prefix": "%m [%p] ",
            "log_statement": "all",
            "ssl": "off",
        }
        if self.tls:
            self._ca, crt, key = write_tls(self._dir() / "tls")
            conf.update(ssl="on", ssl_cert_file=str(crt), ssl_key_file=str(key))
        conf.update(self.settings)
        lines = [f"{k} = {v if isinstance(v, int) else quote_literal(v)}" for k, v in conf.items()]
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# ledgergate test cluster\n" + "\n".join(lines) + "\n")
        kind = "hostssl" if self.require_tls else "host"
        (self.data_dir / "pg_hba.conf").write_text(
            "# TYPE  DATABASE USER     ADDRESS        METHOD\n"
            f"local   all      {SUPERUSER} peer map=owner\n"
            f"{kind:<7} all      all      127.0.0.1/32   {self.auth}\n"
        )
        # peer maps the OS user running the cluster (postgres when we are root) to the
        # superuser role, so a non-root run can use the socket too.
        (self.data_dir / "pg_ident.conf").write_text(f"owner {_owner_name()} {SUPERUSER}\n")

    def _start_postmaster(self) -> None:
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            r = self._run(
                [
                    str(PGBIN / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.logfile),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "start",
                ],
                check=False,
                timeout=START_TIMEOUT_S + 10,
                in_netns=True,
            )
            if r.returncode == 0:
                self._running = True
                return
            if "Address already in use" not in self._log_tail() or attempt + 1 == START_ATTEMPTS:
                raise PgClusterError(f"pg_ctl start failed: {r.stderr.strip()}\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except (OSError, PgClusterError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- clients -----------------------------------------------------------------------

    def default_sslmode(self) -> str:
        return "require" if self.tls else "disable"

    def dsn(
        self,
        dbname: str = "postgres",
        *,
        user: str = SUPERUSER,
        password: str | None = None,
        sslmode: str | None = None,
        **extra: str,
    ) -> str:
        """A libpq keyword/value string for a TCP connection. The password defaults to the
        one `create_role` (or initdb) gave `user`."""
        password = password if password is not None else self._passwords.get(user)
        parts = {
            "host": self.host,
            "port": str(self.port),
            "dbname": dbname,
            "user": user,
            "sslmode": sslmode or self.default_sslmode(),
            **extra,
        }
        if password is not None:
            parts["password"] = password
        return " ".join(f"{k}={_conninfo_value(v)}" for k, v in parts.items())

    def psql(self, sql: str, dbname: str = "postgres", *, check: bool = True) -> str:
        """Run SQL (one or more statements, each sent on its own) through psql as the
        superuser over TCP; returns unaligned, tuples-only output."""
        cmd = [PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname)]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        r = subprocess.run(
            cmd,
            input=sql,
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
        )
        if check and r.returncode != 0:
            raise PgClusterError(f"psql failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def create_role(
        self,
        name: str,
        password: str | None = None,
        *,
        method: PasswordEncryption | None = None,
        superuser: bool = False,
        login: bool = True,
    ) -> str:
        """CREATE ROLE with its password stored as `method` (default: the cluster's
        password_encryption). Returns the role name."""
        attrs = ["LOGIN" if login else "NOLOGIN", "SUPERUSER" if superuser else "NOSUPERUSER"]
        if password is not None:
            attrs.append(f"PASSWORD {quote_literal(password)}")
            self._passwords[name] = password
        enc = method or self.password_encryption
        self.psql(
            f"SET password_encryption = {quote_literal(enc)};\n"
            f"CREATE ROLE {quote_ident(name)} {' '.join(attrs)};\n"
        )
        return name

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server answers TCP connections."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- log ---------------------------------------------------------------------------

    def log_offset(self) -> int:
        """The log's current size: pass it to `statement_log(since=...)` to see only what
        runs after this point (the session-scoped cluster is shared by many tests)."""
        try:
            return self.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def log_records(self, since: int = 0) -> list[tuple[int, str, str]]:
        """(pid, level, message) for each log record, multi-line messages joined."""
        with open(self.logfile, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", errors="replace")
        records: list[tuple[int, str, str]] = []
        for line in text.splitlines():
            m = _RECORD.match(line)
            if m:
                records.append((int(m["pid"]), m["level"], m["text"]))
            elif line.startswith("\t") and records:
                pid, level, msg = records[-1]
                records[-1] = (pid, level, msg + "\n" + line[1:])
        return records

    def statement_log(self, since: int = 0) -> list[str]:
        """Statements the backends executed, in log order: simple-protocol queries
        (``LOG:  statement: …``) and extended-protocol executions (``LOG:  execute …``)."""
        out = []
        for _pid, level, msg in self.log_records(since):
            m = _STATEMENT.match(msg) if level == "LOG" else None
            if m:
                out.append(m["sql"])
        return out

    def wait_log(self, needle: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logfile.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False


def _conninfo_value(v: str) -> str:
    if v and not any(c in v for c in " '\\"):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


# The `pg_cluster_factory` fixture: keyword arguments as PgCluster's, returns it started.
PgClusterFactory = Callable[..., PgCluster]
