"""Running the gateway: wiring settings, keys, store, ledger sink and listeners.

Owns the process lifecycle of ``ledgergate serve``: first-start generation of the TLS
certificate and ledger key, the embedded demo connection, the ledger sink, the
PostgreSQL listener, the watch that re-checks open sessions and applies changes of the
stored policy rules, periodic and shutdown checkpoints, and a clean stop on SIGINT or
SIGTERM. Never prints or logs a backend secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ledgergate.core.config import (
    AnyConnection,
    ConfigError,
    Connection,
    HttpConnection,
    KafkaConnection,
    S3Connection,
    SshConnection,
    parse_duration,
    split_address,
)
from ledgergate.core.identity import Claims
from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.policy.effective import PolicyError
from ledgergate.proxy.agent import AgentHub
from ledgergate.proxy.http.gateway import Admitted, HttpGateway
from ledgergate.proxy.kafka.gateway import KafkaGateway
from ledgergate.proxy.listener import Listener
from ledgergate.proxy.pg import AuthResult, PgGateway
from ledgergate.proxy.sink import LedgerSink
from ledgergate.proxy.ssh.gateway import HostLoginError, SshGateway
from ledgergate.services import keys, policy_rules, restart
from ledgergate.services.access import AccessControl
from ledgergate.services.changes import ChangeFeed
from ledgergate.services.config import Settings, api_public_url, resolve_secret
from ledgergate.services.held import held_credential, kafka_credential, ssh_credential
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.notify import Notifier
from ledgergate.services.review_desk import GatewayReviewDesk

__all__ = ["Addon", "GatewayRuntime"]

log = logging.getLogger("ledgergate")
# How often the store's access epoch is polled: a revocation or a disabled identity
# reaches open sessions within about this long, whichever process made the change.
EPOCH_POLL_S = 1.0
# How often a drain looks whether the open sessions have ended.
DRAIN_POLL_S = 0.1


class Addon(Protocol):
    async def start(self, runtime: GatewayRuntime) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class GatewayRuntime:
    settings: Settings
    connections: list[AnyConnection]
    gateway: PgGateway | None = None
    http: HttpGateway | None = None
    kafka: KafkaGateway | None = None
    kafka_bound: dict[str, tuple[str, int]] | None = None
    ssh: SshGateway | None = None
    ssh_bound: tuple[str, int] | None = None
    agents: AgentHub | None = None
    agents_bound: tuple[str, int] | None = None
    http_bound: tuple[str, int] | None = None
    sink: LedgerSink | None = None
    bound: tuple[str, int] | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Extra servers started after the PostgreSQL listener and stopped before it (the
    # REST API): anything with ``async start(runtime)`` and ``async stop()``.
    addons: list[Addon] = field(default_factory=list)
    # Run at stop once the ledger is closed (its final checkpoint signed).
    after_ledger: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    signer: Signer | None = None
    _auth_pool: ThreadPoolExecutor | None = None
    _access: AccessControl | None = None
    reviews: GatewayReviewDesk | None = None
    _watch: asyncio.Task[None] | None = None
    # The store's policy epoch the gateway's policy was built at; rebuilds one at a time.
    _policy_epoch: int = -1
    _policy_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set when a drain began: readiness answers "not ready", listeners no longer accept.
    draining: bool = False
    drain_cut: asyncio.Event = field(default_factory=asyncio.Event)
    # Wake-ups from the store's change notices (PostgreSQL), else plain polling.
    changes: ChangeFeed = field(init=False)

    def __post_init__(self) -> None:
        self.changes = ChangeFeed(self.settings.open_store)

    def server_tls(self) -> ssl.SSLContext:
        s = self.settings
        hostnames = [s.gateway_name, "localhost"]
        cert, key = keys.load_or_create_tls(s.tls_cert, s.tls_key, hostnames)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    async def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        signer = self.signer = keys.load_or_create_ledger_signer(s.ledger_key, s.key_name)
        cipher = keys.PayloadCipher(keys.load_or_create_payload_key(s.payload_key))
        lcfg = s.config.ledger

        def open_writer() -> LedgerWriter:
            return LedgerWriter.open(
                s.open_store(),
                s.stream,
                signer,
                checkpoint_every_entries=lcfg.checkpoint_every_entries,
                checkpoint_every_seconds=lcfg.checkpoint_every_seconds,
                fsync=lcfg.fsync,
                cipher=cipher,
                journal_root=s.journal_root,
            )

        loop = asyncio.get_running_loop()
        self.sink = LedgerSink(
            open_writer,
            depth=lcfg.queue_depth,
            checkpoint_seconds=lcfg.checkpoint_every_seconds,
            loop=loop,
            threaded=lcfg.fsync or os.environ.get("LG_THREADED") == "1",
        )
        await self.sink.start()
        await self._close_left_open()
        # Admission and re-checks run on one thread with its own store handle (SQLite
        # handles are per thread); they happen per connection and per re-check, never
        # per query.
        self._auth_pool = ThreadPoolExecutor(1, thread_name_prefix="auth")
        self._access = await loop.run_in_executor(self._auth_pool, self._open_access)
        access = self._access
        if s.config.grants is None and not access.store.list_grants():
            log.warning(
                "no grants are configured: every authenticated identity may reach every "
                "connection (declare grants: in the configuration to restrict)"
            )

        def check(token: str, connection: str) -> AuthResult:
            a = access.admit(token, connection, time.time_ns())
            return AuthResult(
                a.ok, a.identity, a.token_id, a.reason, a.denied, a.expires_ns, a.via, a.grant
            )

        async def authenticate(token: str, connection: str) -> AuthResult:
            r = await loop.run_in_executor(self._auth_pool, check, token, connection)
            return await self._in_window(r, connection)

        # The effective policy: the file's rules, then those kept in the store. One that
        # does not validate (a rule id both in the file and in the store) stops the start:
        # serving the file's rules alone would be serving less than the admins declared.
        try:
            self._policy_epoch, effective, _ = await loop.run_in_executor(
                self._auth_pool, policy_rules.load, access.store, s.config.policy
            )
        except PolicyError as e:
            await self.stop()
            raise ConfigError(f"policy: {e}") from None
        # Held statements and their reviews, and the webhooks that tell reviewers.
        self.reviews = GatewayReviewDesk(s, signer, console_url=api_public_url(s))
        if s.config.notifications.webhooks and s.worker == 0:  # one process delivers
            self.reviews.notifier = Notifier(
                s.config.notifications, self.reviews.attempts.append, console_url=api_public_url(s)
            )
        await self.reviews.start()
        pg_conns = [c for c in self.connections if isinstance(c, Connection)]
        passwords: dict[str, str | None] = {c.name: s.backend_password(c) for c in pg_conns}
        pl = s.config.listeners.postgres
        self.gateway = PgGateway(
            connections={c.name: c for c in pg_conns},
            passwords=lambda c: passwords[c.name],
            authenticate=authenticate,
            sink=self.sink,
            tls=self.server_tls(),
            allow_plaintext=pl.allow_plaintext,
            handshake_timeout=pl.handshake_timeout,
            policies=policy_rules.policy_set(effective),
            masking_key=self._masking_key(),
            reviews=self.reviews,
            worker=s.worker,
            workers=pl.workers,
            run_dir=s.run_dir,
            worker_key=s.worker_key,
            listen_fds=s.listen_fds,
        )
        self.reviews.windows_in_use = lambda: set().union(
            *(g.windows_in_use() for g in self._listeners())
        )
        self.reviews.close_window = lambda rid, why: sum(
            g.close_window(rid, why) for g in self._listeners()
        )
        host, port = split_address(pl.address, 15432)
        server = await self.gateway.listen(host, port)
        sock = server.sockets[0].getsockname()
        self.bound = (str(sock[0]), int(sock[1]))
        await self._start_agents(authenticate)
        await self._start_http(authenticate)
        await self._start_kafka(authenticate)
        await self._start_ssh(authenticate)
        assert self._access is not None
        self.changes.start(self._access.store)
        if self.reviews is not None:
            self.reviews.changes = self.changes
        self._watch = loop.create_task(self._watch_sessions())
        for addon in self.addons:
            await addon.start(self)

    async def _in_window(self, r: AuthResult, connection: str) -> AuthResult:
        """Where an access review rule applies: admitted only inside an approved window
        (whatever the credential: token, JWT, SSH key or certificate)."""
        if not r.ok or self.reviews is None:
            return r
        ident = r.identity or {}
        groups = tuple(str(g) for g in ident.get("groups", ()))
        policies = self.gateway.policies if self.gateway is not None else None
        sp = policies.for_session(connection, groups) if policies is not None else None
        if sp is None or not sp.access:
            return r  # no access rule for them here (the common case: no store read)
        ok, window, why = await self.reviews.access_window(
            str(ident.get("subject", "")), groups, connection
        )
        if not ok:
            return replace(r, ok=False, denied=True, reason=why)
        if window is None or window.window_end_ns is None:
            return r
        return replace(r, window=(window.id, window.window_end_ns))

    async def _start_agents(
        self, authenticate: Callable[[str, str], Awaitable[AuthResult]]
    ) -> None:
        """The agent listener, when a connection is carried by an agent (``via``)."""
        via = {c.name: c.via for c in self.connections if c.via is not None}
        if not via:
            return
        cfg = self.settings.config.listeners.agent
        if cfg.address is None:
            raise ConfigError(
                f"connection {next(iter(via))!r} goes through an agent (via:): "
                "listeners.agent.address must say where agents dial in"
            )
        assert self.gateway is not None
        hub = AgentHub(
            connections=via,
            admit=_admitted_by(authenticate),
            tls=self.server_tls(),
            handshake_timeout=cfg.handshake_timeout,
            leg_timeout=cfg.leg_timeout,
        )
        host, port = split_address(cfg.address, 18444)
        server = await hub.listen(host, port)
        sock = server.sockets[0].getsockname()
        self.agents_bound = (str(sock[0]), int(sock[1]))
        self.agents = self.gateway.agents = hub

    async def _start_http(self, authenticate: Callable[[str, str], Awaitable[AuthResult]]) -> None:
        """The HTTPS listener, when an ``s3`` or ``http`` connection is declared."""
        s = self.settings
        conns = {
            c.name: c for c in self.connections if isinstance(c, S3Connection | HttpConnection)
        }
        if not conns:
            return
        assert self._access is not None and self.sink is not None
        access, loop = self._access, asyncio.get_running_loop()
        sealer = keys.SecretSealer(keys.load_or_create_payload_key(s.access_key_key))

        by_token = _admitted_by(authenticate)

        async def by_key(
            key_id: str, connection: str | None
        ) -> tuple[Admitted, str | None, tuple[str, ...] | None]:
            a, secret, scope = await loop.run_in_executor(
                self._auth_pool, access.admit_key, key_id, sealer, connection, time.time_ns()
            )
            adm = Admitted(
                a.ok, a.identity, a.token_id, a.reason, a.denied, a.expires_ns, a.via, a.grant
            )
            if adm.ok and connection is not None and self.reviews is not None:
                # access review windows apply to these connections as to PostgreSQL ones
                ident = adm.identity or {}
                groups = tuple(str(g) for g in ident.get("groups", ()))
                policies = self.gateway.policies if self.gateway is not None else None
                sp = policies.for_session(connection, groups) if policies is not None else None
                if sp is not None and sp.access:
                    ok, window, why = await self.reviews.access_window(
                        str(ident.get("subject", "")), groups, connection
                    )
                    if not ok:
                        return replace(adm, ok=False, denied=True, reason=why), None, scope
                    if window is not None and window.window_end_ns is not None:
                        adm = replace(adm, window=(window.id, window.window_end_ns))
            return adm, secret, scope

        held = {c.name: held_credential(c) for c in conns.values()}
        hl = s.config.listeners.http
        self.http = HttpGateway(
            connections=conns,
            held=held,
            authenticate=by_token,
            authenticate_key=by_key,
            sink=self.sink,
            tls=self.server_tls() if hl.tls else None,
            listener=hl,
            hostnames=(s.gateway_name, "localhost"),
            policies=lambda: self.gateway.policies if self.gateway is not None else None,
            reviews=self.reviews,
            masking_key=self._masking_key(),
            legs=self.agents.openers() if self.agents is not None else None,
        )
        host, port = split_address(hl.address, 19443)
        server = await self.http.listen(host, port)
        sock = server.sockets[0].getsockname()
        self.http_bound = (str(sock[0]), int(sock[1]))

    async def _start_kafka(self, authenticate: Callable[[str, str], Awaitable[AuthResult]]) -> None:
        """A bootstrap port per ``kafka`` connection (broker ports open as brokers appear)."""
        s = self.settings
        conns = {c.name: c for c in self.connections if isinstance(c, KafkaConnection)}
        if not conns:
            return
        assert self.sink is not None

        by_token = _admitted_by(authenticate)

        kl = s.config.listeners.kafka
        self.kafka = KafkaGateway(
            connections=conns,
            held={c.name: kafka_credential(c) for c in conns.values()},
            authenticate=by_token,
            sink=self.sink,
            tls=self.server_tls() if kl.tls else None,
            listener=kl,
            advertised_host=s.gateway_name,
            policies=lambda: self.gateway.policies if self.gateway is not None else None,
            reviews=self.reviews,
            masking_key=self._masking_key(),
            legs=self.agents.openers() if self.agents is not None else None,
        )
        self.kafka_bound = await self.kafka.start()

    async def _start_ssh(self, authenticate: Callable[[str, str], Awaitable[AuthResult]]) -> None:
        """The SSH listener, when an ``ssh`` connection is declared."""
        s = self.settings
        conns = {c.name: c for c in self.connections if isinstance(c, SshConnection)}
        if not conns:
            return
        assert self.sink is not None
        sl = s.config.listeners.ssh
        key_path = Path(sl.host_key) if sl.host_key else s.data_dir / "keys" / "ssh_host_ed25519"
        access, loop = self._access, asyncio.get_running_loop()
        assert access is not None

        async def by_ssh(how: str, value: str | bytes, connection: str) -> Admitted:
            a = await loop.run_in_executor(
                self._auth_pool, access.admit_ssh, how, value, connection, time.time_ns()
            )
            r = await self._in_window(
                AuthResult(
                    a.ok, a.identity, a.token_id, a.reason, a.denied, a.expires_ns, a.via, a.grant
                ),
                connection,
            )
            return Admitted(
                r.ok, r.identity, r.token_id, r.reason, r.denied, r.expires_ns, r.via, r.grant,
                r.window,
            )  # fmt: skip

        try:
            self.ssh = SshGateway(
                connections=conns,
                held={c.name: ssh_credential(c) for c in conns.values()},
                authenticate=_admitted_by(authenticate),
                authenticate_ssh=by_ssh,
                user_ca=keys.load_or_create_ssh_host_key(s.ssh_user_ca),
                sink=self.sink,
                listener=sl,
                host_key=keys.load_or_create_ssh_host_key(key_path),
                policies=lambda: self.gateway.policies if self.gateway is not None else None,
                unparseable=lambda: s.config.policy.unparseable,
                reviews=self.reviews,
                legs=self.agents.openers() if self.agents is not None else None,
            )
        except HostLoginError as e:
            await self.stop()
            raise ConfigError(str(e)) from None
        await self.ssh.listen(*split_address(sl.address, 12222))
        self.ssh_bound = self.ssh.bound

    async def _close_left_open(self) -> None:
        """Close, on the ledger, the sessions this stream's previous run left open."""
        s = self.settings
        assert self.sink is not None

        def find() -> list[Draft]:
            store = s.open_store()
            try:
                return restart.closing_drafts(store, s.stream)
            finally:
                store.close()

        drafts = await asyncio.get_running_loop().run_in_executor(None, find)
        if drafts:
            log.warning("closing %d sessions the previous run left open", len(drafts))
            self.sink.submit(drafts)

    def _listeners(self) -> list[Listener]:
        """Every protocol's listener: re-checks, access windows and shutdown go to all."""
        return [
            g for g in (self.gateway, self.http, self.kafka, self.ssh, self.agents) if g is not None
        ]

    def _masking_key(self) -> bytes:
        """The keyed-tokenization secret: configured, or generated once (0600)."""
        s = self.settings
        spec = s.config.policy.masking_key
        if spec:
            secret = resolve_secret(spec, what="policy.masking_key") or ""
            return hashlib.sha256(secret.encode("utf-8")).digest()
        return keys.load_or_create_payload_key(s.data_dir / "keys" / "masking.key")

    def _open_access(self) -> AccessControl:
        s = self.settings
        verify_jwt: Callable[[str, int], Claims] | None = None
        looks_like_jwt: Callable[[str], bool] | None = None
        oidc = s.config.identity.oidc
        if oidc is not None and oidc.accept_jwt_passwords:
            from ledgergate.services.oidc import OidcVerifier
            from ledgergate.services.oidc import looks_like_jwt as _looks

            verifier = OidcVerifier(oidc)
            verify_jwt = verifier.verify
            looks_like_jwt = _looks
        return AccessControl(
            s.config, s.open_store(), verify_jwt=verify_jwt, looks_like_jwt=looks_like_jwt
        )

    async def _watch_sessions(self) -> None:
        """Re-check open sessions every ``identity.recheck_interval``, and within about a
        second of any change that can end one (the store's access epoch moves when a
        token is revoked, an identity disabled or a grant removed, by any process).
        A change of the stored policy rules (the policy epoch) is applied within the
        same second."""
        assert self._access is not None and self.gateway is not None
        access, loop = self._access, asyncio.get_running_loop()
        interval = parse_duration(self.settings.config.identity.recheck_interval) / 1e9
        last_epoch = await loop.run_in_executor(self._auth_pool, access.epoch)
        last_full = loop.time()
        while True:
            # with change notices the epoch poll is only a backstop; the periodic
            # re-check (expiries, session limits) keeps its own interval either way
            await self.changes.wait(
                ("access", "policy"), min(self.changes.interval(EPOCH_POLL_S), interval)
            )
            try:
                await self.refresh_policy()
                epoch = await loop.run_in_executor(self._auth_pool, access.epoch)
                if epoch == last_epoch and loop.time() - last_full < interval:
                    continue
                if epoch != last_epoch and self.http is not None:
                    self.http.access_changed()
                last_epoch, last_full = epoch, loop.time()
                facts = [
                    x.facts
                    for g in self._listeners()
                    for x in g.open_sessions()
                    if x.facts is not None
                ]
                verdicts = await loop.run_in_executor(
                    self._auth_pool, access.recheck, facts, time.time_ns()
                )
            except Exception:  # the store is busy or gone: keep serving, try again
                log.exception("re-checking open sessions failed; retrying")
                continue
            if verdicts:
                for g in self._listeners():
                    g.end_sessions(verdicts)

    async def refresh_policy(self) -> bool:
        """Rebuild the policy if the store's policy epoch moved, and apply it: new
        sessions take it at once, open ones from their next statement (one that now
        needs masking but was opened without it is ended). True if the policy changed.
        Stored rules that do not validate with this gateway's file leave the policy in
        force as it is (logged): never less than what was enforced."""
        assert self._access is not None and self.gateway is not None
        store, gw = self._access.store, self.gateway
        loop = asyncio.get_running_loop()
        async with self._policy_lock:
            epoch = await loop.run_in_executor(self._auth_pool, store.policy_epoch)
            if epoch == self._policy_epoch:
                return False
            old = gw.policies.version if gw.policies is not None else "none"
            try:
                epoch, effective, _ = await loop.run_in_executor(
                    self._auth_pool, policy_rules.load, store, self.settings.config.policy
                )
            except PolicyError as e:
                self._policy_epoch = epoch
                log.error("the stored policy rules are not applied (policy %s stays): %s", old, e)
                return False
            self._policy_epoch = epoch
            new = policy_rules.policy_set(effective)
            version = new.version if new is not None else "none"
            if version == old:
                return False
            gw.policies = new
            sessions = gw.open_sessions()
            for session in sessions:
                session.apply_policy(new)
            log.info("policy %s applied (was %s) to %d open sessions", version, old, len(sessions))
            return True

    async def recheck_now(self) -> None:
        """Re-check every open session at once, and take a changed policy (after an
        admin change in this process)."""
        assert self._access is not None and self.gateway is not None
        try:
            await self.refresh_policy()
        except Exception:  # the watch retries within a second
            log.exception("applying the changed policy failed; retrying")
        if self.http is not None:
            self.http.access_changed()
        facts = [
            x.facts for g in self._listeners() for x in g.open_sessions() if x.facts is not None
        ]
        verdicts = await asyncio.get_running_loop().run_in_executor(
            self._auth_pool, self._access.recheck, facts, time.time_ns()
        )
        for g in self._listeners():
            g.end_sessions(verdicts)

    def listeners(self) -> list[Listener]:
        return self._listeners()

    @property
    def access_control(self) -> AccessControl | None:
        return self._access

    @property
    def auth_pool(self) -> ThreadPoolExecutor | None:
        return self._auth_pool

    def open_session_count(self) -> int:
        return sum(len(g.open_sessions()) for g in self._listeners())

    async def drain(self, grace_s: float) -> int:
        """Stop accepting on every listener and wait up to ``grace_s`` seconds for the
        open sessions to end by themselves; returns how many were still open."""
        self.draining = True
        for g in self._listeners():
            g.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        left = self.open_session_count()
        if left:
            log.info("draining: %d sessions open, waiting up to %.0f s", left, grace_s)
        while left and loop.time() < deadline and not self.drain_cut.is_set():
            await asyncio.sleep(min(DRAIN_POLL_S, max(0.0, deadline - loop.time())))
            left = self.open_session_count()
        return left

    async def stop(self) -> None:
        for addon in reversed(self.addons):
            try:
                await addon.stop()
            except Exception:
                log.exception("stopping %r failed", addon)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await asyncio.get_running_loop().run_in_executor(None, self.changes.stop)
        if self.http is not None:
            await self.http.shutdown()
        if self.kafka is not None:
            await self.kafka.shutdown()
        if self.agents is not None:
            await self.agents.shutdown()
        if self.gateway is not None:
            await self.gateway.shutdown()
        if self.reviews is not None:
            await self.reviews.stop()
        if self.sink is not None:
            await self.sink.close()
        for after in self.after_ledger:  # the final checkpoint is signed: publish it
            await after()
        if self._auth_pool is not None:
            if self._access is not None:
                self._auth_pool.submit(self._access.store.close)
            self._auth_pool.shutdown(wait=False)


def _admitted_by(
    authenticate: Callable[[str, str], Awaitable[AuthResult]],
) -> Callable[[str, str], Awaitable[Admitted]]:
    """The token check the HTTP and Kafka listeners take: the access service's answer
    as an ``Admitted``."""

    async def by_token(token: str, connection: str) -> Admitted:
        r = await authenticate(token, connection)
        return Admitted(
            r.ok, r.identity, r.token_id, r.reason, r.denied, r.expires_ns, r.via, r.grant, r.window
        )

    return by_token
