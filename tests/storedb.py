"""Raw SQL on a test gateway's store, whichever engine holds it.

Tests that look under the store interface (a tamper test editing a row, a check that no
secret was ever written) use ``StoreDb``: ``execute(sql, args)`` with ``?`` placeholders
as sqlite3 takes them, ``commit()``, ``close()``, and ``dump()``: every byte the store
holds (the SQLite file, or every row of every PostgreSQL table) for "this secret is
nowhere" checks. The SQL must be what both engines run.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Any

import psycopg

from ledgergate.store import sqlite_path

__all__ = ["StoreDb"]


class StoreDb:
    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if url.startswith("sqlite:"):
            self._sqlite = sqlite3.connect(sqlite_path(url))
        else:
            self._pg = psycopg.connect(url, password=password)

    def execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        if self._sqlite is not None:
            return self._sqlite.execute(sql, args)
        assert self._pg is not None
        return self._pg.execute(sql.replace("?", "%s"), tuple(args) or None)  # type: ignore[arg-type]

    def commit(self) -> None:
        if self._sqlite is not None:
            self._sqlite.commit()
        elif self._pg is not None:
            self._pg.commit()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()

    def __enter__(self) -> StoreDb:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def dump(self) -> bytes:
        """Everything the store holds, as bytes to search."""
        if self._sqlite is not None:
            path = sqlite_path(self.url)
            out = path.read_bytes()
            wal = path.with_name(path.name + "-wal")
            return out + (wal.read_bytes() if wal.exists() else b"")
        assert self._pg is not None
        parts: list[bytes] = []
        tables = self._pg.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        for (table,) in tables:
            for row in self._pg.execute(
                psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(table))
            ):
                for v in row:
                    if isinstance(v, bytes):
                        parts.append(v)
                    elif v is not None:
                        parts.append(str(v).encode())
        self._pg.rollback()
        return b"\n".join(parts)
