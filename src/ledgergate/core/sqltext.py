"""SQL text as the ledger records it: statements split, literals redacted.

Owns what a ``command`` entry says about a statement at each recording level. Uses
PostgreSQL's own scanner (pglast / libpg_query), never regular expressions, so quoting,
dollar quotes, comments and escapes are handled as the server handles them. Pure; results
are cached per distinct text because the same statements repeat (prepared and ORM SQL).
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache

from pglast import parser

from ledgergate.core._sqlshape import shape

__all__ = ["redact", "redact_simple", "split_statements"]

_PLACEHOLDER = re.compile(r"\$\d+")
# A constant the normalizer left in place: a quote, a dollar quote, or a number that is
# not part of an identifier or of a $n placeholder.
_LEFT_LITERAL = re.compile(r"'|\$(?:[^\W\d]\w*)?\$|(?<![\w$])\d")

_LITERALS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
# Distinct statement texts kept; pgbench-style workloads with inlined literals miss
# anyway, ORMs and prepared statements hit.
_CACHE = 4096
# Past this size a statement is recorded by digest and size only (scanning a 100 MB
# INSERT to redact it would stall the session).
MAX_SCAN = 1 << 20


@lru_cache(maxsize=_CACHE)
def redact(sql: str) -> str:
    """``sql`` with every literal replaced by ``?`` (strings, numbers, bit strings).

    Identifiers, keywords, operators, parameters ($1) and comments' absence are kept;
    comments are dropped because they can carry data. Text that the scanner rejects is
    replaced by a marker instead of being recorded raw.
    """
    if len(sql) > MAX_SCAN:
        return f"<statement of {len(sql)} characters, not redacted: too large>"
    try:
        tokens = parser.scan(sql)
    except Exception:  # pglast raises its own ParseError; any failure means: don't record raw
        return "<statement the SQL scanner rejects; text withheld>"
    out: list[str] = []
    prev_end = -1
    for t in tokens:
        if t.name in _COMMENTS:
            continue
        if prev_end >= 0 and t.start > prev_end + 1:
            out.append(" ")
        out.append("?" if t.name in _LITERALS else sql[t.start : t.end + 1])
        prev_end = t.end
    return "".join(out)


# Simple-protocol statements that differ only in their numbers (pgbench, code that
# inlines ids) share one redaction: text with no quote of either kind, no ``$``, no
# backslash and no comment, in ASCII, has no identifier that starts with a digit, so
# every run of digits not preceded by a word character begins a numeric constant, which
# redaction turns into ``?`` whatever its value. Such text is looked up by its shape (those
# runs replaced by ``$``, a character it cannot hold). A run followed by a letter other
# than an exponent's ``e`` or by ``_`` is not shaped: there the value decides the tokens
# (``0x1F`` is one hexadecimal constant, ``7x1F`` is not; ``1_000``). ``_sqlshape.shape``
# computes the shape in one pass (0.1 µs; these two expressions take 4 µs), and the
# tests hold it to ``shape_reference``.
MAX_SHAPED = 8192  # longer statements rarely repeat: not worth a shape (_sqlshape.c too)
_NOT_SHAPED = re.compile(r"['\"$\\]|--|/\*|(?<!\w)\d+[A-DF-Za-df-z_]", re.ASCII)
_NUMBER = re.compile(r"(?<!\w)\d+", re.ASCII)
_shapes: dict[str, str] = {}


def shape_reference(sql: str) -> str | None:
    """What ``_sqlshape.shape`` computes, as its definition: the cache key of ``sql``, or
    None when ``sql`` must be redacted on its own."""
    if len(sql) > MAX_SHAPED or not sql.isascii() or _NOT_SHAPED.search(sql) is not None:
        return None
    return _NUMBER.sub("$", sql)


def redact_simple(sql: str) -> str:
    """``redact`` for simple-protocol text, where ``$n`` cannot be a bound parameter."""
    key = shape(sql)
    if key is None:
        return _redact_simple(sql)
    out = _shapes.get(key)
    if out is None:
        out = _redact_simple(sql)
        if len(_shapes) >= _CACHE:
            with contextlib.suppress(StopIteration, RuntimeError, KeyError):
                del _shapes[next(iter(_shapes))]  # the oldest shape
        _shapes[key] = out
    return out


@lru_cache(maxsize=_CACHE)
def _redact_simple(sql: str) -> str:
    """Fast path: libpg_query's normalizer (C, about 3x faster than walking the scanner's
    tokens in Python) replaces every constant with ``$n``; those become ``?``. Text with
    comments takes the scanner path, because the normalizer keeps comments.
    """
    if "--" in sql or "/*" in sql or len(sql) > MAX_SCAN:
        return redact(sql)
    try:
        normalized = parser.normalize(sql)
    except Exception:  # not parseable: the scanner decides what can be recorded
        return redact(sql)
    if _LEFT_LITERAL.search(normalized):
        # The normalizer keeps the constants of many utility statements (EXECUTE, COPY,
        # COMMENT, ALTER SYSTEM, ALTER ROLE SET, PREPARE bodies, ...): use the scanner.
        return redact(sql)
    return _PLACEHOLDER.sub("?", normalized)


@lru_cache(maxsize=_CACHE)
def split_statements(sql: str) -> tuple[str, ...]:
    """The statements of a simple-query string (one Query may carry several)."""
    if ";" not in sql.rstrip().rstrip(";"):
        s = sql.strip().rstrip(";").strip()
        return (s,) if s else ()
    if len(sql) > MAX_SCAN:
        return (sql,)
    try:
        parts = parser.split(sql, with_parser=False)
    except Exception:  # an unscannable string is still one command to record
        return (sql,)
    return tuple(p for p in (x.strip() for x in parts) if p)
