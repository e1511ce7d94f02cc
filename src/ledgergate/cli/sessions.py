"""``ledgergate sessions``: list, show, replay (thin over services.sessions)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, JsonOpt, emit_json, fmt_ns, parse_time, settings, store
from ledgergate.services import sessions
from ledgergate.services.keys import PayloadCipher, load_or_create_payload_key

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(
    identity: Annotated[str | None, typer.Option()] = None,
    connection: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or -1h")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time or -1h")] = None,
    limit: int = 100, config: ConfigOpt = None, json_: JsonOpt = False,
) -> None:
    """Recorded sessions, newest first."""
    rows = sessions.list_sessions(store(settings(config)), identity=identity, connection=connection,
                                  since_ns=parse_time(since), until_ns=parse_time(until), limit=limit)
    if json_:
        emit_json(rows)
        return
    t = Table("session", "opened", "identity", "connection", "source", "closed", "outcome", "commands")
    for r in rows:
        t.add_row(r["session_id"], fmt_ns(r["opened_ns"]), (r["identity"] or {}).get("subject", "-"),
                  r["connection"] or "-", (r["source"] or {}).get("ip") or "-", fmt_ns(r["closed_ns"]),
                  r["outcome"] or "open", str((r["stats"] or {}).get("commands", "-")))
    Console().print(t)


@app.command()
def show(session_id: str, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """The session's timeline: every entry in order."""
    rows = sessions.session_timeline(store(settings(config)), session_id)
    if not rows:
        typer.echo(f"ledgergate: no session {session_id}", err=True)
        raise typer.Exit(1)
    if json_:
        emit_json(rows)
        return
    for e in rows:
        what = e["kind"]
        if what == "command":
            c = e["command"]
            what += f" #{c['seq']} {c['op']}: {c.get('text') or c.get('statement') or c.get('text_sha256')}"
        elif what == "chunk":
            ch = e["chunk"]
            what += (f" {e['direction']} #{ch['seq']}: {ch.get('rows', ch.get('messages'))} rows/msgs {ch['size']} B "
                     f"sha256 {ch['sha256_out'][:16]}… {e.get('outcome')}")
        else:
            extra = e.get("outcome") or e.get("reason") or ""
            what += f" {extra}"
        typer.echo(f"{fmt_ns(e['ts_ns'])}  {e['entry']}  {what}")


@app.command()
def replay(
    session_id: str,
    speed: Annotated[float, typer.Option(help="Playback speed factor.")] = 1.0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Don't reproduce the timing.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Re-emit the session's commands and results in their original order and timing."""
    s = settings(config)
    cipher = PayloadCipher(load_or_create_payload_key(s.payload_key)) if s.payload_key.exists() else None
    n = sessions.replay(store(s), session_id, sys.stdout, speed=0 if no_wait else speed, cipher=cipher)
    if n == 0:
        typer.echo(f"ledgergate: no session {session_id}", err=True)
        raise typer.Exit(1)
