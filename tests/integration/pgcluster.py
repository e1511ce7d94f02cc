"""Throwaway PostgreSQL clusters for integration tests: SCRAM or MD5 auth, TLS on,
``log_statement = all``, on a free loopback port, owned by the ``postgres`` user (initdb
refuses root)."""

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
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PGBIN = Path(os.environ.get("LEDGERGATE_PGBIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER_PASSWORD = "Sup3r-secret-backend-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def _self_signed(dirpath: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, k = dirpath / "server.crt", dirpath / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return crt, k


class PgCluster:
    def __init__(self, *, auth: str = "scram-sha-256", tls: bool = True) -> None:
        self.auth = auth
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lg-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.password = SUPERUSER_PASSWORD

    @property
    def ca_cert_path(self) -> Path:
        return self.data / "server.crt"

    def start(self) -> PgCluster:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        method = "md5" if self.auth == "md5" else "scram-sha-256"
        _as_postgres([str(PGBIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                      "--locale=C", f"--auth-host={method}", "--auth-local=trust",
                      f"--pwfile={pwfile}"])
        conf = [
            "listen_addresses = '127.0.0.1'", f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'", "fsync = off", "synchronous_commit = off",
            "full_page_writes = off", "shared_buffers = 32MB", "max_connections = 100",
            "log_statement = 'all'", "log_line_prefix = '%m [%p] '", f"password_encryption = '{method}'",
            "logging_collector = off",
        ]
        if self.tls:
            crt, key = _self_signed(self.data)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                for f in (crt, key):
                    os.chown(f, pw.pw_uid, pw.pw_gid)
            conf += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(conf) + "\n")
        hba = "local all all trust\n"
        hba += f"host all all 127.0.0.1/32 {self.auth}\n"
        (self.data / "pg_hba.conf").write_text(hba)
        if os.geteuid() == 0:
            os.chown(self.data / "pg_hba.conf", pwd.getpwnam("postgres").pw_uid, -1)
            self.logfile.touch()
            os.chown(self.logfile, pwd.getpwnam("postgres").pw_uid, -1)
        _as_postgres([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w",
                      "-t", "60", "start"])
        return self

    def stop(self) -> None:
        try:
            _as_postgres([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None,
            sslmode: str = "require") -> str:
        return (f"host={self.host} port={self.port} dbname={dbname} user={user} "
                f"password={password or self.password} sslmode={sslmode}")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, self.dsn(dbname)],
                             check=True, capture_output=True, text=True)
        return out.stdout

    def statement_log(self) -> list[str]:
        text = self.logfile.read_text(errors="replace")
        return [m.group(1) for m in re.finditer(r"LOG:  statement: (.*)", text)]

    def wait_log(self, needle: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logfile.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False
