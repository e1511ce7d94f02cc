"""Masking a whole response document: JSON by field paths, text and CSV by detectors.

Owns what the gateway does to an HTTP API answer or an S3 object read through a masked
session. Field rules name JSON paths: ``$.users[*].email``, ``$.items[0].card``,
``$..email`` (any depth), ``$.*.token``; in CSV a path's last name is a column header.
Content detectors (``core.masking.detectors``) then run on every text value that no
field rule masked (JSON strings, CSV cells, the whole of a plain-text body). A document
that cannot be masked under its rules — binary content, a compressed body, JSON or CSV
that does not parse — raises ``Unmaskable``: the caller refuses it, never passes it raw.
Pure: no I/O; counts of what was masked come back for the ``mask`` entry.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from ledgergate.core.masking.detectors import scan
from ledgergate.core.masking.functions import MaskSpec, mask_hits, mask_value

__all__ = ["DocumentMasker", "FieldRule", "Unmaskable", "masker_for_rules", "parse_path"]

# A path is a list of steps: a key, an index, "*" (any key or index), or ".." (any
# depth, then the next step).
Step = str | int
_STEP = re.compile(r"\.\.|\.([A-Za-z0-9_\-$]+|\*)|\[(\*|\d+)\]|\['([^']*)'\]")


class Unmaskable(ValueError):
    """A document the rules cannot be applied to (the message says why)."""


def parse_path(path: str) -> tuple[Step, ...]:
    """``$.a[*].b`` → ("a", "*", "b"); a bare ``email`` means ``$..email``."""
    if not path.startswith("$"):
        return ("..", path)
    steps: list[Step] = []
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ValueError(f"{path!r} is not a JSON path ($.a.b, $.a[*].b, $..b)")
        if m.group(0) == "..":
            steps.append("..")
            nxt = re.match(r"([A-Za-z0-9_\-$]+|\*)", path[m.end() :])
            if nxt is not None:  # "$..email": the name right after ".."
                steps.append(nxt.group(1))
                pos = m.end() + nxt.end()
                continue
        elif m.group(1) is not None:
            steps.append(m.group(1))
        elif m.group(2) is not None:
            steps.append("*" if m.group(2) == "*" else int(m.group(2)))
        else:
            steps.append(m.group(3))
        pos = m.end()
    if not steps or steps[-1] == "..":
        raise ValueError(f"{path!r} names no field")
    return tuple(steps)


def _matches(steps: tuple[Step, ...], path: tuple[Step, ...]) -> bool:
    if not steps:
        return not path
    head = steps[0]
    if head == "..":
        return any(_matches(steps[1:], path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    p = path[0]
    if head == "*" or head == p:
        return _matches(steps[1:], path[1:])
    return False


@dataclass(frozen=True, slots=True)
class FieldRule:
    rule: str  # the policy rule's id (recorded)
    spec: MaskSpec
    fields: tuple[tuple[str, tuple[Step, ...]], ...]  # (as written, parsed)
    detectors: tuple[str, ...]


class DocumentMasker:
    """The mask rules of one session, applied to whole documents."""

    def __init__(self, rules: list[FieldRule], key: bytes) -> None:
        self.rules = rules
        self.key = key

    def mask(self, content_type: str, data: bytes) -> tuple[bytes, Counter[tuple[str, str]]]:
        """The masked document and how many values each (field or detector, rule)
        masked. Raises ``Unmaskable``."""
        ctype = content_type.split(";", 1)[0].strip().lower()
        counts: Counter[tuple[str, str]] = Counter()
        if not data:
            return data, counts
        if ctype == "application/json" or ctype.endswith("+json"):
            return self._json(data, counts), counts
        if ctype in ("text/csv", "application/csv"):
            return self._csv(_text(data), counts).encode("utf-8"), counts
        if ctype.startswith("text/") or ctype in ("application/x-ndjson", "application/xml"):
            return self._detect(_text(data), (), counts).encode("utf-8"), counts
        raise Unmaskable(f"a {ctype or 'untyped'} body cannot be masked (JSON, CSV and text can)")

    def _json(self, data: bytes, counts: Counter[tuple[str, str]]) -> bytes:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise Unmaskable("the JSON body does not parse") from None
        try:
            out = self._walk(doc, (), counts)
        except RecursionError:  # nested deeper than the walk goes: refused, not passed
            raise Unmaskable("the JSON body is nested too deeply to mask") from None
        return orjson.dumps(out)

    def _walk(self, v: Any, path: tuple[Step, ...], counts: Counter[tuple[str, str]]) -> Any:
        for r in self.rules:
            for written, steps in r.fields:
                if _matches(steps, path):
                    return self._whole(v, r, written, counts)
        if isinstance(v, dict):
            return {k: self._walk(x, (*path, k), counts) for k, x in v.items()}
        if isinstance(v, list):
            return [self._walk(x, (*path, i), counts) for i, x in enumerate(v)]
        if isinstance(v, str):
            return self._detect(v, path, counts)
        return v

    def _whole(self, v: Any, r: FieldRule, field: str, counts: Counter[tuple[str, str]]) -> Any:
        """Every value in ``v`` masked by ``r`` (a matched object or list: all of it)."""
        if isinstance(v, dict):
            return {k: self._whole(x, r, field, counts) for k, x in v.items()}
        if isinstance(v, list):
            return [self._whole(x, r, field, counts) for x in v]
        if v is None:
            return None
        counts[(field, r.rule)] += 1
        text = v if isinstance(v, str) else orjson.dumps(v).decode()
        return mask_value(r.spec, text, key=self.key)

    def _detect(self, text: str, path: tuple[Step, ...], counts: Counter[tuple[str, str]]) -> str:
        for r in self.rules:
            if not r.detectors:
                continue
            hits = scan(text, r.detectors)
            if hits:
                for h in hits:
                    counts[(h.detector, r.rule)] += 1
                spec = r.spec
                text = mask_hits(text, hits, lambda _h: spec, key=self.key)  # noqa: B023
        return text

    def _csv(self, text: str, counts: Counter[tuple[str, str]]) -> str:
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error:
            raise Unmaskable("the CSV body does not parse") from None
        if not rows:
            return text
        header = rows[0]
        by_col: dict[int, tuple[FieldRule, str]] = {}
        for i, name in enumerate(header):
            for r in self.rules:
                for written, steps in r.fields:
                    if steps and steps[-1] in (name, "*") and i not in by_col:
                        by_col[i] = (r, written)
        out = io.StringIO(newline="")
        w = csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n")
        w.writerow(header)
        for row in rows[1:]:
            new = []
            for i, cell in enumerate(row):
                hit = by_col.get(i)
                if hit is not None:
                    masked = self._whole(cell, hit[0], hit[1], counts)
                    new.append("" if masked is None else masked)
                else:
                    new.append(self._detect(cell, (), counts))
            w.writerow(new)
        return out.getvalue()


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unmaskable("the text body is not UTF-8") from None


def masker_for_rules(rules: Any, key: bytes) -> DocumentMasker:
    """A masker for policy ``mask`` rules (``PolicyRule`` with fields or detectors)."""
    out = []
    for r in rules:
        m = r.mask
        spec = MaskSpec(m.function, m.keep_last, m.keep_domain, m.replacement)
        fields = tuple((f, parse_path(f)) for f in m.fields)
        out.append(FieldRule(r.id, spec, fields, tuple(m.detectors)))
    return DocumentMasker(out, key)
