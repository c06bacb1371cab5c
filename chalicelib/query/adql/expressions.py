"""Expressions and conditions: each ADQL node type has one method that checks its operand
types and emits DuckDB SQL (anything without a method is not ADQL and is refused)."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from . import geometry
from .calls import Call
from .dialect import AdqlCast
from .errors import AdqlError
from .functions import AGGREGATES, FUNCTIONS
from .scope import Scope
from .values import (
    BOOL,
    CIRCLE,
    FLOAT,
    GEOMETRY,
    INT,
    NULL,
    NUMERIC,
    POINT,
    POLYGON,
    PRED,
    STR,
    TIME,
    Val,
    array_value,
    cast,
    describe,
    fn,
    int_bits,
    integer,
    merge_types,
    num,
)

_BITWISE = (exp.BitwiseAnd, exp.BitwiseOr, exp.BitwiseXor, exp.BitwiseNot,
            exp.BitwiseLeftShift, exp.BitwiseRightShift)
_ATOMS = (exp.Column, exp.Literal, exp.Paren, exp.Anonymous, exp.Func, exp.Null, exp.Subquery)
_COMPARE = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def atom(e: exp.Expr) -> exp.Expr:
    """e, parenthesised unless it is atomic (sqlglot emits trees without adding any)."""
    return e if isinstance(e, _ATOMS) else exp.Paren(this=e)


@functools.lru_cache(maxsize=256)
def _column_node(sql: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read="duckdb")


def _number(x: float) -> exp.Expr:
    lit = exp.Literal.number(repr(abs(x)))
    return exp.Neg(this=lit) if x < 0 or (x == 0 and math.copysign(1, x) < 0) else lit


def box_node(b) -> exp.Expr:
    """The condition of a geometry.sqlfunctions.BoxSql as nodes: the tree its text parses
    to, built directly (parsing it took ~1 ms of a ~2 ms translation)."""
    if b.files is not None and not b.files:
        return exp.Paren(this=exp.false())
    col = _column_node

    def between(c: str, a: float, z: float) -> exp.Expr:
        return exp.Between(this=col(c).copy(), low=_number(a), high=_number(z))

    ra = exp.or_(*(between(b.ra_col, a, z) for a, z in b.ranges), copy=False) \
        if b.ranges else exp.false()
    parts = [between(b.dec_col, b.lo, b.hi), exp.Paren(this=ra)]
    if b.files and getattr(b, "token", None) is not None:  # names the cone's candidates:
        # first, so the catalogue's cone lane finds where the box starts
        parts.insert(0, exp.NEQ(this=col(b.row_col).copy(), expression=_number(-b.token)))
    if b.files is not None:
        parts.append(exp.In(this=col(b.file_col).copy(),
                            expressions=[exp.Literal.string(u) for u in b.files]))
    return exp.Paren(this=exp.and_(*parts, copy=False))


def _takes_own(box_sql) -> bool:
    """Does this box_sql take own= (Catalogue.box_sql does; simpler ones need not)?"""
    fn = getattr(box_sql, "__func__", box_sql)
    got = _OWN.get(fn)
    if got is None:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            params = ()
        got = _OWN[fn] = any(p.name == "own" or p.kind is p.VAR_KEYWORD for p in params)
    return got


_OWN: dict = {}


def quoted(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


@dataclass
class OutCol:
    name: str  # as the query (or its client) sees it
    sql_name: str  # as emitted
    val: Val


@dataclass
class Ctx:
    scope: Scope
    aliases: list[OutCol] | None = None  # select-list names usable in this clause
    alias_first: bool = False  # ORDER BY: output names win over input columns


class Expressions:
    """The expression half of the Translator (which supplies query, column and fail)."""

    text: str
    box_sql: Callable[..., str] | None

    def fail(self, message: str, node: exp.Expr | None = None) -> AdqlError:
        raise NotImplementedError

    def note(self, message: str) -> None:
        """A warning the answer states (an INFO of the result); the Translator keeps them."""

    def query(self, node: exp.Expr, parent: Scope | None, naming: str,
              allow_with: bool = False) -> tuple[exp.Expr, list[OutCol]]:
        raise NotImplementedError

    def column(self, node: exp.Column, ctx: Ctx) -> Val:
        raise NotImplementedError

    # ---- conditions -------------------------------------------------------------------
    def where(self, node: exp.Expr, ctx: Ctx) -> exp.Expr:
        """WHERE, with an RA/Dec box added next to every prunable top-level predicate."""
        parts = []
        for c in self.conjuncts(node):
            v = self.condition(c, ctx)
            parts.append(v.sql)
            if v.prune is not None and self.box_sql is not None:
                parts.append(self.box(v, ctx))
        return exp.and_(*parts)

    def conjuncts(self, node: exp.Expr) -> list[exp.Expr]:
        if isinstance(node, exp.And):
            return self.conjuncts(node.this) + self.conjuncts(node.expression)
        if isinstance(node, exp.Paren) and isinstance(node.this, exp.And):
            return self.conjuncts(node.this)
        return [node]

    def box(self, v: Val, ctx: Ctx) -> exp.Expr:
        p = v.prune
        # the box is a conjunct of the WHERE of the block whose FROM holds the table: the
        # catalogue may then run the block on the box's candidate rows alone
        own = any(s.sql_alias == p.alias for s in ctx.scope.sources)
        kw = {"own": True} if own and _takes_own(self.box_sql) else {}
        text = self.box_sql(p.ra_sql, p.dec_sql, p.ra, p.dec, p.radius, footprint=p.footprint,
                            table=p.table, alias=p.alias, **kw)
        if hasattr(text, "ranges"):  # a BoxSql: its nodes, not its text parsed back
            return exp.Paren(this=box_node(text))
        return exp.Paren(this=sqlglot.parse_one(text, read="duckdb"))

    def condition(self, node: exp.Expr, ctx: Ctx) -> Val:
        v = self.expr(node, ctx)
        if v.type == PRED:
            return Val(v.sql, BOOL, prune=v.prune)
        if v.type != BOOL:
            raise self.fail(f"Expected a condition (a comparison, LIKE, IN, BETWEEN, IS NULL, "
                            f"EXISTS ...), found {describe(v.type)}", node)
        return v

    # ---- expressions ------------------------------------------------------------------
    def expr(self, node: exp.Expr, ctx: Ctx) -> Val:
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            return getattr(self, handler)(node, ctx)
        if isinstance(node, _BITWISE):
            raise self.fail("Bitwise operators are not part of ADQL", node)
        if isinstance(node, exp.Mod):
            raise self.fail("% is not ADQL: use MOD(a, b)", node)
        raise self.fail(f"Unsupported syntax (not ADQL): {_show(node)}", node)

    def output(self, v: Val) -> exp.Expr:
        """A value as one SQL scalar: geometries as DOUBLE[], predicates as 1/0."""
        if v.type in GEOMETRY:
            return geometry.materialise(v)
        if v.type == PRED:
            return cast(v.sql, "INTEGER")
        return v.sql

    def scalar(self, node: exp.Expr, ctx: Ctx) -> Val:
        """A value usable as an ordinary SQL scalar (predicates become 1/0)."""
        v = self.expr(node, ctx)
        if v.type == PRED:
            return Val(cast(v.sql, "INTEGER"), INT, op="pred")
        if v.type == BOOL:
            raise self.fail("Expected a value here, found a condition", node)
        return v

    def literal(self, node: exp.Literal, ctx: Ctx) -> Val:
        if node.is_string:
            return Val(exp.Literal.string(node.this), STR, op="lit",
                       extra={"literal": node.this})
        if re.fullmatch(r"\d+", node.this):
            return Val(integer(int(node.this)), INT, const=(int(node.this),), op="lit")
        try:  # sqlglot reads '1e' and '1e+' as numbers too
            value = float(node.this)
        except ValueError:
            raise self.fail(f"{node.this!r} is not a number", node) from None
        if not math.isfinite(value):
            raise self.fail(f"The number {node.this} is out of range", node)
        return Val(num(value), FLOAT, const=(value,), op="lit")

    def hexstring(self, node: exp.HexString, ctx: Ctx) -> Val:
        value = int(node.this, 16)
        return Val(integer(value), INT, const=(value,), op="lit")

    def null(self, node: exp.Null, ctx: Ctx) -> Val:
        return Val(exp.Null(), NULL, op="lit")

    def paren(self, node: exp.Paren, ctx: Ctx) -> Val:
        v = self.expr(node.this, ctx)
        if v.type in GEOMETRY:
            return v
        return Val(exp.Paren(this=v.sql), v.type, const=v.const, op="paren", kids=(v,),
                   prune=v.prune, extra={"literal": v.extra["literal"]}
                   if "literal" in v.extra else {})

    def numeric(self, node: exp.Expr, ctx: Ctx, what: str) -> Val:
        v = self.scalar(node, ctx)
        if v.type not in NUMERIC:
            hint = " (use || to join strings)" if v.type == STR and what == "+" else ""
            raise self.fail(f"'{what}' needs numbers, not {describe(v.type)}{hint}", node)
        return v

    def neg(self, node: exp.Neg, ctx: Ctx) -> Val:
        v = self.numeric(node.this, ctx, "-")
        const = (-v.const[0],) if v.number is not None else None
        return Val(exp.Neg(this=atom(v.sql)), v.type, const=const, op="neg", kids=(v,))

    def arith(self, node: exp.Binary, ctx: Ctx) -> Val:
        op = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/"}[type(node)]
        a, b = self.numeric(node.this, ctx, op), self.numeric(node.expression, ctx, op)
        ints = a.type in (INT, NULL) and b.type in (INT, NULL) and INT in (a.type, b.type)
        klass = exp.IntDiv if ints and op == "/" else type(node)  # ADQL 7/2 = 3
        sql = klass(this=atom(a.sql), expression=atom(b.sql))
        if ints:  # DuckDB keeps INTEGER // INTEGER 32-bit; the Spark rewrite casts to match
            sql.meta["int_bits"] = int_bits(a, b)
        return Val(sql, INT if ints else FLOAT, const=_fold(op, a, b, ints),
                   op={"+": "add", "-": "sub", "*": "mul", "/": "div"}[op], kids=(a, b))

    def concat(self, node: exp.DPipe, ctx: Ctx) -> Val:
        a, b = self.scalar(node.this, ctx), self.scalar(node.expression, ctx)
        for v, n in ((a, node.this), (b, node.expression)):
            if v.type not in (STR, NULL, INT, FLOAT, TIME):
                raise self.fail(f"|| joins strings, not {describe(v.type)}", n)
        return Val(exp.DPipe(this=atom(a.sql), expression=atom(b.sql), safe=True), STR,
                   op="concat")

    def compare(self, node: exp.Binary, ctx: Ctx) -> Val:
        a, b = self.expr(node.this, ctx), self.expr(node.expression, ctx)
        if PRED in (a.type, b.type) and isinstance(node, (exp.EQ, exp.NEQ)):
            p, other = (a, b) if a.type == PRED else (b, a)
            if other.number in (0, 1) and other.type == INT:
                truth = (other.number == 1) == isinstance(node, exp.EQ)
                return Val(p.sql if truth else exp.Not(this=atom(p.sql)), BOOL,
                           prune=p.prune if truth else None)
        a, b = self.comparable(a, node.this), self.comparable(b, node.expression)
        self.check_comparable(a, b, node)
        sql = type(node)(this=atom(a.sql), expression=atom(b.sql))
        return Val(sql, BOOL, prune=self.distance_prune(node, a, b))

    def comparable(self, v: Val, node: exp.Expr) -> Val:
        if v.type == PRED:
            return Val(cast(v.sql, "INTEGER"), INT)
        if v.type in GEOMETRY or v.type == BOOL:
            raise self.fail(f"Cannot compare {describe(v.type)}; geometries are compared with "
                            "CONTAINS, INTERSECTS or DISTANCE" if v.type in GEOMETRY else
                            "Cannot compare a condition", node)
        return v

    def check_comparable(self, a: Val, b: Val, node: exp.Expr) -> None:
        kinds = {"n" if t in (INT, FLOAT) else "s" if t in (STR, TIME) else t
                 for t in (a.type, b.type) if t != NULL}
        if len(kinds) > 1:
            raise self.fail(f"Cannot compare {describe(a.type)} with {describe(b.type)}", node)

    @staticmethod
    def distance_prune(node: exp.Expr, a: Val, b: Val):
        """DISTANCE(POINT(cols), POINT(consts)) < r (or r > DISTANCE(...))."""
        if isinstance(node, (exp.LT, exp.LTE)) and b.number is not None:
            return geometry.distance_prune(a, b.number)
        if isinstance(node, (exp.GT, exp.GTE)) and a.number is not None:
            return geometry.distance_prune(b, a.number)
        return None

    def logic(self, node: exp.Connector, ctx: Ctx) -> Val:
        a, b = self.condition(node.this, ctx), self.condition(node.expression, ctx)
        return Val(type(node)(this=atom(a.sql), expression=atom(b.sql)), BOOL)

    def not_(self, node: exp.Not, ctx: Ctx) -> Val:
        return Val(exp.Not(this=atom(self.condition(node.this, ctx).sql)), BOOL)

    def like(self, node: exp.Like | exp.ILike, ctx: Ctx) -> Val:
        a, b = self.scalar(node.this, ctx), self.scalar(node.expression, ctx)
        for v, n in ((a, node.this), (b, node.expression)):
            if v.type not in (STR, NULL):
                raise self.fail(f"LIKE compares strings, not {describe(v.type)}", n)
        sql = type(node)(this=atom(a.sql), expression=atom(b.sql),
                         negate=bool(node.args.get("negate")) or None)
        return Val(sql, BOOL)

    def between(self, node: exp.Between, ctx: Ctx) -> Val:
        if node.args.get("symmetric"):
            raise self.fail("BETWEEN SYMMETRIC is not ADQL", node)
        v, lo, hi = (self.comparable(self.expr(node.args[k], ctx), node.args[k])
                     for k in ("this", "low", "high"))
        self.check_comparable(v, lo, node)
        self.check_comparable(v, hi, node)
        return Val(exp.Between(this=atom(v.sql), low=atom(lo.sql), high=atom(hi.sql)), BOOL)

    def in_(self, node: exp.In, ctx: Ctx) -> Val:
        self.check_args(node, {"this", "expressions", "query"}, "IN")
        v = self.comparable(self.expr(node.this, ctx), node.this)
        if query := node.args.get("query"):
            sql = self.subquery_value(query, ctx, "IN")
            return Val(exp.In(this=atom(v.sql), query=sql), BOOL)
        items = [self.comparable(self.expr(e, ctx), e) for e in node.expressions]
        for item, e in zip(items, node.expressions):
            self.check_comparable(v, item, e)
        return Val(exp.In(this=atom(v.sql), expressions=[i.sql for i in items]), BOOL)

    def subquery_value(self, node: exp.Expr, ctx: Ctx, what: str) -> exp.Expr:
        query = node.this if isinstance(node, exp.Subquery) else node
        sql, cols = self.query(query, ctx.scope, "inner")
        if len(cols) != 1:
            raise self.fail(f"The subquery of {what} must return one column, not {len(cols)}",
                            node)
        return exp.Subquery(this=sql)

    def is_(self, node: exp.Is, ctx: Ctx) -> Val:
        if not isinstance(node.expression, exp.Null):
            raise self.fail("Only IS NULL and IS NOT NULL are ADQL", node)
        v = self.expr(node.this, ctx)
        sql = self.output(v) if v.type in GEOMETRY | {PRED} else v.sql
        return Val(exp.Is(this=atom(sql), expression=exp.Null()), BOOL)

    def exists(self, node: exp.Exists, ctx: Ctx) -> Val:
        sql, _ = self.query(node.this, ctx.scope, "inner")
        return Val(exp.Exists(this=sql), BOOL)

    def scalar_subquery(self, node: exp.Subquery, ctx: Ctx) -> Val:
        if node.alias:
            raise self.fail("A subquery used as a value takes no alias", node)
        sql, cols = self.query(node.this, ctx.scope, "inner")
        if len(cols) != 1:
            raise self.fail(f"A subquery used as a value must return one column, not "
                            f"{len(cols)}", node)
        v = array_value(exp.Subquery(this=sql), cols[0].val.type)
        v.column, v.op = cols[0].val.column, "col" if cols[0].val.column else ""
        return v

    def case(self, node: exp.Case, ctx: Ctx) -> Val:
        operand = node.args.get("this")
        op_val = self.comparable(self.expr(operand, ctx), operand) if operand else None
        ifs, results = [], []
        for branch in node.args.get("ifs") or []:
            if op_val is not None:
                w = self.comparable(self.expr(branch.this, ctx), branch.this)
                self.check_comparable(op_val, w, branch.this)
                when = w.sql
            else:
                when = self.condition(branch.this, ctx).sql
            then = self.case_value(branch.args["true"], ctx)
            results.append(then)
            ifs.append(exp.If(this=when, true=then.sql))
        default = node.args.get("default")
        if default is not None:
            results.append(self.case_value(default, ctx))
        try:
            t = merge_types([r.type for r in results], "CASE")
        except TypeError as e:
            raise self.fail(str(e), node) from None
        sql = exp.Case(this=op_val.sql if op_val else None, ifs=ifs,
                       default=results[-1].sql if default is not None else None)
        return Val(sql, t, op="case")

    def case_value(self, node: exp.Expr, ctx: Ctx) -> Val:
        v = self.scalar(node, ctx)
        if v.type in GEOMETRY:
            raise self.fail("CASE cannot return a geometry", node)
        return v

    def adql_cast(self, node: AdqlCast, ctx: Ctx) -> Val:
        v = self.scalar(node.this, ctx)
        to, length = node.args["to"], node.args.get("length")
        target = _CASTS.get(to)
        if target is None:
            hint = " (use REAL or DOUBLE PRECISION)" if to in ("FLOAT", "DOUBLE") else ""
            raise self.fail(f"Cannot CAST to '{to}': ADQL types are {', '.join(_CASTS)}{hint}",
                            node)
        if length is not None and (to not in ("CHAR", "VARCHAR", "CHARACTER") or not isinstance(
                length, exp.Literal) or not length.this.isdigit() or int(length.this) < 1):
            raise self.fail("A length is only allowed for CHAR(n) and VARCHAR(n), n > 0", node)
        if v.type in GEOMETRY:
            raise self.fail(f"Cannot CAST {describe(v.type)}", node)
        if target[1] in GEOMETRY:
            return self.cast_geometry(v, target[1], node)
        if target[1] in _CAST_FROM.get(v.type, ()):
            const = v.const if target[1] in NUMERIC and v.type in NUMERIC else None
            sql = cast(v.sql, target[0])
            if target[1] == INT and v.type == FLOAT:  # DuckDB rounds; the Spark rewrite
                sql.meta["round"] = True  # says so (Spark's CAST truncates)
            return Val(sql, target[1], const=const, op="cast", kids=(v,))
        raise self.fail(f"Cannot CAST {describe(v.type)} to {to}", node)

    def cast_geometry(self, v: Val, kind: str, node: exp.Expr) -> Val:
        """CAST('12.3 45.6' AS POINT): DALI text (blank-separated numbers) to a geometry."""
        if v.type not in (STR, NULL):
            raise self.fail(f"Only strings can be CAST to {kind.upper()}", node)
        need = {POINT: 2, CIRCLE: 3}.get(kind)
        if "literal" in v.extra:
            try:
                vals = [float(x) for x in v.extra["literal"].split()]
            except ValueError:
                raise self.fail(f"'{v.extra['literal']}' is not a {kind.upper()}", node) from None
            bad = len(vals) != need if need else len(vals) < 6 or len(vals) % 2 == 1
            if bad:
                raise self.fail(f"'{v.extra['literal']}' is not a {kind.upper()}", node)
            if kind == POLYGON:
                return geometry.const_polygon(vals)
            return Val(None, kind, parts=tuple(num(x) for x in vals), const=tuple(vals))
        arr = cast(fn("string_split_regex", fn("trim", v.sql), exp.Literal.string(r"\s+")),
                   "DOUBLE[]")
        parts = tuple(fn("list_extract", arr.copy(), integer(i + 1)) for i in range(need or 0))
        return Val(arr, kind, parts=parts)

    def call(self, node: exp.Anonymous, ctx: Ctx) -> Val:
        name = node.this
        if not isinstance(name, str):
            raise self.fail(f"Unknown function {node.this.sql()}", node)
        impl = FUNCTIONS.get(name.upper())
        if impl is None:
            close = difflib.get_close_matches(name.upper(), FUNCTIONS, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise self.fail(f"Unknown function '{name}'{hint}", node)
        args = [self.argument(a, name.upper(), ctx) for a in node.expressions]
        return impl(Call(name.upper(), args, list(node.expressions), node, self.fail,
                         self.note))

    def argument(self, node: exp.Expr, func: str, ctx: Ctx) -> Val:
        if isinstance(node, exp.Star):
            if func != "COUNT":
                raise self.fail(f"{func}(*) is not allowed", node)
            return Val(None, "star")
        if isinstance(node, exp.Distinct):
            if func not in AGGREGATES or len(node.expressions) != 1 or node.args.get("on"):
                raise self.fail("DISTINCT is only allowed as COUNT/SUM/AVG/MIN/MAX(DISTINCT x)",
                                node)
            return self.scalar(node.expressions[0], ctx)
        v = self.expr(node, ctx)
        if v.type == BOOL:
            raise self.fail("A condition cannot be a function argument", node)
        return v

def _fold(op: str, a: Val, b: Val, ints: bool) -> tuple[float] | None:
    """Constant arithmetic (for pruning and argument checks), ADQL integer division."""
    x, y = a.number, b.number
    if x is None or y is None or op == "/" and y == 0:
        return None
    if op == "/":
        value = int(x / y) if ints else x / y
    else:
        value = {"+": x + y, "-": x - y, "*": x * y}[op]
    return (value,) if math.isfinite(value) else None


def _show(node: exp.Expr) -> str:
    try:
        return node.sql()[:60]
    except Exception:  # a node the generic generator cannot print
        return type(node).__name__


_CASTS = {"SMALLINT": ("SMALLINT", INT), "INTEGER": ("INTEGER", INT), "BIGINT": ("BIGINT", INT),
          "REAL": ("REAL", FLOAT), "DOUBLE PRECISION": ("DOUBLE", FLOAT),
          "CHAR": ("VARCHAR", STR), "CHARACTER": ("VARCHAR", STR), "VARCHAR": ("VARCHAR", STR),
          "TIMESTAMP": ("TIMESTAMP", TIME), "POINT": ("DOUBLE[]", POINT),
          "CIRCLE": ("DOUBLE[]", CIRCLE), "POLYGON": ("DOUBLE[]", POLYGON)}

_CAST_FROM = {INT: {INT, FLOAT, STR}, FLOAT: {INT, FLOAT, STR}, STR: {INT, FLOAT, STR, TIME},
              TIME: {STR, TIME}, NULL: {INT, FLOAT, STR, TIME}}

# node type -> Expressions method: the allow-list of ADQL expression syntax
_HANDLERS: dict[type, str] = {
    exp.Column: "column", exp.Literal: "literal", exp.HexString: "hexstring", exp.Null: "null",
    exp.Paren: "paren", exp.Neg: "neg",
    **dict.fromkeys((exp.Add, exp.Sub, exp.Mul, exp.Div), "arith"),
    exp.DPipe: "concat", **dict.fromkeys(_COMPARE, "compare"),
    exp.And: "logic", exp.Or: "logic", exp.Not: "not_", exp.Like: "like", exp.ILike: "like",
    exp.Between: "between", exp.In: "in_", exp.Is: "is_", exp.Exists: "exists",
    exp.Subquery: "scalar_subquery", exp.Case: "case", AdqlCast: "adql_cast",
    exp.Anonymous: "call",
}
