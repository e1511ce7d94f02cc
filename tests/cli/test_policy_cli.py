"""``ledgergate policy check | explain`` on a policy file (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ledgergate.cli.main import app
from tests.storeserver import store_yaml

runner = CliRunner()

POLICY = """
data_dir: data
policy:
  rules:
    - id: no-ddl
      deny: {kinds: [ddl]}
      message: schema changes go through migrations
    - id: ds
      groups: [data-science]
      allow: [{kinds: [select], tables: ["analytics.*"]}]
    - id: mask-email
      mask: {columns: ["*.*.email"], function: partial, keep_domain: true}
"""


def _cfg(tmp_path: Path, text: str = POLICY) -> Path:
    p = tmp_path / "ledgergate.yaml"
    p.write_text(store_yaml(tmp_path / "data") + text)
    return p


def test_check_lists_rules_and_version(tmp_path: Path) -> None:
    r = runner.invoke(app, ["policy", "check", "-c", str(_cfg(tmp_path))])
    assert r.exit_code == 0, r.output
    assert "3 rules, valid" in r.output and "no-ddl" in r.output
    j = json.loads(
        runner.invoke(app, ["policy", "check", "-c", str(_cfg(tmp_path)), "--json"]).output
    )
    assert j["version"].startswith("pol_") and [x["type"] for x in j["rules"]] == [
        "deny",
        "allow",
        "mask",
    ]


def test_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = _cfg(tmp_path, "policy:\n  rules:\n    - {id: x, deny: {kinds: [drop]}}\n")
    r = runner.invoke(app, ["policy", "check", "-c", str(bad)])
    assert r.exit_code == 2
    assert "policy.rules.0.deny.kinds" in r.output and "unknown statement kind" in r.output


def test_explain_decisions(tmp_path: Path) -> None:
    c = str(_cfg(tmp_path))
    r = runner.invoke(app, ["policy", "explain", "app", "DROP TABLE t", "-c", c])
    assert r.exit_code == 1 and "DENY by no-ddl: schema changes go through migrations" in r.output
    r = runner.invoke(
        app, ["policy", "explain", "app", "SELECT email FROM customers", "-c", c, "--json"]
    )
    out = json.loads(r.output)
    assert out["decision"]["action"] == "allow" and out["mask_rules"] == ["mask-email"]
    assert out["statements"][0]["reads"] == ["customers"]
    r = runner.invoke(
        app,
        ["policy", "explain", "app", "SELECT * FROM customers", "--group", "data-science", "-c", c],
    )
    assert r.exit_code == 1 and "DENY by ds" in r.output
