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
from ledgergate.proxy.agent_dialer import AgentRefused, run_agent
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
            typer.Option(help="CONNECTION=HOST:PORT, where a connection's server is from here."),
        ],
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
            targets = {}
            for t in target:
                name, sep, addr = t.partition("=")
                if not sep or not name:
                    raise ConfigError(f"--target {t!r}: use CONNECTION=HOST:PORT")
                targets[name] = split_address(addr)
        except ConfigError as e:
            fail(str(e), 2)
        assert secret is not None
        tls = ssl.create_default_context(cafile=str(ca) if ca else None)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            typer.echo(f"ledgergate agent: dialing {gw[0]}:{gw[1]} for {', '.join(targets)}")
            await run_agent(gw, secret, targets, tls, server_name=server_name, stop=stop)

        try:
            asyncio.run(main())
        except AgentRefused as e:
            fail(str(e))
