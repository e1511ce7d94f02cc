"""A gateway in front of a real sshd, and the SSH clients people point at it.

`SshGateway` starts a ``ledgergate serve`` with one ``ssh`` connection (``web``) to an
`Sshd` (the gateway logs in as the test account with the sshd fixture's client key,
the host key pinned), issues tokens through the CLI as an admin would, and builds the
command lines of OpenSSH's ssh, sftp and scp aimed at the gateway: the gateway's host
key pinned, the token given at the password prompt through ``SSH_ASKPASS`` (as a person
would type it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.gateway import Gateway, free_port
from tests.integration.sshd import Sshd


class SshGateway:
    def __init__(
        self,
        workdir: Path,
        sshd: Sshd,
        *,
        connection: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.sshd = sshd
        self.workdir = workdir
        self.port = free_port()
        conn = {
            "name": "web",
            "type": "ssh",
            "host": sshd.host,
            "port": sshd.port,
            "host_key": sshd.host_key_pub,
            "credentials": {"user": sshd.user, "private_key": f"file:{sshd.client_key}"},
            **(connection or {}),
        }
        more = dict(extra or {})
        listeners = dict(more.pop("listeners", {}))
        ssh_listener = {"address": f"127.0.0.1:{self.port}", **listeners.pop("ssh", {})}
        self.gw = Gateway(
            workdir,
            [conn],
            env=env,
            extra={
                "listeners": {"ssh": ssh_listener, **listeners},
                **more,
            },
        )
        self.askpass = workdir / "askpass.sh"
        self.known_hosts = workdir / "gateway_known_hosts"

    def start(self) -> SshGateway:
        self.gw.start()
        key = self.gw.data_dir / "keys" / "ssh_host_ed25519"
        pub = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.host_key_line = pub
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub}\n")
        self.askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$LG_TOKEN"\n')
        self.askpass.chmod(0o700)
        return self

    def stop(self) -> None:
        self.gw.stop()

    def token(self, identity: str = "alice", ttl: str = "1h", *more: str) -> str:
        return self.gw.token(identity, "user", ttl, *more)

    def ssh_options(self, **over: str) -> list[str]:
        """OpenSSH options: no user config, the gateway's key pinned, the token typed at
        the password prompt (``SSH_ASKPASS``), no keys offered; ``over`` replaces some."""
        options = {
            "Port": str(self.port),
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "PubkeyAuthentication": "no",
            "PreferredAuthentications": "keyboard-interactive,password",
            "IdentityAgent": "none",
            "NumberOfPasswordPrompts": "1",
            **over,
        }
        args = ["-F", "/dev/null"]
        for k, v in options.items():
            args += ["-o", f"{k}={v}"]
        return args

    def env(self, token: str) -> dict[str, str]:
        return {
            **os.environ,
            "LG_TOKEN": token,
            "SSH_ASKPASS": str(self.askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": ":0",
        }

    def ssh(
        self, token: str, command: str, *flags: str, target: str = "web", timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """``ssh -p PORT web@127.0.0.1 COMMAND`` as a person runs it."""
        return subprocess.run(
            ["ssh", *self.ssh_options(), *flags, f"{target}@127.0.0.1", command],
            capture_output=True,
            text=True,
            env=self.env(token),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
