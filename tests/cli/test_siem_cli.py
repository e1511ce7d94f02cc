"""``ledgergate audit export --format csv|ocsf|cef`` against a synthetic ledger (typer's
CliRunner in-process): one event per entry in the range, the entry hash in each, and the
output saying the file is not a verifiable bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ledgergate.cli._common import fmt_ns
from ledgergate.cli.main import app
from ledgergate.services.siem import CSV_COLUMNS
from tests.services.synth import T0, Ledger
from tests.services.test_sessions import _ledger
from tests.storeserver import store_yaml

S = 10**9
ENTRIES = 23  # what _ledger writes: four sessions and a rejected connection
NOT_A_BUNDLE = "(SIEM format: not a verifiable bundle; use --format jsonl for that)"
runner = CliRunner()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "ledgergate.yaml"
    p.write_text("data_dir: data\ngateway_name: gw\n" + store_yaml(tmp_path / "data"))
    return p


@pytest.fixture
def led(cfg: Path) -> Ledger:
    return _ledger(cfg.parent / "data")


def run(cfg: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "-c", str(cfg)])


def _hashes(led: Ledger) -> set[str]:
    st = led.store()
    return {h.hex() for s in st.streams() for _, _, h in st.iter_entries(s, 0, None)}


def test_csv(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    r = run(cfg, "audit", "export", "--format", "csv", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"wrote {ENTRIES} CSV rows of 1 streams to {out} {NOT_A_BUNDLE}"
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == ENTRIES + 1
    assert {r[-1] for r in rows[1:]} == _hashes(led)
    assert out.read_bytes().count(b"\r\n") == ENTRIES + 1  # RFC 4180 line ends
    assert not out.with_name(out.name + ".partial").exists()


def test_ocsf(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "events.ocsf.jsonl"
    r = run(cfg, "audit", "export", "--format", "ocsf", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"wrote {ENTRIES} OCSF events of 1 streams" in r.stdout and NOT_A_BUNDLE in r.stdout
    events = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(events) == ENTRIES
    assert {e["unmapped"]["ledgergate"]["entry_hash"] for e in events} == _hashes(led)
    assert [e["metadata"]["sequence"] for e in events] == list(range(ENTRIES))
    assert {e["class_uid"] for e in events} == {0, 3002, 3003, 6005}


def test_cef(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "events.cef"
    r = run(cfg, "audit", "export", "--format", "cef", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"wrote {ENTRIES} CEF events" in r.stdout and NOT_A_BUNDLE in r.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == ENTRIES
    assert all(x.startswith("CEF:0|ledgergate|ledgergate|") for x in lines)
    assert {x.split(" cs3=", 1)[1].split(" ", 1)[0] for x in lines} == _hashes(led)


@pytest.mark.parametrize("fmt", ["csv", "ocsf", "cef"])
def test_time_range(cfg: Path, led: Ledger, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"bob.{fmt}"
    since, until = fmt_ns(T0 + 100 * S).replace(" ", "T"), fmt_ns(T0 + 200 * S).replace(" ", "T")
    r = run(
        cfg, "audit", "export", "--format", fmt, "--since", since, "--until", until, "-o", str(out)
    )
    assert r.exit_code == 0, r.output
    assert "wrote 5 " in r.stdout  # bob's session: auth, open, command, chunk, close
    text = out.read_text(encoding="utf-8")
    assert "s_bob" in text and "s_alice" not in text and "s_carol" not in text
    r = run(cfg, "audit", "export", "--format", fmt, "--since", "2100-01-01", "-o", str(out))
    assert r.exit_code == 0 and "wrote 0 " in r.stdout and "of 0 streams" in r.stdout


def test_bad_format_and_options(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "x"
    r = run(cfg, "audit", "export", "--format", "bogus", "-o", str(out))
    assert r.exit_code == 2 and "unknown --format 'bogus'" in r.stderr
    r = run(cfg, "audit", "export", "--format", "csv", "--checkpoint", "-o", str(out))
    assert r.exit_code == 2 and "--checkpoint" in r.stderr
    assert not out.exists()
    r = run(cfg, "audit", "export", "--format", "ocsf", "--since", "yesterday", "-o", str(out))
    assert r.exit_code == 2


def test_unwritable_output(cfg: Path, led: Ledger, tmp_path: Path) -> None:
    r = run(cfg, "audit", "export", "--format", "cef", "-o", str(tmp_path / "no" / "such" / "f"))
    assert r.exit_code == 1 and "export failed" in r.stderr
