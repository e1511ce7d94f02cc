"""The backend credentials the gateway holds for S3, HTTP and Kafka connections, resolved
(``env:``/``file:``/literal) when the gateway starts, so a missing secret stops the start
rather than the first request. Never logged, never shown: the values go to the backend
legs only (PostgreSQL's are ``Settings.backend_password``)."""

from __future__ import annotations

from pathlib import Path

from ledgergate.core.config import (
    ConfigError,
    HttpConnection,
    KafkaConnection,
    S3Connection,
    SshConnection,
)
from ledgergate.services.config import resolve_secret

__all__ = ["held_credential", "kafka_credential", "ssh_credential"]


def held_credential(c: S3Connection | HttpConnection) -> dict[str, str | None]:
    """The connection's held credential, resolved (``env:``/``file:``); never logged."""
    where = f"connections.{c.name}"
    if isinstance(c, S3Connection):
        return {
            "access_key_id": c.credentials.access_key_id,
            "secret_access_key": resolve_secret(
                c.credentials.secret_access_key, what=f"{where}.credentials.secret_access_key"
            ),
        }
    a = c.auth
    return {
        "token": resolve_secret(a.token, what=f"{where}.auth.token") if a.token else None,
        "user": a.user,
        "password": resolve_secret(a.password, what=f"{where}.auth.password")
        if a.password
        else None,
        "value": resolve_secret(a.value, what=f"{where}.auth.value") if a.value else None,
    }


def kafka_credential(c: KafkaConnection) -> dict[str, str | None]:
    """The connection's SASL credential towards the brokers, resolved; never logged."""
    if c.credentials is None:
        return {}
    return {
        "user": c.credentials.user,
        "password": resolve_secret(
            c.credentials.password, what=f"connections.{c.name}.credentials.password"
        ),
    }


def ssh_credential(c: SshConnection) -> dict[str, str | None]:
    """The login the gateway uses on an SSH host, resolved, and the host key it pins
    (the ``host_key`` line, or the ``known_hosts`` file's text); never logged."""
    where = f"connections.{c.name}"
    cr = c.credentials
    known: str | None = None
    if c.known_hosts is not None:
        try:
            known = Path(c.known_hosts).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}.known_hosts: cannot read {c.known_hosts}: {e}") from None
    return {
        "user": cr.user,
        "private_key": resolve_secret(
            cr.private_key, what=f"{where}.credentials.private_key", whole=True
        )
        if cr.private_key
        else None,
        "passphrase": resolve_secret(cr.passphrase, what=f"{where}.credentials.passphrase")
        if cr.passphrase
        else None,
        "password": resolve_secret(cr.password, what=f"{where}.credentials.password")
        if cr.password
        else None,
        "certificate_authority": resolve_secret(
            cr.certificate_authority,
            what=f"{where}.credentials.certificate_authority",
            whole=True,
        )
        if cr.certificate_authority
        else None,
        "host_key": c.host_key,
        "known_hosts": known,
    }
