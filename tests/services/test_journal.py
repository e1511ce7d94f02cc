"""A gateway's journaled ledger stream: appends are durable in the journal, the indexer
brings them into the store, and whatever a killed writer journaled is replayed (by the
next writer, or by the CLI) without forking or losing a single entry."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from hashlib import sha256
from pathlib import Path

import pytest

import ledgergate.store.journal as journal_files
from ledgergate.core.ledger.entry import Draft
from ledgergate.services import journal as indexing
from ledgergate.services.audit import verify_store
from ledgergate.services.ledger import LedgerUnavailable, LedgerWriter, recover_journals
from ledgergate.store.journal import Journal
from tests.services.synth import T0, Ledger, chunk_drafts

REPO = Path(__file__).resolve().parents[2]


def jroot(led: Ledger) -> Path:
    return led.root / "journal"


def segments(led: Ledger) -> list[Path]:
    return sorted(jroot(led).glob("*/*.lgj"))


def verified(led: Ledger) -> int:
    st = led.store()
    try:
        rep = verify_store(st, [led.signer.verifier])
        assert rep.ok, rep
        return st.max_seq(led.stream) + 1  # type: ignore[operator]
    finally:
        st.close()


def test_journaled_round_trip(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led), checkpoint_every_entries=25)
    drafts = chunk_drafts(100)
    for i in range(0, 100, 10):
        w.append(drafts[i : i + 10], T0 + i)
    assert len(segments(led)) == 1  # durable there before the store has them
    w.close(T0 + 100)
    assert not segments(led)  # all indexed, so all deleted
    assert verified(led) == 100
    st = led.store()
    # the first is due at once (by time), then every 25 entries
    assert [c.size for c in st.checkpoints(led.stream)] == [10, 40, 70, 100]
    st.close()


def test_payloads_and_readers_see_entries_within_the_index_interval(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    raw = b"secret result bytes"
    d1 = sha256(raw).hexdigest()
    w.append([Draft(T0, "chunk", {"chunk": {"payload": d1}}, ((d1, raw),))], T0)
    reader = led.store()
    deadline = time.monotonic() + 5
    while reader.max_seq(led.stream) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.max_seq(led.stream) == 0
    blob = reader.get_payload(d1)
    assert blob is not None and raw not in blob and led.cipher.open(d1, blob) == raw
    assert raw not in segments(led)[0].read_bytes()  # the journal holds it sealed too
    reader.close()
    w.close(T0)


def test_segments_rotate_and_indexed_ones_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_files, "SEGMENT_BYTES", 4096)
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    drafts = chunk_drafts(200)
    for i in range(0, 200, 10):
        w.append(drafts[i : i + 10], T0 + i)
    deadline = time.monotonic() + 5
    while len(segments(led)) > 2 and time.monotonic() < deadline:
        time.sleep(0.01)
        w.append(chunk_drafts(1), T0)  # the indexer deletes what the journal moved past
    assert len(segments(led)) <= 2
    w.close(T0)
    assert not segments(led)
    assert verified(led) >= 200


def test_one_writer_per_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_files, "ACQUIRE_WAIT_S", 0.2)
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    with pytest.raises(LedgerUnavailable, match="in use by another ledgergate process"):
        led.writer(journal_root=jroot(led))
    # the CLI leaves a live gateway's journal alone
    w.append(chunk_drafts(3), T0)
    st = led.store()
    assert recover_journals(st, jroot(led)) == 0
    st.close()
    w.close(T0)
    with pytest.raises(ValueError, match="shared"):
        LedgerWriter.open(led.store(), "cli@gw", led.signer, shared=True, journal_root=jroot(led))


def test_a_failed_journal_write_fails_closed_and_keeps_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    w.append(chunk_drafts(5), T0)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[:7])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_files.os, "write", full)
    with pytest.raises(LedgerUnavailable, match="No space left"):
        w.append(chunk_drafts(5), T0 + 1)
    assert w.size == 5
    monkeypatch.setattr(journal_files.os, "write", real_write)
    w.append(chunk_drafts(5), T0 + 2)  # the partial record was cut off: the chain goes on
    w.close(T0 + 3)
    assert verified(led) == 10


def test_a_short_journal_write_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    real_write = os.write
    sizes: list[int] = []

    def short(fd: int, data: bytes) -> int:  # the kernel may take less than asked
        sizes.append(len(data))
        return real_write(fd, bytes(data)[:50])

    monkeypatch.setattr(journal_files.os, "write", short)
    w.append(chunk_drafts(4), T0)
    monkeypatch.setattr(journal_files.os, "write", real_write)
    assert len(sizes) > 2 and sizes[1] == sizes[0] - 50  # the rest, 50 bytes at a time
    w.append(chunk_drafts(3), T0 + 1)
    w.close(T0 + 2)
    assert verified(led) == 7
    w2 = led.writer(journal_root=jroot(led))  # and the journal replays cleanly
    assert w2.size == 7
    w2.close(T0 + 3)


def test_an_indexer_failure_stops_appends_and_the_journal_is_kept(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    assert w.indexer is not None
    w.indexer.store.close()  # every statement fails from now on
    w.append(chunk_drafts(5), T0)
    deadline = time.monotonic() + 5
    while w.indexer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(LedgerUnavailable, match="store cannot be written"):
        w.append(chunk_drafts(1), T0)
    with pytest.raises(LedgerUnavailable):
        w.close(T0)
    assert segments(led)  # nothing was lost: the next writer replays it
    w2 = led.writer(journal_root=jroot(led))
    assert w2.size == 5
    w2.close(T0)
    assert verified(led) == 5


_APPEND_FOREVER = """
import sys
from pathlib import Path
from tests.services.synth import T0, Ledger, chunk_drafts

led = Ledger(Path(sys.argv[1]))
w = led.writer(journal_root=led.root / "journal", checkpoint_every_entries=300)
drafts = chunk_drafts(200)
i = 0
while True:
    w.append(drafts, T0 + i)
    i += 1
    if i == 3:
        print("running", flush=True)
"""


def _kill_while_appending(root: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", _APPEND_FOREVER, str(root)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "running"
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL


@pytest.mark.parametrize("recovered_by", ["next writer", "cli"])
def test_kill_9_loses_no_journaled_entry(tmp_path: Path, recovered_by: str) -> None:
    led = Ledger(tmp_path)
    _kill_while_appending(tmp_path)
    assert segments(led)
    journaled = sum(
        1
        for seg in segments(led)
        for r in indexing.decode(seg.read_bytes()).records
        if type(r) is indexing.EntryRecord
    )
    if recovered_by == "cli":
        st = led.store()
        recover_journals(st, jroot(led))
        st.close()
        assert not segments(led)
        n = verified(led)
    else:
        w = led.writer(journal_root=jroot(led))
        n = w.size
        w.append(chunk_drafts(1), T0)
        w.close(T0)
        assert verified(led) == n + 1
    assert n >= 600 and n % 200 == 0  # whole appends only
    assert n >= journaled  # every entry the journal held is in the store


def test_a_journal_that_does_not_continue_the_store_is_refused(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    w.append(chunk_drafts(3), T0)
    seg = w.journal.segment if w.journal else None
    assert seg is not None
    data = seg.read_bytes()
    # kill the writer's process state without closing: keep its segment, drop its lock
    assert w.indexer is not None
    w.indexer.close()
    w.journal.release()  # type: ignore[union-attr]
    # another stream's store: the journal's first entry has a prev_hash it cannot follow
    other = Ledger(tmp_path / "other")
    w2 = other.writer(journal_root=jroot(other))
    w2.append(chunk_drafts(2, T0 + 7), T0)
    w2.close(T0)
    d = jroot(other) / seg.parent.name
    d.mkdir(parents=True, exist_ok=True)
    (d / seg.name).write_bytes(data)
    with pytest.raises(LedgerUnavailable, match=r"\.lgj.*cannot be applied"):
        other.writer(journal_root=jroot(other))
    # a damaged segment is named too
    bad = bytearray(data)
    bad[len(journal_files.header(led.stream)) + 20] ^= 1
    (d / seg.name).write_bytes(bytes(bad))
    with pytest.raises(LedgerUnavailable, match="CRC mismatch"):
        other.writer(journal_root=jroot(other))


def test_journal_lock_is_released_on_close(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    w.close(T0)
    j = Journal.acquire(jroot(led), led.stream, wait_s=0)
    j.release()


def test_mixed_batches_are_stored_as_sealing_draft_by_draft_would(tmp_path: Path) -> None:
    """Typed drafts are sealed natively in runs, the others the checked way, in one
    append: the store ends up with the entries, index columns and payloads (each once)
    that sealing one draft at a time gives."""
    from dataclasses import replace

    from ledgergate.core.ledger.chain import Chain, StreamState

    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    raw = b"result bytes kept as a payload"
    digest = sha256(raw).hexdigest()
    typed = [replace(d, typed=True) for d in chunk_drafts(9)]
    typed[4] = replace(typed[4], fields={**typed[4].fields, "identity": "svc-ci"})
    batch = [
        *typed[:3],
        Draft(T0, "session.open", {"session_id": "s_x", "note": "not typed"}),
        typed[3],
        Draft(T0 + 1, "chunk", {"chunk": {"payload": digest}}, ((digest, raw),), True),
        Draft(T0 + 2, "chunk", {"chunk": {"payload": digest}}, ((digest, raw),), True),
        *typed[4:7],
        Draft(T0 + 3, "chunk", {"big": 2**70}, (), True),  # beyond orjson: checked path
        *typed[7:],
    ]
    sealed = w.append(batch, T0)
    w.append(typed[:2], T0 + 10)  # a second append continues the chain
    w.close(T0 + 20)
    ref = Chain(StreamState.genesis(led.stream))
    want = [ref.seal(d) for d in [*batch, *typed[:2]]]
    assert list(sealed) == want[: len(batch)]
    assert sealed[1:3] == want[1:3]
    st = led.store()
    try:
        rows = [st.get_entry(led.stream, e.seq) for e in want]
        assert [(r.canonical, r.entry_hash) for r in rows if r] == [
            (e.canonical, e.entry_hash) for e in want
        ]
        ident = [(r.session_id, r.identity, r.connection) for r in rows if r]
        assert ident[3] == ("s_x", None, None)
        assert ident[7] == ("s_bench", "svc-ci", "demo")
        assert ident[0] == ("s_bench", "alice", "demo")
        blob = st.get_payload(digest)
        assert blob is not None and led.cipher.open(digest, blob) == raw
    finally:
        st.close()
    assert verified(led) == len(want)


def test_index_columns_are_the_same_live_and_on_replay(tmp_path: Path) -> None:
    """The rows the writer gives the indexer (native or checked) equal the rows replay
    rebuilds from the journal: a string as plain text, anything else None."""
    from dataclasses import replace

    from ledgergate.core.ledger import journal as jr

    class Text(str):
        pass

    led = Ledger(tmp_path)
    w = led.writer(journal_root=jroot(led))
    fields = {"session_id": Text("s_t"), "connection": 5, "identity": {"subject": Text("eve")}}
    batch = [
        Draft(T0, "session.open", dict(fields)),  # checked path
        Draft(T0, "session.open", dict(fields), (), True),  # native run
        replace(chunk_drafts(1)[0], typed=True),
    ]
    w.append(batch, T0)
    decoded = jr.decode(segments(led)[0].read_bytes())
    entries = [r for r in decoded.records if isinstance(r, jr.EntryRecord)]
    replayed = [indexing._entry_row(led.stream, r)[0] for r in entries]
    w.close(T0 + 1)
    st = led.store()
    try:
        stored = [st.get_entry(led.stream, i) for i in range(3)]
    finally:
        st.close()
    assert stored == replayed
    assert [(r.session_id, r.identity, r.connection) for r in replayed] == [
        ("s_t", "eve", None),
        ("s_t", "eve", None),
        ("s_bench", "alice", "demo"),
    ]
