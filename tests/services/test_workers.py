"""services/workers and the per-worker settings: what each relay process appends to and
what the supervisor prepares before any starts."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from ledgergate.core.config import ConfigError, parse_config
from ledgergate.proxy.pg import cancel_owner
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


def test_prepare_takes_over_a_lax_run_dir_and_refuses_a_symlink(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    run = tmp_path / "data" / "run"
    run.mkdir(parents=True)
    run.chmod(0o777)
    (run / "pg-cancel-1.sock").write_bytes(b"")  # left by a killed worker
    workers.prepare(s)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert not list(run.iterdir())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run.rmdir()
    run.symlink_to(elsewhere)
    with pytest.raises(workers.WorkerError, match="directory owned by this user"):
        workers.prepare(s)


def test_bind_listeners_one_reuseport_group_that_nothing_else_joins() -> None:
    groups = workers.bind_listeners("127.0.0.1", _free_port(), 3)
    try:
        assert len(groups) == 3 and all(len(g) == 1 for g in groups)
        ports = {g[0].getsockname()[1] for g in groups}
        assert len(ports) == 1
        (port,) = ports
        assert all(g[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for g in groups)
        # another gateway, with workers or without, is refused
        with pytest.raises(workers.WorkerError, match="in use"):
            workers.bind_listeners("127.0.0.1", port, 2)
        plain = socket.socket()
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
        plain.close()
    finally:
        for g in groups:
            for sock in g:
                sock.close()


def test_bind_listeners_refuses_a_port_held_by_anything() -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        with pytest.raises(workers.WorkerError, match=f"127.0.0.1:{port}.*in use"):
            workers.bind_listeners("127.0.0.1", port, 2)
    finally:
        holder.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_restart_policy() -> None:
    p = workers.RestartPolicy()
    p.started(0.0)
    assert p.exited(1.0) is None  # never came up: the gateway stops
    p = workers.RestartPolicy(ever_up=True)
    p.started(0.0)
    assert p.exited(3600.0) == workers.RESTART_DELAY_S  # after a long life: at once
    delays = []
    now = 4000.0
    for _ in range(8):  # crashing right after each start: the delay doubles, capped
        p.started(now)
        delay = p.exited(now + 1)
        assert delay is not None
        delays.append(delay)
        now += 1 + delay
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert delays[-1] == workers.MAX_RESTART_DELAY_S
    p.started(now)
    assert p.exited(now + workers.FAST_FAIL_S + 1) == workers.RESTART_DELAY_S  # healthy again


def test_worker_env_is_what_the_supervisor_hands_over() -> None:
    key = bytes(range(32))
    env = workers.worker_env(
        {
            workers.ENV_KEY: key.hex(),
            workers.ENV_FDS: "3,4",
            workers.ENV_SUPERVISOR: "77",
            workers.ENV_CONFIG: "abc",
        }
    )
    assert (env.key, env.listen_fds, env.supervisor, env.config_digest) == (
        key,
        (3, 4),
        77,
        "abc",
    )
    assert key.hex() not in repr(env)
    for bad in ({}, {workers.ENV_KEY: "zz", workers.ENV_FDS: "3", workers.ENV_SUPERVISOR: "1"}):
        with pytest.raises(workers.WorkerError, match="--worker is for"):
            workers.worker_env(bad)


def test_cancel_owner_is_keyed_and_spreads_over_the_workers() -> None:
    key, other = b"k" * 32, b"o" * 32
    owners = [cancel_owner(key, 4, 4242, i.to_bytes(4, "big")) for i in range(4000)]
    assert owners == [cancel_owner(key, 4, 4242, i.to_bytes(4, "big")) for i in range(4000)]
    counts = [owners.count(k) for k in range(4)]
    assert min(counts) > 850 and max(counts) < 1150, counts  # about 1000 each
    moved = sum(
        o != cancel_owner(other, 4, 4242, i.to_bytes(4, "big")) for i, o in enumerate(owners)
    )
    assert moved > 2500  # another run's key routes differently (3/4 expected)
    # the pid is part of it too
    assert owners != [cancel_owner(key, 4, 4243, i.to_bytes(4, "big")) for i in range(4000)]


def test_the_config_digest_follows_the_configuration(tmp_path: Path) -> None:
    a = workers.config_digest(settings_in(tmp_path))
    assert a == workers.config_digest(settings_in(tmp_path))  # same file, same digest
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(cfg.read_text() + "log_level: debug\n")
    assert workers.config_digest(load_settings(cfg)) != a
