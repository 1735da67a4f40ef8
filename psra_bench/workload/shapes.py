"""What a statement asks of its tables, read with PostgreSQL's own parser (pglast): columns, clauses, placeholders.

:func:`analyze` walks a statement's parse tree (no regular expressions): each column compared in
WHERE or a JOIN condition (equality, range or other), each ORDER BY column with its direction,
and which column each ``$n`` placeholder is compared with (or that it is a LIMIT / OFFSET), so
replay can draw its values from that column. Columns are resolved to tables of schema public
through the query's aliases and, for an unqualified name, the one table in scope that has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psra_bench.exceptions import InputError

__all__ = ["EQ", "RANGE", "OTHER", "ColumnUse", "Binding", "Shape", "analyze"]

#: How a column is compared: equality (=, IN), a range (<, <=, >, >=, BETWEEN) or anything else.
EQ, RANGE, OTHER = "eq", "range", "other"
_RANGE_OPS = {"<", "<=", ">", ">="}


@dataclass(frozen=True)
class ColumnUse:
    """One column of a table used by a clause of the statement."""

    table: str
    column: str
    #: "where", "join" or "order".
    clause: str
    #: EQ, RANGE or OTHER (ORDER BY: "asc" or "desc").
    how: str


@dataclass(frozen=True)
class Binding:
    """What placeholder ``$number`` stands for: a value of ``table.column``, or a LIMIT / OFFSET count."""

    number: int
    #: "column", "limit" or "offset".
    role: str
    table: str | None = None
    column: str | None = None


@dataclass
class Shape:
    """The parts of one statement index advice needs."""

    #: "select", "insert", "update", "delete" or "other".
    kind: str
    tables: set[str] = field(default_factory=set)
    uses: list[ColumnUse] = field(default_factory=list)
    bindings: dict[int, Binding] = field(default_factory=dict)
    #: Placeholders the statement holds ($1 ... $n).
    placeholders: set[int] = field(default_factory=set)
    #: The table a write statement writes to.
    writes: str | None = None

    def unbound(self) -> list[int]:
        """Placeholders whose values replay cannot draw (compared with no column, not a LIMIT/OFFSET)."""
        return sorted(self.placeholders - set(self.bindings))


class _Walker:
    """Collects column uses and bindings from one parse tree."""

    def __init__(self, columns: Mapping[str, Iterable[str]]) -> None:
        self.columns = {t: set(c) for t, c in columns.items()}
        self.shape = Shape("other")

    # -- scopes ---------------------------------------------------------------------------------
    def _from_item(self, node: Any, scope: dict[str, str]) -> None:
        from pglast import ast

        if isinstance(node, ast.RangeVar):
            rel = str(node.relname)
            if (node.schemaname in (None, "public")) and rel in self.columns:
                scope[str(node.alias.aliasname) if node.alias else rel] = rel
                self.shape.tables.add(rel)
        elif isinstance(node, ast.JoinExpr):
            self._from_item(node.larg, scope)
            self._from_item(node.rarg, scope)
            if node.quals is not None:
                self._expr(node.quals, scope, "join")
        elif isinstance(node, ast.RangeSubselect) and node.subquery is not None:
            self._select(node.subquery, {})

    def _resolve(self, ref: Any, scope: Mapping[str, str]) -> tuple[str, str] | None:
        from pglast import ast

        names = [str(f.sval) for f in ref.fields if isinstance(f, ast.String)]
        if len(names) != len(ref.fields) or not names:
            return None  # a star
        if len(names) >= 2:
            table = scope.get(names[-2])
            return (table, names[-1]) if table and names[-1] in self.columns.get(table, ()) else None
        having = {t for t in scope.values() if names[0] in self.columns.get(t, ())}
        return (having.pop(), names[0]) if len(having) == 1 else None

    # -- expressions ----------------------------------------------------------------------------
    @staticmethod
    def _param(node: Any) -> int | None:
        from pglast import ast

        while isinstance(node, ast.TypeCast):
            node = node.arg
        return int(node.number or 0) if isinstance(node, ast.ParamRef) else None

    def _bind(self, node: Any, table: str, column: str) -> None:
        number = self._param(node)
        if number is not None:
            self.shape.bindings.setdefault(number, Binding(number, "column", table, column))

    def _compare(self, expr: Any, scope: dict[str, str], clause: str, how: str) -> None:
        from pglast import ast

        left, right = expr.lexpr, expr.rexpr
        for col, other in ((left, right), (right, left)):
            while isinstance(col, ast.TypeCast):
                col = col.arg
            if not isinstance(col, ast.ColumnRef):
                continue
            found = self._resolve(col, scope)
            if found is None:
                continue
            table, column = found
            joined = isinstance(other, ast.ColumnRef) and self._resolve(other, scope) not in (None, found)
            self.shape.uses.append(ColumnUse(table, column, "join" if joined else clause, how))
            for item in other if isinstance(other, (list, tuple)) else (other,):
                self._bind(item, table, column)
        for side in (left, right):
            for item in side if isinstance(side, (list, tuple)) else (side,):
                self._expr(item, scope, clause)

    def _expr(self, node: Any, scope: dict[str, str], clause: str) -> None:
        from pglast import ast
        from pglast.enums import A_Expr_Kind

        if isinstance(node, ast.BoolExpr):
            for arg in node.args or ():
                self._expr(arg, scope, clause)
        elif isinstance(node, ast.A_Expr):
            op = node.name[-1].sval if node.name else ""
            if node.kind == A_Expr_Kind.AEXPR_IN or (node.kind == A_Expr_Kind.AEXPR_OP and op == "="):
                how = EQ
            elif node.kind == A_Expr_Kind.AEXPR_BETWEEN or (node.kind == A_Expr_Kind.AEXPR_OP and op in _RANGE_OPS):
                how = RANGE
            else:
                how = OTHER
            self._compare(node, scope, clause, how)
        elif isinstance(node, ast.NullTest) and isinstance(node.arg, ast.ColumnRef):
            found = self._resolve(node.arg, scope)
            if found:
                self.shape.uses.append(ColumnUse(found[0], found[1], clause, OTHER))
        elif isinstance(node, ast.SubLink) and node.subselect is not None:
            self._select(node.subselect, scope)
            if node.testexpr is not None:
                self._expr(node.testexpr, scope, clause)
        elif isinstance(node, ast.TypeCast) and node.arg is not None:
            self._expr(node.arg, scope, clause)
        elif isinstance(node, ast.FuncCall):
            for arg in node.args or ():
                self._expr(arg, scope, clause)

    # -- statements -----------------------------------------------------------------------------
    def _limit(self, node: Any, role: str) -> None:
        number = self._param(node) if node is not None else None
        if number is not None:
            self.shape.bindings.setdefault(number, Binding(number, role))

    def _select(self, stmt: Any, outer: Mapping[str, str]) -> None:
        from pglast import ast
        from pglast.enums import SortByDir

        if stmt.larg is not None or stmt.rarg is not None:  # UNION / INTERSECT / EXCEPT
            for part in (stmt.larg, stmt.rarg):
                if part is not None:
                    self._select(part, outer)
        if stmt.withClause is not None:
            for cte in stmt.withClause.ctes or ():
                if isinstance(cte.ctequery, ast.SelectStmt):
                    self._select(cte.ctequery, {})
        scope = dict(outer)
        for item in stmt.fromClause or ():
            self._from_item(item, scope)
        for target in stmt.targetList or ():
            if isinstance(target, ast.ResTarget) and isinstance(target.val, ast.SubLink):
                self._expr(target.val, scope, "where")
        if stmt.whereClause is not None:
            self._expr(stmt.whereClause, scope, "where")
        for sort in stmt.sortClause or ():
            node = sort.node
            if isinstance(node, ast.ColumnRef) and (found := self._resolve(node, scope)):
                how = "desc" if sort.sortby_dir == SortByDir.SORTBY_DESC else "asc"
                self.shape.uses.append(ColumnUse(found[0], found[1], "order", how))
        self._limit(stmt.limitCount, "limit")
        self._limit(stmt.limitOffset, "offset")

    def statement(self, stmt: Any) -> Shape:
        from pglast import ast

        if isinstance(stmt, ast.SelectStmt):
            self.shape.kind = "select"
            self._select(stmt, {})
        elif isinstance(stmt, (ast.UpdateStmt, ast.DeleteStmt)):
            self.shape.kind = "update" if isinstance(stmt, ast.UpdateStmt) else "delete"
            scope: dict[str, str] = {}
            rel: Any = stmt.relation
            self._from_item(rel, scope)
            self.shape.writes = str(rel.relname) if rel.relname in self.columns else None
            if isinstance(stmt, ast.UpdateStmt) and self.shape.writes:
                for item in stmt.targetList or ():  # SET col = $n: a value of that column
                    if isinstance(item, ast.ResTarget) and item.name:
                        self._bind(item.val, self.shape.writes, str(item.name))
            extra = stmt.fromClause if isinstance(stmt, ast.UpdateStmt) else stmt.usingClause
            for item in extra or ():
                self._from_item(item, scope)
            if stmt.whereClause is not None:
                self._expr(stmt.whereClause, scope, "where")
        elif isinstance(stmt, ast.InsertStmt):
            self.shape.kind = "insert"
            target: Any = stmt.relation
            if target.relname in self.columns:
                self.shape.writes = str(target.relname)
                self.shape.tables.add(str(target.relname))
        return self.shape


def _placeholders(text: str) -> set[int]:
    """The $n placeholders of ``text``, from PostgreSQL's scanner (not inside strings or comments)."""
    from pglast.parser import scan

    out = set()
    for token in scan(text):
        if token.name == "PARAM":
            out.add(int(text[token.start + 1 : token.end + 1]))
    return out


def analyze(text: str, columns: Mapping[str, Iterable[str]]) -> Shape:
    """The shape of one statement; ``columns`` maps each table of schema public to its column names.

    Raises InputError (one sentence) when PostgreSQL's parser rejects it or it holds several statements.
    """
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        tree = parse_sql(text)
    except ParseError as e:
        raise InputError(
            "query", " ".join(text.split())[:80], f"a statement PostgreSQL's parser accepts ({e})"
        ) from None
    if len(tree) != 1:
        raise InputError("query", " ".join(text.split())[:80], "exactly one statement")
    shape = _Walker(columns).statement(tree[0].stmt)
    shape.placeholders = _placeholders(text)
    return shape
