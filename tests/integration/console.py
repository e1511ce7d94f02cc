"""The web console's test harness: Debian's Chromium driven by Playwright (never a browser
a test tool downloads), a gateway with its API, an OpenID provider with a web client for
the console, and helpers to sign in as each kind of person.

Screenshots go to ``LEDGERGATE_TEST_ARTIFACTS`` (default ``test-results/console``) so a
run leaves them beside its results.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags a closed network and a root sandbox need (see the machine notes: without the
# background-networking ones Chromium keeps dialling Google's hosts).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parents[2] / "console" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("LEDGERGATE_TEST_ARTIFACTS", "test-results/console"))


def browser_fixture() -> Iterator[Any]:
    """The body of a pytest fixture: one headless Chromium for a module."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run scripts/install-deps")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the page as it stands."""
    if not AXE.exists():
        pytest.fail("axe-core is not installed: run scripts/install-deps")
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' '))}))"
    )
    return found


def sign_in_with_token(page: Any, base: str, token: str, target: str = "/") -> None:
    page.goto(f"{base}/console/login?next={target}")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    _signed_in(page)


def _signed_in(page: Any) -> None:
    """Past the sign-in pages (the page after a sign-in moves on by itself)."""
    page.wait_for_url(lambda u: "/console/login" not in u)
    page.wait_for_load_state()


def sign_in_with_provider(page: Any, base: str, login: str) -> None:
    """Through the OpenID provider's own login and consent pages (oidc-provider's
    development interactions: any password)."""
    page.goto(f"{base}/console/login")
    page.get_by_role("link", name="Sign in with your identity provider").click()
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    for _ in range(5):  # consent, then back to the console
        page.wait_for_load_state()
        if page.url.startswith(base):
            _signed_in(page)
            return
        page.click("button[type=submit]")
    raise AssertionError(f"the provider's pages did not lead back: {page.url}")
