"""``ledgergate identities`` and ``ledgergate grants``: thin commands over
``services.identities``.

Disabling an identity refuses its new connections and logins at once and ends its open
sessions on every gateway sharing the store within about a second (the gateways watch
the store's access epoch). Every change is an ``admin.*`` entry on the CLI's stream.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail, fmt_ns
from ledgergate.core.config import parse_duration
from ledgergate.core.identity import IdentityError
from ledgergate.services import identities as ids
from ledgergate.services.ledger import LedgerUnavailable

app = typer.Typer(no_args_is_help=True, help="List, disable and enable identities.")
grants_app = typer.Typer(no_args_is_help=True, help="Grants made outside the YAML file.")

Reason = Annotated[str | None, typer.Option("--reason", help="Why (recorded on the ledger).")]


@app.command("list")
def list_(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Every identity ledgergate knows of, with its source, groups and state."""
    with Env(config) as env:
        rows = env.store.list_identities()
    if json_:
        emit_json([ids.identity_dict(r) for r in rows])
        return
    t = Table("identity", "kind", "source", "groups", "state", "last login")
    for r in rows:
        state = f"disabled {fmt_ns(r.disabled_ns, short=True)}" if r.disabled_ns else "active"
        t.add_row(
            r.name, r.kind, r.source, ",".join(r.groups), state, fmt_ns(r.last_login_ns, short=True)
        )
    Console().print(t)


def _set(name: str, disabled: bool, reason: str | None, config: ConfigOpt) -> None:
    with Env(config) as env:
        try:
            changed = ids.set_disabled(
                env.store,
                env.writer(),
                name,
                disabled=disabled,
                now_ns=time.time_ns(),
                by=env.actor,
                reason=reason,
                via="cli",
            )
        except IdentityError as e:
            fail(str(e), 2)
        except LedgerUnavailable as e:
            fail(f"nothing was changed: {e}")
    word = "disabled" if disabled else "enabled"
    typer.echo(f"{name} {word}" if changed else f"{name} was already {word}")


@app.command()
def disable(
    name: Annotated[str, typer.Argument(help="The identity (e.g. alice@example.com).")],
    reason: Reason = None,
    config: ConfigOpt = None,
) -> None:
    """Disable an identity: its tokens stop working and its open sessions end."""
    _set(name, True, reason, config)


@app.command()
def enable(
    name: Annotated[str, typer.Argument(help="The identity.")],
    reason: Reason = None,
    config: ConfigOpt = None,
) -> None:
    """Enable a disabled identity again (its revoked tokens stay revoked)."""
    _set(name, False, reason, config)


@app.command("create-service")
def create_service(
    name: Annotated[str, typer.Argument(help="The service account's name, e.g. ci-deploy.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group it belongs to (repeatable).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a service account (a CI job, an AI agent); then issue it tokens with
    ``ledgergate token create --identity NAME --kind service --ttl ...``."""
    with Env(config) as env:
        try:
            ids.create_service_account(
                env.store,
                env.writer(),
                name=name,
                groups=group or [],
                description=description,
                now_ns=time.time_ns(),
                by=env.actor,
            )
        except IdentityError as e:
            fail(str(e), 2)
        except LedgerUnavailable as e:
            fail(f"nothing was created: {e}")
    typer.echo(f"service account {name} created")


@app.command()
def stale(
    session_longer_than: Annotated[
        str, typer.Option("--session-longer-than", help="Sessions open longer than this.")
    ] = "12h",
    token_older_than: Annotated[
        str, typer.Option("--token-older-than", help="Active tokens older than this.")
    ] = "30d",
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Identities whose sessions have streamed for too long, or whose tokens are old:
    the accounts to look at when someone leaves."""
    try:
        s_ns, t_ns = parse_duration(session_longer_than), parse_duration(token_older_than)
    except ValueError as e:
        fail(str(e), 2)
    with Env(config) as env:
        report = ids.stale_identities(
            env.store,
            now_ns=time.time_ns(),
            session_longer_than_ns=s_ns,
            token_older_than_ns=t_ns,
        )
    if json_:
        emit_json([{"identity": r.identity, "reason": r.reason, **r.detail} for r in report])
        return
    if not report:
        typer.echo("no stale identities")
        return
    t = Table("identity", "why", "detail")
    for r in report:
        t.add_row(r.identity, r.reason, ", ".join(f"{k}={v}" for k, v in r.detail.items()))
    Console().print(t)


@grants_app.command("list")
def grants_list(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Grants from the YAML file and those made through the API or CLI."""
    with Env(config) as env:
        stored = env.store.list_grants()
        cfg = env.settings.config.grants
    rows: list[dict[str, Any]] = [
        {
            "id": "config",
            "connections": g.connections,
            "groups": g.groups,
            "identities": g.identities,
        }
        for g in (cfg or [])
    ] + [
        {
            "id": g.id,
            "connections": list(g.connections),
            "groups": list(g.groups),
            "identities": list(g.identities),
            "created_by": g.created_by,
        }
        for g in stored
    ]
    if json_:
        emit_json({"open": cfg is None and not stored, "grants": rows})
        return
    if cfg is None and not stored:
        typer.echo("no grants: every authenticated identity may reach every connection")
        return
    t = Table("id", "connections", "groups", "identities")
    for r in rows:
        t.add_row(
            str(r["id"]),
            ",".join(r["connections"]),
            ",".join(r["groups"]),
            ",".join(r["identities"]),
        )
    Console().print(t)


@grants_app.command("add")
def grants_add(
    connection: Annotated[
        list[str], typer.Option("--connection", help="Connection name or glob (repeatable).")
    ],
    group: Annotated[list[str] | None, typer.Option("--group", help="Repeatable.")] = None,
    identity: Annotated[list[str] | None, typer.Option("--identity", help="Repeatable.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Let groups or identities open sessions on connections."""
    with Env(config) as env:
        try:
            g = ids.add_grant(
                env.store,
                env.writer(),
                connections=connection,
                groups=group or [],
                identities=identity or [],
                now_ns=time.time_ns(),
                by=env.actor,
            )
        except IdentityError as e:
            fail(str(e), 2)
        except LedgerUnavailable as e:
            fail(f"nothing was granted: {e}")
    typer.echo(g.id)


@grants_app.command("remove")
def grants_remove(
    grant_id: Annotated[str, typer.Argument(help="The grant's id (gr_…).")],
    config: ConfigOpt = None,
) -> None:
    """Remove a grant; sessions it admitted end at the next re-check."""
    with Env(config) as env:
        try:
            done = ids.remove_grant(
                env.store, env.writer(), grant_id, now_ns=time.time_ns(), by=env.actor
            )
        except LedgerUnavailable as e:
            fail(f"nothing was removed: {e}")
    if not done:
        fail(f"no grant {grant_id!r} (grants in the YAML file are changed there)", 2)
    typer.echo(f"removed {grant_id}")
