"""Insights on the store engine under test, from a synthetic ledger whose every finding is
planted: privileged SQL, bucket and topic administration, blocked attempts, review
turnaround and a self-approval attempt, first-time access against a baseline, an
off-hours and a long session, a volume spike, stale and long-lived tokens; and the
incident timeline. Each finding names its entry."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from ledgergate.core.ledger.entry import Draft
from ledgergate.services import tokens
from ledgergate.services.insights import InsightsOptions, collect, incident_timeline
from ledgergate.services.insights_report import render

S = 10**9
DAY = 86400 * S
# A Wednesday at 10:00 UTC: the period starts here and lasts 7 days.
START = int(dt.datetime(2026, 11, 4, 10, tzinfo=dt.UTC).timestamp()) * S
UNTIL = START + 7 * DAY


def _who(name: str) -> dict[str, Any]:
    return {"kind": "user", "subject": name, "groups": []}


def _cmd(ts: int, who: str, sid: str, command: dict[str, Any], conn: str = "app") -> Draft:
    return Draft(ts, "command", {"session_id": sid, "connection": conn, "identity": _who(who),
                                 "command": {"seq": 1, **command}})  # fmt: skip


def _sql(ts: int, who: str, sid: str, text: str) -> Draft:
    return _cmd(ts, who, sid, {"op": "query", "text": text})


def _chunk(ts: int, who: str, sid: str, size: int, **more: Any) -> Draft:
    return Draft(ts, "chunk", {"session_id": sid, "connection": "app", "identity": _who(who),
                               "direction": "s2c",
                               "chunk": {"seq": 1, "size": size, "sha256_in": "0" * 64,
                                         "sha256_out": "0" * 64, **more}})  # fmt: skip


def _session(ts: int, kind: str, who: str, sid: str) -> Draft:
    return Draft(ts, kind, {"session_id": sid, "connection": "app", "identity": _who(who)})


@pytest.fixture
def led(tmp_path: Path) -> Any:
    from tests.services.synth import Ledger

    led = Ledger(tmp_path / "data")
    base = START - 30 * DAY
    drafts = [
        # the baseline: alice reads orders, carol moves a little every day
        _sql(base, "alice", "b1", "SELECT * FROM orders WHERE id = ?"),
        *[_chunk(base + i * DAY, "carol", "b2", 1000) for i in range(30)],
        # the period
        _session(START + 1 * S, "session.open", "alice", "p1"),
        _sql(START + 2 * S, "alice", "p1", "SELECT * FROM orders WHERE id = ?"),
        _sql(START + 3 * S, "alice", "p1", "SELECT total FROM invoices"),
        _session(START + 4 * S, "session.close", "alice", "p1"),
        _sql(START + 5 * S, "bob", "p2", "DROP TABLE audit_log"),
        _sql(START + 6 * S, "bob", "p2", "DELETE FROM sessions"),
        _sql(START + 7 * S, "bob", "p2", "UPDATE users SET active = ? WHERE id = ?"),
        _cmd(START + 8 * S, "erin", "p3", {"protocol": "s3", "op": "DeleteBucket",
                                           "method": "DELETE", "bucket": "logs"}, "files"),
        _cmd(START + 9 * S, "erin", "p4", {"protocol": "kafka", "op": "create_topics",
                                           "request": {"topics": [{"name": "payments"}]}},
             "events"),
        _chunk(START + 10 * S, "frank", "p5", 500, topic="payments"),
        _cmd(START + 10 * S + 1, "grace", "p8", {"protocol": "ssh", "op": "exec",
                                               "text": "sudo -u root rm -rf /var/cache/app"},
             "web1"),
        _cmd(START + 10 * S + 2, "grace", "p8", {"protocol": "ssh", "op": "exec",
                                               "text": "uptime"}, "web1"),
        _cmd(START + 10 * S + 3, "grace", "p8", {"protocol": "ssh", "op": "sftp:open",
                                               "path": "/srv/app/config.yml"}, "web1"),
        Draft(START + 11 * S, "decision.block", {
            "session_id": "p2", "connection": "app", "identity": _who("bob"),
            "command": {"seq": 4, "op": "query", "text": "TRUNCATE payroll"},
            "decision": {"action": "block", "rule": "no-truncate"}}),
        Draft(START + 12 * S, "review.pending", {
            "review": {"id": "rv_1", "kind": "command", "state": "pending", "event": "request",
                       "actor": "bob"}, "identity": _who("bob"), "connection": "app"}),
        Draft(START + 13 * S, "review.refused", {
            "review": {"id": "rv_1", "kind": "command", "state": "pending",
                       "event": "self-approval", "actor": "bob"},
            "identity": _who("bob"), "connection": "app"}),
        Draft(START + 72 * S, "review.approved", {
            "review": {"id": "rv_1", "kind": "command", "state": "approved", "event": "approve",
                       "actor": "sam"}, "decision": {"reviewer": "sam", "approve": True},
            "identity": _who("bob"), "connection": "app"}),
        # Saturday night, and a ten-hour session
        _session(START + 3 * DAY + 13 * 3600 * S, "session.open", "mallory", "p6"),
        _session(START + 3 * DAY + 23 * 3600 * S, "session.close", "mallory", "p6"),
        # carol moves 50x her usual
        *[_chunk(START + 5 * DAY + i * S, "carol", "p7", 10_000) for i in range(25)],
    ]  # fmt: skip
    drafts.sort(key=lambda d: d.ts_ns)
    led.write(drafts, batch=10)
    st = led.store()
    w = led.writer(stream="cli@gw", shared=True)
    try:
        tokens.create_token(st, w, identity="ci-bot", kind="service", ttl_ns=365 * DAY,
                            now_ns=START - 200 * DAY, created_by="test",
                            max_ttl_ns=400 * DAY)  # fmt: skip
    finally:
        w.close(START)
        st.close()
    return led


def _collect(led: Any) -> Any:
    st = led.store()
    try:
        return collect(st, InsightsOptions(START, UNTIL, now_ns=UNTIL))
    finally:
        st.close()


def test_every_planted_finding_is_found(led: Any) -> None:
    ins = _collect(led)
    priv = {(f.identity, f.what.split(":")[0]) for f in ins.privileged}
    assert priv == {
        ("bob", "ddl"),
        ("bob", "write without WHERE"),
        ("erin", "bucket administration"),
        ("erin", "topic administration"),
        ("grace", "root on a host, destructive command"),
    }
    assert all(":" in f.entry and f.entry.startswith("gateway@gw:") for f in ins.privileged)
    assert dict(ins.blocked_by_rule) == {"no-truncate": 1}
    assert [f.identity for f in ins.self_approval_attempts] == ["bob"]
    assert dict(ins.decisions_by_reviewer) == {"sam": 1} and ins.decision_seconds == [60.0]
    # alice read orders in the baseline: only invoices is new to her
    assert {(f.identity, f.what) for f in ins.first_access} == {
        ("alice", "first table invoices"),
        ("bob", "first table audit_log"),
        ("bob", "first table sessions"),
        ("bob", "first table users"),
        ("erin", "first bucket logs"),
        ("erin", "first topic payments"),
        ("frank", "first topic payments"),
        ("grace", "first host web1"),
        ("grace", "first path /srv/app/config.yml"),
    }
    assert [f.identity for f in ins.off_hours] == ["mallory"]
    assert [(f.identity, f.what) for f in ins.long_sessions] == [
        ("mallory", "session lasted 10.0 h")
    ]
    assert [v["identity"] for v in ins.volume] == ["carol"] and ins.volume[0]["ratio"] > 3
    assert [t["identity"] for t in ins.stale_tokens] == ["ci-bot"]
    assert [t["identity"] for t in ins.long_lived_tokens] == ["ci-bot"]


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_the_report_in_every_format(led: Any, fmt: str) -> None:
    text = render(_collect(led), fmt)
    if fmt == "json":
        doc = json.loads(text)
        assert doc["blocked"]["by_rule"] == {"no-truncate": 1}
    else:
        for needle in (
            "Privileged commands",
            "DROP TABLE audit_log",
            "no-truncate",
            "Self-approval",
        ):
            assert needle in text
    if fmt == "html":
        assert text.startswith("<!doctype html>") and "<svg" in text and "<script" not in text


def test_the_incident_timeline_crosses_protocols(led: Any) -> None:
    st = led.store()
    try:
        tl = incident_timeline(st, START, START + 20 * S)
    finally:
        st.close()
    kinds = [e["kind"] for e in tl]
    assert kinds[:2] == ["session.open", "command"]
    assert {e["connection"] for e in tl if e["kind"] == "command"} == {
        "app",
        "files",
        "events",
        "web1",
    }
    assert any(e["kind"] == "chunks" and "500 bytes" in e["what"] for e in tl)
    assert [e["ts_ns"] for e in tl] == sorted(e["ts_ns"] for e in tl)
