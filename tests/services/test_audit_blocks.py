"""Audit over chunk entries indexed in blocks: the ledger verifies, exports and proves
through blocks, and an edit inside a block, a dropped block or blocks swapped is named
by the verifier (the store's SQL edited directly, as an attacker with the file would)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ledgergate.core.ledger.merkle import leaf_hash
from ledgergate.services import audit
from ledgergate.store import blocks
from tests.services.synth import T0, Ledger, chunk_drafts
from tests.services.test_audit import _first, _report

N = 50  # chunk entries in the gateway stream, appended 10 at a time: five blocks


@pytest.fixture
def led(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    monkeypatch.setenv("LEDGERGATE_CHUNK_BLOCKS", "1")
    led = Ledger(tmp_path)
    led.write(chunk_drafts(N), batch=10, checkpoint_every_entries=10)
    return led


def _blocks(led: Ledger) -> list[tuple[int, int, str, bytes, bytes]]:
    db = led.db()
    rows = db.execute(
        "SELECT first_seq, last_seq, idx, body, hashes FROM entry_blocks WHERE stream=? "
        "ORDER BY last_seq",
        (led.stream,),
    ).fetchall()
    db.close()
    return [(int(a), int(b), str(i), bytes(d), bytes(h)) for a, b, i, d, h in rows]


def _rewrite(led: Ledger, last_seq: int, idx: str, body: bytes, hashes: bytes) -> None:
    db = led.db()
    db.execute(
        "UPDATE entry_blocks SET idx=?, body=?, hashes=? WHERE stream=? AND last_seq=?",
        (idx, body, hashes, led.stream, last_seq),
    )
    db.commit()
    db.close()


def test_chunks_are_indexed_in_blocks_and_verify(led: Ledger) -> None:
    got = _blocks(led)
    assert [(a, b) for a, b, *_ in got] == [(i, i + 9) for i in range(0, N, 10)]
    db = led.db()
    assert (
        db.execute("SELECT count(*) FROM entries WHERE stream=?", (led.stream,)).fetchone()[0] == 0
    )
    # Every entry is still there for people's own SQL, byte for byte.
    seen = db.execute(
        "SELECT seq, canonical, entry_hash FROM ledger_entries WHERE stream=? ORDER BY seq",
        (led.stream,),
    ).fetchall()
    db.close()
    st = led.store()
    try:
        assert [(s, bytes(c), bytes(h)) for s, c, h in seen] == list(st.iter_entries(led.stream))
        assert [r.seq for r in st.iter_entry_rows(led.stream)] == list(range(N))
        e = st.get_entry(led.stream, 23)
        assert e is not None and e.kind == "chunk" and leaf_hash(e.canonical) == e.entry_hash
        assert st.max_seq(led.stream) == N - 1
    finally:
        st.close()
    rep = _report(led)
    assert rep.ok, rep.first_problem()
    assert {s.stream: s.entries for s in rep.streams} == {led.stream: N}


def test_a_proof_reads_its_entry_out_of_a_block(led: Ledger) -> None:
    st = led.store()
    try:
        proof = audit.prove_inclusion(st, led.stream, 23, verifiers=[led.signer.verifier])
    finally:
        st.close()
    assert proof["seq"] == 23


def test_an_edit_inside_a_block_is_named(led: Ledger) -> None:
    _, last, idx, body, hashes = _blocks(led)[2]  # entries 20..29
    items = orjson.loads(idx)
    off = sum(n for *_, n in items[:3])  # entry 23
    doc = body[off : off + items[3][5]]
    edited = doc.replace(b'"rows":100', b'"rows":999')
    assert edited != doc and len(edited) == len(doc)
    _rewrite(led, last, idx, body[:off] + edited + body[off + len(doc) :], hashes)
    assert _first(_report(led)) == ("changed", 23)


def test_an_edit_with_its_hash_recomputed_is_named(led: Ledger) -> None:
    _, last, idx, body, hashes = _blocks(led)[2]
    items = orjson.loads(idx)
    off = sum(n for *_, n in items[:3])
    doc = body[off : off + items[3][5]]
    edited = doc.replace(b'"rows":100', b'"rows":1000')  # one byte longer
    items[3][5] = len(edited)
    h = hashes[: 3 * 32] + leaf_hash(edited) + hashes[4 * 32 :]
    _rewrite(
        led, last, orjson.dumps(items).decode(), body[:off] + edited + body[off + len(doc) :], h
    )
    assert _first(_report(led)) == ("changed", 23)


def test_a_dropped_block_is_named(led: Ledger) -> None:
    db = led.db()
    db.execute("DELETE FROM entry_blocks WHERE stream=? AND last_seq=29", (led.stream,))
    db.commit()
    db.close()
    assert _first(_report(led)) == ("removed", 20)


def test_a_dropped_last_block_is_a_truncation(led: Ledger) -> None:
    db = led.db()
    db.execute("DELETE FROM entry_blocks WHERE stream=? AND last_seq=49", (led.stream,))
    db.commit()
    db.close()
    assert _first(_report(led)) == ("truncated", 40)


def test_blocks_swapped_are_named(led: Ledger) -> None:
    got = _blocks(led)
    (_, last_a, idx_a, body_a, h_a), (_, last_b, idx_b, body_b, h_b) = got[1], got[3]
    # Whole blocks swapped (each keeps the other's seqs): they come back out of order.
    _rewrite(led, last_a, idx_b, body_b, h_b)
    _rewrite(led, last_b, idx_a, body_a, h_a)
    kind, seq = _first(_report(led))
    assert kind == "reordered" and seq == 10


def test_block_contents_swapped_under_their_index_are_named(led: Ledger) -> None:
    got = _blocks(led)
    (_, last_a, idx_a, body_a, h_a), (_, last_b, idx_b, body_b, h_b) = got[1], got[3]
    # The documents and hashes swapped, each block's index (its seqs) left in place.
    _rewrite(led, last_a, idx_a, body_b, h_b)
    _rewrite(led, last_b, idx_b, body_a, h_a)
    kind, seq = _first(_report(led))
    assert kind in ("reordered", "changed") and seq == 10


def test_a_block_cut_short_is_named(led: Ledger) -> None:
    _, last, idx, body, hashes = _blocks(led)[2]
    _rewrite(led, last, idx, body[:-5], hashes)
    assert _first(_report(led)) == ("changed", 29)


def test_a_block_whose_index_is_garbage_is_named(led: Ledger) -> None:
    _, last, _, body, hashes = _blocks(led)[2]
    _rewrite(led, last, "not json", body, hashes)
    assert _first(_report(led)) == ("removed", 20)


def test_retention_prunes_entries_inside_blocks(led: Ledger) -> None:
    st = led.store()
    try:
        before = st.get_entry(led.stream, 23)
        assert before is not None and before.session_id is not None
        stub = b'{"pruned":true}'
        with st.transaction():
            assert st.prune_entries(led.stream, [(23, stub), (24, stub), (999, stub)]) == 2
        after = st.get_entry(led.stream, 23)
        assert after is not None and after.canonical == stub and after.session_id is None
        assert after.entry_hash == before.entry_hash
        other = st.get_entry(led.stream, 25)
        assert other is not None and other.session_id == before.session_id
    finally:
        st.close()


def test_a_session_reads_its_chunks_out_of_blocks(led: Ledger) -> None:
    st = led.store()
    try:
        found = st.find_entries(kinds=("chunk",), session_ids=("s_bench",))
        assert [e.seq for e in found] == list(range(N))
        assert st.find_entries(kinds=("chunk",), session_ids=("s_other",)) == []
        newest = st.find_entries(session_ids=("s_bench",), newest_first=True, limit=3)
        assert [e.seq for e in newest] == [N - 1, N - 2, N - 3]
    finally:
        st.close()


def test_session_ids_are_matched_literally(led: Ledger) -> None:
    assert blocks.session_pattern("a_%\\b") == "%\na\\_\\%\\\\b\n%"
    w = led.writer("other@gw")
    w.append(chunk_drafts(3, session_id="s_ben%"), T0)
    w.close(T0)
    st = led.store()
    try:
        assert len(st.find_entries(kinds=("chunk",), session_ids=("s_ben%",))) == 3
    finally:
        st.close()


def test_an_edited_copy_in_a_block_index_is_named(led: Ledger) -> None:
    """As for a row's search columns: every hash holds, but a session's page would lie."""
    _, last, idx, body, hashes = _blocks(led)[0]
    items = orjson.loads(idx)
    items[9][3] = "mallory"  # entry 9's identity
    _rewrite(led, last, orjson.dumps(items).decode(), body, hashes)
    rep = _report(led)
    (p,) = [p for s in rep.streams for p in s.problems]
    assert p.kind == "column_mismatch" and p.seq == 9
    assert "the store's identity column says 'mallory'" in p.message


def test_a_store_with_rows_and_blocks_reads_as_one_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store upgraded from before blocks: its old chunk rows stay rows, new chunks go
    into blocks, and every reader sees one stream in seq order."""
    monkeypatch.setenv("LEDGERGATE_CHUNK_BLOCKS", "0")
    led = Ledger(tmp_path)
    w = led.writer(checkpoint_every_entries=10)
    w.append(chunk_drafts(15), T0)
    w.close(T0)
    monkeypatch.setenv("LEDGERGATE_CHUNK_BLOCKS", "1")
    w = led.writer(checkpoint_every_entries=10)
    w.append(chunk_drafts(15, T0 + 10**6), T0 + 10**6)
    w.close(T0 + 10**6)
    db = led.db()
    n_rows = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    n_blocks = db.execute("SELECT count(*) FROM entry_blocks").fetchone()[0]
    db.close()
    assert (n_rows, n_blocks) == (15, 1)
    rep = _report(led)
    assert rep.ok, rep.first_problem()
    st = led.store()
    try:
        assert [s for s, _, _ in st.iter_entries(led.stream)] == list(range(30))
        assert [s for s, _, _ in st.iter_entries(led.stream, 10, 20)] == list(range(10, 20))
        assert len(list(st.iter_entry_hashes(led.stream, 25))) == 25
        found = st.find_entries(session_ids=("s_bench",))
        assert [e.seq for e in found] == list(range(30))
        assert st.last_seq_before(led.stream, T0 + 10**6 + 5000) == 19
    finally:
        st.close()
