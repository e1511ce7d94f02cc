"""``ledgergate insights`` over the synthetic ledger of tests/services/test_insights.py:
the period, the formats, the incident window and the refusals of bad options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ledgergate.cli.main import app
from tests.services.test_insights import led  # noqa: F401 (the fixture)
from tests.storeserver import store_yaml

runner = CliRunner()
SINCE, UNTIL = "2026-11-04T10:00:00Z", "2026-11-11T10:00:00Z"


def _run(led: Any, tmp_path: Path, *args: str) -> Any:  # noqa: F811
    cfg = tmp_path / "ledgergate.yaml"
    cfg.write_text(f"data_dir: {led.root}\ngateway_name: gw\n" + store_yaml(led.root))
    return runner.invoke(app, ["insights", "-c", str(cfg), *args])


def test_markdown_json_and_an_incident(led: Any, tmp_path: Path) -> None:  # noqa: F811
    r = _run(led, tmp_path, "--since", SINCE, "--until", UNTIL)
    assert r.exit_code == 0, r.output
    assert "## Privileged commands" in r.stdout and "DROP TABLE audit_log" in r.stdout
    r = _run(led, tmp_path, "--since", SINCE, "--until", UNTIL, "--format", "json",
             "--incident", f"{SINCE}..2026-11-04T10:00:20Z")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["blocked"]["by_rule"] == {"no-truncate": 1}
    assert {e["connection"] for e in doc["incident"] if e["kind"] == "command"} == {
        "app", "files", "events", "web1"
    }  # fmt: skip
    out = tmp_path / "insights.html"
    r = _run(led, tmp_path, "--since", SINCE, "--until", UNTIL, "--format", "html", "-o", str(out))
    assert r.exit_code == 0 and out.read_text().startswith("<!doctype html>")


def test_bad_options_are_refused(led: Any, tmp_path: Path) -> None:  # noqa: F811
    assert _run(led, tmp_path, "--format", "pdf").exit_code == 2
    r = _run(led, tmp_path, "--incident", "yesterday")
    assert r.exit_code == 2
