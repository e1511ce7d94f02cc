"""``ledgergate store``: run the store's migrations, and move a store to another engine.

Thin commands over ``store`` and ``services.store_copy``: ``migrate`` opens the
configured store (which brings its schema up to date, under the engine's lock) and says
which version it is at; ``copy`` moves everything from one store into an empty one (an
embedded SQLite file into PostgreSQL, typically) and verifies the ledger there with the
local ledger key (or ``--key``). Passwords are ``env:VAR``/``file:PATH`` references or
libpq's own PGPASSFILE, never echoed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ledgergate.cli._common import ConfigOpt, Env, KeyOpt, fail
from ledgergate.cli.audit import _render
from ledgergate.core.config import ConfigError
from ledgergate.core.ledger.checkpoint import Verifier
from ledgergate.services import audit
from ledgergate.services.config import resolve_secret
from ledgergate.services.store_copy import CopyError, copy_store
from ledgergate.store import Store, StoreError, open_store

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PasswordOpt = Annotated[
    str | None,
    typer.Option(help="The store's password as env:VAR or file:PATH.", show_default=False),
]


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Bring the configured store's schema up to date (gateways also do it at start)."""
    with Env(config) as env:
        try:
            st = env.settings.open_store()
        except StoreError as e:
            fail(str(e))
        version = st.schema_version()
        typer.echo(f"{st.url}: schema version {version}, up to date")
        st.close()


def _open(url: str, password: str | None, what: str) -> Store:
    try:
        secret = resolve_secret(password, what=what) if password else None
        return open_store(url, password=secret)
    except (StoreError, ConfigError) as e:
        fail(str(e))


@app.command()
def copy(
    from_: Annotated[str, typer.Option("--from", help="The store to copy (a store URL).")],
    to: Annotated[
        str | None, typer.Option(help="The empty store to fill (default: the configured store).")
    ] = None,
    from_password: PasswordOpt = None,
    to_password: PasswordOpt = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Copy every ledger entry, checkpoint, payload, token, identity, grant, rule and
    review into an empty store, then verify the ledger there. Stop the gateways that
    write the source first."""
    with Env(config) as env:
        verifiers, source = env.verifiers(key)
        src = _open(from_, from_password, "--from-password")
        if to is None:
            try:
                dst = env.settings.open_store()
            except StoreError as e:
                fail(str(e))
        else:
            dst = _open(to, to_password, "--to-password")
        try:
            _copy_into(src, dst, verifiers, source)
        finally:
            src.close()
            dst.close()


def _copy_into(src: Store, dst: Store, verifiers: list[Verifier], source: str) -> None:
    if src.url == dst.url:
        fail("--from and --to name the same store", 2)
    typer.echo(f"copying {src.url} -> {dst.url}", err=True)
    done: dict[str, int] = {}

    def tick(what: str, n: int) -> None:
        done[what] = done.get(what, 0) + n
        if what == "entries" and done[what] % 50_000 < n:
            typer.echo(f"  {done[what]} entries", err=True)

    try:
        rep = copy_store(src, dst, tick)
        check = audit.verify_store(dst, verifiers, key_source=source)
    except (CopyError, StoreError) as e:
        fail(str(e))
    counts = ", ".join(f"{n} {what}" for what, n in rep.counts.items())
    typer.echo(f"copied {counts}")
    _render(check, f"ledger in {dst.url}")
    if not check.ok or any(s.entries != rep.streams.get(s.stream) for s in check.streams):
        raise typer.Exit(1)
