"""``ledgergate token``: mint, list, revoke (thin over services.tokens)."""

from __future__ import annotations

import getpass
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, JsonOpt, cli_writer, emit_json, fmt_ns, settings, store
from ledgergate.core.config import parse_duration
from ledgergate.services import tokens

app = typer.Typer(no_args_is_help=True)


@app.command()
def create(
    identity: Annotated[str, typer.Option(help="Who the token stands for.")],
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 8h, 30d (mandatory).")],
    kind: Annotated[str, typer.Option(help="user or service")] = "user",
    config: ConfigOpt = None,
) -> None:
    """Mint a token. It is printed once, alone on the last line; only its hash is kept."""
    s = settings(config)
    try:
        ttl_ns = parse_duration(ttl)
        tok, token_id = tokens.create_token(store(s), cli_writer(s), identity=identity, kind=kind,
                                            ttl_ns=ttl_ns, now_ns=time.time_ns(),
                                            created_by=f"cli:{getpass.getuser()}")
    except ValueError as e:
        typer.echo(f"ledgergate: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"token {token_id} for {kind} {identity!r}, expires in {ttl}; shown once:", err=True)
    typer.echo(tok)


@app.command("list")
def list_(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List tokens (never the tokens themselves)."""
    rows = tokens.list_tokens(store(settings(config)))
    if json_:
        emit_json(rows)
        return
    t = Table("id", "identity", "kind", "created", "expires", "revoked", "last used")
    for r in rows:
        t.add_row(r["id"], r["identity"], r["kind"], fmt_ns(r["created_ns"]), fmt_ns(r["expires_ns"]),
                  fmt_ns(r["revoked_ns"]), fmt_ns(r["last_used_ns"]))
    Console().print(t)


@app.command()
def revoke(token_id: str, config: ConfigOpt = None) -> None:
    """Revoke a token by id; new connections with it are refused."""
    s = settings(config)
    if not tokens.revoke_token(store(s), cli_writer(s), token_id, time.time_ns(),
                               f"cli:{getpass.getuser()}"):
        typer.echo(f"ledgergate: no active token {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")
