"""``ledgergate audit``: verify the ledger or a bundle, prove entries, export bundles
(thin over services.audit).

Exit codes: 0 verified, 1 a problem was found (the first changed, removed or reordered
entry is named), 2 usage or configuration error. Output says which key was trusted.
"""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, KeyOpt, emit_json, fail, parse_time
from ledgergate.core.ledger.checkpoint import Verifier
from ledgergate.core.ledger.tlog_proof import HEADER as TLOG_PROOF_HEADER
from ledgergate.services import audit, siem
from ledgergate.services.keys import KeyError_, parse_verifier_keys
from ledgergate.services.ledger import LedgerUnavailable
from ledgergate.services.witness import check_witnessed, published_notes
from ledgergate.store import StoreError

app = typer.Typer(no_args_is_help=True, help="Verify, prove and export the ledger.")

OutOpt = Annotated[
    Path | None,
    typer.Option("-o", "--out", help="Write to this file instead of stdout.", show_default=False),
]


def _unsigned(stream: str, first: int, end: int) -> str:
    n = end - first
    return (
        f"{stream}: entries {first}..{end - 1} ({n} entr{'y' if n == 1 else 'ies'}) are "
        "chained but not yet covered by a signed checkpoint"
    )


def _render(rep: audit.AuditReport, what: str) -> None:
    for s in rep.streams:
        signed = s.latest_checkpoint.size if s.latest_checkpoint else 0
        if s.ok:
            typer.echo(
                f"ok      {s.stream}: {s.entries} entries, {s.checkpoints_verified} signed "
                f"checkpoints verified (signed up to {signed})"
            )
            if s.verified_size > signed:
                typer.echo(f"        {_unsigned(s.stream, signed, s.verified_size)}")
            for rule, n in sorted(s.pruned.items()):
                typer.echo(f"        {n} entries pruned by retention rule {rule!r}")
        else:
            for p in s.problems:
                where = f" [entry {p.seq}]" if p.seq is not None else ""
                typer.echo(f"FAILED  {s.stream}{where}: {p.message}")
    for err in rep.errors:
        typer.echo(f"FAILED  {err}")
    for k in rep.trusted_keys:
        typer.echo(f"trusted key ({rep.key_source}): {k}")
    if rep.ok:
        typer.echo(f"{what} verified: {rep.entries} entries in {len(rep.streams)} streams")
    else:
        typer.echo(f"{what} does NOT verify: {rep.first_problem()}")


@app.command()
def verify(
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Verify an exported bundle instead of the store."),
    ] = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            help="Also check the store against the checkpoints a witness published (its "
            "file, a directory, or a syslog receiver's output); repeatable.",
            show_default=False,
        ),
    ] = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Verify every entry, the hash chains and the signed checkpoints."""
    if witness:
        _verify_witnessed(witness, key, config, json_)
        return
    if bundle is not None:
        vs: list[Verifier] | None = None
        if key is not None:
            try:
                vs = parse_verifier_keys(key)
            except KeyError_ as e:
                fail(str(e), 2)
        rep = audit.verify_bundle(bundle, vs)
        what = f"bundle {bundle}"
    else:
        with Env(config) as env:
            verifiers, source = env.verifiers(key)
            try:
                rep = audit.verify_store(env.store, verifiers, key_source=source)
            except StoreError as e:
                fail(str(e))
        what = "ledger"
    if json_:
        emit_json(rep.as_dict())
    else:
        _render(rep, what)
    if not rep.ok:
        raise typer.Exit(1)


def _verify_witnessed(paths: list[Path], key: str | None, config: Path | None, json_: bool) -> None:
    """The store's own verification, then its entries against what witnesses hold."""
    notes: list[str] = []
    for p in paths:
        try:
            notes += published_notes(p)
        except OSError as e:
            fail(f"cannot read the witness at {p}: {e.strerror}", 2)
    with Env(config) as env:
        verifiers, source = env.verifiers(key)
        try:
            rep = audit.verify_store(env.store, verifiers, key_source=source)
            wit = check_witnessed(env.store, notes, verifiers)
        except StoreError as e:
            fail(str(e))
    if json_:
        emit_json({**rep.as_dict(), "witnessed": wit.as_dict()})
    else:
        _render(rep, "ledger")
        for problem in wit.problems:
            typer.echo(f"FAILED  witness: {problem.message}")
        n = sum(len(v) for v in wit.checked.values())
        verdict = "match the store" if wit.ok else "do NOT match the store"
        typer.echo(f"{n} witnessed checkpoints of {len(wit.checked)} streams {verdict}")
    if not (rep.ok and wit.ok):
        raise typer.Exit(1)


def _stream_seq(ref: str) -> tuple[str, int]:
    stream, _, seq = ref.rpartition(":")
    if not stream or not seq.isdigit():
        raise typer.BadParameter("use STREAM:SEQ, e.g. gateway@host:42")
    return stream, int(seq)


class ProofFormat(StrEnum):
    json = "json"
    tlog_proof = "tlog-proof"


def _write(doc: dict[str, Any], out: Path | None) -> None:
    _write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", out)


def _write_text(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)


@app.command()
def prove(
    ref: Annotated[str, typer.Argument(metavar="STREAM:SEQ", help="The entry to prove.")],
    out: OutOpt = None,
    fmt: Annotated[
        ProofFormat,
        typer.Option(
            "--format",
            help="json (ledgergate's document) or tlog-proof (c2sp.org/tlog-proof@v1, "
            "the entry in its extra line).",
        ),
    ] = ProofFormat.json,
    config: ConfigOpt = None,
) -> None:
    """Inclusion proof of one entry against a signed checkpoint (verifiable offline)."""
    stream, seq = _stream_seq(ref)
    with Env(config) as env:
        verifiers, _ = env.verifiers(None)
        try:
            doc = audit.prove_inclusion(
                env.store,
                stream,
                seq,
                verifiers=verifiers,
                signer=env.signer(create=False),
                now_ns=time.time_ns(),
            )
        except (audit.ProofError, StoreError) as e:
            fail(str(e))
    if fmt is ProofFormat.tlog_proof:
        _write_text(audit.as_tlog_proof(doc), out)
    else:
        _write(doc, out)


@app.command()
def consistency(
    stream: Annotated[str, typer.Argument(help="The stream, e.g. gateway@host.")],
    old: Annotated[int, typer.Argument(help="Size of the older signed checkpoint.")],
    new: Annotated[
        int | None, typer.Argument(help="Size of the newer one (default: the latest).")
    ] = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Consistency proof: the older signed tree is a prefix of the newer one."""
    with Env(config) as env:
        verifiers, _ = env.verifiers(None)
        try:
            doc = audit.prove_consistency(env.store, stream, old, new, verifiers=verifiers)
        except (audit.ProofError, StoreError) as e:
            fail(str(e))
    _write(doc, out)


@app.command("verify-proof")
def verify_proof(
    path: Annotated[
        Path, typer.Argument(help="A proof from prove (either format) or consistency.")
    ],
    key: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Verify a proof offline: with --key, nothing but the proof and the key is needed."""
    if key is not None:
        try:
            verifiers = parse_verifier_keys(key)
        except KeyError_ as e:
            fail(str(e), 2)
        source = "--key"
    else:
        with Env(config) as env:
            verifiers, source = env.verifiers(None)
    try:
        text = path.read_text(encoding="utf-8")
        doc = None if text.startswith(TLOG_PROOF_HEADER) else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        fail(f"cannot read the proof {path}: {e}")
    try:
        if doc is None:
            summary = audit.verify_tlog_proof(text, verifiers)
        else:
            summary = audit.verify_proof(doc, verifiers)
    except audit.ProofError as e:
        typer.echo(f"PROOF FAILED: {e}")
        raise typer.Exit(1) from None
    typer.echo(f"proof verified: {summary}")
    for v in verifiers:
        typer.echo(f"trusted key ({source}): {v.vkey}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("-o", "--out", help="The file to write.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="jsonl: a verifiable bundle; csv, ocsf (OCSF JSON lines) or cef: one SIEM "
            "event per entry in the range, not verifiable.",
        ),
    ] = "jsonl",
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 time or relative (-1h).", show_default=False)
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO 8601 time or relative (-1h).", show_default=False)
    ] = None,
    checkpoint: Annotated[
        bool,
        typer.Option(
            "--checkpoint",
            help="Verify each stream and sign its current head first, so the whole "
            "export is covered by signatures (needs the ledger key).",
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Export entries and checkpoints as a bundle `audit verify --bundle` checks offline,
    or the entries as SIEM events (--format csv|ocsf|cef).

    Bundle streams are exported from their first entry (a chain verifies only from its
    start); --since/--until select the streams with entries in that range, each ending at
    the first signed checkpoint after --until. SIEM formats hold exactly the entries in
    [--since, --until), each with its stream, seq and entry hash.
    """
    if format != "jsonl" and format not in siem.FORMATS:
        fail(f"unknown --format {format!r} (jsonl, {', '.join(siem.FORMATS)})", 2)
    since_ns, until_ns = parse_time(since), parse_time(until)
    if format != "jsonl":
        if checkpoint:
            fail("--checkpoint applies to --format jsonl only", 2)
        _export_siem(out, format, since_ns, until_ns, config)
        return
    with Env(config) as env:
        signer = env.signer(create=False)
        try:
            if checkpoint:
                if signer is None:
                    fail("--checkpoint needs the ledger key", 2)
                now = time.time_ns()
                for stream in env.store.streams():
                    audit.sign_head(env.store, stream, signer, now)
            vkeys = [signer.vkey] if signer is not None else []
            tmp = out.with_name(out.name + ".partial")
            with tmp.open("w", encoding="utf-8") as f:
                summary = audit.export_jsonl(
                    env.store, f, since_ns=since_ns, until_ns=until_ns, vkeys=vkeys
                )
            tmp.replace(out)
        except (StoreError, LedgerUnavailable, audit.ProofError, OSError) as e:
            fail(f"export failed: {e}")
    typer.echo(
        f"exported {summary.entries} entries and {summary.checkpoints} signed checkpoints "
        f"of {len(summary.streams)} streams to {out}"
    )
    tails = summary.unsigned()
    for stream, (first, end) in tails.items():
        typer.echo(f"  {_unsigned(stream, first, end)}")
    if tails:
        typer.echo(
            "  (the gateway signs its streams every few seconds; --checkpoint signs them now)"
        )


def _export_siem(
    out: Path, fmt: str, since_ns: int | None, until_ns: int | None, config: Path | None
) -> None:
    with Env(config) as env:
        try:
            tmp = out.with_name(out.name + ".partial")
            with tmp.open("w", encoding="utf-8", newline="") as f:
                summary = siem.export_siem(env.store, f, fmt, since_ns=since_ns, until_ns=until_ns)
            tmp.replace(out)
        except (StoreError, siem.SiemError, OSError) as e:
            fail(f"export failed: {e}")
    what = {"csv": "CSV rows", "ocsf": "OCSF events", "cef": "CEF events"}[fmt]
    typer.echo(
        f"wrote {summary.events} {what} of {len(summary.streams)} streams to {out} "
        "(SIEM format: not a verifiable bundle; use --format jsonl for that)"
    )
