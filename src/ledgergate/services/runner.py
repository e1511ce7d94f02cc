"""Running a gateway until a signal: SIGTERM drains (stop accepting, let sessions finish
up to ``listeners.drain_timeout``), SIGINT or a second signal ends sessions at once; then
the runtime stops and signs its final checkpoint. On uvloop when available."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from ledgergate.services.gateway import GatewayRuntime

__all__ = ["run_gateway"]

log = logging.getLogger("ledgergate")


def run_gateway(runtime: GatewayRuntime, *, on_ready: Callable[[GatewayRuntime], None]) -> None:
    """Run until SIGINT/SIGTERM, on uvloop when available."""

    async def main() -> None:
        await runtime.start()
        loop = asyncio.get_running_loop()
        graceful = False

        def on_signal(sig: int) -> None:
            nonlocal graceful
            if runtime.stopping.is_set():  # a second signal: no more waiting
                runtime.drain_cut.set()
                return
            graceful = sig == signal.SIGTERM
            runtime.stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        on_ready(runtime)
        await runtime.stopping.wait()
        grace = runtime.settings.config.listeners.drain_timeout
        if graceful and grace > 0:
            left = await runtime.drain(grace)
            if left:
                log.info("drain time is up: ending %d open sessions", left)
        log.info("shutting down: closing sessions and writing the final checkpoint")
        await runtime.stop()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())
