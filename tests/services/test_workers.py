"""services/workers and the per-worker settings: what each relay process appends to and
what the supervisor prepares before any starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgergate.core.config import ConfigError, parse_config
from ledgergate.services import workers
from ledgergate.services.config import Settings, load_settings


def settings_in(tmp_path: Path, workers_n: int = 2) -> Settings:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "gateway_name: gw1\n"
        f"listeners: {{postgres: {{address: '127.0.0.1:15999', workers: {workers_n}}}}}\n"
    )
    return load_settings(cfg)


def test_each_worker_appends_to_its_own_stream(tmp_path: Path) -> None:
    s = load_settings(None, data_dir=str(tmp_path))
    assert s.for_worker(0).stream == s.stream and s.for_worker(0).worker == 0
    w2 = s.for_worker(2)
    assert w2.stream == f"{s.stream}.w2" and w2.worker == 2
    assert w2.data_dir == s.data_dir and w2.key_name == s.key_name  # one key, one store
    assert s.run_dir == s.data_dir / "run"


@pytest.mark.parametrize("n", [0, -1, 65])
def test_the_worker_count_is_bounded(n: int) -> None:
    with pytest.raises(ConfigError, match=r"listeners\.postgres\.workers"):
        parse_config({"listeners": {"postgres": {"workers": n}}})
    assert (
        parse_config({"listeners": {"postgres": {"workers": 64}}}).listeners.postgres.workers == 64
    )


def test_prepare_creates_what_the_workers_share_once(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    workers.prepare(s)
    data = tmp_path / "data"
    made = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    assert {"keys/ledger.ed25519", "keys/payload.key", "keys/masking.key"} <= made
    assert {"tls/server.crt", "tls/server.key", "ledgergate.db"} <= made
    assert (data / "run").is_dir() and (data / "run").stat().st_mode & 0o077 == 0
    before = {p: p.read_bytes() for p in (data / "keys").iterdir()}
    workers.prepare(s)
    assert {p: p.read_bytes() for p in (data / "keys").iterdir()} == before  # kept, not remade
