"""Appending to a ledger stream: seal drafts, commit them, sign checkpoints.

``LedgerWriter`` is synchronous and confined to one thread (the gateway's writer thread,
or the CLI's main thread). Each ``append`` commits the sealed entries, their encrypted
payloads and the new stream state in ONE transaction, so the stored stream state always
matches the stored entries (the auditor relies on it to catch a deleted tail). A signed
checkpoint is added to that same transaction every N entries or T seconds.

Three ownership modes:
- journaled (a gateway's own stream, ``journal_root`` given): ``append`` is durable once
  its records are written to the stream's journal (one write per group commit, see
  ``store.journal``; typed drafts are sealed, encoded and given their store rows in
  native runs, ``Chain.seal_run``); an ``Indexer`` thread commits them to the store a
  few tens of milliseconds later, many appends per transaction. The journal is locked to
  this writer; on open, whatever a crashed predecessor journaled and the store lacks is
  replayed first.
- ``shared=False`` without a journal: the in-memory state is the truth; drafts are sealed
  before the write lock is taken, so the lock is held only for the inserts.
- ``shared=True`` (the CLI's stream, appended to by several processes): the state is
  re-read under the write lock and the drafts sealed inside the transaction.

Any failure rolls the in-memory state back and raises ``LedgerUnavailable``; the caller
(the gateway) then fails closed. Never logs entry contents or payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import overload

from ledgergate.core.ledger import journal as jr
from ledgergate.core.ledger.chain import Chain, ChainError, SealedEntry, StreamState, entry_link
from ledgergate.core.ledger.checkpoint import Checkpoint, Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.journal import Indexer, JournalDamaged, index_text, replay, subject_of
from ledgergate.services.keys import PayloadCipher
from ledgergate.store.base import CheckpointRow, EntryRow, Store, StoreError
from ledgergate.store.journal import Journal, JournalBusy, stream_dirs

__all__ = [
    "LedgerUnavailable",
    "LedgerWriter",
    "checkpoint_stream",
    "load_stream_state",
    "recover_journals",
]

log = logging.getLogger("ledgergate.ledger")

# A gateway's own stream rewrites its state row (head hash + Merkle compact range) with a
# checkpoint, at close, or after this many entries, not on every commit: the row is one
# more page per commit, and on open the writer rolls the state forward over the entries
# committed after it.
STATE_EVERY = 256


class LedgerUnavailable(RuntimeError):
    """The ledger could not be written; nothing of the failed append was kept."""


def load_stream_state(store: Store, stream: str) -> StreamState:
    """The stream's committed state, or its genesis if nothing was ever appended: the
    stored state row rolled forward over the entries committed after it was written."""
    rec = store.get_stream_state(stream)
    st = StreamState.from_record(stream, rec) if rec else StreamState.genesis(stream)
    for seq, data, h in store.iter_entries(stream, st.size):
        try:
            _, doc_seq, prev = entry_link(data)
        except ChainError as e:
            raise LedgerUnavailable(f"{stream} entry {seq} is damaged: {e}") from None
        if seq != st.size or doc_seq != seq or prev != st.head_hash:
            raise LedgerUnavailable(
                f"{stream} does not chain at entry {seq}: run `ledgergate audit verify`"
            )
        st.tree.append(h)
        st.size += 1
        st.head_hash = h
    return st


def checkpoint_stream(store: Store, stream: str, signer: Signer, now_ns: int) -> str | None:
    """Sign and store a checkpoint of the stream's committed head if none covers it yet
    (any process holding the ledger key may do this); return the note, or None."""
    with store.transaction():
        state = load_stream_state(store, stream)
        last = store.latest_checkpoint(stream)
        if state.size == 0 or (last is not None and last.size >= state.size):
            return None
        return _sign(store, signer, state, now_ns)


def recover_journals(store: Store, root: Path) -> int:
    """Apply to ``store`` every journal under ``root`` that no running gateway holds (one
    killed before its indexer caught up); return the number of entries added. A running
    gateway's journal is its own to index."""
    from urllib.parse import unquote

    added = 0
    for d in stream_dirs(root):
        try:
            journal = Journal.acquire(root, unquote(d.name), wait_s=0)
        except JournalBusy:
            continue
        try:
            if journal.segments():
                added += replay(store, journal, load_stream_state(store, journal.stream))
        except (JournalDamaged, StoreError) as e:
            raise LedgerUnavailable(str(e)) from None
        finally:
            journal.release()
    return added


def _checkpoint_row(signer: Signer, state: StreamState, now_ns: int) -> CheckpointRow:
    root = state.tree.root()
    note = signer.sign(Checkpoint(state.stream, state.size, root, now_ns))
    return CheckpointRow(state.stream, state.size, now_ns, root, note)


def _sign(store: Store, signer: Signer, state: StreamState, now_ns: int) -> str:
    row = _checkpoint_row(signer, state, now_ns)
    store.put_checkpoint(row)
    return row.note


# The native sealer builds store rows by position (core/ledger/_sealer.c).
if EntryRow._fields != (
    "stream",
    "seq",
    "ts_ns",
    "kind",
    "session_id",
    "identity",
    "connection",
    "canonical",
    "entry_hash",
):
    raise ImportError("store.base.EntryRow's columns no longer match core/ledger/_sealer.c")
# Drafts sealed per native call at most: the call holds the interpreter lock throughout,
# and in the threaded (fsync) sink mode the event loop waits for it.
NATIVE_RUN = 256


class _SealedRows(Sequence[SealedEntry]):
    """The entries of a journaled append, built from their rows when read (the gateway's
    sink never reads them)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[EntryRow]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> SealedEntry: ...
    @overload
    def __getitem__(self, i: slice) -> list[SealedEntry]: ...
    def __getitem__(self, i: int | slice) -> SealedEntry | list[SealedEntry]:
        if isinstance(i, slice):
            return [_sealed(r) for r in self._rows[i]]
        return _sealed(self._rows[i])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares by value, like the list it stands for

    def __repr__(self) -> str:
        return repr(list(self))


def _sealed(r: EntryRow) -> SealedEntry:
    return SealedEntry(r.stream, r.seq, r.ts_ns, r.kind, r.canonical, r.entry_hash)


class LedgerWriter:
    """Appends to one stream. Use ``LedgerWriter.open``."""

    def __init__(
        self,
        store: Store,
        stream: str,
        signer: Signer,
        *,
        checkpoint_every_entries: int,
        checkpoint_every_seconds: float,
        cipher: PayloadCipher | None,
        shared: bool,
        owns_store: bool,
        journal: Journal | None = None,
    ) -> None:
        if checkpoint_every_entries < 1 or checkpoint_every_seconds <= 0:
            raise ValueError("checkpoint intervals must be positive")
        self.store = store
        self.stream = stream
        self.signer = signer
        self.every_entries = checkpoint_every_entries
        self.every_ns = int(checkpoint_every_seconds * 1e9)
        self.cipher = cipher
        self.shared = shared
        self.owns_store = owns_store
        self.closed = False
        self._state = load_stream_state(store, stream)
        self.journal = journal
        self.indexer: Indexer | None = None
        if journal is not None:
            replayed = replay(store, journal, self._state)
            if replayed:
                log.warning("ledger: %d entries of %s recovered from its journal", replayed, stream)
        self._state_size = self._state.size
        self._cp_size, self._cp_ns = self._last_checkpoint()
        if journal is not None:
            journal.start(self._state.size)
            self.indexer = Indexer(store, journal)

    @classmethod
    def open(
        cls,
        store: Store,
        stream: str,
        signer: Signer,
        *,
        checkpoint_every_entries: int = 1000,
        checkpoint_every_seconds: float = 10.0,
        fsync: bool = False,
        cipher: PayloadCipher | None = None,
        shared: bool = False,
        owns_store: bool = True,
        journal_root: Path | None = None,
    ) -> LedgerWriter:
        """Resume ``stream`` from its stored state (or start it). ``fsync``: every commit
        reaches the disk before ``append`` returns. ``owns_store``: ``close`` closes the
        store too. ``journal_root``: append through the stream's journal there (a
        gateway's stream; not with ``shared``)."""
        if checkpoint_every_entries < 1 or checkpoint_every_seconds <= 0:
            raise ValueError("checkpoint intervals must be positive")
        if journal_root is not None and shared:
            raise ValueError("a shared stream cannot be journaled")
        journal: Journal | None = None
        try:
            store.set_durable(fsync)
            if journal_root is not None:
                journal = Journal.acquire(journal_root, stream, durable=fsync)
            return cls(
                store,
                stream,
                signer,
                checkpoint_every_entries=checkpoint_every_entries,
                checkpoint_every_seconds=checkpoint_every_seconds,
                cipher=cipher,
                shared=shared,
                owns_store=owns_store,
                journal=journal,
            )
        except Exception as e:
            if journal is not None:
                journal.release()
            raise LedgerUnavailable(f"the ledger stream {stream} cannot be opened: {e}") from e

    def _last_checkpoint(self) -> tuple[int, int | None]:
        cp = self.store.latest_checkpoint(self.stream)
        return (cp.size, cp.ts_ns) if cp else (0, None)

    @property
    def size(self) -> int:
        return self._state.size

    @property
    def head_hash(self) -> bytes:
        return self._state.head_hash

    @property
    def checkpointed_size(self) -> int:
        return self._cp_size

    # -- appending ------------------------------------------------------------------------
    def _seal(
        self,
        chain: Chain,
        drafts: Sequence[Draft],
        now_ns: int,
        seen: set[str] | None = None,
    ) -> tuple[list[SealedEntry], list[EntryRow], list[tuple[str, bytes, int]]]:
        """Seal ``drafts`` the checked way: entries, their rows, and the payloads whose
        digest is not in ``seen`` yet (each stored once per append)."""
        sealed: list[SealedEntry] = []
        rows: list[EntryRow] = []
        payloads: list[tuple[str, bytes, int]] = []
        seen = set() if seen is None else seen
        seal = chain.seal
        cipher = self.cipher
        for d in drafts:
            e = seal(d)
            sealed.append(e)
            f = d.fields
            rows.append(
                EntryRow(
                    e.stream,
                    e.seq,
                    e.ts_ns,
                    e.kind,
                    index_text(f.get("session_id")),
                    subject_of(f.get("identity")),
                    index_text(f.get("connection")),
                    e.canonical,
                    e.entry_hash,
                )
            )
            for digest, raw in d.payloads:
                if digest in seen:
                    continue
                if cipher is None:
                    raise LedgerUnavailable("a payload was recorded but no payload key is set")
                seen.add(digest)
                payloads.append((digest, cipher.seal(digest, raw), now_ns))
        return sealed, rows, payloads

    def _due(self, size: int, now_ns: int) -> bool:
        if size - self._cp_size >= self.every_entries:
            return True
        return self._cp_ns is None or now_ns - self._cp_ns >= self.every_ns

    def append(
        self,
        drafts: Sequence[Draft],
        now_ns: int,
        *,
        also: Callable[[Store], None] | None = None,
    ) -> Sequence[SealedEntry]:
        """Seal ``drafts`` in order and commit them (with their payloads and the stream
        state, and a checkpoint when one is due) in one transaction. ``also`` runs inside
        that transaction on the writer's store, so an admin change and its ledger entry
        commit together or not at all."""
        if self.closed:
            raise LedgerUnavailable(f"the ledger writer of {self.stream} is closed")
        if not drafts:
            return []
        if self.journal is not None:
            if also is not None:
                raise ValueError("a journaled stream cannot join another store transaction")
            return self._append_journaled(drafts, now_ns)
        saved = self._state.copy()
        saved_cp = (self._cp_size, self._cp_ns)
        state_written = False
        store = self.store
        note: str | None = None
        try:
            if not self.shared:
                chain = Chain(self._state)
                sealed, rows, payloads = self._seal(chain, drafts, now_ns)
            with store.transaction():
                if self.shared:
                    self._state = load_stream_state(store, self.stream)
                    saved = self._state.copy()
                    self._cp_size, self._cp_ns = self._last_checkpoint()
                    chain = Chain(self._state)
                    sealed, rows, payloads = self._seal(chain, drafts, now_ns)
                if also is not None:
                    also(store)
                store.insert_entries(rows)
                if payloads:
                    store.put_payloads(payloads)
                state = self._state
                due = self._due(state.size, now_ns)
                if self.shared or due or state.size - self._state_size >= STATE_EVERY:
                    store.put_stream_state(self.stream, state.to_record(), now_ns)
                    state_written = True
                if due:
                    note = _sign(store, self.signer, state, now_ns)
        except BaseException as e:
            self._state = saved
            self._cp_size, self._cp_ns = saved_cp
            if isinstance(e, LedgerUnavailable) or not isinstance(e, Exception):
                raise
            raise LedgerUnavailable(f"ledger append to {self.stream} failed: {e}") from e
        if note is not None:
            self._cp_size, self._cp_ns = self._state.size, now_ns
        if state_written:
            self._state_size = self._state.size
        return sealed

    @property
    def congested(self) -> bool:
        """The store lags the journal by more than the indexer's backlog bound."""
        return self.indexer is not None and self.indexer.congested

    def index_backlog(self) -> int:
        """Bytes journaled and not yet committed to the store."""
        return self.indexer.backlog if self.indexer is not None else 0

    def on_drained(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` (from the indexer's thread) when the store has caught up after
        ``congested`` was reported."""
        if self.indexer is not None:
            self.indexer.on_drained = cb

    def _append_journaled(self, drafts: Sequence[Draft], now_ns: int) -> Sequence[SealedEntry]:
        journal, indexer = self.journal, self.indexer
        assert journal is not None and indexer is not None
        if indexer.error is not None:
            raise LedgerUnavailable(f"the ledger store cannot be written: {indexer.error}")
        saved = self._state.copy()
        try:
            parts, rows, payloads = self._seal_journal(Chain(self._state), drafts, now_ns)
            for digest, blob, created in payloads:
                parts.append(jr.encode_payload(digest, blob, created))
            state = self._state
            cp: CheckpointRow | None = None
            if self._due(state.size, now_ns):
                cp = _checkpoint_row(self.signer, state, now_ns)
                parts.append(jr.encode_checkpoint(cp.size, cp.ts_ns, cp.root, cp.note))
            parts.append(jr.COMMIT)
            buf = b"".join(parts)
            segment = journal.segment
            assert segment is not None
            journal.write(buf)
        except BaseException as e:
            self._state = saved
            if isinstance(e, LedgerUnavailable) or not isinstance(e, Exception):
                raise
            raise LedgerUnavailable(f"ledger append to {self.stream} failed: {e}") from e
        st_rec = None
        if cp is not None or state.size - self._state_size >= STATE_EVERY:
            st_rec = (state.to_record(), now_ns)
            self._state_size = state.size
        indexer.submit(segment, rows, payloads, len(buf), cp, st_rec)
        if cp is not None:
            self._cp_size, self._cp_ns = cp.size, now_ns
        if journal.full:
            self._rotate()
        return _SealedRows(rows)

    def _seal_journal(
        self, chain: Chain, drafts: Sequence[Draft], now_ns: int
    ) -> tuple[list[bytes], list[EntryRow], list[tuple[str, bytes, int]]]:
        """Seal ``drafts`` for the journal: their ``E`` records, rows and payloads. Runs of
        typed drafts without payloads (a session's commands and chunks) are sealed
        natively (``Chain.seal_run``); each other draft the checked way."""
        todo = drafts if type(drafts) is list else list(drafts)
        parts: list[bytes] = []
        rows: list[EntryRow] = []
        payloads: list[tuple[str, bytes, int]] = []
        seen: set[str] = set()
        enc = jr.encode_entry
        i, n = 0, len(todo)
        while i < n:
            d = todo[i]
            if d.typed and not d.payloads:  # a run may start here
                k, records, run = chain.seal_run(todo, i, EntryRow, min(n, i + NATIVE_RUN))
                if k:
                    parts.append(records)
                    rows += run
                    i += k
                    if i == n or k == NATIVE_RUN:
                        continue
            one, one_rows, one_payloads = self._seal(chain, todo[i : i + 1], now_ns, seen)
            parts.append(enc(one[0].entry_hash, one[0].canonical))
            rows += one_rows
            payloads += one_payloads
            i += 1
        return parts, rows, payloads

    def _rotate(self) -> None:
        assert self.journal is not None
        try:
            self.journal.start(self._state.size)
        except OSError as e:
            raise LedgerUnavailable(f"cannot start a new journal segment: {e}") from e

    def _checkpoint_journaled(self, now_ns: int) -> str | None:
        journal, indexer = self.journal, self.indexer
        assert journal is not None and indexer is not None
        state = self._state
        if state.size == 0 or state.size <= self._cp_size:
            return None
        if indexer.error is not None:
            raise LedgerUnavailable(f"the ledger store cannot be written: {indexer.error}")
        cp = _checkpoint_row(self.signer, state, now_ns)
        buf = jr.encode_checkpoint(cp.size, cp.ts_ns, cp.root, cp.note) + jr.COMMIT
        segment = journal.segment
        assert segment is not None
        try:
            journal.write(buf)
        except OSError as e:
            raise LedgerUnavailable(f"checkpoint of {self.stream} failed: {e}") from e
        indexer.submit(segment, [], [], len(buf), cp, (state.to_record(), now_ns))
        self._state_size = state.size
        self._cp_size, self._cp_ns = state.size, now_ns
        return cp.note

    # -- checkpoints and shutdown -----------------------------------------------------------
    def checkpoint(self, now_ns: int) -> str | None:
        """Sign and store the head if it moved since the last checkpoint."""
        if self.closed:
            raise LedgerUnavailable(f"the ledger writer of {self.stream} is closed")
        if self.journal is not None:
            return self._checkpoint_journaled(now_ns)
        try:
            if self.shared:
                note = checkpoint_stream(self.store, self.stream, self.signer, now_ns)
                self._state = load_stream_state(self.store, self.stream)
                self._cp_size, self._cp_ns = self._last_checkpoint()
                return note
            state = self._state
            if state.size == 0 or state.size <= self._cp_size:
                return None
            with self.store.transaction():
                self.store.put_stream_state(self.stream, state.to_record(), now_ns)
                note = _sign(self.store, self.signer, state, now_ns)
            self._state_size = state.size
        except LedgerUnavailable:
            raise
        except Exception as e:
            raise LedgerUnavailable(f"checkpoint of {self.stream} failed: {e}") from e
        self._cp_size, self._cp_ns = state.size, now_ns
        return note

    def close(self, now_ns: int) -> None:
        """Write the final checkpoint; close the store if the writer owns it."""
        if self.closed:
            return
        try:
            self.checkpoint(now_ns)
        finally:
            self.closed = True
            try:
                self._close_journal()
            finally:
                if self.owns_store:
                    self.store.close()

    def _close_journal(self) -> None:
        """Let the indexer commit everything, then delete the segments it covered (all of
        them, unless it failed: then they stay for the next start to replay)."""
        journal, indexer = self.journal, self.indexer
        if journal is None:
            return
        clean = False
        try:
            if indexer is not None:
                indexer.close()
                clean = indexer.error is None
                log.info(
                    "ledger indexer: %d entries in %d store commits",
                    indexer.committed,
                    indexer.commits,
                )
            if clean:
                for seg in journal.segments():
                    if seg != journal.segment:
                        journal.remove(seg)
        finally:
            journal.release(remove_current=clean)
        if indexer is not None and indexer.error is not None:
            raise LedgerUnavailable(f"the ledger store cannot be written: {indexer.error}")
