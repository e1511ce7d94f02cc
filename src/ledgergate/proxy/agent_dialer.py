"""The agent's side (``ledgergate agent``): dial out to the gateway, and carry backend legs.

Runs inside a private network. It keeps one control connection to the gateway's agent
listener (TLS, the gateway's certificate checked against ``ca``), authenticated by the
agent's own token; for each ``Open`` the gateway sends, it connects to a target it was
given for that connection (``--target NAME=HOST:PORT``, repeatable: addresses stay on
this side; an ``Open`` naming an address reaches it only if it is one of them, as a
Kafka broker the cluster advertised) and opens a new TLS connection to the gateway for
that leg, then copies bytes both ways until either side closes.

It holds no ledger key and sees no user's token (see ``proxy.agent`` for the lines). It
reads the bytes it carries only to log in for the gateway, when the connection's
credential stays here (``--credential``, ``proxy.agent_login``).

A lost control connection is dialed again with a growing pause; a refusal (the token
revoked, expired or not an agent's) ends ``run_agent`` with ``AgentRefused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field

from ledgergate.proxy.agent_login import AgentLogin, LoginFailed, log_in
from ledgergate.proxy.bridge import MAX_LINE, bridge
from ledgergate.wire.agent import (
    AgentLineError,
    Answer,
    Control,
    Leg,
    Open,
    encode,
    parse_from_gateway,
)

__all__ = ["AgentLogin", "AgentRefused", "run_agent"]

log = logging.getLogger("ledgergate.agent")

# Pauses between attempts to reach the gateway: doubling from the first to the last.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
CONNECT_TIMEOUT_S = 10.0


class AgentRefused(RuntimeError):
    """The gateway refused this agent (its token or identity)."""


Target = tuple[str, int]


@dataclass(frozen=True)
class Carried:
    """What this agent carries: each connection's targets (the first is its own) and
    the credentials it logs in with."""

    targets: dict[str, list[Target]]
    logins: dict[str, AgentLogin] = field(default_factory=dict)


async def run_agent(
    gateway: Target,
    token: str,
    carried: Carried,
    tls: ssl.SSLContext,
    *,
    server_name: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or the gateway refuses us). Legs outlive the control
    connection that asked for them (a lost control connection is dialed again while
    they carry on); stopping ends them all."""
    stop = stop or asyncio.Event()
    pause = RETRY_FIRST_S
    legs: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            try:
                await _session(gateway, token, carried, tls, server_name, stop, legs)
                pause = RETRY_FIRST_S
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as e:
                log.warning("the gateway at %s:%d cannot be reached (%s)", *gateway, e)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            pause = min(pause * 2, RETRY_MAX_S)
    finally:
        for t in legs:
            t.cancel()
        if legs:
            await asyncio.gather(*legs, return_exceptions=True)


async def _dial(
    gateway: Target, tls: ssl.SSLContext, server_name: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        return await asyncio.open_connection(
            gateway[0],
            gateway[1],
            ssl=tls,
            server_hostname=server_name or gateway[0],
            limit=MAX_LINE * 2,
        )


async def _session(
    gateway: Target,
    token: str,
    carried: Carried,
    tls: ssl.SSLContext,
    server_name: str | None,
    stop: asyncio.Event,
    legs: set[asyncio.Task[None]],
) -> None:
    reader, writer = await _dial(gateway, tls, server_name)
    try:
        writer.write(encode(Control(token)))
        try:
            answer = parse_from_gateway(await reader.readuntil(b"\n"))
        except AgentLineError as e:
            raise AgentRefused(f"the gateway's answer is not understood: {e}") from None
        if not isinstance(answer, Answer) or not answer.ok:
            why = answer.error if isinstance(answer, Answer) else "no answer"
            raise AgentRefused(f"the gateway refused this agent: {why}")
        log.info("connected to the gateway as agent %s", answer.agent)
        async with asyncio.TaskGroup() as tg:
            stopper = tg.create_task(stop.wait())
            while True:
                line_task = tg.create_task(_readline(reader))
                done, _ = await asyncio.wait(
                    {line_task, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopper in done:
                    line_task.cancel()
                    return
                msg = line_task.result()
                if msg is None:
                    stopper.cancel()
                    log.warning("the gateway closed the control connection")
                    return
                if isinstance(msg, Open):
                    leg = asyncio.get_running_loop().create_task(
                        _leg(gateway, token, carried, tls, server_name, msg)
                    )
                    legs.add(leg)
                    leg.add_done_callback(legs.discard)
    finally:
        writer.close()


async def _readline(reader: asyncio.StreamReader) -> Answer | Open | bool | None:
    """The next line from the gateway (False for one not understood, skipped); None
    when the connection ended."""
    try:
        line = await reader.readuntil(b"\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        return None
    try:
        return parse_from_gateway(line) or False
    except AgentLineError:
        return False


async def _leg(*args: object) -> None:
    """One leg; whatever goes wrong with it stays with it."""
    try:
        await _carry(*args)  # type: ignore[arg-type]
    except Exception:
        log.exception("a leg failed")


async def _carry(
    gateway: Target,
    token: str,
    carried: Carried,
    tls: ssl.SSLContext,
    server_name: str | None,
    msg: Open,
) -> None:
    connection = msg.connection
    target, error = _target(carried, msg)
    login = carried.logins.get(connection) if msg.auth else None
    if msg.auth and login is None:
        target, error = None, f"this agent holds no credential for connection {connection!r}"
    backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    if target is not None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                backend = await asyncio.open_connection(*target)
        except (OSError, TimeoutError) as e:
            error = f"cannot connect to {connection!r}'s server ({type(e).__name__})"
    try:
        gr, gw = await _dial(gateway, tls, server_name)
    except (OSError, TimeoutError, ssl.SSLError) as e:
        log.warning("leg %s: the gateway cannot be reached (%s)", msg.leg, e)
        if backend is not None:
            backend[1].close()
        return
    if error is not None:
        log.warning("leg for %s refused: %s", connection, error)
    gw.write(encode(Leg(msg.leg, token, error)))
    if backend is None:
        with contextlib.suppress(Exception):
            await gw.drain()
        gw.close()
        return
    if login is not None and target is not None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await log_in(connection, login, (gr, gw), backend, target[0])
        except (LoginFailed, TimeoutError, asyncio.IncompleteReadError, OSError) as e:
            log.warning("login to %s's server failed: %s", connection, e or type(e).__name__)
            with contextlib.suppress(Exception):
                await gw.drain()
            gw.close()
            backend[1].close()
            return
    await bridge((gr, gw), backend)


def _target(carried: Carried, msg: Open) -> tuple[Target | None, str | None]:
    """The server a leg goes to, or why it goes nowhere."""
    targets = carried.targets.get(msg.connection)
    if not targets:
        return None, f"this agent has no target for connection {msg.connection!r}"
    if msg.address is None:
        return targets[0], None
    host, _, port = msg.address.rpartition(":")
    want = (host.strip("[]"), int(port)) if port.isdigit() else None
    if want not in targets:
        return None, (
            f"{msg.address} is not a target of connection {msg.connection!r} on this agent "
            "(add it with --target)"
        )
    return want, None
