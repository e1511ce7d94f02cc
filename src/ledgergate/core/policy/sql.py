"""SQL classification with PostgreSQL's own parser (pglast / libpg_query).

Owns the facts a guardrail or an allow-list needs about each statement of a string:
its kind, the tables it reads and writes, the functions it calls anywhere (CTEs,
subqueries, defaults, nested calls), whether an UPDATE/DELETE has a WHERE, the output
columns of a SELECT, and the escape hatches (COPY ... PROGRAM, DO blocks, ALTER SYSTEM,
role and search_path changes). Names come out as PostgreSQL resolved their spelling:
unquoted identifiers lower-cased, quoted ones as written, so case, comments and quoting
tricks change nothing. Must not: do I/O, log, or decide (``engine.py`` decides).

Decisions a reader needs:
- One parse (to libpg_query's JSON: ten times faster than pglast's node objects) and
  one walk (``sql_walk.py``); callers cache by text.
- ``kind`` is the outermost statement's, except ``PREPARE p AS <stmt>`` (the inner
  statement's) and ``SELECT ... INTO`` ("ddl": PostgreSQL runs it as CREATE TABLE AS).
  The facts always cover everything nested: ``EXPLAIN ANALYZE DELETE`` is kind
  "explain" but writes its table; ``kinds`` adds every data-changing kind inside.
  Conservatively, that includes statements that run later (a rule's actions, a
  ``BEGIN ATOMIC`` function body) and a plain EXPLAIN's (which does not run it).
- TRUNCATE is kind "delete" with ``where`` False: it removes rows, and a "no bulk
  delete" guardrail must see it.
- ``where`` is only whether a WHERE is written: ``DELETE FROM t WHERE true`` has one.
- ``set_config(name, ...)`` with a name not written as a literal counts as both a role
  and a search_path change (it could be either).
- A DO block runs its body now: the body's static SQL is folded into the statement's
  facts; EXECUTE, another language, or a body the parser rejects set ``dynamic_sql``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pglast import parser

from ledgergate.core.policy.sql_walk import ROLE_NODES, Facts, Json, ctes_scope, dotted, rel_name

__all__ = ["Classified", "Statement", "Target", "classify"]


@dataclass(frozen=True, slots=True)
class Target:
    """One output column of a SELECT (or RETURNING)."""

    name: str
    table: str | None
    column: str | None
    star: bool


@dataclass(frozen=True, slots=True)
class Statement:
    kind: str
    node: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    where: bool | None = None
    copy_program: bool = False
    copy_direction: str | None = None
    do_block: bool = False
    dynamic_sql: bool = False
    alter_system: bool = False
    role_change: bool = False
    search_path_change: bool = False
    prepared_name: str | None = None
    targets: tuple[Target, ...] = ()
    text: str = ""
    # The kind plus every data-changing kind inside it (a DELETE in a CTE, under
    # EXPLAIN ANALYZE or PREPARE, "ddl" for a table created by SELECT INTO).
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Classified:
    statements: tuple[Statement, ...]
    error: str | None = None


_KIND = {
    "SelectStmt": "select",
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
    "TruncateStmt": "delete",  # rows removed, no WHERE: see the module docstring
    "CopyStmt": "copy",
    "TransactionStmt": "transaction",
    "CallStmt": "call",
    "DoStmt": "do",
    "ExplainStmt": "explain",
    "AlterSystemStmt": "utility",
    "AlterDatabaseSetStmt": "utility",
    **dict.fromkeys(ROLE_NODES, "dcl"),
}
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Rename", "Comment", "Define")
_DDL_NODES = frozenset(
    {
        "IndexStmt",
        "ViewStmt",
        "RuleStmt",
        "CompositeTypeStmt",
        "SecLabelStmt",
        "ImportForeignSchemaStmt",
        "RefreshMatViewStmt",
    }
)
# FigureColname's names for the expressions that name their column themselves.
_FIXED_NAMES = {
    "A_ArrayExpr": "array",
    "RowExpr": "row",
    "CoalesceExpr": "coalesce",
    "GroupingFunc": "grouping",
    "XmlSerialize": "xmlserialize",
}


def _kind(t: str, d: Json) -> str:
    if t == "PrepareStmt":
        ((it, inner),) = d.get("query", {"SelectStmt": {}}).items()
        return _kind(it, inner)
    if t == "SelectStmt" and "intoClause" in d:
        return "ddl"
    if t == "RenameStmt" and d.get("renameType") == "OBJECT_ROLE":
        return "dcl"
    kind = _KIND.get(t)
    if kind is not None:
        return kind
    return "ddl" if t.startswith(_DDL_PREFIXES) or t in _DDL_NODES else "utility"


def _safe_error(e: Exception) -> str:
    """The parser's message without the text it quotes (it may quote a secret)."""
    msg = str(e.args[0]) if e.args else "syntax error"
    msg = msg.split(" at or near ", 1)[0].split('"', 1)[0].strip()
    where = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], int) else None
    return f"{msg} (at offset {where})" if where is not None else msg


def classify(sql: str) -> Classified:
    """Every statement of ``sql`` with its facts; a parse error yields none."""
    if "\x00" in sql:  # the parser would stop at it and never see what follows
        return Classified((), "statement contains a NUL character")
    try:
        tree = orjson.loads(parser.parse_sql_json(sql))
    except parser.ParseError as e:
        return Classified((), _safe_error(e))
    except orjson.JSONDecodeError:  # deeper than the JSON decoder's 1024 levels
        return Classified((), "statement nested too deeply to classify")
    except Exception as e:  # libpg_query refusing something exotic: unparseable
        return Classified((), f"cannot parse: {type(e).__name__}")
    ascii_text = sql.isascii()  # offsets are in bytes; for ASCII, bytes == characters
    raw_sql = sql if ascii_text else sql.encode("utf-8")
    out = []
    for raw in tree.get("stmts", ()):
        ((t, d),) = raw["stmt"].items()
        start = int(raw.get("stmt_location", 0))
        length = int(raw.get("stmt_len", 0)) or len(raw_sql) - start
        piece = raw_sql[start : start + length]
        text = piece if isinstance(piece, str) else piece.decode("utf-8", "replace")
        out.append(_statement(t, d, text.strip()))
    return Classified(tuple(out))


def _statement(t: str, d: Json, text: str) -> Statement:
    f = Facts(text)
    f.walk(t, d)
    kind = _kind(t, d)
    prepared: str | None = None
    inner_t, inner = t, d
    if t in ("PrepareStmt", "ExecuteStmt"):
        prepared = str(d.get("name", ""))
        if t == "PrepareStmt":
            ((inner_t, inner),) = d.get("query", {"SelectStmt": {}}).items()
    return Statement(
        kind=kind,
        node=t,
        reads=tuple(sorted(f.reads)),
        writes=tuple(sorted(f.writes)),
        columns=tuple(sorted(f.columns)),
        functions=tuple(sorted(f.functions)),
        where=f.where,
        copy_program=f.copy_program,
        copy_direction=f.copy_direction,
        do_block=f.do_block,
        dynamic_sql=f.dynamic_sql,
        alter_system=f.alter_system,
        role_change=f.role_change,
        search_path_change=f.search_path_change,
        prepared_name=prepared,
        targets=_targets(inner_t, inner),
        text=text,
        kinds=tuple(sorted({kind, *f.dml})),
    )


# -- output columns -----------------------------------------------------------------


def _targets(t: str, d: Json) -> tuple[Target, ...]:
    """SELECT output columns (or INSERT/UPDATE/DELETE/MERGE ... RETURNING)."""
    scope: frozenset[str] = frozenset()
    if t == "SelectStmt":
        if "withClause" in d:
            scope, _ = ctes_scope(d["withClause"], scope)
        if d.get("op", "SETOP_NONE") != "SETOP_NONE":
            left = d
            while left.get("op", "SETOP_NONE") != "SETOP_NONE" and "larg" in left:
                left = left["larg"]
            # A set operation's columns come from every branch: names only.
            return tuple(
                Target(name, None, None, star)
                for name, _, _, star in (_target(rt, []) for rt in _res(left.get("targetList")))
            )
        froms = _from_items(d.get("fromClause", ()), scope)
        return tuple(Target(*_target(rt, froms)) for rt in _res(d.get("targetList")))
    returning = d.get("returningClause", {}).get("exprs")
    if not returning or "relation" not in d:
        return ()
    rv = d["relation"]
    alias = rv.get("alias", {}).get("aliasname")
    froms = [(alias or rv.get("relname", ""), rel_name(rv))]
    if alias is None and "schemaname" in rv:
        froms.append((rel_name(rv), rel_name(rv)))
    for key in ("fromClause", "usingClause"):
        froms += _from_items(d.get(key, ()), scope)
    return tuple(Target(*_target(rt, froms)) for rt in _res(returning))


def _res(items: list[Json] | None) -> list[Json]:
    return [x["ResTarget"] for x in items or () if "ResTarget" in x]


def _from_items(items: list[Json], scope: frozenset[str]) -> list[tuple[str, str | None]]:
    """(name a column can be qualified with, table it stands for or None)."""
    out: list[tuple[str, str | None]] = []
    stack = list(reversed(items))
    while stack:
        ((t, d),) = stack.pop().items()
        alias = d.get("alias", {}).get("aliasname")
        if t == "RangeVar":
            cte = "schemaname" not in d and d.get("relname") in scope
            table = None if cte else rel_name(d)
            out.append((alias or d.get("relname", ""), table))
            if alias is None and "schemaname" in d:
                out.append((rel_name(d), table))
        elif t == "JoinExpr" and alias is None:
            stack += [d["rarg"], d["larg"]]
        else:  # subquery, function, aliased join, ...: columns not traced through it
            out.append((alias or "", None))
    return out


def _target(
    rt: Json, froms: list[tuple[str, str | None]]
) -> tuple[str, str | None, str | None, bool]:
    val = rt.get("val", {})
    name = rt.get("name")
    ref = val.get("ColumnRef")
    if ref is None:
        return name or _colname(val) or "?column?", None, None, False
    parts = dotted(ref.get("fields")).split(".")
    star = parts[-1] == "*"
    column = None if star else parts[-1]
    qualifier = ".".join(parts[:-1])
    if qualifier:
        hits = [table for ref_name, table in froms if ref_name == qualifier]
        table = hits[0] if len(hits) == 1 else None
    else:
        table = froms[0][1] if len(froms) == 1 else None
    return name or column or "*", table, column, star


def _colname(node: Json) -> str | None:
    """PostgreSQL's FigureColname for an expression, for the cases that name one."""
    for _ in range(64):  # casts and collations wrap: follow a few, never loop forever
        ((t, d),) = node.items() if node else (("", {}),)
        if t == "ColumnRef":
            last = dotted(d.get("fields")).rsplit(".", 1)[-1]
            return None if last == "*" else last
        if t == "FuncCall":
            return dotted(d.get("funcname")).rsplit(".", 1)[-1].lower()
        if t in ("TypeCast", "CollateClause"):
            inner = _colname(d.get("arg", {}))
            if inner is not None or t == "CollateClause":
                return inner
            return dotted(d.get("typeName", {}).get("names")).rsplit(".", 1)[-1]
        if t == "A_Indirection":
            names = [x["String"]["sval"] for x in d.get("indirection", ()) if "String" in x]
            if names:
                return str(names[-1])
            node = d.get("arg", {})
            continue
        if t in _FIXED_NAMES:
            return _FIXED_NAMES[t]
        if t == "A_Expr":
            return "nullif" if d.get("kind") == "AEXPR_NULLIF" else None
        if t == "MinMaxExpr":
            return "greatest" if d.get("op") == "IS_GREATEST" else "least"
        if t == "SQLValueFunction":
            return str(d.get("op", "")).lower().removeprefix("svfop_").removesuffix("_n")
        if t == "CaseExpr":
            return _colname(d["defresult"]) or "case" if "defresult" in d else "case"
        if t == "SubLink":
            kind = d.get("subLinkType")
            if kind == "EXISTS_SUBLINK":
                return "exists"
            if kind == "ARRAY_SUBLINK":
                return "array"
            if kind == "EXPR_SUBLINK":
                first = _res(d.get("subselect", {}).get("SelectStmt", {}).get("targetList"))
                return _target(first[0], [])[0] if first else None
            return None
        if t == "XmlExpr" and d.get("op") != "IS_DOCUMENT":
            return str(d.get("op", "")).lower().removeprefix("is_")
        return None
    return None
