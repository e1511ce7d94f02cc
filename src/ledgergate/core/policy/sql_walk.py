"""One walk over a statement's parse tree, collecting the facts a policy needs.

Owns: the tables a tree reads and writes, the functions it calls anywhere, its column
references, whether its UPDATEs/DELETEs have a WHERE, and the escape hatches (COPY ...
PROGRAM, DO blocks and dynamic SQL, ALTER SYSTEM, role and search_path changes).
Must not: parse the outer SQL (``sql.py`` does that once), decide anything, or do I/O.

The tree is libpg_query's JSON: a node is ``{"Type": {fields}}``, except where a field's
C type is one specific struct (``RangeVar*``, ``SelectStmt*``, ``WithClause*``, ...):
there the struct's fields come without the wrapper. ``_INLINE``, built once from
pglast's slot types, names those fields, so every dict is walked knowing its type.
Names come out as PostgreSQL resolved the spelling: unquoted identifiers lower-cased,
quoted ones as written. The walk is iterative: a deep tree cannot exhaust the stack.
"""

from __future__ import annotations

from typing import Any

import orjson
from pglast import ast, parser

__all__ = ["Facts", "Json", "ctes_scope", "dotted", "rel_name"]

Json = dict[str, Any]
Scope = frozenset[str]
_Item = tuple[str, Json, Scope]


def _inline_fields() -> dict[str, dict[str, str]]:
    """node type -> {field: struct type}, for fields serialised without a wrapper."""
    out: dict[str, dict[str, str]] = {}
    for name in dir(ast):
        cls = getattr(ast, name)
        slots = getattr(cls, "__slots__", None)
        if not (isinstance(cls, type) and issubclass(cls, ast.Node) and isinstance(slots, dict)):
            continue
        for field, info in slots.items():
            ctype = str(info.c_type).rstrip("*")
            target = getattr(ast, ctype, None)
            if (
                ctype not in ("Node", "List", "Expr")
                and isinstance(target, type)
                and issubclass(target, ast.Node)
            ):
                out.setdefault(name, {})[field] = ctype
    # A composite type's name is a RangeVar, but no table is read.
    out["CompositeTypeStmt"]["typevar"] = _SKIPPED
    return out


_SKIPPED = "(skipped)"
_INLINE = _inline_fields()
# Leaves: nothing below them names a table, a function or a hatch.
_LEAVES = frozenset({"A_Const", "String", "Integer", "Float", "Boolean", "BitString"}) | {
    *("ParamRef", "A_Star", "TypeName", _SKIPPED)
}
_NO_FIELDS: dict[str, str] = {}
# Statements whose one RangeVar field is a relation the statement creates or changes.
_WRITTEN = {
    "InsertStmt": "relation",
    "UpdateStmt": "relation",
    "DeleteStmt": "relation",
    "MergeStmt": "relation",
    "CreateStmt": "relation",
    "ViewStmt": "view",
    "IntoClause": "rel",
    "IndexStmt": "relation",
    "CreateTrigStmt": "relation",
    "RuleStmt": "relation",
    "RefreshMatViewStmt": "relation",
    "CreatePolicyStmt": "table",
    "AlterPolicyStmt": "table",
    "AlterTableStmt": "relation",
    "RenameStmt": "relation",
    "AlterObjectSchemaStmt": "relation",
    "AlterOwnerStmt": "relation",
}
# DML nodes and the kind each adds to ``Facts.dml``.
_DML = {
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
}
# DROP of these object types removes a relation (pg_class): its names are writes.
_RELATION_OBJECTS = frozenset(
    f"OBJECT_{o}" for o in ("TABLE", "VIEW", "MATVIEW", "FOREIGN_TABLE", "INDEX", "SEQUENCE")
)
# Statements that create, change or drop roles, or grant and revoke anything.
ROLE_NODES = frozenset({"GrantStmt", "GrantRoleStmt", "AlterDefaultPrivilegesStmt"}) | {
    *("CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt", "DropRoleStmt"),
    *("ReassignOwnedStmt", "DropOwnedStmt"),
}
# Settings that change who the session is, or where unqualified names resolve.
_ROLE_SETTINGS = frozenset({"role", "session_authorization"})
_PATH_SETTINGS = frozenset({"search_path"})
# Languages whose bodies are known not to run SQL the walk cannot see (sql bodies are
# SQL; c/internal call compiled code). Any other language (plpython, plperl, ...) can.
_STATIC_LANGUAGES = frozenset({"sql", "c", "internal"})
# PL/pgSQL statements that run a query string built at run time.
_DYNAMIC = frozenset({"PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors"})
# PL/pgSQL expression parse modes (libpg_query's RawParseMode): 0 is a whole statement,
# 2 an expression, 3-5 an assignment ``target := expression``.
_EXPR_MODE = 2


def dotted(parts: Any) -> str:
    """``[{"String": {"sval": "a"}}, {"A_Star": {}}]`` -> ``"a.*"``."""
    out = []
    for p in parts or ():
        s = p.get("String")
        out.append(s.get("sval", "") if s is not None else "*")
    return ".".join(out)


def rel_name(rv: Json) -> str:
    """A RangeVar as written: ``catalog.schema.table``, ``schema.table`` or ``table``."""
    name = rv.get("relname", "")
    if "schemaname" in rv:
        name = f"{rv['schemaname']}.{name}"
        if "catalogname" in rv:
            name = f"{rv['catalogname']}.{name}"
    return str(name)


def ctes_scope(withc: Json, scope: Scope) -> tuple[Scope, list[tuple[Json, Scope]]]:
    """The names a WITH makes visible to its statement, and each CTE body's scope.
    A non-recursive CTE sees only the CTEs before it: in ``WITH customers AS (SELECT *
    FROM customers)`` the inner name is the real table."""
    names: list[str] = []
    bodies: list[tuple[Json, Scope]] = []
    recursive = bool(withc.get("recursive"))
    ctes = [c["CommonTableExpr"] for c in withc.get("ctes", ()) if "CommonTableExpr" in c]
    every = scope | {str(c.get("ctename", "")) for c in ctes}
    for cte in ctes:
        bodies.append((cte.get("ctequery", {}), every if recursive else scope | set(names)))
        names.append(str(cte.get("ctename", "")))
    return every, bodies


# Node types ``Facts._special`` handles; every other node only has its children walked.
_SPECIAL = frozenset(
    [
        *("FuncCall", "CreateTrigStmt", "CreateEventTrigStmt", "TruncateStmt", "CopyStmt"),
        *("DropStmt", "VariableSetStmt", "DiscardStmt", "AlterSystemStmt", "DoStmt"),
        "CreateFunctionStmt",
        *ROLE_NODES,
        *_WRITTEN,  # RenameStmt among them
    ]
)


class Facts:
    """What the walk found; ordered sets are dicts (first seen first)."""

    __slots__ = (
        "alter_system",
        "columns",
        "copy_direction",
        "copy_program",
        "dml",
        "do_block",
        "dynamic_sql",
        "functions",
        "reads",
        "role_change",
        "search_path_change",
        "source",
        "where",
        "writes",
    )

    def __init__(self, source: str = "") -> None:
        self.source = source  # the statement's text, for PL/pgSQL bodies
        self.reads: dict[str, None] = {}
        self.writes: dict[str, None] = {}
        self.columns: dict[str, None] = {}
        self.functions: dict[str, None] = {}
        self.dml: set[str] = set()
        self.where: bool | None = None
        self.copy_program = False
        self.copy_direction: str | None = None
        self.do_block = False
        self.dynamic_sql = False
        self.alter_system = False
        self.role_change = False
        self.search_path_change = False

    # -- the walk -------------------------------------------------------------------

    def walk(self, ntype: str, fields: Json, scope: Scope = frozenset()) -> None:
        """Every node below (and including) one node. Hot: kept flat on purpose."""
        stack: list[_Item] = [(ntype, fields, scope)]
        pop, push = stack.pop, stack.append
        while stack:
            t, d, sc = pop()
            if t == "RangeVar":
                if "schemaname" in d or d.get("relname") not in sc:  # else a CTE
                    self.reads[rel_name(d)] = None
                continue
            if t == "ColumnRef":
                self.columns[dotted(d.get("fields"))] = None
                continue
            skip = self._special(t, d) if t in _SPECIAL else ()
            if "withClause" in d:
                sc, bodies = ctes_scope(d["withClause"], sc)
                for body, bsc in bodies:
                    _push(body, bsc, stack)
            inline = _INLINE.get(t, _NO_FIELDS)
            for k, v in d.items():
                if type(v) is list:
                    if k not in skip:
                        for x in v:
                            if type(x) is dict:
                                for xt, xd in x.items():  # one key: the node type
                                    if xt not in _LEAVES:
                                        push((xt, xd, sc))
                            elif type(x) is list:
                                _push(x, sc, stack)
                elif type(v) is dict and k not in skip and k != "withClause":
                    it = inline.get(k)
                    if it is None:
                        for xt, xd in v.items():
                            if xt not in _LEAVES and type(xd) is dict:
                                push((xt, xd, sc))
                    elif it not in _LEAVES:
                        push((it, v, sc))

    def _special(self, t: str, d: Json) -> tuple[str, ...]:
        """Facts a node adds itself; returns the fields its children walk skips."""
        if t == "FuncCall":
            self._function(d)
            return ()
        if t in ROLE_NODES or (t == "RenameStmt" and d.get("renameType") == "OBJECT_ROLE"):
            self.role_change = True
        if t in ("CreateTrigStmt", "CreateEventTrigStmt"):  # the function it will call
            self.functions[dotted(d.get("funcname")).lower()] = None
        written = _WRITTEN.get(t)
        if written is not None:
            rv = d.get(written)
            if rv is not None:
                self.writes[rel_name(rv)] = None
            if t in _DML:
                self.dml.add(_DML[t])
                if t in ("UpdateStmt", "DeleteStmt"):
                    self._where("whereClause" in d)
            elif t == "IntoClause":
                self.dml.add("ddl")  # SELECT INTO / CREATE TABLE AS create a table
            return (written,)
        if t == "TruncateStmt":
            self.dml.add("delete")
            self._where(False)
            for item in d.get("relations", ()):
                self.writes[rel_name(item.get("RangeVar", {}))] = None
            return ("relations",)
        if t == "CopyStmt":
            self.copy_program = bool(d.get("is_program"))
            self.copy_direction = "from" if d.get("is_from") else "to"
            rv = d.get("relation")
            if rv is not None:
                (self.writes if d.get("is_from") else self.reads)[rel_name(rv)] = None
            return ("relation",)
        if t == "DropStmt":
            if d.get("removeType") in _RELATION_OBJECTS:
                for obj in d.get("objects", ()):
                    self.writes[dotted(obj.get("List", {}).get("items"))] = None
            return ("objects",)
        if t == "VariableSetStmt":
            name = str(d.get("name", "")).lower()
            if name in _ROLE_SETTINGS:
                self.role_change = True
            elif name in _PATH_SETTINGS or d.get("kind") == "VAR_RESET_ALL":
                self.search_path_change = True
            return ()
        if t == "DiscardStmt" and d.get("target") == "DISCARD_ALL":
            self.role_change = self.search_path_change = True  # RESET ALL + SESSION AUTH
        elif t == "AlterSystemStmt":
            self.alter_system = True
        elif t == "DoStmt":
            self.do_block = True
            self._do(d)
        elif t == "CreateFunctionStmt":
            self._function_body(d)
        return ()

    def _function(self, d: Json) -> None:
        name = dotted(d.get("funcname")).lower()
        self.functions[name] = None
        if name not in ("set_config", "pg_catalog.set_config"):
            return
        args = d.get("args") or [{}]
        first = args[0]
        while "TypeCast" in first:
            first = first["TypeCast"].get("arg", {})
        setting = first.get("A_Const", {}).get("sval", {}).get("sval")
        if setting is None:  # a name computed at run time: could be either
            self.role_change = self.search_path_change = True
        elif setting.strip().lower() in _ROLE_SETTINGS:
            self.role_change = True
        elif setting.strip().lower() in _PATH_SETTINGS:
            self.search_path_change = True

    def _where(self, has: bool) -> None:
        self.where = has if self.where is None else (self.where and has)

    # -- procedural bodies --------------------------------------------------------

    def _do(self, d: Json) -> None:
        """A DO block runs now: its static SQL is analysed as part of the statement;
        EXECUTE, another language or a body the parser rejects make it dynamic."""
        opts = _defelems(d.get("args", ()))
        body = opts.get("as")
        language = str(opts.get("language", "plpgsql")).lower()
        if language != "plpgsql" or not isinstance(body, str):
            self.dynamic_sql = True
            return
        tag = "$lg$"
        while tag in body:
            tag = tag[:-1] + "_$"
        wrapper = f"CREATE FUNCTION lg_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
        self._plpgsql(wrapper, analyse=True)

    def _function_body(self, d: Json) -> None:
        """CREATE FUNCTION/PROCEDURE: the body runs later, so only EXECUTE is noted.
        The statement's own text is compiled: the body needs its real signature."""
        language = str(_defelems(d.get("options", ())).get("language", "sql")).lower()
        if language == "plpgsql":
            self._plpgsql(self.source, analyse=False)
        elif language not in _STATIC_LANGUAGES:
            self.dynamic_sql = True

    def _plpgsql(self, source: str, analyse: bool) -> None:
        try:
            tree = orjson.loads(parser.parse_plpgsql_json(source))
        except Exception:  # pglast's ParseError, or a tree too deep: not understood
            self.dynamic_sql = True
            return
        queries: list[tuple[str, int]] = []
        stack: list[Any] = [tree]
        while stack:
            v = stack.pop()
            if type(v) is list:
                stack.extend(v)
            elif type(v) is dict:
                for k, sub in v.items():
                    if k in _DYNAMIC or k == "dynquery":
                        self.dynamic_sql = True
                    elif k == "PLpgSQL_expr" and "query" in sub:
                        queries.append((str(sub["query"]), int(sub.get("parseMode", 0))))
                    stack.append(sub)
        if analyse:
            for query, mode in queries:
                self._embedded(query, mode)

    def _embedded(self, query: str, mode: int) -> None:
        """Fold one query or expression of a DO body into these facts."""
        if mode > _EXPR_MODE:  # assignment: the expression after the first ":=" or "="
            cut = _assignment_value(query)
            if cut is None:
                self.dynamic_sql = True
                return
            query, mode = cut, _EXPR_MODE
        text = f"SELECT {query}" if mode == _EXPR_MODE else query
        try:
            tree = orjson.loads(parser.parse_sql_json(text))
        except Exception:  # a body the SQL parser rejects: not understood, fail closed
            self.dynamic_sql = True
            return
        outer, self.source = self.source, text  # a CREATE FUNCTION inside compiles this
        for raw in tree.get("stmts", ()):
            ((t, d),) = raw["stmt"].items()
            self.walk(t, d)
        self.source = outer


def _push(v: Any, sc: Scope, stack: list[_Item]) -> None:
    if type(v) is dict:
        for t, d in v.items():  # one key: the node type
            if type(d) is dict:
                stack.append((t, d, sc))
    elif type(v) is list:
        for x in v:
            _push(x, sc, stack)


def _defelems(items: Any) -> dict[str, Any]:
    """DefElem options by name, values as plain strings (or lists of them)."""
    out: dict[str, Any] = {}
    for item in items or ():
        de = item.get("DefElem")
        if de is None:
            continue
        arg = de.get("arg", {})
        if "String" in arg:
            out[de.get("defname", "")] = arg["String"].get("sval", "")
        elif "List" in arg:
            out[de.get("defname", "")] = [
                x.get("String", {}).get("sval") for x in arg["List"].get("items", ())
            ]
    return out


def _assignment_value(query: str) -> str | None:
    """``target := expr`` -> ``expr``, cut at the first top-level ``:=`` or ``=``."""
    try:
        tokens = parser.scan(query)
    except Exception:  # the scanner rejects it: not understood
        return None
    depth = 0
    for tok in tokens:  # offsets in characters
        text = query[tok.start : tok.end + 1]
        if text in ("(", "["):
            depth += 1
        elif text in (")", "]"):
            depth -= 1
        elif depth == 0 and text in (":=", "="):
            return query[tok.end + 1 :]
    return None
