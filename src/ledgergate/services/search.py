"""Full-text search over what every session ran: statements, paths, operations, buckets and
keys, topics, tables, rule names. Shared by ``ledgergate search`` and the REST API.

The index is derived from the entries and kept apart from the hot path: each search first
brings it up to date from the entries table (``refresh``: the entries each stream added
since the last search, in small transactions), then asks the store. Only what an entry
holds is indexed, so a search finds only what the connection's recording level kept
(``redacted`` statements have their literals replaced); payloads (result rows, masked
values) are never read.

A hit is shown as its entry says: the entry is read again, its bytes checked against its
hash, the filters applied to it and its words matched again, so an index or a column
edited in the database cannot make a search present what the ledger does not hold.

Queries: words are matched whole and case-insensitively, all of them required, in any
order; a double-quoted part must appear as written, its words in a row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ledgergate.services.journal import as_entry_says
from ledgergate.services.sessions import describe
from ledgergate.store.base import EntryRow, Store

__all__ = ["MAX_HITS", "Hit", "SearchError", "doc_words", "parse_query", "refresh", "search"]

# Entries read per transaction while the index catches up: small, so the store's write
# lock is never held long away from the gateway's own indexer.
REFRESH_BATCH = 2000
# Words of one entry indexed at most (a statement of megabytes is findable by its start).
MAX_DOC_WORDS = 4096
# Hits one search returns at most.
MAX_HITS = 1000
# The fields of an entry whose text is searched.
_SEARCHED = ("command", "decision", "reason", "review")
# Chunk entries carry sizes and digests only: skipped without being parsed.
_CHUNK = b'"kind":"chunk"'
_WORD = re.compile(r"[^\W_]+")
_QUOTED = re.compile(r'"([^"]*)"')


class SearchError(ValueError):
    """A query that cannot be searched (no words in it)."""


@dataclass(frozen=True, slots=True)
class Hit:
    stream: str
    seq: int
    ts_ns: int
    kind: str
    session_id: str | None
    identity: str | None
    connection: str | None
    what: str  # one line, as `sessions show` prints the entry

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": f"{self.stream}:{self.seq}",
            "ts_ns": self.ts_ns,
            "kind": self.kind,
            "session_id": self.session_id,
            "identity": self.identity,
            "connection": self.connection,
            "what": self.what,
        }


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _strings(value: object, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if "sha256" not in k:  # digests are not words anyone searches for
                _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def doc_words(doc: dict[str, Any]) -> list[str]:
    """The words an entry is found by (none for entries with nothing to search)."""
    texts: list[str] = []
    for key in _SEARCHED:
        _strings(doc.get(key), texts)
    out: list[str] = []
    for t in texts:
        out.extend(words(t))
        if len(out) >= MAX_DOC_WORDS:
            return out[:MAX_DOC_WORDS]
    return out


def parse_query(query: str) -> list[list[str]]:
    """The phrases a query asks for: each quoted part as one, each other word alone."""
    phrases = [ws for part in _QUOTED.findall(query) if (ws := words(part))]
    phrases += [[w] for w in words(_QUOTED.sub(" ", query))]
    if not phrases:
        raise SearchError("the query has no words to search for")
    return phrases


def refresh(store: Store, batch: int = REFRESH_BATCH) -> int:
    """Index the entries added since the last refresh; how many were looked at."""
    seen = 0
    progress = store.search_progress()
    # The streams table names every stream a writer appended to (its state row is written
    # with its first checkpoint); listing streams from the entries table would read every
    # entry's key at each search.
    for stream in sorted(set(store.stream_states()) | set(progress)):
        top = store.max_seq(stream)
        start = progress.get(stream, 0)
        while top is not None and start <= top:
            stop = min(start + batch, top + 1)
            docs: list[tuple[str, int, int, str]] = []
            for seq, data, _ in store.iter_entries(stream, start, stop):
                seen += 1
                if _CHUNK in data:
                    continue
                doc = orjson.loads(data)
                ws = doc_words(doc)
                if ws:
                    ts = doc.get("ts_ns")
                    docs.append((stream, seq, ts if type(ts) is int else 0, " ".join(ws)))
            store.add_search_docs(docs, {stream: stop})
            start = stop
    return seen


def _holds(doc_ws: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(list(doc_ws[i : i + n]) == list(phrase) for i in range(len(doc_ws) - n + 1))


def _confirmed(
    rows: Iterable[EntryRow],
    phrases: Sequence[Sequence[str]],
    kinds: Sequence[str],
    identity: str | None,
    connection: str | None,
    since_ns: int | None,
    until_ns: int | None,
) -> list[Hit]:
    hits = []
    for row in rows:
        said = as_entry_says(row)
        if said is None:
            continue  # damaged: `audit verify` names it
        if (
            (kinds and said.kind not in kinds)
            or (identity is not None and said.identity != identity)
            or (connection is not None and said.connection != connection)
            or (since_ns is not None and said.ts_ns < since_ns)
            or (until_ns is not None and said.ts_ns >= until_ns)
        ):
            continue
        doc = orjson.loads(said.canonical)
        ws = doc_words(doc)
        if not all(_holds(ws, p) for p in phrases):
            continue
        hits.append(
            Hit(
                said.stream,
                said.seq,
                said.ts_ns,
                said.kind,
                said.session_id,
                said.identity,
                said.connection,
                describe(doc),
            )
        )
    return hits


def search(
    store: Store,
    query: str,
    *,
    kinds: Sequence[str] = (),
    identity: str | None = None,
    connection: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int = 100,
) -> list[Hit]:
    """Entries matching ``query`` (see the module docstring): the most recently indexed
    first (on SQLite, the index's own order, so a frequent word costs no sort of all its
    matches), presented newest first."""
    phrases = parse_query(query)
    limit = max(1, min(limit, MAX_HITS))
    refresh(store)
    rows = store.search_entries(
        phrases,
        kinds=kinds,
        identity=identity,
        connection=connection,
        since_ns=since_ns,
        until_ns=until_ns,
        limit=limit,
    )
    hits = _confirmed(rows, phrases, kinds, identity, connection, since_ns, until_ns)
    hits.sort(key=lambda h: (h.ts_ns, h.stream, h.seq), reverse=True)
    return hits
