"""SASL/OAUTHBEARER on the Kafka listener with a JWT the company's OpenID provider
issued (validated as the PostgreSQL listener validates one: issuer, audience, expiry,
signature from the provider's JWKS), and with a ledgergate token; a forged JWT is
refused and recorded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster
from tests.integration.oidc_idp import OidcIdp, new_key, oidc_idp_fixture

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIdp]:
    yield from oidc_idp_fixture(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def kgw(
    kafka_cluster: KafkaCluster, idp: OidcIdp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(
        tmp_path_factory.mktemp("kgwo"),
        kafka_cluster,
        extra={
            "identity": {
                "oidc": {
                    "issuer": idp.issuer,
                    "client_id": idp.client_id,
                    "accept_jwt_passwords": True,
                }
            }
        },
    ).start()
    try:
        yield g
    finally:
        g.stop()


def _deliver(conf: dict[str, Any], topic: str) -> tuple[Any, list[Any]]:
    errors: list[Any] = []
    p = Producer({**conf, "message.timeout.ms": 8000, "error_cb": errors.append})
    out: list[Any] = []
    p.produce(topic, b"v", on_delivery=lambda e, m: out.append(e))
    p.flush(12)
    return (out[0] if out else "no report"), errors


def test_oauthbearer_with_an_idp_jwt_and_with_a_token(kgw: KafkaGateway, idp: OidcIdp) -> None:
    topic = f"oauth-{uuid.uuid4().hex[:8]}"
    kgw.cluster.create_topic(topic)
    jwt = idp.forge(idp.claims("alice"))
    err, _ = _deliver(kgw.conf(jwt, mechanism="OAUTHBEARER"), topic)
    assert err is None
    err, _ = _deliver(kgw.conf(kgw.token("etl"), mechanism="OAUTHBEARER"), topic)
    assert err is None
    kgw.indexed()
    oks = [e for e in kgw.entries("auth.ok") if e.get("connection") == "events"]
    assert {"jwt", "token"} <= {e["via"] for e in oks}
    assert any(e["via"] == "jwt" and "alice" in e["identity"]["subject"] for e in oks)


def test_forged_jwt_refused(kgw: KafkaGateway, idp: OidcIdp) -> None:
    forged = idp.forge(idp.claims("alice"), key=new_key("attacker"))
    err, errors = _deliver(kgw.conf(forged, mechanism="OAUTHBEARER"), "any-topic")
    assert err is not None
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    kgw.indexed()
    fails = [
        e
        for e in kgw.entries("auth.fail")
        if (e.get("request") or {}).get("mechanism") == "OAUTHBEARER"
    ]
    assert fails
