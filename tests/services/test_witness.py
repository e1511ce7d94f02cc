"""Witnesses, on the store engine under test: checkpoints published by the publisher
(file witness) exactly once each and in order, across restarts; read back from JSON lines,
syslog lines and directories; and the store checked against them: a store rebuilt with
other entries (even signed again with the same key) or cut short is named."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.services.config import load_settings
from ledgergate.services.witness import (
    TAG,
    WitnessPublisher,
    check_witnessed,
    published_notes,
    witness_line,
)
from tests.services.synth import T0, Ledger, chunk_drafts
from tests.storeserver import store_yaml


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "data")
    led.write(chunk_drafts(40, T0), batch=5, checkpoint_every_entries=10)
    return led


def _notes(led: Ledger) -> list[str]:
    st = led.store()
    try:
        return [c.note for c in st.checkpoints(led.stream)]
    finally:
        st.close()


def test_the_store_matches_what_was_published(led: Ledger) -> None:
    notes = _notes(led)
    st = led.store()
    try:
        rep = check_witnessed(st, notes, [led.signer.verifier])
    finally:
        st.close()
    assert rep.ok, rep.problems
    # the writer signs at its first append, then every 10 entries, and when it closes
    assert rep.checked[led.stream] == [5, 15, 25, 35, 40]


def test_a_store_rebuilt_and_signed_again_is_caught(led: Ledger, tmp_path: Path) -> None:
    """The operator holds the key: they rebuild the store with other entries and sign it
    again. `audit verify` alone would pass; the witness's roots do not."""
    published = _notes(led)
    forged = Ledger(tmp_path / "forged")
    forged.signer = led.signer
    forged.write(chunk_drafts(40, T0 + 1), batch=5, checkpoint_every_entries=10)
    st = forged.store()
    try:
        rep = check_witnessed(st, published, [led.signer.verifier])
    finally:
        st.close()
    assert not rep.ok
    assert rep.problems[0].size == 5
    assert "no longer give the root the witness holds" in rep.problems[0].message


def test_a_store_cut_short_is_caught(led: Ledger) -> None:
    published = _notes(led)
    db = led.db()
    try:
        db.delete_entries(led.stream, 25)
        db.commit()
    finally:
        db.close()
    st = led.store()
    try:
        rep = check_witnessed(st, published, [led.signer.verifier])
    finally:
        st.close()
    assert [p.message for p in rep.problems] == [
        f"{led.stream}: the witness saw 40 entries, the store holds 25: entries were removed"
    ]
    assert rep.checked[led.stream] == [5, 15, 25]


def test_notes_of_other_keys_are_ignored_and_bad_ones_named(led: Ledger) -> None:
    other = Signer("ledgergate/other", Ed25519PrivateKey.generate())
    notes = [*_notes(led), other.sign_note("x\n1\n" + "A" * 43 + "=\ntimestamp 1\n"), "junk"]
    st = led.store()
    try:
        rep = check_witnessed(st, notes, [led.signer.verifier])
    finally:
        st.close()
    assert rep.ignored == 1
    assert len(rep.problems) == 1 and "a published checkpoint" in rep.problems[0].message


def test_notes_are_read_back_from_every_format(led: Ledger, tmp_path: Path) -> None:
    notes = _notes(led)
    out = tmp_path / "witness"
    out.mkdir()
    (out / "file.jsonl").write_text(witness_line(led.stream, 10, notes[0]) + "\n")
    blob = base64.b64encode(notes[1].encode()).decode()
    (out / "syslog.log").write_text(
        f"2026-12-07T05:00:00.000000+00:00 gw ledgergate - checkpoint "
        f'[checkpoint@32473 stream="{led.stream}" size="20"] {TAG} {blob}\n'
        "2026-12-07T05:00:01+00:00 gw sshd[1]: unrelated line\n"
    )
    assert published_notes(out) == [notes[0], notes[1]]
    assert published_notes(out / "file.jsonl") == [notes[0]]


def _settings(led: Ledger, tmp_path: Path, witness: Path) -> object:
    cfg = tmp_path / "ledgergate.yaml"
    cfg.write_text(
        f"data_dir: {led.root}\ngateway_name: gw\n" + store_yaml(led.root)
        + f"ledger:\n  witnesses:\n    - {{type: file, path: {witness}}}\n"
    )  # fmt: skip
    return load_settings(cfg)


def test_the_publisher_sends_each_checkpoint_once_in_order(led: Ledger, tmp_path: Path) -> None:
    witness = tmp_path / "published.jsonl"
    settings = _settings(led, tmp_path, witness)

    async def round_() -> int:
        pub = WitnessPublisher(settings, [led.stream])  # type: ignore[arg-type]
        try:
            return await pub.publish_once()
        finally:
            await pub.close()

    assert asyncio.run(round_()) == 5
    assert asyncio.run(round_()) == 0  # the cursor survived the restart
    led.write(chunk_drafts(20, T0 + 100), batch=5, checkpoint_every_entries=10)
    sizes = [int(n.split("\n")[1]) for n in _notes(led)]
    assert asyncio.run(round_()) == len(sizes) - 5
    lines = [json.loads(x) for x in witness.read_text().splitlines()]
    assert [x["size"] for x in lines] == sizes
    assert {x["stream"] for x in lines} == {led.stream}
    st = led.store()
    try:
        assert check_witnessed(st, published_notes(witness), [led.signer.verifier]).ok
    finally:
        st.close()
