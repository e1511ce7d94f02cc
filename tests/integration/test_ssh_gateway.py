"""SSH through the gateway, with a real sshd and the clients people use (OpenSSH's ssh,
asyncssh, paramiko): exec commands and their exit statuses, guardrails on command lines,
the token at the password prompt, and what the ledger says about all of it. The held
key never leaves the gateway."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import paramiko
import pexpect
import pytest

from tests.integration.gateway import BIN, free_port
from tests.integration.reviewapi import ReviewApi, in_background
from tests.integration.sshd import Sshd
from tests.integration.sshgw import SshGateway

POLICY = {
    "roles": {"reviewer": {"groups": ["ops"]}},
    "policy": {
        "rules": [
            {
                "id": "no-rm-rf",
                "deny": {"commands": ["rm -rf *"]},
                "message": "recursive deletes are not run through the gateway",
            },
            {
                "id": "held-touch",
                "review": {
                    "kind": "command",
                    "when": {"commands": ["touch /tmp/lg-held-*"]},
                    "reviewers": ["ops"],
                    "timeout": "20s",
                },
            },
        ]
    },
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[SshGateway]:
    api = free_port()
    extra = {**POLICY, "listeners": {"api": {"address": f"127.0.0.1:{api}"}}}
    g = SshGateway(tmp_path_factory.mktemp("sshgw"), sshd, extra=extra).start()
    g.api_port = api  # type: ignore[attr-defined]
    g.api_url = f"https://localhost:{api}"  # type: ignore[attr-defined]
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
    Path(marker).rmdir()  # the host is this machine: its /tmp is ours


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
            with pytest.raises(
                asyncssh.ChannelOpenError, match=r"port forwarding to .* is not allowed"
            ):
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


def _spawn_shell(gw: SshGateway, token: str) -> pexpect.spawn:
    child = pexpect.spawn(
        "ssh",
        [*gw.ssh_options(), "-tt", "web@127.0.0.1"],
        env=gw.env(token),
        encoding="utf-8",
        timeout=15,
        dimensions=(30, 100),
    )
    child.expect(r"\$ ")
    return child


def test_an_interactive_shell_with_a_pty_resizes_exits_and_replays(
    gw: SshGateway, token: str, tmp_path: Path
) -> None:
    child = _spawn_shell(gw, token)
    seen = io.StringIO()
    child.logfile_read = seen
    child.sendline("sleep 2.5; echo $((6*7))-$TERM")
    child.expect("42-")
    child.expect(r"\$ ")
    child.setwinsize(40, 132)
    child.sendline("stty size")
    child.expect("40 132")
    child.expect(r"\$ ")
    child.sendline("exit 7")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7
    gw.gw.settle()
    entries = _session_entries(gw, _last_session(gw))
    cmd = next(e for e in entries if e["kind"] == "command")
    assert cmd["command"]["op"] == "shell"  # type: ignore[index]
    assert cmd["command"]["pty"]["cols"] == 100 and cmd["command"]["pty"]["rows"] == 30  # type: ignore[index]
    resize = [e for e in entries if e["kind"] == "terminal.resize"]
    assert resize and resize[-1]["terminal"] == {"cols": 132, "rows": 40}
    out = [e["chunk"] for e in entries if e["kind"] == "chunk" and e["chunk"]["stream"] == "stdout"]  # type: ignore[index]
    assert out and all("payload" in c for c in out)  # kept for replay (redacted level)
    typed = [
        e["chunk"] for e in entries if e["kind"] == "chunk" and e["chunk"]["stream"] == "stdin"
    ]  # type: ignore[index]
    assert typed and not any("payload" in c for c in typed)  # keystrokes: digests only
    result = next(e for e in entries if e["kind"] == "command.result")
    assert result["exit_status"] == 7

    # the replay shows what the terminal showed, and the asciicast file holds it all
    sid = str(cmd["session_id"])
    r = gw.gw.cli("sessions", "replay", sid, "--no-wait")
    assert "42-" in r.stdout and "exited 7" in r.stdout
    cast = tmp_path / "shell.cast"
    gw.gw.cli("sessions", "replay", sid, "--asciicast", str(cast))
    lines = [json.loads(x) for x in cast.read_text().splitlines()]
    header, events = lines[0], lines[1:]
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    shown = "".join(ev[2] for ev in events if ev[1] == "o")
    # what the client saw from the host (after the first prompt; the last line is the
    # ssh client's own) is, byte for byte, in the recording
    from_host = seen.getvalue().split("Connection to 127.0.0.1 closed.")[0]
    assert "42-" in from_host and from_host in shown
    assert ["r", "132x40"] in [ev[1:] for ev in events]
    marks = [ev[2] for ev in events if ev[1] == "m"]
    assert marks and marks[0].startswith(f"ledger checkpoint {gw.gw.stream}:")
    times = [ev[0] for ev in events]
    assert times == sorted(times) and times[-1] >= 2.5  # the original timing


def test_revoking_the_token_ends_an_open_shell_at_once(gw: SshGateway) -> None:
    token = gw.token("carol")
    child = _spawn_shell(gw, token)
    child.sendline("echo before")
    child.expect("before")
    token_id = next(
        t["id"] for t in json.loads(gw.gw.cli("token", "list", "--json").stdout)
        if t["identity"] == "carol"
    )  # fmt: skip
    gw.gw.cli("token", "revoke", token_id)
    child.expect("ledgergate: session ended: ", timeout=10)
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus != 0
    gw.gw.settle()
    sid = _last_session(gw)
    kinds = [e["kind"] for e in _session_entries(gw, sid)]
    assert "session.terminated" in kinds and kinds[-1] == "session.close"


def _keypair(tmp_path: Path, name: str = "id_ed25519") -> Path:
    key = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def _ssh_with_key(gw: SshGateway, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    options = gw.ssh_options(
        PubkeyAuthentication="yes", PreferredAuthentications="publickey", BatchMode="yes",
        IdentitiesOnly="yes",
    )  # fmt: skip
    return subprocess.run(
        ["ssh", *options, "-i", str(key), "web@127.0.0.1", command],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_registered_public_key_logs_in_until_revoked(gw: SshGateway, tmp_path: Path) -> None:
    key = _keypair(tmp_path)
    out = gw.gw.cli(
        "token", "create", "--identity", "deployer", "--kind", "service", "--ttl", "1h",
        "--ssh-key", f"{key}.pub",
    ).stdout  # fmt: skip
    token_id = re.search(r"registered as (tok_[0-9a-f]+)", out).group(1)  # type: ignore[union-attr]
    r = _ssh_with_key(gw, key, "echo key-ok")
    assert r.returncode == 0 and r.stdout.strip() == "key-ok", r.stderr
    gw.gw.settle()
    ok = gw.gw.entries("auth.ok")[-1]
    assert ok["via"] == "ssh_key" and ok["token_id"] == token_id
    assert ok["identity"]["subject"] == "deployer"  # type: ignore[index]
    gw.gw.cli("token", "revoke", token_id)
    r = _ssh_with_key(gw, key, "echo no")
    assert r.returncode == 255 and "key-ok" not in r.stdout
    # an unknown key is refused too
    assert _ssh_with_key(gw, _keypair(tmp_path, "other"), "echo no").returncode == 255


def test_a_certificate_from_the_login_works_until_the_login_ends(
    gw: SshGateway, tmp_path: Path
) -> None:
    login = gw.token("dana", "30m")
    key = _keypair(tmp_path)
    r = httpx.post(
        f"{gw.api_url}/api/v1/ssh/certificate",  # type: ignore[attr-defined]
        verify=_ca(gw),
        headers={"Authorization": f"Bearer {login}"},
        json={"public_key": Path(f"{key}.pub").read_text()},
    )
    assert r.status_code == 201, r.text
    got = r.json()
    Path(f"{key}-cert.pub").write_text(got["certificate"] + "\n")
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", f"{key}-cert.pub"], capture_output=True, text=True, check=True
    ).stdout
    assert 'Key ID: "ledgergate dana login tok_' in shown and "ledgergate-login:tok_" in shown
    assert "permit-agent-forwarding" not in shown and "permit-X11-forwarding" not in shown
    r2 = _ssh_with_key(gw, key, "echo cert-ok")
    assert r2.returncode == 0 and r2.stdout.strip() == "cert-ok", r2.stderr
    gw.gw.settle()
    ok = gw.gw.entries("auth.ok")[-1]
    assert ok["via"] == "ssh_certificate" and ok["identity"]["subject"] == "dana"  # type: ignore[index]
    issued = gw.gw.entries("ssh.certificate")[-1]
    assert issued["token_id"] == ok["token_id"] and issued["key_id"] == got["key_id"]
    # the login is revoked: the certificate stops working at once, and says why
    gw.gw.cli("token", "revoke", str(ok["token_id"]))
    r3 = _ssh_with_key(gw, key, "echo no")
    assert r3.returncode == 255 and "certificate's login is not valid: token revoked" in r3.stderr
    # a certificate signed by another CA is nothing to the gateway, even naming a live
    # login (the same one, signed by the gateway's CA, logs in)
    fresh = gw.token("dana", "30m")
    fresh_id = next(
        t["id"] for t in json.loads(gw.gw.cli("token", "list", "--json").stdout)
        if t["identity"] == "dana" and t["revoked_ns"] is None
    )  # fmt: skip
    other_ca = _keypair(tmp_path, "other_ca")
    principals = f"dana,ledgergate-login:{fresh_id}"
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(other_ca), "-I", "x", "-n", principals,
         "-V", "+5m", f"{key}.pub"], check=True,
    )  # fmt: skip
    assert _ssh_with_key(gw, key, "echo no").returncode == 255
    r4 = httpx.post(
        f"{gw.api_url}/api/v1/ssh/certificate",  # type: ignore[attr-defined]
        verify=_ca(gw),
        headers={"Authorization": f"Bearer {fresh}"},
        json={"public_key": Path(f"{key}.pub").read_text()},
    )
    Path(f"{key}-cert.pub").write_text(r4.json()["certificate"] + "\n")
    assert _ssh_with_key(gw, key, "echo cert-again").stdout.strip() == "cert-again"


def test_a_session_certificate_names_the_identity_and_session_in_the_hosts_log(
    tmp_path: Path, sshd: Sshd
) -> None:
    """The gateway holds a user CA the host trusts (TrustedUserCAKeys): each session logs
    in with a fresh key and a certificate whose key id names the identity and the ledger
    session, so the host's own log points back at the ledger."""
    g = SshGateway(
        tmp_path / "gw",
        sshd,
        connection={
            "credentials": {"user": sshd.user, "certificate_authority": f"file:{sshd.ca_key}"}
        },
    ).start()
    try:
        token = g.token("erin")
        r = g.ssh(token, "echo via-cert")
        assert r.returncode == 0 and r.stdout.strip() == "via-cert", r.stderr
        g.gw.settle()
        opened = g.gw.entries("session.open")[-1]
        sid = str(opened["session_id"])
        assert opened["target"]["login"] == "session certificate"  # type: ignore[index]
        deadline = time.monotonic() + 5
        while f"ledgergate erin session {sid}" not in sshd.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"ledgergate erin session {sid}" in sshd.log()
        ca_text = Path(sshd.ca_key).read_text().strip().splitlines()[1]
        assert ca_text not in g.gw.logs() and ca_text.encode() not in g.gw.store_bytes()
    finally:
        g.stop()


def _ca(gw: SshGateway) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(gw.gw.data_dir / "tls" / "server.crt"))


def test_a_held_command_runs_after_approval_and_a_denied_one_never(gw: SshGateway) -> None:
    token = gw.token("erin")
    api = ReviewApi(gw.api_port, str(gw.gw.data_dir / "tls" / "server.crt"),  # type: ignore[attr-defined]
                    gw.token("bob", "1h", "--group", "ops"))  # fmt: skip
    marker = f"/tmp/lg-held-{time.time_ns()}"
    try:
        t, out = in_background(lambda: gw.ssh(token, f"touch {marker} && echo ran"))
        rv = api.pending()
        assert rv["rule_id"] == "held-touch" and rv["requester"]["subject"] == "erin"
        assert rv["statement"] == f"touch {marker} && echo ran"
        assert gw.ssh(token, f"test -e {marker} || echo absent").stdout.strip() == "absent"
        api.decide(rv["id"], "approve", "INC-9")
        t.join(30)
        assert out["result"].returncode == 0 and out["result"].stdout.strip() == "ran"
        assert "held for review" in out["result"].stderr or "review" in out["result"].stderr

        t, out = in_background(lambda: gw.ssh(token, f"touch {marker}-2 && echo ran"))
        rv = api.pending()
        api.decide(rv["id"], "deny", "not now")
        t.join(30)
        r = out["result"]
        assert r.returncode == 1 and "not now" in r.stderr and "ran" not in r.stdout
        assert gw.ssh(token, f"test -e {marker}-2 || echo absent").stdout.strip() == "absent"
    finally:
        api.c.close()
        Path(marker).unlink(missing_ok=True)  # the host is this machine
    gw.gw.settle()
    kinds = [e["kind"] for e in gw.gw.entries() if str(e["kind"]).startswith("review.")]
    assert "review.approved" in kinds and "review.denied" in kinds
    blocks = [
        b
        for b in gw.gw.entries("decision.block")
        if b["command"].get("text", "").endswith("-2 && echo ran")
    ]  # type: ignore[union-attr]
    assert blocks and blocks[-1]["decision"]["rule"] == "held-touch"  # type: ignore[index]


def test_a_host_reached_through_an_agent(tmp_path: Path, sshd: Sshd) -> None:
    """``via:``: the gateway reaches the host through ``ledgergate agent`` (here the host's
    name does not even resolve from the gateway); logins, recording and replay as ever."""
    agent_port = free_port()
    g = SshGateway(
        tmp_path / "gw",
        sshd,
        connection={"via": "dc-agent", "host": "web1.unreachable.invalid"},
        extra={"listeners": {"agent": {"address": f"127.0.0.1:{agent_port}"}}},
    ).start()
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            [str(BIN), "agent", "--gateway", f"127.0.0.1:{agent_port}",
             "--token", "env:AGENT_TOKEN", "--target", f"web=127.0.0.1:{sshd.port}",
             "--ca", str(g.gw.data_dir / "tls" / "server.crt"), "--server-name", "localhost"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "AGENT_TOKEN": g.gw.token("dc-agent", "service")},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "connected to the gateway" not in log.read_text():
            assert time.monotonic() < deadline and agent.poll() is None, log.read_text()
            time.sleep(0.1)
        r = g.ssh(g.token("alice"), "echo through-the-agent")
        assert r.returncode == 0 and r.stdout.strip() == "through-the-agent", r.stderr
        g.gw.settle()
        assert g.gw.entries("command")[-1]["command"]["text"] == "echo through-the-agent"  # type: ignore[index]
    finally:
        agent.terminate()
        agent.wait(10)
        g.stop()


def test_a_forward_an_allow_rule_names_is_relayed_and_recorded(tmp_path: Path, sshd: Sshd) -> None:
    """``ssh -L``: refused by default; an allow rule naming ``port-forward`` and the
    destination lets it through, each byte each way on the ledger."""
    import socket
    import threading

    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    echo_port = echo.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                c, _ = echo.accept()
            except OSError:
                return
            with c:
                while data := c.recv(65536):
                    c.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    where = f"127.0.0.1:{echo_port}"
    rule = {"id": "echo-tunnel", "allow": [{"operations": ["port-forward"], "paths": [where]}]}
    g = SshGateway(tmp_path / "gw", sshd, extra={"policy": {"rules": [rule]}}).start()
    local = free_port()
    try:
        token = g.token("alice")
        tunnel = subprocess.Popen(
            ["ssh", *g.ssh_options(), "-N", "-o", "ExitOnForwardFailure=yes",
             "-L", f"127.0.0.1:{local}:127.0.0.1:{echo_port}", "web@127.0.0.1"],
            env=g.env(token), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    s = socket.create_connection(("127.0.0.1", local), timeout=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline and tunnel.poll() is None
                    time.sleep(0.1)
            with s:
                s.sendall(b"hello through the tunnel")
                got = b""
                while len(got) < 24:
                    got += s.recv(100)
            assert got == b"HELLO THROUGH THE TUNNEL"
            # another destination is refused (and the shell still works: the rule only
            # opens this tunnel)
            assert g.ssh(token, "echo shell-ok").stdout.strip() == "shell-ok"
        finally:
            tunnel.terminate()
            tunnel.wait(10)
        g.gw.settle()
        fwd = [e for e in g.gw.entries("command") if e["command"]["op"] == "port-forward"]  # type: ignore[index]
        assert fwd and fwd[-1]["command"]["target"] == f"127.0.0.1:{echo_port}"  # type: ignore[index]
        seq = fwd[-1]["command"]["seq"]  # type: ignore[index]
        chunks = [e["chunk"] for e in g.gw.entries("chunk")
                  if e["chunk"].get("forward") and e["chunk"]["command"] == seq]  # type: ignore[index]  # fmt: skip
        assert sum(c["size"] for c in chunks if c["stream"] == "stdin") == 24
        assert sum(c["size"] for c in chunks if c["stream"] == "stdout") == 24
        done = [e for e in g.gw.entries("command.result") if e["command"]["op"] == "port-forward"]  # type: ignore[index]
        assert done and done[-1]["bytes_c2s"] == 24 and done[-1]["bytes_s2c"] == 24
    finally:
        g.stop()
        echo.close()


def test_a_shell_ends_when_its_token_expires(gw: SshGateway) -> None:
    """No re-check needed: the session ends exactly when the token does."""
    token = gw.token("frank", "4s")
    child = _spawn_shell(gw, token)
    started = time.monotonic()
    child.expect("ledgergate: session ended: ", timeout=15)
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert time.monotonic() - started < 8
    gw.gw.settle()
    ended = [e for e in gw.gw.entries("session.terminated") if e["identity"]["subject"] == "frank"]  # type: ignore[index]
    assert ended and "expire" in str(ended[-1]["reason"])


def test_a_key_only_queried_does_not_stand_for_a_later_certificate_login(
    gw: SshGateway, tmp_path: Path
) -> None:
    """Public keys are public: offering someone's registered key without being able to
    sign, then logging in with one's own certificate, logs in as oneself."""
    victim = _keypair(tmp_path, "victim")
    gw.gw.cli("token", "create", "--identity", "victim", "--kind", "service", "--ttl", "1h",
              "--ssh-key", f"{victim}.pub")  # fmt: skip
    login = gw.token("mallory", "30m")
    mine = _keypair(tmp_path, "mallory")
    r = httpx.post(
        f"{gw.api_url}/api/v1/ssh/certificate",  # type: ignore[attr-defined]
        verify=_ca(gw),
        headers={"Authorization": f"Bearer {login}"},
        json={"public_key": Path(f"{mine}.pub").read_text()},
    )
    cert = asyncssh.import_certificate(r.json()["certificate"])
    my_key = asyncssh.read_private_key(str(mine))
    fake = asyncssh.load_keypairs([my_key])[0]  # claims the victim's key, cannot sign
    fake.public_data = asyncssh.read_public_key(f"{victim}.pub").public_data
    real = asyncssh.load_keypairs([(my_key, cert)])[0]

    async def run() -> str:
        async with asyncssh.connect(
            "127.0.0.1", gw.port, username="web", client_keys=[fake, real], known_hosts=None,
            agent_path=None, config=None, password=None, preferred_auth="publickey",
        ) as conn:  # fmt: skip
            return str((await conn.run("echo in", check=False)).stdout)

    assert asyncio.run(run()).strip() == "in"
    gw.gw.settle()
    ok = gw.gw.entries("auth.ok")[-1]
    assert ok["identity"]["subject"] == "mallory" and ok["via"] == "ssh_certificate"  # type: ignore[index]
