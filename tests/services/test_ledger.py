"""LedgerWriter against real SQLite files: round trip, resume, checkpoints, payloads,
failure rollback, shared streams, and crashes in the middle of a transaction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from hashlib import sha256
from pathlib import Path

import pytest

from ledgergate.core.ledger.chain import Chain, StreamState
from ledgergate.core.ledger.checkpoint import parse_checkpoint
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.audit import verify_store
from ledgergate.services.ledger import LedgerUnavailable, LedgerWriter, checkpoint_stream
from ledgergate.store import Store
from tests.services.synth import T0, Ledger, chunk_drafts

REPO = Path(__file__).resolve().parents[2]
S = 10**9


def _verify(led: Ledger) -> None:
    st = led.store()
    rep = verify_store(st, [led.signer.verifier])
    st.close()
    assert rep.ok, rep.first_problem()


def test_round_trip(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer()
    drafts = chunk_drafts(250)
    sealed = []
    for i in range(0, 250, 100):
        sealed += w.append(drafts[i : i + 100], T0 + i)
    assert [e.seq for e in sealed] == list(range(250))
    assert w.size == 250 and w.head_hash == sealed[-1].entry_hash
    w.close(T0 + 10 * S)
    st = led.store()
    rows = list(st.iter_entries(led.stream))
    assert [(s, c, h) for s, c, h in rows] == [(e.seq, e.canonical, e.entry_hash) for e in sealed]
    e = st.get_entry(led.stream, 7)
    assert e is not None
    assert (e.kind, e.session_id, e.identity, e.connection) == ("chunk", "s_bench", "alice", "demo")
    doc = json.loads(e.canonical)
    assert doc["chunk"]["seq"] == 7 and doc["seq"] == 7 and doc["stream"] == led.stream
    state = st.get_stream_state(led.stream)
    assert state is not None and StreamState.from_record(led.stream, state).size == 250
    # the chain matches an independent re-sealing of the same drafts
    chain = Chain(StreamState.genesis(led.stream))
    assert [chain.seal(d).entry_hash for d in drafts] == [r[2] for r in rows]
    st.close()
    _verify(led)


def test_resume_after_reopen(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer()
    w.append(chunk_drafts(30), T0)
    head = w.head_hash
    w.close(T0 + 1)
    w2 = led.writer()
    assert (w2.size, w2.head_hash, w2.checkpointed_size) == (30, head, 30)
    sealed = w2.append(chunk_drafts(5, T0 + S), T0 + S)
    assert sealed[0].seq == 30
    assert sealed[0].document()["prev_hash"] == head.hex()
    w2.close(T0 + 2 * S)
    _verify(led)


def test_checkpoint_schedule(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(checkpoint_every_entries=100, checkpoint_every_seconds=10)
    drafts = chunk_drafts(1000)
    w.append(drafts[:10], T0)  # the first append of a stream is always signed
    w.append(drafts[10:60], T0 + S)  # 50 entries, 1 s: not due
    w.append(drafts[60:110], T0 + 2 * S)  # 100 since the last: due
    w.append(drafts[110:120], T0 + 13 * S)  # 11 s since the last: due
    st = w.store
    assert [c.size for c in st.checkpoints(led.stream)] == [10, 110, 120]
    assert w.checkpoint(T0 + 14 * S) is None  # the head did not move
    w.append(drafts[120:121], T0 + 14 * S)
    note = w.checkpoint(T0 + 15 * S)
    assert note is not None
    cp = parse_checkpoint(note, [led.signer.verifier])
    assert (cp.origin, cp.size, cp.ts_ns) == (led.stream, 121, T0 + 15 * S)
    w.append(drafts[121:125], T0 + 16 * S)
    w.close(T0 + 17 * S)  # the final checkpoint
    st = led.store()
    latest = st.latest_checkpoint(led.stream)
    assert latest is not None and latest.size == 125
    assert (
        latest.root
        == StreamState.from_record(led.stream, st.get_stream_state(led.stream) or b"").tree.root()
    )
    with pytest.raises(LedgerUnavailable, match="closed"):
        w.append(drafts[:1], T0)


def test_payloads_are_encrypted(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    raw = b"secret result bytes " * 10
    digest = sha256(raw).hexdigest()
    w = led.writer()
    w.append(
        [
            Draft(T0, "chunk", {"chunk": {"payload": digest}}, ((digest, raw),)),
            Draft(T0, "chunk", {"chunk": {"payload": digest}}, ((digest, raw),)),
        ],
        T0,
    )
    blob = w.store.get_payload(digest)
    assert blob is not None and raw not in blob
    assert led.cipher.open(digest, blob) == raw
    w.close(T0)
    # a payload without a payload key is refused, not stored in clear
    w2 = led.writer(cipher=None)
    with pytest.raises(LedgerUnavailable, match="payload key"):
        w2.append([Draft(T0, "chunk", {}, (("ab" * 32, b"x"),))], T0)
    assert w2.size == 2
    w2.append([Draft(T0, "chunk", {})], T0)
    w2.close(T0)
    _verify(led)


def test_failed_append_rolls_back(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer()
    w.append(chunk_drafts(3), T0)
    head = w.head_hash
    bad = [*chunk_drafts(2), Draft(T0, "chunk", {"ratio": 0.5})]  # floats are not canonical
    with pytest.raises(LedgerUnavailable):
        w.append(bad, T0)
    assert (w.size, w.head_hash) == (3, head)
    # a store failure inside the transaction: another writer took seq 3 behind our back
    other = led.writer()
    other.append(chunk_drafts(1), T0)
    other.close(T0)
    with pytest.raises(LedgerUnavailable, match="failed"):
        w.append(chunk_drafts(2), T0)
    assert (w.size, w.head_hash) == (3, head)
    st = led.store()
    assert st.max_seq(led.stream) == 3  # only the other writer's entry
    st.close()
    _verify(led)


def test_also_commits_with_the_entries(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer()

    def change(st: Store) -> None:
        st.put_payloads([("ab" * 32, b"side effect", 1)])

    w.append(chunk_drafts(1), T0, also=change)
    assert w.store.get_payload("ab" * 32) == b"side effect"

    def failing(st: Store) -> None:
        st.put_payloads([("cd" * 32, b"never", 1)])
        raise RuntimeError("refused")

    with pytest.raises(LedgerUnavailable):
        w.append(chunk_drafts(1), T0, also=failing)
    assert w.store.get_payload("cd" * 32) is None and w.size == 1


def test_shared_stream_several_writers(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    a = led.writer("cli@gw", shared=True)
    b = led.writer("cli@gw", shared=True)
    for i in range(5):
        a.append(chunk_drafts(2, T0 + i), T0 + i)
        b.append(chunk_drafts(3, T0 + i), T0 + i)
    assert a.size == 22  # a saw b's entries each time it appended
    assert b.size == 25
    a.close(T0 + 100)
    b.close(T0 + 100)
    st = led.store()
    assert st.max_seq("cli@gw") == 24
    st.close()
    _verify(led)


def test_checkpoint_stream_signs_the_stored_head(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    w = led.writer(checkpoint_every_entries=10_000, checkpoint_every_seconds=3600)
    w.append(chunk_drafts(1), T0)
    w.append(chunk_drafts(4), T0 + 1)
    st = led.store()
    assert [c.size for c in st.checkpoints(led.stream)] == [1]
    note = checkpoint_stream(st, led.stream, led.signer, T0 + 2)
    assert note is not None and parse_checkpoint(note, [led.signer.verifier]).size == 5
    assert checkpoint_stream(st, led.stream, led.signer, T0 + 3) is None
    assert checkpoint_stream(st, "no-such-stream", led.signer, T0 + 3) is None


_CRASH_MID_TX = """
import os, sys
from pathlib import Path
from tests.services.synth import T0, Ledger, chunk_drafts

led = Ledger(Path(sys.argv[1]))
w = led.writer(checkpoint_every_entries=50)
drafts = chunk_drafts(700)
for i in range(0, 500, 100):
    w.append(drafts[i : i + 100], T0 + i)

def die(*args, **kwargs):
    os._exit(9)  # entries and payloads are inserted, the transaction is still open

w.store.put_stream_state = die
w.append(drafts[500:600], T0 + 500)
"""

_APPEND_FOREVER = """
import sys
from pathlib import Path
from tests.services.synth import T0, Ledger, chunk_drafts

led = Ledger(Path(sys.argv[1]))
w = led.writer(checkpoint_every_entries=300)
drafts = chunk_drafts(200)
i = 0
while True:
    w.append(drafts, T0 + i)
    i += 1
    if i == 3:
        print("running", flush=True)
"""


def _run(code: str, root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_crash_in_the_middle_of_a_transaction(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    p = _run(_CRASH_MID_TX, tmp_path)
    p.communicate(timeout=60)
    assert p.returncode == 9
    _verify(led)
    st = led.store()
    assert st.max_seq(led.stream) == 499  # the open transaction left nothing behind
    st.close()
    w = led.writer()
    assert w.size == 500
    w.append(chunk_drafts(10), T0)
    w.close(T0)
    _verify(led)


def test_kill_9_while_appending(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    p = _run(_APPEND_FOREVER, tmp_path)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "running"
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    _verify(led)
    w = led.writer()
    n = w.size
    assert n >= 600 and n % 200 == 0  # whole batches only
    w.append(chunk_drafts(1), T0)
    w.close(T0)
    _verify(led)


def test_open_on_a_broken_store_is_unavailable(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    st = led.store()
    st.close()  # a closed connection: every statement fails
    with pytest.raises(LedgerUnavailable):
        LedgerWriter.open(st, led.stream, led.signer)


def test_open_on_a_corrupt_stream_state(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    st = led.store()
    with st.transaction():
        st.put_stream_state(led.stream, b"\x01" * 7, T0)
    with pytest.raises(LedgerUnavailable, match="cannot be opened"):
        LedgerWriter.open(st, led.stream, led.signer)
    with pytest.raises(ValueError):
        LedgerWriter.open(st, "other", led.signer, checkpoint_every_entries=0)


def test_state_row_lags_and_is_rolled_forward_on_open(tmp_path: Path) -> None:
    """A gateway writes its state row every STATE_EVERY entries; reopening (also after a
    kill -9) extends the stored state over the entries committed after it."""
    from ledgergate.services.ledger import STATE_EVERY

    led = Ledger(tmp_path)
    w = led.writer(checkpoint_every_entries=10_000, checkpoint_every_seconds=3600)
    w.append(chunk_drafts(3), T0)  # the first append is signed, state written
    for i in range(5):
        w.append(chunk_drafts(2, T0 + 1 + i), T0 + 1 + i)
    stored = led.store().get_stream_state(led.stream)
    assert stored is not None and StreamState.from_record(led.stream, stored).size == 3
    assert STATE_EVERY > 13
    # no close(): as after a crash
    w2 = led.writer(checkpoint_every_entries=10_000, checkpoint_every_seconds=3600)
    assert w2.size == 13 and w2.head_hash == w.head_hash
    w2.append(chunk_drafts(1, T0 + 9), T0 + 9)
    w2.close(T0 + 10)
    _verify(led)
