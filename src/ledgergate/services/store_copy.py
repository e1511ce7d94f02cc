"""Moving a whole store to another engine: ``ledgergate store copy --from … --to …``.

Owns the order and the batching of a copy (ledger streams entry by entry, then their
checkpoints and states, payloads, tokens and access keys, identities, grants, policy
rules, reviews and their outbox) into an empty destination. Entries travel as sealed
bytes; their search columns are derived again from each document (never copied), and an
entry whose bytes do not hold together stops the copy, so a damaged source is never
laundered into a clean-looking destination. Verifying the result is the caller's next
step (``services.audit.verify_store``). Must not change the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ledgergate.core.ledger.chain import ChainError
from ledgergate.services.journal import entry_row_of
from ledgergate.store import EntryRow, Store

__all__ = ["CopyError", "CopyReport", "copy_store"]

# Entries (and payloads) per destination transaction: big enough to be quick, small
# enough that a copy of a large ledger never holds much in memory.
COPY_BATCH = 5000

Progress = Callable[[str, int], None]


class CopyError(RuntimeError):
    """The copy cannot be made (a destination that is not empty, a damaged entry)."""


@dataclass(slots=True)
class CopyReport:
    counts: dict[str, int] = field(default_factory=dict)
    streams: dict[str, int] = field(default_factory=dict)  # stream -> entries copied

    def add(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def _empty(dst: Store) -> bool:
    return not (
        dst.streams()
        or dst.list_tokens()
        or dst.list_identities()
        or dst.list_grants()
        or dst.list_policy_rules()
        or dst.list_reviews(limit=1)
    )


def copy_store(src: Store, dst: Store, progress: Progress | None = None) -> CopyReport:
    """Copy everything in ``src`` into the empty store ``dst``."""
    if not _empty(dst):
        raise CopyError(f"the destination store {dst.url} is not empty")
    tick = progress or (lambda what, n: None)
    rep = CopyReport()
    for stream in src.streams():
        rep.streams[stream] = _copy_stream(src, dst, stream, rep, tick)
    batch: list[tuple[str, bytes, int]] = []
    for p in src.iter_payloads():
        batch.append(p)
        if len(batch) >= COPY_BATCH // 10:
            _put_payloads(dst, batch, rep, tick)
            batch = []
    _put_payloads(dst, batch, rep, tick)
    with dst.transaction():
        tokens = src.list_tokens()
        for t in tokens:
            dst.insert_token(t)
        keys = src.list_access_keys()
        for key_id, token_id, sealed in keys:
            dst.insert_access_key(key_id, token_id, sealed)
        idents = src.list_identities()
        for i in idents:
            dst.put_identity(i)
        grants = src.list_grants()
        for g in grants:
            dst.insert_grant(g)
        rules = src.list_policy_rules()
        for r in rules:
            dst.put_policy_rule(r)
        reviews = src.list_reviews()
        for rv in reviews:
            dst.put_review(rv)
        outbox = src.list_outbox()
        for o in outbox:
            dst.put_outbox_row(o)
    for what, n in (
        ("tokens", len(tokens)),
        ("access keys", len(keys)),
        ("identities", len(idents)),
        ("grants", len(grants)),
        ("policy rules", len(rules)),
        ("reviews", len(reviews)),
        ("notifications", len(outbox)),
    ):
        rep.add(what, n)
        tick(what, n)
    return rep


def _copy_stream(src: Store, dst: Store, stream: str, rep: CopyReport, tick: Progress) -> int:
    n = 0
    rows: list[EntryRow] = []

    def flush() -> None:
        if rows:
            with dst.transaction():
                dst.insert_entries(rows)
            rep.add("entries", len(rows))
            tick("entries", len(rows))
            rows.clear()

    for seq, canonical, entry_hash in src.iter_entries(stream):
        try:
            row, _ = entry_row_of(stream, canonical, entry_hash)
        except (ChainError, ValueError) as e:
            raise CopyError(
                f"{stream} entry {seq} is damaged ({e}); run `ledgergate audit verify` "
                "on the source"
            ) from None
        if row.seq != seq:
            raise CopyError(f"{stream} entry {seq} says it is entry {row.seq}")
        rows.append(row)
        n += 1
        if len(rows) >= COPY_BATCH:
            flush()
    flush()
    with dst.transaction():
        for cp in src.checkpoints(stream):
            dst.put_checkpoint(cp)
        state = src.get_stream_state(stream)
        if state is not None:
            dst.put_stream_state(stream, state, 0)
    rep.add("checkpoints", len(src.checkpoints(stream)))
    return n


def _put_payloads(
    dst: Store, batch: list[tuple[str, bytes, int]], rep: CopyReport, tick: Progress
) -> None:
    if not batch:
        return
    with dst.transaction():
        dst.put_payloads(batch)
    rep.add("payloads", len(batch))
    tick("payloads", len(batch))
