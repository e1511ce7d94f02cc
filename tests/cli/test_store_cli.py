"""``ledgergate store``: migrating by hand, and moving an embedded SQLite store with all
it holds into PostgreSQL, verified there; a damaged source or a used destination is
refused. Runs on both engines whatever LEDGERGATE_TEST_STORE says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ledgergate.cli.main import app
from ledgergate.services import tokens
from ledgergate.services.config import load_settings
from ledgergate.services.keys import (
    PayloadCipher,
    load_or_create_ledger_signer,
    load_or_create_payload_key,
)
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store import ReviewRow, open_store
from ledgergate.store.sqlite_schema import SCHEMA_VERSION
from tests.services.synth import T0, result, session_drafts
from tests.storedb import StoreDb
from tests.storeserver import STORE_PASSWORD, fresh_store_url

runner = CliRunner()


def run(cfg: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "-c", str(cfg)])


def _config(tmp_path: Path, name: str, store: str | None = None) -> Path:
    p = tmp_path / f"{name}.yaml"
    text = "data_dir: data\ngateway_name: gw\n"
    if store:
        text += f"store: {store}\nstore_password: env:LG_TEST_STORE_PW\n"
    p.write_text(text)
    return p


@pytest.fixture
def pg_url(monkeypatch: pytest.MonkeyPatch) -> str:
    url, _ = fresh_store_url("postgresql")
    monkeypatch.setenv("LG_TEST_STORE_PW", STORE_PASSWORD)
    return url


def _fill(cfg: Path) -> str:
    """An embedded store with a bit of everything; returns a service token."""
    r = run(cfg, "token", "create", "--identity", "etl", "--kind", "service", "--ttl", "8h")
    assert r.exit_code == 0, r.output
    tok = r.stdout.splitlines()[-1]
    assert run(cfg, "grants", "add", "--connection", "app", "--group", "eng").exit_code == 0
    assert run(cfg, "identities", "disable", "mallory", "--reason", "left").exit_code == 0
    s = load_settings(cfg)
    signer = load_or_create_ledger_signer(s.ledger_key, s.key_name)
    cipher = PayloadCipher(load_or_create_payload_key(s.payload_key))
    st = s.open_store()
    w = LedgerWriter.open(st, s.stream, signer, cipher=cipher, checkpoint_every_entries=5)
    rows = result([("id", 23)], [[str(i)] for i in range(5)])
    for n in range(4):
        drafts = session_drafts(
            f"s_{n}", "alice", "app", T0 + n * 10**11, "full", [("SELECT 1", [rows, rows])]
        )
        w.append(drafts, drafts[-1].ts_ns)
    w.close(T0 + 10**12)  # closes its store too
    st = s.open_store()
    with st.transaction():
        st.put_review(
            ReviewRow("rv_1", "command", "pending", "app", "alice", "b" * 64, 1, 1, 9, "{}")
        )
        st.add_outbox("rv_1", "requested", "{}", 1)
    st.close()
    return tok


def test_migrate_says_the_schema_version(tmp_path: Path, pg_url: str) -> None:
    for cfg in (_config(tmp_path, "a"), _config(tmp_path, "b", pg_url)):
        r = run(cfg, "store", "migrate")
        assert r.exit_code == 0, r.output
        assert f"schema version {SCHEMA_VERSION}, up to date" in r.stdout
        assert STORE_PASSWORD not in r.output


def test_copy_sqlite_to_postgresql_and_verify(tmp_path: Path, pg_url: str) -> None:
    embedded = _config(tmp_path, "embedded")
    tok = _fill(embedded)
    before = json.loads(run(embedded, "sessions", "list", "--json").stdout)
    shared = _config(tmp_path, "shared", pg_url)
    src = f"sqlite://{tmp_path / 'data' / 'ledgergate.db'}"
    r = run(shared, "store", "copy", "--from", src)
    assert r.exit_code == 0, r.output
    assert "ledger in postgresql://" in r.stdout and "verified:" in r.stdout
    assert STORE_PASSWORD not in r.output

    # everything reads the same from the new store
    assert run(shared, "audit", "verify").exit_code == 0
    after = json.loads(run(shared, "sessions", "list", "--json").stdout)
    assert after == before and len(after) == 4
    a, b = open_store(src), open_store(pg_url, password=STORE_PASSWORD)
    for st_a, st_b in ((a, b),):
        assert st_a.streams() == st_b.streams()
        for stream in st_a.streams():
            assert list(st_a.iter_entries(stream)) == list(st_b.iter_entries(stream))
            assert st_a.checkpoints(stream) == st_b.checkpoints(stream)
            assert st_a.get_stream_state(stream) == st_b.get_stream_state(stream)
        assert list(st_a.iter_payloads()) == list(st_b.iter_payloads())
        assert st_a.list_tokens() == st_b.list_tokens()
        assert st_a.list_identities() == st_b.list_identities()
        assert st_a.list_grants() == st_b.list_grants()
        assert st_a.list_reviews() == st_b.list_reviews()
        assert st_a.list_outbox() == st_b.list_outbox()
    assert len(list(b.iter_payloads())) > 0
    row = b.list_tokens("etl")[0]
    assert tokens.authenticate(b, tok, row.created_ns + 1).ok
    # new outbox rows continue after the copied ids
    with b.transaction():
        new_id = b.add_outbox("rv_1", "approved", "{}", 2)
    assert new_id > max(o.id for o in a.list_outbox())
    a.close()
    b.close()

    # a second copy into the same (now used) store is refused
    r = run(shared, "store", "copy", "--from", src)
    assert r.exit_code == 1 and "not empty" in r.output


def test_a_damaged_source_stops_the_copy(tmp_path: Path, pg_url: str) -> None:
    embedded = _config(tmp_path, "embedded")
    _fill(embedded)
    with StoreDb(f"sqlite://{tmp_path / 'data' / 'ledgergate.db'}") as db:
        found = db.entry("gateway@gw", 3)
        assert found is not None and b"alice" in found[0]
        db.set_entry("gateway@gw", 3, found[0].replace(b"alice", b"alicE"))
        db.commit()
    shared = _config(tmp_path, "shared", pg_url)
    src = f"sqlite://{tmp_path / 'data' / 'ledgergate.db'}"
    r = run(shared, "store", "copy", "--from", src)
    assert r.exit_code == 1
    assert "gateway@gw entry 3 is damaged" in r.output and "audit verify" in r.output


def test_copy_refuses_one_store_as_both_ends(tmp_path: Path) -> None:
    embedded = _config(tmp_path, "embedded")
    _fill(embedded)
    src = f"sqlite://{tmp_path / 'data' / 'ledgergate.db'}"
    r = run(embedded, "store", "copy", "--from", src)
    assert r.exit_code == 2 and "same store" in r.output
