"""Admission of a presented password on a connection, re-checks of open sessions, and
the identity use-cases behind them (logins, service accounts, disabling, API grants)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledgergate.core.config import parse_config
from ledgergate.core.identity import Claims, IdentityError, SessionFacts
from ledgergate.services import identities, tokens
from ledgergate.services.access import AccessControl
from ledgergate.services.audit import verify_store
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store import Store
from tests.services.synth import T0, Ledger

H = 3600 * 10**9


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path)


def _writer(led: Ledger) -> LedgerWriter:
    return led.writer("api@gw", shared=True, owns_store=False)


def _mint(st: Store, w: LedgerWriter, **kw: object) -> str:
    args: dict[str, object] = {
        "identity": "ci-bot",
        "kind": "service",
        "ttl_ns": 8 * H,
        "now_ns": T0,
        "created_by": "admin",
    }
    args.update(kw)
    tok, _ = tokens.create_token(st, w, **args)  # type: ignore[arg-type]
    return tok


GRANTS = {
    "grants": [
        {"connections": ["analytics-*"], "groups": ["data-science"]},
        {"connections": ["prod"], "identities": ["alice@example.com"]},
    ]
}


def test_without_grants_any_valid_token_is_admitted(led: Ledger) -> None:
    st = led.store()
    tok = _mint(st, _writer(led))
    ac = AccessControl(parse_config({}), st)
    adm = ac.admit(tok, "prod", T0 + 1)
    assert adm.ok and adm.grant == "open" and adm.identity is not None
    assert adm.identity["subject"] == "ci-bot" and adm.expires_ns == T0 + 8 * H
    bad = ac.admit("lgt_" + "x" * 43, "prod", T0 + 1)
    assert not bad.ok and not bad.denied and bad.reason == "unknown token"


def test_grants_decide_and_denials_are_told_apart(led: Ledger) -> None:
    st = led.store()
    w = _writer(led)
    ds = _mint(st, w, identity="dana", kind="user", groups=("data-science",))
    ac = AccessControl(parse_config(GRANTS), st)
    assert ac.admit(ds, "analytics-eu", T0 + 1).ok
    no = ac.admit(ds, "prod", T0 + 1)
    assert not no.ok and no.denied and no.reason == "no grant for this connection"
    # a token scoped to one connection is refused elsewhere even where a grant allows
    scoped = _mint(
        st, w, identity="dana", kind="user", groups=("data-science",), connections=("x-*",)
    )
    sc = ac.admit(scoped, "analytics-eu", T0 + 1)
    assert sc.denied and sc.reason == "the token is not valid for this connection"
    # an API grant adds to the file's
    g = identities.add_grant(
        st, w, connections=["prod"], groups=["data-science"], identities=[], now_ns=T0, by="a"
    )
    assert ac.admit(ds, "prod", T0 + 1).grant == g.id
    assert identities.remove_grant(st, w, g.id, now_ns=T0, by="a")
    assert ac.admit(ds, "prod", T0 + 1).denied
    # with no file grants, one API grant closes the open deployment
    ac_open = AccessControl(parse_config({}), st)
    assert ac_open.admit(ds, "prod", T0 + 1).grant == "open"
    identities.add_grant(st, w, connections=["z"], groups=[], identities=["q"], now_ns=T0, by="a")
    assert ac_open.admit(ds, "prod", T0 + 1).denied


def test_disabled_identity_is_refused_and_its_sessions_end(led: Ledger) -> None:
    st = led.store()
    w = _writer(led)
    tok = _mint(st, w)
    ac = AccessControl(parse_config({}), st)
    adm = ac.admit(tok, "prod", T0 + 1)
    facts = SessionFacts("s1", "ci-bot", (), "prod", adm.token_id, T0, adm.expires_ns, None)
    assert ac.recheck([facts], T0 + 2) == {}
    e0 = ac.epoch()
    assert identities.set_disabled(st, w, "ci-bot", disabled=True, now_ns=T0, by="admin")
    assert ac.epoch() > e0
    assert not identities.set_disabled(st, w, "ci-bot", disabled=True, now_ns=T0, by="admin")
    again = ac.admit(tok, "prod", T0 + 3)
    assert not again.ok and not again.denied and again.reason == "identity disabled"
    assert ac.recheck([facts], T0 + 3) == {"s1": "identity disabled"}
    assert identities.set_disabled(st, w, "ci-bot", disabled=False, now_ns=T0, by="admin")
    assert ac.recheck([facts], T0 + 4) == {}


def test_recheck_reasons(led: Ledger) -> None:
    st = led.store()
    w = _writer(led)
    tok = _mint(st, w, identity="alice@example.com", kind="user")
    ac = AccessControl(parse_config(GRANTS), st)
    adm = ac.admit(tok, "prod", T0 + 1)
    assert adm.ok
    f = SessionFacts("s", "alice@example.com", (), "prod", adm.token_id, T0, adm.expires_ns, H)
    assert ac.recheck([f], T0 + H // 2) == {}
    assert ac.recheck([f], T0 + H) == {"s": "maximum session length reached"}
    f2 = SessionFacts("t", "alice@example.com", (), "prod", adm.token_id, T0, adm.expires_ns, None)
    assert ac.recheck([f2], T0 + 8 * H) == {"t": "token expired"}
    assert adm.token_id is not None
    tokens.revoke_token(st, w, adm.token_id, T0 + 5, "admin")
    assert ac.recheck([f2], T0 + 6) == {"t": "token revoked"}
    gone = SessionFacts("u", "alice@example.com", (), "analytics-x", None, T0, T0 + H, None)
    assert ac.recheck([gone], T0 + 6) == {"u": "grant removed"}


def test_jwt_passwords_go_to_the_verifier(led: Ledger) -> None:
    st = led.store()
    seen: list[str] = []

    def verify(tok: str, now: int) -> Claims:
        seen.append(tok)
        if tok != "a.b.c":
            raise IdentityError("the token's audience is not ledgergate's", "wrong audience")
        return Claims("dana@example.com", "s-1", ("data-science",), None, now + H, "iss", "oidc")

    ac = AccessControl(
        parse_config(GRANTS), st, verify_jwt=verify, looks_like_jwt=lambda s: s.count(".") == 2
    )
    ok = ac.admit("a.b.c", "analytics-1", T0)
    assert ok.ok and ok.via == "jwt" and ok.token_id is None and ok.expires_ns == T0 + H
    row = st.get_identity("dana@example.com")
    assert row is not None and row.source == "jwt" and row.groups == ("data-science",)
    bad = ac.admit("x.y.z", "analytics-1", T0)
    assert not bad.ok and bad.reason is not None
    assert bad.reason.startswith("IdP token refused (wrong audience): ")
    assert not ac.admit("not-a-token", "analytics-1", T0).ok
    assert seen == ["a.b.c", "x.y.z"]


def test_login_mints_a_session_token_bound_to_groups(led: Ledger) -> None:
    st = led.store()
    w = _writer(led)
    c = Claims(
        "ann@example.com",
        "sub-9",
        ("dba", "eng"),
        "ann@example.com",
        T0 + 300 * 10**9,
        "https://idp",
        "oidc",
    )
    tok, rec = identities.login(st, w, c, now_ns=T0, session_ttl_ns=8 * H, via="oidc-device")
    assert rec.purpose == "session" and rec.groups == ("dba", "eng")
    assert rec.expires_ns == T0 + 8 * H
    r = tokens.authenticate(st, tok, T0 + 1)
    assert r.ok and r.identity == {
        "kind": "user",
        "subject": "ann@example.com",
        "groups": ["dba", "eng"],
    }
    identities.set_disabled(st, w, "ann@example.com", disabled=True, now_ns=T0, by="scim")
    with pytest.raises(IdentityError, match="disabled"):
        identities.login(st, w, c, now_ns=T0 + 2, session_ttl_ns=8 * H, via="oidc-device")
    w.close(T0 + 10)
    kinds = [json.loads(e.canonical)["kind"] for e in st.find_entries()]
    assert "login.fail" in kinds and "admin.identity.disable" in kinds
    assert tok not in b"".join(e.canonical for e in st.find_entries()).decode()
    assert verify_store(st, [led.signer.verifier]).ok


def test_service_accounts_and_stale_report(led: Ledger) -> None:
    st = led.store()
    w = _writer(led)
    identities.create_service_account(
        st, w, name="etl-bot", groups=["etl"], description="nightly", now_ns=T0, by="admin"
    )
    with pytest.raises(IdentityError, match="exists"):
        identities.create_service_account(
            st, w, name="etl-bot", groups=[], description=None, now_ns=T0, by="admin"
        )
    _mint(st, w, identity="etl-bot", ttl_ns=90 * 24 * H)
    report = identities.stale_identities(
        st, now_ns=T0 + 40 * 24 * H, session_longer_than_ns=H, token_older_than_ns=30 * 24 * H
    )
    assert [(s.identity, s.reason) for s in report] == [("etl-bot", "old token")]
    assert (
        identities.stale_identities(
            st, now_ns=T0 + 10 * 24 * H, session_longer_than_ns=H, token_older_than_ns=30 * 24 * H
        )
        == []
    )


def test_auditors_never_reach_data(led: Ledger) -> None:
    st = led.store()
    w = _writer(led)
    carol = _mint(st, w, identity="carol", kind="user", groups=("audit", "eng"))
    cfg = parse_config({**GRANTS, "roles": {"auditor": {"groups": ["audit"]}}})
    adm = AccessControl(cfg, st).admit(carol, "prod", T0 + 1)
    assert adm.denied and adm.reason == "the auditor role reads evidence, never data"
