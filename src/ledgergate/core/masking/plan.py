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
from ledgergate.core.policy.copy import CopyFacts, copy_facts
from ledgergate.core.policy.rules import MaskAction, PolicyRule
from ledgergate.wire.pg import _datarows
from ledgergate.wire.pg.copytext import CopyEncoder, CopyFormat, CopySplitter
from ledgergate.wire.pg.results import CopyRefusal, Field

__all__ = ["CopyMasking", "MaskPlanner", "RowMasking"]

Catalog = Mapping[tuple[int, int], str]  # (table oid, attnum) -> "schema.table.column"
# Types whose binary wire format is their text (UTF-8): text, varchar, bpchar, name.
# Binary values of these are masked like text; other binary values under a rule are NULL.
TEXT_OID = 25
TEXT_LIKE = frozenset({TEXT_OID, 1043, 1042, 19})
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


def _text_field(name: str, oid: int = 0, attnum: int = 0) -> Field:
    """A COPY column: text, attributed when ``oid`` and ``attnum`` are known."""
    return Field(name.encode("utf-8"), oid if attnum else 0, attnum, TEXT_OID, 0)


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
        search_path: list[str] | None = None,
    ) -> None:
        self.rules = [r for r in rules if r.mask is not None]
        self.catalog = catalog
        self.key = key
        self.report = report
        # statement text -> the mask rules whose columns it mentions (see SessionPolicy).
        self.refs = refs
        # Unqualified table names in COPY statements resolve on these schemas.
        self.search_path = search_path or ["public"]
        self._by_table: dict[str, tuple[int, list[tuple[int, str]]]] | None = None

    def _tables(self) -> dict[str, tuple[int, list[tuple[int, str]]]]:
        """``schema.table`` -> (its oid, its columns as (attnum, name) in table order)."""
        if self._by_table is None:
            out: dict[str, tuple[int, list[tuple[int, str]]]] = {}
            for (oid, attnum), name in self.catalog.items():
                table, _, column = name.rpartition(".")
                out.setdefault(table, (oid, []))[1].append((attnum, column))
            for _oid, cols in out.values():
                cols.sort()
            self._by_table = out
        return self._by_table

    def _table(self, name: str | None, schema: str | None = None) -> str | None:
        """The catalog's ``schema.table`` for a table as a statement names it."""
        if name is None:
            return None
        tables = self._tables()
        if schema is not None:
            key = f"{schema}.{name}"
            return key if key in tables else None
        if "." in name:
            return name if name in tables else None
        return next((k for s in self.search_path if (k := f"{s}.{name}") in tables), None)

    def plan_copy(self, sql: bytes, ncols: int, binary: bool) -> CopyMasking | None:
        """The plan for the data of a COPY TO STDOUT with ``ncols`` columns, None when no
        rule touches it; ``CopyRefusal`` when its columns cannot be told apart although
        a column rule could apply (or its format cannot be rewritten)."""
        text = sql.decode("utf-8", "replace")
        try:
            facts = copy_facts(text)
        except ValueError as e:
            raise CopyRefusal(f"its options cannot be read: {e}") from None
        if facts is None:
            raise CopyRefusal("the statement that started it is not a COPY ... TO STDOUT")
        if binary or facts.format.format == "binary":
            raise CopyRefusal("binary COPY data cannot be masked; use FORMAT text or csv")
        fields = self._copy_fields(facts, ncols)
        plan = self.plan(fields, sql)
        if plan is None:
            return None
        names = [f.name.decode("utf-8", "replace") for f in fields]
        quote = facts.format.force_quote_columns(names)
        return CopyMasking(plan, facts.format, ncols, quote)

    def _copy_fields(self, facts: CopyFacts, ncols: int) -> tuple[Field, ...]:
        """The COPY's columns as a RowDescription would give them (as text)."""
        tables = self._tables()
        fields: list[Field] | None
        if facts.query is None:
            key = self._table(facts.table, facts.schema)
            if key is not None:
                oid, cols = tables[key]
                by_name = {c: a for a, c in cols}
                names = facts.columns or tuple(c for _a, c in cols)
                fields = [_text_field(n, oid, by_name.get(n, 0)) for n in names]
            elif facts.columns is not None:
                fields = [_text_field(n) for n in facts.columns]
            else:
                fields = None
        else:
            fields = self._query_fields(facts)
        if fields is not None and len(fields) == ncols:
            return tuple(fields)
        # Columns we cannot name: fine for content detectors, not for a column rule.
        if any(r.mask is not None and r.mask.columns for r in self.rules):
            what = facts.table or "its query"
            raise CopyRefusal(
                f"the columns of {what} cannot be attributed (not in the gateway's catalog "
                "snapshot, or a * over several tables); list the columns or use SELECT"
            )
        return tuple(_text_field("?column?") for _ in range(ncols))

    def _query_fields(self, facts: CopyFacts) -> list[Field] | None:
        """The columns of ``COPY (query)``, or None when a ``*`` hides which they are."""
        tables = self._tables()
        out: list[Field] = []
        for t in facts.targets:
            key = self._table(t.table)
            if t.star:
                if key is None:
                    return None
                oid, cols = tables[key]
                out += [_text_field(c, oid, a) for a, c in cols]
            elif key is not None and t.column is not None:
                oid, cols = tables[key]
                attnum = next((a for a, c in cols if c == t.column), 0)
                out.append(_text_field(t.name, oid, attnum))
            else:
                out.append(_text_field(t.name))
        return out

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


class CopyMasking:
    """One COPY TO STDOUT's plan (``wire.pg.results.CopyPlan``): its data split into rows
    (``wire.pg.copytext``), each row masked like a DataRow, and encoded again in the
    same format. Rows nothing changed in go on as the bytes that came."""

    def __init__(self, rows: RowMasking, fmt: CopyFormat, ncols: int, quote: frozenset[int]):
        self.plan = rows
        self.split = CopySplitter(fmt, columns=ncols)
        self.encoder = CopyEncoder(fmt, force_quote=quote)

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """(what to forward, rows in it) for a piece of COPY data; a row cut at the end
        waits for the rest."""
        out: list[bytes] = []
        rows = 0
        for line in self.split.feed(data):
            if line.header:
                out.append(line.raw)
                continue
            rows += 1
            new = self.plan.mask(line.values)
            out.append(line.raw if new is None else self.encoder.encode(new))
        return b"".join(out), rows

    def finish(self) -> None:
        """The COPY ended: a row still incomplete is an error (``CopyDataError``)."""
        self.plan.finish()
        self.split.finish()


def _column_matches(patterns: list[str], source: str | None, name: str) -> bool:
    if source is not None:
        return any(fnmatchcase(source, p) for p in patterns)
    # Not attributable: match the column part of each pattern against the output name.
    return any(fnmatchcase(name, p.rsplit(".", 1)[-1]) for p in patterns)
