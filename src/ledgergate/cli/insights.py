"""``ledgergate insights``: what a team did over a period, for post-mortems and
self-reflection reviews (thin over services.insights)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ledgergate.cli._common import ConfigOpt, Env, fail, parse_time
from ledgergate.core.config import parse_duration
from ledgergate.services.insights import InsightsOptions, collect, incident_timeline
from ledgergate.services.insights_report import render
from ledgergate.store import StoreError

__all__ = ["register"]

FORMATS = ("html", "md", "json")


def _since(text: str, now: int) -> int:
    """``30d`` (that long ago), or any time ``parse_time`` reads."""
    if text and text[0].isdigit() and not any(c in text for c in "-:T"):
        try:
            return now - parse_duration(text)
        except ValueError:
            pass
    got = parse_time(text, now_ns=now)
    assert got is not None
    return got


def register(app: typer.Typer) -> None:
    @app.command()
    def insights(
        since: Annotated[str, typer.Option(help="How far back (30d) or a time.")] = "30d",
        until: Annotated[
            str | None, typer.Option(help="The end (default: now).", show_default=False)
        ] = None,
        format: Annotated[str, typer.Option("--format", help="html, md or json.")] = "md",
        out: Annotated[
            Path | None, typer.Option("-o", "--out", help="Write here (default: stdout).")
        ] = None,
        incident: Annotated[
            str | None,
            typer.Option(
                help="FROM..TO: add the timeline of everything that ran in that window.",
                show_default=False,
            ),
        ] = None,
        baseline_days: Annotated[
            int, typer.Option(min=1, help="What 'first time' and 'usual volume' look back on.")
        ] = 90,
        stale_days: Annotated[int, typer.Option(min=1, help="Unused this long: stale.")] = 90,
        long_session_hours: Annotated[
            float, typer.Option(min=0.1, help="Sessions longer than this are listed.")
        ] = 8.0,
        config: ConfigOpt = None,
    ) -> None:
        """Privileged commands, blocked attempts, review turnaround, stale identities and
        tokens, first-time access, off-hours activity and volume against each identity's
        own baseline; with --incident, the cross-protocol timeline of a window."""
        if format not in FORMATS:
            fail(f"--format must be one of {', '.join(FORMATS)}", 2)
        now = time.time_ns()
        try:
            since_ns = _since(since, now)
            until_ns = parse_time(until, now_ns=now) if until else now
            window = None
            if incident is not None:
                a, sep, b = incident.partition("..")
                if not sep:
                    raise typer.BadParameter("--incident takes FROM..TO")
                window = (parse_time(a, now_ns=now), parse_time(b, now_ns=now))
        except (ValueError, typer.BadParameter) as e:
            fail(str(e), 2)
        assert until_ns is not None
        opts = InsightsOptions(
            since_ns=since_ns,
            until_ns=until_ns,
            now_ns=now,
            baseline_days=baseline_days,
            stale_days=stale_days,
            long_session_hours=long_session_hours,
        )
        with Env(config) as env:
            try:
                ins = collect(env.store, opts)
                timeline = None
                if window is not None and window[0] is not None and window[1] is not None:
                    timeline = incident_timeline(env.store, window[0], window[1])
            except StoreError as e:
                fail(str(e))
        text = render(ins, format, timeline)
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {out}", err=True)
