"""Shared CLI plumbing: common options, the command environment (settings, store, keys,
the CLI's own ledger stream), time parsing and output helpers.

Commands stay thin: they parse options here, call a service, and render. Errors the user
can fix are printed on stderr as ``ledgergate: ...`` with exit code 2 (usage,
configuration) or 1 (the operation failed); never a traceback, never a secret.
"""

from __future__ import annotations

import datetime
import getpass
import json
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, NoReturn

import typer

from ledgergate.core.config import ConfigError
from ledgergate.core.config import parse_time as core_parse_time
from ledgergate.core.ledger.checkpoint import Signer, Verifier
from ledgergate.services.config import Settings, load_settings
from ledgergate.services.keys import (
    KeyError_,
    PayloadCipher,
    load_ledger_verifier,
    load_or_create_ledger_signer,
    parse_verifier_keys,
)
from ledgergate.services.ledger import LedgerUnavailable, LedgerWriter, recover_journals
from ledgergate.store import Store, StoreError

__all__ = [
    "ConfigOpt",
    "Env",
    "JsonOpt",
    "KeyOpt",
    "emit_json",
    "fail",
    "fmt_ns",
    "parse_time",
]

ConfigOpt = Annotated[
    Path | None,
    typer.Option("-c", "--config", help="YAML configuration file.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="Trust this verifier key (a vkey string, or a file of them) instead of the "
        "local ledger key or the bundle's own.",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"ledgergate: {message}", err=True)
    raise typer.Exit(code)


class Env:
    """What a command needs, opened lazily and closed at the end (``with Env(config)``)."""

    def __init__(self, config: Path | None) -> None:
        try:
            self.settings: Settings = load_settings(config)
        except ConfigError as e:
            fail(str(e), 2)
        self._store: Store | None = None
        self._writer: LedgerWriter | None = None

    def __enter__(self) -> Env:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            try:
                self._writer.close(time.time_ns())
            except LedgerUnavailable as err:
                typer.echo(f"ledgergate: final checkpoint failed: {err}", err=True)
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = self.settings.open_store()
                # A gateway killed before its store caught up left entries in its
                # journal: what the CLI reads must include them.
                recover_journals(self._store, self.settings.journal_root)
            except (StoreError, LedgerUnavailable) as e:
                fail(str(e))
        return self._store

    @property
    def key_name(self) -> str:
        return self.settings.key_name

    @property
    def actor(self) -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except (OSError, KeyError):
            return "cli"

    def signer(self, *, create: bool = True) -> Signer | None:
        """The ledger signing key (created on first use unless ``create`` is False)."""
        path = self.settings.ledger_key
        if not create and not path.exists():
            return None
        try:
            return load_or_create_ledger_signer(path, self.key_name)
        except (KeyError_, OSError) as e:
            fail(f"cannot load the ledger key: {e}")

    def verifiers(self, key: str | None) -> tuple[list[Verifier], str]:
        """(verifiers, where they came from): ``--key`` if given, else the local key."""
        try:
            if key is not None:
                return parse_verifier_keys(key), "--key"
            v = load_ledger_verifier(self.settings.ledger_key, self.key_name)
        except (KeyError_, OSError) as e:
            fail(str(e), 2)
        if v is None:
            fail(f"no ledger key at {self.settings.ledger_key}; pass --key VKEY", 2)
        return [v], f"local ledger key {self.settings.ledger_key}.pub"

    def writer(self) -> LedgerWriter:
        """The CLI's own ledger stream ``cli@<gateway>`` (shared by CLI processes)."""
        if self._writer is None:
            signer = self.signer()
            assert signer is not None
            try:
                self._writer = LedgerWriter.open(
                    self.store,
                    self.settings.cli_stream,
                    signer,
                    shared=True,
                    owns_store=False,
                )
            except LedgerUnavailable as e:
                fail(str(e))
        return self._writer

    def cipher(self) -> PayloadCipher | None:
        """The payload key, if this data directory has one (never created here)."""
        path = self.settings.payload_key
        if not path.exists():
            return None
        try:
            return PayloadCipher(path.read_bytes())
        except (KeyError_, OSError) as e:
            fail(f"cannot load the payload key: {e}")


def parse_time(text: str | None, *, now_ns: int | None = None) -> int | None:
    """ISO 8601 (``2026-11-23``, ``2026-11-23T10:00:00Z``, ``...+02:00``; UTC when no
    offset), ``now``, or relative to now (``-1h``, ``-30m``, ``-7d``) → ns since epoch."""
    if text is None:
        return None
    try:
        return core_parse_time(text, time.time_ns() if now_ns is None else now_ns)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def fmt_ns(ns: int | None, *, short: bool = False) -> str:
    """A UTC timestamp to the millisecond (``short``: to the second), or '-'."""
    if ns is None:
        return "-"
    dt = datetime.datetime.fromtimestamp(ns // 10**9, datetime.UTC)
    if short:
        return dt.strftime("%Y-%m-%d %H:%M:%SZ")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + f".{ns % 10**9 // 10**6:03d}Z"


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, sort_keys=False)
    sys.stdout.write("\n")
