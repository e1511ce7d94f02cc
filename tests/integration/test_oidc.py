"""OIDC against a real provider (oidc-provider on node): device and browser logins end to
end, the resulting ID tokens verified, forged tokens refused, key rotation picked up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledgergate.core.identity import IdentityError
from ledgergate.services.login import DevicePrompt, LoginError, browser_login, device_login
from ledgergate.services.oidc import OidcVerifier
from tests.integration.oidc_idp import OidcIdp, new_key, oidc_idp_fixture

SCOPES = ["openid", "email", "profile"]


@pytest.fixture(scope="module")
def oidc_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIdp]:
    yield from oidc_idp_fixture(tmp_path_factory.mktemp("idp"))


def now_ns() -> int:
    return time.time_ns()


def test_device_login_end_to_end(oidc_idp: OidcIdp) -> None:
    prompts: list[DevicePrompt] = []
    errors: list[BaseException] = []

    def approve(prompt: DevicePrompt) -> None:
        prompts.append(prompt)
        assert prompt.verification_uri_complete is not None

        def run() -> None:
            try:
                oidc_idp.approve_device(prompt.verification_uri_complete or "", "alice")
            except BaseException as e:
                errors.append(e)

        threading.Thread(target=run, daemon=True).start()

    tokens = device_login(
        oidc_idp.issuer, oidc_idp.client_id, SCOPES, on_prompt=approve, timeout_s=60
    )
    assert not errors
    assert prompts[0].interval == 1 and prompts[0].user_code
    assert tokens.access_token and tokens.nonce is None
    with OidcVerifier(oidc_idp.settings()) as verifier:
        claims = verifier.verify(tokens.id_token, now_ns())
    assert claims.subject == "alice@example.com"
    assert claims.sub == "alice"
    assert claims.groups == ("dba", "eng")
    assert claims.issuer == oidc_idp.issuer and claims.source == "oidc"


def test_device_login_denied(oidc_idp: OidcIdp) -> None:
    def deny(prompt: DevicePrompt) -> None:
        def run() -> None:
            with httpx.Client(timeout=10) as http:
                page = http.get(prompt.verification_uri_complete or "")
                xsrf = page.text.split('name="xsrf" value="')[1].split('"')[0]
                http.post(
                    prompt.verification_uri,
                    data={"xsrf": xsrf, "user_code": prompt.user_code, "abort": "yes"},
                )

        threading.Thread(target=run, daemon=True).start()

    with pytest.raises(LoginError, match="denied"):
        device_login(oidc_idp.issuer, oidc_idp.client_id, SCOPES, on_prompt=deny, timeout_s=30)


def test_browser_login_end_to_end(oidc_idp: OidcIdp) -> None:
    seen: list[str] = []

    def open_url(url: str) -> None:
        seen.append(url)
        oidc_idp.complete_browser_login(url, "bob")

    tokens = browser_login(
        oidc_idp.issuer, oidc_idp.client_id, SCOPES, open_url=open_url, timeout_s=30
    )
    assert "code_challenge_method=S256" in seen[0]
    assert tokens.nonce
    with OidcVerifier(oidc_idp.settings()) as verifier:
        claims = verifier.verify(tokens.id_token, now_ns(), nonce=tokens.nonce)
        assert (claims.subject, claims.groups) == ("bob@example.com", ("ops",))
        with pytest.raises(IdentityError) as e:
            verifier.verify(tokens.id_token, now_ns(), nonce="another-login")
        assert e.value.reason == "wrong nonce"


def test_browser_login_refused_without_loopback_answer(oidc_idp: OidcIdp) -> None:
    with pytest.raises(LoginError, match="timed out"):
        browser_login(
            oidc_idp.issuer, oidc_idp.client_id, SCOPES, open_url=lambda url: None, timeout_s=1
        )


def _forged_cases(idp: OidcIdp) -> list[tuple[str, str]]:
    now = int(time.time())
    stranger = new_key("stranger")
    good = idp.forge(idp.claims())
    head, body, sig = good.split(".")
    return [
        (idp.forge(idp.claims(aud="someone-else")), "wrong audience"),
        (idp.forge(idp.claims(iss="http://127.0.0.1:1")), "wrong issuer"),
        (idp.forge(idp.claims(iat=now - 900, exp=now - 600)), "token expired"),
        (idp.forge(idp.claims(nbf=now + 600)), "token not yet valid"),
        (idp.forge(idp.claims(iat=now + 600)), "issued in the future"),
        (idp.forge(idp.claims(), alg="none"), "algorithm not allowed"),
        (idp.forge(idp.claims(), alg="HS256"), "algorithm not allowed"),
        (idp.forge(idp.claims(), key=stranger), "unknown key id"),
        (f"{head}.{body}.{sig[:-6]}AAAAAA", "bad signature"),
        (idp.forge(idp.claims(), key=stranger, kid=idp.key.kid), "bad signature"),
    ]


def test_forged_tokens_are_refused(oidc_idp: OidcIdp) -> None:
    with OidcVerifier(oidc_idp.settings()) as verifier:
        assert verifier.verify(oidc_idp.forge(oidc_idp.claims()), now_ns()).subject == (
            "alice@example.com"
        )
        for token, reason in _forged_cases(oidc_idp):
            with pytest.raises(IdentityError) as e:
                verifier.verify(token, now_ns())
            assert e.value.reason == reason, (reason, str(e.value))
            assert token not in str(e.value)


def test_key_rotation_on_the_same_verifier(tmp_path: Path) -> None:
    with OidcIdp(tmp_path) as idp, OidcVerifier(idp.settings()) as verifier:
        old = idp.key
        assert verifier.verify(idp.forge(idp.claims()), now_ns()).sub == "alice"
        idp.restart_with_new_key()
        assert idp.key.kid != old.kid
        assert verifier.verify(idp.forge(idp.claims("bob")), now_ns()).sub == "bob"
        # The retired key went with the refetched set.
        with pytest.raises(IdentityError) as e:
            verifier.verify(idp.forge(idp.claims(), key=old), now_ns())
        assert e.value.reason == "unknown key id"
