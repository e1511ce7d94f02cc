"""``ledgergate search``: find what ran, across every session and protocol (thin over
services.search)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail, fmt_ns, parse_time
from ledgergate.services import search as search_service
from ledgergate.store import StoreError

__all__ = ["register"]

TimeOpt = Annotated[
    str | None, typer.Option(help="ISO 8601 time or relative (-1h).", show_default=False)
]


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        query: Annotated[
            str,
            typer.Argument(
                help='Words to find (all of them, any order); "a quoted part" as written.',
                show_default=False,
            ),
        ],
        identity: Annotated[
            str | None, typer.Option(help="Only this identity (subject).", show_default=False)
        ] = None,
        connection: Annotated[
            str | None, typer.Option(help="Only this connection.", show_default=False)
        ] = None,
        kind: Annotated[
            list[str] | None,
            typer.Option(help="Only entries of this kind (repeatable).", show_default=False),
        ] = None,
        since: TimeOpt = None,
        until: TimeOpt = None,
        limit: Annotated[
            int, typer.Option(min=1, max=search_service.MAX_HITS, help="At most this many.")
        ] = 100,
        config: ConfigOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Statements, requests, operations, topics and tables that ran, newest first
        (what the connections' recording level kept; never a result or a masked value)."""
        since_ns, until_ns = parse_time(since), parse_time(until)
        with Env(config) as env:
            try:
                hits = search_service.search(
                    env.store,
                    query,
                    kinds=kind or (),
                    identity=identity,
                    connection=connection,
                    since_ns=since_ns,
                    until_ns=until_ns,
                    limit=limit,
                )
            except search_service.SearchError as e:
                fail(str(e), 2)
            except StoreError as e:
                fail(str(e))
        if json_:
            emit_json([h.as_dict() for h in hits])
            return
        t = Table("time", "identity", "connection", "session", "entry", "what")
        for h in hits:
            t.add_row(
                fmt_ns(h.ts_ns, short=True),
                h.identity or "-",
                h.connection or "-",
                h.session_id or "-",
                f"{h.stream}:{h.seq}",
                h.what,
            )
        Console().print(t)
        if not hits:
            typer.echo("no entry matches", err=True)
