"""Retention on the store engine under test: payloads purged and entries pruned by rule
(connection, kind, age), the ledger still verifying and saying what was pruned under which
rule, a payload still named by a kept entry kept, the run recorded first; entries emptied
by hand, or a stub's hash changed, are named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ledgergate.core.config import RetentionRule
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.ledger.retention import stub
from ledgergate.services import audit, retention
from tests.services.synth import T0, Ledger

S = 10**9
DAY = 86400 * S
NOW = T0 + 40 * DAY
RAW = b"result rows of the old session"
SHARED = b"bytes two entries carry"


def _entry(ts: int, kind: str, conn: str, sid: str, payload: bytes | None = None) -> Draft:
    fields: dict[str, Any] = {
        "session_id": sid,
        "connection": conn,
        "identity": {"kind": "user", "subject": "alice", "groups": []},
    }
    payloads: tuple[tuple[str, bytes], ...] = ()
    if payload is not None:
        digest = hashlib.sha256(payload).hexdigest()
        payloads = ((digest, payload),)
    if kind == "chunk":
        fields["chunk"] = {"seq": 1, "size": 10, "sha256_in": "0" * 64, "sha256_out": "0" * 64}
        if payload is not None:
            fields["chunk"]["payload"] = payloads[0][0]
    else:
        fields["command"] = {"seq": 1, "op": "query", "text": "SELECT ?"}
        if payload is not None:
            fields["command"]["payload"] = payloads[0][0]
    return Draft(ts, kind, fields, payloads)


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "data")
    led.write(
        [
            _entry(T0, "command", "demo", "s1", RAW),
            _entry(T0 + S, "chunk", "demo", "s1", b"old chunk bytes"),
            _entry(T0 + 2 * S, "chunk", "reports", "s2"),
            _entry(T0 + 3 * S, "command", "demo", "s1", SHARED),
            _entry(NOW - DAY, "command", "reports", "s3", SHARED),  # recent: kept
            _entry(NOW - DAY, "chunk", "demo", "s4", b"recent chunk"),
        ],
        batch=2,
    )
    return led


def _run(led: Ledger, rules: list[RetentionRule], **kw: Any) -> retention.RetentionReport:
    st = led.store()
    w = led.writer(stream="cli@gw", shared=True)
    try:
        return retention.run(st, w, rules, NOW, **kw)
    finally:
        w.close(NOW)
        st.close()


def _verify(led: Ledger) -> audit.AuditReport:
    st = led.store()
    try:
        return audit.verify_store(st, [led.signer.verifier])
    finally:
        st.close()


def _payload(led: Ledger, data: bytes) -> bytes | None:
    st = led.store()
    try:
        return st.get_payload(hashlib.sha256(data).hexdigest())
    finally:
        st.close()


PAYLOADS = RetentionRule(name="demo-payloads", connections=["demo"], payloads_after="30d")
CHUNKS = RetentionRule(name="old-chunks", kinds=["chunk"], entries_after="30d")


def test_payloads_past_their_age_are_purged_and_the_ledger_verifies(led: Ledger) -> None:
    dry = _run(led, [PAYLOADS], dry_run=True)
    assert dry.payloads == {"demo-payloads": 2} and _payload(led, RAW) is not None
    rep = _run(led, [PAYLOADS])
    # the old demo payloads go; the one a recent entry also names stays
    assert rep.payloads == {"demo-payloads": 2} and rep.entries == {}
    assert _payload(led, RAW) is None
    assert _payload(led, SHARED) is not None
    assert _payload(led, b"recent chunk") is not None
    v = _verify(led)
    assert v.ok, v.first_problem()


def test_entries_past_their_age_are_pruned_and_said_so(led: Ledger) -> None:
    rep = _run(led, [CHUNKS])
    assert rep.entries == {"old-chunks": 2}
    assert rep.ranges == {"old-chunks": {led.stream: [[1, 2]]}}
    assert _payload(led, b"old chunk bytes") is None
    v = _verify(led)
    assert v.ok, v.first_problem()
    (s,) = [x for x in v.streams if x.stream == led.stream]
    assert s.pruned == {"old-chunks": 2}
    assert v.as_dict()["streams"][1]["pruned"] == {"old-chunks": 2}
    db = led.db()
    try:
        rows = db.execute(
            "SELECT seq, canonical, identity FROM ledger_entries WHERE stream=? ORDER BY seq",
            (led.stream,),
        ).fetchall()
        (run,) = db.execute(
            "SELECT canonical FROM ledger_entries WHERE kind='retention.run'"
        ).fetchall()
    finally:
        db.close()
    stubs = {seq: json.loads(bytes(c)) for seq, c, _ in rows if b'"pruned"' in bytes(c)}
    assert sorted(stubs) == [1, 2]
    assert (
        stubs[1]["pruned"] == {"at_ns": NOW, "rule": "old-chunks"} and stubs[1]["kind"] == "chunk"
    )
    assert all(ident is None for seq, _, ident in rows if seq in stubs)
    assert json.loads(bytes(run[0]))["rules"]["old-chunks"]["entries"] == 2
    # a second run finds nothing more to do
    assert _run(led, [CHUNKS]).entries == {}


def test_entries_emptied_by_hand_are_named(led: Ledger) -> None:
    db = led.db()
    try:
        (c,) = db.execute(
            "SELECT canonical FROM ledger_entries WHERE stream=? AND seq=3", (led.stream,)
        ).fetchone()
        doc = json.loads(bytes(c))
        db.execute(
            "UPDATE entries SET canonical=? WHERE stream=? AND seq=3",
            (stub(doc, "made-up", NOW), led.stream),
        )
        db.commit()
    finally:
        db.close()
    v = _verify(led)
    assert not v.ok
    assert f"{led.stream} entries 3..3 were emptied with no retention record" in v.first_problem()


def test_a_stub_whose_hash_was_changed_breaks_the_signed_root(led: Ledger) -> None:
    _run(led, [CHUNKS])
    db = led.db()
    try:
        db.set_entry(led.stream, 1, entry_hash=b"\x01" * 32)
        db.commit()
    finally:
        db.close()
    v = _verify(led)
    assert not v.ok
    # the signed root over it no longer matches
    assert "does not match entries 0..1" in (v.first_problem() or ""), v.first_problem()


def test_an_evidence_bundle_of_a_pruned_ledger_verifies(led: Ledger, tmp_path: Path) -> None:
    from ledgergate.core.config import parse_config
    from ledgergate.services.evidence import standalone
    from ledgergate.services.evidence.bundle import export_evidence
    from ledgergate.services.evidence.records import state_snapshot

    _run(led, [CHUNKS])
    out = tmp_path / "evidence.zip"
    st = led.store()
    try:
        export_evidence(
            st, led.signer, out, since_ns=None, until_ns=None, framework="all",
            state=state_snapshot(st, parse_config({}), NOW), now_ns=NOW,
        )  # fmt: skip
    finally:
        st.close()
    rep = standalone.verify(str(out), led.signer.vkey)
    assert rep.ok, rep.problems
    assert rep.streams[led.stream]["pruned"] == 2
