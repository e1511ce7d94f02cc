"""Mask plans: from a result's columns and a session's mask rules to rewritten values.

A column is attributed through the catalog (table OID and column number from the
RowDescription → ``schema.table.column``), so aliases do not hide it. When attribution
is impossible (an expression, a table the catalog snapshot does not know), the rule's
column pattern is matched against the output column's name instead: more is masked,
never less. Content detectors run on every text value not already masked by a column
rule. Binary-format values under a column rule become NULL (type-correct for any type);
raw values never pass. The plan counts what it masked per column, rule and detector,
never keeping a value, and reports it when the result set ends. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ledgergate.core.masking.detectors import Hit, joinable, scan
from ledgergate.core.masking.functions import MaskSpec, mask_hits, mask_value
from ledgergate.core.policy.rules import MaskAction, PolicyRule
from ledgergate.wire.pg import _datarows
from ledgergate.wire.pg.results import Field

__all__ = ["MaskPlanner", "RowMasking"]

Catalog = Mapping[tuple[int, int], str]  # (table oid, attnum) -> "schema.table.column"
# Types whose binary wire format is their text (UTF-8): text, varchar, bpchar, name.
# Binary values of these are masked like text; other binary values under a rule are NULL.
TEXT_LIKE = frozenset({25, 1043, 1042, 19})
# Content detectors look into values of these types only (text, varchar, bpchar, name,
# json, jsonb, xml, unknown): numbers, dates and the like hold no free text. A card
# number kept in a numeric column is a column rule's job.
SCANNED = TEXT_LIKE | {114, 3802, 142, 705}


def spec_of(m: MaskAction) -> MaskSpec:
    return MaskSpec(
        function=m.function,
        keep_last=m.keep_last,
        keep_domain=m.keep_domain,
        replacement=m.replacement,
    )


@dataclass(frozen=True, slots=True)
class _Col:
    index: int
    field: str  # output column name
    source: str | None  # schema.table.column when attributed
    binary: bool
    rule: str | None  # column rule masking it
    spec: MaskSpec | None
    detect: tuple[tuple[str, tuple[str, ...], MaskSpec], ...]  # (rule, detectors, spec)


class RowMasking:
    """One result set's plan (``wire.pg.results.RowPlan``).

    ``rewrite`` takes a whole run of DataRows: the native row loop applies the
    functions it knows (``null``, ``redact``, ``fixed``, ``partial``) itself and calls
    ``_value`` for the rest (``tokenize``, content detectors, values that are not UTF-8).
    ``mask`` is the same plan row by row, in Python.
    """

    def __init__(
        self,
        cols: list[_Col],
        key: bytes,
        report: Callable[[list[dict[str, Any]], int], None] | None,
        width: int = 0,
    ) -> None:
        self.cols = cols
        self.key = key
        self._report = report
        self.counts: dict[tuple[str, str | None, str, str | None], int] = {}
        self.rows = 0
        self._by_index = {c.index: c for c in cols}
        acts: list[tuple[int, int, bool, bytes] | None] = [None] * max(
            width, 1 + max(c.index for c in cols)
        )
        for c in cols:
            acts[c.index] = _action(c)
        # Columns scanned by detectors only, all joinable: a read's worth of values is
        # scanned at once (``_scan_run``) and fed back to the native loop.
        self._batch = [
            c
            for c in cols
            if acts[c.index] is not None
            and c.rule is None
            and all(joinable(names) for _r, names, _s in c.detect)
        ]
        for c in self._batch:
            acts[c.index] = (FEED, 0, False, b"")
        self._batch_index = tuple(c.index for c in self._batch)
        self.actions = tuple(acts)
        # Columns whose counts come back from the native loop (the callback counts its own).
        self._native = [c for c in cols if (a := acts[c.index]) is not None and a[0] != CALL]

    def _count(self, c: _Col, rule: str, detector: str | None, n: int = 1) -> None:
        k = (c.field, c.source, rule, detector)
        self.counts[k] = self.counts.get(k, 0) + n

    def rewrite(self, buf: bytes | bytearray, pos: int) -> tuple[bytes, int, int, bool]:
        """The run of complete DataRows at ``pos``: (bytes to forward, end, rows, changed)."""
        feeds: list[list[bytes | None] | None] | None = None
        if self._batch:
            stop, _n, columns = _datarows.gather(buf, pos, self._batch_index)
            feeds = [None] * len(self.actions)
            for c, values in zip(self._batch, columns, strict=True):
                feeds[c.index] = self._scan_run(c, values)
        out, end, n, counts, changed = _datarows.rewrite(buf, pos, self.actions, self._value, feeds)
        if feeds is not None and end != stop:
            raise ValueError("a run of DataRows read twice gave different rows")
        self.rows += n
        for c in self._native:
            if counts[c.index]:
                assert c.rule is not None
                self._count(c, c.rule, None, counts[c.index])
        return out, end, n, changed

    def mask(self, values: list[bytes | None]) -> list[bytes | None] | None:
        self.rows += 1
        out: list[bytes | None] | None = None
        for c in self.cols:
            if c.index >= len(values):
                continue
            v = values[c.index]
            if v is None:
                continue
            new = self._masked(c, v)
            if new is v:
                continue
            if out is None:
                out = list(values)
            out[c.index] = new
        return out

    def _value(self, index: int, v: bytes) -> bytes | None:
        """One non-NULL value of column ``index`` masked in Python (``v`` itself when
        nothing in it changed)."""
        return self._masked(self._by_index[index], v)

    def _scan_run(self, c: _Col, values: list[bytes | None]) -> list[bytes | None]:
        """Column ``c``'s values in a run of rows, scanned by its detectors as one text.

        The values are joined with NUL, which PostgreSQL text never holds and which the
        joinable detectors treat as the edge of a value: the hits are the ones each value
        would give alone, and so are the masked values and the counts. Should a value or
        a mask hold a NUL after all, each value is scanned alone instead.
        """
        joined = b"\x00".join(b"" if v is None else v for v in values)
        if joined.count(b"\x00") != len(values) - 1:
            return [None if v is None else self._masked(c, v) for v in values]
        text = joined.decode("utf-8", "replace")
        changed = text
        found: list[tuple[str, str]] = []
        for rule, names, spec in c.detect:
            hits = scan(changed, names)
            if hits:
                found += [(rule, h.detector) for h in hits]
                changed = mask_hits(changed, hits, _const(spec), key=self.key)
        if changed is text:
            return values
        after = changed.split("\x00")
        if len(after) != len(values):  # a mask wrote a NUL
            return [None if v is None else self._masked(c, v) for v in values]
        for rule, detector in found:
            self._count(c, rule, detector)
        before = text.split("\x00")
        return [
            v if v is None or a == b else a.encode("utf-8")
            for v, a, b in zip(values, after, before, strict=True)
        ]

    def _masked(self, c: _Col, v: bytes) -> bytes | None:
        if c.spec is not None and c.rule is not None:
            self._count(c, c.rule, None)
            if c.binary:
                return None
            m = mask_value(c.spec, v.decode("utf-8", "replace"), key=self.key)
            return None if m is None else m.encode("utf-8")
        if c.detect and not c.binary:
            text = v.decode("utf-8", "replace")
            changed = text
            for rule, names, spec in c.detect:
                hits = scan(changed, names)
                if hits:
                    for h in hits:
                        self._count(c, rule, h.detector)
                    changed = mask_hits(changed, hits, _const(spec), key=self.key)
            if changed is not text:
                return changed.encode("utf-8")
        return v

    def finish(self) -> None:
        if self._report is not None and self.counts:
            items = [
                {
                    "field": f,
                    "source": s,
                    "detector_or_rule": d if d is not None else r,
                    "rule": r,
                    "count": n,
                }
                for (f, s, r, d), n in sorted(self.counts.items(), key=str)
            ]
            self._report(items, self.rows)
        self.counts = {}
        self.rows = 0


# Actions of the native row loop (wire/pg/_datarows.c).
NULL, CONST, PARTIAL, CALL, FEED = 1, 2, 3, 4, 5


def _action(c: _Col) -> tuple[int, int, bool, bytes] | None:
    """What the native row loop does with column ``c``."""
    spec = c.spec
    if spec is not None and c.rule is not None:
        if c.binary or spec.function == "null":
            return (NULL, 0, False, b"")
        if spec.function in ("redact", "fixed"):
            m = mask_value(spec, "", key=b"")
            assert m is not None
            return (CONST, 0, False, m.encode("utf-8"))
        if spec.function == "partial":
            return (PARTIAL, spec.keep_last, spec.keep_domain, b"")
        return (CALL, 0, False, b"")
    if c.detect and not c.binary:
        return (CALL, 0, False, b"")
    return None


def _const(spec: MaskSpec) -> Callable[[Hit], MaskSpec]:
    return lambda _h: spec


class MaskPlanner:
    """Plans for a session: its mask rules, the connection's catalog, the masking key."""

    def __init__(
        self,
        rules: list[PolicyRule],
        catalog: Catalog,
        key: bytes,
        report: Callable[[list[dict[str, Any]], int], None] | None = None,
        refs: Callable[[str], frozenset[str]] | None = None,
    ) -> None:
        self.rules = [r for r in rules if r.mask is not None]
        self.catalog = catalog
        self.key = key
        self.report = report
        # statement text -> the mask rules whose columns it mentions (see SessionPolicy).
        self.refs = refs

    def plan(self, fields: tuple[Field, ...], sql: bytes = b"") -> RowMasking | None:
        hinted: frozenset[str] = frozenset()
        if self.refs is not None and sql:
            hinted = self.refs(sql.decode("utf-8", "replace"))
        cols: list[_Col] = []
        for i, f in enumerate(fields):
            name = f.name.decode("utf-8", "replace")
            source = self.catalog.get((f.table_oid, f.attnum)) if f.table_oid else None
            rule: str | None = None
            spec: MaskSpec | None = None
            detect: list[tuple[str, tuple[str, ...], MaskSpec]] = []
            for r in self.rules:
                m = r.mask
                assert m is not None
                if rule is None and m.columns and _column_matches(m.columns, source, name):
                    rule, spec = r.id, spec_of(m)
                elif rule is None and source is None and r.id in hinted and f.type_oid in SCANNED:
                    # Computed from a masked column (the statement mentions it) and not
                    # attributable: masked under that rule rather than passed through.
                    rule, spec = r.id, spec_of(m)
                if m.detectors and f.type_oid in SCANNED:
                    detect.append((r.id, tuple(m.detectors), spec_of(m)))
            if rule is not None or detect:
                binary = f.format == 1 and f.type_oid not in TEXT_LIKE
                cols.append(_Col(i, name, source, binary, rule, spec, tuple(detect)))
        if not cols:
            return None
        return RowMasking(cols, self.key, self.report, len(fields))


def _column_matches(patterns: list[str], source: str | None, name: str) -> bool:
    if source is not None:
        return any(fnmatchcase(source, p) for p in patterns)
    # Not attributable: match the column part of each pattern against the output name.
    return any(fnmatchcase(name, p.rsplit(".", 1)[-1]) for p in patterns)
