"""``ledgergate agent``'s options: a credential it is to hold is checked before it dials
(and a password is never taken literally, where the process list would show it)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ledgergate.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        ("app=user=u,password=s3cret-literal", "must be env:VAR or file:PATH"),
        ("app=password=env:PW", "use CONNECTION=user=NAME"),
        ("app", "use CONNECTION=user=NAME"),
        ("app=user=u,sslmode=maybe", "sslmode must be one of"),
        ("app=user=u,require_auth=kerberos", "require_auth takes"),
        ("app=user=u,colour=blue", "unknown field 'colour'"),
        ("app=user=u,user=v", "use CONNECTION=user=NAME"),
        ("other=user=u,password=env:PW", "'other': the connection has no --target"),
        ("app=user=u,password=env:LG_TEST_UNSET_VAR", "LG_TEST_UNSET_VAR"),
    ],
)
def test_bad_credentials_are_refused_before_dialing(credential: str, why: str) -> None:
    r = runner.invoke(
        app,
        [
            "agent",
            "--gateway", "127.0.0.1:1",
            "--token", "env:LG_AGENT_TOKEN",
            "--target", "app=10.0.0.5:5432",
            "--credential", credential,
        ],
        env={"LG_AGENT_TOKEN": "lgt_x", "PW": "pw-value"},
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert why in r.output
    assert "s3cret-literal" not in r.output and "pw-value" not in r.output
