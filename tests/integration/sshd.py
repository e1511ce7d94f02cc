"""A real SSH server for the tests: OpenSSH's sshd from Debian in the foreground on a
loopback port, with its own config, host keys (ed25519 and RSA), user CA and log in a
fresh temporary directory.

`Sshd(password_auth=..., extra_config=...)` starts it (``port``, ``host_key_pub``,
``known_hosts_line()``, ``client_key``, ``ca_key`` to sign user certificates with), waits
until the port answers with an ``SSH-2.0-`` banner, and on ``stop()`` ends it with every
connection it forked and deletes its directory.

Every server logs in one real local account, `USER`, created once with ``useradd`` and
reused. The account is shared by all servers and all test processes on the machine, so:
its password is generated once and kept in a root-only file under `STATE_DIR` (every
server, in every concurrent pytest process, exposes the same ``password``); each server
appends its own client key to ``~lgssh/.ssh/authorized_keys`` and removes it on stop;
changes to the account happen under one file lock.

It must not depend on the gateway, and it needs root (sshd's privilege separation,
useradd, chpasswd), as the tests and CI have.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.integration.pgcluster import free_port
from tests.integration.procs import stop_group

__all__ = ["HOST", "USER", "Sshd", "SshdFactory", "sshd", "sshd_factory"]

# Absolute on purpose: sshd re-executes itself for every connection and refuses to run
# from a relative path.
SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
HOST = "127.0.0.1"
USER = "lgssh"
# sshd binds in well under a second; ten leaves room for a loaded CI machine.
START_TIMEOUT_S = 10.0
# How long stop() waits after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 5.0
# sshd's privilege-separation chroot: must exist, root-owned, not writable by others.
PRIVSEP_DIR = Path("/run/sshd")
# The shared account's lock and password, for all test processes on this machine.
STATE_DIR = Path("/run/ledgergate-tests")

# Config value None drops a default line (e.g. {"TrustedUserCAKeys": None}).
ConfigValue = str | None


class Sshd:
    """One sshd. Options: ``password_auth`` turns PasswordAuthentication on or off;
    ``extra_config`` overrides default config lines by keyword (case-insensitive) or adds
    new ones, e.g. ``{"MaxStartups": "2"}``; a value of None removes the line."""

    def __init__(
        self,
        *,
        password_auth: bool = True,
        extra_config: Mapping[str, ConfigValue] | None = None,
    ) -> None:
        self.host = HOST
        self.port = 0
        self.user = USER
        self.password = ""
        self.password_auth = password_auth
        self.extra_config = dict(extra_config or {})
        self.dir = Path(tempfile.mkdtemp(prefix="lg-sshd-"))
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.client_key = self.dir / "client_ed25519"
        self.ca_key = self.dir / "user_ca"
        self.known_hosts = self.dir / "known_hosts"
        self.host_key_pub = ""
        self._authorized: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, str]:
        """The config lines, keyword to value, defaults overridden by ``extra_config``."""
        lines: dict[str, ConfigValue] = {
            "ListenAddress": f"{self.host}:{self.port}",
            "PidFile": str(self.dir / "sshd.pid"),
            "UsePAM": "no",
            "LogLevel": "VERBOSE",
            "PasswordAuthentication": "yes" if self.password_auth else "no",
            "KbdInteractiveAuthentication": "no",
            "PubkeyAuthentication": "yes",
            "TrustedUserCAKeys": f"{self.ca_key}.pub",
            "AuthorizedKeysFile": ".ssh/authorized_keys",
            "AllowTcpForwarding": "yes",
            "X11Forwarding": "no",
            "PermitRootLogin": "no",
            "MaxAuthTries": "6",
            "StrictModes": "yes",
            "AcceptEnv": "LANG LC_*",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "Subsystem": "sftp internal-sftp",
        }
        by_lower = {k.lower(): k for k in lines}
        for key, value in self.extra_config.items():
            lines[by_lower.get(key.lower(), key)] = value
        return {k: v for k, v in lines.items() if v is not None}

    def _config_text(self) -> str:
        host_keys = [f"HostKey {self.dir / name}" for name in ("host_ed25519", "host_rsa")]
        body = [f"{k} {v}" for k, v in self.config().items()]
        return "\n".join([*host_keys, *body]) + "\n"

    def start(self) -> Sshd:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        os.chmod(PRIVSEP_DIR, 0o755)
        self.password = user_password()
        _keygen(
            (self.dir / "host_ed25519", "ed25519"),
            (self.dir / "host_rsa", "rsa"),
            (self.ca_key, "ed25519"),
            (self.client_key, "ed25519"),
        )
        self.host_key_pub = _public_key(self.dir / "host_ed25519.pub")
        self._authorized = f"{_public_key(Path(f'{self.client_key}.pub'))} {self.dir.name}"
        _authorize(self._authorized)
        self.port = free_port()
        self.known_hosts.write_text(self.known_hosts_line() + "\n")
        self.config_path.write_text(self._config_text())
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self._proc.returncode}):\n{self.log()}")
            if _banner(self.host, self.port).startswith(b"SSH-2.0-"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not answer in time:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End sshd and every process it forked, forget the client key, delete the
        directory. Idempotent."""
        if self._proc is not None:
            _stop_tree(self._proc)
            self._proc = None
        if self._authorized is not None:
            _unauthorize(self._authorized)
            self._authorized = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        """Everything sshd (and the processes it forked) logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_key_pub}"

    def client_options(self, identity: Path | None = None) -> list[str]:
        """Options for OpenSSH's ssh, sftp and scp: no user config, this server's port and
        user, its host key pinned, no prompts, only ``identity`` (default the client
        key; its ``-cert.pub`` is offered too when it exists)."""
        options = {
            "Port": str(self.port),
            "User": self.user,
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "IdentityFile": str(identity or self.client_key),
        }
        args = ["-F", "/dev/null"]
        for key, value in options.items():
            args += ["-o", f"{key}={value}"]
        return args


# The `sshd_factory` fixture: keyword arguments as Sshd's, returns it started.
SshdFactory = Callable[..., Sshd]


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """The session's shared sshd (password and key auth, the user CA trusted). Tests
    share it: leave its config and the account's files alone."""
    with Sshd() as server:
        yield server


@pytest.fixture
def sshd_factory() -> Iterator[SshdFactory]:
    """Start sshd servers for one test: ``sshd_factory(password_auth=False)``; keyword
    arguments are Sshd's. All of them are stopped and deleted after the test."""
    started: list[Sshd] = []

    def make(**options: Any) -> Sshd:
        server = Sshd(**options)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in reversed(started):
            server.stop()


# --- the shared account -----------------------------------------------------------------

_password: str | None = None


@contextmanager
def _account_lock() -> Iterator[None]:
    """Serialise changes to USER across threads and test processes."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with (STATE_DIR / f"{USER}.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _account() -> pwd.struct_passwd:
    """USER, created on first use (a login shell: sshd runs commands with it). Call
    under the lock."""
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        _root(["useradd", "--create-home", "--shell", "/bin/bash", USER])
        account = pwd.getpwnam(USER)
    if account.pw_shell != "/bin/bash":
        _root(["usermod", "--shell", "/bin/bash", USER])
        account = pwd.getpwnam(USER)
    return account


def user_password() -> str:
    """The account's password, the same for every server and every test process on the
    machine: generated once (kept in STATE_DIR, root only) and set with chpasswd once
    per process. Setting it also unlocks the account, which useradd leaves locked; sshd
    without PAM refuses even keys for a locked account."""
    global _password
    if _password is None:
        with _account_lock():
            _account()
            stored = STATE_DIR / f"{USER}.password"
            if not stored.exists() or not stored.read_text().strip():
                _replace(stored, secrets.token_urlsafe(18) + "\n", mode=0o600)
            password = stored.read_text().strip()
            _root(["chpasswd"], input=f"{USER}:{password}\n")
            _password = password
    return _password


def _authorized_keys() -> Path:
    """The account's authorized_keys, with the modes StrictModes insists on: home and
    ~/.ssh not writable by group or others, ~/.ssh and the file owned by the user. Call
    under the lock."""
    account = _account()
    home = Path(account.pw_dir)
    os.chmod(home, home.stat().st_mode & 0o755)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.touch(mode=0o600)
    for path, mode in ((ssh_dir, 0o700), (keys, 0o600)):
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, mode)
    return keys


def _authorize(line: str) -> None:
    with _account_lock(), _authorized_keys().open("a") as f:
        f.write(line + "\n")


def _unauthorize(line: str) -> None:
    """Drop one line, replacing the file whole: other servers read it meanwhile."""
    with _account_lock():
        keys = _authorized_keys()
        kept = [k for k in keys.read_text().splitlines() if k and k != line]
        st = keys.stat()
        _replace(keys, "".join(k + "\n" for k in kept), mode=0o600, owner=(st.st_uid, st.st_gid))


def _replace(path: Path, text: str, *, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Write ``path`` atomically (a sibling file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def _root(cmd: list[str], input: str | None = None) -> None:
    """Run an account tool (useradd, usermod, chpasswd); raise with its output."""
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()}")


# --- keys and processes -----------------------------------------------------------------


def _keygen(*keys: tuple[Path, str]) -> None:
    """Make unencrypted key pairs (path, type) side by side: RSA alone can take a second
    or two."""
    procs = [
        subprocess.Popen(
            [SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for path, kind in keys
    ]
    for proc, (path, _) in zip(procs, keys, strict=True):
        out, _ = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh-keygen failed for {path}: {out.decode(errors='replace')}")


def _public_key(pub: Path) -> str:
    """``type base64`` from a .pub file, without its comment."""
    kind, blob, *_ = pub.read_text().split()
    return f"{kind} {blob}"


def _banner(host: str, port: int) -> bytes:
    """The server's first line, or b"" if it does not answer."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return b""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[1], []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Stop sshd's connections, then sshd. Each connection's sshd calls setsid(), so it
    and the user's commands are outside the listener's process group: signal them by
    pid, and SIGKILL what is still alive after STOP_TIMEOUT_S."""
    pids = _descendants(proc.pid)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if (st := _stat(p)) is not None and st[0] != "Z"]
        time.sleep(0.02)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    stop_group(proc)


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)
