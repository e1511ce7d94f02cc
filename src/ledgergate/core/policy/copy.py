"""Facts about a ``COPY ... TO STDOUT`` statement, for masking its data in flight.

Owns: from one statement's SQL text, what the COPY sends: the relation (schema, table)
and its explicit column list, or for ``COPY (query)`` the query's text and its output
columns (as ``sql.classify`` names them: PostgreSQL's names where it can tell, ``*``
marked as a star), and the data's format (``wire.pg.copytext.CopyFormat``) from the
options in every spelling PostgreSQL accepts (``WITH (FORMAT csv, ...)``, the legacy
``CSV HEADER DELIMITER ';'``, ``BINARY``, ``USING DELIMITERS``: the parser turns them all
into the same options). Must not: do I/O, log, decide, or look up the catalog (which
columns "all" means, and in what order, is the caller's to find out).

Decisions a reader needs:
- None means "not one COPY ... TO STDOUT" (another statement, COPY FROM, TO a file or
  PROGRAM, several statements, or text that does not parse). A server that starts a
  COPY out the caller has no facts for is the caller's to refuse.
- Options are checked as PostgreSQL checks them; an option it would refuse, one this
  module does not know, or one the codec cannot honour raises ``CopyDataError`` (a
  ValueError): fail closed. Options that only COPY FROM takes change nothing here.
- ``COPY t TO STDIN`` is COPY TO STDOUT: PostgreSQL's grammar makes both "no file".
- Option strings are encoded with ``encoding`` (the client's, as a Python codec name):
  the null string goes on the wire in the client encoding. With an ENCODING option the
  data is in that encoding instead: then the option strings must be ASCII, and an
  encoding whose characters may hold ASCII bytes (SJIS, BIG5, ...) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pglast import parser

from ledgergate.core.policy.sql import Target, classify
from ledgergate.core.policy.sql_walk import Json, dotted
from ledgergate.wire.pg.copytext import CopyDataError, CopyFormat, encoding_embeds_ascii

__all__ = ["CopyFacts", "copy_facts"]

# Options only COPY FROM uses: PostgreSQL refuses or ignores them in COPY TO, and none
# changes a byte of what COPY TO sends.
_FROM_ONLY = frozenset(
    {"freeze", "force_not_null", "force_null", "default", "on_error", "log_verbosity"}
    | {"reject_limit"}
)
_STRING_OPTIONS = ("format", "delimiter", "null", "quote", "escape", "encoding")


@dataclass(frozen=True, slots=True)
class CopyFacts:
    """What a COPY TO STDOUT sends. Relation form: ``table`` (and ``schema`` when
    written) with ``columns`` (None: all of the table's columns, in table order). Query
    form: ``query`` (its text) and ``targets`` (its output columns, in order)."""

    format: CopyFormat
    schema: str | None = None
    table: str | None = None
    columns: tuple[str, ...] | None = None
    query: str | None = None
    targets: tuple[Target, ...] = ()
    encoding: str | None = None  # the ENCODING option: the data's encoding, if written

    @property
    def names(self) -> tuple[str, ...] | None:
        """The output column names where known: the explicit column list, or the query's
        target names (``*`` for a star); None when all of a table's columns go out."""
        if self.query is not None:
            return tuple(t.name for t in self.targets)
        return self.columns


def copy_facts(sql: str, *, encoding: str = "utf-8") -> CopyFacts | None:
    """The facts of ``sql`` when it is one ``COPY ... TO STDOUT`` statement, else None."""
    if "\x00" in sql:
        return None
    try:
        tree = orjson.loads(parser.parse_sql_json(sql))
    except Exception:  # unparseable: PostgreSQL refuses it, so no COPY starts
        return None
    stmts = tree.get("stmts", ())
    if len(stmts) != 1 or "CopyStmt" not in stmts[0].get("stmt", {}):
        return None
    d: Json = stmts[0]["stmt"]["CopyStmt"]
    if d.get("is_from") or d.get("is_program") or "filename" in d:
        return None
    fmt, data_encoding = _format(d.get("options", ()), encoding)
    if "query" in d:
        text = _query_text(sql)
        return CopyFacts(
            fmt, query=text, targets=_query_targets(text, d["query"]), encoding=data_encoding
        )
    rv = d.get("relation", {})
    cols = tuple(dotted([c]) for c in d["attlist"]) if "attlist" in d else None
    return CopyFacts(
        fmt,
        schema=rv.get("schemaname"),
        table=str(rv.get("relname", "")),
        columns=cols,
        encoding=data_encoding,
    )


# -- options ------------------------------------------------------------------------


def _format(options: Any, encoding: str) -> tuple[CopyFormat, str | None]:
    """ProcessCopyOptions, for the options COPY TO honours."""
    given: dict[str, Json | None] = {}
    for item in options or ():
        de = item.get("DefElem", {})
        name = str(de.get("defname", ""))
        if name in given:
            raise CopyDataError(f"conflicting or redundant COPY options: {name}")
        given[name] = de.get("arg")
    unknown = set(given) - {*_STRING_OPTIONS, "header", "force_quote"} - _FROM_ONLY
    if unknown:
        raise CopyDataError(f"COPY option {sorted(unknown)[0]!r} not recognized")
    s = {k: _string(k, given[k]) for k in _STRING_OPTIONS if k in given}
    data_encoding = s.get("encoding")
    if data_encoding is not None:
        if encoding_embeds_ascii(data_encoding):
            raise CopyDataError(f"COPY data in {data_encoding} cannot be split byte-wise")
        encoding = "ascii"  # the data's own encoding: no Python codec name is known for it

    def wire(key: str) -> bytes | None:
        if key not in s:
            return None
        try:
            return s[key].encode(encoding)
        except (UnicodeError, LookupError) as e:
            raise CopyDataError(f"COPY {key} cannot be written in the data's encoding") from e

    fmt = CopyFormat.of(
        s.get("format", "text"),
        delimiter=wire("delimiter"),
        null=wire("null"),
        quote=wire("quote"),
        escape=wire("escape"),
        header=_header(given["header"]) if "header" in given else False,
        force_quote=_force_quote(given["force_quote"]) if "force_quote" in given else None,
    )
    return fmt, data_encoding


def _string(name: str, arg: Json | None) -> str:
    """defGetString: a string, a number or a boolean, as text."""
    if arg is None:
        raise CopyDataError(f"COPY {name} requires a parameter")
    ((t, v),) = arg.items()
    if t == "String":
        return str(v.get("sval", ""))
    if t == "Integer":
        return str(v.get("ival", 0))
    if t == "Float":
        return str(v.get("fval", "0"))
    if t == "Boolean":
        return "true" if v.get("boolval") else "false"
    if t == "A_Star":
        return "*"
    raise CopyDataError(f"COPY {name} requires a single value")


def _header(arg: Json | None) -> bool:
    """defGetCopyHeaderChoice for COPY TO: a boolean (MATCH is COPY FROM's)."""
    if arg is None:
        return True
    if "Integer" in arg:
        ival = arg["Integer"].get("ival", 0)
        if ival in (0, 1):
            return bool(ival)
        raise CopyDataError("COPY header requires a Boolean value")
    word = _string("header", arg).lower()
    if word in ("true", "on"):
        return True
    if word in ("false", "off"):
        return False
    if word == "match":
        raise CopyDataError('cannot use "match" with HEADER in COPY TO')
    raise CopyDataError("COPY header requires a Boolean value")


def _force_quote(arg: Json | None) -> tuple[str, ...] | str:
    if arg is not None and "A_Star" in arg:
        return "*"
    if arg is None or "List" not in arg:
        raise CopyDataError("argument to COPY force_quote must be a list of column names")
    return tuple(_string("force_quote", x) for x in arg["List"].get("items", ()))


# -- the query form -----------------------------------------------------------------


def _query_text(sql: str) -> str:
    """The text between COPY's parentheses (the scanner's offsets are in characters)."""
    depth, start = 0, -1
    for tok in parser.scan(sql):
        if tok.name == "ASCII_40":
            depth += 1
            if start < 0:
                start = tok.end + 1
        elif tok.name == "ASCII_41":
            depth -= 1
            if depth == 0 and start >= 0:
                return sql[start : tok.start].strip()
    raise CopyDataError("COPY query text not found")  # the parser saw one: unreachable


def _query_targets(text: str, node: Json) -> tuple[Target, ...]:
    """The query's output columns. VALUES names them column1, column2, ..."""
    left = node.get("SelectStmt")
    while left is not None and left.get("op", "SETOP_NONE") != "SETOP_NONE" and "larg" in left:
        left = left["larg"]
    if left is not None and "valuesLists" in left:
        first = left["valuesLists"][0].get("List", {}).get("items", ())
        return tuple(Target(f"column{i}", None, None, False) for i in range(1, len(first) + 1))
    inner = classify(text)
    if inner.error is not None or len(inner.statements) != 1:
        raise CopyDataError("COPY query text could not be read on its own")
    return inner.statements[0].targets
