"""``ledgergate request access`` and ``ledgergate reviews list | show | approve | deny |
cancel``: just-in-time reviews as the logged-in person (thin over the REST API).

These commands act as whoever ``ledgergate login`` saved (the token in the credentials
file, sent to the gateway that issued it), never as the local admin: a reviewer approves
as themselves, and the gateway refuses anyone deciding on their own request. Nothing
here opens the store. Without saved credentials they say so and stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import JsonOpt, emit_json, fail, fmt_ns
from ledgergate.core.config import format_duration, parse_duration
from ledgergate.core.review import MAX_REASON
from ledgergate.services import client as cl

app = typer.Typer(no_args_is_help=True, help="List, show, approve, deny and cancel reviews.")
request_app = typer.Typer(no_args_is_help=True, help="Ask for time-boxed access.")

T = TypeVar("T")
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded on the ledger).")]
IdArg = Annotated[str, typer.Argument(help="The review's id (rv_…).")]


def _as_me(fn: Callable[[cl.GatewayClient, str], T]) -> T:
    """Run ``fn(client, token)`` against the gateway of the saved login."""
    creds = cl.load()
    if creds is None:
        fail("not logged in; run ledgergate login (reviews act as you)")
    if time.time_ns() >= creds.expires_ns:
        fail("the saved token has expired; run ledgergate login")
    try:
        c = cl.GatewayClient(creds.gateway, creds.ca)
        try:
            return fn(c, creds.token)
        finally:
            c.close()
    except cl.ClientError as e:
        fail(str(e))


def _check_reason(text: str | None) -> None:
    """Refuse here a ``--reason`` the gateway would refuse."""
    if text is not None and len(text) > MAX_REASON:
        fail(f"--reason is longer than {MAX_REASON} characters", 2)


def _span(ns: int | None) -> str:
    return "-" if ns is None else format_duration(ns)


def _what(rv: dict[str, Any], width: int = 60) -> str:
    if rv["kind"] == "access":
        return f"access for {_span(rv.get('duration_ns'))}"
    text = rv.get("statement") or "(statement not shown)"
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _needs(rv: dict[str, Any]) -> str:
    req = rv["requirement"]
    joiner = " and " if req["all_groups"] else " or "
    return f"{rv['approvals']}/{req['min_approvals']} from {joiner.join(req['groups'])}"


@request_app.command("access")
def request_access(
    connection: Annotated[str, typer.Argument(help="The connection to reach.")],
    for_: Annotated[
        str, typer.Option("--for", help="How long the window lasts once approved, e.g. 30m.")
    ],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (the reviewers read it; recorded).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Ask for a time-boxed access window on CONNECTION; reviewers are notified."""
    try:
        parse_duration(for_)
    except ValueError as e:
        fail(str(e), 2)
    _check_reason(reason)
    rv = _as_me(lambda c, tok: c.request_access(tok, connection, for_, reason))
    if json_:
        emit_json(rv)
        return
    typer.echo(
        f"requested {rv['id']}: access to {rv['connection']} for {_span(rv['duration_ns'])}, "
        f"pending until {fmt_ns(rv['expires_ns'], short=True)}; needs {_needs(rv)}"
    )


@app.command("list")
def list_(
    state: Annotated[
        str | None,
        typer.Option("--state", help="pending, approved, denied, expired, cancelled, ..."),
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="command or access.")] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    requester: Annotated[str | None, typer.Option("--requester")] = None,
    to_review: Annotated[
        bool, typer.Option("--to-review", help="Only those you may still decide on.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Reviews you may see, newest first (reviewers, admins and auditors: all)."""
    found = _as_me(
        lambda c, tok: c.reviews(
            tok,
            state=state,
            kind=kind,
            connection=connection,
            requester=requester,
            to_review=to_review,
        )
    )
    if json_:
        emit_json(found)
        return
    t = Table("id", "state", "connection", "requester", "what", "approvals", "created", "expires")
    t.columns[0].no_wrap = True
    for rv in found:
        t.add_row(
            rv["id"],
            rv["state"],
            rv["connection"],
            rv["requester"]["subject"],
            _what(rv),
            _needs(rv),
            fmt_ns(rv["created_ns"], short=True),
            fmt_ns(rv["expires_ns"], short=True) if rv["state"] == "pending" else "-",
        )
    Console().print(t)


def _print_record(rv: dict[str, Any]) -> None:
    out = typer.echo
    out(f"review {rv['id']} ({rv['kind']}), {rv['state']}, under rule {rv['rule_id']}")
    who = rv["requester"]
    out(
        f"  requester:   {who['subject']} ({who['kind']}; groups {', '.join(who['groups']) or '-'})"
    )
    out(f"  connection:  {rv['connection']}")
    out(f"  requested:   {fmt_ns(rv['created_ns'])}, pending until {fmt_ns(rv['expires_ns'])}")
    out(f"  why:         {rv.get('justification') or '-'}")
    if rv["kind"] == "command":
        out(f"  statement:   {rv.get('statement') if rv.get('statement') is not None else '-'}")
        params = rv.get("params")
        shown = params if params is not None else f"{rv.get('params_count', '?')} (not shown)"
        out(f"  parameters:  {shown}")
        out(f"  valid until: {fmt_ns(rv.get('valid_until_ns'))}")
    else:
        out(
            f"  window:      {_span(rv.get('duration_ns'))}: {fmt_ns(rv.get('window_start_ns'))}"
            f" to {fmt_ns(rv.get('window_end_ns'))}"
        )
    out(f"  needs:       {_needs(rv)}")
    out(f"  binding:     {rv['binding']}")
    for d in rv["decisions"]:
        verb = "approved" if d["approve"] else "denied"
        out(
            f"  {verb} by {d['reviewer']} ({', '.join(d['groups'])}) at {fmt_ns(d['ts_ns'])}: "
            f"{d['reason']}"
        )
    for h in rv["history"]:
        why = f": {h['reason']}" if h.get("reason") else ""
        out(f"  {fmt_ns(h['ts_ns'])}  {h['event']:<8} -> {h['state']:<9} by {h['actor']}{why}")
    for e in rv.get("executions", []):
        out(f"  ran in session {e['session_id']} at {fmt_ns(e['ts_ns'])}")
    for c in rv.get("commands", []):
        out(f"    {fmt_ns(c['ts_ns'])} [{c['session_id']}] {c.get('text') or '(no text recorded)'}")
    for e in rv.get("entries", []):
        out(f"  ledger: {e['stream']} #{e['seq']} {e['kind']} {e['entry_hash'][:16]}…")


@app.command()
def show(review_id: IdArg, json_: JsonOpt = False) -> None:
    """The whole approval record: requester, reviewers, decisions, reasons, times, the
    statement or window, the sessions and commands that ran under it, ledger entries."""
    rv = _as_me(lambda c, tok: c.review(tok, review_id))
    if json_:
        emit_json(rv)
        return
    _print_record(rv)


def _decide(review_id: str, approve: bool, reason: str, json_: bool) -> None:
    _check_reason(reason)
    rv = _as_me(lambda c, tok: c.decide_review(tok, review_id, approve=approve, reason=reason))
    if json_:
        emit_json(rv)
        return
    if rv["state"] == "pending":
        typer.echo(f"approval of {rv['id']} recorded; still pending ({_needs(rv)})")
    else:
        typer.echo(f"{rv['id']} {rv['state']}")


@app.command()
def approve(review_id: IdArg, reason: ReasonOpt, json_: JsonOpt = False) -> None:
    """Approve a request (never your own). The reason is recorded."""
    _decide(review_id, True, reason, json_)


@app.command()
def deny(review_id: IdArg, reason: ReasonOpt, json_: JsonOpt = False) -> None:
    """Deny a request. The reason is recorded."""
    _decide(review_id, False, reason, json_)


@app.command()
def cancel(
    review_id: IdArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Withdraw your own request (or its unused approval), or end your open window."""
    _check_reason(reason)
    rv = _as_me(lambda c, tok: c.cancel_review(tok, review_id, reason))
    if json_:
        emit_json(rv)
        return
    typer.echo(f"{rv['id']} {rv['state']}")
