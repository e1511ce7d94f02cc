"""Sending syslog messages to a receiver (RFC 5425: TCP, TLS unless told otherwise, RFC
6587 octet-counted frames), one connection per batch. Shared by the witnesses and the
SIEM forwarder. The messages are built by ``wire.syslog``; this owns the connection."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence

from ledgergate.core.config import split_address
from ledgergate.wire import syslog

__all__ = ["send_syslog"]


async def send_syslog(address: str, tls: ssl.SSLContext | None, messages: Sequence[bytes]) -> None:
    """Deliver ``messages`` in order over one connection (OSError/ssl.SSLError if not)."""
    host, port = split_address(address, 6514)
    _, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=host if tls is not None else None
    )
    try:
        for m in messages:
            writer.write(syslog.frame(m))
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
