"""``ledgergate evidence``: export the evidence bundle of a period, and verify one
(thin over services.evidence; ``verify`` runs the same code the bundle ships as
``verify.py``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail, parse_time
from ledgergate.core.ledger.checkpoint import CheckpointError
from ledgergate.services.audit import ProofError
from ledgergate.services.evidence import standalone
from ledgergate.services.evidence.bundle import export_evidence
from ledgergate.services.evidence.records import state_snapshot
from ledgergate.services.evidence.report import FRAMEWORKS
from ledgergate.services.ledger import LedgerUnavailable
from ledgergate.store import StoreError

app = typer.Typer(no_args_is_help=True, help="Evidence bundles for auditors.")

TimeOpt = Annotated[
    str | None, typer.Option(help="ISO 8601 time or relative (-30d).", show_default=False)
]


@app.command()
def export(
    out: Annotated[Path, typer.Option("-o", "--out", help="The bundle to write (.zip).")],
    since: TimeOpt = None,
    until: TimeOpt = None,
    framework: Annotated[
        str, typer.Option(help=f"Controls the report maps to: {', '.join(FRAMEWORKS)}.")
    ] = "all",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Entries, signed checkpoints and proofs, records, state and a report mapped to SOC 2
    and ISO 27001 controls, in one zip verifiable offline (verify.py inside)."""
    if framework not in FRAMEWORKS:
        fail(f"--framework must be one of {', '.join(FRAMEWORKS)}", 2)
    since_ns, until_ns = parse_time(since), parse_time(until)
    now = time.time_ns()
    with Env(config) as env:
        signer = env.signer(create=False)
        if signer is None:
            fail("an evidence bundle is signed with the ledger key, and there is none here", 2)
        try:
            state = state_snapshot(env.store, env.settings.config, now)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                disable=quiet,
                transient=True,
            ) as bar:
                task = bar.add_task("entries", total=None)
                summary = export_evidence(
                    env.store,
                    signer,
                    out,
                    since_ns=since_ns,
                    until_ns=until_ns,
                    framework=framework,
                    state=state,
                    now_ns=now,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        except (StoreError, LedgerUnavailable, ProofError, OSError, ValueError) as e:
            fail(f"evidence export failed: {e}")
    for stream in summary.signed:
        typer.echo(f"signed the head of {stream} (no checkpoint covered the period's end yet)")
    recs = ", ".join(f"{n} {k}" for k, n in sorted(summary.records.items()))
    typer.echo(
        f"wrote {out}: {summary.entries} entries of {len(summary.streams)} streams, "
        f"records: {recs or 'none'}"
    )


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The evidence bundle (.zip).")],
    key: Annotated[
        str | None,
        typer.Option(
            help="The gateway's verifier key (vkey text or a file holding it).", show_default=False
        ),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check everything in a bundle: the signed manifest and every file's digest, each
    stream's entries against its signed checkpoints, every record against its entry."""
    if key is None:
        with Env(config) as env:
            vs, _ = env.verifiers(None)
            vkey = vs[0].vkey
    else:
        path = Path(key)
        vkey = path.read_text().strip() if key.count("+") < 2 and path.is_file() else key
    try:
        rep = standalone.verify(str(bundle), vkey)
    except (standalone.Unreadable, CheckpointError) as e:
        fail(str(e), 2)
    if json_:
        emit_json(rep.as_dict())
    else:
        for stream, s in sorted(rep.streams.items()):
            typer.echo(
                f"stream {stream}: entries {s['first']}..{s['end'] - 1}, "
                f"{s['checkpoints_matched']} signed checkpoints matched"
            )
        for p in rep.problems:
            typer.echo(f"FAILED  {p}")
        verdict = "verifies" if rep.ok else "does NOT verify"
        typer.echo(
            f"{bundle} {verdict}: {rep.files} files, {rep.records} records, "
            f"{rep.tlog_proofs} tlog-proofs"
        )
    if not rep.ok:
        raise typer.Exit(1)
