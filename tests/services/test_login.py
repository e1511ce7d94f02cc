"""services.login: device polling rules and the loopback code flow, against an in-process
provider (httpx MockTransport) and a fake clock. The real provider is in
tests/integration/test_oidc.py."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ledgergate.services.login import (
    DEVICE_GRANT,
    DevicePrompt,
    LoginError,
    browser_login,
    device_login,
)

ISSUER = "https://idp.example.com"
TOKENS = {"id_token": "h.p.s", "access_token": "at", "refresh_token": "rt", "expires_in": 300}


class Provider:
    """Discovery, device authorization and token endpoints; the token endpoint answers
    from a script of (status, body)."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]], **grant: Any) -> None:
        self.script = script
        self.grant = {
            "device_code": "dc",
            "user_code": "ABCD-EFGH",
            "verification_uri": f"{ISSUER}/device",
            "verification_uri_complete": f"{ISSUER}/device?user_code=ABCD-EFGH",
            "expires_in": 600,
            **grant,
        }
        self.issuer = ISSUER
        self.token_requests: list[dict[str, str]] = []
        self.auth_headers: list[str | None] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": f"{ISSUER}/token",
                    "device_authorization_endpoint": f"{ISSUER}/device/auth",
                },
            )
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.auth_headers.append(request.headers.get("authorization"))
        if path == "/device/auth":
            return httpx.Response(200, json=self.grant)
        if path == "/token":
            self.token_requests.append(form)
            status, body = self.script.pop(0)
            return httpx.Response(status, json=body)
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    def now(self) -> float:
        return self.t


def pending(error: str = "authorization_pending") -> tuple[int, dict[str, Any]]:
    return 400, {"error": error}


def run_device(p: Provider, clock: Clock | None = None, **kw: Any) -> Any:
    clock = clock or Clock()
    prompts: list[DevicePrompt] = []
    with p.client() as http:
        out = device_login(
            ISSUER,
            "cli",
            ["openid", "email"],
            on_prompt=prompts.append,
            http=http,
            sleep=clock.sleep,
            clock=clock.now,
            **kw,
        )
    return out, prompts


def test_device_polls_honouring_interval_and_slow_down() -> None:
    p = Provider([pending(), pending("slow_down"), pending(), (200, TOKENS)], interval=2)
    clock = Clock()
    tokens, prompts = run_device(p, clock)
    assert prompts == [
        DevicePrompt(
            "ABCD-EFGH", f"{ISSUER}/device", f"{ISSUER}/device?user_code=ABCD-EFGH", 600, 2
        )
    ]
    assert clock.sleeps == [2, 2, 7, 7]
    assert (tokens.id_token, tokens.access_token, tokens.refresh_token) == ("h.p.s", "at", "rt")
    assert (tokens.expires_in, tokens.nonce) == (300, None)
    assert p.token_requests[0] == {
        "grant_type": DEVICE_GRANT,
        "device_code": "dc",
        "client_id": "cli",
    }
    assert set(p.auth_headers) == {None}


def test_device_default_interval_and_client_secret() -> None:
    p = Provider([(200, TOKENS)])
    clock = Clock()
    run_device(p, clock, client_secret="s3cret")
    assert clock.sleeps == [5]
    assert "client_id" not in p.token_requests[0]
    expected = "Basic " + base64.b64encode(b"cli:s3cret").decode()
    assert p.auth_headers == [expected, expected]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (pending("expired_token"), "expired"),
        (pending("access_denied"), "denied"),
        ((400, {"error": "invalid_grant", "error_description": "nope"}), "invalid_grant: nope"),
        ((500, {}), "HTTP 500"),
        ((200, {"access_token": "at"}), "no ID token"),
    ],
)
def test_device_failures(answer: tuple[int, dict[str, Any]], message: str) -> None:
    with pytest.raises(LoginError, match=message):
        run_device(Provider([pending(), answer], interval=1))


def test_device_times_out() -> None:
    p = Provider([pending()] * 10, interval=1, expires_in=3)
    with pytest.raises(LoginError, match="timed out"):
        run_device(p)
    assert len(p.token_requests) == 3


def test_discovery_must_name_the_issuer_and_provider_must_answer() -> None:
    p = Provider([])
    p.issuer = "https://evil.example.com"
    with pytest.raises(LoginError, match="another issuer"):
        run_device(p)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with (
        httpx.Client(transport=httpx.MockTransport(down)) as http,
        pytest.raises(LoginError, match="cannot reach"),
    ):
        device_login(ISSUER, "cli", ["openid"], on_prompt=print, http=http)


def browser(p: Provider, answer: Callable[[dict[str, str], str], str | None]) -> Any:
    """Run browser_login; ``answer(params, redirect_uri)`` plays the browser and returns
    the query to deliver to the callback (or None to deliver nothing)."""
    seen: dict[str, str] = {}

    def open_url(url: str) -> None:
        assert url.startswith(f"{ISSUER}/auth?")
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        seen.update(params)
        redirect = params["redirect_uri"]
        assert redirect.startswith("http://127.0.0.1:") and redirect.endswith("/callback")
        stray = httpx.get(redirect + "?code=evil&state=wrong", timeout=5)
        assert stray.status_code == 400  # ignored: the real answer is still awaited
        query = answer(params, redirect)
        if query is not None:
            page = httpx.get(f"{redirect}?{query}", timeout=5)
            assert page.status_code == 200 and "close this window" in page.text

    with p.client() as http:
        tokens = browser_login(ISSUER, "cli", ["openid"], open_url=open_url, http=http, timeout_s=2)
    return tokens, seen


def test_browser_code_flow_with_pkce() -> None:
    p = Provider([(200, {**TOKENS, "id_token": "a.b.c"})])
    tokens, seen = browser(p, lambda q, _: f"code=c0de&state={q['state']}&iss={ISSUER}")
    assert seen["response_type"] == "code" and seen["code_challenge_method"] == "S256"
    assert seen["scope"] == "openid" and seen["client_id"] == "cli"
    assert len({seen["state"], seen["nonce"]}) == 2
    assert tokens.id_token == "a.b.c" and tokens.nonce == seen["nonce"]
    req = p.token_requests[0]
    assert req["grant_type"] == "authorization_code" and req["code"] == "c0de"
    assert req["redirect_uri"] == seen["redirect_uri"] and req["client_id"] == "cli"
    digest = hashlib.sha256(req["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == seen["code_challenge"]


@pytest.mark.parametrize(
    ("query", "script", "message"),
    [
        ("error=access_denied&error_description=no&state={s}", [], "refused the login"),
        ("code=c&state={s}&iss=https://evil.example.com", [], "another issuer"),
        ("state={s}", [], "no authorization code"),
        ("code=c&state={s}", [(400, {"error": "invalid_grant"})], "invalid_grant"),
    ],
)
def test_browser_failures(query: str, script: list[Any], message: str) -> None:
    with pytest.raises(LoginError, match=message):
        browser(Provider(script), lambda q, _: query.format(s=q["state"]))


def test_browser_times_out() -> None:
    with pytest.raises(LoginError, match="timed out"):
        browser(Provider([]), lambda q, _: None)
