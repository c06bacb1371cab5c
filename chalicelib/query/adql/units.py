"""IN_UNIT(value, 'unit'): infer the value's unit from the schema, convert with astropy."""

from __future__ import annotations

from functools import lru_cache

from sqlglot import exp

from .calls import Call
from .values import FLOAT, Val, num

_SAME = {"paren", "neg", "fn:abs", "fn:ceiling", "fn:floor", "fn:round", "fn:truncate",
         "fn:min", "fn:max", "fn:avg", "fn:sum", "fn:coalesce", "fn:mod"}
_FIXED = {"fn:distance": "deg", "fn:coord": "deg", "fn:area": "deg2", "fn:degrees": "deg",
          "fn:radians": "rad"}


@lru_cache(maxsize=256)
def parse_unit(text: str):
    """A VOUnit string as an astropy unit (generic syntax as a fallback)."""
    import astropy.units as u  # deferred: heavy import, only when IN_UNIT is used

    for fmt in ("vounit", "generic"):
        try:
            return u.Unit(text, format=fmt, parse_strict="raise")
        except ValueError:
            continue
    raise ValueError(text)


def unit_of(v: Val):
    """The astropy unit of a value, or None when it cannot be told."""
    import astropy.units as u  # deferred: cold start (astropy)

    if v.op == "col":
        if v.column is not None:
            return parse_unit(v.column.unit) if v.column.unit else None
        inner = v.extra.get("inner")
        return unit_of(inner) if inner is not None else None
    if v.op == "lit":
        return u.dimensionless_unscaled
    if v.op == "inunit":
        return v.extra["unit"]
    if v.op in _FIXED:
        return parse_unit(_FIXED[v.op])
    kids = [unit_of(k) for k in v.kids]
    if not kids or any(k is None for k in kids):
        return None
    return _combine(v, kids)


def _combine(v: Val, kids: list):
    if v.op in _SAME:
        return kids[0]
    if v.op in ("add", "sub"):
        a, b = kids
        return a if a == b or (a.is_equivalent(b) and a.to(b) == 1) else None
    if v.op == "mul":
        return kids[0] * kids[1]
    if v.op == "div":
        return kids[0] / kids[1]
    if v.op == "fn:sqrt":
        return kids[0] ** 0.5
    if v.op == "fn:power" and v.kids[1].number is not None:
        return kids[0] ** v.kids[1].number
    return None


def in_unit(c: Call) -> Val:
    c.arity(2, usage="a value and a unit: IN_UNIT(value, 'unit')")
    v = c.number(0)
    text = c.literal_string(1, "the unit")
    try:
        target = parse_unit(text)
    except ValueError:
        raise c.error(f"'{text}' is not a unit IN_UNIT understands (VOUnit syntax)", 1) from None
    source = unit_of(v)
    if source is None:
        raise c.error("IN_UNIT cannot tell the unit of its first argument (use a column "
                      "with a unit, or arithmetic on such columns)", 0)
    try:
        factor = float(source.to(target))
    except Exception:  # astropy UnitConversionError / UnitsError
        raise c.error(f"Cannot convert {source.to_string() or 'a dimensionless value'} "
                      f"to {text}", 1) from None
    sql = exp.Paren(this=exp.Mul(this=exp.Paren(this=v.sql), expression=num(factor)))
    return Val(sql, FLOAT, op="inunit", extra={"unit": target, "unit_text": text})
