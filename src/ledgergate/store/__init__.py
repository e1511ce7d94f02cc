"""Persistence: one interface (``Store``), engines behind it, chosen by URL.

``open_store("sqlite:///abs/path.db")`` opens (and creates, with its parent directories
and schema) an SQLite database, the embedded default; ``open_store("postgresql://user@host
/db?sslmode=verify-full", password=…)`` a PostgreSQL database shared by several gateways
(any libpq connection URL; the password may also come from libpq's own PGPASSFILE).
Both run their schema migrations when opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ledgergate.store.base import (
    CheckpointRow,
    EntryRow,
    GrantRow,
    IdentityRow,
    OutboxRow,
    PolicyRuleRow,
    ReviewRow,
    Store,
    StoreError,
    TokenRow,
)
from ledgergate.store.sqlite import SqliteStore, open_sqlite

if TYPE_CHECKING:
    from ledgergate.store.postgres import ChangeListener, PostgresStore

__all__ = [
    "ChangeListener",
    "CheckpointRow",
    "EntryRow",
    "GrantRow",
    "IdentityRow",
    "OutboxRow",
    "PolicyRuleRow",
    "PostgresStore",
    "ReviewRow",
    "SqliteStore",
    "Store",
    "StoreError",
    "TokenRow",
    "open_store",
    "redact_url",
    "sqlite_path",
]


def __getattr__(name: str) -> Any:
    # The PostgreSQL engine (and psycopg, a tenth of a second to import) loads when first
    # named: an SQLite gateway and most CLI commands never need it.
    if name in ("ChangeListener", "PostgresStore"):
        from ledgergate.store import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def redact_url(url: str) -> str:
    """The URL without a password (``postgresql://user:***@host/db``), for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:`` URL: ``sqlite:///abs/path.db`` and
    ``sqlite:////abs/path.db`` name an absolute path, ``sqlite:rel/path.db`` a relative one."""
    if not url.startswith("sqlite:"):
        raise StoreError(f"not an SQLite store URL: {url.split(':', 1)[0]}:")
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]  # the empty authority of sqlite://
        if rest.startswith("//"):
            rest = rest[1:]  # SQLAlchemy's sqlite://// spelling of an absolute path
    rest = rest.split("?", 1)[0]
    if not rest.strip("/") or rest.strip("/") == ":memory:":
        raise StoreError("an SQLite store needs a file path (sqlite:///abs/path.db)")
    return Path(rest)


def open_store(url: str, *, durable: bool = False, password: str | None = None) -> Store:
    """Open the store a URL names. ``durable``: every commit reaches the disk before it
    returns (see ``Store``). ``password``: the PostgreSQL password, kept out of the URL."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return open_sqlite(sqlite_path(url), durable=durable)
    if scheme in ("postgres", "postgresql"):
        from ledgergate.store.postgres import PostgresStore

        return PostgresStore(url, password=password, durable=durable)
    raise StoreError(
        f"unsupported store URL scheme {scheme!r} "
        "(use sqlite:///abs/path.db or postgresql://user@host/db)"
    )
