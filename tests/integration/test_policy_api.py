"""Policy rules kept in the store, changed through the REST API and the CLI of a real
gateway process: validation and roles, 409 for the file's rules, ``admin.policy.*``
entries, and changes that reach sessions already open (a new guardrail refuses the next
statement; a new mask rule masks new result sets, or ends a session opened unmasked)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from tests.integration.fixtures import (
    GatewayFactory,
    api_client,
    api_gateway,
    app_connection,
    bearer,
)
from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster
from tests.integration.test_pg_security import entries

PEOPLE = [("Ann Lee", "ann.lee@example.com", "+44 20 7946 0018")]
NO_SLEEP = {"deny": {"functions": ["pg_sleep"]}, "message": "no sleeping on production"}


@pytest.fixture(scope="module")
def people(pg: PgCluster) -> None:
    pg.psql(
        "DROP TABLE IF EXISTS pa_people;"
        "CREATE TABLE pa_people (name text, email text, phone text);"
        "INSERT INTO pa_people VALUES " + ",".join("('" + "','".join(row) + "')" for row in PEOPLE),
        "app",
    )


@pytest.fixture
def gw(gateway_factory: GatewayFactory, pgc: PgCluster, people: None) -> Gateway:
    return api_gateway(
        gateway_factory,
        [app_connection(pgc)],
        {
            "roles": {
                "admin": {"identities": ["root-admin"]},
                "auditor": {"groups": ["audit"]},
                "reviewer": {"groups": ["review"]},
            },
            "grants": [{"connections": ["*"], "groups": ["eng", "support"]}],
            "policy": {"rules": [{"id": "no-ddl", "deny": {"kinds": ["ddl"]}}]},
        },
    )


@pytest.fixture
def http(gw: Gateway) -> Iterator[httpx.Client]:
    with api_client(gw) as c:
        yield c


def _put(http: httpx.Client, admin: dict[str, str], rule_id: str, body: Any) -> httpx.Response:
    return http.put(f"/api/v1/policy/rules/{rule_id}", headers=admin, json=body)


def test_rules_through_the_api(gw: Gateway, http: httpx.Client) -> None:
    admin = bearer(gw.token("root-admin"))
    before = http.get("/api/v1/policy", headers=admin).json()
    assert [(r["id"], r["source"]) for r in before["rules"]] == [("no-ddl", "file")]
    v0 = before["version"]

    # roles: admins change, auditors and reviewers read, users neither
    auditor = bearer(gw.token("carol", "user", "1h", "--group", "audit"))
    reviewer = bearer(gw.token("rita", "user", "1h", "--group", "review"))
    user = bearer(gw.token("erin", "user", "1h", "--group", "eng"))
    for who in (auditor, reviewer, user):
        r = _put(http, who, "no-sleep", NO_SLEEP)
        assert r.status_code == 403 and "admin" in r.json()["error"]
        assert http.delete("/api/v1/policy/rules/no-ddl", headers=who).status_code == 403
    assert http.get("/api/v1/policy", headers=reviewer).status_code == 200
    assert http.get("/api/v1/policy", headers=user).status_code == 403

    # refusals: a bad key (422, named), a file rule (409), an unknown rule (404)
    r = _put(http, admin, "no-sleep", {"deny": {"function": ["pg_sleep"]}})
    assert (
        r.status_code == 422 and r.json()["error"] == "rule 'no-sleep': deny.function: unknown key"
    )
    r = _put(http, admin, "no-sleep", {"deny": {"kinds": ["sleep"]}})
    assert (
        r.status_code == 422 and "deny.kinds: unknown statement kind 'sleep'" in r.json()["error"]
    )
    r = _put(http, admin, "no-sleep", {**NO_SLEEP, "id": "other"})
    assert r.status_code == 422 and "names another id" in r.json()["error"]
    for position in (-1, "0", True, 1.0):
        r = _put(http, admin, "no-sleep", {**NO_SLEEP, "position": position})
        assert r.status_code == 422 and r.json()["error"].startswith("position: "), position
    assert _put(http, admin, "no-sleep", ["deny"]).status_code == 422  # not a mapping
    lone = json.dumps({**NO_SLEEP, "message": "\ud800"})  # JSON spells it "\\ud800"
    as_json = {**admin, "Content-Type": "application/json"}
    r = http.put("/api/v1/policy/rules/no-sleep", headers=as_json, content=lone)
    assert r.status_code == 422 and "not valid Unicode" in r.json()["error"]
    r = _put(http, admin, "no-ddl", {"deny": {"kinds": ["dcl"]}})
    assert r.status_code == 409
    assert r.json()["error"] == "rule 'no-ddl' belongs to the configuration file; change it there"
    r = http.delete("/api/v1/policy/rules/no-ddl", headers=admin)
    assert r.status_code == 409 and "configuration file" in r.json()["error"]
    assert http.delete("/api/v1/policy/rules/nope", headers=admin).status_code == 404
    assert http.get("/api/v1/policy", headers=admin).json()["version"] == v0

    # create, replace (with the id in the body), read, explain, delete
    r = _put(http, admin, "no-sleep", NO_SLEEP)
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["created"] is True and made["old_version"] == v0 != made["new_version"]
    r = _put(http, admin, "no-dcl", {"id": "no-dcl", "deny": {"kinds": ["dcl"]}, "position": 0})
    assert r.json()["position"] == 0 and r.json()["old_version"] == made["new_version"]
    pol = http.get("/api/v1/policy", headers=auditor).json()
    assert [(x["id"], x["source"]) for x in pol["rules"]] == [
        ("no-ddl", "file"),
        ("no-dcl", "api"),
        ("no-sleep", "api"),
    ]
    assert pol["version"] == r.json()["new_version"]
    assert pol["rules"][2]["stored"]["created_by"] == "api:root-admin"
    assert pol["rules"][2]["message"] == "no sleeping on production"
    ex = http.post(
        "/api/v1/policy/explain",
        headers=reviewer,
        json={"connection": "app", "sql": "SELECT pg_sleep(1)"},
    ).json()
    assert ex["decision"]["rule"] == "no-sleep" and ex["policy"] == pol["version"]
    r = http.delete("/api/v1/policy/rules/no-dcl", headers=admin)
    assert r.status_code == 200 and r.json()["removed"] is True
    assert r.json()["new_version"] == made["new_version"]  # the same policy as before it
    r = http.delete("/api/v1/policy/rules/no-sleep", headers=admin)
    assert r.json()["new_version"] == v0

    puts = entries(gw, "admin.policy.put")
    assert [(e["rule_id"], e["by"], e["created"]) for e in puts] == [
        ("no-sleep", "api:root-admin", True),
        ("no-dcl", "api:root-admin", True),
    ]
    assert puts[0]["old_version"] == v0 and puts[0]["rule"]["deny"] == {"functions": ["pg_sleep"]}
    dels = entries(gw, "admin.policy.delete")
    assert [(e["rule_id"], e["new_version"]) for e in dels] == [
        ("no-dcl", made["new_version"]),
        ("no-sleep", v0),
    ]
    assert {e["stream"] for e in puts + dels} == {"api@test-gw"}
    assert gw.cli("audit", "verify", check=False).returncode == 0


def test_a_new_guardrail_refuses_the_next_statement_of_an_open_session(
    gw: Gateway, http: httpx.Client
) -> None:
    admin = bearer(gw.token("root-admin"))
    tok = gw.token("erin", "user", "1h", "--group", "eng")
    with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
        c.execute("SELECT pg_sleep(0)")
        c.execute("SELECT pg_sleep(%s)", (0,), prepare=True)  # a prepared statement
        r = _put(http, admin, "no-sleep", NO_SLEEP)
        assert r.status_code == 200
        version = r.json()["new_version"]
        # the API applies its own change before it answers: the very next statement
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no sleeping on prod"):
            c.execute("SELECT pg_sleep(0)")
        # and a statement prepared before the change, at its next execution (Bind only)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no sleeping on prod"):
            c.execute("SELECT pg_sleep(%s)", (0,), prepare=True)
        assert c.execute("SELECT 1").fetchone() == (1,)  # the session goes on
        assert http.delete("/api/v1/policy/rules/no-sleep", headers=admin).status_code == 200
        c.execute("SELECT pg_sleep(0)")
    blocked = entries(gw, "decision.block")
    assert [b["command"]["op"] for b in blocked] == ["query", "bind"]
    assert {(b["decision"]["rule"], b["policy"]) for b in blocked} == {("no-sleep", version)}
    assert blocked[1]["command"]["text"] == "SELECT pg_sleep($1)"


def test_a_change_made_by_another_process_reaches_open_sessions_within_a_second(
    gw: Gateway,
) -> None:
    tok = gw.token("erin", "user", "1h", "--group", "eng")
    with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
        c.execute("SELECT pg_sleep(0)")
        gw.cli("policy", "rules", "put", "no-sleep", "deny: {functions: [pg_sleep]}")
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-sleep"):
            while time.monotonic() - t0 < 5:
                c.execute("SELECT pg_sleep(0)")
                time.sleep(0.05)
        assert time.monotonic() - t0 < 3
    put = entries(gw, "admin.policy.put")[-1]
    assert put["stream"] == "cli@test-gw" and put["by"].startswith("cli")


def test_mask_rules_over_the_api_mask_new_results_and_end_unmasked_sessions(
    gw: Gateway, http: httpx.Client
) -> None:
    admin = bearer(gw.token("root-admin"))
    support = gw.token("sam", "user", "1h", "--group", "support")
    eng = gw.token("erin", "user", "1h", "--group", "eng")
    (_, email, phone) = PEOPLE[0]
    r = _put(
        http,
        admin,
        "mask-email",
        {"groups": ["support"], "mask": {"columns": ["public.pa_people.email"]}},
    )
    assert r.status_code == 200
    q = "SELECT email, phone FROM pa_people"
    masked = psycopg.connect(gw.dsn(support), autocommit=True)  # opened with masking
    plain = psycopg.connect(gw.dsn(eng), autocommit=True)  # opened without
    assert masked.execute(q).fetchone() == ("****", phone)
    assert plain.execute(q).fetchone() == (email, phone)

    r = _put(http, admin, "mask-phone", {"mask": {"columns": ["*.*.phone"], "function": "partial"}})
    assert r.status_code == 200
    version = r.json()["new_version"]
    # the masked session's next result set is planned with both rules
    got = masked.execute(q).fetchone()
    assert got is not None and got[0] == "****" and got[1] != phone and got[1].endswith("0018")
    # the session that had no masking ends rather than read unmasked phones
    with pytest.raises(psycopg.OperationalError, match="masking now applies to this session"):
        plain.execute(q)
    plain.close()
    # a new session takes the new policy from its start
    with psycopg.connect(gw.dsn(eng), autocommit=True) as c:
        got = c.execute(q).fetchone()
        assert got is not None and got[0] == email and got[1] != phone
    masked.close()
    term = entries(gw, "session.terminated")
    assert [(t["identity"]["subject"], t["reason"]) for t in term] == [
        ("erin", "policy changed: masking now applies to this session")
    ]
    mask = [m for m in entries(gw, "mask") if m["identity"]["subject"] == "sam"]
    assert {x["rule"] for x in mask[-1]["masking"]} == {"mask-email", "mask-phone"}
    assert mask[-1]["policy"] == version
    # removed again: the still open sessions read phones as they are
    with psycopg.connect(gw.dsn(support), autocommit=True) as c:
        assert http.delete("/api/v1/policy/rules/mask-phone", headers=admin).status_code == 200
        assert c.execute(q).fetchone() == ("****", phone)


def test_a_gateway_does_not_start_on_a_policy_whose_ids_clash(
    gateway_factory: GatewayFactory,
) -> None:
    g = gateway_factory()
    g.cli("policy", "rules", "put", "no-dcl", "deny: {kinds: [dcl]}")
    doc = yaml.safe_load(g.config_path.read_text())
    doc["policy"] = {"rules": [{"id": "no-dcl", "deny": {"kinds": ["dcl"]}}]}
    g.config_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(RuntimeError, match="gateway exited"):
        g.start()
    assert (
        "ledgergate: policy: rule 'no-dcl': this id is already used by a rule of the "
        "configuration file" in g.logs()
    )
    assert g.stop() == 2
