"""Connections carried by an agent: ``via`` on every connection type, and
``credentials: agent:NAME`` (the agent holds the PostgreSQL credential and logs in)."""

from __future__ import annotations

import pytest

from ledgergate.core.config import AgentHeld, ConfigError, Connection, parse_config


def _pg(**over: object) -> dict[str, object]:
    conn: dict[str, object] = {
        "name": "app",
        "address": "10.1.2.3:5432",
        "database": "app",
        "credentials": {"user": "app", "password": "env:PW"},
    }
    conn.update(over)
    return conn


def test_agent_held_credentials_need_the_agent_that_carries_the_connection() -> None:
    cfg = parse_config({"connections": [_pg(via="dc1", credentials="agent:dc1")]})
    conn = cfg.connections[0]
    assert isinstance(conn, Connection)
    assert conn.credentials == AgentHeld(agent="dc1") and conn.agent_login
    with pytest.raises(ConfigError, match="needs via: dc1"):
        parse_config({"connections": [_pg(credentials="agent:dc1")]})
    with pytest.raises(ConfigError, match="needs via: dc1"):
        parse_config({"connections": [_pg(via="dc2", credentials="agent:dc1")]})


@pytest.mark.parametrize("spec", ["agent:", "dc1", "env:PW"])
def test_a_credentials_string_is_agent_and_a_name(spec: str) -> None:
    with pytest.raises(ConfigError, match="agent:AGENT"):
        parse_config({"connections": [_pg(via="dc1", credentials=spec)]})


@pytest.mark.parametrize(
    "over", [{"sslmode": "require"}, {"sslrootcert": "/ca.pem"}, {"require_auth": ["md5"]}]
)
def test_tls_and_login_settings_belong_to_the_agent(over: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="run on the agent"):
        parse_config({"connections": [_pg(via="dc1", credentials="agent:dc1", **over)]})


def test_the_gateway_holds_credentials_unless_told_otherwise() -> None:
    conn = parse_config({"connections": [_pg(via="dc1")]}).connections[0]
    assert isinstance(conn, Connection) and not conn.agent_login


@pytest.mark.parametrize(
    "conn",
    [
        {
            "name": "files",
            "type": "s3",
            "endpoint": "http://10.1.2.4:7070",
            "credentials": {"access_key_id": "AK", "secret_access_key": "env:SK"},
        },
        {"name": "api", "type": "http", "base_url": "https://10.1.2.5/v1"},
        {
            "name": "events",
            "type": "kafka",
            "bootstrap": ["10.1.2.6:9092"],
            "listen": "127.0.0.1:19092",
        },
    ],
)
def test_every_connection_type_can_go_through_an_agent(conn: dict[str, object]) -> None:
    got = parse_config({"connections": [{**conn, "via": "dc1"}]}).connections[0]
    assert got.via == "dc1"
