"""core/recording.py: what the ledger says about a session at each recording level.

Drafts are built from what the Relay really reports for captured sessions
(tests/vectors/pg/) and from hand-made facts carrying a secret in every place a secret
can travel: string, dollar-quoted and numeric literals, Bind parameters, function
arguments, result rows and COPY data.
"""

from __future__ import annotations

import json
from hashlib import sha256
from typing import Any

import pytest
from tests.wire.pg.vectors import SESSIONS, load

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.recording import RECORDING_LEVELS, SessionRecorder
from ledgergate.core.sqltext import redact
from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    ChunkSeen,
    ClientData,
    CommandSeen,
    Committed,
    Record,
    ServerData,
)
from ledgergate.wire.pg.frames import build
from ledgergate.wire.pg.session import Relay

BASE = {"session_id": "s_0123", "connection": "app", "identity": {"subject": "alice"}}
SECRET = "Zq9-secret-VALUE"
SECRET_NUMBER = "7391846205"


def query(sql: str, ts: int = 1) -> CommandSeen:
    raw = build(b"Q", sql.encode() + b"\x00")
    return CommandSeen("query", ts, raw, text=m.parse_query(raw[5:]))


def secret_facts() -> tuple[CommandSeen | ChunkSeen, ...]:
    parse_raw = build(b"P", b"s1\x00SELECT $1 || '" + SECRET.encode() + b"'\x00\x00\x00")
    p = m.parse_parse(parse_raw[5:])
    bind_raw = build(
        b"B",
        b"\x00s1\x00\x00\x00\x00\x01"
        + len(SECRET).to_bytes(4, "big")
        + SECRET.encode()
        + b"\x00\x00",
    )
    b = m.parse_bind(bind_raw[5:])
    fn_raw = build(
        b"F",
        b"\x00\x00\x04\xd2\x00\x00\x00\x01"
        + len(SECRET).to_bytes(4, "big")
        + SECRET.encode()
        + b"\x00\x00",
    )
    row = build(b"D", b"\x00\x01" + len(SECRET).to_bytes(4, "big") + SECRET.encode())
    return (
        query(f"UPDATE users SET pw = '{SECRET}', pin = {SECRET_NUMBER} WHERE id = 1"),
        query(f"SELECT $${SECRET}$$; SELECT E'{SECRET}' -- {SECRET}"),
        query(f"SELECT '{SECRET}"),  # unscannable
        query(f"EXECUTE p('{SECRET}', {SECRET_NUMBER})"),  # the normalizer keeps these
        CommandSeen("parse", 2, parse_raw, text=p.query, statement=p.statement),
        CommandSeen(
            "bind", 3, bind_raw, statement=b.statement, portal=b.portal, nparams=len(b.params)
        ),
        CommandSeen("function", 4, fn_raw, text=b"fn:1234"),
        ChunkSeen("s2c", 1, 5, row + m.ready_for_query(), 1, (), True),
        ChunkSeen("c2s", 1, 6, build(b"d", SECRET.encode() + b"\n"), 1, (), True),
    )


def relay_facts(name: str) -> tuple[CommandSeen | ChunkSeen, ...]:
    """What the Relay records for a captured session, exchange by exchange."""
    r = Relay()
    seen: list[CommandSeen | ChunkSeen] = []
    for i, e in enumerate(load(name)["exchanges"]):
        for a in r.feed(ClientData(bytes.fromhex(e["c2s"]), 10 * i)):
            if isinstance(a, Record):
                seen += a.seen
                if a.durable:
                    r.feed(Committed(a.ticket))
        for read in e["s2c"]:
            rec = r.feed(ServerData(bytes.fromhex(read), 10 * i + 1))[0]
            assert isinstance(rec, Record)
            seen += rec.seen
    return tuple(seen)


def dump(d: Draft) -> str:
    return json.dumps(d.fields, ensure_ascii=False, sort_keys=True)


def only_json_types(value: Any) -> None:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            only_json_types(v)
    elif isinstance(value, list):
        for v in value:
            only_json_types(v)
    else:
        assert value is None or isinstance(value, str | int | bool), value
        assert not isinstance(value, float)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="recording level"):
        SessionRecorder(BASE, "everything")


@pytest.mark.parametrize("level", RECORDING_LEVELS)
def test_secrets_never_reach_entry_fields(level: str) -> None:
    drafts = SessionRecorder(BASE, level).drafts(secret_facts())
    assert len(drafts) == 10  # 5 query statements (one Query has two), 3 commands, 2 chunks
    for d in drafts:
        text = dump(d)
        assert SECRET not in text and SECRET_NUMBER not in text, text
        only_json_types(d.fields)
        for k, v in BASE.items():
            assert d.fields[k] == v
    payloads = [p for d in drafts for p in d.payloads]
    if level == "full":
        assert any(SECRET.encode() in data for _, data in payloads)
    else:
        assert payloads == []


def test_metadata_has_no_text() -> None:
    drafts = SessionRecorder(BASE, "metadata").drafts(secret_facts())
    commands = [d.fields["command"] for d in drafts if d.kind == "command"]
    assert [c["op"] for c in commands] == ["query"] * 5 + ["parse", "bind", "function"]
    for c in commands:
        if c["op"] in ("query", "parse"):
            assert c["text"] is None
            assert len(c["text_sha256"]) == 64
    assert all("payload" not in c for c in commands)


def test_redacted_has_no_literal_values() -> None:
    drafts = SessionRecorder(BASE, "redacted").drafts(secret_facts())
    texts = [d.fields["command"].get("text") for d in drafts if d.kind == "command"]
    assert texts == [
        "UPDATE users SET pw = ?, pin = ? WHERE id = ?",
        "SELECT ?",
        "SELECT ?",
        "<statement the SQL scanner rejects; text withheld>",
        "EXECUTE p(?, ?)",
        "SELECT $1 || ?",
        None,  # bind: parameters only as a digest
        "fn:1234",
    ]


def test_statement_digest_is_of_the_statement() -> None:
    (d,) = SessionRecorder(BASE, "redacted").drafts((query("SELECT 1;"),))
    assert d.fields["command"]["text_sha256"] == sha256(b"SELECT 1").hexdigest()


def test_multi_statement_query_parts() -> None:
    drafts = SessionRecorder(BASE, "full").drafts((query("SELECT 1; SELECT 'a;b'; SELECT 3"),))
    cmds = [d.fields["command"] for d in drafts]
    assert [c["part"] for c in cmds] == [[1, 3], [2, 3], [3, 3]]
    assert [c["seq"] for c in cmds] == [1, 2, 3]
    assert [c["text"] for c in cmds] == ["SELECT ?", "SELECT ?", "SELECT ?"]
    assert "payload" in cmds[0] and "payload" not in cmds[1] and "payload" not in cmds[2]
    assert len(drafts[0].payloads) == 1 and drafts[1].payloads == drafts[2].payloads == ()


def test_empty_query_is_one_command() -> None:
    (d,) = SessionRecorder(BASE, "redacted").drafts((query(""),))
    assert d.fields["command"]["text"] == "" and "part" not in d.fields["command"]


def test_full_payloads_are_addressed_by_sha256_of_the_raw_bytes() -> None:
    facts = secret_facts()
    drafts = SessionRecorder(BASE, "full").drafts(facts)
    for d in drafts:
        for digest, data in d.payloads:
            assert digest == sha256(data).hexdigest()
            entry = d.fields["command"] if d.kind == "command" else d.fields["chunk"]
            assert entry["payload"] == digest
    raws = {data for d in drafts for _, data in d.payloads}
    expected = {f.raw for f in facts if isinstance(f, CommandSeen)}
    expected |= {f.data for f in facts if isinstance(f, ChunkSeen)}
    assert raws == expected


def test_chunk_drafts() -> None:
    rec = SessionRecorder(BASE, "redacted")
    data = build(b"C", b"SELECT 3\x00")
    s2c = rec.chunk(ChunkSeen("s2c", 4, 99, data, 3, (b"SELECT 3",), True))
    assert (s2c.kind, s2c.ts_ns) == ("chunk", 99)
    assert s2c.fields["direction"] == "s2c"
    assert s2c.fields["outcome"] == "forwarded"
    assert s2c.fields["tags"] == ["SELECT 3"]
    digest = sha256(data).hexdigest()
    assert s2c.fields["chunk"] == {
        "seq": 4,
        "size": len(data),
        "sha256_in": digest,
        "sha256_out": digest,
        "rows": 3,
    }
    c2s = rec.chunk(ChunkSeen("c2s", 1, 5, b"d", 2, (), False))
    assert c2s.fields["outcome"] == "failed"
    assert c2s.fields["chunk"]["messages"] == 2 and "rows" not in c2s.fields["chunk"]
    assert "tags" not in c2s.fields


def test_event_drafts_carry_the_base() -> None:
    d = SessionRecorder(BASE, "metadata").event(7, "session.close", outcome="client terminated")
    assert d == Draft(7, "session.close", {**BASE, "outcome": "client terminated"})


@pytest.mark.parametrize("name", SESSIONS)
@pytest.mark.parametrize("level", RECORDING_LEVELS)
def test_captured_sessions(name: str, level: str) -> None:
    v = load(name)
    facts = relay_facts(name)
    drafts = SessionRecorder(BASE, level).drafts(facts)
    commands = [d.fields["command"] for d in drafts if d.kind == "command"]
    chunks = [d.fields for d in drafts if d.kind == "chunk"]
    assert sum(c["chunk"].get("rows", 0) for c in chunks) == v["expect"]["rows"]
    assert [t for c in chunks for t in c.get("tags", [])] == v["expect"]["tags"]
    assert sum(c["chunk"].get("messages", 0) for c in chunks) == v["expect"]["copy_in_messages"]
    bind_params = [
        p
        for c in v["expect"]["commands"]
        if c["op"] == "bind"
        for p in c["params"]
        if p and len(p) >= 12
    ]  # not "41": digests hold it
    for d in drafts:
        for p in bind_params:  # e.g. 'hunter2-secret' in session_extended
            assert bytes.fromhex(p).decode() not in dump(d)
    for c in commands:
        if c["op"] in ("query", "parse"):
            assert c["text"] is None if level == "metadata" else c["text"] is not None
    if level != "metadata":
        statements = [c["text"] for c in commands if c["op"] in ("query", "parse")]
        assert statements == [redact(s) for s in statements]  # already redacted: stable
        assert all("'" not in s for s in statements)
    assert all(d.payloads == () for d in drafts) == (level != "full")


def test_a_base_without_canonical_json_is_refused_up_front() -> None:
    """Command and chunk drafts are typed (the chain skips their type walk) because the
    base they are built on was checked once, at the recorder's creation."""
    with pytest.raises(ValueError, match="floats"):
        SessionRecorder({**BASE, "source": {"port": 1.5}}, "redacted")
    rec = SessionRecorder(dict(BASE), "redacted")
    assert all(d.typed for d in rec.drafts((query("SELECT 1"),)))
    assert rec.chunk(ChunkSeen("s2c", 1, 1, b"x", 0, (), True)).typed
    assert not rec.event(1, "session.open").typed
    rec.set_policy("v7")
    assert rec.drafts((query("SELECT 1"),))[0].fields["policy"] == "v7"
    rec.set_policy(None)
    assert "policy" not in rec.drafts((query("SELECT 1"),))[0].fields
