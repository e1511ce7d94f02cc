"""What an admitted request is: who (``Admitted``), where to and what was signed
(``HttpTarget``), and the shape of the gateway's two authenticators. Plain data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ledgergate.core.config import HttpConnection, S3Connection
from ledgergate.proxy.admission import Admitted
from ledgergate.proxy.http.session import LedgerSession
from ledgergate.wire.http.messages import RequestHead
from ledgergate.wire.s3 import sigv4

__all__ = ["Admitted", "HttpTarget", "KeyAuth", "TokenAuth"]


@dataclass(slots=True)
class HttpTarget:
    """An admitted request: where it goes and what the client signed."""

    kind: str  # "s3" | "http"
    conn: S3Connection | HttpConnection
    session: LedgerSession
    head: RequestHead
    signed: sigv4.SignedRequest | None = None
    signing_key: bytes | None = None  # the client's, to check chunk signatures
    bucket: str | None = None
    key: str | None = None
    query: list[tuple[str, str]] | None = None
    rest: bytes = b""  # HTTP: the path after /<connection>, with its query


TokenAuth = Callable[[str, str], Awaitable[Admitted]]
# (access key id, connection or None) -> (admission, secret, key scope)
KeyAuth = Callable[
    [str, str | None], Awaitable[tuple[Admitted, str | None, tuple[str, ...] | None]]
]
