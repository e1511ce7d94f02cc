"""Tokens, identities, grants and the access epoch, on both engines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledgergate.store import GrantRow, IdentityRow, TokenRow, open_store
from ledgergate.store.sqlite_schema import MIGRATIONS
from tests.store.conftest import Opener


def _url(p: Path) -> str:
    return f"sqlite://{p}"


def _token(i: int, **kw: object) -> TokenRow:
    base: dict[str, object] = {
        "id": f"tok_{i}",
        "token_hash": bytes([i]) * 32,
        "identity": "ci-bot",
        "kind": "service",
        "created_ns": i,
        "expires_ns": 10**18,
        "revoked_ns": None,
        "last_used_ns": None,
        "created_by": "admin",
    }
    base.update(kw)
    return TokenRow(**base)  # type: ignore[arg-type]


def test_token_columns_round_trip_and_revocation_raises_the_epoch(open_st: Opener) -> None:
    st = open_st()
    t1 = _token(1, purpose="session", groups=("dba", "eng"), connections=("prod-*",))
    t2 = _token(2, identity="alice", kind="user", rotated_from="tok_1")
    with st.transaction():
        st.insert_token(t1)
        st.insert_token(t2)
    assert st.token_by_id("tok_1") == t1
    assert st.token_by_hash(bytes([2]) * 32) == t2
    assert st.list_tokens("alice") == [t2]
    assert [t.id for t in st.list_tokens()] == ["tok_1", "tok_2"]
    assert {t.id for t in st.tokens_by_ids(["tok_2", "tok_1", "nope", "tok_2"])} == {
        "tok_1",
        "tok_2",
    }
    e0 = st.access_epoch()
    assert st.revoke_token("tok_1", 5) is True
    assert st.access_epoch() == e0 + 1
    assert st.revoke_token("tok_1", 6) is False  # already revoked: no change, no bump
    assert st.access_epoch() == e0 + 1
    st.close()


def test_identities_and_grants(open_st: Opener) -> None:
    st = open_st()
    alice = IdentityRow(
        name="alice@example.com",
        kind="user",
        source="scim",
        email="alice@example.com",
        groups=("eng",),
        scim_id="u-1",
        external_id="00u1",
        created_ns=1,
        updated_ns=1,
    )
    st.put_identity(alice)
    assert st.get_identity("alice@example.com") == alice
    assert st.identity_by_scim_id("u-1") == alice
    assert st.identities_by_names(["alice@example.com", "bob"]) == [alice]
    e0 = st.access_epoch()
    st.put_identity(alice.__class__(**{**_fields(alice), "last_login_ns": 9}))
    assert st.access_epoch() == e0  # an update that disables nothing moves nothing
    st.put_identity(alice.__class__(**{**_fields(alice), "disabled_ns": 10, "disabled_by": "x"}))
    assert st.access_epoch() == e0 + 1
    got = st.get_identity("alice@example.com")
    assert got is not None and got.disabled_ns == 10 and got.last_login_ns is None
    g = GrantRow("gr_1", ("analytics*",), ("ds",), (), 3, "admin")
    st.insert_grant(g)
    assert st.list_grants() == [g]
    assert st.delete_grant("gr_1") is True
    assert st.access_epoch() == e0 + 2
    assert st.delete_grant("gr_1") is False
    assert st.delete_identity("alice@example.com") is True
    assert st.list_identities() == []
    st.close()


def _fields(row: IdentityRow) -> dict[str, object]:
    return {f: getattr(row, f) for f in row.__slots__}


def test_a_version_1_database_is_migrated_with_its_tokens(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_ns INTEGER)")
    raw.executescript(MIGRATIONS[0][1])
    raw.execute("INSERT INTO schema_version VALUES (1, 0)")
    raw.execute(
        "INSERT INTO tokens VALUES ('tok_a', ?, 'bob', 'user', 1, 99, NULL, NULL, 'cli')",
        (b"h" * 32,),
    )
    raw.commit()
    raw.close()
    st = open_store(_url(db))
    t = st.token_by_id("tok_a")
    assert t is not None
    assert (t.identity, t.purpose, t.groups, t.connections) == ("bob", "api", (), None)
    st.close()
