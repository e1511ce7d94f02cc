"""SFTP, scp (both protocols) and rsync through the gateway with OpenSSH's clients and
paramiko: files arrive intact, every operation is on the ledger with its path and
outcome, each file's SHA-256 and size as it passed, and a guardrail on paths refuses
writes under a read-only tree with an SFTP status naming the rule."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.integration.sshd import Sshd
from tests.integration.sshgw import SshGateway

RO = "/tmp/lg-readonly"
POLICY = {
    "policy": {
        "rules": [
            {
                "id": "ro-tree",
                "deny": {"operations": ["write"], "paths": [f"{RO}/*", RO]},
                "message": "this tree is read-only through the gateway",
            }
        ]
    }
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[SshGateway]:
    g = SshGateway(tmp_path_factory.mktemp("sftpgw"), sshd, extra=POLICY).start()
    g.token_ = g.token("alice")  # type: ignore[attr-defined]
    yield g
    g.stop()


def _run(gw: SshGateway, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, env=gw.env(gw.token_), timeout=120,  # type: ignore[attr-defined]
        stdin=subprocess.DEVNULL, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _sftp(gw: SshGateway, batch: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    f = tmp / "batch"
    f.write_text(batch)
    # -b makes sftp ask ssh for BatchMode (no prompts); the first value given wins, so
    # an earlier BatchMode=no lets the token be typed at the prompt (SSH_ASKPASS)
    return _run(gw, ["sftp", *gw.ssh_options(BatchMode="no"), "-b", str(f), "web@127.0.0.1"])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _host_dir(gw: SshGateway, tag: str) -> str:
    d = f"/tmp/lg-sftp-{tag}-{time.time_ns()}"
    r = gw.ssh(gw.token_, f"mkdir -p {d} && echo ok")  # type: ignore[attr-defined]
    assert r.stdout.strip() == "ok", r.stderr
    return d


def test_sftp_put_get_and_operations_are_recorded(gw: SshGateway, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    d = _host_dir(gw, "put")
    back = tmp_path / "back.bin"
    r = _sftp(
        gw,
        f"put {src} {d}/data.bin\nmkdir {d}/sub\nrename {d}/data.bin {d}/sub/moved.bin\n"
        f"get {d}/sub/moved.bin {back}\nls {d}/sub\nrm {d}/sub/moved.bin\nrmdir {d}/sub\n",
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert _sha(back) == _sha(src)
    gw.gw.settle()
    cmds = [e for e in gw.gw.entries("command") if str(e["command"]["op"]).startswith("sftp:")]  # type: ignore[index]
    ops = {e["command"]["op"] for e in cmds}  # type: ignore[index]
    assert {"sftp:open", "sftp:mkdir", "sftp:remove", "sftp:rmdir"} <= ops
    assert any(o.startswith("sftp:extended:posix-rename") or o == "sftp:rename" for o in ops)
    put_open = next(e for e in cmds if e["command"]["op"] == "sftp:open"
                    and e["command"]["path"] == f"{d}/data.bin")  # type: ignore[index]  # fmt: skip
    assert "write" in put_open["command"]["detail"]["mode"]  # type: ignore[index]
    results = {(e["command"]["seq"], e["outcome"]) for e in gw.gw.entries("command.result")}  # type: ignore[index]
    assert (put_open["command"]["seq"], "ok") in results  # type: ignore[index]
    closed = {e["file"]["path"]: e["file"] for e in gw.gw.entries("file.closed")}  # type: ignore[index]
    up, down = closed[f"{d}/data.bin"], closed[f"{d}/sub/moved.bin"]
    assert up["sha256_written"] == _sha(src) and up["bytes_written"] == src.stat().st_size
    assert up["sequential"] is True
    assert down["sha256_read"] == _sha(src) and down["bytes_read"] == src.stat().st_size
    # the paths are searchable, as statements are
    found = json.loads(gw.gw.cli("search", "moved.bin", "--json").stdout)
    whats = [h["what"] for h in found]
    assert any(w.startswith("ssh #") and "sftp:open" in w and "moved.bin" in w for w in whats)
    chunks = [e["chunk"] for e in gw.gw.entries("chunk") if e["chunk"].get("stream") == "write"]  # type: ignore[index]
    assert (
        sum(c["size"] for c in chunks if c["command"] == put_open["command"]["seq"])
        == src.stat().st_size
    )  # type: ignore[index]


def test_a_write_under_a_read_only_tree_is_refused_with_the_rule(
    gw: SshGateway, tmp_path: Path
) -> None:
    gw.ssh(gw.token_, f"mkdir -p {RO} && echo keep > {RO}/keep.txt")  # type: ignore[attr-defined]
    src = tmp_path / "x.txt"
    src.write_text("nope\n")
    r = _sftp(gw, f"put {src} {RO}/x.txt\n", tmp_path)
    assert r.returncode != 0 and "ermission denied" in r.stderr
    r = _sftp(gw, f"-rm {RO}/keep.txt\nget {RO}/keep.txt {tmp_path}/keep.txt\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "keep.txt").read_text() == "keep\n"  # reading is allowed, removing not
    assert gw.ssh(gw.token_, f"ls {RO}").stdout.split() == ["keep.txt"]  # type: ignore[attr-defined]
    gw.gw.settle()
    blocks = [
        b for b in gw.gw.entries("decision.block") if str(b["command"]["op"]).startswith("sftp:")
    ]  # type: ignore[index]
    assert {b["command"]["op"] for b in blocks} >= {"sftp:open", "sftp:remove"}  # type: ignore[index]
    assert all(b["decision"]["rule"] == "ro-tree" for b in blocks)  # type: ignore[index]


def test_scp_both_protocols_and_rsync(gw: SshGateway, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(300_000))
    d = _host_dir(gw, "scp")
    opts = gw.ssh_options()
    r = _run(gw, ["scp", *opts, str(src), f"web@127.0.0.1:{d}/modern.bin"])
    assert r.returncode == 0, r.stderr
    r = _run(gw, ["scp", "-O", *opts, str(src), f"web@127.0.0.1:{d}/legacy.bin"])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    out.mkdir()
    r = _run(gw, ["scp", "-O", *opts, f"web@127.0.0.1:{d}/modern.bin", str(out / "a.bin")])
    assert r.returncode == 0, r.stderr
    assert _sha(out / "a.bin") == _sha(src)
    ssh_cmd = " ".join(["ssh", *opts])
    r = _run(
        gw, ["rsync", "-a", "-e", ssh_cmd, f"web@127.0.0.1:{d}/legacy.bin", str(out / "r.bin")]
    )
    assert r.returncode == 0, r.stderr
    assert _sha(out / "r.bin") == _sha(src)
    gw.gw.settle()
    texts = [str(e["command"].get("text", "")) for e in gw.gw.entries("command")]  # type: ignore[union-attr]
    assert any(t.startswith("scp -t ") for t in texts)  # legacy scp is an exec command
    assert any(t.startswith("rsync --server") for t in texts)
    closed = {e["file"]["path"]: e["file"] for e in gw.gw.entries("file.closed")}  # type: ignore[index]
    assert closed[f"{d}/modern.bin"]["sha256_written"] == _sha(src)  # modern scp is SFTP


def test_paramiko_sftp(gw: SshGateway, tmp_path: Path) -> None:
    import base64

    d = _host_dir(gw, "pk")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key(data=base64.b64decode(gw.host_key_line.split()[1]))
    client.get_host_keys().add(f"[127.0.0.1]:{gw.port}", "ssh-ed25519", key)
    client.connect("127.0.0.1", gw.port, username="web", password=gw.token_,  # type: ignore[attr-defined]
                   allow_agent=False, look_for_keys=False)  # fmt: skip
    try:
        sftp = client.open_sftp()
        payload = os.urandom(200_000)
        with sftp.open(f"{d}/p.bin", "wb") as f:
            f.write(payload)
        with sftp.open(f"{d}/p.bin", "rb") as f:
            assert f.read() == payload
        assert sftp.listdir(d) == ["p.bin"]
        with pytest.raises(PermissionError):
            sftp.open(f"{RO}/p.bin", "wb")
        sftp.close()
    finally:
        client.close()
    gw.gw.settle()
    closed = [e["file"] for e in gw.gw.entries("file.closed") if e["file"]["path"] == f"{d}/p.bin"]  # type: ignore[index]
    assert any(c["sha256_written"] == hashlib.sha256(payload).hexdigest() for c in closed)


@pytest.fixture(autouse=True, scope="module")
def _clean_ro() -> Iterator[None]:
    yield
    shutil.rmtree(RO, ignore_errors=True)


def test_paths_are_decided_as_the_host_resolves_them(gw: SshGateway, tmp_path: Path) -> None:
    """``//tree/x``, ``/tmp/../tree/x`` and a path relative to the working directory
    name the same file as ``/tree/x``: a rule on the tree holds for all of them."""
    import base64

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key(data=base64.b64decode(gw.host_key_line.split()[1]))
    client.get_host_keys().add(f"[127.0.0.1]:{gw.port}", "ssh-ed25519", key)
    client.connect("127.0.0.1", gw.port, username="web", password=gw.token_,  # type: ignore[attr-defined]
                   allow_agent=False, look_for_keys=False)  # fmt: skip
    try:
        sftp = client.open_sftp()
        gw.ssh(gw.token_, f"mkdir -p {RO}")  # type: ignore[attr-defined]
        for p in (f"/{RO}/a.txt", f"/tmp/..{RO}/b.txt", f"{RO}/./c.txt"):
            with pytest.raises(PermissionError):
                sftp.open(p, "wb")
        sftp.chdir("/tmp")  # paramiko then sends paths relative to it... as absolute ones
        with pytest.raises(PermissionError):
            sftp.open(f"..{RO}/d.txt", "wb")
        sftp.close()
    finally:
        client.close()
    assert gw.ssh(gw.token_, f"ls {RO}").stdout.split() in ([], ["keep.txt"])  # type: ignore[attr-defined]
