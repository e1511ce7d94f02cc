"""``ledgergate policy rules list | put | delete`` against a real data directory, and
``policy check | explain`` on the effective policy (the file's rules, then the store's)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from ledgergate.cli.main import app
from tests.storeserver import open_for, store_yaml

runner = CliRunner()

CONFIG = """
data_dir: data
gateway_name: gw
policy:
  rules:
    - id: no-ddl
      deny: {kinds: [ddl]}
"""


def _cfg(tmp_path: Path, text: str = CONFIG) -> Path:
    p = tmp_path / "ledgergate.yaml"
    p.write_text(store_yaml(tmp_path / "data") + text)
    return p


def run(cfg: Path, *args: str) -> Result:
    return runner.invoke(app, ["policy", *args, "-c", str(cfg)])


def test_put_list_explain_and_delete(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert not (tmp_path / "data").exists()
    r = run(cfg, "check")
    assert r.exit_code == 0 and "1 rules, valid" in r.output
    assert not (tmp_path / "data").exists()  # checking never creates a store

    r = run(cfg, "rules", "put", "no-dcl", '{"deny": {"kinds": ["dcl"]}, "message": "ask"}')
    assert r.exit_code == 0, r.output
    assert "created rule no-dcl at position 0; policy pol_" in r.output
    r = run(cfg, "rules", "put", "mask-email", "mask: {columns: ['*.*.email']}")  # YAML
    assert r.exit_code == 0, r.output
    rule = tmp_path / "rule.yaml"
    rule.write_text("id: no-do\ndeny:\n  do_blocks: true\n")
    r = run(cfg, "rules", "put", "no-do", "--file", str(rule), "--position", "0", "--json")
    assert r.exit_code == 0, r.output
    put = json.loads(r.stdout)
    assert put["created"] is True and put["position"] == 0 and put["source"] == "api"

    r = run(cfg, "rules", "list", "--json")
    listed = json.loads(r.stdout)
    assert [(x["id"], x["source"]) for x in listed["rules"]] == [
        ("no-ddl", "file"),
        ("no-do", "api"),
        ("no-dcl", "api"),
        ("mask-email", "api"),
    ]
    assert listed["version"] == put["new_version"]
    assert listed["rules"][1]["stored"]["created_by"].startswith("cli")
    r = run(cfg, "rules", "list")
    assert r.exit_code == 0 and "no-dcl" in r.output and "file" in r.output

    r = run(cfg, "check")
    assert r.exit_code == 0 and "4 rules, valid (3 from the store)" in r.output
    assert put["new_version"] in r.output
    assert "  deny  no-ddl " in r.output and "  mask  mask-email " in r.output
    assert r.output.count("[file]") == 1 and r.output.count("[api]") == 3
    r = run(cfg, "explain", "app", "GRANT SELECT ON t TO bob")
    assert r.exit_code == 1 and "DENY by no-dcl: ask" in r.output
    r = run(cfg, "explain", "app", "SELECT email FROM t", "--json")
    assert json.loads(r.stdout)["mask_rules"] == ["mask-email"]

    r = run(cfg, "rules", "put", "no-dcl", '{"deny": {"kinds": ["dcl"]}, "message": "no"}')
    assert r.exit_code == 0 and "replaced rule no-dcl at position 1" in r.output
    r = run(cfg, "rules", "delete", "no-dcl")
    assert r.exit_code == 0 and "deleted rule no-dcl; policy pol_" in r.output
    r = run(cfg, "explain", "app", "GRANT SELECT ON t TO bob")
    assert r.exit_code == 0 and "ALLOW" in r.output

    st = open_for(tmp_path / "data")
    kinds = [(e.kind, e.stream) for e in st.find_entries(kinds=["admin.policy.put"])]
    assert kinds == [("admin.policy.put", "cli@gw")] * 4
    (gone,) = [json.loads(e.canonical) for e in st.find_entries(kinds=["admin.policy.delete"])]
    assert gone["rule_id"] == "no-dcl" and gone["rule"]["message"] == "no"
    assert gone["by"].startswith("cli") and gone["new_version"] != gone["old_version"]
    st.close()
    assert runner.invoke(app, ["audit", "verify", "-c", str(cfg)]).exit_code == 0


def test_refusals_name_the_problem_and_exit_2(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    r = run(cfg, "rules", "put", "bad", '{"deny": {"kinds": ["drop"]}}')
    assert r.exit_code == 2
    assert "rule 'bad': deny.kinds: unknown statement kind 'drop'" in r.output
    r = run(cfg, "rules", "put", "bad", '{"deny": {"kinds": ["ddl"]}, "colour": "red"}')
    assert r.exit_code == 2 and "rule 'bad': colour: unknown key" in r.output
    r = run(cfg, "rules", "put", "no-ddl", '{"deny": {"kinds": ["dcl"]}}')
    assert r.exit_code == 2 and "belongs to the configuration file; change it there" in r.output
    r = run(cfg, "rules", "delete", "no-ddl")
    assert r.exit_code == 2 and "belongs to the configuration file" in r.output
    r = run(cfg, "rules", "delete", "nope")
    assert r.exit_code == 2 and "no stored policy rule 'nope'" in r.output
    r = run(cfg, "rules", "put", "x", "{deny: [")
    assert r.exit_code == 2 and "not valid JSON or YAML" in r.output
    r = run(cfg, "rules", "put", "x")
    assert r.exit_code == 2 and "inline" in r.output
    r = run(cfg, "rules", "put", "x", '{"id": "y", "deny": {"kinds": ["ddl"]}}')
    assert r.exit_code == 2 and "names another id ('y')" in r.output
    assert json.loads(run(cfg, "rules", "list", "--json").stdout)["rules"][0]["id"] == "no-ddl"


def test_a_file_rule_clashing_with_a_stored_one_is_reported(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert run(cfg, "rules", "put", "no-dcl", "deny: {kinds: [dcl]}").exit_code == 0
    _cfg(tmp_path, CONFIG + "    - id: no-dcl\n      deny: {kinds: [dcl]}\n")
    r = run(cfg, "check")
    assert r.exit_code == 2
    assert "rule 'no-dcl': this id is already used by a rule of the configuration file" in (
        r.output
    )
    r = run(cfg, "rules", "delete", "no-dcl")  # the way out
    assert r.exit_code == 0, r.output
    assert run(cfg, "check").exit_code == 0
