"""From a stream's journal to the store: background indexing and crash recovery.

The gateway's ledger writer makes every append durable in the stream's journal (see
``store.journal``) and hands the same rows to an ``Indexer``: a thread that owns the
store connection and commits what accumulated every ``INDEX_INTERVAL_S`` in ONE
transaction, so the store pays one commit per tens of milliseconds instead of one per
command. Once a segment's records are all committed it is deleted.

``replay`` applies what a journal holds and the store lacks: after a kill -9 of the
gateway (at its next start, or from the CLI when no gateway holds the stream) and before a
writer resumes. It checks that every entry continues the stored chain (seq, prev_hash,
entry_hash) and refuses a journal that does not, naming the file.

Rules: the store never gets an entry the journal does not hold; the indexer commits in
journal order; an indexer failure is kept and reported to the writer, which fails closed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ledgergate.core.ledger.chain import ChainError, StreamState, entry_link
from ledgergate.core.ledger.journal import (
    CheckpointRecord,
    EntryRecord,
    JournalError,
    PayloadRecord,
    decode,
)
from ledgergate.core.ledger.merkle import leaf_hash
from ledgergate.store.base import CheckpointRow, EntryRow, Store
from ledgergate.store.journal import Journal

__all__ = [
    "Indexer",
    "JournalDamaged",
    "as_entry_says",
    "entry_row_of",
    "index_text",
    "replay",
    "subject_of",
]

log = logging.getLogger("ledgergate.ledger")

# The indexer commits what accumulated at most this long ago: the lag between a record
# being durable (journal) and being visible to readers of the store.
INDEX_INTERVAL_S = 0.05
# ...or at once when this many entries wait (bounds the size of one transaction).
INDEX_EAGER = 8192
# Bytes (entries and payloads) accepted but not yet in the store above which the writer
# reports congestion and sessions pause their reads until the indexer catches up.
INDEX_BACKLOG_BYTES = 64 << 20


class JournalDamaged(RuntimeError):
    """A journal cannot be applied to the store (damaged, or it forks the chain)."""


def index_text(value: object) -> str | None:
    """What an entry's field puts in a store index column (session_id, connection): a
    string as a plain ``str``, anything else None; the same whether the row is built from
    the draft (live, also natively in ``core/ledger/_sealer.c``) or from the entry's JSON
    (replay), so a store indexed before a crash equals one rebuilt after it."""
    return str.__str__(value) if isinstance(value, str) else None


def subject_of(identity: object) -> str | None:
    """The identity column: an identity object's ``subject``, or an identity given as a
    bare string, by ``index_text``'s rule."""
    if isinstance(identity, dict):
        return index_text(identity.get("subject"))
    return index_text(identity)


# -- recovery --------------------------------------------------------------------------------
def _entry_row(stream: str, rec: EntryRecord) -> tuple[EntryRow, bytes]:
    """The store row of a journal entry, and its prev_hash; raises ChainError."""
    return entry_row_of(stream, rec.canonical, rec.entry_hash)


def entry_row_of(stream: str, canonical: bytes, entry_hash: bytes) -> tuple[EntryRow, bytes]:
    """The store row of a sealed entry (its search columns taken from the document
    itself), and its prev_hash; raises ChainError if the bytes do not hold together."""
    if leaf_hash(canonical) != entry_hash:
        raise ChainError("its entry_hash does not match its bytes")
    doc_stream, seq, prev = entry_link(canonical)
    if doc_stream != stream:
        raise ChainError(f"it belongs to stream {doc_stream}")
    doc = orjson.loads(canonical)
    ts, kind = doc.get("ts_ns"), doc.get("kind")
    if type(ts) is not int or type(kind) is not str:
        raise ChainError("it lacks ts_ns or kind")
    row = EntryRow(
        stream,
        seq,
        ts,
        kind,
        index_text(doc.get("session_id")),
        subject_of(doc.get("identity")),
        index_text(doc.get("connection")),
        canonical,
        entry_hash,
    )
    return row, prev


def as_entry_says(row: EntryRow) -> EntryRow | None:
    """A stored row with its search columns as its own entry says them (None when the
    entry's bytes do not hold together): read paths filter and present these, never a
    column that may have been edited in the database."""
    try:
        derived, _ = entry_row_of(row.stream, row.canonical, row.entry_hash)
    except (ChainError, ValueError):
        return None
    return derived


def replay(store: Store, journal: Journal, state: StreamState) -> int:
    """Apply to ``store`` the journal's entries beyond ``state`` (the store's committed
    state of the stream, advanced in place), with its payloads and checkpoints; delete
    each segment once applied. Returns the number of entries added."""
    added = 0
    for seg in journal.segments():
        try:
            dec = decode(seg.read_bytes())
        except JournalError as e:
            raise JournalDamaged(f"journal segment {seg}: {e}") from None
        except OSError as e:
            raise JournalDamaged(f"journal segment {seg} cannot be read: {e.strerror}") from None
        if dec.stream != journal.stream:
            raise JournalDamaged(f"journal segment {seg} belongs to stream {dec.stream}")
        rows: list[EntryRow] = []
        payloads: list[tuple[str, bytes, int]] = []
        cps: list[CheckpointRow] = []
        before = state.copy()
        try:
            for rec in dec.records:
                if type(rec) is EntryRecord:
                    row, prev = _entry_row(journal.stream, rec)
                    if row.seq < state.size:
                        continue  # indexed before the crash
                    if row.seq > state.size:
                        raise ChainError(f"entries {state.size}..{row.seq - 1} are missing")
                    if prev != state.head_hash:
                        raise ChainError("its prev_hash does not continue the stored chain")
                    rows.append(row)
                    state.tree.append(rec.entry_hash)
                    state.size += 1
                    state.head_hash = rec.entry_hash
                elif type(rec) is PayloadRecord:
                    payloads.append((rec.digest, rec.blob, rec.created_ns))
                elif (
                    type(rec) is CheckpointRecord
                    and rec.size == state.size
                    and rec.root == state.tree.root()
                ):
                    # A checkpoint follows the entries it covers; one of a size already
                    # indexed was committed with them (the indexer keeps journal order).
                    cps.append(
                        CheckpointRow(journal.stream, rec.size, rec.ts_ns, rec.root, rec.note)
                    )
        except ChainError as e:
            raise JournalDamaged(
                f"journal segment {seg}: entry {state.size} cannot be applied: {e}"
            ) from None
        try:
            with store.transaction(exclusive=False):  # this stream's journal is ours alone
                if rows:
                    store.insert_entries(rows)
                if payloads:
                    store.put_payloads(payloads)
                for cp in cps:
                    store.put_checkpoint(cp)
                if rows:
                    store.put_stream_state(journal.stream, state.to_record(), rows[-1].ts_ns)
        except BaseException:
            state.size, state.head_hash, state.tree = before.size, before.head_hash, before.tree
            raise
        added += len(rows)
        journal.remove(seg)
    return added


# -- indexing --------------------------------------------------------------------------------
@dataclass(slots=True)
class _Batch:
    rows: list[EntryRow] = field(default_factory=list)
    payloads: list[tuple[str, bytes, int]] = field(default_factory=list)
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    state: tuple[bytes, int] | None = None
    segments: list[Path] = field(default_factory=list)
    nbytes: int = 0


class Indexer:
    """Commits a writer's journaled rows to the store from a thread of its own."""

    def __init__(self, store: Store, journal: Journal) -> None:
        self.store = store
        self.journal = journal
        self.stream = journal.stream
        self.error: BaseException | None = None
        self.on_drained: Callable[[], None] | None = None
        self.committed = 0
        self.commits = 0
        self._cond = threading.Condition(threading.Lock())
        self._batch = _Batch()
        self._backlog = 0  # bytes submitted and not yet committed
        self._congested = False
        self._stop = False
        self._last_segment: Path | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-indexer", daemon=True)
        self._thread.start()

    @property
    def congested(self) -> bool:
        return self._backlog > INDEX_BACKLOG_BYTES

    def submit(
        self,
        segment: Path,
        rows: list[EntryRow],
        payloads: list[tuple[str, bytes, int]],
        nbytes: int,
        checkpoint: CheckpointRow | None = None,
        state: tuple[bytes, int] | None = None,
    ) -> None:
        """Queue rows already durable in ``segment`` for the next store commit."""
        with self._cond:
            b = self._batch
            wake = not b.rows and not b.payloads and not b.checkpoints
            b.rows += rows
            if payloads:
                b.payloads += payloads
            if checkpoint is not None:
                b.checkpoints.append(checkpoint)
            if state is not None:
                b.state = state
            segs = b.segments
            if not segs or (segs[-1] is not segment and segs[-1] != segment):
                b.segments.append(segment)
            b.nbytes += nbytes
            self._backlog += nbytes
            if self._backlog > INDEX_BACKLOG_BYTES:
                self._congested = True
            if wake or len(b.rows) >= INDEX_EAGER:
                self._cond.notify()

    def close(self) -> None:
        """Commit everything submitted, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _take(self) -> _Batch:
        b, self._batch = self._batch, _Batch()
        return b

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._stop and not self._batch.nbytes and not self._batch.checkpoints:
                    cond.wait()
                if not self._stop and len(self._batch.rows) < INDEX_EAGER:
                    cond.wait(INDEX_INTERVAL_S)  # let a group accumulate
                batch = self._take()
                stop = self._stop
            if self.error is None and (batch.nbytes or batch.checkpoints):
                self._commit(batch)
            if stop:
                return

    @property
    def backlog(self) -> int:
        with self._cond:
            return self._backlog

    def _commit(self, b: _Batch) -> None:
        store = self.store
        try:
            with store.transaction(exclusive=False):  # only this stream, ours alone
                if b.rows:
                    store.insert_entries(b.rows)
                if b.payloads:
                    store.put_payloads(b.payloads)
                for cp in b.checkpoints:
                    store.put_checkpoint(cp)
                if b.state is not None:
                    store.put_stream_state(self.stream, b.state[0], b.state[1])
        except Exception as e:
            log.error("ledger indexer: the store cannot be written: %s", e)
            self.error = e
            return
        self.committed += len(b.rows)
        self.commits += 1
        # Segments the journal has moved past are now wholly in the store.
        if b.segments:
            done = b.segments[:-1]
            if self._last_segment is not None and self._last_segment != b.segments[0]:
                done.insert(0, self._last_segment)
            for seg in done:
                self._remove(seg)
            self._last_segment = b.segments[-1]
        with self._cond:
            self._backlog -= b.nbytes
            drained = self._congested and self._backlog <= INDEX_BACKLOG_BYTES // 2
            if drained:
                self._congested = False
        if drained and self.on_drained is not None:
            self.on_drained()

    def _remove(self, seg: Path) -> None:
        if seg == self.journal.segment:
            return
        try:
            self.journal.remove(seg)
        except OSError as e:
            log.warning("ledger indexer: cannot delete journal segment %s: %s", seg, e)
