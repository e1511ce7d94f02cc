"""``ledgergate policy check | explain``: test a policy before deploying it (thin over
``core.policy``).

``check`` validates the configuration's policy section (clear errors naming the key)
and prints its version and rules; ``explain`` prints the decision a statement would get
on a connection for given groups, the facts the parser found, and the masking rules
that would shape its results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledgergate.cli._common import JsonOpt, emit_json, fail
from ledgergate.core.config import ConfigError
from ledgergate.core.policy.engine import PolicySet
from ledgergate.services.config import load_settings
from ledgergate.services.policy import describe as describe_policy
from ledgergate.services.policy import explain as explain_policy

app = typer.Typer(no_args_is_help=True, help="Check a policy and explain its decisions.")

FileOpt = Annotated[
    Path | None,
    typer.Option("-c", "--config", help="YAML configuration file.", show_default=False),
]


def _policies(config: Path | None) -> PolicySet:
    try:
        s = load_settings(config)
    except ConfigError as e:
        fail(str(e), 2)
    return PolicySet(s.config.policy)


@app.command()
def check(config: FileOpt = None, json_: JsonOpt = False) -> None:
    """Validate the policy section; print its version and rules."""
    ps = _policies(config)
    rules = ps.settings.rules
    if json_:
        emit_json(describe_policy(ps))
        return
    typer.echo(f"policy {ps.version}: {len(rules)} rules, valid")
    for r in rules:
        kind = "deny " if r.deny else "allow" if r.allow else "mask "
        who = f"groups {','.join(r.groups)}" if r.groups is not None else "everyone"
        typer.echo(f"  {kind} {r.id:<24} on {','.join(r.connections)} for {who}")


@app.command()
def explain(
    connection: Annotated[str, typer.Argument(help="The connection name.")],
    sql: Annotated[str, typer.Argument(help="The statement(s), quoted.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group of the caller (repeatable).")
    ] = None,
    config: FileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The decision a statement gets on CONNECTION for the given groups, and why."""
    ps = _policies(config)
    out = explain_policy(ps, connection, sql, group or [])
    decision, facts, masks = out["decision"], out["statements"], out["mask_rules"]
    sp = ps.for_session(connection, group or [])
    if json_:
        emit_json(out)
        return
    typer.echo(f"policy {ps.version}, connection {connection}, groups {group or '-'}")
    if out["parse_error"]:
        typer.echo(f"  parse error: {out['parse_error']}")
    for f in facts:
        typer.echo(
            f"  {f['kind']}: reads {f['reads'] or '-'} writes {f['writes'] or '-'} "
            f"functions {f['functions'] or '-'} where {f['where']}"
        )
    if decision["action"] == "allow":
        typer.echo(f"  ALLOW{' (no rule applies)' if sp is None else ''}")
    else:
        typer.echo(f"  DENY by {decision['rule']}: {decision['message']}")
    if masks:
        typer.echo(f"  results masked by: {', '.join(masks)}")
    if decision["action"] == "deny":
        raise typer.Exit(1)
