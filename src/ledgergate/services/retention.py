"""Retention that keeps the proof: payloads purged and entries pruned by rule, the ledger
still verifying, and what was removed said on the ledger itself.

``run`` walks every stream once. For each entry, the first rule whose connections and
kinds match it decides: past ``entries_after`` the entry is pruned (its bytes replaced by
a stub that keeps its place and hash, ``core.ledger.retention``) and its payloads go
with it; past ``payloads_after`` only its payloads go. A payload still named by an entry
that is kept is kept (payloads are addressed by digest and can be shared).

Order: the ``retention.run`` entry (rule by rule: payloads purged, entries pruned and
their ranges per stream) is written to the ledger first, then the store is changed: a
record without its change is harmless, a change without its record is not, and
``verify_pruned`` names any pruned entry no record covers. Retention's own records are
never pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import orjson

from ledgergate.core.config import RetentionRule, parse_duration
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.ledger.retention import RETENTION_KINDS, is_stub, stub
from ledgergate.core.ledger.verify import Problem, StreamReport
from ledgergate.services.ledger import LedgerWriter
from ledgergate.store.base import Store

__all__ = ["UNRECORDED_PRUNE", "RetentionReport", "run", "verify_pruned"]

# Stubs written per store transaction.
PRUNE_BATCH = 1000
# A problem kind: entries emptied with no retention record covering them.
UNRECORDED_PRUNE = "unrecorded_prune"


@dataclass
class RetentionReport:
    at_ns: int
    payloads: dict[str, int] = field(default_factory=dict)  # rule -> payloads purged
    entries: dict[str, int] = field(default_factory=dict)  # rule -> entries pruned
    ranges: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)
    dry_run: bool = False

    def as_fields(self) -> dict[str, Any]:
        rules = sorted(set(self.payloads) | set(self.entries))
        return {
            "rules": {
                r: {
                    "payloads": self.payloads.get(r, 0),
                    "entries": self.entries.get(r, 0),
                    "ranges": self.ranges.get(r, {}),
                }
                for r in rules
            }
        }


def _payloads(doc: dict[str, Any]) -> list[str]:
    out = []
    for part in (doc, doc.get("command"), doc.get("chunk")):
        if isinstance(part, dict) and isinstance(part.get("payload"), str):
            out.append(str(part["payload"]))
    return out


def _rule_for(doc: dict[str, Any], rules: Sequence[RetentionRule]) -> RetentionRule | None:
    kind = str(doc.get("kind"))
    if kind in RETENTION_KINDS:
        return None
    conn = doc.get("connection")
    for r in rules:
        if r.kinds is not None and kind not in r.kinds:
            continue
        if not isinstance(conn, str) or not any(fnmatchcase(conn, g) for g in r.connections):
            continue
        return r
    return None


def _add_range(ranges: dict[str, list[list[int]]], stream: str, seq: int) -> None:
    rs = ranges.setdefault(stream, [])
    if rs and rs[-1][1] == seq - 1:
        rs[-1][1] = seq
    else:
        rs.append([seq, seq])


def run(
    store: Store,
    writer: LedgerWriter,
    rules: Sequence[RetentionRule],
    now_ns: int,
    *,
    dry_run: bool = False,
) -> RetentionReport:
    """Apply ``rules`` as of ``now_ns`` (see the module docstring)."""
    rep = RetentionReport(now_ns, dry_run=dry_run)
    if not rules:
        return rep
    keep: set[str] = set()
    purge: dict[str, str] = {}  # digest -> rule
    stubs: dict[str, list[tuple[int, bytes]]] = {}
    for stream in store.streams():
        top = store.max_seq(stream)
        if top is None:
            continue
        for seq, data, _ in store.iter_entries(stream, 0, top + 1):
            if is_stub(data):
                continue
            doc = orjson.loads(data)
            digests = _payloads(doc) if b'"payload"' in data else []
            rule = _rule_for(doc, rules)
            age = now_ns - int(doc.get("ts_ns", now_ns))
            if rule is not None and rule.entries_after and age > parse_duration(rule.entries_after):
                stubs.setdefault(stream, []).append((seq, stub(doc, rule.name, now_ns)))
                rep.entries[rule.name] = rep.entries.get(rule.name, 0) + 1
                _add_range(rep.ranges.setdefault(rule.name, {}), stream, seq)
                for d in digests:
                    purge.setdefault(d, rule.name)
            elif (
                rule is not None
                and rule.payloads_after
                and age > parse_duration(rule.payloads_after)
            ):
                for d in digests:
                    purge.setdefault(d, rule.name)
            else:
                keep.update(digests)
    gone = {d: r for d, r in purge.items() if d not in keep}
    for r in gone.values():
        rep.payloads[r] = rep.payloads.get(r, 0) + 1
    if dry_run or not (gone or stubs):
        return rep
    writer.append([Draft(now_ns, "retention.run", rep.as_fields())], now_ns)
    for stream, rows in stubs.items():
        for i in range(0, len(rows), PRUNE_BATCH):
            with store.transaction():
                store.prune_entries(stream, rows[i : i + PRUNE_BATCH])
    if gone:
        store.delete_payload_digests(sorted(gone))
    return rep


def _covered(ranges: Iterable[list[int]], first: int, last: int) -> bool:
    """Whether [first, last] lies within the union of ``ranges``."""
    at = first
    for a, b in sorted(ranges):
        if a > at:
            return False
        if b >= at:
            at = b + 1
        if at > last:
            return True
    return at > last


def verify_pruned(
    store: Store, reports: Sequence[StreamReport]
) -> list[tuple[StreamReport, Problem]]:
    """A problem for each run of pruned entries that no ``retention.run`` record on the
    ledger covers (content removed by someone other than retention)."""
    if not any(r.pruned_ranges for r in reports):
        return []
    recorded: dict[str, list[list[int]]] = {}
    for row in store.find_entries(kinds=("retention.run",)):
        try:
            doc = orjson.loads(row.canonical)
        except orjson.JSONDecodeError:
            continue
        for rule in (doc.get("rules") or {}).values():
            for stream, rs in ((rule or {}).get("ranges") or {}).items():
                recorded.setdefault(str(stream), []).extend(
                    [int(a), int(b)] for a, b in rs if isinstance(a, int) and isinstance(b, int)
                )
    out = []
    for r in reports:
        for first, last in r.pruned_ranges:
            if not _covered(recorded.get(r.stream, []), first, last):
                msg = (
                    f"{r.stream} entries {first}..{last} were emptied with no retention "
                    "record covering them"
                )
                out.append((r, Problem(UNRECORDED_PRUNE, first, msg)))
    return out
