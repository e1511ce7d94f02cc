"""SAML logins end to end: a real pysaml2 IdP process (tests/integration/saml_idp.py)
signs assertions for the gateway's SP, driven by a scripted browser. Proves a login
yields the user's claims, and that unsigned, misdirected, expired, premature, tampered,
unsolicited and replayed responses are each refused with their reason."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledgergate.core.identity import IdentityError
from ledgergate.services import saml
from ledgergate.services.saml import SamlServiceProvider
from tests.integration.saml_idp import SESSION_S, SamlIdp, login

RELAY = "http://127.0.0.1:45678/callback"
Factory = Callable[..., tuple[SamlIdp, SamlServiceProvider]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SamlIdp, SamlServiceProvider]]:
    """A well-behaved IdP and an SP trusting it, shared by the module."""
    with SamlIdp(tmp_path_factory.mktemp("saml")) as idp:
        yield idp, idp.service_provider()


@pytest.fixture
def idp_factory(tmp_path: Path) -> Iterator[Factory]:
    """``idp_factory(**options)``: a fresh IdP with the bad-case options and its SP."""
    started: list[SamlIdp] = []

    def make(**options: Any) -> tuple[SamlIdp, SamlServiceProvider]:
        idp = SamlIdp(tmp_path / f"idp{len(started)}", **options)
        started.append(idp)
        idp.start()
        return idp, idp.service_provider()

    try:
        yield make
    finally:
        for idp in started:
            idp.stop()


def _refused(sp: SamlServiceProvider, response: str, relay: str | None = RELAY) -> str:
    with pytest.raises(IdentityError) as e:
        sp.acs(response, relay)
    assert "Assertion" not in str(e.value) and len(str(e.value)) < 200
    return e.value.reason


def test_login_returns_the_users_claims(pair: tuple[SamlIdp, SamlServiceProvider]) -> None:
    idp, sp = pair
    acs_url, response, relay = login(sp.login_url(RELAY), "alice")
    assert acs_url == sp.acs_url
    assert relay == RELAY
    claims = sp.acs(response, relay)
    assert claims.subject == "alice" and claims.sub == "alice"
    assert claims.groups == ("dba", "eng")
    assert claims.email == "alice@example.com"
    assert claims.issuer == idp.entity_id
    assert claims.source == "saml"
    # the assertion's SessionNotOnOrAfter, an hour after issue
    assert abs(claims.expires_ns - (time.time_ns() + SESSION_S * 10**9)) < 30 * 10**9


def test_username_attribute_names_the_identity(pair: tuple[SamlIdp, SamlServiceProvider]) -> None:
    idp, _ = pair
    sp = idp.service_provider(username_attribute="mail")
    _, response, relay = login(sp.login_url(""), "bob")
    claims = sp.acs(response, relay)
    assert (claims.subject, claims.sub, claims.groups) == ("bob@example.com", "bob", ("ops",))


def test_a_signed_response_around_a_signed_assertion_is_accepted(idp_factory: Factory) -> None:
    _, sp = idp_factory(sign_response=True)
    _, response, relay = login(sp.login_url(RELAY), "alice")
    assert sp.acs(response, relay).subject == "alice"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"sign_assertion": False}, "unsigned assertion"),
        ({"sign_assertion": False, "sign_response": True}, "unsigned assertion"),
        ({"audience_override": "https://other.example.com/saml"}, "wrong audience"),
        ({"clock_offset_s": -3600}, "assertion expired"),
        ({"clock_offset_s": 3600}, "not yet valid"),
        ({"tamper": True}, "bad signature"),
    ],
    ids=["unsigned", "unsigned-in-signed-response", "audience", "expired", "future", "tampered"],
)
def test_bad_assertions_are_refused(
    idp_factory: Factory, options: dict[str, Any], reason: str
) -> None:
    _, sp = idp_factory(**options)
    _, response, relay = login(sp.login_url(RELAY), "alice")
    assert _refused(sp, response, relay) == reason


def test_clock_offset_within_skew_is_accepted(idp_factory: Factory) -> None:
    _, sp = idp_factory(clock_offset_s=30)  # not-before 30 s ahead, skew 60 s
    _, response, relay = login(sp.login_url(RELAY), "alice")
    assert sp.acs(response, relay).subject == "alice"


def test_a_response_to_a_request_this_sp_did_not_send_is_refused(
    pair: tuple[SamlIdp, SamlServiceProvider],
) -> None:
    idp, sp = pair
    other = idp.service_provider()  # same configuration, its own outstanding requests
    _, response, relay = login(other.login_url(RELAY), "alice")
    assert _refused(sp, response, relay) == "unsolicited response"


def test_a_replayed_response_is_refused(pair: tuple[SamlIdp, SamlServiceProvider]) -> None:
    _, sp = pair
    _, response, relay = login(sp.login_url(RELAY), "alice")
    assert sp.acs(response, relay).subject == "alice"
    assert _refused(sp, response, relay) == "replayed response"


def test_a_login_that_took_too_long_is_unsolicited(
    pair: tuple[SamlIdp, SamlServiceProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sp = pair
    _, response, relay = login(sp.login_url(RELAY), "alice")
    monkeypatch.setattr(saml, "OUTSTANDING_TTL_NS", 0)
    assert _refused(sp, response, relay) == "unsolicited response"


def test_a_changed_relay_state_is_refused_and_uses_up_the_request(
    pair: tuple[SamlIdp, SamlServiceProvider],
) -> None:
    _, sp = pair
    _, response, _ = login(sp.login_url(RELAY), "alice")
    assert _refused(sp, response, "http://127.0.0.1:1/elsewhere") == "relay state mismatch"
    assert _refused(sp, response, RELAY) == "replayed response"


def test_an_idp_signing_with_an_unknown_key_is_refused(idp_factory: Factory) -> None:
    idp, sp = idp_factory()
    idp.rotate_key()  # same entity id and port, a key the SP's metadata does not list
    _, response, relay = login(sp.login_url(RELAY), "alice")
    assert _refused(sp, response, relay) == "bad signature"


def test_the_idp_checks_the_sps_request_signature(
    pair: tuple[SamlIdp, SamlServiceProvider],
) -> None:
    _, sp = pair
    url = sp.login_url(RELAY).replace("Signature=", "Signature=AAAA")
    with pytest.raises(RuntimeError, match="400"):
        login(url, "alice")
