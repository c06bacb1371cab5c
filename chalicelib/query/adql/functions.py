"""The ADQL functions (math, string, aggregates, IVOA UDFs): the only callable names.

Each ADQL name maps to an implementation that checks the argument types and emits DuckDB
SQL; a name missing here is an unknown function, whatever DuckDB itself would offer.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from ...geometry.sqlfunctions import PACKED
from . import geometry, units
from .calls import Call
from .values import (
    FLOAT,
    GEOMETRY,
    INT,
    NULL,
    ORDERED,
    PRED,
    STR,
    Val,
    cast,
    describe,
    fn,
    int_bits,
    merge_types,
)

# name -> (DuckDB function, allowed argument counts, result: float | same)
_MATH = {
    "ABS": ("abs", (1,), "same"), "CEILING": ("ceil", (1,), "same"),
    "FLOOR": ("floor", (1,), "same"), "DEGREES": ("degrees", (1,), FLOAT),
    "RADIANS": ("radians", (1,), FLOAT), "EXP": ("exp", (1,), FLOAT),
    "LOG": ("ln", (1,), FLOAT),  # ADQL LOG is the natural logarithm (DuckDB's LOG is log10)
    "LOG10": ("log10", (1,), FLOAT), "SQRT": ("sqrt", (1,), FLOAT),
    "POWER": ("power", (2,), FLOAT), "PI": ("pi", (0,), FLOAT), "MOD": ("mod", (2,), "same"),
    "ROUND": ("round", (1, 2), "same"), "TRUNCATE": ("trunc", (1, 2), "same"),
    "SIN": ("sin", (1,), FLOAT), "COS": ("cos", (1,), FLOAT), "TAN": ("tan", (1,), FLOAT),
    "COT": ("cot", (1,), FLOAT), "ASIN": ("asin", (1,), FLOAT), "ACOS": ("acos", (1,), FLOAT),
    "ATAN": ("atan", (1,), FLOAT), "ATAN2": ("atan2", (2,), FLOAT),
}
_USAGE = {0: "no arguments", 1: "one argument", 2: "two arguments", (1, 2): "one or two arguments"}


def _math(c: Call) -> Val:
    duck, arity, result = _MATH[c.name]
    c.arity(*arity, usage=_USAGE[arity if len(arity) > 1 else arity[0]])
    args = [c.number(i) for i in range(len(c.args))]
    if c.name in ("ROUND", "TRUNCATE") and len(args) == 2 and args[1].type != INT:
        raise c.error(f"{c.name}'s second argument (digits) must be an integer", 1)
    if result == "same":
        result = INT if all(a.type == INT for a in args[: 2 if c.name == "MOD" else 1]) else FLOAT
    sql = fn(duck, *(a.sql for a in args))
    sql.meta["adql_type"] = result  # the Spark rewrite keeps DuckDB's result types
    if c.name == "MOD" and result == INT:
        sql.meta["int_bits"] = int_bits(args[0], args[1])
    return Val(sql, result, op="fn:" + c.name.lower(), kids=tuple(args))


def _rand(c: Call) -> Val:
    # DuckDB seeds per connection (SETSEED), not per call: a seed argument is accepted
    # for ADQL compatibility but each row still gets a fresh random number.
    c.arity(0, 1, usage="no argument or a seed")
    if c.args:
        c.number(0)
    return Val(fn("random"), FLOAT, op="fn:rand")


def _case(c: Call) -> Val:
    c.arity(1, usage="one string")
    s = c.string(0)
    return Val(fn(c.name.lower(), s.sql), STR, op="fn:" + c.name.lower())


def _coalesce(c: Call) -> Val:
    if not c.args:
        raise c.error("COALESCE needs at least one argument")
    if all(a.type == NULL for a in c.args):
        raise c.error("COALESCE needs at least one argument that is not NULL")
    for i, a in enumerate(c.args):
        if a.type in GEOMETRY or a.type in (PRED, "boolean"):
            raise c.error(f"COALESCE cannot take {describe(a.type)}", i)
    try:
        t = merge_types([a.type for a in c.args], "COALESCE")
    except TypeError as e:
        raise c.error(str(e)) from None
    return Val(fn("coalesce", *(a.sql for a in c.args)), t, op="fn:coalesce",
               kids=tuple(c.args))


def _aggregate(c: Call) -> Val:
    c.arity(1, usage="one argument")
    v, node = c.args[0], c.nodes[0]
    distinct = isinstance(node, exp.Distinct)
    if v.type == "star":
        if c.name != "COUNT":
            raise c.error(f"{c.name}(*) is not allowed; only COUNT(*)", 0)
        return Val(fn("count", exp.Star()), INT, op="fn:count")
    if c.name in ("AVG", "SUM"):
        c.number(0)
    elif c.name in ("MIN", "MAX") and v.type not in ORDERED:
        raise c.error(f"{c.name} cannot take {describe(v.type)}", 0)
    elif v.type in GEOMETRY or v.type == "boolean":
        raise c.error(f"{c.name} cannot take {describe(v.type)}", 0)
    arg = exp.Distinct(expressions=[v.sql]) if distinct else v.sql
    sql = fn(c.name.lower(), arg)
    t = {"COUNT": INT, "AVG": FLOAT}.get(c.name, v.type)
    if c.name == "SUM" and v.type == INT:
        sql = cast(sql, "BIGINT")  # DuckDB sums integers into HUGEINT
    return Val(sql, t, op="fn:" + c.name.lower(), kids=(v,))


def _healpix(c: Call) -> Val:
    c.arity(3, usage="an order and a position: ivo_healpix_index(order, ra, dec)")
    order = c.number(0, " for the order")
    if order.type != INT:
        raise c.error("The HEALPix order must be an integer", 0)
    if order.number is not None and not 0 <= order.number <= 29:
        raise c.error(f"The HEALPix order {order.number:g} is outside 0-29", 0)
    ra, dec = c.number(1, " for the RA"), c.number(2, " for the Dec")
    return Val(fn("ivo_healpix_index", order.sql, ra.sql, dec.sql), INT, op="fn:healpix")


def _interval_overlaps(c: Call) -> Val:
    c.arity(4, usage="two intervals: ivo_interval_overlaps(low1, high1, low2, high2)")
    args = [c.number(i) for i in range(4)]
    return Val(fn("ivo_interval_overlaps", *(a.sql for a in args)), PRED, op="pred")


def _string_pred(c: Call) -> Val:
    c.arity(2, usage="two strings")
    a, b = c.string(0), c.string(1)
    return Val(fn(c.name.lower(), a.sql, b.sql), PRED, op="pred")


FUNCTIONS: dict[str, Callable[[Call], Val]] = {
    **dict.fromkeys(_MATH, _math),
    "RAND": _rand,
    "LOWER": _case, "UPPER": _case,
    "COALESCE": _coalesce,
    **dict.fromkeys(("COUNT", "AVG", "MIN", "MAX", "SUM"), _aggregate),
    "IN_UNIT": units.in_unit,
    "IVO_HEALPIX_INDEX": _healpix,
    "IVO_INTERVAL_OVERLAPS": _interval_overlaps,
    "IVO_HASWORD": _string_pred,
    "IVO_NOCASEMATCH": _string_pred,
    **geometry.FUNCTIONS,
}
AGGREGATES = frozenset({"COUNT", "AVG", "MIN", "MAX", "SUM"})

# Everything the emitted SQL may call: the final check of the translation refuses others.
EMITTED = frozenset(
    {d for d, _, _ in _MATH.values()} | {"random", "lower", "upper", "coalesce", "count", "avg",
                                         "min", "max", "sum", "list_value", "list_extract",
                                         "string_split_regex", "trim"}
    | {"ivo_healpix_index", "ivo_interval_overlaps", "ivo_hasword", "ivo_nocasematch",
       "sky_distance", "sky_pt_in_circle", "sky_pt_in_poly", "sky_circle_x_poly",
       "sky_poly_x_poly", "sky_circle_in_poly", "sky_poly_in_circle", "sky_poly_in_poly",
       "sky_circle_x_circle", "sky_circle_in_circle", "sky_area_poly", "sky_area_circle",
       "sky_centroid_poly", "sky_box", "sky_poly_distance", "sky_circle_distance"}
    | {f"{name}_bin" for name in PACKED})
