"""``ledgergate token``: mint, list and revoke gateway tokens (thin over services.tokens).

``create`` prints the token alone on the last line of stdout (scripts take that line)
and everything else on stderr. The token is never printed again and never logged.
"""

from __future__ import annotations

import enum
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail, fmt_ns
from ledgergate.core.config import parse_duration
from ledgergate.services import tokens
from ledgergate.services.ledger import LedgerUnavailable

app = typer.Typer(no_args_is_help=True, help="Mint, list and revoke gateway tokens.")


class Kind(enum.StrEnum):
    user = "user"
    service = "service"


@app.command()
def create(
    identity: Annotated[str, typer.Option("--identity", help="Who the token stands for.")],
    ttl: Annotated[
        str, typer.Option("--ttl", help="Lifetime, e.g. 8h, 30d (mandatory, at most 366d).")
    ],
    kind: Annotated[Kind, typer.Option("--kind", help="user or service.")] = Kind.user,
    config: ConfigOpt = None,
) -> None:
    """Mint a token. It is shown once, alone on the last line; only its hash is kept."""
    try:
        ttl_ns = parse_duration(ttl)
    except ValueError as e:
        fail(str(e), 2)
    now = time.time_ns()
    with Env(config) as env:
        try:
            tok, rec = tokens.create_token(
                env.store,
                env.writer(),
                identity=identity,
                kind=kind.value,
                ttl_ns=ttl_ns,
                now_ns=now,
                created_by=env.actor,
            )
        except tokens.TokenError as e:
            fail(str(e), 2)
        except LedgerUnavailable as e:
            fail(f"the token was not created: {e}")
    typer.echo(
        f"token {rec.id} for {rec.kind} {rec.identity!r}, expires {fmt_ns(rec.expires_ns)}.\n"
        "The token is shown once, on stdout; only its hash is stored.",
        err=True,
    )
    typer.echo(tok)


@app.command("list")
def list_(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List tokens with their status (never the tokens themselves)."""
    now = time.time_ns()
    with Env(config) as env:
        recs = tokens.list_tokens(env.store)
    if json_:
        emit_json([r.as_dict(now) for r in recs])
        return
    t = Table("id", "identity", "kind", "status", "expires", "last used", "by")
    t.columns[0].no_wrap = True
    for r in recs:
        t.add_row(
            r.id,
            r.identity,
            r.kind,
            r.status(now),
            fmt_ns(r.expires_ns, short=True),
            fmt_ns(r.last_used_ns, short=True),
            r.created_by or "-",
        )
    Console().print(t)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), not the token.")],
    config: ConfigOpt = None,
) -> None:
    """Revoke a token by id: new connections with it are refused."""
    with Env(config) as env:
        try:
            done = tokens.revoke_token(env.store, env.writer(), token_id, time.time_ns(), env.actor)
        except tokens.TokenError as e:
            fail(str(e))
        except LedgerUnavailable as e:
            fail(f"the token was not revoked: {e}")
    typer.echo(f"revoked {token_id}" if done else f"{token_id} was already revoked")
