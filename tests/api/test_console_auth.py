"""The console's cookie and redirect rules (api/console/auth.py): where a sign-in may go
on to, the CSRF token, and the same-origin check."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from ledgergate.api.console.auth import csrf_ok, csrf_token, safe_next, same_origin


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example",
        "/\n/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        " /console",
        "/console\x7f",
        "",
        None,
        "console/sessions",
    ],
)
def test_a_sign_in_never_goes_elsewhere(target: str | None) -> None:
    assert safe_next(target) == "/"


@pytest.mark.parametrize(
    "target", ["/", "/console/sessions?identity=bob&protocol=ssh", "/console/sessions/s_1#x"]
)
def test_a_path_of_the_console_is_kept(target: str) -> None:
    assert safe_next(target) == target


def test_csrf_token_is_bound_to_the_token_and_refuses_anything_else() -> None:
    t = csrf_token("lgt_a")
    assert csrf_ok("lgt_a", t) and not csrf_ok("lgt_b", t)
    assert not csrf_ok("lgt_a", None) and not csrf_ok("lgt_a", "é" * 64)  # no 500


def _req(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "headers": raw, "path": "/"})


def test_same_origin() -> None:
    assert same_origin(_req({"host": "gw:18443"}))  # no Origin: not a browser
    assert same_origin(_req({"host": "gw:18443", "origin": "https://gw:18443"}))
    assert not same_origin(_req({"host": "gw:18443", "origin": "https://evil:18443"}))
    assert not same_origin(_req({"host": "gw:18443", "origin": "null"}))
    # behind a proxy that rewrites Host: the public URL says which origin is ours
    proxied = _req({"host": "10.0.0.5:18443", "origin": "https://gw.example.com"})
    assert not same_origin(proxied)
    assert same_origin(proxied, "https://gw.example.com")
