"""``ledgergate retention run``: purge payloads and prune entries by the configuration's
``retention`` rules, the ledger still verifying (thin over services.retention)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail
from ledgergate.services import retention
from ledgergate.services.ledger import LedgerUnavailable
from ledgergate.store import StoreError

app = typer.Typer(no_args_is_help=True, help="Apply the retention rules.")


@app.command()
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go, change nothing.")
    ] = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Purge payloads and prune entries past their rule's age; the run is recorded on the
    ledger first (retention.run), and `audit verify` says what was pruned under which rule."""
    with Env(config) as env:
        rules = env.settings.config.retention
        if not rules:
            fail("no retention rules in the configuration (retention:)", 2)
        try:
            rep = retention.run(env.store, env.writer(), rules, time.time_ns(), dry_run=dry_run)
        except (StoreError, LedgerUnavailable) as e:
            fail(f"retention failed: {e}")
    if json_:
        emit_json({"dry_run": dry_run, **rep.as_fields()})
        return
    verb = "would remove" if dry_run else "removed"
    for rule in sorted(set(rep.payloads) | set(rep.entries)):
        typer.echo(
            f"rule {rule}: {verb} {rep.payloads.get(rule, 0)} payloads, "
            f"pruned {rep.entries.get(rule, 0)} entries"
        )
    if not (rep.payloads or rep.entries):
        typer.echo("nothing is past its retention")
