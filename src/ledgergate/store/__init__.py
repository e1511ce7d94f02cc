"""Persistence: one interface, engines behind it (SQLite now)."""

from ledgergate.store.sqlite import SqliteStore, open_store

__all__ = ["SqliteStore", "open_store"]
