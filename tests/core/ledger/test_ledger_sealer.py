"""The native sealing of typed draft runs (core/ledger/_sealer.c) against ``Chain.seal``.

``Chain.seal_run`` must give exactly what sealing draft by draft gives: the same canonical
bytes and entry hashes, the same stream state (size, head, Merkle compact range), the
journal ``E`` records that ``journal.encode_entry`` writes, and the store rows that the
writer builds. It stops at the first draft that needs the checked path, leaving the state
at the drafts before it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.core.ledger import Chain, ChainError, Draft, SealedEntry, StreamState, _sealer
from ledgergate.core.ledger import journal as jr
from ledgergate.core.ledger.canonical import TYPED_ENCODER
from ledgergate.core.ledger.merkle import CompactRange
from ledgergate.services.journal import index_text, subject_of
from ledgergate.store.base import EntryRow

STREAM = "gw-sealer"


def reference(state: StreamState, drafts: list[Draft]) -> tuple[bytes, list[EntryRow]]:
    """Seal draft by draft the checked way: the journal records and the rows."""
    chain = Chain(state)
    records, rows = [], []
    for d in drafts:
        e = chain.seal(d)
        records.append(jr.encode_entry(e.entry_hash, e.canonical))
        rows.append(row_of(e, d))
    return b"".join(records), rows


def row_of(e: SealedEntry, d: Draft) -> EntryRow:
    f = d.fields
    return EntryRow(
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


def typed(i: int, **fields: Any) -> Draft:
    base: dict[str, Any] = {
        "session_id": f"s_{i:08x}",
        "connection": "prod-db",
        "identity": {"kind": "user", "subject": "alice@example.com", "groups": ["dba"]},
        "source": {"ip": "10.1.2.3", "port": 54321},
        "direction": "s2c",
        "chunk": {"seq": i, "size": 90, "sha256_in": "ab" * 32, "sha256_out": "ab" * 32},
        "outcome": "forwarded",
    }
    base.update(fields)
    return Draft(1_732_300_000_000_000_000 + i, "chunk", base, (), True)


def states(n: int) -> tuple[StreamState, StreamState]:
    """Two equal states of a stream that already holds ``n`` entries."""
    a, b = StreamState.genesis(STREAM), StreamState.genesis(STREAM)
    ca, cb = Chain(a), Chain(b)
    for i in range(n):
        ca.seal(typed(10_000 + i))
        cb.seal(typed(10_000 + i))
    return a, b


def same_state(a: StreamState, b: StreamState) -> None:
    assert (a.size, a.head_hash, a.tree.hashes) == (b.size, b.head_hash, b.tree.hashes)
    assert a.to_record() == b.to_record()


@pytest.mark.parametrize("before", [0, 1, 2, 3, 7, 8, 255])
def test_a_run_seals_as_seal_does(before: int) -> None:
    drafts = [typed(i) for i in range(37)]
    native, ref = states(before)
    n, records, rows = Chain(native).seal_run(drafts, 0, EntryRow)
    want_records, want_rows = reference(ref, drafts)
    assert n == 37
    assert records == want_records
    assert rows == want_rows
    assert all(type(r) is EntryRow for r in rows)
    same_state(native, ref)
    # the journal reads the records back as the entries
    decoded = jr.decode(jr.header(STREAM) + records + jr.COMMIT)
    assert [(r.entry_hash, r.canonical) for r in decoded.records] == [
        (r.entry_hash, r.canonical) for r in want_rows
    ]


class Text(str):
    """A str subclass (an enum's value, say): indexed as its plain text."""


def test_start_and_the_index_columns() -> None:
    drafts = [
        typed(0),
        typed(1, identity="svc-ci", connection=None),
        typed(2, identity={"kind": "service"}, session_id=7),
        Draft(5, "session.open", {"identity": {"subject": 3}}, (), True),
        typed(4, session_id=Text("s_sub"), identity={"subject": Text("bob")}),
    ]
    native, ref = states(4)
    reference(ref, drafts[:1])  # what the caller sealed before ``start``
    Chain(native).seal(drafts[0])
    n, records, rows = Chain(native).seal_run(drafts, 1, EntryRow)
    want_records, want_rows = reference(ref, drafts[1:])
    assert n == 4 and records == want_records and rows == want_rows
    assert [(r.session_id, r.identity, r.connection) for r in rows] == [
        ("s_00000001", "svc-ci", None),
        (None, None, "prod-db"),
        (None, None, None),
        ("s_sub", "bob", "prod-db"),
    ]
    assert type(rows[3].session_id) is str and type(rows[3].identity) is str
    same_state(native, ref)


STOPPERS = {
    "untyped": Draft(1, "chunk", {"a": 1}),
    "payload": Draft(1, "command", {"payload": "ab" * 32}, (("ab" * 32, b"raw"),), True),
    "reserved key": Draft(1, "chunk", {"seq": 3}, (), True),
    "entry_hash key": Draft(1, "chunk", {"entry_hash": "x"}, (), True),
    "negative ts": Draft(-1, "chunk", {}, (), True),
    "ts beyond 64 bits": Draft(2**64, "chunk", {}, (), True),
    "float ts": Draft(1.5, "chunk", {}, (), True),  # type: ignore[arg-type]
    "empty kind": Draft(1, "", {}, (), True),
    "kind not str": Draft(1, 7, {}, (), True),  # type: ignore[arg-type]
    "fields not dict": Draft(1, "chunk", [("a", 1)], (), True),  # type: ignore[arg-type]
    "big int": Draft(1, "chunk", {"n": 2**70}, (), True),
    "lone surrogate": Draft(1, "chunk", {"t": "\ud800"}, (), True),
}


@pytest.mark.parametrize("name", sorted(STOPPERS))
def test_it_stops_where_the_checked_path_must_decide(name: str) -> None:
    bad = STOPPERS[name]
    drafts = [typed(0), typed(1), bad, typed(3)]
    native, ref = states(5)
    n, records, rows = Chain(native).seal_run(drafts, 0, EntryRow)
    want_records, want_rows = reference(ref, drafts[:2])
    assert n == 2 and records == want_records and rows == want_rows
    same_state(native, ref)
    # at the stopper itself: nothing sealed, nothing moved
    n, records, rows = Chain(native).seal_run(drafts, 2, EntryRow)
    assert (n, records, rows) == (0, b"", [])
    same_state(native, ref)


def test_the_checked_path_then_seals_or_refuses_the_stopper() -> None:
    # what the writer does next: the big int is sealed by the json encoder...
    state = StreamState.genesis(STREAM)
    e = Chain(state).seal(STOPPERS["big int"])
    assert b'"n":1180591620717411303424' in e.canonical
    # ...and a reserved key or a lone surrogate is a ChainError
    for name in ("reserved key", "lone surrogate", "negative ts", "empty kind"):
        with pytest.raises(ChainError):
            Chain(StreamState.genesis(STREAM)).seal(STOPPERS[name])


def test_bad_arguments_are_refused() -> None:
    dumps, option = TYPED_ENCODER
    tree: list[bytes] = []
    good = (STREAM, 0, bytes(32), tree, [typed(0)], 0, 1, dumps, option, EntryRow)
    assert _sealer.seal_run(*good)[0] == 1
    for i, bad in [
        (0, b"stream"),
        (1, "0"),
        (2, bytes(31)),
        (3, ()),
        (4, (typed(0),)),
        (5, 1.0),
        (6, None),
        (9, dict),
    ]:
        args = list(good)
        args[i] = bad
        with pytest.raises(TypeError):
            _sealer.seal_run(*args)
    with pytest.raises(ValueError, match="start"):
        _sealer.seal_run(STREAM, 0, bytes(32), [], [typed(0)], 2, 2, dumps, option, EntryRow)
    with pytest.raises(ValueError, match="stop"):
        _sealer.seal_run(STREAM, 0, bytes(32), [], [typed(0)], 1, 0, dumps, option, EntryRow)
    with pytest.raises(TypeError):
        _sealer.seal_run(STREAM, 0)  # type: ignore[call-arg]


def test_a_range_that_does_not_match_its_size_is_an_error() -> None:
    dumps, option = TYPED_ENCODER
    # size 1 needs one subtree root to merge the next leaf with
    with pytest.raises(ValueError, match="compact range"):
        _sealer.seal_run(STREAM, 1, bytes(32), [], [typed(0)], 0, 1, dumps, option, EntryRow)
    with pytest.raises(ValueError, match="32 bytes"):
        _sealer.seal_run(STREAM, 1, bytes(32), [b"x"], [typed(0)], 0, 1, dumps, option, EntryRow)
    tree = CompactRange()
    with pytest.raises(ValueError):
        tree.adopt([], 1)  # no root was merged for it


# integers beyond 64 bits stop a run (orjson refuses them): the checked path seals those
leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
field_dicts = st.dictionaries(
    st.text(max_size=8).filter(
        lambda k: k not in {"stream", "seq", "ts_ns", "kind", "prev_hash", "entry_hash"}
    ),
    values,
    max_size=6,
)
drafts_st = st.lists(
    st.builds(
        lambda ts, kind, fields: Draft(ts, kind, fields, (), True),
        st.integers(0, 2**63 - 1),
        st.text(min_size=1, max_size=10),
        field_dicts,
    ),
    max_size=12,
)


@settings(max_examples=150)
@given(drafts_st, st.integers(0, 40))
def test_any_typed_run_matches_seal(drafts: list[Draft], before: int) -> None:
    native, ref = states(before)
    chain = Chain(native)
    got_records, got_rows, i = [], [], 0
    while i < len(drafts):  # what the writer does: native runs, the rest checked
        n, records, rows = chain.seal_run(drafts, i, EntryRow)
        got_records.append(records)
        got_rows += rows
        i += n
        if i < len(drafts):
            e = chain.seal(drafts[i])
            got_records.append(jr.encode_entry(e.entry_hash, e.canonical))
            got_rows.append(row_of(e, drafts[i]))
            i += 1
    want_records, want_rows = reference(ref, drafts)
    assert b"".join(got_records) == want_records
    assert got_rows == want_rows
    same_state(native, ref)


def test_stop_bounds_a_run() -> None:
    drafts = [typed(i) for i in range(10)]
    native, ref = states(3)
    n, records, rows = Chain(native).seal_run(drafts, 2, EntryRow, 6)
    want_records, want_rows = reference(ref, drafts[2:6])
    assert n == 4 and records == want_records and rows == want_rows
    assert [r.seq for r in rows] == [3, 4, 5, 6]
    same_state(native, ref)


class OddDraft:
    """Duck-typed drafts whose attribute reads run Python code."""

    typed = True
    payloads = ()
    ts_ns = 1
    kind = "chunk"

    def __init__(self, on_fields: Any) -> None:
        self.on_fields = on_fields

    @property
    def fields(self) -> dict[str, Any]:
        return self.on_fields()  # type: ignore[no-any-return]


def test_a_list_changed_while_it_is_read_is_not_read_past_its_end() -> None:
    drafts: list[Any] = []

    def clear() -> dict[str, Any]:
        drafts.clear()
        return {"a": 1}

    drafts += [typed(0), OddDraft(clear), typed(2), typed(3)]
    native, _ = states(0)
    n, _records, rows = Chain(native).seal_run(drafts, 0, EntryRow)
    assert n == 2 and len(rows) == 2  # the draft being read was kept alive; then the end


def test_an_error_in_the_middle_of_a_run_leaves_the_state_unchanged() -> None:
    def boom() -> dict[str, Any]:
        raise KeyError("fields")

    drafts: list[Any] = [typed(0), typed(1), OddDraft(boom)]
    native, ref = states(7)
    with pytest.raises(KeyError):  # raised as it was, not a SystemError
        Chain(native).seal_run(drafts, 0, EntryRow)
    same_state(native, ref)


def test_only_an_encoder_refusal_stops_a_run() -> None:
    dumps, option = TYPED_ENCODER

    def refuses(doc: Any, option: int) -> bytes:
        if doc.get("x") == 1:
            raise TypeError("refused")
        return dumps(doc, option=option)

    def fails(doc: Any, option: int) -> bytes:
        raise MemoryError

    drafts = [typed(0), typed(1, x=1), typed(2)]
    n, _, _, rows = _sealer.seal_run(
        STREAM, 0, bytes(32), [], drafts, 0, 3, refuses, option, EntryRow
    )
    assert n == 1 and len(rows) == 1
    with pytest.raises(MemoryError):
        _sealer.seal_run(STREAM, 0, bytes(32), [], drafts, 0, 3, fails, option, EntryRow)
