"""Roles, grants, token scopes and the session verdict."""

from __future__ import annotations

from ledgergate.core.config import Roles, parse_config
from ledgergate.core.identity import (
    GrantRule,
    SessionFacts,
    end_reason,
    granted,
    roles_of,
    within_scope,
)

H = 3600 * 10**9


def test_roles_from_names_and_groups() -> None:
    roles = parse_config(
        {
            "roles": {
                "admin": {"groups": ["platform"]},
                "auditor": {"identities": ["carol@example.com"]},
                "reviewer": {"groups": ["dba", "platform"]},
            }
        }
    ).roles
    assert roles_of("bob", ["eng"], roles) == {"user"}
    assert roles_of("ann", ["platform"], roles) == {"user", "admin", "reviewer"}
    assert roles_of("carol@example.com", [], roles) == {"user", "auditor"}
    assert roles_of("x", [], Roles()) == {"user"}


def test_grants_match_connection_globs_and_group_or_identity() -> None:
    rules = [
        GrantRule(("analytics-*",), groups=("data-science",)),
        GrantRule(("prod",), identities=("alice@example.com",)),
    ]
    assert granted("analytics-eu", "dana", ["data-science"], rules) is rules[0]
    assert granted("analytics-eu", "dana", ["eng"], rules) is None
    assert granted("prod", "alice@example.com", [], rules) is rules[1]
    assert granted("prod", "bob@example.com", ["data-science"], rules) is None
    # no grants configured at all: open, and the verdict says so
    open_rule = granted("prod", "bob", [], None)
    assert open_rule is not None and open_rule.origin == "open"
    # configured but empty: nothing is reachable
    assert granted("prod", "bob", [], []) is None


def test_token_scope() -> None:
    assert within_scope("prod", None)
    assert within_scope("analytics-eu", ("analytics-*",))
    assert not within_scope("prod", ("analytics-*",))
    assert not within_scope("prod", ())


def _facts(**kw: object) -> SessionFacts:
    base: dict[str, object] = {
        "session_id": "s1",
        "identity": "alice",
        "groups": ("eng",),
        "connection": "prod",
        "token_id": "tok_1",
        "started_ns": 0,
        "expires_ns": 8 * H,
        "max_session_ns": None,
    }
    base.update(kw)
    return SessionFacts(**base)  # type: ignore[arg-type]


def test_session_verdicts() -> None:
    f = _facts()
    assert end_reason(f, H) is None
    assert end_reason(f, 8 * H) == "token expired"
    assert end_reason(f, H, token_revoked=True) == "token revoked"
    assert end_reason(f, H, identity_disabled=True) == "identity disabled"
    assert end_reason(f, H, still_granted=False) == "grant removed"
    # revocation is named even when the token has also expired
    assert end_reason(f, 9 * H, token_revoked=True) == "token revoked"
    capped = _facts(max_session_ns=2 * H)
    assert capped.deadline() == (2 * H, "maximum session length reached")
    assert end_reason(capped, 2 * H) == "maximum session length reached"
    # a cap beyond the token's expiry changes nothing
    assert _facts(max_session_ns=10 * H).deadline() == (8 * H, "token expired")
