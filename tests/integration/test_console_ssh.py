"""An SSH shell replayed in the web console: a shell run through the gateway with
OpenSSH's client in a PTY, then an auditor opens its session in Debian's Chromium and
plays it in asciinema-player (served from the console's own origin, under its Content
Security Policy) and sees what the terminal showed; the asciicast downloads as
``sessions replay --asciicast`` writes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.integration.console import browser_fixture, shot, sign_in_with_token
from tests.integration.gateway import free_port
from tests.integration.sshd import Sshd
from tests.integration.sshgw import SshGateway

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[SshGateway]:
    api = free_port()
    extra = {
        "listeners": {"api": {"address": f"127.0.0.1:{api}"}},
        "roles": {"auditor": {"groups": ["audit"]}},
    }
    g = SshGateway(tmp_path_factory.mktemp("sshconsole"), sshd, extra=extra).start()
    g.api_url = f"https://localhost:{api}"  # type: ignore[attr-defined]
    yield g
    g.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


def test_an_auditor_plays_an_ssh_shell_in_the_page(
    gw: SshGateway, browser: Any, tmp_path: Path
) -> None:
    child = pexpect.spawn(
        "ssh",
        [*gw.ssh_options(), "-tt", "web@127.0.0.1"],
        env=gw.env(gw.token("alice")),
        encoding="utf-8",
        timeout=15,
        dimensions=(24, 80),
    )
    child.expect(r"\$ ")
    child.sendline("echo console-$((6*7))")
    child.expect("console-42")
    child.expect(r"\$ ")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    gw.gw.settle()
    sid = next(
        str(e["session_id"])
        for e in reversed(gw.gw.entries("command"))
        if e["command"]["op"] == "shell"  # type: ignore[index]
    )

    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    base = gw.api_url  # type: ignore[attr-defined]
    sign_in_with_token(page, base, gw.token("aud", "1h", "--group", "audit"), "/console/sessions")
    page.goto(f"{base}/console/sessions/{sid}")
    player = page.locator("#player")
    player.locator(".ap-player").wait_for()  # asciinema-player rendered under the CSP
    player.click()  # play
    page.wait_for_function(
        "() => document.querySelector('#player').innerText.includes('console-42')",
        timeout=15_000,
    )
    shot(page, "auditor-ssh-replay")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download the asciicast").click()
    cast = tmp_path / "shell.cast"
    dl.value.save_as(cast)
    assert cast.read_text().splitlines()[0].startswith('{"')
    assert "console-42" in cast.read_text()
    ctx.close()
    assert problems == []
