"""Appending to a ledger stream: seal drafts, commit them with the stream state, sign
checkpoints every N entries / T seconds / at close.

``LedgerWriter`` is synchronous and confined to one thread. A gateway owns its stream and
trusts its in-memory state; the CLI's stream is shared by processes, so it re-reads the
state under the write lock (``shared=True``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ledgergate.core.ledger.chain import Chain, SealedEntry, StreamState
from ledgergate.core.ledger.checkpoint import Checkpoint, Signer
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.keys import PayloadCipher
from ledgergate.store.sqlite import SqliteStore

__all__ = ["LedgerUnavailable", "LedgerWriter"]


class LedgerUnavailable(RuntimeError):
    pass


class LedgerWriter:
    def __init__(self, store: SqliteStore, stream: str, signer: Signer, *,
                 checkpoint_every_entries: int, checkpoint_every_seconds: float,
                 cipher: PayloadCipher | None, shared: bool) -> None:
        self.store = store
        self.stream = stream
        self.signer = signer
        self.every_n = checkpoint_every_entries
        self.every_s = checkpoint_every_seconds
        self.cipher = cipher
        self.shared = shared
        self.state = self._load()
        cps = store.checkpoints(stream)
        self._cp_size = cps[-1][0] if cps else 0
        self._cp_time = time.monotonic()

    @classmethod
    def open(cls, store: SqliteStore, stream: str, signer: Signer, *,
             checkpoint_every_entries: int = 1000, checkpoint_every_seconds: float = 10.0,
             fsync: bool = False, cipher: PayloadCipher | None = None,
             shared: bool = False) -> LedgerWriter:
        del fsync  # the store was opened with its synchronous mode
        return cls(store, stream, signer, checkpoint_every_entries=checkpoint_every_entries,
                   checkpoint_every_seconds=checkpoint_every_seconds, cipher=cipher, shared=shared)

    def _load(self) -> StreamState:
        rec = self.store.stream_state(self.stream)
        return StreamState.from_record(self.stream, rec) if rec else StreamState.genesis(self.stream)

    def append(self, drafts: Sequence[Draft], now_ns: int) -> list[SealedEntry]:
        if not drafts:
            return []
        st = self.store
        try:
            with st.tx():
                if self.shared:
                    self.state = self._load()
                saved = self.state.copy()
                chain = Chain(self.state)
                rows = []
                payloads = []
                sealed = []
                for d in drafts:
                    e = chain.seal(d)
                    sealed.append(e)
                    f = d.fields
                    ident = f.get("identity")
                    rows.append((e.stream, e.seq, e.ts_ns, e.kind, f.get("session_id"),
                                 ident.get("subject") if isinstance(ident, dict) else None,
                                 f.get("connection"), e.canonical, e.entry_hash))
                    for digest, raw in d.payloads:
                        blob = self.cipher.seal(digest, raw) if self.cipher else raw
                        payloads.append((digest, blob, now_ns))
                st.insert_entries(rows)
                if payloads:
                    st.put_payloads(payloads)
                st.put_stream_state(self.stream, self.state.to_record(), self.state.size, now_ns)
                if self.shared or self.state.size - self._cp_size >= self.every_n or \
                        time.monotonic() - self._cp_time >= self.every_s:
                    self._checkpoint(now_ns)
        except Exception as e:
            self.state = saved if "saved" in locals() else self._load()
            raise LedgerUnavailable(f"ledger append failed: {e}") from e
        return sealed

    def _checkpoint(self, now_ns: int) -> str | None:
        if self.state.size == 0 or self.state.size == self._cp_size:
            return None
        note = self.signer.sign(Checkpoint(self.stream, self.state.size, self.state.tree.root(), now_ns))
        self.store.put_checkpoint(self.stream, self.state.size, now_ns, note)
        self._cp_size = self.state.size
        self._cp_time = time.monotonic()
        return note

    def checkpoint(self, now_ns: int) -> str | None:
        with self.store.tx():
            return self._checkpoint(now_ns)

    def close(self, now_ns: int) -> None:
        self.checkpoint(now_ns)
