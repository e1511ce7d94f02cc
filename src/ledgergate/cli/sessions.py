"""``ledgergate sessions``: list, show and replay recorded sessions (thin over
services.sessions)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail, fmt_ns, parse_time
from ledgergate.services import http_timeline, sessions
from ledgergate.store import StoreError

app = typer.Typer(no_args_is_help=True, help="List, show and replay recorded sessions.")

TimeOpt = Annotated[
    str | None, typer.Option(help="ISO 8601 time or relative (-1h).", show_default=False)
]


@app.command("list")
def list_(
    identity: Annotated[
        str | None, typer.Option(help="Only this identity (subject).", show_default=False)
    ] = None,
    connection: Annotated[
        str | None, typer.Option(help="Only this connection.", show_default=False)
    ] = None,
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many sessions.")] = 100,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Recorded sessions, newest first."""
    since_ns, until_ns = parse_time(since), parse_time(until)
    with Env(config) as env:
        try:
            rows = sessions.list_sessions(
                env.store,
                identity=identity,
                connection=connection,
                since_ns=since_ns,
                until_ns=until_ns,
                limit=limit,
            )
        except StoreError as e:
            fail(str(e))
    if json_:
        emit_json([r.as_dict() for r in rows])
        return
    t = Table("session", "opened", "identity", "connection", "source", "outcome", "commands")
    t.columns[0].no_wrap = True
    for r in rows:
        src = r.source or {}
        t.add_row(
            r.session_id,
            fmt_ns(r.opened_ns, short=True),
            r.subject or "-",
            r.connection or "-",
            f"{src.get('ip')}:{src.get('port')}" if src else "-",
            r.outcome or ("open" if r.closed_ns is None else "-"),
            str((r.stats or {}).get("commands", (r.stats or {}).get("requests", "-"))),
        )
    Console().print(t)


@app.command()
def show(
    session_id: Annotated[str, typer.Argument(help="The session id.")],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """A session's timeline: every entry in order."""
    with Env(config) as env:
        try:
            rows = sessions.session_timeline(env.store, session_id)
        except StoreError as e:
            fail(str(e))
        if not rows:
            fail(f"no session {session_id}")
        if json_:
            emit_json(rows)
            return
        for doc in rows:
            typer.echo(
                f"{fmt_ns(doc.get('ts_ns'))}  {doc.get('stream')}:{doc.get('seq')}  "
                f"{sessions.describe(doc)}"
            )
            if doc.get("kind") == "object.manifest":
                for line in http_timeline.manifest_lines(env.store, doc):
                    typer.echo(line)


@app.command()
def terminate(
    session_id: Annotated[str, typer.Argument(help="The open session to end.")],
    reason: Annotated[str, typer.Option(help="Why (recorded, and told to the client).")],
    config: ConfigOpt = None,
) -> None:
    """End an open session now: an admin.session.terminate entry, then the gateway
    holding the session ends it (the console's Terminate does the same)."""
    import time

    from ledgergate.services import terminate as term

    with Env(config) as env:
        try:
            term.request(
                env.store,
                env.writer(),
                session_id,
                by=env.actor,
                reason=reason,
                now_ns=time.time_ns(),
            )
        except term.TerminateError as e:
            fail(str(e))
        except StoreError as e:
            fail(str(e))
    typer.echo(f"asked the gateway to end {session_id}: {reason}")


@app.command()
def replay(
    session_id: Annotated[str, typer.Argument(help="The session id.")],
    speed: Annotated[
        float, typer.Option(min=0, help="Playback speed factor (2 = twice as fast).")
    ] = 1.0,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Do not reproduce the timing.")
    ] = False,
    max_idle: Annotated[
        float | None,
        typer.Option(
            min=0, help="Wait at most this many seconds between entries.", show_default=False
        ),
    ] = None,
    produce_to: Annotated[
        str | None,
        typer.Option(
            "--produce-to",
            help="Kafka: send the session's produced messages again, in order, into this "
            "topic, through the gateway, as you (--token, or LEDGERGATE_TOKEN).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LEDGERGATE_TOKEN", help="Your token (for --produce-to).", show_default=False
        ),
    ] = None,
    user: Annotated[str, typer.Option(help="Your SASL user name (for --produce-to).")] = "replay",
    cast: Annotated[
        Path | None,
        typer.Option(
            "--asciicast",
            help="SSH: write the shell's recording as an asciicast v2 file (for asciinema "
            "play), with a marker at each signed ledger checkpoint, instead of playing it.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Re-emit the session's commands and results in their original order and timing
    (an SSH shell plays as the terminal showed it)."""
    if cast is not None:
        from ledgergate.services import ssh_replay

        with Env(config) as env:
            timeline = sessions.session_timeline(env.store, session_id)
            if not timeline:
                fail(f"no session {session_id}")
            try:
                lines = list(ssh_replay.asciicast(env.store, env.cipher(), timeline))
            except LookupError as e:
                fail(str(e))
        cast.write_text("\n".join(lines) + "\n", encoding="utf-8")
        typer.echo(f"wrote {cast} ({len(lines) - 1} events); play it with: asciinema play {cast}")
        return
    if produce_to is not None:
        from ledgergate.services import kafka_replay

        if not token:
            fail("--produce-to needs your token: --token or LEDGERGATE_TOKEN", 2)
        with Env(config) as env:
            try:
                n = kafka_replay.replay_into(
                    env.store,
                    env.cipher(),
                    env.settings,
                    session_id,
                    produce_to,
                    token=token,
                    user=user,
                )
            except (kafka_replay.ReplayError, StoreError) as e:
                fail(str(e))
        typer.echo(f"re-produced {n} message(s) of session {session_id} into {produce_to}")
        return
    with Env(config) as env:
        try:
            n = sessions.replay(
                env.store,
                session_id,
                speed=0 if no_wait else speed,
                out=sys.stdout,
                cipher=env.cipher(),
                max_idle=max_idle,
            )
        except StoreError as e:
            fail(str(e))
    if n == 0:
        fail(f"no session {session_id}")
