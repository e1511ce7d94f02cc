"""``ledgergate agent``: carry the backend legs of sessions from inside a private network.

Thin: parses the options and runs ``proxy.agent_dialer.run_agent`` until SIGINT/SIGTERM,
or until the gateway refuses the agent's token (exit 1). The token is the agent's own
service-identity token (``env:VAR`` or ``file:PATH``, never echoed); targets name where
each connection's server is, as seen from here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path
from typing import Annotated

import typer

from ledgergate.cli._common import fail
from ledgergate.core.config import ConfigError, split_address
from ledgergate.proxy.agent_dialer import AgentLogin, AgentRefused, Carried, run_agent
from ledgergate.services.config import resolve_secret

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command()
    def agent(
        gateway: Annotated[
            str, typer.Option(help="The gateway's agent listener, HOST:PORT.", show_default=False)
        ],
        token: Annotated[
            str,
            typer.Option(
                help="This agent's token as env:VAR or file:PATH (a service identity's, "
                "named by the via: of the connections it carries).",
                show_default=False,
            ),
        ],
        target: Annotated[
            list[str],
            typer.Option(
                help="CONNECTION=HOST:PORT, where a connection's server is from here; "
                "repeat a connection for each server it may reach (a Kafka cluster's "
                "brokers: the first is where it bootstraps)."
            ),
        ],
        credential: Annotated[
            list[str] | None,
            typer.Option(
                help="CONNECTION=user=NAME,password=env:VAR|file:PATH[,sslmode=MODE]"
                "[,sslrootcert=PATH][,require_auth=M1+M2]: the PostgreSQL credential this "
                "agent logs in with for a connection declared 'credentials: agent:NAME' "
                "(the gateway never holds it).",
                show_default=False,
            ),
        ] = None,
        ca: Annotated[
            Path | None,
            typer.Option(help="CA bundle that signed the gateway's certificate (default: system)."),
        ] = None,
        server_name: Annotated[
            str | None, typer.Option(help="The name on the gateway's certificate.")
        ] = None,
    ) -> None:
        """Dial out to the gateway and carry backend legs for the connections it names."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        try:
            secret = resolve_secret(token, what="--token")
            gw = split_address(gateway, 18444)
            targets: dict[str, list[tuple[str, int]]] = {}
            for t in target:
                name, sep, addr = t.partition("=")
                if not sep or not name:
                    raise ConfigError(f"--target {t!r}: use CONNECTION=HOST:PORT")
                targets.setdefault(name, []).append(split_address(addr))
            logins = dict(_login(c) for c in credential or ())
            for name in logins.keys() - targets.keys():
                raise ConfigError(f"--credential for {name!r}: the connection has no --target")
            carried = Carried(targets, logins)
        except (ConfigError, ValueError) as e:
            fail(str(e), 2)
        assert secret is not None
        tls = ssl.create_default_context(cafile=str(ca) if ca else None)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            typer.echo(f"ledgergate agent: dialing {gw[0]}:{gw[1]} for {', '.join(targets)}")
            await run_agent(gw, secret, carried, tls, server_name=server_name, stop=stop)

        try:
            asyncio.run(main())
        except AgentRefused as e:
            fail(str(e))


_SSLMODES = ("disable", "prefer", "require", "verify-full")
_METHODS = ("scram-sha-256", "md5", "password", "none")


def _login(spec: str) -> tuple[str, AgentLogin]:
    """``CONNECTION=user=…,password=env:…[,sslmode=…][,sslrootcert=…][,require_auth=…]``."""
    name, sep, rest = spec.partition("=")
    what = f"--credential for {name!r}" if sep else "--credential"
    fields: dict[str, str] = {}
    for part in rest.split(",") if sep else ():
        key, eq, value = part.partition("=")
        if not eq or key in fields:
            raise ConfigError(f"{what}: use CONNECTION=user=NAME,password=env:VAR,…")
        fields[key] = value
    if not name or "user" not in fields or not fields["user"]:
        raise ConfigError(f"{what}: use CONNECTION=user=NAME,password=env:VAR,…")
    unknown = set(fields) - {"user", "password", "sslmode", "sslrootcert", "require_auth"}
    if unknown:
        raise ConfigError(f"{what}: unknown field {sorted(unknown)[0]!r}")
    password = fields.get("password")
    if password is not None and not password.startswith(("env:", "file:")):
        # a literal would show in the process list
        raise ConfigError(f"{what}: the password must be env:VAR or file:PATH")
    sslmode = fields.get("sslmode", "prefer")
    if sslmode not in _SSLMODES:
        raise ConfigError(f"{what}: sslmode must be one of {', '.join(_SSLMODES)}")
    methods = frozenset(fields["require_auth"].split("+")) if "require_auth" in fields else None
    if methods is not None and not methods <= set(_METHODS):
        raise ConfigError(f"{what}: require_auth takes {'+'.join(_METHODS)}")
    secret = resolve_secret(password, what=f"{what} password") if password else None
    return name, AgentLogin(fields["user"], secret, sslmode, fields.get("sslrootcert"), methods)
