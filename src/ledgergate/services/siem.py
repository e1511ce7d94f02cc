"""SIEM exports of the ledger: each entry as a CSV row, an OCSF event or a CEF line.

Owns the mapping from one entry document to those formats and the streaming writer behind
``ledgergate audit export --format csv|ocsf|cef``. A SIEM export proves nothing on its own
(the ``jsonl`` bundle and ``audit verify`` do): every event carries its ledger position
(stream, seq) and the entry's ``entry_hash``, to trace it back and prove it there.

A mapping outputs only what the entry holds (a field it lacks is left out, never
guessed), never a payload, and caps long text at ``MAX_TEXT_CHARS``, marking the cut with
``…``. The writer reads the entries with ``ts_ns`` in [since, until), stream by stream in
seq order, in constant memory. No network.

CSV (RFC 4180, a header row, then one record per entry): ``CSV_COLUMNS`` — time (ISO 8601
UTC, nanoseconds), stream, seq, kind, identity (the entry's identity subject: the acting
user, or the identity an admin or token change was about; for a refused authentication
without one, the user name the client claimed), connection, session_id,
source_ip, source_port, what (command text; HTTP/S3 method and path; Kafka operation),
outcome, rule (the blocking rule, or the rules that masked), entry_hash. A value holding a
line break is quoted and spans lines, as RFC 4180 allows.

OCSF (``OCSF_VERSION``, one JSON object per line): ``auth.*``/``login.*`` and a
``session.reject`` that names a user → Authentication (3002, Logon);
``session.close``/``session.terminated`` → Authentication (Logoff);
``session.open`` → Authorize Session (3003, Assign Privileges: the privilege is the
connection, ``connection:<name>``); ``token.*``/``identity.*``/``admin.*``/``policy.*`` →
Entity Management (3004; the actor is the entry's ``by``); HTTP, S3 and Kafka commands,
results and blocks → API Activity (6003); PostgreSQL commands, blocks and masking →
Datastore Activity (6005; the database is the connection); SSH sessions and commands →
SSH Activity (4007). Anything else, and an entry that lacks what its class requires (an
authentication with no user named, a command with no source), is a Base Event (class 0,
activity Other) rather than a class filled with guesses. The ledger position is in
``metadata`` (``uid`` stream:seq, ``log_name`` the stream, ``sequence`` the seq) and in
``unmapped.ledgergate`` with the entry hash, the exact ``ts_ns`` and the entry's context.

CEF (ArcSight CEF:0): ``CEF:0|ledgergate|ledgergate|<version>|<kind>|<name>|<severity>|``
then rt, suser (duser: the identity an admin change was about), src, spt, act, outcome,
reason, requestMethod, request, msg, and cs1 (ledger entry, stream:seq), cs2
(connection), cs3 (entry hash), cs4 (session), cs5 (rule), each with its label.
"""

from __future__ import annotations

import csv
import datetime
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import IO, Any

from ledgergate.store.base import Store

__all__ = [
    "CSV_COLUMNS", "FORMATS", "OCSF_VERSION", "SiemError", "SiemSummary", "cef_line",
    "csv_row", "export_siem", "ocsf_event", "ocsf_json", "product_version", "what",
]  # fmt: skip

FORMATS = ("csv", "ocsf", "cef")
PRODUCT = "ledgergate"
# The OCSF release the events are built and tested for (tests/services/test_siem.py
# validates them with the schema of this release).
OCSF_VERSION = "1.7.0"
# Command text in CSV and OCSF: a statement can be megabytes (bulk INSERTs); a SIEM event
# stays within the usual 8-64 KiB ingest limits with room for everything else. The
# entry's text_sha256 still names the whole statement.
MAX_TEXT_CHARS = 4096
# CEF extension values (msg, request, reason, suser, ...): the length the CEF
# specification gives those fields.
CEF_MAX_FIELD = 1023
# A stream's entries are sealed in arrival order, so their ts_ns may run slightly
# backwards (a batch stamped before another was sealed after it). A time range is read
# from this much earlier and every entry is checked against the range itself.
ORDER_SLACK_NS = 60 * 10**9
CSV_COLUMNS = (
    "time", "stream", "seq", "kind", "identity", "connection", "session_id", "source_ip",
    "source_port", "what", "outcome", "rule", "entry_hash",
)  # fmt: skip


class SiemError(ValueError):
    """An entry that cannot be exported (its bytes are not an entry document)."""


# -- reading an entry --------------------------------------------------------------------
def _str(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, str) else None


def _int(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if type(v) is int else None


def _dict(d: Any, key: str) -> dict[str, Any]:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


def _cap(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _subject(doc: dict[str, Any]) -> str | None:
    return _str(_dict(doc, "identity"), "subject")


def what(doc: dict[str, Any]) -> str:
    """What the entry's command did: its recorded text (PostgreSQL), method and path
    (HTTP, S3; the operation when the path was recorded as a digest only), or operation
    (Kafka, results); capped at ``MAX_TEXT_CHARS``. Empty for entries without a command."""
    cmd = _dict(doc, "command")
    op = _str(cmd, "op")
    if _str(cmd, "protocol") in ("http", "s3"):
        method = _str(cmd, "method")
        path = _str(cmd, "path") or (op if op != method else None)
        return _cap(" ".join(p for p in (method, path) if p))
    return _cap(_str(cmd, "text") or op or "")


def _rule(doc: dict[str, Any]) -> str | None:
    rule = _str(_dict(doc, "decision"), "rule")
    if rule is not None:
        return rule
    masking = doc.get("masking")
    if not isinstance(masking, list):
        return None
    rules = {_str(m, "rule") or _str(m, "detector_or_rule") for m in masking}
    return " ".join(sorted(r for r in rules if r)) or None


def _reason(doc: dict[str, Any]) -> str | None:
    return _str(doc, "reason") or _str(_dict(doc, "decision"), "message")


def _position(doc: dict[str, Any]) -> str:
    seq = _int(doc, "seq")
    return f"{_str(doc, 'stream') or ''}:{'' if seq is None else seq}"


def _decimal(n: int | None) -> str | None:
    return None if n is None else str(n)


def _iso(ts_ns: int) -> str:
    dt = datetime.datetime.fromtimestamp(ts_ns // 10**9, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % 10**9:09d}Z"


# -- CSV -------------------------------------------------------------------------------------
def csv_row(doc: dict[str, Any], entry_hash: str) -> list[str]:
    """The entry as a row of ``CSV_COLUMNS`` (an absent value is empty)."""
    source, ts = _dict(doc, "source"), _int(doc, "ts_ns")
    values = (
        _iso(ts) if ts is not None else None,
        _str(doc, "stream"),
        _decimal(_int(doc, "seq")),
        _str(doc, "kind"),
        _subject(doc) or _str(doc, "claimed_user"),
        _str(doc, "connection"),
        _str(doc, "session_id"),
        _str(source, "ip"),
        _decimal(_int(source, "port")),
        what(doc),
        _str(doc, "outcome"),
        _rule(doc),
        entry_hash,
    )
    return [v or "" for v in values]


# -- severity and names (shared by OCSF and CEF) -----------------------------------------------
INFORMATIONAL, LOW, MEDIUM = 1, 2, 3  # OCSF severity_id
_SEVERITY_NAMES = {INFORMATIONAL: "Informational", LOW: "Low", MEDIUM: "Medium"}
_SEVERITY = {
    "auth.fail": LOW, "auth.denied": LOW, "login.fail": LOW, "session.reject": LOW,
    "session.terminated": LOW, "decision.block": MEDIUM,
}  # fmt: skip
# CEF severity (0-10: 0-3 low, 4-6 medium, 7-8 high) of each OCSF severity.
_CEF_SEVERITY = {INFORMATIONAL: 1, LOW: 3, MEDIUM: 5}
_FAILED = frozenset({"auth.fail", "auth.denied", "login.fail", "session.reject", "decision.block"})
_SUCCEEDED = frozenset({"auth.ok", "session.open", "session.close", "session.terminated"})
# A request's result (see core.recording_http): the backend's 2xx, or not.
_RESULT_STATUS = {"accepted": 1, "rejected": 2, "refused": 2, "failed": 2, "cut": 2}


def _status(doc: dict[str, Any], kind: str) -> int | None:
    """OCSF status_id: 1 success, 2 failure, None when the entry does not say."""
    if kind in _FAILED or kind.endswith(".fail"):
        return 2
    if kind in _SUCCEEDED or (kind.startswith("login.") and kind.endswith(".ok")):
        return 1
    outcome = _str(doc, "outcome") or ""
    return _RESULT_STATUS.get(outcome) if kind == "command.result" else None


# -- OCSF --------------------------------------------------------------------------------------
_CATEGORIES = {
    0: "Uncategorized", 3: "Identity & Access Management", 4: "Network Activity",
    6: "Application Activity",
}  # fmt: skip
# class_uid -> (class caption, {activity_id: caption})
_CLASSES: dict[int, tuple[str, dict[int, str]]] = {
    0: ("Base Event", {99: "Other"}),
    3002: ("Authentication", {1: "Logon", 2: "Logoff"}),
    3003: ("Authorize Session", {1: "Assign Privileges"}),
    3004: (
        "Entity Management",
        {1: "Create", 3: "Update", 4: "Delete", 8: "Enable", 9: "Disable", 11: "Deactivate"},
    ),
    4007: ("SSH Activity", {1: "Open", 2: "Close", 5: "Refuse", 6: "Traffic"}),
    6003: ("API Activity", {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}),
    6005: ("Datastore Activity", {1: "Read", 4: "Query"}),
}
_STATUS_NAMES = {1: "Success", 2: "Failure"}
# API Activity by HTTP method, and by the start of an S3 or Kafka operation's name.
_METHOD_ACTIVITY = {"GET": 2, "HEAD": 2, "OPTIONS": 2, "POST": 1, "PUT": 3, "PATCH": 3, "DELETE": 4}
_HTTP_METHODS = {*_METHOD_ACTIVITY, "CONNECT", "TRACE"}  # what OCSF's http_method names
_OP_ACTIVITY = (
    (("get", "list", "head", "describe", "fetch", "metadata", "offset_fetch"), 2),
    (("put", "create", "upload", "copy", "complete", "produce", "init"), 1),
    (("delete", "abort"), 4),
    (("alter", "incremental_alter", "update"), 3),
)
# Entity Management activity by the last word of the kind (admin.grant.create -> create).
_ENTITY_ACTIVITY = {
    "create": 1, "created": 1, "update": 3, "updated": 3, "delete": 4, "deleted": 4,
    "enable": 8, "disable": 9, "revoke": 11, "revoked": 11,
}  # fmt: skip
_USER_TYPES = {"user": (1, "User"), "service": (4, "Service")}
_SSH = {"session.open": 1, "session.close": 2, "session.terminated": 2, "session.reject": 5}

Attrs = dict[str, Any]
Mapped = tuple[int, int, Attrs]  # class_uid, activity_id, the class's own attributes


def _some(**attrs: Any) -> Attrs:
    """The attributes that have a value: an absent field is left out, never guessed."""
    return {k: v for k, v in attrs.items() if v is not None and v != "" and v != []}


def _user(doc: dict[str, Any], *, claimed: bool = False) -> Attrs | None:
    ident = _dict(doc, "identity")
    name = _str(ident, "subject") or (_str(doc, "claimed_user") if claimed else None)
    if not name:
        return None
    type_id, type_ = _USER_TYPES.get(_str(ident, "kind") or "", (None, None))
    groups = ident.get("groups")
    names = [{"name": g} for g in groups if isinstance(g, str)] if isinstance(groups, list) else []
    return _some(name=name, type_id=type_id, type=type_, groups=names)


def _endpoint(doc: dict[str, Any], *, raw: bool = False) -> Attrs | None:
    """The entry's source as an OCSF endpoint: only with an IP address, as OCSF's ip_t
    requires (``raw``: whatever the entry says, e.g. ``?`` before a peer was known)."""
    source = _dict(doc, "source")
    ip = _str(source, "ip")
    try:
        ipaddress.ip_address(ip or "")
    except ValueError:
        if not (raw and ip):
            return None
    return _some(ip=ip, port=_int(source, "port"))


def _session(doc: dict[str, Any]) -> Attrs | None:
    sid = _str(doc, "session_id")
    return {"uid": sid} if sid else None


def _authentication(doc: dict[str, Any], kind: str) -> Mapped | None:
    user = _user(doc, claimed=True)
    if user is None:
        return None  # the class requires the user who logged on
    service = {"name": _str(doc, "connection") or PRODUCT}
    attrs = _some(user=user, actor={"user": user}, service=service, session=_session(doc))
    attrs |= _some(src_endpoint=_endpoint(doc))
    return 3002, 2 if kind in ("session.close", "session.terminated") else 1, attrs


def _authorize_session(doc: dict[str, Any]) -> Mapped | None:
    user, conn = _user(doc), _str(doc, "connection")
    if user is None or not conn:
        return None
    privileges = [f"connection:{conn}"]
    attrs = _some(user=user, actor={"user": user}, privileges=privileges, session=_session(doc))
    return 3003, 1, attrs | _some(src_endpoint=_endpoint(doc))


def _managed_entity(doc: dict[str, Any], kind: str) -> Attrs | None:
    user = _user(doc)
    token, grant, rule = _str(doc, "token_id"), _str(doc, "grant_id"), _str(doc, "rule_id")
    if kind.startswith("token.") and token:
        return _some(uid=token, type="token", type_id=99, user=user)
    if grant:
        data = {k: doc[k] for k in ("connections", "groups", "identities") if k in doc}
        return _some(uid=grant, type="grant", type_id=99, data=data or None)
    if rule:
        policy = _some(uid=rule, version=_str(doc, "new_version"))
        return _some(uid=rule, type="Policy", type_id=5, policy=policy)
    if user is not None:
        user.update(_some(uid=_str(doc, "scim_id")))
        return _some(name=user["name"], type="User", type_id=2, user=user)
    return None


def _entity_management(doc: dict[str, Any], kind: str) -> Mapped | None:
    verb = kind.rsplit(".", 1)[-1]
    activity = _ENTITY_ACTIVITY.get(verb)
    if verb == "put":
        activity = 1 if doc.get("created") is True else 3
    entity = _managed_entity(doc, kind)
    if entity is None or activity is None:
        return None  # no entity named, or a change OCSF has no activity for
    by = _str(doc, "by")
    actor = {"user": {"name": by}} if by else None
    attrs = _some(entity=entity, actor=actor, comment=_str(doc, "reason"))
    return 3004, activity, attrs | _some(src_endpoint=_endpoint(doc))


def _api_activity_id(cmd: dict[str, Any]) -> int:
    method, op = _str(cmd, "method"), _str(cmd, "op") or ""
    if _str(cmd, "protocol") != "s3" and (method or op) in _METHOD_ACTIVITY:
        return _METHOD_ACTIVITY[method or op]  # HTTP (its results name the method only)
    for prefixes, activity in _OP_ACTIVITY:
        if op.lower().startswith(prefixes):
            return activity
    return _METHOD_ACTIVITY.get(method or "", 99)


def _api_activity(doc: dict[str, Any]) -> Mapped | None:
    cmd = _dict(doc, "command")
    op, src = _str(cmd, "op"), _endpoint(doc)
    actor = _some(user=_user(doc), session=_session(doc))
    if not op or src is None or not actor:
        return None  # operation, source and actor are required
    conn, method, path = _str(doc, "connection"), _str(cmd, "method"), _str(cmd, "path")
    api = _some(operation=op, service={"name": conn} if conn else None)
    request = None
    if method in _HTTP_METHODS:
        request = _some(http_method=method, url={"path": _cap(path)} if path else None)
    status = _int(doc, "status")
    response = {"code": status} if status is not None else None
    bucket, key = _str(cmd, "bucket"), _str(cmd, "key")
    resources = [{"type": "bucket", "name": bucket}] if bucket else []
    if key:
        resources.append({"type": "object", "name": _cap(key)})
    attrs = _some(actor=actor, api=api, src_endpoint=src, http_request=request)
    attrs |= _some(http_response=response, resources=resources)
    if status is not None:
        attrs["status_code"] = str(status)
    return 6003, _api_activity_id(cmd), attrs


def _datastore_activity(doc: dict[str, Any], kind: str) -> Mapped | None:
    conn, src = _str(doc, "connection"), _endpoint(doc)
    actor = _some(user=_user(doc), session=_session(doc))
    if not conn or src is None or not actor:
        return None  # the database, source and actor are required
    cmd = _dict(doc, "command")
    text, digest = _str(cmd, "text"), _str(cmd, "text_sha256")
    query = {"query_string": _cap(text), "uid": digest} if text is not None and digest else None
    database = {"name": conn, "type_id": 1, "type": "Relational"}
    attrs = _some(actor=actor, src_endpoint=src, database=database, query_info=query)
    attrs |= {"type_id": 1, "type": "Database"}
    return 6005, 1 if kind == "mask" else 4, attrs


def _ssh_activity(doc: dict[str, Any], kind: str) -> Mapped | None:
    src = _endpoint(doc)
    activity = _SSH.get(kind, 6)  # Traffic: commands and chunks
    return (4007, activity, {"src_endpoint": src}) if src is not None else None


def _classify(doc: dict[str, Any], kind: str) -> Mapped | None:
    family = kind.split(".", 1)[0]
    protocol = (
        _str(_dict(doc, "command"), "protocol")
        or _str(doc, "protocol")
        or _str(_dict(doc, "client"), "protocol")  # a session.open names its client's
    )
    if family in ("auth", "login"):
        return _authentication(doc, kind)
    if protocol == "ssh" and family in ("session", "command", "chunk", "decision"):
        return _ssh_activity(doc, kind)
    if kind == "session.open":
        return _authorize_session(doc)
    if kind in ("session.close", "session.terminated", "session.reject"):
        return _authentication(doc, kind)  # a rejected connection: when it names a user
    if family in ("token", "identity", "admin", "policy"):
        return _entity_management(doc, kind)
    if kind in ("command", "decision.block", "command.result"):
        if protocol in ("http", "s3", "kafka") or kind == "command.result":
            return _api_activity(doc)
        return _datastore_activity(doc, kind)
    if kind == "mask" and "command" not in doc and "chunk" not in doc:
        return _datastore_activity(doc, kind)  # PostgreSQL's: HTTP and Kafka name theirs
    return None


def ocsf_event(doc: dict[str, Any], entry_hash: str) -> dict[str, Any]:
    """The entry as an OCSF event (see the module docstring for the classes)."""
    kind = _str(doc, "kind") or ""
    mapped = _classify(doc, kind)
    class_uid, activity, attrs = mapped if mapped is not None else (0, 99, {})
    class_name, activities = _CLASSES[class_uid]
    severity = _SEVERITY.get(kind, INFORMATIONAL)
    meta = {"product": {"name": PRODUCT, "vendor_name": PRODUCT}, "version": OCSF_VERSION}
    meta |= _some(
        uid=_position(doc),
        log_name=_str(doc, "stream"),
        sequence=_int(doc, "seq"),
        event_code=kind,
        correlation_uid=_str(doc, "session_id"),
    )
    detail = _reason(doc) or _str(doc, "outcome")
    ev: Attrs = {
        "category_uid": class_uid // 1000,
        "category_name": _CATEGORIES[class_uid // 1000],
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity,
        "activity_name": activities[activity] if mapped else kind,
        "type_uid": class_uid * 100 + activity,
        "severity_id": severity,
        "severity": _SEVERITY_NAMES[severity],
        "time": (_int(doc, "ts_ns") or 0) // 10**6,
        "message": _cap(f"{kind}: {detail}" if detail else kind),
        "metadata": meta,
    }
    status = _status(doc, kind)
    if status is not None:
        ev["status_id"], ev["status"] = status, _STATUS_NAMES[status]
        ev |= _some(status_detail=_cap(detail) if detail else None)
    ev |= attrs
    ev["unmapped"] = {"ledgergate": _context(doc, entry_hash)}
    return ev


def _context(doc: dict[str, Any], entry_hash: str) -> Attrs:
    """The ledger position and the entry's own context, for every event alike."""
    return _some(
        stream=_str(doc, "stream"),
        seq=_int(doc, "seq"),
        entry_hash=entry_hash,
        ts_ns=_int(doc, "ts_ns"),
        kind=_str(doc, "kind"),
        session_id=_str(doc, "session_id"),
        connection=_str(doc, "connection"),
        identity=_subject(doc),
        source=_endpoint(doc, raw=True),
        outcome=_str(doc, "outcome"),
        reason=_str(doc, "reason"),
        rule=_rule(doc),
        by=_str(doc, "by"),
    )


def ocsf_json(doc: dict[str, Any], entry_hash: str) -> str:
    """One OCSF JSON line; U+2028/U+2029 escaped, so no reader splits the line there."""
    text = json.dumps(ocsf_event(doc, entry_hash), ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# -- CEF -----------------------------------------------------------------------------------
# The CEF Name of the kinds a SIEM sees most (any other kind is its own name).
_CEF_NAMES = {
    "auth.ok": "authentication succeeded", "auth.fail": "authentication failed",
    "auth.denied": "access denied", "login.fail": "login failed",
    "session.open": "session opened", "session.close": "session closed",
    "session.terminated": "session terminated by ledgergate",
    "session.reject": "connection rejected", "command.result": "command result",
    "chunk": "data chunk", "decision.block": "command blocked", "mask": "values masked",
    "token.created": "token created", "token.revoked": "token revoked",
}  # fmt: skip


def _cef_header(value: str) -> str:
    """A CEF header field: backslash and pipe escaped; no line breaks (CEF allows them
    only in extension values), so each becomes a space."""
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def _cef_value(value: str) -> str:
    """A CEF extension value: backslash and equals sign escaped, each line feed and
    carriage return as \\n and \\r (pipes need no escaping there)."""
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\n", "\\n").replace("\r", "\\r")


def cef_line(doc: dict[str, Any], entry_hash: str, *, version: str) -> str:
    """The entry as one CEF line (no line break at the end). ``version`` is the
    product version the header names."""
    kind = _str(doc, "kind") or ""
    severity = _CEF_SEVERITY[_SEVERITY.get(kind, INFORMATIONAL)]
    header = ["CEF:0", PRODUCT, PRODUCT, version, kind, _CEF_NAMES.get(kind, kind), str(severity)]
    admin = kind.split(".", 1)[0] in ("token", "identity", "admin", "policy")
    source, cmd, ts = _dict(doc, "source"), _dict(doc, "command"), _int(doc, "ts_ns")
    status = _status(doc, kind)
    outcome = _str(doc, "outcome") or (_STATUS_NAMES[status].lower() if status else None)
    act = _str(_dict(doc, "decision"), "action") or ("mask" if kind == "mask" else None)
    ext: list[tuple[str, str | None]] = [
        ("rt", _decimal(ts // 10**6 if ts is not None else None)),
        ("suser", _str(doc, "by") if admin else _subject(doc) or _str(doc, "claimed_user")),
        ("duser", _subject(doc) if admin else None),
        ("src", _str(source, "ip")),
        ("spt", _decimal(_int(source, "port"))),
        ("act", act),
        ("outcome", outcome),
        ("reason", _reason(doc)),
        ("requestMethod", _str(cmd, "method")),
        ("request", _str(cmd, "path")),
        ("msg", what(doc)),
    ]
    custom = (
        ("ledgerEntry", _position(doc)),
        ("connection", _str(doc, "connection")),
        ("entryHash", entry_hash),
        ("sessionId", _str(doc, "session_id")),
        ("rule", _rule(doc)),
    )
    for i, (label, value) in enumerate(custom, 1):
        if value:
            ext += [(f"cs{i}Label", label), (f"cs{i}", value)]
    parts = [f"{k}={_cef_value(_cap(v, CEF_MAX_FIELD))}" for k, v in ext if v]
    return "|".join(_cef_header(h) for h in header) + "|" + " ".join(parts)


# -- the writer ------------------------------------------------------------------------------
def product_version() -> str:
    """The installed ledgergate's version (the CEF header's device version)."""
    try:
        return importlib_metadata.version(PRODUCT)
    except importlib_metadata.PackageNotFoundError:
        return "0"


def _emitter(out: IO[str], fmt: str, version: str) -> Callable[[dict[str, Any], str], object]:
    """How one entry is written in ``fmt`` (a CSV writer first writes its header)."""
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        return lambda doc, h: writer.writerow(csv_row(doc, h))
    if fmt == "ocsf":
        return lambda doc, h: out.write(ocsf_json(doc, h) + "\n")
    if fmt == "cef":
        return lambda doc, h: out.write(cef_line(doc, h, version=version) + "\n")
    raise ValueError(f"unknown SIEM format {fmt!r} (one of {', '.join(FORMATS)})")


@dataclass(frozen=True, slots=True)
class SiemSummary:
    streams: dict[str, int]  # stream -> events written

    @property
    def events(self) -> int:
        return sum(self.streams.values())


def export_siem(
    store: Store,
    out: IO[str],
    fmt: str,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    version: str | None = None,
) -> SiemSummary:
    """Write the entries of every stream with ``since_ns <= ts_ns < until_ns`` (either
    bound optional) to ``out`` in ``fmt`` (one of ``FORMATS``), by stream then seq.
    Raises ``SiemError`` for an entry that is not an entry document, and the store's
    ``StoreError``."""
    emit = _emitter(out, fmt, product_version() if version is None else version)
    if since_ns is None and until_ns is None:
        streams = store.streams()
    else:
        streams = store.streams_between(since_ns, until_ns)
    counts: dict[str, int] = {}
    for stream in streams:
        start, stop = 0, None
        if since_ns is not None:
            before = store.last_seq_before(stream, since_ns - ORDER_SLACK_NS)
            start = 0 if before is None else before + 1
        if until_ns is not None:
            last = store.last_seq_before(stream, until_ns)
            stop = 0 if last is None else last + 1
        n, lo = 0, since_ns or 0  # ts_ns is never negative
        for seq, data, h in store.iter_entries(stream, start, stop):
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            ts = _int(doc, "ts_ns")
            if ts is None:
                raise SiemError(f"{stream}:{seq} is not an entry document")
            if ts < lo or (until_ns is not None and ts >= until_ns):
                continue  # sealed out of time order: outside the range
            emit(doc, h.hex())
            n += 1
        counts[stream] = n
    return SiemSummary(counts)
