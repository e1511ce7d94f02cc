"""The sshd fixture against real clients (OpenSSH ssh and sftp, asyncssh, paramiko): key,
certificate and password logins work, wrong credentials are refused, the log names what
was accepted, options change the server's real config, and stop() leaves nothing behind."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
from pathlib import Path

import asyncssh
import paramiko
import pytest

from tests.integration.sshd import SSHD, USER, Sshd, SshdFactory

KEY_ID = "alice@ledgergate session 42"


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=10, check=False
    )


def wait_for_log(server: Sshd, text: str, timeout_s: float = 3.0) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in (log := server.log()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the sshd log:\n{log}")
        time.sleep(0.02)
    return log


def authorized_keys() -> str:
    return (Path("~" + USER).expanduser() / ".ssh" / "authorized_keys").read_text()


def test_openssh_logs_in_with_the_client_key(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    r = run(
        "ssh", "-F", "/dev/null",
        "-o", f"UserKnownHostsFile={known}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-p", str(sshd.port),
        "-i", sshd.client_key,
        f"{sshd.user}@{sshd.host}",
        "echo hello",
    )  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    assert sshd.known_hosts_line().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA")
    wait_for_log(sshd, f"Accepted publickey for {USER} from 127.0.0.1")


def test_user_certificate_signed_by_the_ca_logs_in(sshd: Sshd, tmp_path: Path) -> None:
    key = tmp_path / "alice"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).check_returncode()
    # The bare key is in no authorized_keys: refused until the CA signs it.
    refused = run("ssh", *sshd.client_options(key), sshd.host, "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr

    signed = run(
        "ssh-keygen", "-q", "-s", sshd.ca_key, "-I", KEY_ID, "-n", USER, "-V", "+5m",
        f"{key}.pub",
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert Path(f"{key}-cert.pub").exists()
    r = run("ssh", *sshd.client_options(key), sshd.host, "id -un")
    assert (r.returncode, r.stdout) == (0, f"{USER}\n"), r.stderr
    log = wait_for_log(sshd, f'Accepted certificate ID "{KEY_ID}"')
    assert f"Accepted publickey for {USER}" in log and f"ID {KEY_ID} (serial 0)" in log


def test_asyncssh_password_login_and_wrong_password(sshd: Sshd) -> None:
    async def login(password: str) -> str:
        async with asyncssh.connect(
            sshd.host,
            sshd.port,
            username=sshd.user,
            password=password,
            known_hosts=str(sshd.known_hosts),
            client_keys=None,
            agent_path=None,
        ) as conn:
            result = await conn.run("id -un; echo $HOME", check=True)
            return str(result.stdout)

    assert asyncio.run(login(sshd.password)) == f"{USER}\n/home/{USER}\n"
    wait_for_log(sshd, f"Accepted password for {USER} from 127.0.0.1")
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(login(sshd.password + "-wrong"))
    wait_for_log(sshd, f"Failed password for {USER} from 127.0.0.1")


def test_sftp_put_and_get(sshd: Sshd, tmp_path: Path) -> None:
    local = tmp_path / "up.bin"
    local.write_bytes(bytes(range(256)) * 40 + b"ledgergate\n")
    remote = f"lg-sftp-{tmp_path.name}.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"put {local} {remote}\nget {remote} {tmp_path / 'down.bin'}\nrm {remote}\n")
    r = run("sftp", "-b", batch, *sshd.client_options(), sshd.host)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()
    assert not (Path("~" + USER).expanduser() / remote).exists()
    wait_for_log(sshd, "Starting session: subsystem 'sftp' for lgssh")


def test_paramiko_with_pinned_host_key(sshd: Sshd) -> None:
    kind, blob = sshd.host_key_pub.split()
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[{sshd.host}]:{sshd.port}", kind, paramiko.Ed25519Key(data=base64.b64decode(blob))
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            sshd.host,
            sshd.port,
            username=sshd.user,
            key_filename=str(sshd.client_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
        _, stdout, _ = client.exec_command("id -un", timeout=5)
        assert stdout.read() == f"{USER}\n".encode()
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_factory_options_change_the_real_config(sshd: Sshd, sshd_factory: SshdFactory) -> None:
    other = sshd_factory(password_auth=False, extra_config={"MaxStartups": "2", "banner": None})
    effective = run(SSHD, "-T", "-f", other.config_path)
    assert effective.returncode == 0, effective.stderr
    assert "passwordauthentication no" in effective.stdout.splitlines()
    assert "maxstartups 2:30:2" in effective.stdout.splitlines()
    assert other.password == sshd.password  # one account, one password

    async def password_login() -> None:
        async with asyncssh.connect(
            other.host,
            other.port,
            username=other.user,
            password=other.password,
            known_hosts=str(other.known_hosts),
            client_keys=None,
            agent_path=None,
        ):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(password_login())
    # Both servers' keys are authorized at once; each logs in to either server.
    for server, key in ((other, sshd.client_key), (sshd, other.client_key)):
        r = run("ssh", *server.client_options(key), server.host, "echo ok")
        assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


def test_stop_ends_open_sessions_and_cleans_up(sshd: Sshd, sshd_factory: SshdFactory) -> None:
    other = sshd_factory()
    key_line = Path(f"{other.client_key}.pub").read_text().split()[1]
    assert key_line in authorized_keys()
    session = subprocess.Popen(
        ["ssh", *other.client_options(), other.host, "sleep 30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_log(other, "Starting session: command")
        other.stop()
        assert session.wait(5) == 255
    finally:
        session.kill()
        session.wait()
    assert not other.dir.exists()
    assert key_line not in authorized_keys()
    with pytest.raises(OSError):
        socket.create_connection((other.host, other.port), timeout=1).close()
    # The shared server is untouched.
    r = run("ssh", *sshd.client_options(), sshd.host, "echo ok")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
