"""Insights for self-reflection: what a team did over a period, read from the ledger.

One pass over the entries of the period (and of a baseline before it) finds:
privileged commands (DDL and role changes, UPDATE/DELETE without WHERE, bucket, topic
and API administration), blocked attempts by rule and identity, review turnaround
(time to decision, decisions per reviewer, self-approval attempts), first-time access
of an identity to a table, bucket, topic or path, off-hours sessions, the volume of
each identity against its own baseline, and sessions longer than a threshold; from the
store, stale identities and tokens. ``incident_timeline`` lists everything that ran in a
window, across protocols, in time order.

It reads what the recording level kept (statement texts are redacted unless a
connection records ``full``), never a payload, and shows each finding with its entry
(``stream:seq``) so anyone can look it up, prove it, or replay its session. Reads only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ledgergate.services.journal import subject_of
from ledgergate.store.base import Store

__all__ = ["Finding", "Insights", "InsightsOptions", "collect", "incident_timeline"]

DAY_NS = 86400 * 10**9
# S3 operations and Kafka APIs that administer rather than use (bucket and topic life,
# their access policy and configuration).
ADMIN_OPS = frozenset(
    {
        # S3 operations, as the gateway names them
        "CreateBucket", "DeleteBucket", "PutBucketPolicy", "DeleteBucketPolicy",
        "PutBucketAcl", "PutBucketLifecycleConfiguration", "PutBucketVersioning",
        "PutBucketEncryption", "PutObjectLockConfiguration", "DeleteObjects",
        # Kafka APIs, as the ledger names them (the API name in lower case)
        "create_topics", "delete_topics", "create_partitions", "alter_configs",
        "incremental_alter_configs", "delete_records", "create_acls", "delete_acls",
        "alter_partition_reassignments", "delete_groups", "alter_user_scram_credentials",
    }
)  # fmt: skip
# How many findings of one kind a report lists (the counts are always whole).
MAX_LISTED = 200
# A statement text is shown up to this long in a finding.
MAX_TEXT = 300
_PLACEHOLDER = re.compile(r"(?<![\w?])\?(?![\w?|&])")


@dataclass(frozen=True)
class InsightsOptions:
    since_ns: int
    until_ns: int
    now_ns: int
    baseline_days: int = 90  # how far back "first time" and "usual volume" look
    stale_days: int = 90  # unused this long: stale
    max_token_days: int = 90  # tokens living longer than this are flagged
    long_session_hours: float = 8.0
    work_hours: tuple[int, int] = (8, 19)  # [start, end) in UTC, Monday to Friday
    volume_factor: float = 3.0  # above this many times the baseline rate: flagged


@dataclass(frozen=True)
class Finding:
    ts_ns: int
    identity: str
    connection: str | None
    what: str
    entry: str  # stream:seq

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts_ns": self.ts_ns,
            "identity": self.identity,
            "connection": self.connection,
            "what": self.what,
            "entry": self.entry,
        }


@dataclass
class Insights:
    options: InsightsOptions
    privileged: list[Finding] = field(default_factory=list)
    privileged_count: Counter[str] = field(default_factory=Counter)  # by category
    blocked_by_rule: Counter[str] = field(default_factory=Counter)
    blocked_by_identity: Counter[str] = field(default_factory=Counter)
    blocked: list[Finding] = field(default_factory=list)
    decisions_by_reviewer: Counter[str] = field(default_factory=Counter)
    decision_seconds: list[float] = field(default_factory=list)
    self_approval_attempts: list[Finding] = field(default_factory=list)
    reviews_by_outcome: Counter[str] = field(default_factory=Counter)
    first_access: list[Finding] = field(default_factory=list)
    off_hours: list[Finding] = field(default_factory=list)
    long_sessions: list[Finding] = field(default_factory=list)
    volume: list[dict[str, Any]] = field(default_factory=list)
    stale_identities: list[dict[str, Any]] = field(default_factory=list)
    stale_tokens: list[dict[str, Any]] = field(default_factory=list)
    long_lived_tokens: list[dict[str, Any]] = field(default_factory=list)
    sessions: int = 0
    commands: int = 0

    def as_dict(self) -> dict[str, Any]:
        o = self.options
        secs = sorted(self.decision_seconds)
        return {
            "period": {"since_ns": o.since_ns, "until_ns": o.until_ns},
            "sessions": self.sessions,
            "commands": self.commands,
            "privileged": {
                "count": dict(self.privileged_count),
                "listed": [f.as_dict() for f in self.privileged],
            },
            "blocked": {
                "by_rule": dict(self.blocked_by_rule),
                "by_identity": dict(self.blocked_by_identity),
                "listed": [f.as_dict() for f in self.blocked],
            },
            "reviews": {
                "by_outcome": dict(self.reviews_by_outcome),
                "decisions_by_reviewer": dict(self.decisions_by_reviewer),
                "time_to_decision_s": {
                    "median": secs[len(secs) // 2] if secs else None,
                    "max": secs[-1] if secs else None,
                    "count": len(secs),
                },
                "self_approval_attempts": [f.as_dict() for f in self.self_approval_attempts],
            },
            "first_access": [f.as_dict() for f in self.first_access],
            "off_hours": [f.as_dict() for f in self.off_hours],
            "long_sessions": [f.as_dict() for f in self.long_sessions],
            "volume": self.volume,
            "stale_identities": self.stale_identities,
            "stale_tokens": self.stale_tokens,
            "long_lived_tokens": self.long_lived_tokens,
        }


def _subject(doc: dict[str, Any]) -> str:
    return subject_of(doc.get("identity")) or "-"


def _entries(store: Store, since_ns: int, until_ns: int) -> Iterator[tuple[str, int, bytes]]:
    """(stream, seq, canonical) of every entry in [since_ns, until_ns), stream by stream."""
    for stream in store.streams_between(since_ns, until_ns):
        before = store.last_seq_before(stream, since_ns)
        last = store.last_seq_before(stream, until_ns)
        if last is None:
            continue
        for seq, data, _ in store.iter_entries(
            stream, 0 if before is None else before + 1, last + 1
        ):
            yield stream, seq, data


def _parseable(text: str) -> str:
    """A redacted statement made parseable again: each ``?`` literal as a parameter."""
    return _PLACEHOLDER.sub("$1", text)


def _sql_facts(
    text: str, cache: dict[str, tuple[list[str], list[str]]]
) -> tuple[list[str], list[str]]:
    """(privileged categories, tables touched) of a statement text."""
    got = cache.get(text)
    if got is not None:
        return got
    # pglast's parser is imported with the first statement to read, not by every CLI
    # command that imports this module.
    from ledgergate.core.policy.sql import classify

    cats: list[str] = []
    tables: list[str] = []
    c = classify(_parseable(text))
    for st in c.statements:
        kinds = set(st.kinds or (st.kind,))
        if "ddl" in kinds:
            cats.append("ddl")
        if "dcl" in kinds or st.role_change or st.alter_system:
            cats.append("role or system change")
        if kinds & {"update", "delete"} and st.where is False:
            cats.append("write without WHERE")
        tables.extend(st.reads)
        tables.extend(st.writes)
    if len(cache) < 10_000:
        cache[text] = (cats, tables)
    return cats, tables


# Programs whose use on a host is privileged, by category (argv[0]'s base name; ``sudo``
# and ``su`` are seen before ``core.policy.ssh`` looks through them).
_SSH_PRIVILEGED: dict[str, str] = {
    name: category
    for category, names in (
        ("root on a host", "sudo su doas pkexec"),
        ("destructive command", "mkfs dd shred wipefs fdisk parted"),
        ("service control", "systemctl service reboot shutdown kill pkill"),
        ("package change", "apt apt-get yum dnf pip npm dpkg rpm"),
        ("account or permission change", "useradd usermod passwd chown chmod visudo"),
        ("cluster or container control", "kubectl helm docker crictl"),
    )
    for name in names.split()
}


def _ssh_facts(doc: dict[str, Any], cmd: dict[str, Any], op: str) -> tuple[list[str], list[str]]:
    """(privileged categories, objects reached) of an SSH command: the host, and for SFTP
    the path; an exec line's programs, ``rm -r`` and ``sudo`` looked at."""
    from ledgergate.core.policy.ssh import UnreadableCommand, simple_commands

    host = f"host {doc.get('connection')}"
    if op.startswith("sftp:"):
        path = cmd.get("path")
        return [], [host, *([f"path {path}"] if isinstance(path, str) else [])]
    text = cmd.get("text")
    if not isinstance(text, str) or not text:
        return [], [host]
    cats: list[str] = []
    first = text.split(None, 1)[0].rsplit("/", 1)[-1] if text.strip() else ""
    if first in ("sudo", "su", "doas", "pkexec"):
        cats.append("root on a host")
    try:
        commands = simple_commands(text)
    except UnreadableCommand:
        commands = []
    for argv in commands:
        name = argv[0].rsplit("/", 1)[-1]
        cat = _SSH_PRIVILEGED.get(name) or _SSH_PRIVILEGED.get(name.split(".", 1)[0])
        if name == "rm" and any(a.startswith("-") and "r" in a.lower() for a in argv[1:]):
            cat = "destructive command"
        if cat is not None and cat not in cats:
            cats.append(cat)
    return cats, [host]


def _objects(
    doc: dict[str, Any], cache: dict[str, tuple[list[str], list[str]]]
) -> tuple[list[str], list[str]]:
    """(privileged categories, objects reached) of a command entry, any protocol."""
    cmd = doc.get("command")
    if not isinstance(cmd, dict):
        return [], []
    proto = cmd.get("protocol")
    op = str(cmd.get("op") or "")
    if proto == "s3":
        bucket = cmd.get("bucket")
        cats = ["bucket administration"] if op in ADMIN_OPS else []
        return cats, [f"bucket {bucket}"] if bucket else []
    if proto == "kafka":
        req = cmd.get("request") if isinstance(cmd.get("request"), dict) else {}
        assert isinstance(req, dict)
        topics = [
            str(t.get("name")) if isinstance(t, dict) else str(t)
            for t in req.get("topics") or []
            if isinstance(t, dict | str)
        ]
        cats = ["topic administration"] if op in ADMIN_OPS else []
        return cats, [f"topic {t}" for t in topics if t and t != "None"]
    if proto == "ssh":
        return _ssh_facts(doc, cmd, op)
    if proto == "http":
        method, path = str(cmd.get("method") or ""), str(cmd.get("path") or "")
        cats = ["API deletion"] if method == "DELETE" else []
        return cats, [f"{method} {path.split('?')[0]}"] if path else []
    text = cmd.get("text")
    if not isinstance(text, str) or not text:
        return [], []
    cats, tables = _sql_facts(text, cache)
    return cats, [f"table {t}" for t in tables]


def _what(doc: dict[str, Any]) -> str:
    cmd = doc.get("command") if isinstance(doc.get("command"), dict) else {}
    assert isinstance(cmd, dict)
    text = cmd.get("text") or cmd.get("statement")
    if not text:
        parts = [
            cmd.get("method"),
            cmd.get("path"),
            cmd.get("op"),
            cmd.get("bucket"),
            cmd.get("key"),
        ]
        text = " ".join(str(p) for p in parts if p)
    text = str(text or doc.get("kind"))
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def collect(store: Store, o: InsightsOptions) -> Insights:
    ins = Insights(o)
    cache: dict[str, tuple[list[str], list[str]]] = {}
    base_from = o.since_ns - o.baseline_days * DAY_NS
    seen: set[tuple[str, str]] = set()
    base_volume: Counter[str] = Counter()
    volume: Counter[str] = Counter()
    for _, _, data in _entries(store, base_from, o.since_ns):  # the baseline
        if b'"kind":"command"' not in data and b'"kind":"chunk"' not in data:
            continue
        doc = orjson.loads(data)
        who = _subject(doc)
        if doc.get("kind") == "chunk":
            chunk = doc.get("chunk") if isinstance(doc.get("chunk"), dict) else {}
            assert isinstance(chunk, dict)
            size = chunk.get("size")
            base_volume[who] += size if isinstance(size, int) else 0
            if isinstance(chunk.get("topic"), str):
                seen.add((who, f"topic {chunk['topic']}"))
            continue
        base_volume[who] += 0
        for obj in _objects(doc, cache)[1]:
            seen.add((who, obj))
    requested: dict[str, int] = {}
    opened: dict[str, tuple[int, str, str | None, str]] = {}
    for stream, seq, data in _entries(store, o.since_ns, o.until_ns):
        doc = orjson.loads(data)
        kind = str(doc.get("kind"))
        ts = int(doc.get("ts_ns", 0))
        who = _subject(doc)
        conn = doc.get("connection") if isinstance(doc.get("connection"), str) else None
        ref = f"{stream}:{seq}"
        if kind == "chunk":
            chunk = doc.get("chunk") if isinstance(doc.get("chunk"), dict) else {}
            assert isinstance(chunk, dict)
            size = chunk.get("size")
            volume[who] += size if isinstance(size, int) else 0
            topic = chunk.get("topic")
            if isinstance(topic, str) and (who, f"topic {topic}") not in seen:
                seen.add((who, f"topic {topic}"))
                if len(ins.first_access) < MAX_LISTED:
                    ins.first_access.append(Finding(ts, who, conn, f"first topic {topic}", ref))
        elif kind == "command":
            ins.commands += 1
            cats, objs = _objects(doc, cache)
            for cat in cats:
                ins.privileged_count[cat] += 1
            if cats and len(ins.privileged) < MAX_LISTED:
                ins.privileged.append(
                    Finding(ts, who, conn, f"{', '.join(cats)}: {_what(doc)}", ref)
                )
            for obj in objs:
                if (who, obj) not in seen:
                    seen.add((who, obj))
                    if len(ins.first_access) < MAX_LISTED:
                        ins.first_access.append(Finding(ts, who, conn, f"first {obj}", ref))
        elif kind == "decision.block":
            d = doc.get("decision") if isinstance(doc.get("decision"), dict) else {}
            assert isinstance(d, dict)
            rule = str(d.get("rule") or "-")
            ins.blocked_by_rule[rule] += 1
            ins.blocked_by_identity[who] += 1
            if len(ins.blocked) < MAX_LISTED:
                ins.blocked.append(Finding(ts, who, conn, f"{rule}: {_what(doc)}", ref))
        elif kind == "session.open":
            ins.sessions += 1
            opened[str(doc.get("session_id"))] = (ts, who, conn, ref)
            t = dt.datetime.fromtimestamp(ts / 1e9, dt.UTC)
            start, end = o.work_hours
            if (t.weekday() >= 5 or not start <= t.hour < end) and len(ins.off_hours) < MAX_LISTED:
                ins.off_hours.append(
                    Finding(ts, who, conn, f"session opened {t:%a %H:%M} UTC", ref)
                )
        elif kind in ("session.close", "session.terminated"):
            began = opened.pop(str(doc.get("session_id")), None)
            if began is not None and ts - began[0] > o.long_session_hours * 3600 * 10**9:
                hours = (ts - began[0]) / 3.6e12
                ins.long_sessions.append(
                    Finding(began[0], began[1], began[2], f"session lasted {hours:.1f} h", began[3])
                )
        elif kind.startswith("review."):
            _review(ins, doc, kind, ts, who, conn, ref, requested)
    _volume(ins, o, base_volume, volume, base_from)
    _stale(ins, store, o)
    return ins


def _review(
    ins: Insights,
    doc: dict[str, Any],
    kind: str,
    ts: int,
    who: str,
    conn: str | None,
    ref: str,
    requested: dict[str, int],
) -> None:
    r = doc.get("review") if isinstance(doc.get("review"), dict) else {}
    assert isinstance(r, dict)
    rid, event = str(r.get("id")), str(r.get("event"))
    if kind == "review.refused" and event == "self-approval":
        ins.self_approval_attempts.append(
            Finding(ts, str(r.get("actor")), conn, f"decided on their own request {rid}", ref)
        )
    elif event == "request":
        requested[rid] = ts
    elif event in ("approve", "deny", "vote"):
        d = doc.get("decision") if isinstance(doc.get("decision"), dict) else {}
        assert isinstance(d, dict)
        ins.decisions_by_reviewer[str(d.get("reviewer") or r.get("actor"))] += 1
        if rid in requested and event != "vote":
            ins.decision_seconds.append((ts - requested[rid]) / 1e9)
    state = kind.removeprefix("review.")
    if state in ("approved", "denied", "expired", "cancelled"):
        ins.reviews_by_outcome[state] += 1


def _volume(
    ins: Insights, o: InsightsOptions, base: Counter[str], now: Counter[str], base_from: int
) -> None:
    span = max(o.until_ns - o.since_ns, 1)
    base_span = max(o.since_ns - base_from, 1)
    for who, got in now.most_common():
        usual = base[who] * span / base_span
        if who not in base:
            continue  # no baseline: first-time access says it already
        if got > o.volume_factor * max(usual, 1):
            ins.volume.append(
                {"identity": who, "bytes": got, "usual_bytes": int(usual),
                 "ratio": round(got / max(usual, 1), 1)}
            )  # fmt: skip


def _stale(ins: Insights, store: Store, o: InsightsOptions) -> None:
    stale_before = o.now_ns - o.stale_days * DAY_NS
    for ident in store.list_identities():
        if ident.disabled_ns is not None:
            continue
        last = store.find_entries(
            kinds=("session.open",), identity=ident.name, newest_first=True, limit=1
        )
        last_ns = last[0].ts_ns if last else None
        if last_ns is None or last_ns < stale_before:
            ins.stale_identities.append(
                {"identity": ident.name, "kind": ident.kind, "last_session_ns": last_ns}
            )
    for t in store.list_tokens():
        if t.revoked_ns is not None or t.expires_ns <= o.now_ns:
            continue
        used = t.last_used_ns or t.created_ns
        if used < stale_before:
            ins.stale_tokens.append(
                {"id": t.id, "identity": t.identity, "last_used_ns": t.last_used_ns}
            )
        if t.expires_ns - t.created_ns > o.max_token_days * DAY_NS:
            ins.long_lived_tokens.append(
                {"id": t.id, "identity": t.identity,
                 "days": round((t.expires_ns - t.created_ns) / DAY_NS)}
            )  # fmt: skip


def incident_timeline(store: Store, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
    """Everything that ran in the window, every protocol, in time order: each entry but
    chunks, which are summed per session and direction."""
    out: list[dict[str, Any]] = []
    chunks: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for stream, seq, data in _entries(store, since_ns, until_ns):
        doc = orjson.loads(data)
        if doc.get("kind") == "chunk":
            c = chunks[(str(doc.get("session_id")), str(doc.get("direction")))]
            size = (doc.get("chunk") or {}).get("size")
            c[0] += 1
            c[1] += size if isinstance(size, int) else 0
            c[2] = int(doc.get("ts_ns", 0))
            continue
        out.append(
            {
                "ts_ns": int(doc.get("ts_ns", 0)),
                "kind": doc.get("kind"),
                "identity": _subject(doc),
                "connection": doc.get("connection"),
                "session_id": doc.get("session_id"),
                "what": _what(doc)
                if doc.get("command")
                else str(doc.get("outcome") or doc.get("reason") or ""),
                "entry": f"{stream}:{seq}",
            }
        )
    for (sid, direction), (n, size, last) in chunks.items():
        out.append(
            {"ts_ns": last, "kind": "chunks", "identity": None, "connection": None,
             "session_id": sid, "what": f"{n} chunks {direction}, {size} bytes", "entry": None}
        )  # fmt: skip
    out.sort(key=lambda e: (e["ts_ns"], e["entry"] or ""))
    return out
