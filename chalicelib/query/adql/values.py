"""Typed values: what the translator knows about each translated ADQL expression.

ADQL semantics depend on static types (7/2 is 3 for integers; CONTAINS of a point and a
polygon is a different function than of two circles), so every translated expression
carries its type next to its DuckDB SQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pyarrow as pa
from sqlglot import exp

from ...lake import schema

INT, FLOAT, STR, BOOL, NULL, TIME = "integer", "double", "string", "boolean", "null", "timestamp"
POINT, CIRCLE, POLYGON, ARRAY = "point", "circle", "polygon", "array"
PRED = "predicate"  # CONTAINS, INTERSECTS, ivo_hasword ...: ADQL integer 1/0, SQL boolean

NUMERIC = frozenset({INT, FLOAT, NULL})
GEOMETRY = frozenset({POINT, CIRCLE, POLYGON})
ORDERED = frozenset({INT, FLOAT, STR, TIME, NULL})


@dataclass
class Ref:
    """A value that is a plain column of a FROM item: enough to add a pruning box."""

    alias: str  # the FROM item's alias in the emitted SQL
    name: str  # the column's name in the emitted SQL
    base: bool  # a stored table (served or uploaded), not a subquery
    table: str | None = None  # the served archive table it belongs to


@dataclass
class Prune:
    """A spherical cap a row must touch for a predicate to hold, and what to box."""

    ra: float
    dec: float
    radius: float
    ra_sql: str
    dec_sql: str
    footprint: bool
    table: str | None = None  # the served table boxed, so its files can be pruned too
    alias: str | None = None  # that table's alias in the emitted SQL


@dataclass
class Val:
    sql: exp.Expr | None
    type: str
    column: schema.Column | None = None  # metadata when this is a plain column reference
    parts: tuple[exp.Expr, ...] = ()  # point (ra, dec) / circle (ra, dec, r) components
    const: tuple[float, ...] | None = None  # known number, or known geometry coordinates
    ref: Ref | None = None
    owner: object = None  # the FROM item of a plain column (finds s_ra/s_dec of a footprint)
    op: str = ""  # how it was made, for unit inference: col, lit, add, mul, fn:sqrt ...
    kids: tuple[Val, ...] = ()
    prune: Prune | None = None
    extra: dict = field(default_factory=dict)

    def fresh(self) -> Val:
        """A copy whose SQL nodes can be placed in a new spot of a tree."""
        return replace(self, sql=self.sql.copy() if self.sql is not None else None,
                       parts=tuple(p.copy() for p in self.parts))

    @property
    def number(self) -> float | None:
        return self.const[0] if self.const is not None and self.type in NUMERIC else None


def fn(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


def num(v: float) -> exp.Expr:
    """A DOUBLE literal (DuckDB reads 3.14 as DECIMAL, 3.14e0 as DOUBLE)."""
    if not math.isfinite(v):
        raise ValueError(v)
    s = repr(abs(float(v)))
    lit = exp.Literal(this=s if "e" in s else s + "e0", is_string=False)
    return exp.Neg(this=lit) if math.copysign(1.0, v) < 0 else lit


def integer(v: int) -> exp.Expr:
    lit = exp.Literal(this=str(abs(v)), is_string=False)
    return exp.Neg(this=lit) if v < 0 else lit


def cast(e: exp.Expr, to: str) -> exp.Expr:
    return exp.Cast(this=e, to=exp.DataType.build(to, dialect="duckdb"))


def ra_norm(e: exp.Expr) -> exp.Expr:
    """RA folded into [0, 360): ((ra % 360) + 360) % 360 (DuckDB % keeps the sign)."""
    inner = exp.Mod(this=exp.Paren(this=e), expression=num(360.0))
    return exp.Paren(this=exp.Mod(this=exp.Paren(this=exp.Add(this=inner, expression=num(360.0))),
                                  expression=num(360.0)))


def norm360(v: float) -> float:
    r = v % 360.0
    return 0.0 if r == 360.0 else r


def array_value(sql: exp.Expr, kind: str) -> Val:
    """A value held as one SQL scalar (a stored or selected DOUBLE[] for geometries)."""
    n = {POINT: 2, CIRCLE: 3}.get(kind, 0)
    return Val(sql, kind, parts=tuple(fn("list_extract", sql.copy(), integer(i + 1))
                                      for i in range(n)))


def column_type(c: schema.Column) -> str:
    """The ADQL type of a stored column (geometry by xtype for DOUBLE[] columns)."""
    t = c.arrow
    if pa.types.is_integer(t):
        return INT
    if pa.types.is_floating(t):
        return FLOAT
    if pa.types.is_boolean(t):
        return BOOL
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return TIME
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        xt = (c.xtype or "").lower()
        return {"point": POINT, "circle": CIRCLE, "polygon": POLYGON,
                "adql:region": POLYGON}.get(xt, ARRAY)
    return STR


def merge_types(types: list[str], what: str) -> str:
    """The common type of UNION members, CASE branches, COALESCE arguments."""
    ts = {t for t in types if t != NULL}
    if not ts:
        return NULL
    if ts <= {INT, FLOAT}:
        return FLOAT if FLOAT in ts else INT
    if len(ts) == 1:
        return ts.pop()
    if ts <= {STR, TIME}:
        return TIME
    raise TypeError(f"{what} mixes values of types {', '.join(sorted(ts))}")


def describe(t: str) -> str:
    return {INT: "an integer", FLOAT: "a floating-point number", STR: "a string",
            BOOL: "a condition", NULL: "NULL", TIME: "a timestamp", POINT: "a POINT",
            CIRCLE: "a CIRCLE", POLYGON: "a POLYGON", ARRAY: "an array",
            PRED: "a predicate (1/0)"}.get(t, t)


def _bits(v: Val) -> int:
    """The width DuckDB gives an integer value: a column's own, 64 when unknown (COUNT,
    SUM ... are BIGINT); a literal is flexible (negative: the width it needs), DuckDB
    fitting it to the other operand."""
    if v.sql is not None and "int_bits" in v.sql.meta:
        return v.sql.meta["int_bits"]
    if v.op in ("paren", "neg") and v.kids:
        return _bits(v.kids[0])
    if v.column is not None and pa.types.is_integer(v.column.arrow):
        return v.column.arrow.bit_width
    if v.op == "lit" and v.number is not None:
        return -next(b for b in (8, 16, 32, 64) if -2**(b - 1) <= v.number < 2**(b - 1))
    return 64


def int_bits(a: Val, b: Val) -> int:
    """The width of DuckDB's a // b or mod(a, b) for integers."""
    bits = [_bits(a), _bits(b)]
    fixed, flexible = [x for x in bits if x > 0], [-x for x in bits if x < 0]
    return max(fixed + flexible) if fixed else max(32, *flexible)
