"""``ledgergate request | reviews`` without a gateway: they act as the logged-in person
only, and say so when nobody is logged in (the commands against a real gateway are in
tests/integration/test_reviews_api.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgergate.cli.main import app
from ledgergate.services import client as cl

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["reviews", "list"],
        ["reviews", "show", "rv_1"],
        ["reviews", "approve", "rv_1", "--reason", "ok"],
        ["reviews", "deny", "rv_1", "--reason", "no"],
        ["reviews", "cancel", "rv_1"],
        ["request", "access", "prod", "--for", "30m", "--reason", "INC-1"],
    ],
)
def test_nobody_logged_in(tmp_path: Path, args: list[str]) -> None:
    r = runner.invoke(app, args, env={"LEDGERGATE_CREDENTIALS": str(tmp_path / "none.json")})
    assert r.exit_code == 1 and "not logged in; run ledgergate login" in r.output


def test_an_expired_login_and_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    cl.save(
        cl.Credentials(
            "https://127.0.0.1:1", None, "lgt_x", "tok_1", "erin", (), (), time.time_ns() - 1
        ),
        path,
    )
    env = {"LEDGERGATE_CREDENTIALS": str(path)}
    r = runner.invoke(app, ["reviews", "list"], env=env)
    assert r.exit_code == 1 and "expired; run ledgergate login" in r.output
    r = runner.invoke(app, ["request", "access", "prod", "--for", "a while"], env=env)
    assert r.exit_code == 2 and "not a duration" in r.output
    r = runner.invoke(app, ["reviews", "approve", "rv_1"], env=env)
    assert r.exit_code == 2  # --reason is required
