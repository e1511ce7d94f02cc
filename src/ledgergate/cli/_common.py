"""Shared CLI plumbing: options, settings, store and key loading, time parsing."""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ledgergate.core.config import ConfigError, parse_duration
from ledgergate.services.config import Settings, load_settings

ConfigOpt = Annotated[Path | None, typer.Option("-c", "--config", help="YAML configuration file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as e:
        typer.echo(f"ledgergate: {e}", err=True)
        raise typer.Exit(2) from None


def store(s: Settings):  # type: ignore[no-untyped-def]
    from ledgergate.store import open_store

    return open_store(s.store_url)


def signer(s: Settings):  # type: ignore[no-untyped-def]
    from ledgergate.services.keys import load_or_create_ledger_signer

    return load_or_create_ledger_signer(s.ledger_key, f"ledgergate/{s.gateway_name}")


def cli_writer(s: Settings):  # type: ignore[no-untyped-def]
    from ledgergate.services.ledger import LedgerWriter

    return LedgerWriter.open(store(s), f"cli@{s.gateway_name}", signer(s), shared=True)


def parse_time(text: str | None) -> int | None:
    """ISO 8601 (``2026-11-23T10:00Z``) or relative (``-1h``, ``-30m``) → ns since epoch."""
    if text is None:
        return None
    if text.startswith("-"):
        try:
            return time.time_ns() - parse_duration(text[1:])
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither ISO 8601 nor relative like -1h") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return int(dt.timestamp() * 1e9)


def fmt_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%fZ")[:-4] + "Z"


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
