"""The full-text search index over entries, for both engines: which docs are indexed,
how far each stream has been looked at, and the search itself.

The index is derived, like the entries' search columns: ``services.search`` builds each
doc's words from its entry and brings the index up to date from the entries table; a hit
is presented only as its entry says (the caller re-reads the entry). What differs per
engine is the index itself (SQLite: a contentless FTS5 table beside ``search_docs``;
PostgreSQL: a ``tsvector`` column with a GIN index), given by ``_add_docs`` and
``_match``. Words arrive already split and lower-cased (letters and digits), so both
engines see the same words. No business rules here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ledgergate.store.base import EntryRow
from ledgergate.store.sql import Db, translated
from ledgergate.store.tables_ledger import entry_filters, entry_row

__all__ = ["PgSearch", "SqliteSearch"]

_HIT_COLS = (
    "e.stream, e.seq, e.ts_ns, e.kind, e.session_id, e.identity, e.connection, "
    "e.canonical, e.entry_hash"
)


class _SearchTables:
    _db: Db
    _newest: str  # the ORDER BY of a search: most recent first
    transaction: Callable[[], AbstractContextManager[None]]  # the engine's own

    def _add_docs(self, docs: Sequence[tuple[str, int, int, str]]) -> None:
        """Index ``docs``: (stream, seq, ts_ns, words)."""
        raise NotImplementedError

    def _match(self, phrases: Sequence[Sequence[str]]) -> tuple[str, str, list[Any]]:
        """(FROM clause joining the index to ``entries e``, WHERE term, arguments)."""
        raise NotImplementedError

    @translated
    def search_progress(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self._db.execute("SELECT stream, next_seq FROM search_progress")
        }

    @translated
    def add_search_docs(
        self, docs: Sequence[tuple[str, int, int, str]], progress: dict[str, int]
    ) -> None:
        with self.transaction():
            if docs:
                self._add_docs(docs)
            for stream, next_seq in progress.items():
                self._db.execute(
                    "INSERT INTO search_progress (stream, next_seq) VALUES (?, ?) "
                    "ON CONFLICT(stream) DO UPDATE SET next_seq=excluded.next_seq "
                    "WHERE excluded.next_seq > search_progress.next_seq",
                    (stream, next_seq),
                )

    @translated
    def search_entries(
        self,
        phrases: Sequence[Sequence[str]],
        *,
        kinds: Sequence[str] = (),
        identity: str | None = None,
        connection: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 100,
    ) -> list[EntryRow]:
        if not phrases or not all(phrases):
            return []
        source, match, args = self._match(phrases)
        where, more = entry_filters("e.", kinds, identity, connection, since_ns, until_ns)
        sql = (
            f"SELECT {_HIT_COLS} FROM {source} WHERE {' AND '.join([match, *where])} "
            f"ORDER BY {self._newest} LIMIT ?"
        )
        return [entry_row(r) for r in self._db.execute(sql, [*args, *more, limit])]


class SqliteSearch(_SearchTables):
    # FTS5 walks its index newest row first without sorting every match
    _newest = "search_fts.rowid DESC"

    def _add_docs(self, docs: Sequence[tuple[str, int, int, str]]) -> None:
        for stream, seq, _, words in docs:
            got = self._db.execute(
                "INSERT INTO search_docs (stream, seq) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING RETURNING id",
                (stream, seq),
            ).fetchone()
            if got is not None:
                self._db.execute(
                    "INSERT INTO search_fts (rowid, body) VALUES (?, ?)", (got[0], words)
                )

    def _match(self, phrases: Sequence[Sequence[str]]) -> tuple[str, str, list[Any]]:
        # each phrase quoted (its words in a row), all of them required
        query = " AND ".join('"' + " ".join(p) + '"' for p in phrases)
        source = (
            "search_fts JOIN search_docs d ON d.id = search_fts.rowid "
            "JOIN entries e ON e.stream = d.stream AND e.seq = d.seq"
        )
        return source, "search_fts MATCH ?", [query]


class PgSearch(_SearchTables):
    # the docs' own copy of the time: the newest matches come off search_docs_newest
    _newest = "d.ts_ns DESC, d.stream DESC, d.seq DESC"

    def _add_docs(self, docs: Sequence[tuple[str, int, int, str]]) -> None:
        self._db.executemany(
            "INSERT INTO search_docs (stream, seq, ts_ns, tsv) "
            "VALUES (?, ?, ?, to_tsvector('simple', ?)) ON CONFLICT DO NOTHING",
            list(docs),
        )

    def _match(self, phrases: Sequence[Sequence[str]]) -> tuple[str, str, list[Any]]:
        query = " & ".join("(" + " <-> ".join(p) + ")" for p in phrases)
        source = "search_docs d JOIN entries e ON e.stream = d.stream AND e.seq = d.seq"
        return source, "d.tsv @@ to_tsquery('simple', ?)", [query]
