"""Gateway tokens: minting, authentication, expiry, revocation, and what the ledger
may (never) say about them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ledgergate.services import tokens
from ledgergate.services.audit import verify_store
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store import Store
from tests.services.synth import T0, Ledger

H = 3600 * 10**9
DAY = 24 * H


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path)


def _mint(
    led: Ledger,
    store: Store,
    *,
    writer: LedgerWriter | None = None,
    identity: str = "alice",
    kind: str = "user",
    ttl_ns: int = 8 * H,
) -> tuple[str, tokens.TokenRecord]:
    w = writer or led.writer("cli@gw", shared=True, owns_store=False)
    return tokens.create_token(
        store, w, identity=identity, kind=kind, ttl_ns=ttl_ns, now_ns=T0, created_by="cli:test"
    )


def test_create_and_authenticate(led: Ledger) -> None:
    st = led.store()
    tok, rec = _mint(led, st)
    assert re.fullmatch(r"lgt_[A-Za-z0-9_-]{43}", tok)
    assert rec.id.startswith("tok_") and rec.expires_ns == T0 + 8 * H
    assert rec.created_by == "cli:test" and rec.status(T0) == "active"
    r = tokens.authenticate(st, tok, T0 + H)
    assert r.ok and r.reason is None and r.token_id == rec.id
    assert r.identity == {"kind": "user", "subject": "alice", "groups": []}
    (listed,) = tokens.list_tokens(st)
    assert listed.last_used_ns == T0 + H and listed.id == rec.id
    assert "token_hash" not in listed.as_dict() and listed.as_dict(T0)["status"] == "active"
    stored = st.token_by_id(rec.id)
    assert stored is not None and stored.token_hash == hashlib.sha256(tok.encode()).digest()


def test_service_tokens_and_unknown(led: Ledger) -> None:
    st = led.store()
    tok, _rec = _mint(led, st, identity="ci-deployer", kind="service", ttl_ns=30 * DAY)
    r = tokens.authenticate(st, tok, T0)
    assert r.ok and r.identity == {"kind": "service", "subject": "ci-deployer", "groups": []}
    for bad in ("", "lgt_", tok[:-1], tok + "x", "lgt_" + "A" * 43, "Bearer " + tok, "x" * 10_000):
        r = tokens.authenticate(st, bad, T0)
        assert (r.ok, r.reason, r.identity, r.token_id) == (False, "unknown token", None, None)


def test_expired(led: Ledger) -> None:
    st = led.store()
    tok, rec = _mint(led, st, ttl_ns=H)
    assert tokens.authenticate(st, tok, T0 + H - 1).ok
    r = tokens.authenticate(st, tok, T0 + H)
    assert (r.ok, r.reason, r.token_id) == (False, "token expired", rec.id)
    assert tokens.list_tokens(st)[0].status(T0 + H) == "expired"


def test_revoked(led: Ledger) -> None:
    st = led.store()
    w = led.writer("cli@gw", shared=True, owns_store=False)
    tok, rec = _mint(led, st, writer=w)
    assert tokens.revoke_token(st, w, rec.id, T0 + 5, "cli:admin") is True
    r = tokens.authenticate(st, tok, T0 + 6)
    assert (r.ok, r.reason) == (False, "token revoked")
    assert tokens.revoke_token(st, w, rec.id, T0 + 7, "cli:admin") is False
    with pytest.raises(tokens.TokenError, match="no token"):
        tokens.revoke_token(st, w, "tok_nope", T0, "cli:admin")
    with pytest.raises(tokens.TokenError, match="not the token") as ei:
        tokens.revoke_token(st, w, tok, T0, "cli:admin")
    assert tok not in str(ei.value)
    # revoked wins over expired
    assert tokens.authenticate(st, tok, T0 + 100 * DAY).reason == "token revoked"
    assert tokens.list_tokens(st)[0].status(T0 + 6) == "revoked"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ttl_ns": 0}, "expire"),
        ({"ttl_ns": -5}, "expire"),
        ({"ttl_ns": 367 * DAY}, "366 days"),
        ({"kind": "admin"}, "kind"),
        ({"identity": ""}, "identity"),
        ({"identity": "a\nb"}, "identity"),
        ({"identity": " alice"}, "identity"),
        ({"identity": "x" * 201}, "identity"),
    ],
)
def test_bad_requests(led: Ledger, kw: dict[str, Any], match: str) -> None:
    st = led.store()
    with pytest.raises(tokens.TokenError, match=match):
        _mint(led, st, **kw)
    assert tokens.list_tokens(st) == []


def test_max_ttl_is_allowed(led: Ledger) -> None:
    st = led.store()
    _, rec = _mint(led, st, ttl_ns=tokens.MAX_TTL_NS)
    assert rec.expires_ns == T0 + 366 * DAY


def test_admin_actions_are_ledger_entries_without_secrets(led: Ledger) -> None:
    st = led.store()
    w = led.writer("cli@gw", shared=True, owns_store=False)
    minted = [_mint(led, st, writer=w, identity=f"user{i}") for i in range(3)]
    tokens.revoke_token(st, w, minted[1][1].id, T0 + 1, "cli:admin")
    w.close(T0 + 2)
    rows = list(st.iter_entries("cli@gw"))
    docs = [json.loads(c) for _, c, _ in rows]
    assert [d["kind"] for d in docs] == ["token.created"] * 3 + ["token.revoked"]
    created = docs[0]
    assert created["token_id"] == minted[0][1].id
    assert created["identity"] == {"kind": "user", "subject": "user0", "groups": []}
    assert created["expires_ns"] == T0 + 8 * H and created["by"] == "cli:test"
    assert docs[3]["token_id"] == minted[1][1].id and docs[3]["by"] == "cli:admin"
    # neither the token nor its hash, in any encoding, in any entry or checkpoint
    blob = b"".join(c for _, c, _ in rows) + b"".join(
        c.note.encode() for c in st.checkpoints("cli@gw")
    )
    for tok, _ in minted:
        h = hashlib.sha256(tok.encode()).digest()
        for needle in (
            tok.encode(),
            tok[4:].encode(),
            h,
            h.hex().encode(),
            base64.b64encode(h),
            base64.urlsafe_b64encode(h).rstrip(b"="),
        ):
            assert needle not in blob
    assert verify_store(st, [led.signer.verifier]).ok


def test_writer_on_another_store_handle(led: Ledger) -> None:
    st = led.store()
    w = led.writer("cli@gw", shared=True)  # its own connection to the same file
    tok, rec = _mint(led, st, writer=w)
    assert tokens.authenticate(st, tok, T0).ok
    assert tokens.revoke_token(st, w, rec.id, T0, "x")
    assert not tokens.authenticate(st, tok, T0).ok
    assert w.size == 2
    w.close(T0)


def test_failed_ledger_write_creates_no_token(led: Ledger) -> None:
    st = led.store()
    w = led.writer("cli@gw", shared=True, owns_store=False)
    w.close(T0)  # a closed writer cannot record the creation
    with pytest.raises(Exception, match="closed"):
        _mint(led, st, writer=w)
    assert tokens.list_tokens(st) == []
