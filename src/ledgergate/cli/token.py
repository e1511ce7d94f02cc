"""``ledgergate token``: mint, list and revoke gateway tokens (thin over services.tokens).

``create`` prints the token alone on the last line of stdout (scripts take that line)
and everything else on stderr. The token is never printed again and never logged.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledgergate.cli._common import ConfigOpt, Env, JsonOpt, emit_json, fail, fmt_ns
from ledgergate.core.config import parse_duration
from ledgergate.services import access_keys, tokens
from ledgergate.services.keys import SecretSealer, load_or_create_payload_key
from ledgergate.services.ledger import LedgerUnavailable

app = typer.Typer(no_args_is_help=True, help="Mint, list and revoke gateway tokens.")


class Kind(enum.StrEnum):
    user = "user"
    service = "service"


@app.command()
def create(
    identity: Annotated[str, typer.Option("--identity", help="Who the token stands for.")],
    ttl: Annotated[
        str, typer.Option("--ttl", help="Lifetime, e.g. 8h, 30d (mandatory, at most 366d).")
    ],
    kind: Annotated[Kind, typer.Option("--kind", help="user or service.")] = Kind.user,
    connection: Annotated[
        list[str] | None,
        typer.Option(
            "--connection", help="Limit the token to this connection (name or glob; repeatable)."
        ),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="Bind this group to the token (repeatable)."),
    ] = None,
    s3: Annotated[
        bool,
        typer.Option(
            "--s3",
            help="Issue an S3 access key (id + secret, for boto3, the aws CLI, rclone) "
            "instead of a token.",
        ),
    ] = False,
    ssh_key: Annotated[
        Path | None,
        typer.Option(
            "--ssh-key",
            help="Register this SSH public key (an OpenSSH .pub file) as the credential "
            "instead of minting a token: ssh logs in with the key until the expiry.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Mint a token (shown once, alone on the last line; only its hash is kept), or with
    --s3 an access key (AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… on the last two
    lines, shown once; the secret is kept sealed), or with --ssh-key register an SSH
    public key (nothing secret is shown: the private key stays with its owner)."""
    blob: bytes | None = None
    if ssh_key is not None:
        if s3:
            fail("--s3 and --ssh-key are two kinds of credential: choose one", 2)
        blob = _ssh_key_blob(ssh_key)
    try:
        ttl_ns = parse_duration(ttl)
    except ValueError as e:
        fail(str(e), 2)
    now = time.time_ns()
    with Env(config) as env:
        ident = env.store.get_identity(identity)
        if ident is not None and ident.disabled_ns is not None:
            fail(f"identity {identity!r} is disabled; enable it first", 2)
        # A service account's groups come with its tokens unless --group says otherwise.
        groups = tuple(group) if group else (ident.groups if ident is not None else ())
        if s3:
            _create_access_key(env, identity, kind.value, ttl_ns, now, groups, connection)
            return
        try:
            tok, rec = tokens.create_token(
                env.store,
                env.writer(),
                identity=identity,
                kind=kind.value,
                ttl_ns=ttl_ns,
                now_ns=now,
                created_by=env.actor,
                groups=groups,
                connections=tuple(connection) if connection else None,
                max_ttl_ns=parse_duration(env.settings.config.identity.max_api_token_ttl),
                purpose="ssh-key" if blob is not None else "api",
                ssh_key=blob,
            )
        except tokens.TokenError as e:
            fail(str(e), 2)
        except LedgerUnavailable as e:
            fail(f"the token was not created: {e}")
    if blob is not None:
        typer.echo(
            f"ssh key {tokens.ssh_fingerprint(blob)} registered as {rec.id} for {rec.kind} "
            f"{rec.identity!r}, expires {fmt_ns(rec.expires_ns)} (revoke it as a token)."
        )
        return
    typer.echo(
        f"token {rec.id} for {rec.kind} {rec.identity!r}, expires {fmt_ns(rec.expires_ns)}.\n"
        "The token is shown once, on stdout; only its hash is stored.",
        err=True,
    )
    typer.echo(tok)


def _ssh_key_blob(path: Path) -> bytes:
    """The key blob of an OpenSSH public key line (``TYPE BASE64 [comment]``)."""
    import base64
    import binascii

    try:
        parts = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {path}: {e}", 2)
    try:
        blob = base64.b64decode(parts[1], validate=True) if len(parts) >= 2 else b""
    except (binascii.Error, ValueError):
        blob = b""
    name = parts[0].encode() if parts else b""
    # the blob starts with its own type name: a key line whose two agree
    if len(blob) < 4 + len(name) or blob[4 : 4 + len(name)] != name or "cert" in parts[0]:
        fail(f"{path} is not an OpenSSH public key (TYPE BASE64 [comment])", 2)
    return blob


def _create_access_key(
    env: Env,
    identity: str,
    kind: str,
    ttl_ns: int,
    now: int,
    groups: tuple[str, ...],
    connection: list[str] | None,
) -> None:
    try:
        key_id, secret, rec = access_keys.create_access_key(
            env.store,
            env.writer(),
            SecretSealer(load_or_create_payload_key(env.settings.access_key_key)),
            identity=identity,
            kind=kind,
            ttl_ns=ttl_ns,
            now_ns=now,
            created_by=env.actor,
            groups=groups,
            connections=tuple(connection) if connection else None,
            max_ttl_ns=parse_duration(env.settings.config.identity.max_api_token_ttl),
        )
    except tokens.TokenError as e:
        fail(str(e), 2)
    except LedgerUnavailable as e:
        fail(f"the access key was not created: {e}")
    typer.echo(
        f"access key {key_id} (token {rec.id}) for {rec.kind} {rec.identity!r}, expires "
        f"{fmt_ns(rec.expires_ns)}.\nThe secret is shown once, on stdout; revoke with "
        f"ledgergate token revoke {rec.id}.",
        err=True,
    )
    typer.echo(f"AWS_ACCESS_KEY_ID={key_id}")
    typer.echo(f"AWS_SECRET_ACCESS_KEY={secret}")


@app.command("list")
def list_(
    identity: Annotated[
        str | None, typer.Option("--identity", help="Only this identity's tokens.")
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List tokens with their status and last use (never the tokens themselves)."""
    now = time.time_ns()
    with Env(config) as env:
        recs = tokens.list_tokens(env.store, identity)
    if json_:
        emit_json([r.as_dict(now) for r in recs])
        return
    t = Table("id", "identity", "kind", "purpose", "status", "expires", "last used", "scope")
    t.columns[0].no_wrap = True
    for r in recs:
        t.add_row(
            r.id,
            r.identity,
            r.kind,
            r.purpose,
            r.status(now),
            fmt_ns(r.expires_ns, short=True),
            fmt_ns(r.last_used_ns, short=True),
            ",".join(r.connections) if r.connections is not None else "*",
        )
    Console().print(t)


@app.command()
def rotate(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), not the token.")],
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="New lifetime (default: the old one's).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Replace a token by a new one (same identity, groups, scope); the old one is
    revoked at once. The new token is shown once, alone on the last line."""
    try:
        ttl_ns = parse_duration(ttl) if ttl else None
    except ValueError as e:
        fail(str(e), 2)
    with Env(config) as env:
        try:
            tok, rec = tokens.rotate_token(
                env.store,
                env.writer(),
                token_id,
                now_ns=time.time_ns(),
                by=env.actor,
                ttl_ns=ttl_ns,
                max_ttl_ns=parse_duration(env.settings.config.identity.max_api_token_ttl),
            )
        except tokens.TokenError as e:
            fail(str(e), 2)
        except LedgerUnavailable as e:
            fail(f"the token was not rotated: {e}")
    typer.echo(
        f"token {rec.id} replaces {token_id} (now revoked), expires {fmt_ns(rec.expires_ns)}.",
        err=True,
    )
    typer.echo(tok)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), not the token.")],
    config: ConfigOpt = None,
) -> None:
    """Revoke a token by id: new connections with it are refused."""
    with Env(config) as env:
        try:
            done = tokens.revoke_token(env.store, env.writer(), token_id, time.time_ns(), env.actor)
        except tokens.TokenError as e:
            fail(str(e))
        except LedgerUnavailable as e:
            fail(f"the token was not revoked: {e}")
    typer.echo(f"revoked {token_id}" if done else f"{token_id} was already revoked")
