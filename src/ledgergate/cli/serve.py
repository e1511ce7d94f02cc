"""``ledgergate serve``: start the gateway (thin: settings → services.gateway)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledgergate.core.config import (
    AnyConnection,
    ConfigError,
    Connection,
    KafkaConnection,
    Roles,
    SshConnection,
    parse_duration,
    split_address,
)
from ledgergate.services import held
from ledgergate.services.config import Settings, load_settings
from ledgergate.services.demo import DemoBackends

if TYPE_CHECKING:
    from ledgergate.services.gateway import GatewayRuntime

ConfigOpt = Annotated[
    Path | None, typer.Option("-c", "--config", help="YAML configuration file.", show_default=False)
]


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: ConfigOpt = None,
        data_dir: Annotated[str | None, typer.Option(help="Override data_dir.")] = None,
        listen: Annotated[
            str | None, typer.Option(help="Override the PostgreSQL listener address.")
        ] = None,
        demo_token_ttl: Annotated[
            str, typer.Option(help="TTL of the demo token (embedded default only).")
        ] = "8h",
        worker: Annotated[
            int | None, typer.Option(hidden=True, help="Run as relay process N (internal).")
        ] = None,
    ) -> None:
        """Start the gateway. Without -c and without ./ledgergate.yaml it runs the embedded
        default: SQLite store, generated TLS certificate and ledger key under the data
        directory, and a demo connection to a local PostgreSQL when one answers."""
        from ledgergate.services import gateway as gw
        from ledgergate.services.runner import run_gateway

        try:
            settings = load_settings(config, data_dir=data_dir)
        except ConfigError as e:
            typer.echo(f"ledgergate: {e}", err=True)
            raise typer.Exit(2) from None
        cfg = settings.config
        if listen:
            cfg = cfg.model_copy(
                update={
                    "listeners": cfg.listeners.model_copy(
                        update={
                            "postgres": cfg.listeners.postgres.model_copy(
                                update={"address": listen}
                            )
                        }
                    )
                }
            )
            settings = dataclasses.replace(settings, config=cfg)
        logging.basicConfig(
            level=cfg.log_level.upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # asyncssh logs every connection, auth and channel at INFO: ledgergate's own
        # lines and the ledger say what happened; its warnings still show
        if logging.root.level > logging.DEBUG:  # log_level: debug shows them all
            logging.getLogger("asyncssh").setLevel(max(logging.WARNING, logging.root.level))
        embedded = settings.source is None
        connections = list(cfg.connections)
        demo: DemoBackends | None = None
        if embedded and not connections:
            if not listen:
                cfg = cfg.model_copy(
                    update={
                        "listeners": cfg.listeners.model_copy(
                            update={
                                "postgres": cfg.listeners.postgres.model_copy(
                                    update={"address": "127.0.0.1:15432"}
                                )
                            }
                        )
                    }
                )
                settings = dataclasses.replace(settings, config=cfg)
            # The demo also opens the REST API and its web console on 18443, the demo
            # identity its admin (it signs in with the demo token).
            api_address = cfg.listeners.api.address or "127.0.0.1:18443"
            cfg = cfg.model_copy(
                update={
                    "listeners": cfg.listeners.model_copy(
                        update={
                            "http": cfg.listeners.http.model_copy(
                                update={"address": "127.0.0.1:19443"}
                            ),
                            "api": cfg.listeners.api.model_copy(update={"address": api_address}),
                        }
                    ),
                    "roles": Roles.model_validate({"admin": {"identities": ["demo"]}}),
                }
            )
            settings = dataclasses.replace(settings, config=cfg)
            demo = DemoBackends(settings.data_dir)
            try:
                connections.extend(demo.start())
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                demo.stop()
                typer.echo(f"ledgergate: the demo backends could not start: {e}", err=True)
                raise typer.Exit(1) from None
        try:
            for c in connections:
                if isinstance(c, Connection):
                    settings.backend_password(c)
                elif isinstance(c, KafkaConnection):
                    held.kafka_credential(c)
                elif isinstance(c, SshConnection):
                    held.ssh_credential(c)
                else:
                    held.held_credential(c)  # resolvable now, not at the first request
        except ConfigError as e:
            typer.echo(f"ledgergate: {e}", err=True)
            raise typer.Exit(2) from None
        nworkers = cfg.listeners.postgres.workers
        if worker is not None and not 0 <= worker < nworkers:
            typer.echo(f"ledgergate: --worker must be below {nworkers}", err=True)
            raise typer.Exit(2)
        if nworkers > 1:
            from ledgergate.services import workers as wk

            try:
                if worker is None:  # the supervisor
                    address = cfg.listeners.postgres.address
                    wk.prepare(settings)
                    socks = wk.bind_listeners(*split_address(address, 15432), nworkers)
                    typer.echo(f"ledgergate: {nworkers} relay processes on {address}")
                    command = [sys.executable, sys.argv[0], *sys.argv[1:]]
                    digest = wk.config_digest(settings)
                    raise typer.Exit(
                        wk.supervise(command, nworkers, socks, settings.run_dir, digest)
                    )
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor passes it on
                env = wk.worker_env()
                wk.die_with_parent(env.supervisor)
                if env.config_digest != wk.config_digest(settings):
                    raise wk.WorkerError(
                        f"worker {worker}: the configuration changed since the gateway "
                        "started; restart the gateway to apply it"
                    )
            except wk.WorkerError as e:
                typer.echo(f"ledgergate: {e}", err=True)
                raise typer.Exit(2) from None
            settings = settings.for_worker(worker, env.key, env.listen_fds)
        runtime = gw.GatewayRuntime(settings=settings, connections=connections)
        api = None
        if cfg.listeners.api.address and settings.worker == 0:
            from ledgergate.api.server import ApiAddon

            api = ApiAddon()
            runtime.addons.append(api)
        if cfg.ledger.witnesses:
            from ledgergate.services.witness import WitnessPublisher

            # each process publishes its own stream; the first also the CLI's
            own = [settings.stream] + ([settings.cli_stream] if settings.worker == 0 else [])
            try:
                runtime.addons.append(WitnessPublisher(settings, own))
            except ConfigError as e:
                typer.echo(f"ledgergate: {e}", err=True)
                raise typer.Exit(2) from None
        if cfg.insights.webhook and settings.worker == 0:
            from ledgergate.services.insights_sender import InsightsSender

            try:
                runtime.addons.append(InsightsSender(settings))
            except ConfigError as e:
                typer.echo(f"ledgergate: {e}", err=True)
                raise typer.Exit(2) from None
        if cfg.siem:
            from ledgergate.services.siem_forward import SiemForwarder

            own = [settings.stream] + ([settings.cli_stream] if settings.worker == 0 else [])
            try:
                for i, target in enumerate(cfg.siem):
                    runtime.addons.append(SiemForwarder(settings, i, target, own))
            except ConfigError as e:
                typer.echo(f"ledgergate: {e}", err=True)
                raise typer.Exit(2) from None

        def ready(rt: gw.GatewayRuntime) -> None:
            assert rt.bound is not None
            host, port = rt.bound
            if settings.worker > 0:  # worker 0 says the rest
                typer.echo(
                    f"ledgergate: worker {settings.worker} listening on {host}:{port}; "
                    f"ledger stream {settings.stream}"
                )
                return
            shown = "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host
            typer.echo(f"ledgergate: listening for PostgreSQL clients on {host}:{port}")
            if rt.http_bound is not None:
                hh, hp = rt.http_bound
                scheme = "https" if cfg.listeners.http.tls else "http"
                typer.echo(f"ledgergate: listening for S3 and HTTP clients on {scheme}://{hh}:{hp}")
            if rt.agents_bound is not None:
                ah, ap = rt.agents_bound
                typer.echo(f"ledgergate: listening for agents on {ah}:{ap} (TLS)")
            for name, (kh, kp) in (rt.kafka_bound or {}).items():
                sec = "SASL_SSL" if cfg.listeners.kafka.tls else "SASL_PLAINTEXT"
                typer.echo(
                    f"ledgergate: listening for Kafka clients of {name!r} on {kh}:{kp} ({sec}; "
                    "brokers on the ports after it)"
                )
            if rt.ssh_bound is not None:
                sh, sp = rt.ssh_bound
                typer.echo(
                    f"ledgergate: listening for SSH clients on {sh}:{sp} "
                    f"(ssh -p {sp} CONNECTION@{shown})"
                )
            if api is not None:
                typer.echo(f"ledgergate: REST API on {api.url} (OpenAPI: {api.url}/docs)")
            typer.echo(
                f"ledgergate: data directory {settings.data_dir}; ledger stream {settings.stream}"
            )
            if not connections:
                typer.echo(
                    "ledgergate: no connections configured (and no local PostgreSQL on "
                    "127.0.0.1:5432 for the demo); write a ledgergate.yaml, see README"
                )
            for c in connections:
                where = f"{c.address}/{c.database}" if isinstance(c, Connection) else c.target_url
                typer.echo(
                    f"ledgergate: connection {c.name!r} ({c.type}) -> {where} "
                    f"(recording: {c.recording})"
                )
            if embedded and connections:
                _demo_banner(settings, connections, shown, port, rt, demo_token_ttl)
                if api is not None:
                    typer.echo(
                        f"ledgergate: web console on {api.url}/ (sign in with the demo token; "
                        f"the browser will ask you to accept the gateway's own certificate)\n"
                    )
            typer.echo("ledgergate: press Ctrl-C to stop (a final checkpoint is signed)")

        try:
            run_gateway(runtime, on_ready=ready)
        except ConfigError as e:  # found at start: e.g. stored policy rules that clash
            typer.echo(f"ledgergate: {e}", err=True)
            raise typer.Exit(2) from None
        finally:
            if demo is not None:
                demo.stop()


def _demo_banner(
    settings: Settings,
    connections: list[AnyConnection],
    shown: str,
    port: int,
    rt: GatewayRuntime,
    ttl: str,
) -> None:
    """Mint the demo credentials (shown once) and say how to reach each demo backend."""
    from ledgergate.services import access_keys, tokens
    from ledgergate.services.keys import (
        SecretSealer,
        load_or_create_ledger_signer,
        load_or_create_payload_key,
    )
    from ledgergate.services.ledger import LedgerWriter

    store = settings.open_store()
    signer = load_or_create_ledger_signer(settings.ledger_key, settings.key_name)
    w = LedgerWriter.open(store, settings.cli_stream, signer, shared=True)
    now = time.time_ns()
    names = {c.name for c in connections}
    try:
        if "demo" in names:
            tok, _ = tokens.create_token(
                store,
                w,
                identity="demo",
                kind="user",
                ttl_ns=parse_duration(ttl),
                now_ns=now,
                created_by="serve (demo)",
            )
            typer.echo(
                f"ledgergate: demo token for identity 'demo' (shown once, expires in {ttl}):"
            )
            typer.echo(
                f'\n  psql "host={shown} port={port} dbname=demo user=demo '
                f'password={tok} sslmode=require"\n'
            )
        if "demo-s3" in names and rt.http_bound is not None:
            key_id, secret, _ = access_keys.create_access_key(
                store,
                w,
                SecretSealer(load_or_create_payload_key(settings.access_key_key)),
                identity="demo",
                kind="user",
                ttl_ns=parse_duration(ttl),
                now_ns=now,
                created_by="serve (demo)",
                connections=("demo-s3",),
            )
            ca = settings.tls_cert
            beside = Path(sys.executable).parent / "aws"  # quickstart installs it there
            aws = str(beside) if beside.exists() else shutil.which("aws") or "aws"
            typer.echo(
                "ledgergate: demo S3 access key for identity 'demo' (shown once), bucket demo:"
            )
            typer.echo(
                f"\n  export AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} "
                f"AWS_DEFAULT_REGION=us-east-1\n"
                f"  {aws} --endpoint-url https://localhost:{rt.http_bound[1]} --ca-bundle {ca} "
                "s3 cp README.md s3://demo/\n"
            )
    finally:
        w.close(time.time_ns())
        store.close()
