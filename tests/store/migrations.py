"""A SQLite database as an older ledgergate left it, for the tests that open it with
this one: the schema up to a migration, with the rows a test adds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledgergate.store.sqlite_schema import MIGRATIONS

__all__ = ["old_database"]


def old_database(path: Path, version: int) -> sqlite3.Connection:
    """A new database at ``path`` with migrations 1 to ``version`` applied, open for the
    caller to add rows (then commit and close)."""
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_ns INTEGER)")
    for v, script in MIGRATIONS:
        if v <= version:
            raw.executescript(script)
            raw.execute("INSERT INTO schema_version VALUES (?, 0)", (v,))
    return raw
