"""``ledgergate policy check | explain | rules``: test a policy before deploying it, and
keep rules in the store (thin over ``core.policy`` and ``services.policy_rules``).

``check`` validates the effective policy (the configuration's policy section, then the
rules kept in the store when the store exists and answers) with clear errors naming the
rule and the key, and prints its version and rules; ``explain`` prints the decision a
statement would get on a connection for given groups, the facts the parser found, and
the masking rules that would shape its results. ``rules list | put | delete`` shows and
changes the stored rules as the API does: each change is an ``admin.policy.*`` entry on
the CLI's stream, and running gateways apply it within about a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail
from ledgergate.core.config import ConfigError
from ledgergate.core.policy.effective import PolicyError
from ledgergate.core.policy.engine import PolicySet
from ledgergate.services import policy_rules
from ledgergate.services.config import Settings, load_settings
from ledgergate.services.ledger import LedgerUnavailable
from ledgergate.services.policy import describe as describe_policy
from ledgergate.services.policy import explain as explain_policy
from ledgergate.store import PolicyRuleRow, StoreError, sqlite_path

app = typer.Typer(no_args_is_help=True, help="Check a policy and explain its decisions.")
rules_app = typer.Typer(
    no_args_is_help=True, help="Policy rules kept in the store (the file's are changed there)."
)
app.add_typer(rules_app, name="rules")

# Exit codes of a refused change: the caller can fix it (2), or try again (1).
_CHANGE_EXIT = {"invalid": 2, "file rule": 2, "unknown rule": 2, "busy": 1}


def _stored(s: Settings) -> list[PolicyRuleRow]:
    """The stored rules, if the store exists and answers (never created here)."""
    url = s.store_url
    try:
        if url.startswith("sqlite:") and not sqlite_path(url).exists():
            return []
        st = s.open_store()
    except StoreError as e:
        typer.echo(f"ledgergate: the store does not answer ({e}); the file's rules only", err=True)
        return []
    try:
        return st.list_policy_rules()
    except StoreError as e:
        typer.echo(
            f"ledgergate: cannot read the stored rules ({e}); the file's rules only", err=True
        )
        return []
    finally:
        st.close()


def _policies(config: Path | None) -> tuple[PolicySet, list[PolicyRuleRow]]:
    try:
        s = load_settings(config)
    except ConfigError as e:
        fail(str(e), 2)
    rows = _stored(s)
    try:
        return PolicySet(policy_rules.effective(s.config.policy, rows)), rows
    except PolicyError as e:
        fail(f"invalid policy: {e}", 2)


@app.command()
def check(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Validate the effective policy (file, then store); print its version and rules."""
    ps, rows = _policies(config)
    described = describe_policy(ps, rows)
    if json_:
        emit_json(described)
        return
    stored = f" ({len(rows)} from the store)" if rows else ""
    typer.echo(f"policy {ps.version}: {len(described['rules'])} rules, valid{stored}")
    for r in described["rules"]:
        who = f"groups {','.join(r['groups'])}" if "groups" in r else "everyone"
        typer.echo(
            f"  {r['type']:<5} {r['id']:<24} on {','.join(r['connections'])} for {who} "
            f"[{r['source']}]"
        )


@app.command()
def explain(
    connection: Annotated[str, typer.Argument(help="The connection name.")],
    sql: Annotated[str, typer.Argument(help="The statement(s), quoted.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group of the caller (repeatable).")
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The decision a statement gets on CONNECTION for the given groups, and why."""
    ps, _ = _policies(config)
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


# -- rules kept in the store -------------------------------------------------------------
@rules_app.command("list")
def rules_list(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Every rule of the effective policy: the file's, then the stored ones in order."""
    with Env(config) as env:
        try:
            rows = env.store.list_policy_rules()
        except StoreError as e:
            fail(f"cannot read the stored rules: {e}")
        try:
            ps = PolicySet(policy_rules.effective(env.settings.config.policy, rows))
        except PolicyError as e:
            fail(f"invalid policy: {e}", 2)
    described = describe_policy(ps, rows)
    if json_:
        emit_json(described)
        return
    typer.echo(f"policy {ps.version}")
    t = Table("id", "source", "type", "connections", "groups", "changed by")
    for r in described["rules"]:
        groups = ",".join(r["groups"]) if "groups" in r else "everyone"
        by = r["stored"]["updated_by"] if "stored" in r else "-"
        t.add_row(r["id"], r["source"], r["type"], ",".join(r["connections"]), groups, by)
    Console().print(t)


def _change(
    env: Env, done: str, fn: Callable[..., policy_rules.RuleChange], *args: Any, **kw: Any
) -> policy_rules.RuleChange:
    """``fn(store, writer, file policy, *args, now_ns=, by=, **kw)``; a refusal or a store
    that does not answer ends the command (``done``: what was not done, for the message)."""
    try:
        return fn(
            env.store,
            env.writer(),
            env.settings.config.policy,
            *args,
            now_ns=time.time_ns(),
            by=env.actor,
            **kw,
        )
    except policy_rules.PolicyChangeError as e:
        fail(str(e), _CHANGE_EXIT.get(e.reason, 1))
    except (LedgerUnavailable, StoreError) as e:
        fail(f"nothing was {done}: {e}")


def _document(body: str | None, file: Path | None) -> Any:
    if (body is None) == (file is None):
        fail("give the rule inline (JSON or YAML) or with --file, not both", 2)
    if file is not None:
        try:
            body = file.read_text(encoding="utf-8")
        except OSError as e:
            fail(f"cannot read {file}: {e.strerror}", 2)
    assert body is not None
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as e:
        fail(f"the rule is not valid JSON or YAML: {e}", 2)


@rules_app.command("put")
def rules_put(
    rule_id: Annotated[str, typer.Argument(help="The rule's id, e.g. no-drop.")],
    body: Annotated[
        str | None,
        typer.Argument(help="The rule without its id, as JSON or YAML: '{deny: {kinds: [ddl]}}'."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the rule from a JSON or YAML file.")
    ] = None,
    position: Annotated[
        int | None,
        typer.Option("--position", min=0, help="Its place among the stored rules (0 first)."),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create or replace a stored rule; running gateways apply it within a second."""
    doc = _document(body, file)
    with Env(config) as env:
        change = _change(env, "changed", policy_rules.put_rule, rule_id, doc, position=position)
    if json_:
        emit_json(change.as_dict())
        return
    word = "created" if change.created else "replaced"
    typer.echo(
        f"{word} rule {rule_id} at position {change.position}; "
        f"policy {change.old_version} -> {change.new_version}"
    )


@rules_app.command("delete")
def rules_delete(
    rule_id: Annotated[str, typer.Argument(help="The stored rule's id.")],
    config: ConfigOpt = None,
) -> None:
    """Remove a stored rule (the configuration file's rules are changed there)."""
    with Env(config) as env:
        change = _change(env, "removed", policy_rules.delete_rule, rule_id)
    typer.echo(f"deleted rule {rule_id}; policy {change.old_version} -> {change.new_version}")
