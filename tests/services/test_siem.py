"""SIEM exports (services.siem): CSV rows, OCSF events and CEF lines of hand-built entries
and of a synthetic ledger, and the streaming writer's time range.

OCSF events are validated against the OCSF schema of ``siem.OCSF_VERSION`` as the
``pydantic-ocsf`` package ships it (its ``ocsf/schemas/v1_7_0.json`` holds the event,
object and dictionary files of github.com/ocsf/ocsf-schema at tag 1.7.0, unchanged): once
with the package's models (required attributes, enums, types, uid arithmetic), and once
with ``OcsfSchema`` below, which the models leave out: no attribute the class or object
does not define, scalar types (IP addresses, ports), the ``at_least_one``/``just_one``
constraints (inherited through ``extends``, as the OCSF compiler does) and the caption of
every enumerated id.
"""

from __future__ import annotations

import copy
import csv
import datetime
import io
import ipaddress
import json
import re
from collections.abc import Iterator
from hashlib import sha256
from importlib import resources
from pathlib import Path
from typing import Any

import ocsf.v1_7_0 as ocsf_v1_7_0
import pytest
from ocsf.v1_7_0 import events as ocsf_events
from ocsf.v1_7_0 import objects as ocsf_objects

from ledgergate.core.ledger.entry import Draft
from ledgergate.services import siem
from tests.services.synth import T0, Ledger, base, result, session_drafts
from tests.services.test_sessions import _ledger

S = 10**9
USER_ALICE = {"name": "alice", "type_id": 1, "type": "User"}
H = "ab" * 32  # an entry hash for hand-built entries
STREAM = "gateway@gw"


def entry(kind: str, seq: int = 7, **fields: Any) -> dict[str, Any]:
    """An entry document as the ledger holds it (the chain's keys plus ``fields``)."""
    return {
        "stream": STREAM,
        "seq": seq,
        "ts_ns": T0 + seq * S + 123_456_789,
        "kind": kind,
        "prev_hash": "00" * 32,
        **fields,
    }


def pg(kind: str, subject: str | None = "alice", **fields: Any) -> dict[str, Any]:
    return entry(kind, **base("s_1", subject, "demo"), **fields)


ALICE = {"kind": "user", "subject": "alice", "groups": ["dba", "eng"]}
HTTP_GET = {
    "seq": 3,
    "protocol": "http",
    "op": "GET",
    "method": "GET",
    "path": "/v1/items",
    "query": [["q", "?"]],
}
S3_PUT = {
    "seq": 4,
    "protocol": "s3",
    "op": "PutObject",
    "method": "PUT",
    "bucket": "reports",
    "path": "/reports/2026/q3.csv",
    "key": "2026/q3.csv",
    "content_length": 12,
}
SELECT = {
    "seq": 1,
    "op": "query",
    "text": "SELECT * FROM users WHERE id = ?",
    "text_sha256": sha256(b"SELECT * FROM users WHERE id = 1").hexdigest(),
}

# (entry, class_uid, activity_id, status_id) for every kind of entry the gateway writes
CASES: list[tuple[dict[str, Any], int, int, int | None]] = [
    (pg("auth.ok", token_id="tok_1", claimed_user="alice", via="token"), 3002, 1, 1),
    (pg("auth.fail", None, claimed_user="mallory", reason="token expired"), 3002, 1, 2),
    (pg("auth.denied", reason="no grant allows demo", outcome="refused"), 3002, 1, 2),
    (entry("login.fail", identity=ALICE, via="oidc", reason="identity disabled"), 3002, 1, 2),
    (pg("session.open", recording="redacted", client={"application_name": "psql"}), 3003, 1, 1),
    (pg("session.close", outcome="client closed", stats={"commands": 1}), 3002, 2, 1),
    (pg("session.terminated", reason="token revoked"), 3002, 2, 1),
    (pg("command", command=SELECT), 6005, 4, None),
    (
        pg(
            "decision.block",
            command={**SELECT, "text": "DROP TABLE users"},
            decision={"action": "block", "rule": "no-ddl", "message": "DDL is not allowed"},
            outcome="refused",
        ),
        6005,
        4,
        2,
    ),
    (pg("mask", masking=[{"field": "email", "rule": "pii", "count": 3}], rows=3), 6005, 1, None),
    (entry("command", **base("s_2", "bob", "api"), command=HTTP_GET), 6003, 2, None),
    (entry("command", **base("s_3", "bob", "files"), command=S3_PUT), 6003, 1, None),
    (
        entry(
            "command.result",
            **base("s_3", "bob", "files"),
            command={"seq": 4, "op": "PutObject"},
            outcome="accepted",
            status=200,
        ),
        6003,
        1,
        1,
    ),
    (
        entry(
            "decision.block",
            **base("s_2", "bob", "api"),
            command={**HTTP_GET, "method": "DELETE", "op": "DELETE"},
            decision={"action": "block", "rule": "read-only", "message": "refused"},
            outcome="refused",
        ),
        6003,
        4,
        2,
    ),
    (
        entry(
            "command",
            **base("s_4", "carol", "events"),
            command={"seq": 1, "protocol": "kafka", "op": "produce", "acks": -1, "records": 2},
        ),
        6003,
        1,
        None,
    ),
    (
        entry(
            "command.result",
            **base("s_2", "bob", "api"),
            command={"seq": 5, "op": "POST"},  # HTTP results name the method only
            outcome="rejected",
            status=403,
        ),
        6003,
        1,
        2,
    ),
    (
        entry(
            "command.result",
            **base("s_4", "carol", "events"),
            command={"seq": 1, "op": "produce", "protocol": "kafka"},
            outcome="accepted",
            partitions=[],
        ),
        6003,
        1,
        1,
    ),
    (entry("token.created", token_id="tok_9", identity=ALICE, by="cli:root"), 3004, 1, None),
    (entry("token.revoked", token_id="tok_9", identity=ALICE, by="api:admin"), 3004, 11, None),
    (
        entry("admin.identity.disable", identity=ALICE, by="cli:root", via="cli", reason="left"),
        3004,
        9,
        None,
    ),
    (
        entry(
            "admin.scim.user.create",
            identity={"kind": "user", "subject": "dave", "groups": []},
            scim_id="u-1",
            by="api:scim",
        ),
        3004,
        1,
        None,
    ),
    (
        entry(
            "admin.service_account.create",
            identity={"kind": "service", "subject": "etl", "groups": []},
            by="cli:root",
        ),
        3004,
        1,
        None,
    ),
    (
        entry(
            "admin.grant.create",
            grant_id="g_1",
            connections=["demo"],
            groups=["dba"],
            identities=[],
            by="cli:root",
        ),
        3004,
        1,
        None,
    ),
    (entry("admin.grant.delete", grant_id="g_1", by="cli:root"), 3004, 4, None),
    (
        entry(
            "admin.policy.put",
            rule_id="mask-pii",
            rule={"mask": {"detectors": ["email"]}},
            position=0,
            created=True,
            old_version=None,
            new_version="v2",
            by="api:admin",
        ),
        3004,
        1,
        None,
    ),
    (entry("admin.policy.put", rule_id="mask-pii", created=False, by="api:admin"), 3004, 3, None),
    (entry("admin.policy.delete", rule_id="mask-pii", by="api:admin"), 3004, 4, None),
    (entry("session.open", **base("s_5", "erin", "bastion"), protocol="ssh"), 4007, 1, 1),
    (  # as the SSH gateway writes it: the client's protocol
        entry("session.open", **base("s_6", "erin", "web1"), client={"protocol": "ssh"}),
        4007,
        1,
        1,
    ),
    (
        entry(
            "command",
            **base("s_5", "erin", "bastion"),
            command={"seq": 1, "protocol": "ssh", "op": "exec", "text": "uptime"},
        ),
        4007,
        6,
        None,
    ),
    # no class fits: Base Events
    (entry("session.reject", reason="bad startup packet", source={"ip": "::1"}), 0, 99, 2),
    (entry("auth.fail", reason="a ledgergate token is required", outcome="refused"), 0, 99, 2),
    (
        pg("chunk", direction="s2c", chunk={"seq": 1, "size": 10}, outcome="forwarded"),
        0,
        99,
        None,
    ),
    (entry("review.pending", review={"id": "r_1", "state": "pending"}), 0, 99, None),
    (
        entry("mask", **base("s_2", "bob", "api"), command={"seq": 3}, masking=[]),
        0,
        99,
        None,
    ),
    (entry("gateway.something.new"), 0, 99, None),
]


def doc_of(kind: str, n: int = 0) -> dict[str, Any]:
    """The ``n``-th entry of ``kind`` in CASES."""
    return [doc for doc, *_ in CASES if doc["kind"] == kind][n]


# -- the OCSF schema --------------------------------------------------------------------------
# categories.json of ocsf-schema 1.7.0 (the package's copy of the schema leaves it empty)
CATEGORIES = {
    "other": (0, "Uncategorized"),
    "system": (1, "System Activity"),
    "findings": (2, "Findings"),
    "iam": (3, "Identity & Access Management"),
    "network": (4, "Network Activity"),
    "discovery": (5, "Discovery"),
    "application": (6, "Application Activity"),
    "remediation": (7, "Remediation"),
    "unmanned_systems": (8, "Unmanned Systems"),
}
SCALARS: dict[str, tuple[type, ...]] = {
    "string_t": (str,),
    "integer_t": (int,),
    "long_t": (int,),
    "boolean_t": (bool,),
    "float_t": (int, float),
}


class OcsfSchema:
    """The schema dump of one OCSF release: attributes, constraints and enums of a class
    or object through its ``extends`` chain, as the OCSF compiler merges them."""

    def __init__(self, version: str) -> None:
        name = f"v{version.replace('.', '_')}.json"
        self.raw = json.loads((resources.files("ocsf") / "schemas" / name).read_text("utf-8"))
        assert self.raw["version_info"]["version"] == version
        self.dictionary = self.raw["dictionary"]["attributes"]
        self.types = self.raw["dictionary"]["types"]["attributes"]
        self.classes: dict[int, str] = {}
        for ev_name in self.raw["events"]:
            uid = self.class_uid(ev_name)
            if uid is not None:
                self.classes[uid] = ev_name

    def chain(self, section: str, name: str) -> list[dict[str, Any]]:
        """The definition and its ancestors, the definition first."""
        out, cur = [], self.raw[section].get(name)
        while cur is not None:
            out.append(cur)
            cur = self.raw[section].get(cur["extends"]) if "extends" in cur else None
        return out

    def category(self, name: str) -> tuple[int, str]:
        cat = next(d["category"] for d in self.chain("events", name) if "category" in d)
        return CATEGORIES[cat]

    def class_uid(self, name: str) -> int | None:
        ev = self.raw["events"][name]
        if name == "base_event":
            return 0
        if "uid" not in ev:
            return None
        return int(self.category(name)[0] * 1000 + ev["uid"])

    def attributes(self, section: str, name: str) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for d in reversed(self.chain(section, name)):
            for attr, spec in d.get("attributes", {}).items():
                if attr.startswith("$"):
                    continue  # profiles: this export claims none
                prev = merged.get(attr) or dict(self.dictionary[attr])
                enum = {**prev.get("enum", {}), **spec.get("enum", {})}
                merged[attr] = {**prev, **spec, **({"enum": enum} if enum else {})}
        return merged

    def constraints(self, section: str, name: str) -> dict[str, list[str]]:
        return next((d["constraints"] for d in self.chain(section, name) if "constraints" in d), {})

    # -- checking --
    def event_problems(self, ev: dict[str, Any]) -> list[str]:
        name = self.classes.get(ev.get("class_uid", -1))
        if name is None:
            return [f"no class {ev.get('class_uid')}"]
        out = self.object_problems(ev, "events", name, name)
        cat_uid, cat_name = self.category(name)
        if ev.get("category_uid") != cat_uid or ev.get("category_name") != cat_name:
            out.append(f"{name}: category is {cat_uid} {cat_name!r}")
        if ev.get("class_name") != self.raw["events"][name]["caption"]:
            out.append(f"{name}: class_name is {self.raw['events'][name]['caption']!r}")
        if ev.get("type_uid") != ev.get("class_uid", 0) * 100 + ev.get("activity_id", 0):
            out.append(f"{name}: type_uid is not class_uid * 100 + activity_id")
        return out

    def object_problems(self, data: Any, section: str, name: str, path: str) -> list[str]:
        if not isinstance(data, dict):
            return [f"{path}: {name} must be an object"]
        attrs, out = self.attributes(section, name), []
        for key, value in data.items():
            if key not in attrs:
                out.append(f"{path}.{key}: {name} has no such attribute")
            else:
                out += self.value_problems(value, attrs[key], f"{path}.{key}")
        for key, spec in attrs.items():
            if spec.get("requirement") == "required" and key not in data:
                out.append(f"{path}: {name} requires {key}")
            enum, sibling = spec.get("enum"), spec.get("sibling")
            if enum and key in data and key not in ("category_uid", "class_uid"):  # see below
                caption = enum.get(str(data[key]), {}).get("caption")
                if caption is None:
                    out.append(f"{path}.{key}: {data[key]!r} is not in the enum")
                elif sibling in data and data[key] != 99 and data[sibling] != caption:
                    out.append(f"{path}.{sibling}: {data[sibling]!r} is not {caption!r}")
        cons = self.constraints(section, name)
        if "at_least_one" in cons and not any(k in data for k in cons["at_least_one"]):
            out.append(f"{path}: {name} needs one of {cons['at_least_one']}")
        if "just_one" in cons and sum(k in data for k in cons["just_one"]) != 1:
            out.append(f"{path}: {name} needs exactly one of {cons['just_one']}")
        return out

    def value_problems(self, value: Any, spec: dict[str, Any], path: str) -> list[str]:
        if spec.get("is_array"):
            if not isinstance(value, list):
                return [f"{path}: must be an array"]
            item = {**spec, "is_array": False}
            return [p for i, v in enumerate(value) for p in self.value_problems(v, item, path)]
        t = spec["type"]
        if t == "object":
            return [] if isinstance(value, dict) else [f"{path}: must be an object"]
        if t in self.raw["objects"]:
            return self.object_problems(value, "objects", t, path)
        if t == "json_t":
            return []
        base_type = self.types[t].get("type") or t
        ok = isinstance(value, SCALARS[base_type])
        if ok and base_type != "boolean_t" and isinstance(value, bool):
            ok = False
        if ok and t == "ip_t":
            ok = _is_ip(value)
        if ok and t == "port_t":
            ok = 0 <= value <= 65535
        return [] if ok else [f"{path}: {value!r} is not a {t}"]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _pascal(snake: str) -> str:
    return "".join(w.capitalize() for w in snake.split("_"))


SCHEMA = OcsfSchema(siem.OCSF_VERSION)
# pydantic-ocsf builds its models on first use, and a model built before an object it
# names stays incomplete (BaseEvent before Enrichment): build them all, then link them.
for _name in SCHEMA.classes.values():
    getattr(ocsf_events, _pascal(_name))
ocsf_objects.Enrichment  # noqa: B018
ocsf_v1_7_0.rebuild_all()


def validate_ocsf(ev: dict[str, Any]) -> None:
    """Raise unless the event is a valid event of its class (both checks above)."""
    problems = SCHEMA.event_problems(ev)
    assert not problems, problems
    model = getattr(ocsf_events, _pascal(SCHEMA.classes[ev["class_uid"]]))
    data = copy.deepcopy(ev)  # the models fill in defaults in place
    # pydantic-ocsf 3.0.0 types http_method (a string enum: GET, PUT...) as an integer;
    # OcsfSchema has checked it against the schema's enum above.
    data.get("http_request", {}).pop("http_method", None)
    model.model_validate(data)


# -- OCSF ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "class_uid", "activity", "status"),
    CASES,
    ids=[f"{i}-{c[0]['kind']}" for i, c in enumerate(CASES)],
)
def test_ocsf_classes(
    doc: dict[str, Any], class_uid: int, activity: int, status: int | None
) -> None:
    ev = siem.ocsf_event(doc, H)
    validate_ocsf(ev)
    assert (ev["class_uid"], ev["activity_id"], ev.get("status_id")) == (
        class_uid,
        activity,
        status,
    )
    assert ev["time"] == doc["ts_ns"] // 10**6
    assert ev["metadata"]["product"] == {"name": "ledgergate", "vendor_name": "ledgergate"}
    assert ev["metadata"]["version"] == siem.OCSF_VERSION
    assert ev["metadata"]["uid"] == f"{STREAM}:{doc['seq']}"
    assert ev["metadata"]["sequence"] == doc["seq"] and ev["metadata"]["event_code"] == doc["kind"]
    ledger = ev["unmapped"]["ledgergate"]
    assert ledger["entry_hash"] == H and ledger["stream"] == STREAM
    assert ledger["seq"] == doc["seq"] and ledger["ts_ns"] == doc["ts_ns"]
    src = doc.get("source")
    if src and "src_endpoint" in ev:
        assert ev["src_endpoint"] == src
    if class_uid == 0:
        assert ev["activity_name"] == doc["kind"] and ev["category_uid"] == 0


def test_ocsf_details() -> None:
    auth = siem.ocsf_event(doc_of("auth.ok"), H)
    assert auth["user"] == USER_ALICE
    assert auth["actor"]["user"]["name"] == "alice" and auth["service"] == {"name": "demo"}
    assert auth["session"] == {"uid": "s_1"} and auth["metadata"]["correlation_uid"] == "s_1"
    assert auth["src_endpoint"] == {"ip": "127.0.0.1", "port": 50000}
    fail = siem.ocsf_event(doc_of("auth.fail"), H)
    assert fail["user"] == {"name": "mallory"}  # the user the client claimed
    assert fail["status_detail"] == "token expired" and fail["severity_id"] == 2
    login = siem.ocsf_event(doc_of("login.fail"), H)
    assert login["service"] == {"name": "ledgergate"}  # a console login: no connection
    assert login["user"]["groups"] == [{"name": "dba"}, {"name": "eng"}]
    opened = siem.ocsf_event(doc_of("session.open"), H)
    assert opened["privileges"] == ["connection:demo"]
    query = siem.ocsf_event(doc_of("command"), H)
    assert query["query_info"] == {"query_string": SELECT["text"], "uid": SELECT["text_sha256"]}
    assert query["database"] == {"name": "demo", "type_id": 1, "type": "Relational"}
    assert query["actor"] == {"user": USER_ALICE, "session": {"uid": "s_1"}}
    block = siem.ocsf_event(doc_of("decision.block"), H)
    assert block["status_detail"] == "DDL is not allowed" and block["severity_id"] == 3
    assert block["unmapped"]["ledgergate"]["rule"] == "no-ddl"
    get = siem.ocsf_event(doc_of("command", 1), H)
    assert get["api"] == {"operation": "GET", "service": {"name": "api"}}
    assert get["http_request"] == {"http_method": "GET", "url": {"path": "/v1/items"}}
    put = siem.ocsf_event(doc_of("command", 2), H)
    assert put["resources"] == [
        {"type": "bucket", "name": "reports"},
        {"type": "object", "name": "2026/q3.csv"},
    ]
    res = siem.ocsf_event(doc_of("command.result"), H)
    assert res["http_response"] == {"code": 200} and res["status_code"] == "200"
    token = siem.ocsf_event(doc_of("token.created"), H)
    assert token["actor"] == {"user": {"name": "cli:root"}}
    assert token["entity"]["uid"] == "tok_9" and token["entity"]["user"]["name"] == "alice"
    disable = siem.ocsf_event(doc_of("admin.identity.disable"), H)
    assert disable["entity"]["user"]["name"] == "alice" and disable["comment"] == "left"
    scim = siem.ocsf_event(doc_of("admin.scim.user.create"), H)
    assert scim["entity"]["user"]["uid"] == "u-1"
    service = siem.ocsf_event(doc_of("admin.service_account.create"), H)
    assert service["entity"]["user"]["type_id"] == 4 and service["entity"]["type_id"] == 2
    grant = siem.ocsf_event(doc_of("admin.grant.create"), H)
    assert grant["entity"]["data"] == {"connections": ["demo"], "groups": ["dba"], "identities": []}
    policy = siem.ocsf_event(doc_of("admin.policy.put"), H)
    assert policy["entity"]["policy"] == {"uid": "mask-pii", "version": "v2"}
    anonymous = siem.ocsf_event(doc_of("session.reject"), H)
    assert "user" not in anonymous and anonymous["status_detail"] == "bad startup packet"
    assert anonymous["unmapped"]["ledgergate"]["source"] == {"ip": "::1"}


def test_ocsf_leaves_out_what_the_entry_does_not_hold() -> None:
    metadata_level = pg("command", command={"seq": 1, "op": "query", "text": None})
    ev = siem.ocsf_event(metadata_level, H)
    validate_ocsf(ev)
    assert "query_info" not in ev
    bare = siem.ocsf_event(entry("session.open"), H)  # no identity, no connection
    validate_ocsf(bare)
    assert bare["class_uid"] == 0 and set(bare["unmapped"]["ledgergate"]) == {
        "stream",
        "seq",
        "entry_hash",
        "ts_ns",
        "kind",
    }
    text = json.dumps(bare)
    assert "null" not in text and '""' not in text
    # a Kafka client whose peer was not known yet: no endpoint OCSF would take for one
    kafka = base("s_k", "carol", "events") | {"source": {"ip": "?", "port": 0}}
    produce = {"seq": 1, "protocol": "kafka", "op": "produce"}
    ev = siem.ocsf_event(entry("command", **kafka, command=produce), H)
    validate_ocsf(ev)
    assert ev["class_uid"] == 0 and ev["unmapped"]["ledgergate"]["source"] == {"ip": "?", "port": 0}
    ev = siem.ocsf_event(entry("auth.ok", **kafka), H)
    validate_ocsf(ev)
    assert ev["class_uid"] == 3002 and "src_endpoint" not in ev


def test_the_schema_checks_can_fail() -> None:
    good = siem.ocsf_event(doc_of("session.open"), H)  # Authorize Session
    validate_ocsf(good)

    def problems(change: Any) -> list[str]:
        ev = copy.deepcopy(good)
        change(ev)
        return SCHEMA.event_problems(ev)

    assert problems(lambda ev: ev.pop("user"))  # required
    assert problems(lambda ev: ev.update(group={"name": "dba"}))  # just_one privileges, group
    assert problems(lambda ev: ev.update(colour="blue"))  # not an attribute
    assert problems(lambda ev: ev["user"].update(nickname="al"))
    assert problems(lambda ev: ev.update(activity_id=5, type_uid=300305))  # not in the enum
    assert problems(lambda ev: ev.update(activity_name="Logon"))  # the wrong caption
    assert problems(lambda ev: ev.update(type_uid=300302))
    assert problems(lambda ev: ev["src_endpoint"].update(ip="localhost"))
    assert problems(lambda ev: ev["src_endpoint"].update(port=70000))
    assert problems(lambda ev: ev.update(time="now"))
    assert problems(lambda ev: ev.update(category_uid=6))
    assert problems(lambda ev: ev["user"].pop("name"))  # at_least_one account, name, uid
    with pytest.raises(ValueError):
        bad = copy.deepcopy(good)
        del bad["user"]
        ocsf_events.AuthorizeSession.model_validate(bad)


# -- CSV -------------------------------------------------------------------------------------
def test_csv_rows() -> None:
    row = dict(zip(siem.CSV_COLUMNS, siem.csv_row(doc_of("decision.block"), H), strict=True))
    assert row == {
        "time": "2026-09-21T14:13:27.123456789Z",
        "stream": STREAM,
        "seq": "7",
        "kind": "decision.block",
        "identity": "alice",
        "connection": "demo",
        "session_id": "s_1",
        "source_ip": "127.0.0.1",
        "source_port": "50000",
        "what": "DROP TABLE users",
        "outcome": "refused",
        "rule": "no-ddl",
        "entry_hash": H,
    }
    when = datetime.datetime.fromisoformat(row["time"])
    assert when.tzinfo is not None and int(when.timestamp()) == (T0 + 7 * S) // S
    put = dict(zip(siem.CSV_COLUMNS, siem.csv_row(doc_of("command", 2), H), strict=True))
    assert put["what"] == "PUT /reports/2026/q3.csv"
    kafka = dict(zip(siem.CSV_COLUMNS, siem.csv_row(doc_of("command", 3), H), strict=True))
    assert kafka["what"] == "produce"
    masked = dict(zip(siem.CSV_COLUMNS, siem.csv_row(doc_of("mask"), H), strict=True))
    assert masked["rule"] == "pii" and masked["what"] == ""
    claimed = dict(zip(siem.CSV_COLUMNS, siem.csv_row(doc_of("auth.fail"), H), strict=True))
    assert claimed["identity"] == "mallory"
    empty = siem.csv_row({}, H)
    assert empty == [""] * 12 + [H]


def test_csv_round_trip() -> None:
    text = "SELECT \"a,b\", 'x'\nFROM t -- ünïcødé, =cmd|\r\n; \\"
    docs = [pg("command", command={**SELECT, "text": text}), *(d for d, *_ in CASES)]
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(siem.CSV_COLUMNS)
    for d in docs:
        w.writerow(siem.csv_row(d, H))
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert rows[0] == list(siem.CSV_COLUMNS) and len(rows) == len(docs) + 1
    assert rows[1][siem.CSV_COLUMNS.index("what")] == text
    assert all(r[-1] == H for r in rows[1:])


# -- CEF -------------------------------------------------------------------------------------
def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A CEF line back to its header fields and extensions, undoing the escaping."""
    assert "\n" not in line and "\r" not in line
    header: list[str] = []
    cur, i = "", 0
    while len(header) < 7:
        c = line[i]
        if c == "\\":
            cur, i = cur + line[i + 1], i + 2
        elif c == "|":
            header.append(cur)
            cur, i = "", i + 1
        else:
            cur, i = cur + c, i + 1
    ext = line[i:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", ext))  # every value's = is escaped
    out = {}
    for k, nxt in zip(keys, [*keys[1:], None], strict=True):
        raw = ext[k.end() : nxt.start() if nxt else len(ext)]
        out[k.group(1)] = re.sub(
            r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), raw
        )
    return header, out


def test_cef_line() -> None:
    line = siem.cef_line(doc_of("decision.block"), H, version="1.2.3")
    header, ext = parse_cef(line)
    assert header == [
        "CEF:0",
        "ledgergate",
        "ledgergate",
        "1.2.3",
        "decision.block",
        "command blocked",
        "5",
    ]
    assert ext == {
        "rt": str((T0 + 7 * S + 123_456_789) // 10**6),
        "suser": "alice",
        "src": "127.0.0.1",
        "spt": "50000",
        "act": "block",
        "outcome": "refused",
        "reason": "DDL is not allowed",
        "msg": "DROP TABLE users",
        "cs1Label": "ledgerEntry",
        "cs1": f"{STREAM}:7",
        "cs2Label": "connection",
        "cs2": "demo",
        "cs3Label": "entryHash",
        "cs3": H,
        "cs4Label": "sessionId",
        "cs4": "s_1",
        "cs5Label": "rule",
        "cs5": "no-ddl",
    }
    _, admin = parse_cef(siem.cef_line(doc_of("admin.identity.disable"), H, version="1"))
    assert admin["suser"] == "cli:root" and admin["duser"] == "alice"
    _, http = parse_cef(siem.cef_line(doc_of("command", 1), H, version="1"))
    assert http["requestMethod"] == "GET" and http["request"] == "/v1/items"
    _, ok = parse_cef(siem.cef_line(doc_of("auth.ok"), H, version="1"))
    assert ok["outcome"] == "success" and "act" not in ok and "cs5" not in ok
    assert siem.cef_line(doc_of("auth.ok"), H, version="1").split("|")[6] == "1"
    assert siem.cef_line(doc_of("auth.fail"), H, version="1").split("|")[6] == "3"


@pytest.mark.parametrize(
    "text",
    [
        "a|b",
        "back\\slash",
        "x=1 AND y = 2",
        "line one\nline two\r\nthree\rfour",
        "trailing backslash \\",
        "\\=\\|\\n",
        "ünïcødé 日本語 🙂",
        " key=value msg=not a key",
    ],
)
def test_cef_escaping(text: str) -> None:
    doc = pg("command", command={"seq": 1, "op": "query", "text": text}, reason=text)
    doc.update(kind=f"kind|{text}", connection=text, identity={"kind": "user", "subject": text})
    line = siem.cef_line(doc, H, version=f"v|{text}")
    assert "\n" not in line and "\r" not in line
    header, ext = parse_cef(line)
    flat = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    assert header[3] == f"v|{flat}" and header[4] == f"kind|{flat}"
    assert ext["msg"] == ext["reason"] == ext["suser"] == ext["cs2"] == text
    assert ext["cs3"] == H
    assert line.encode("utf-8").decode("utf-8") == line  # UTF-8, non-ASCII as itself


def test_cef_escaping_is_exact() -> None:
    line = siem.cef_line(entry("a|b\\c", reason="p|q=r\\s\nt"), H, version="0")
    assert line.startswith("CEF:0|ledgergate|ledgergate|0|a\\|b\\\\c|a\\|b\\\\c|1|")
    assert "reason=p|q\\=r\\\\s\\nt " in line


# -- limits and payloads -----------------------------------------------------------------------
def test_long_text_is_capped() -> None:
    text = "SELECT " + "x, " * 10_000 + "1"
    doc = pg("command", command={**SELECT, "text": text})
    row = siem.csv_row(doc, H)[siem.CSV_COLUMNS.index("what")]
    assert len(row) == siem.MAX_TEXT_CHARS and row.endswith("…") and text.startswith(row[:-1])
    ev = siem.ocsf_event(doc, H)
    assert ev["query_info"]["query_string"] == row
    validate_ocsf(ev)
    _, ext = parse_cef(siem.cef_line(doc, H, version="0"))
    assert len(ext["msg"]) == siem.CEF_MAX_FIELD and ext["msg"].endswith("…")
    short = pg("command", command={**SELECT, "text": "x" * siem.MAX_TEXT_CHARS})
    assert siem.what(short) == "x" * siem.MAX_TEXT_CHARS


SECRET = "pa55-w0rd-in-a-row"


def _full_ledger(root: Path) -> Ledger:
    led = Ledger(root)
    rows = result([("id", 23), ("password", 25)], [["1", SECRET]])
    drafts = session_drafts(
        "s_full", "alice", "demo", T0, "full", [("SELECT id, password FROM users", [rows])]
    )
    led.write(drafts)
    return led


@pytest.mark.parametrize("fmt", siem.FORMATS)
def test_never_a_payload(tmp_path: Path, fmt: str) -> None:
    led = _full_ledger(tmp_path)
    out = io.StringIO()
    summary = siem.export_siem(led.store(), out, fmt, version="0")
    assert summary.events == 5
    assert SECRET not in out.getvalue()
    assert "SELECT id, password FROM users" in out.getvalue()  # what the entry holds


# -- the writer over a synthetic ledger ---------------------------------------------------------
def _hashes(store: Any) -> dict[tuple[str, int], str]:
    return {
        (s, seq): h.hex() for s in store.streams() for seq, _, h in store.iter_entries(s, 0, None)
    }


def _lines(led: Ledger, fmt: str, **kw: Any) -> tuple[siem.SiemSummary, list[str]]:
    out = io.StringIO(newline="")
    summary = siem.export_siem(led.store(), out, fmt, version="9.9", **kw)
    return summary, out.getvalue().splitlines()


def test_every_event_carries_its_entry_hash(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    hashes = _hashes(led.store())
    assert len(hashes) == 23

    summary, lines = _lines(led, "ocsf")
    assert summary.events == len(lines) == 23 and summary.streams == {STREAM: 23}
    seen = []
    for line in lines:
        ev = json.loads(line)
        validate_ocsf(ev)
        pos = ev["unmapped"]["ledgergate"]
        assert hashes[(pos["stream"], pos["seq"])] == pos["entry_hash"]
        seen.append((ev["class_uid"], ev["unmapped"]["ledgergate"]["kind"]))
    assert {c for c, _ in seen} == {0, 3002, 3003, 6005}
    assert (3003, "session.open") in seen and (6005, "command") in seen

    _, lines = _lines(led, "cef")
    assert len(lines) == 23
    for line in lines:
        _, ext = parse_cef(line)
        stream, _, seq = ext["cs1"].rpartition(":")
        assert hashes[(stream, int(seq))] == ext["cs3"]
        assert line.split("|")[3] == "9.9"

    _, lines = _lines(led, "csv")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert len(rows) == 23
    for r in rows:
        assert hashes[(r["stream"], int(r["seq"]))] == r["entry_hash"]
    assert [r["seq"] for r in rows] == [str(i) for i in range(23)]
    bob = [r for r in rows if r["identity"] == "bob"]
    assert [r["kind"] for r in bob] == [
        "auth.ok",
        "session.open",
        "command",
        "chunk",
        "session.close",
    ]
    assert bob[2]["what"] == "SELECT count(*) FROM sales WHERE region = ?"


def test_streams_in_order_and_time_range(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    other = [Draft(T0 + i * 50 * S, "gateway.note", {"n": i}) for i in range(5)]
    led.write(other, stream="gateway@gw.w1")
    _, lines = _lines(led, "ocsf")
    pos = [(e["metadata"]["log_name"], e["metadata"]["sequence"]) for e in map(json.loads, lines)]
    assert pos == sorted(pos) and len(pos) == 28
    assert {s for s, _ in pos} == {STREAM, "gateway@gw.w1"}

    def kinds(**kw: Any) -> list[tuple[str, str, int]]:
        _, lines = _lines(led, "csv", **kw)
        rows = csv.DictReader(io.StringIO("\n".join(lines)))
        return [(r["stream"], r["identity"], int(r["seq"])) for r in rows]

    bob = kinds(since_ns=T0 + 100 * S, until_ns=T0 + 200 * S)
    assert {i for s, i, _ in bob if s == STREAM} == {"bob"}
    assert [(s, q) for s, _, q in bob if s != STREAM] == [
        ("gateway@gw.w1", 2),
        ("gateway@gw.w1", 3),
    ]
    assert len(bob) == 5 + 2
    assert len(kinds(until_ns=T0 + 100 * S)) == 10 + 2  # alice's session, w1's 0 and 1
    assert len(kinds(since_ns=T0 + 300 * S)) == 3  # dave's two entries, the reject
    assert kinds(since_ns=T0 + 1000 * S) == []
    assert kinds(since_ns=T0 + 100 * S, until_ns=T0 + 100 * S) == []


def test_time_range_with_entries_out_of_time_order(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    offsets = [0, 100, 201, 199, 300]  # seq 2 was stamped after seq 3
    led.write([Draft(T0 + o * S, "gateway.note", {"n": i}) for i, o in enumerate(offsets)])
    out = io.StringIO()
    siem.export_siem(led.store(), out, "ocsf", since_ns=T0 + 200 * S, until_ns=T0 + 301 * S)
    seqs = [json.loads(x)["metadata"]["sequence"] for x in out.getvalue().splitlines()]
    assert seqs == [2, 4]


class _Corrupt:
    def streams(self) -> list[str]:
        return ["s"]

    def iter_entries(self, stream: str, start: int, stop: int | None) -> Iterator[Any]:
        yield 0, b"[1, 2]", b"\x00" * 32


def test_an_entry_that_is_not_a_document() -> None:
    with pytest.raises(siem.SiemError, match="s:0"):
        siem.export_siem(_Corrupt(), io.StringIO(), "cef", version="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown SIEM format"):
        siem.export_siem(_Corrupt(), io.StringIO(), "xml")  # type: ignore[arg-type]


def test_json_lines_survive_line_separators() -> None:
    line = siem.ocsf_json(pg("command", command={**SELECT, "text": "a\u2028b\u2029c\nd"}), H)
    assert len(line.splitlines()) == 1
    assert json.loads(line)["query_info"]["query_string"] == "a\u2028b\u2029c\nd"
