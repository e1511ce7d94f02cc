"""The hash chain: sealing drafts, the entry document, the persisted stream state."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger import (
    GENESIS_HASH,
    GENESIS_PREV,
    RESERVED,
    Chain,
    ChainError,
    CompactRange,
    Draft,
    StreamState,
    canonical_json,
    hash_entry_document,
    leaf_hash,
    root,
)
from ledgergate.core.ledger.chain import entry_link


def seal_all(stream: str, drafts: list[Draft]) -> tuple[Chain, list[Any]]:
    chain = Chain(StreamState.genesis(stream))
    return chain, [chain.seal(d) for d in drafts]


def test_golden_stream(vector: Callable[[str], Any]) -> None:
    g = vector("golden_stream.json")
    drafts = [Draft(d["ts_ns"], d["kind"], d["fields"]) for d in g["drafts"]]
    chain, entries = seal_all(g["stream"], drafts)
    for e, want in zip(entries, g["entries"], strict=True):
        assert e.canonical.decode("utf-8") == want["canonical"]
        assert e.entry_hash.hex() == want["entry_hash"]
    assert chain.state.tree.root().hex() == g["root"]
    assert chain.state.to_record().hex() == g["state_record"]
    # the first entry's hash, by hand: SHA-256 over 0x00 and the canonical bytes
    first = g["entries"][0]["canonical"].encode("utf-8")
    assert hashlib.sha256(b"\x00" + first).hexdigest() == g["entries"][0]["entry_hash"]


def test_seal_links_entries_and_builds_the_tree(chunk: Callable[[int], Draft]) -> None:
    drafts = [chunk(i) for i in range(5)]
    chain, entries = seal_all("s", drafts)
    prev = GENESIS_PREV
    for i, e in enumerate(entries):
        doc = e.document()
        assert (e.stream, e.seq, e.ts_ns, e.kind) == ("s", i, drafts[i].ts_ns, "chunk")
        assert doc["prev_hash"] == prev and e.prev_hash.hex() == prev
        assert doc == {
            **drafts[i].fields,
            "stream": "s",
            "seq": i,
            "ts_ns": e.ts_ns,
            "kind": "chunk",
            "prev_hash": prev,
        }
        assert e.canonical == canonical_json(doc)
        assert e.entry_hash == leaf_hash(e.canonical)
        assert e.fields == drafts[i].fields
        assert hash_entry_document(doc) == (e.canonical, e.entry_hash)
        prev = e.entry_hash.hex()
    st_ = chain.state
    assert st_.size == 5 and st_.head_hash == entries[-1].entry_hash
    assert st_.tree.root() == root([e.entry_hash for e in entries])


def test_genesis_constants() -> None:
    assert GENESIS_PREV == "00" * 32 and bytes(32) == GENESIS_HASH
    s = StreamState.genesis("x")
    assert (s.size, s.head_hash, s.tree.size) == (0, GENESIS_HASH, 0)


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_reserved_field_names_are_refused_and_leave_the_state_alone(
    name: str, chunk: Callable[[int], Draft]
) -> None:
    chain, _ = seal_all("s", [chunk(0)])
    before = chain.state.copy()
    with pytest.raises(ChainError, match=name):
        chain.seal(Draft(1, "chunk", {name: 1}))
    assert chain.state == before


@pytest.mark.parametrize(
    "draft",
    [
        Draft(1, "chunk", {"size": 1.5}),
        Draft(1, "chunk", {"raw": b"bytes"}),
        Draft(1, "chunk", {"m": {2: "non-str key"}}),
        Draft(1.5, "chunk", {}),  # type: ignore[arg-type]
        Draft(-1, "chunk", {}),
        Draft(True, "chunk", {}),
        Draft(1, "", {}),
        Draft(1, None, {}),  # type: ignore[arg-type]
    ],
)
def test_unencodable_drafts_are_refused_and_leave_the_state_alone(
    draft: Draft, chunk: Callable[[int], Draft]
) -> None:
    chain, _ = seal_all("s", [chunk(0)])
    before = chain.state.copy()
    with pytest.raises(ChainError):
        chain.seal(draft)
    assert chain.state == before
    assert chain.seal(chunk(1)).seq == 1  # the stream carries on


def test_state_record_round_trip_continues_the_same_stream(chunk: Callable[[int], Draft]) -> None:
    drafts = [chunk(i) for i in range(11)]
    _, straight = seal_all("s", drafts)
    chain, _ = seal_all("s", drafts[:6])
    record = chain.state.to_record()
    assert isinstance(record, bytes)
    restored = StreamState.from_record("s", record)
    assert restored == chain.state
    resumed = Chain(restored)
    later = [resumed.seal(d) for d in drafts[6:]]
    assert [e.canonical for e in later] == [e.canonical for e in straight[6:]]
    assert resumed.state.tree.root() == root([e.entry_hash for e in straight])


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x00" * 31,
        bytes(32) + b"\x00" * 7,
        b"\x01" * 32 + CompactRange().to_bytes(),  # empty tree, non-genesis head
        bytes(32) + (1).to_bytes(8, "big") + b"\x02" * 32,  # entries, genesis head
        b"\x01" * 32 + (3).to_bytes(8, "big") + b"\x02" * 32,  # 3 needs two subtrees
    ],
)
def test_corrupt_state_records_are_refused(record: bytes) -> None:
    with pytest.raises(ChainError):
        StreamState.from_record("s", record)


def test_chain_refuses_an_inconsistent_state() -> None:
    with pytest.raises(ChainError):
        Chain(StreamState("s", 3, b"\x01" * 32, CompactRange()))


def test_hash_entry_document_refuses_a_stored_entry_hash() -> None:
    with pytest.raises(ChainError):
        hash_entry_document({"stream": "s", "entry_hash": "00"})


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff", "UTF-8 JSON"),
        (b"[1]", "JSON object"),
        (b'{"stream":"s","seq":"0","prev_hash":"00"}', "lacks"),
        (b'{"stream":"s","seq":true,"prev_hash":"' + b"0" * 64 + b'"}', "lacks"),
        (b'{"stream":"s","seq":0,"prev_hash":"zz"}', "not hex"),
        (b'{"stream":"s","seq":0,"prev_hash":"00"}', "32 bytes"),
    ],
)
def test_entry_link_explains_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(ChainError, match=why):
        entry_link(data)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "note", "n"]),
            st.integers() | st.text(max_size=10),
            max_size=4,
        ),
        max_size=12,
    )
)
def test_any_sequence_of_drafts_chains(fields: list[dict[str, Any]]) -> None:
    chain, entries = seal_all("p", [Draft(i, "k", f) for i, f in enumerate(fields)])
    prev = GENESIS_HASH
    for i, e in enumerate(entries):
        assert entry_link(e.canonical) == ("p", i, prev)
        assert json.loads(e.canonical)["ts_ns"] == i
        prev = e.entry_hash
    assert chain.state.head_hash == prev
