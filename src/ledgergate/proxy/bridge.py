"""Carrying bytes between two streams until either side closes: what an agent's leg is,
on the agent's side and on the gateway's. No parsing, no recording: the session at the
gateway's end of the leg records what passes."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

__all__ = ["BRIDGE_CHUNK", "MAX_LINE", "bridge"]

# Bytes per read when carrying a leg.
BRIDGE_CHUNK = 64 * 1024
# The longest line an agent or the gateway sends before a leg's bytes (a token and a
# name fit many times over).
MAX_LINE = 16 * 1024


async def _copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(BRIDGE_CHUNK):
            w.write(data)
            await w.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            w.close()


async def bridge(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy a→b and b→a until both directions end; both writers are closed after."""
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_copy(a[0], b[1]))
            tg.create_task(_copy(b[0], a[1]))
    finally:
        a[1].close()
        b[1].close()
