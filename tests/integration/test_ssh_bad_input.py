"""Bad input on the SSH listener: a client that never finishes its login, one that sends
no SSH at all or an absurd packet, one that tries password after password. That client
alone is refused or closed; everyone else carries on, and the refusals are recorded."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.sshd import Sshd
from tests.integration.sshgw import SshGateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[SshGateway]:
    g = SshGateway(
        tmp_path_factory.mktemp("sshbad"),
        sshd,
        extra={"listeners": {"ssh": {"login_timeout": 2, "max_auth_tries": 3}}},
    ).start()
    yield g
    g.stop()


def _still_serves(gw: SshGateway) -> None:
    r = gw.ssh(gw.token("alice"), "echo fine")
    assert r.returncode == 0 and r.stdout.strip() == "fine", r.stderr


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_client_that_never_logs_in_is_closed_and_others_go_on(gw: SshGateway) -> None:
    idle = socket.create_connection(("127.0.0.1", gw.port))
    half = socket.create_connection(("127.0.0.1", gw.port))
    try:
        half.sendall(b"SSH-2.0-stuck_client\r\n")  # a banner, then nothing
        _still_serves(gw)  # while both hang
        started = time.monotonic()
        assert _closed_within(idle, 10) and _closed_within(half, 10)
        assert time.monotonic() - started < 8  # the login timeout (2 s), not forever
    finally:
        idle.close()
        half.close()
    _still_serves(gw)


def test_garbage_and_absurd_packets_close_that_client_only(gw: SshGateway) -> None:
    junk = socket.create_connection(("127.0.0.1", gw.port))
    try:
        junk.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + b"\x00\xff" * 2000)
        assert _closed_within(junk, 10)
    finally:
        junk.close()
    huge = socket.create_connection(("127.0.0.1", gw.port))
    try:
        huge.sendall(b"SSH-2.0-huge\r\n")
        huge.recv(256)  # the gateway's banner
        huge.sendall(struct.pack(">I", 0x7FFFFFF0) + b"\x04" + b"\x00" * 64)
        assert _closed_within(huge, 10)
    finally:
        huge.close()
    _still_serves(gw)


def test_too_many_wrong_tokens_close_the_connection(gw: SshGateway, tmp_path: Path) -> None:
    """OpenSSH's ssh asked to try ten times on one connection (the prompt answered with
    a wrong token each time): the gateway closes it after max_auth_tries (3)."""
    before = len(gw.gw.entries("auth.fail"))
    r = subprocess.run(
        ["ssh", *gw.ssh_options(NumberOfPasswordPrompts="10",
                                PreferredAuthentications="password"),
         "web@127.0.0.1", "echo no"],
        capture_output=True, text=True, env=gw.env("lgt_wrong-token"), timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 255 and "no" not in r.stdout
    # the refusals are submitted as they happen; the ledger may take a moment to have them
    deadline = time.monotonic() + 10
    while len(fails := gw.gw.entries("auth.fail")[before:]) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(fails) == 3, fails  # then the connection was gone
    assert all(f["request"]["protocol"] == "ssh" for f in fails)  # type: ignore[index]
    assert not any("lgt_wrong" in str(f) for f in fails)  # no presented secret recorded
    _still_serves(gw)
