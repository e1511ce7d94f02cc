"""A real S3-compatible server for the tests: versitygw's posix backend on loopback.

`S3Server` owns one server's whole life: a fresh temporary directory whose ``data/``
is the posix root (bucket ``b`` is ``root/b``, object ``k`` in it is the file
``root/b/k``, so a test can prove that a refused upload left no object behind), a
generated root access key and secret, optional TLS with a generated CA, a free loopback
port, and removal of everything on `stop()`. versitygw was chosen over moto because it
checks signatures as a real server does, aws-chunked chunk signatures included.

The binary comes from ``scripts/install-s3server``, which builds the pinned version once
into a cache directory and afterwards only prints its path. This module also holds two
helpers the other loopback servers reuse: `make_tls` and `wait_answering`.

It must not depend on the gateway.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.integration.pgcluster import free_port, write_tls
from tests.integration.procs import stop_group

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-s3server"
REGION = "us-east-1"
# A cached install only prints a path; a first build on a fresh machine compiles
# versitygw (about 1.5 min on 2 cores with the Go module cache warm).
INSTALL_TIMEOUT_S = 900
# versitygw answers within a fraction of a second; a loaded CI machine gets this long.
START_TIMEOUT_S = 30.0
# A free port can be taken by another process between probing and binding it.
START_ATTEMPTS = 3


class BackendError(RuntimeError):
    """A loopback backend could not be installed or started; the message has its log
    tail."""


@functools.cache
def versitygw_binary() -> Path:
    """Path of the pinned versitygw, built by scripts/install-s3server when missing."""
    r = subprocess.run(
        [str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if r.returncode != 0:
        raise BackendError(f"scripts/install-s3server failed ({r.returncode}):\n{r.stderr}")
    return Path(r.stdout.strip().splitlines()[-1])


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path  # PEM of the CA: what a client verifies the server with
    cert: Path  # the server's certificate (localhost, 127.0.0.1), signed by the CA
    key: Path  # its private key (mode 0600)


def make_tls(dirpath: Path) -> TlsFiles:
    """Write a throwaway CA and a server certificate it signs for localhost and
    127.0.0.1 into the new directory ``dirpath`` (the test clusters' own helper)."""
    ca, cert, key = write_tls(dirpath)
    return TlsFiles(ca, cert, key)


def wait_answering(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    log: Path,
    what: str,
    verify: ssl.SSLContext | bool = True,
    ready: Callable[[httpx.Response], bool] = lambda _r: True,
    timeout_s: float = START_TIMEOUT_S,
) -> httpx.Response:
    """Poll ``url`` until an answer passes ``ready`` (by default: any HTTP answer) and
    return it. If ``proc`` exits or nothing answers in time, stop it and raise with
    its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise BackendError(f"{what} exited ({proc.returncode}):\n{_tail(log)}")
        try:
            r = httpx.get(url, timeout=1, verify=verify)
            if ready(r):
                return r
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_group(proc)
            raise BackendError(f"{what} did not answer at {url}:\n{_tail(log)}")
        time.sleep(0.05)


def wait_answering_in(
    netns: str,
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    log: Path,
    what: str,
    ca: Path | None = None,
    ok: Callable[[int], bool] = lambda status: status > 0,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """`wait_answering` for a server inside network namespace ``netns`` (the host
    cannot reach it): curl asks from inside."""
    deadline = time.monotonic() + timeout_s
    cmd = ["ip", "netns", "exec", netns, "curl", "-s", "-o", "/dev/null", "--max-time", "1"]
    cmd += ["-w", "%{http_code}", *(["--cacert", str(ca)] if ca else []), url]
    while True:
        if proc.poll() is not None:
            raise BackendError(f"{what} exited ({proc.returncode}):\n{_tail(log)}")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        if out.isdigit() and ok(int(out)):
            return
        if time.monotonic() > deadline:
            stop_group(proc)
            raise BackendError(f"{what} did not answer at {url}:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _has_user_xattrs(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.ledgergate", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


class S3Server:
    """One versitygw process. Configure in the constructor, then `start()`; `stop()` (or
    leaving a ``with`` block) kills its process group and deletes its directory.

    tls: serve HTTPS with a generated CA (`ca_cert_path`); `endpoint` says https.
    access_key, secret_key: the root credentials (generated when not given).
    extra_args: more global versitygw options, e.g. ("--readonly",).
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = REGION,
        extra_args: Sequence[str] = (),
        netns: str | None = None,
    ) -> None:
        self.tls = tls
        # Run inside this network namespace (``ip netns``): its 127.0.0.1 is its own, out
        # of the host's reach (the data directory is shared). Needs root.
        self.netns = netns
        self.access_key = access_key or "LGTEST" + secrets.token_hex(7).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.region = region
        self.extra_args = list(extra_args)
        self.host = "127.0.0.1"
        self.port = 0
        self.dir: Path | None = None
        self._tls: TlsFiles | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.dir is None:
            raise BackendError("server not started")
        return self.dir

    @property
    def root(self) -> Path:
        """The posix root: one directory per bucket, one file per object."""
        return self._dir() / "data"

    @property
    def log(self) -> Path:
        """versitygw's output: the banner, one line per request, errors."""
        return self._dir() / "versitygw.log"

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the CA that signed the server certificate."""
        if self._tls is None:
            raise BackendError("server has no TLS (tls=False) or is not started")
        return self._tls.ca

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def object_path(self, bucket: str, key: str) -> Path:
        """Where the posix backend keeps object ``key`` of ``bucket``."""
        return self.root / bucket / key

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> S3Server:
        if self.dir is not None:
            raise BackendError("server already started")
        versitygw_binary()  # install (or fail) before making anything
        self.dir = Path(tempfile.mkdtemp(prefix="lg-s3-"))
        try:
            self.root.mkdir()
            if self.tls:
                self._tls = make_tls(self._dir() / "tls")
            self._spawn()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the process group and delete the directory. Idempotent."""
        stop_group(self._proc)
        self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self._tls = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def command(self) -> list[str]:
        """The versitygw command line (the credentials travel in its environment)."""
        args = [str(versitygw_binary()), "--port", f"{self.host}:{self.port}"]
        args += ["--region", self.region]
        if self._tls is not None:
            args += ["--cert", str(self._tls.cert), "--key", str(self._tls.key)]
        args += self.extra_args
        args += ["posix"]
        if not _has_user_xattrs(self.root):
            # e.g. tmpfs before Linux 6.6: keep object metadata in files instead.
            sidecar = self._dir() / "meta"
            sidecar.mkdir(exist_ok=True)
            args += ["--sidecar", str(sidecar)]
        return [*args, str(self.root)]

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "ROOT_"))}
        env.update(ROOT_ACCESS_KEY_ID=self.access_key, ROOT_SECRET_ACCESS_KEY=self.secret_key)
        verify = ssl.create_default_context(cafile=self._tls.ca) if self._tls else True
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            offset = self.log.stat().st_size if self.log.exists() else 0
            inside = ["ip", "netns", "exec", self.netns] if self.netns else []
            with self.log.open("ab") as out:
                self._proc = subprocess.Popen(
                    [*inside, *self.command()],
                    cwd=self._dir(),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                if self.netns is not None:
                    ca = self._tls.ca if self._tls else None
                    wait_answering_in(
                        self.netns, self._proc, f"{self.endpoint}/", log=self.log,
                        what="versitygw", ca=ca,
                    )  # fmt: skip
                else:
                    wait_answering(
                        self._proc, f"{self.endpoint}/", log=self.log, what="versitygw",
                        verify=verify,
                    )  # fmt: skip
                return
            except BackendError:
                busy = b"address already in use" in self.log.read_bytes()[offset:].lower()
                if not busy or attempt + 1 == START_ATTEMPTS:
                    raise

    # -- clients -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The caller's environment with its AWS_* variables (profiles, session tokens,
        CA bundles) replaced by ones that point an AWS CLI or SDK at this server's root
        account. Pass the endpoint separately."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION=self.region,
            AWS_REGION=self.region,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        if self.tls:
            env["AWS_CA_BUNDLE"] = str(self.ca_cert_path)
        return env

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client straight to this server (path-style addressing); keyword
        arguments go to botocore's Config, e.g. request_checksum_calculation."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            verify=str(self.ca_cert_path) if self.tls else True,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a fresh name (the session's server is shared) and return
        the name."""
        name = f"{prefix}-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name


# The `s3server_factory` fixture: keyword arguments as S3Server's, returns it started.
S3ServerFactory = Callable[..., S3Server]
