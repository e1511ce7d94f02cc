"""docs/ledger-format.md stays true: its hand verifier runs on the golden vectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledgergate.core.ledger import Checkpoint, Signer, leaf_hash, root

DOC = Path(__file__).resolve().parents[3] / "docs" / "ledger-format.md"


@pytest.fixture(scope="module")
def verify_by_hand() -> Callable[[list[str], str, str], int]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 7. Verify by hand") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    lines = code.group(1).count("\n")
    assert lines <= 30, f"the hand verifier grew to {lines} lines"
    ns: dict[str, Any] = {}
    exec(compile(code.group(1), str(DOC), "exec"), ns)  # our own document's example
    fn: Callable[[list[str], str, str], int] = ns["verify_by_hand"]
    return fn


def test_hand_verifier_accepts_the_golden_stream(
    verify_by_hand: Callable[[list[str], str, str], int], vector: Callable[[str], Any]
) -> None:
    g = vector("golden_stream.json")
    entries = [e["canonical"] for e in g["entries"]]
    assert verify_by_hand(entries, g["checkpoint_note"], g["vkey"]) == 3


def test_hand_verifier_rejects_tampering(
    verify_by_hand: Callable[[list[str], str, str], int], vector: Callable[[str], Any]
) -> None:
    g = vector("golden_stream.json")
    entries = [e["canonical"] for e in g["entries"]]
    bad = [
        ([entries[0], entries[1].replace("café", "cafe"), entries[2]], g["checkpoint_note"]),
        ([entries[0], entries[2]], g["checkpoint_note"]),
        ([entries[1], entries[0], entries[2]], g["checkpoint_note"]),
        (entries[:2], g["checkpoint_note"]),
        (entries, g["checkpoint_note"].replace("\n3\n", "\n2\n")),
    ]
    for es, note in bad:
        with pytest.raises(Exception):  # noqa: B017 - any failure is a rejection here
            verify_by_hand(es, note, g["vkey"])


def test_hand_verifier_agrees_with_the_library_on_a_longer_stream(
    verify_by_hand: Callable[[list[str], str, str], int],
    build: Callable[..., Any],
    signer: Signer,
) -> None:
    b = build(37)
    hashes = [leaf_hash(e.canonical) for e in b.entries]
    note = signer.sign(Checkpoint(b.stream, 37, root(hashes), 5))
    entries = [e.canonical.decode("utf-8") for e in b.entries]
    assert verify_by_hand(entries, note, signer.vkey) == 37
