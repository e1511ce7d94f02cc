"""SSH through the gateway, with a real sshd and the clients people use (OpenSSH's ssh,
asyncssh, paramiko): exec commands and their exit statuses, guardrails on command lines,
the token at the password prompt, and what the ledger says about all of it. The held
key never leaves the gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from tests.integration.sshd import Sshd
from tests.integration.sshgw import SshGateway

POLICY = {
    "policy": {
        "rules": [
            {
                "id": "no-rm-rf",
                "deny": {"commands": ["rm -rf *"]},
                "message": "recursive deletes are not run through the gateway",
            }
        ]
    }
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[SshGateway]:
    g = SshGateway(tmp_path_factory.mktemp("sshgw"), sshd, extra=POLICY).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def token(gw: SshGateway) -> str:
    return gw.token("alice")


def _session_entries(gw: SshGateway, sid: str) -> list[dict[str, object]]:
    return [e for e in gw.gw.entries() if e.get("session_id") == sid]


def _last_session(gw: SshGateway) -> str:
    opens = gw.gw.entries("session.open")
    assert opens, "no session was opened"
    return str(opens[-1]["session_id"])


def test_exec_through_openssh_is_recorded_with_its_exit_status(gw: SshGateway, token: str) -> None:
    r = gw.ssh(token, "echo hello; id -un; echo to-stderr >&2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello", gw.sshd.user]
    assert "to-stderr" in r.stderr
    gw.gw.settle()
    sid = _last_session(gw)
    entries = _session_entries(gw, sid)
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "auth.ok" and kinds[1] == "session.open" and kinds[-1] == "session.close"
    cmd = next(e for e in entries if e["kind"] == "command")
    assert cmd["command"]["op"] == "exec"  # type: ignore[index]
    assert cmd["command"]["text"] == "echo hello; id -un; echo to-stderr >&2"  # type: ignore[index]
    assert cmd["identity"]["subject"] == "alice"  # type: ignore[index]
    chunks = [e["chunk"] for e in entries if e["kind"] == "chunk"]
    out = [c for c in chunks if c["stream"] == "stdout"]  # type: ignore[index]
    err = [c for c in chunks if c["stream"] == "stderr"]  # type: ignore[index]
    assert sum(c["size"] for c in out) == len(r.stdout.encode())  # type: ignore[index]
    assert sum(c["size"] for c in err) == len(b"to-stderr\n")  # type: ignore[index]
    result = next(e for e in entries if e["kind"] == "command.result")
    assert result["exit_status"] == 0 and result["outcome"] == "ok"
    # the command entry came before any of its output
    assert kinds.index("command") < kinds.index("chunk")

    r = gw.ssh(token, "exit 3")
    assert r.returncode == 3
    gw.gw.settle()
    result = next(
        e for e in _session_entries(gw, _last_session(gw)) if e["kind"] == "command.result"
    )
    assert result["exit_status"] == 3 and result["outcome"] == "failed"


def test_a_guardrail_refuses_a_command_line_argv_aware(gw: SshGateway, token: str) -> None:
    marker = f"/tmp/lg-guard-{time.time_ns()}"
    assert gw.ssh(token, f"mkdir -p {marker}/x && echo made").stdout.strip() == "made"
    # flags in another order, behind sudo-like wrappers and a compound line: still rm -rf
    for line in (f"rm -rf {marker}", f"true; nohup rm -f -r {marker}", f"sh -c 'rm -fr {marker}'"):
        r = gw.ssh(token, line)
        assert r.returncode == 1, (line, r.stdout, r.stderr)
        assert "refused by rule no-rm-rf" in r.stderr
        assert "recursive deletes are not run through the gateway" in r.stderr
    assert gw.ssh(token, f"test -d {marker}/x && echo still-there").stdout.strip() == "still-there"
    gw.gw.settle()
    blocked = [e for e in gw.gw.entries("decision.block") if e["command"]["op"] == "exec"]  # type: ignore[index]
    assert len(blocked) >= 3
    assert blocked[-1]["decision"]["rule"] == "no-rm-rf"  # type: ignore[index]
    assert blocked[-1]["command"]["text"] == f"sh -c 'rm -fr {marker}'"  # type: ignore[index]
    assert gw.ssh(token, f"rm -r -- {marker}/x && echo gone").stdout.strip() == "gone"


def test_a_bad_token_is_refused_and_recorded(gw: SshGateway) -> None:
    r = gw.ssh("not-a-token", "echo no")
    assert r.returncode == 255 and "no" not in r.stdout
    gw.gw.indexed()
    fails = gw.gw.entries("auth.fail")
    assert fails and fails[-1]["request"]["protocol"] == "ssh"  # type: ignore[index]
    assert "not-a-token" not in gw.gw.logs()
    # a connection that does not exist is named in the banner
    r = gw.ssh(gw.token("alice"), "echo no", target="nowhere")
    assert r.returncode == 255 and "no SSH connection named 'nowhere'" in r.stderr


def test_asyncssh_and_paramiko_with_the_token_as_password(gw: SshGateway, token: str) -> None:
    async def run() -> tuple[str, int | None]:
        async with asyncssh.connect(
            "127.0.0.1",
            gw.port,
            username="alice+web",
            password=token,
            known_hosts=([asyncssh.import_public_key(gw.host_key_line)], [], []),
            client_keys=None,
            agent_path=None,
            config=None,
        ) as conn:
            r = await conn.run("printf '%s' \"$((6*7))\"; exit 5", check=False)
            return str(r.stdout), r.exit_status

    out, status = asyncio.run(run())
    assert (out, status) == ("42", 5)

    async def wrong_identity() -> None:
        async with asyncssh.connect(
            "127.0.0.1", gw.port, username="bob+web", password=token,
            known_hosts=None, client_keys=None, agent_path=None, config=None,
        ):  # fmt: skip
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(wrong_identity())

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key(data=_key_blob(gw.host_key_line))
    client.get_host_keys().add(f"[127.0.0.1]:{gw.port}", "ssh-ed25519", key)
    client.connect(
        "127.0.0.1", gw.port, username="web", password=token, allow_agent=False,
        look_for_keys=False,
    )  # fmt: skip
    try:
        _, stdout, _ = client.exec_command("uname -s")
        assert stdout.read().decode().strip() == "Linux"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def _key_blob(line: str) -> bytes:
    import base64

    return base64.b64decode(line.split()[1])


def test_port_forwarding_is_refused_and_recorded(gw: SshGateway, token: str) -> None:
    async def run() -> None:
        async with asyncssh.connect(
            "127.0.0.1", gw.port, username="web", password=token,
            known_hosts=None, client_keys=None, agent_path=None, config=None,
        ) as conn:  # fmt: skip
            with pytest.raises(asyncssh.ChannelOpenError, match="port forwarding is not allowed"):
                await conn.open_connection("127.0.0.1", gw.sshd.port)

    asyncio.run(run())
    gw.gw.settle()
    blocked = [e for e in gw.gw.entries("decision.block") if e["command"]["op"] == "port-forward"]  # type: ignore[index]
    assert blocked and blocked[-1]["command"]["target"] == f"127.0.0.1:{gw.sshd.port}"  # type: ignore[index]


def test_the_held_key_is_nowhere_but_the_gateway(gw: SshGateway, token: str) -> None:
    assert gw.ssh(token, "true").returncode == 0
    gw.gw.settle()
    key = Path(gw.sshd.client_key).read_text()
    secret_line = key.strip().splitlines()[1]  # a line of the private key's base64
    assert secret_line not in gw.gw.logs()
    assert secret_line.encode() not in gw.gw.store_bytes()
