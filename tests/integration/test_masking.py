"""Masking in flight through a real gateway: a seeded table of realistic PII read with
psql, psycopg (also prepared) and asyncpg shows masked values only; no raw value is in
any byte a client received, any ledger entry or any stored payload; the ledger has a
``mask`` entry per result set and chunks whose digests in and out differ."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import asyncpg
import psycopg
import pytest

from ledgergate.services.keys import PayloadCipher
from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster
from tests.integration.test_pg_security import entries

PEOPLE = [
    # name, email, card, ssn, notes (free text with PII inside)
    (
        "Ann Lee",
        "ann.lee@example.com",
        "4242 4242 4242 4242",
        "123-45-6789",
        "call back, wife's card 5555555555554444",
    ),
    (
        "Bob Roy",
        "bob@corp.example.org",
        "5555-5555-5555-4444",
        "234-56-7890",
        "IBAN GB82WEST12345698765432 for refunds",
    ),
    (
        "Cy Dunn",
        "cy.dunn@example.net",
        "378282246310005",
        "345-67-8901",
        "prefers mail to cy.private@example.com",
    ),
]
RAW = [v for row in PEOPLE for v in row[1:4]] + [
    "5555555555554444",
    "GB82WEST12345698765432",
    "cy.private@example.com",
]

POLICY: dict[str, Any] = {
    "rules": [
        {
            "id": "mask-email",
            "groups": ["support"],
            "mask": {
                "columns": ["public.mk_people.email"],
                "function": "partial",
                "keep_domain": True,
            },
        },
        {
            "id": "mask-cards",
            "groups": ["support"],
            "mask": {"columns": ["*.*.card"], "function": "partial", "keep_last": 4},
        },
        {
            "id": "tokenize-ssn",
            "groups": ["support"],
            "mask": {"columns": ["public.mk_people.ssn"], "function": "tokenize"},
        },
        {
            "id": "scan-notes",
            "groups": ["support"],
            "mask": {"detectors": ["email", "payment_card", "iban"], "function": "redact"},
        },
    ]
}


@pytest.fixture(scope="module")
def people(pg: PgCluster) -> None:
    values = ",".join(
        "(" + ",".join("'" + v.replace("'", "''") + "'" for v in row) + ")" for row in PEOPLE
    )
    pg.psql(
        "DROP TABLE IF EXISTS mk_people;"
        "CREATE TABLE mk_people (name text, email text, card varchar(32), ssn text, notes text);"
        f"INSERT INTO mk_people VALUES {values};",
        "app",
    )


@pytest.fixture
def masked(gateway_factory: GatewayFactory, pgc: PgCluster, people: None) -> Gateway:
    return gateway_factory(
        [app_connection(pgc, recording="full")], extra={"policy": POLICY}
    ).start()


def _ledger_text(gw: Gateway) -> str:
    gw.settle()
    db = gw.db()
    parts = [
        r[0].decode() if isinstance(r[0], bytes) else r[0]
        for r in db.execute("SELECT canonical FROM ledger_entries")
    ]
    db.close()
    return "\n".join(parts)


def test_psql_sees_masked_values_and_the_ledger_never_the_raw_ones(masked: Gateway) -> None:
    tok = masked.token("sam", "user", "1h", "--group", "support")
    r = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-F",
            "|",
            "-c",
            "SELECT name, email, card, ssn, notes FROM mk_people ORDER BY name",
            masked.dsn(tok),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.strip().splitlines()]
    assert [x[0] for x in rows] == ["Ann Lee", "Bob Roy", "Cy Dunn"]
    assert rows[0][1] == "a***@example.com" and rows[1][1] == "b***@corp.example.org"
    assert rows[0][2] == "**** **** **** 4242" and rows[1][2].endswith("4444")
    assert rows[0][3].startswith("tok_") and rows[0][3] != rows[1][3]
    for raw in RAW:
        assert raw not in r.stdout, raw
    # the same value always gives the same token: joins and counts still work
    again = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-c",
            "SELECT ssn FROM mk_people WHERE name = 'Ann Lee'",
            masked.dsn(tok),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.stdout.strip() == rows[0][3]
    ledger = _ledger_text(masked)
    for raw in RAW:
        assert raw not in ledger, raw
    mask = entries(masked, "mask")
    assert mask and mask[0]["rows"] == 3
    by_rule = {(m["rule"], m["detector_or_rule"]) for m in mask[0]["masking"]}
    assert ("mask-email", "mask-email") in by_rule and ("scan-notes", "iban") in by_rule
    chunks = [e for e in entries(masked, "chunk") if e["chunk"]["rows"]]
    assert any(c["chunk"]["sha256_in"] != c["chunk"]["sha256_out"] for c in chunks)
    assert masked.cli("audit", "verify", check=False).returncode == 0


def test_payloads_hold_only_what_the_client_received(masked: Gateway) -> None:
    tok = masked.token("sam", "user", "1h", "--group", "support")
    with psycopg.connect(masked.dsn(tok)) as c:
        c.execute("SELECT * FROM mk_people").fetchall()
    masked.settle()
    cipher = PayloadCipher((masked.data_dir / "keys" / "payload.key").read_bytes())
    db = masked.db()
    stored = [cipher.open(d, b) for d, b in db.execute("SELECT digest, blob FROM payloads")]
    db.close()
    assert stored  # full recording keeps statements and result bytes
    everything = b"".join(stored)
    assert b"a***@example.com" in everything  # what the client received...
    for raw in RAW:
        assert raw.encode() not in everything, raw  # ...and never the raw values


def test_aliases_prepared_statements_and_asyncpg(masked: Gateway) -> None:
    tok = masked.token("sam", "user", "1h", "--group", "support")
    with psycopg.connect(masked.dsn(tok), autocommit=True) as c:
        got = c.execute("SELECT p.email AS contact, notes AS n FROM mk_people p").fetchall()
        assert all("***@" in e for e, _ in got)
        for _ in range(6):  # psycopg prepares it after a few runs: Bind/Execute only
            (card,) = c.execute(
                "SELECT card FROM mk_people WHERE name = %s", ("Bob Roy",), prepare=True
            ).fetchone()
            assert card.endswith("4444") and "5555" not in card
        # computed from masked columns: not attributable, masked all the same
        computed = c.execute(
            "SELECT ssn || '' AS s, upper(email) AS u, length(email) AS n FROM mk_people"
        ).fetchall()
        text = json.dumps(computed)
        for raw in RAW:
            assert raw not in text and raw.upper() not in text, raw
        assert {n for _, _, n in computed} == {len(p[1]) for p in PEOPLE}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="mask-copy-out"):
            c.execute("COPY mk_people TO STDOUT (FORMAT binary)")
        assert c.execute("SELECT 1").fetchone() == (1,)

    async def go() -> list[Any]:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=masked.port,
            user="sam",
            password=tok,
            database="app",
            ssl="require",
        )
        try:
            return list(await conn.fetch("SELECT email, card, ssn FROM mk_people"))
        finally:
            await conn.close()

    rows = asyncio.run(go())
    text = json.dumps([list(r) for r in rows])
    for raw in RAW:
        assert raw not in text, raw
    assert rows[0]["email"].endswith("@example.com")


def test_people_outside_the_group_see_the_data(masked: Gateway) -> None:
    tok = masked.token("dba-dan", "user", "1h", "--group", "dba")
    with psycopg.connect(masked.dsn(tok)) as c:
        emails = {e for (e,) in c.execute("SELECT email FROM mk_people")}
    assert "ann.lee@example.com" in emails


def _psql(gw: Gateway, tok: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql, gw.dsn(tok)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_copy_to_stdout_is_masked_like_a_select(masked: Gateway) -> None:
    tok = masked.token("sam", "user", "1h", "--group", "support")
    text = _psql(masked, tok, "COPY mk_people TO STDOUT")
    assert text.returncode == 0, text.stderr
    rows = sorted(line.split("\t") for line in text.stdout.splitlines())
    assert [r[0] for r in rows] == ["Ann Lee", "Bob Roy", "Cy Dunn"]
    assert rows[0][1] == "a***@example.com" and rows[0][2] == "**** **** **** 4242"
    assert rows[0][3].startswith("tok_") and "****" in rows[0][4]
    csv = _psql(masked, tok, "COPY mk_people (notes, email) TO STDOUT WITH (FORMAT csv, HEADER)")
    assert csv.returncode == 0, csv.stderr
    lines = csv.stdout.splitlines()
    assert lines[0] == "notes,email" and len(lines) == 4
    assert any(line.endswith(",b***@corp.example.org") for line in lines)
    # a query's columns: attributed through the catalog, or computed from masked ones
    with psycopg.connect(masked.dsn(tok), autocommit=True) as c:
        cur = c.cursor()
        got = []
        for sql in (
            "COPY (SELECT * FROM mk_people) TO STDOUT",
            "COPY (SELECT p.card AS c, lower(p.email) FROM mk_people p) TO STDOUT (FORMAT csv)",
            "COPY (SELECT notes FROM mk_people WHERE name LIKE 'C%') TO STDOUT",
        ):
            with cur.copy(sql) as cp:
                got.append(b"".join(bytes(b) for b in cp).decode())
        assert "a***@example.com" in got[0] and "****" in got[2]
        # Binary COPY cannot be rewritten: refused before it runs, the session goes on.
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="binary"),
            cur.copy("COPY mk_people TO STDOUT (FORMAT binary)") as cp,
        ):
            list(cp)
        # A table the catalog snapshot does not know: its columns cannot be attributed,
        # so its data never passes; the client gets an error, not a broken session.
        c.execute("CREATE TEMP TABLE fresh AS SELECT email, card FROM mk_people")
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot be attributed"),
            cur.copy("COPY fresh TO STDOUT") as cp,
        ):
            got.append(b"".join(bytes(b) for b in cp).decode())
        assert c.execute("SELECT count(*) FROM fresh").fetchone() == (3,)
        with cur.copy("COPY fresh (email) TO STDOUT") as cp:  # named: matched by name
            got.append(b"".join(bytes(b) for b in cp).decode())
        assert got[-1].count("***@") == 3
    everything = text.stdout + csv.stdout + "".join(got)
    for raw in RAW:
        assert raw not in everything and raw.lower() not in everything, raw
    ledger = _ledger_text(masked)
    for raw in RAW:
        assert raw not in ledger, raw
    mask = [m for m in entries(masked, "mask") if m["rows"] == 3]
    assert len(mask) >= 5
    assert masked.cli("audit", "verify", check=False).returncode == 0
