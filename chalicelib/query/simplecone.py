"""Simple cones answered without DuckDB: numpy/Arrow on the cone lane's candidate rows.

A translated query qualifies when it is exactly
    SELECT "t"."col" AS "name", ... FROM "schema"."table" AS "t"
    WHERE <the cone lane's box> AND <one cone> [AND "t"."col" <op> literal ...] [LIMIT n]
with the cone one of the geometry UDFs on constants and one column (s_region or its
packed twin), SKY_PT_IN_CIRCLE on columns and constants, or SKY_DISTANCE compared with a
number. On a few hundred rows DuckDB's own fixed cost (planning, registering the Arrow
table, the Python UDF call) was the whole query; here the same UDF functions DuckDB calls
(sqlfunctions.UDFS) run once on the candidates, and distances come from sky.distance.
Anything else (ORDER BY, DISTINCT, expressions, OR, joins, ...) is None: DuckDB runs it.
The plan is parsed from the SQL text (cached: translations repeat) by a strict scanner:
what it does not recognise in full is not planned.
"""

from __future__ import annotations

import functools
import operator
import re
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..geometry import sky, sqlfunctions

COLUMN = re.compile(r'"(\w+)"\."(\w+)"')
NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
STRING = re.compile(r"'(?:[^']|'')*'")
OUTPUT = re.compile(r'"(\w+)"\."(\w+)" AS "([^"]+)"')
FROM = re.compile(r'"(\w+)"\."(\w+)" AS "(\w+)"')
CALL = re.compile(r"(SKY_\w+)\((.*)\)", re.S)
BOX = re.compile(r'\(\((?:"\w+"\.)?"_row" <> -(\d+) AND ')
OPS = {"<=": "less_equal", ">=": "greater_equal", "<>": "not_equal", "!=": "not_equal",
       "<": "less", ">": "greater", "=": "equal"}
FLIP = {"<=": ">=", ">=": "<=", "<": ">", ">": "<", "=": "=", "<>": "<>", "!=": "!="}
MACROS = ("SKY_DISTANCE", "SKY_PT_IN_CIRCLE")

# queries the lane answered (tests assert it is taken, not only that answers match)
ANSWERED = [0]


@dataclass(frozen=True)
class Col:
    name: str


@dataclass(frozen=True)
class Call:
    """A geometry function of columns and constants (numbers, LIST_VALUE of numbers)."""

    name: str  # upper case, as emitted
    args: tuple


@dataclass(frozen=True)
class Compare:
    """left <op> right: a column or Call against a number or string."""

    left: Col | Call
    op: str
    right: float | int | str


@dataclass(frozen=True)
class Plan:
    table: str  # served table name, schema.name
    source: str  # the FROM item's text
    outputs: tuple[tuple[str, str], ...]  # (column, output name)
    select: str  # the select list's text (its DuckDB result types are cached by it)
    token: int  # 0: no row can match (the box met no file)
    cone: Call | Compare
    filters: tuple[Compare, ...]
    limit: int | None


TOKENS = re.compile(r"""'[^']*'|"[^"]*"|[()]|[^'"()]+|['"]""")


def _mask(sql: str) -> str | None:
    """sql with the insides of quotes and parentheses blanked (same length), so keywords
    and separators found in it are top level; None if they do not balance. By tokens,
    not characters: a box lists its files, so the text grows with the files a cone
    meets (ten unmerged weeks: ~0.7 ms a query in a loop over characters)."""
    out, depth = [], 0
    for m in TOKENS.finditer(sql):
        tok = m.group()
        first = tok[0]
        if first in "'\"":
            if len(tok) == 1:
                return None  # a quote that is not closed
            # (a doubled quote closes and reopens: the same result)
            out.append(first + "_" * (len(tok) - 2) + first if depth == 0 else "_" * len(tok))
        elif tok == "(":
            depth += 1
            out.append("(" if depth == 1 else "_")
        elif tok == ")":
            depth -= 1
            if depth < 0:
                return None
            out.append(")" if depth == 0 else "_")
        else:
            out.append(tok if depth == 0 else "_" * len(tok))
    return "".join(out) if depth == 0 else None


def _top(pattern: str, text: str) -> re.Match | None:
    """pattern matched in full against text with quotes and parentheses blanked: its
    groups' spans cut text at the top level."""
    masked = _mask(text)
    return None if masked is None else re.fullmatch(pattern, masked)


def _split(text: str, sep: str) -> list[str] | None:
    """text split on sep at the top level."""
    masked = _mask(text)
    if masked is None:
        return None
    parts, start = [], 0
    for m in re.finditer(re.escape(sep), masked):
        parts.append(text[start:m.start()])
        start = m.end()
    return parts + [text[start:]]


def _literal(text: str) -> float | int | str | None:
    if text.startswith("(-") and text.endswith(")"):  # how negative numbers are written
        text = text[1:-1]
    if NUMBER.fullmatch(text):
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    if STRING.fullmatch(text):
        return text[1:-1].replace("''", "'")
    return None


def _arg(text: str, alias: str):
    """A call argument: Col, a number, or a tuple of numbers (LIST_VALUE)."""
    m = COLUMN.fullmatch(text)
    if m:
        return Col(m.group(2)) if m.group(1) == alias else None
    if text.startswith("LIST_VALUE(") and text.endswith(")"):
        items = _split(text[len("LIST_VALUE("):-1], ", ")
        vals = [_literal(t) for t in items or []]
        ok = vals and all(isinstance(v, int | float) for v in vals)
        return tuple(float(v) for v in vals) if ok else None
    v = _literal(text)
    return float(v) if isinstance(v, int | float) else None


def _call(text: str, alias: str) -> Call | None:
    m = CALL.fullmatch(text)
    if m is None or _mask(text) != m.group(1) + "(" + "_" * len(m.group(2)) + ")":
        return None  # not one call spanning the whole term
    name = m.group(1)
    if name.lower().removesuffix("_bin") not in sqlfunctions.UDFS and name not in MACROS:
        return None
    args = [_arg(a, alias) for a in _split(m.group(2), ", ") or []]
    if not args or any(a is None for a in args) or sum(isinstance(a, Col) for a in args) == 0:
        return None
    return Call(name, tuple(args))


def _compare(text: str, alias: str) -> Compare | None:
    m = _top(r"(.+?) (<=|>=|<>|!=|<|>|=) (.+)", text)
    if m is None:
        return None
    a, op, b = text[:m.end(1)], m.group(2), text[m.start(3):]
    for left, right, o in ((a, b, op), (b, a, FLIP[op])):
        value = _literal(right)
        if value is None:
            continue
        col = COLUMN.fullmatch(left)
        if col and col.group(1) == alias:
            return Compare(Col(col.group(2)), o, value)
        call = _call(left, alias)  # only the pruned forms: `distance < r` or `<= r`
        if call and call.name == "SKY_DISTANCE" and isinstance(value, int | float) \
                and o in ("<", "<="):
            return Compare(call, o, value)
    return None


def _term(text: str, alias: str) -> Call | Compare | int | None:
    """One conjunct: the box (its token; 0: a box that meets no file), a cone, or a
    column comparison."""
    if text == "((FALSE))":
        return 0
    m = BOX.match(text)
    if m and _mask(text) == "(" + "_" * (len(text) - 2) + ")":
        return int(m.group(1))
    call = _call(text, alias)
    if call is not None and call.name != "SKY_DISTANCE":
        return call
    return _compare(text, alias)


@functools.lru_cache(maxsize=1024)
def plan(sql: str) -> Plan | None:
    """The simple-cone plan of a translated query, None when it is not one."""
    m = _top(r"SELECT (.+?) FROM (.+?) WHERE (.+?)(?: LIMIT (\d+))?", sql)
    if m is None:
        return None
    select, source = sql[m.start(1):m.end(1)], sql[m.start(2):m.end(2)]
    where = sql[m.start(3):m.end(3)]
    src = FROM.fullmatch(source)
    if src is None:
        return None
    alias = src.group(3)
    outputs = []
    for item in _split(select, ", ") or []:
        o = OUTPUT.fullmatch(item)
        if o is None or o.group(1) != alias:
            return None
        outputs.append((o.group(2), o.group(3)))
    terms = [_term(t, alias) for t in _split(where, " AND ") or []]
    if any(t is None for t in terms):
        return None
    tokens = [t for t in terms if isinstance(t, int)]
    cones = [t for t in terms if isinstance(t, Call) or
             isinstance(t, Compare) and isinstance(t.left, Call)]
    filters = tuple(t for t in terms if isinstance(t, Compare) and isinstance(t.left, Col))
    if len(tokens) != 1 or len(cones) != 1 or not outputs:
        return None
    return Plan(f"{src.group(1)}.{src.group(2)}", source, tuple(outputs), select, tokens[0],
                cones[0], filters, int(m.group(4)) if m.group(4) else None)


def columns(p: Plan) -> set[str]:
    """The physical columns a plan reads."""
    names = {c for c, _ in p.outputs} | {f.left.name for f in p.filters}
    calls = [p.cone if isinstance(p.cone, Call) else p.cone.left]
    names |= {a.name for c in calls for a in c.args if isinstance(a, Col)}
    return names


def _value(a, rows: pa.Table, n: int) -> pa.Array:
    """A call argument as DuckDB hands it to a UDF: a column, or a constant per row."""
    if isinstance(a, Col):
        col = rows[a.name]
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(a, tuple):  # a constant polygon: the same list on every row
        flat = pa.array(np.tile(np.asarray(a, np.float64), n))
        return pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * len(a), pa.int32()), flat)
    return pa.array(np.full(n, a, np.float64))


def _numbers(a: pa.Array) -> np.ndarray:
    return a.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)


# unit vectors of a candidate table's positions, kept as long as the table is (the
# catalogue keeps a cone's candidate table: a repeated DISTANCE cone converts them once);
# by id (tables are not hashable), dropped when the table goes
_VECTORS: dict[int, tuple[weakref.ref, dict]] = {}
_VECTORS_LOCK = threading.Lock()


def _vectors(rows: pa.Table, ra: Col | float, dec: Col | float) -> np.ndarray:
    """sky.xyz of a position argument pair: constants, or columns of rows (NULL: NaN)."""
    if not isinstance(ra, Col) and not isinstance(dec, Col):
        return _constant_vector(ra, dec)
    if not isinstance(ra, Col) or not isinstance(dec, Col):
        n = rows.num_rows
        return sky.xyz(*(_numbers(_value(a, rows, n)) if isinstance(a, Col) else a
                         for a in (ra, dec)))
    with _VECTORS_LOCK:
        ref, per = _VECTORS.get(id(rows), (None, None))
        if ref is None or ref() is not rows:
            per = {}
            _VECTORS[id(rows)] = (weakref.ref(rows), per)
            weakref.finalize(rows, _forget_vectors, id(rows), per)
        got = per.get((ra.name, dec.name))
    if got is None:
        got = sky.xyz(_numbers(_value(ra, rows, rows.num_rows)),
                      _numbers(_value(dec, rows, rows.num_rows)))
        with _VECTORS_LOCK:
            per[(ra.name, dec.name)] = got
    return got


@functools.lru_cache(maxsize=1024)
def _constant_vector(ra: float, dec: float) -> np.ndarray:
    """sky.xyz of a plan's constant position (plans repeat: made once), read-only."""
    v = sky.xyz(ra, dec)
    v.flags.writeable = False
    return v


def _forget_vectors(key: int, per: dict) -> None:
    with _VECTORS_LOCK:
        if _VECTORS.get(key, (None, None))[1] is per:
            del _VECTORS[key]


def _evaluate(c: Call, rows: pa.Table) -> np.ndarray:
    """The call's value per row: booleans (NULL: False) or degrees (NULL: NaN)."""
    n = rows.num_rows
    if c.name in MACROS:  # SQL macros in DuckDB: the same distance from the kernels
        # (sky.distance is the angle between the two positions' unit vectors)
        x1, y1, x2, y2, *r = c.args
        d = sky._angle(_vectors(rows, x1, y1), _vectors(rows, x2, y2))
        if c.name == "SKY_DISTANCE":
            return d
        with np.errstate(invalid="ignore"):
            return d <= r[0]
    args = [_value(a, rows, n) for a in c.args]
    name = c.name.lower().removesuffix("_bin")
    if name in sqlfunctions.CONST_FIRST and isinstance(c.args[0], tuple) and len(args) == 2:
        got = sqlfunctions.CONST_FIRST[name](np.asarray(c.args[0], np.float64), args[1])
    else:
        got = sqlfunctions.UDFS[name][0](*args)
    return got.fill_null(False).to_numpy(zero_copy_only=False)


def _compare_mask(f: Compare, rows: pa.Table) -> np.ndarray:
    if isinstance(f.left, Call):
        d = _evaluate(f.left, rows)
        with np.errstate(invalid="ignore"):
            return getattr(operator, {"<=": "le", ">=": "ge", "<>": "ne", "!=": "ne",
                                      "<": "lt", ">": "gt", "=": "eq"}[f.op])(d, f.right) \
                & ~np.isnan(d)
    col = rows[f.left.name]
    got = getattr(pc, OPS[f.op])(col, pa.scalar(f.right))
    if pa.types.is_floating(col.type) and f.op in (">", ">="):
        got = pc.or_(got, pc.is_nan(col))  # DuckDB orders NaN above every number
    return got.fill_null(False).to_numpy(zero_copy_only=False)


def comparable(p: Plan, types: dict[str, pa.DataType]) -> bool:
    """Column comparisons of the same kinds (numbers, strings) only: DuckDB's implicit
    casts between kinds are not repeated here."""
    for f in p.filters:
        t = types.get(f.left.name)
        if t is None:
            return False
        number = pa.types.is_integer(t) or pa.types.is_floating(t)
        if not (number and isinstance(f.right, int | float) or
                pa.types.is_string(t) and isinstance(f.right, str)):
            return False
    return True


def answer(p: Plan, rows: pa.Table, out: pa.Schema, served) -> pa.Table:
    """The query's rows: rows (the candidates, physical columns) through the cone and
    the filters, in their order, cut at LIMIT, as `out` (DuckDB's result schema).
    served(column, array): the served view's value of a physical column."""
    keep = np.zeros(0, bool)
    if rows.num_rows:  # (the kernels are not handed empty batches)
        keep = _evaluate(p.cone, rows) if isinstance(p.cone, Call) else \
            _compare_mask(p.cone, rows)
        for f in p.filters:
            keep = keep & _compare_mask(f, rows)
    idx = np.flatnonzero(keep)
    if p.limit is not None:
        idx = idx[:p.limit]
    index, picked = pa.array(idx, pa.int64()), {}
    for col, _ in p.outputs:  # only the columns output, each once
        if col not in picked:
            whole = rows[col]
            whole = whole.chunk(0) if whole.num_chunks == 1 else whole.combine_chunks()
            picked[col] = whole.take(index)
    arrays = []
    for (col, _), field in zip(p.outputs, out):
        a = served(col, picked[col])
        arrays.append(a if a.type == field.type else a.cast(field.type))
    ANSWERED[0] += 1
    return pa.Table.from_arrays(arrays, schema=out)
