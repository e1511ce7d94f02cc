"""What the two SQL engines share: translating engine errors, and reading columns back.

The tables mixins (``tables_*``) hold SQL both SQLite and PostgreSQL run, written with
``?`` placeholders and standard upserts (``ON CONFLICT``); each engine hands them a
``_db`` whose ``execute``/``executemany`` take that SQL (PostgreSQL's adapter rewrites
the placeholders). Column readers are lenient because SQLite columns are not typed: a
tampered row must reach the verifier as data to reject, not crash the reader.
Must not hold engine-specific SQL or business rules.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from ledgergate.store.base import StoreError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Db",
    "as_blob",
    "as_text",
    "clamp_ns",
    "engine_error",
    "json_list",
    "list_json",
    "pending_migrations",
    "translated",
    "until_ns",
]


def engine_error(e: BaseException) -> bool:
    """Whether an engine raised ``e`` (``translated`` turns those into ``StoreError`` at
    the edge): SQLite's errors, and psycopg's once a PostgreSQL store has loaded it (the
    CLI and an SQLite gateway never import psycopg: it takes a tenth of a second)."""
    if isinstance(e, sqlite3.Error):
        return True
    pg = sys.modules.get("psycopg")
    return pg is not None and isinstance(e, pg.Error)


# Both engines store times as signed 64-bit integers.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

P = ParamSpec("P")
R = TypeVar("R")


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class Db(Protocol):
    """The slice of a DB-API connection the tables mixins use."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an engine's errors into ``StoreError`` (the edge of the engine). The message
    names the operation and the engine's reason, never a row's contents or a password."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not engine_error(e):
                raise
            raise StoreError(f"store: {fn.__name__}: {reason(e)}") from e

    return wrapper


def reason(e: BaseException) -> str:
    """An engine error's first line (PostgreSQL adds DETAIL lines that may quote a
    conflicting row's key; those stay out of messages)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def as_blob(v: object) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, memoryview | bytearray):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if v is None:
        return b""
    return str(v).encode("ascii")


def as_text(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def json_list(v: object) -> tuple[str, ...]:
    """A list stored as JSON text, read back leniently."""
    if not isinstance(v, str | bytes) or not v:
        return ()
    try:
        data = json.loads(v)
    except ValueError:
        return ()
    return tuple(str(x) for x in data) if isinstance(data, list) else ()


def list_json(v: Sequence[str] | None) -> str | None:
    return None if v is None else json.dumps(list(v), separators=(",", ":"))


def clamp_ns(ns: int) -> int:
    """Times far in the past or future (year 2999) still compare: 64-bit integers."""
    return min(max(ns, INT64_MIN), INT64_MAX)


def until_ns(until: int | None) -> int:
    return INT64_MAX if until is None else clamp_ns(until)


def upsert(table: str, cols: str, key: str) -> str:
    """``INSERT … ON CONFLICT(key) DO UPDATE`` of every other column: insert or replace
    the row ``key`` names, in SQL both engines run."""
    names = [c.strip() for c in cols.split(",")]
    sets = ", ".join(f"{c}=excluded.{c}" for c in names if c != key)
    marks = ",".join("?" * len(names))
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {sets}"


def pending_migrations(
    current: int, migrations: Sequence[tuple[int, str]], where: str
) -> list[tuple[int, list[str]]]:
    """The migrations a database at ``current`` still needs, each as its statements;
    refuses a database newer than this ledgergate (``where`` names it in the message)."""
    latest = migrations[-1][0]
    if current > latest:
        raise StoreError(
            f"{where} has schema version {current}, newer than this ledgergate "
            f"understands ({latest}); upgrade ledgergate"
        )
    return [
        (version, [s for s in script.split(";") if s.strip()])
        for version, script in migrations
        if version > current
    ]
