"""``ledgergate audit``: verify, prove, export (thin over services.audit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ledgergate.cli._common import ConfigOpt, JsonOpt, emit_json, parse_time, settings, signer, store
from ledgergate.core.ledger.checkpoint import CheckpointError, Verifier
from ledgergate.core.ledger.verify import verify_proof_document
from ledgergate.services import audit

app = typer.Typer(no_args_is_help=True)
KeyOpt = Annotated[str | None, typer.Option("--key", help="Trusted verifier key (vkey string or file).")]


def _verifiers(key: str | None) -> list[Verifier] | None:
    if key is None:
        return None
    text = Path(key).read_text().strip() if Path(key).is_file() else key
    try:
        return [Verifier.from_vkey(line) for line in text.splitlines() if line.strip()]
    except CheckpointError as e:
        typer.echo(f"ledgergate: bad --key: {e}", err=True)
        raise typer.Exit(2) from None


def _report(rep: audit.AuditReport, json_: bool) -> None:
    if json_:
        emit_json(rep.as_dict())
    else:
        for k in rep.trusted_keys:
            typer.echo(f"trusted key: {k}")
        for s in rep.streams:
            state = "ok" if s.ok else "FAILED"
            typer.echo(f"{s.stream}: {state}: {s.entries} entries, {s.checkpoints_verified} signed "
                       "checkpoints verified")
            for p in s.problems:
                typer.echo(f"  {p.kind}: {p.message}")
        typer.echo("ledger verified" if rep.ok else "LEDGER VERIFICATION FAILED")
    raise typer.Exit(0 if rep.ok else 1)


@app.command()
def verify(
    bundle: Annotated[Path | None, typer.Option(help="Verify an exported bundle instead of the store.")] = None,
    key: KeyOpt = None, config: ConfigOpt = None, json_: JsonOpt = False,
) -> None:
    """Check chain, Merkle tree and signed checkpoints; exit 1 naming the first bad entry."""
    vs = _verifiers(key)
    if bundle is not None:
        try:
            rep = audit.verify_bundle(bundle, vs)
        except (OSError, ValueError, KeyError) as e:
            typer.echo(f"ledgergate: {e}", err=True)
            raise typer.Exit(2) from None
        if vs is None:
            typer.echo("note: trusting the keys named in the bundle; pass --key to pin one", err=True)
        _report(rep, json_)
    s = settings(config)
    _report(audit.verify_store(store(s), vs or [signer(s).verifier]), json_)


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file to write.")],
    format: Annotated[str, typer.Option(help="Bundle format.")] = "jsonl",
    since: Annotated[str | None, typer.Option(help="ISO time or -1h")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time or -1h")] = None,
    config: ConfigOpt = None,
) -> None:
    """Export entries and checkpoints as a bundle that `audit verify --bundle` accepts."""
    if format != "jsonl":
        raise typer.BadParameter("only jsonl is supported")
    s = settings(config)
    with output.open("w", encoding="utf-8") as f:
        n = audit.export_jsonl(store(s), f, [signer(s).vkey], since_ns=parse_time(since),
                               until_ns=parse_time(until))
    typer.echo(f"exported {n} entries to {output}")


def _stream_seq(ref: str) -> tuple[str, int]:
    stream, _, seq = ref.rpartition(":")
    if not stream or not seq.isdigit():
        raise typer.BadParameter("use STREAM:SEQ, e.g. gateway@host:42")
    return stream, int(seq)


def _out(doc: dict[str, object], output: Path | None) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)


@app.command()
def prove(ref: str, output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
          config: ConfigOpt = None) -> None:
    """Inclusion proof of entry STREAM:SEQ against a signed checkpoint."""
    s = settings(config)
    stream, seq = _stream_seq(ref)
    try:
        doc = audit.prove_inclusion(store(s), stream, seq, [signer(s).verifier])
    except LookupError as e:
        typer.echo(f"ledgergate: {e}", err=True)
        raise typer.Exit(1) from None
    _out(doc, output)


@app.command()
def consistency(stream: str, old: int, new: int,
                output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
                config: ConfigOpt = None) -> None:
    """Consistency proof between two signed checkpoints of a stream."""
    s = settings(config)
    try:
        doc = audit.prove_consistency(store(s), stream, old, new, [signer(s).verifier])
    except LookupError as e:
        typer.echo(f"ledgergate: {e}", err=True)
        raise typer.Exit(1) from None
    _out(doc, output)


@app.command("verify-proof")
def verify_proof(path: Path, key: KeyOpt = None, config: ConfigOpt = None) -> None:
    """Verify a proof document offline (with --key, no store or config needed)."""
    vs = _verifiers(key)
    if vs is None:
        vs = [signer(settings(config)).verifier]
    try:
        typer.echo(verify_proof_document(json.loads(path.read_text()), vs))
    except (OSError, ValueError, KeyError, CheckpointError) as e:
        typer.echo(f"PROOF FAILED: {e}")
        raise typer.Exit(1) from None
