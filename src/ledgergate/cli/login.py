"""``ledgergate login | logout | whoami | aws-credentials``: a person's own session
(thin over ``services.client``).

``login`` signs in at the identity provider the gateway trusts and saves a short-lived
gateway token (0600) to use as the password of psql and other clients. The gateway's
URL comes from ``--gateway``, else the configuration's API listener, else the last
login. Prompts and progress go to stderr; only ``whoami --show-token`` prints the token.
``aws-credentials`` is an AWS ``credential_process``: it prints a short-lived S3 access
key minted from the saved login, so botocore, the aws CLI and rclone never hold a
long-lived secret.
"""

from __future__ import annotations

import datetime
import enum
import json
import time
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from ledgergate.cli._common import ConfigOpt, JsonOpt, emit_json, fail, fmt_ns
from ledgergate.core.config import ConfigError, split_address
from ledgergate.services import client as cl
from ledgergate.services.config import load_settings
from ledgergate.services.login import DevicePrompt


class Method(enum.StrEnum):
    device = "device"
    browser = "browser"
    saml = "saml"


GatewayOpt = Annotated[
    str | None,
    typer.Option("--gateway", help="The gateway's API URL, e.g. https://gw.example.com:18443."),
]
CaOpt = Annotated[
    Path | None,
    typer.Option("--ca", help="CA bundle to trust for the gateway's certificate."),
]


def _target(gateway: str | None, ca: Path | None, config: Path | None) -> tuple[str, str | None]:
    if gateway:
        return gateway, str(ca) if ca else None
    try:
        s = load_settings(config)
    except ConfigError:
        s = None
    api = s.config.listeners.api if s is not None else None
    if s is not None and api is not None and api.address:
        if api.public_url:
            url = api.public_url
        else:
            host, port = split_address(api.address, 18443)
            host = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
            url = f"{'https' if api.tls else 'http'}://{host}:{port}"
        own = s.tls_cert if s.tls_cert.exists() else None
        return url, str(ca) if ca else (str(own) if own and api.tls else None)
    saved = cl.load()
    if saved is not None:
        return saved.gateway, str(ca) if ca else saved.ca
    fail("which gateway? pass --gateway URL (or -c with an API listener)", 2)


def _prompt(p: DevicePrompt) -> None:
    url = p.verification_uri_complete or p.verification_uri
    typer.echo(
        f"To sign in, open {url}\nand confirm the code {p.user_code} "
        f"(valid for {p.expires_in // 60} minutes). Waiting...",
        err=True,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def login(
        gateway: GatewayOpt = None,
        ca: CaOpt = None,
        method: Annotated[
            Method | None,
            typer.Option(
                "--method", help="device (default with OIDC), browser (loopback), or saml."
            ),
        ] = None,
        no_browser: Annotated[
            bool, typer.Option("--no-browser", help="Print the URL instead of opening it.")
        ] = False,
        config: ConfigOpt = None,
    ) -> None:
        """Sign in through the identity provider and save a short-lived gateway token."""
        url, cafile = _target(gateway, ca, config)
        c = cl.GatewayClient(url, cafile)

        def open_url(u: str) -> None:
            typer.echo(f"Opening {u}", err=True)
            if not no_browser:
                webbrowser.open(u)

        try:
            cfg = c.login_config()
            chosen = method or (Method.device if cfg.get("oidc") else Method.saml)
            if chosen is Method.saml:
                creds = c.login_saml(open_url=open_url)
            else:
                creds = c.login_oidc(chosen.value, on_prompt=_prompt, open_url=open_url)
        except cl.ClientError as e:
            fail(str(e))
        finally:
            c.close()
        path = cl.save(creds)
        typer.echo(
            f"Logged in as {creds.identity} (groups: {', '.join(creds.groups) or '-'}; "
            f"roles: {', '.join(creds.roles)}) until {fmt_ns(creds.expires_ns, short=True)}.\n"
            f"Token saved to {path} (readable by you only). Use it as the password:\n"
            '  PGPASSWORD="$(ledgergate whoami --show-token)" psql '
            '"host=GATEWAY port=15432 dbname=CONNECTION user=ME sslmode=require"',
            err=True,
        )

    @app.command()
    def logout() -> None:
        """Revoke the saved token at the gateway and forget it."""
        creds = cl.load()
        if creds is None:
            typer.echo("not logged in", err=True)
            return
        c = cl.GatewayClient(creds.gateway, creds.ca)
        try:
            c.logout(creds.token)
        except cl.ClientError as e:
            typer.echo(f"ledgergate: the gateway did not revoke the token: {e}", err=True)
        finally:
            c.close()
        cl.forget()
        typer.echo(f"logged out {creds.identity}", err=True)

    @app.command()
    def whoami(
        show_token: Annotated[
            bool, typer.Option("--show-token", help="Print the saved token alone (for scripts).")
        ] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Who the saved token says you are, asked of the gateway."""
        creds = cl.load()
        if creds is None:
            fail("not logged in; run ledgergate login", 1)
        if show_token:
            if time.time_ns() >= creds.expires_ns:
                fail("the saved token has expired; run ledgergate login", 1)
            typer.echo(creds.token)
            return
        c = cl.GatewayClient(creds.gateway, creds.ca)
        try:
            me = c.whoami(creds.token)
        except cl.ClientError as e:
            fail(str(e))
        finally:
            c.close()
        if json_:
            emit_json(me)
            return
        typer.echo(
            f"{me['identity']} ({me['kind']})\n"
            f"  groups:  {', '.join(me['groups']) or '-'}\n"
            f"  roles:   {', '.join(me['roles'])}\n"
            f"  expires: {fmt_ns(me['expires_ns'], short=True)}\n"
            f"  gateway: {creds.gateway}"
        )


def register_ssh(app: typer.Typer) -> None:
    @app.command("ssh-certificate")
    def ssh_certificate(
        public_key: Annotated[
            Path | None,
            typer.Argument(
                help="Your public key (default: ~/.ssh/id_ed25519.pub).", show_default=False
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "-o",
                "--out",
                help="Where to write it (default: KEY-cert.pub, "
                "beside the key, where ssh finds it).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Get an SSH certificate for your key from your saved login: the gateway's SSH
        listener takes it (``ssh -p PORT CONNECTION@GATEWAY``) until the login expires or
        is revoked; no token to type."""
        creds = cl.load()
        if creds is None:
            fail("not logged in; run ledgergate login", 1)
        if time.time_ns() >= creds.expires_ns:
            fail("the saved token has expired; run ledgergate login", 1)
        pub = public_key or Path.home() / ".ssh" / "id_ed25519.pub"
        try:
            text = pub.read_text(encoding="utf-8")
        except OSError as e:
            fail(f"cannot read {pub}: {e.strerror}", 2)
        c = cl.GatewayClient(creds.gateway, creds.ca)
        try:
            got = c.ssh_certificate(creds.token, text)
        except cl.ClientError as e:
            fail(str(e))
        finally:
            c.close()
        dest = out or pub.with_name(pub.name.removesuffix(".pub") + "-cert.pub")
        dest.write_text(got["certificate"] + "\n", encoding="utf-8")
        typer.echo(
            f"wrote {dest}: {got['key_id']}, valid until "
            f"{fmt_ns(got['valid_before_ns'], short=True)}",
            err=True,
        )


def register_aws(app: typer.Typer) -> None:
    @app.command("aws-credentials")
    def aws_credentials(
        connection: Annotated[
            str | None, typer.Argument(help="The s3 connection the key is for.")
        ] = None,
        ttl: Annotated[
            str, typer.Option("--ttl", help="Lifetime (at most the saved login's).")
        ] = "1h",
    ) -> None:
        """Print a short-lived S3 access key from your saved login, in the JSON an AWS
        ``credential_process`` prints (put ``credential_process = ledgergate
        aws-credentials CONNECTION`` in ~/.aws/config)."""
        creds = cl.load()
        if creds is None:
            fail("not logged in; run ledgergate login", 1)
        if time.time_ns() >= creds.expires_ns:
            fail("the saved token has expired; run ledgergate login", 1)
        c = cl.GatewayClient(creds.gateway, creds.ca)
        try:
            key = c.access_key(creds.token, connection, ttl)
        except cl.ClientError as e:
            fail(str(e))
        finally:
            c.close()
        expires = datetime.datetime.fromtimestamp(
            key["expires_ns"] / 1e9, tz=datetime.UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        typer.echo(
            json.dumps(
                {
                    "Version": 1,
                    "AccessKeyId": key["access_key_id"],
                    "SecretAccessKey": key["secret_access_key"],
                    "Expiration": expires,
                }
            )
        )
