"""The SQL functions the query engine declares: exact sky geometry and IVOA UDFs.

Geometry values in SQL: a point is two doubles, a circle three (ra, dec, radius), a
polygon a DOUBLE[] of (ra, dec) pairs, all in degrees. Polygon tests are vectorised Arrow
UDFs over sky.py; point/circle tests are SQL macros (tens of millions of rows/s).
The ADQL translator emits only these names; nothing else is callable from a query.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import sky

DOUBLE, BOOL, BIGINT = "DOUBLE", "BOOLEAN", "BIGINT"
LIST = "DOUBLE[]"
# Tests with one polygon also come as <name>_bin, reading a stored footprint's packed
# twin (schema.PACKED_REGION) in place of the list column: same function, less decoding.
PACKED = ("sky_pt_in_poly", "sky_circle_x_poly", "sky_circle_in_poly", "sky_poly_in_circle")

# name -> SQL macro; haversine distance is exact enough for all separations we test.
MACROS = {
    "sky_hav(x1, y1, x2, y2)":
        "sqrt(pow(sin(radians(y2 - y1) / 2), 2) + "
        "cos(radians(y1)) * cos(radians(y2)) * pow(sin(radians(x2 - x1) / 2), 2))",
    # least() skips NULLs in DuckDB: "+ 0 * h" keeps a NULL position NULL
    "sky_distance(x1, y1, x2, y2)":
        "degrees(2 * asin(least(1.0, sky_hav(x1, y1, x2, y2)) + 0 * sky_hav(x1, y1, x2, y2)))",
    "sky_pt_in_circle(x, y, cx, cy, r)": "sky_distance(x, y, cx, cy) <= r",
    "sky_circle_x_circle(x1, y1, r1, x2, y2, r2)": "sky_distance(x1, y1, x2, y2) <= r1 + r2",
    "sky_circle_in_circle(x1, y1, r1, x2, y2, r2)":
        "sky_distance(x1, y1, x2, y2) + r1 <= r2",
    "sky_circle_distance(cx, cy, r, x, y)":  # from a point to a circle: 0 inside it
        "CASE WHEN sky_distance(cx, cy, x, y) <= r THEN 0.0 "
        "ELSE sky_distance(cx, cy, x, y) - r END",
    "sky_area_circle(r)": "degrees(degrees(2 * pi() * (1 - cos(radians(r)))))",
    "ivo_interval_overlaps(l1, h1, l2, h2)": "h1 >= l2 AND h2 >= l1 AND l1 <= h1 AND l2 <= h2",
    "ivo_hasword(haystack, needle)":
        "regexp_matches(lower(haystack), '(^|[^a-z0-9])' || "
        "regexp_escape(lower(needle)) || '($|[^a-z0-9])')",
    "ivo_nocasematch(val, pattern)": "lower(val) LIKE lower(pattern)",
}


# rows the exact footprint tests have been handed (benchmarks read it: candidates/answer)
EXACT_ROWS = [0]


def sql_str(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def sql_list(values) -> str:
    """A SQL list literal of strings."""
    return "[" + ", ".join(map(sql_str, values)) + "]"


def sql_in(values) -> str:
    """The inside of `x IN (...)` for strings; NULL (matching nothing) when empty."""
    return ", ".join(map(sql_str, values)) or "NULL"


class BoxSql(str):
    """The SQL text of a pruning box (Catalogue.box_sql) that also carries its parts, so
    the ADQL translator builds the same condition as syntax-tree nodes instead of parsing
    the text back (~1 ms a query): `(dec BETWEEN lo AND hi AND (ra BETWEEN a AND b OR
    ...) [AND file_col IN (files...)])`, or FALSE when `files` is an empty tuple."""

    ra_col: str
    dec_col: str
    lo: float
    hi: float
    ranges: tuple[tuple[float, float], ...]
    file_col: str | None
    files: tuple[str, ...] | None  # None: no file filter
    row_col: str | None
    token: int | None  # names the candidate rows for the catalogue's cone lane

    def __new__(cls, ra_col: str, dec_col: str, lo: float, hi: float, ranges,
                file_col: str | None = None, files=None, row_col: str | None = None,
                token: int | None = None):
        ra_terms = " OR ".join(f"{ra_col} BETWEEN {a!r} AND {b!r}" for a, b in ranges)
        box = f"{dec_col} BETWEEN {lo!r} AND {hi!r} AND ({ra_terms})"
        if files is None:
            text = f"({box})"
        elif files:
            text = f"({box} AND {file_col} IN ({', '.join(sql_str(u) for u in files)})"
            if token is not None:  # always true (row numbers are >= 0): names the cone
                text = f"({row_col} <> -{token} AND " + text[1:]
            text += ")"
        else:
            text = "(FALSE)"
        self = super().__new__(cls, text)
        self.ra_col, self.dec_col, self.lo, self.hi = ra_col, dec_col, lo, hi
        self.ranges = tuple(ranges)
        self.file_col = file_col
        self.files = tuple(files) if files is not None else None
        self.row_col, self.token = row_col, token
        return self


def _np(a: pa.Array) -> np.ndarray:
    # the common case, no nulls, without the copies (per-call cost is a query's cost: a
    # pruned query makes many small calls)
    a = a if a.type == pa.float64() else a.cast(pa.float64())
    if a.null_count:
        a = pc.fill_null(a, np.nan)
    return a.to_numpy(zero_copy_only=False)


def _polys(a: pa.Array) -> sky.Polys:
    return sky.Polys.from_arrow(a)


def _valid(*arrays: pa.Array) -> np.ndarray:
    ok = np.ones(len(arrays[0]), bool)
    for a in arrays:
        if a.null_count:
            ok &= ~a.is_null().to_numpy(zero_copy_only=False)
    return ok


def _result(values: np.ndarray, *inputs: pa.Array) -> pa.Array:
    if not any(a.null_count for a in inputs):
        return pa.array(values, pa.bool_())
    return pa.array(values, pa.bool_(), mask=~_valid(*inputs))


def pt_in_poly(ra: pa.Array, dec: pa.Array, poly: pa.Array) -> pa.Array:
    EXACT_ROWS[0] += len(ra)
    return _result(sky.points_in_polys(sky.xyz(_np(ra), _np(dec)), _polys(poly)),
                   ra, dec, poly)


def circle_x_poly(ra, dec, r, poly) -> pa.Array:
    EXACT_ROWS[0] += len(ra)
    hit = sky.circles_touch_polys(sky.xyz(_np(ra), _np(dec)), _np(r), _polys(poly))
    return _result(hit, ra, dec, r, poly)


def circle_in_poly(ra, dec, r, poly) -> pa.Array:
    EXACT_ROWS[0] += len(ra)
    p, polys = sky.xyz(_np(ra), _np(dec)), _polys(poly)
    inside = sky.points_in_polys(p, polys) & (sky.min_edge_distance(p, polys) >= _np(r))
    return _result(inside, ra, dec, r, poly)


def poly_in_circle(poly, ra, dec, r) -> pa.Array:
    EXACT_ROWS[0] += len(poly)
    polys = _polys(poly)
    c = sky.xyz(_np(ra), _np(dec))
    far = polys.per_polygon(np.maximum, sky._angle(c[polys.row], polys.v), 0.0)
    return _result(far <= _np(r), poly, ra, dec, r)


def _pairs(a: pa.Array, b: pa.Array, fixed_fn) -> np.ndarray:
    """Run fixed_fn(q_vertices, polys) grouped by distinct values of polygon a."""
    out = np.zeros(len(a), bool)
    keys = [tuple(x) if x is not None else None for x in a.to_pylist()]
    groups: dict = {}
    for i, k in enumerate(keys):
        if k is not None:
            groups.setdefault(k, []).append(i)
    for k, rows in groups.items():
        idx = np.asarray(rows)
        out[idx] = fixed_fn(np.asarray(k, float), pc.take(b, pa.array(idx)))
    return out


def _poly_x_poly_fixed(q: np.ndarray, b: pa.Array) -> np.ndarray:
    polys = _polys(b)
    qv = sky.xyz(q[0::2], q[1::2])
    hits = sky.points_in_polys(polys.v, sky.Polys.one(q, len(polys.v)))
    b_in_q = polys.per_polygon(np.logical_or, hits, False)
    q_in_b = np.zeros(len(polys), bool)
    for v in qv:
        q_in_b |= sky.points_in_polys(np.broadcast_to(v, (len(polys), 3)), polys)
    return b_in_q | q_in_b | sky.polys_edges_cross(qv, polys)


def _poly_in_poly_fixed(q: np.ndarray, b: pa.Array) -> np.ndarray:
    polys = _polys(b)
    qv = sky.xyz(q[0::2], q[1::2])
    inside = np.ones(len(polys), bool)
    for v in qv:
        inside &= sky.points_in_polys(np.broadcast_to(v, (len(polys), 3)), polys)
    return inside & ~sky.polys_edges_cross(qv, polys)


def poly_x_poly(a: pa.Array, b: pa.Array) -> pa.Array:
    EXACT_ROWS[0] += len(a)
    return _result(_pairs(a, b, _poly_x_poly_fixed), a, b)


def poly_in_poly(a: pa.Array, b: pa.Array) -> pa.Array:
    """Is polygon a inside polygon b?"""
    EXACT_ROWS[0] += len(a)
    return _result(_pairs(a, b, _poly_in_poly_fixed), a, b)


def poly_x_poly_const(q: np.ndarray, b: pa.Array) -> pa.Array:
    """poly_x_poly when polygon a is one constant (q, flat ra/dec) on every row: the
    grouping by value of a is skipped (its to_pylist was most of a cone's time)."""
    EXACT_ROWS[0] += len(b)
    return _result(_poly_x_poly_fixed(q, b), b)


def poly_in_poly_const(q: np.ndarray, b: pa.Array) -> pa.Array:
    """poly_in_poly when polygon a is one constant (q) on every row."""
    EXACT_ROWS[0] += len(b)
    return _result(_poly_in_poly_fixed(q, b), b)


# the functions above by the UDF they stand for (the callers of a cone lane use them)
CONST_FIRST = {"sky_poly_x_poly": poly_x_poly_const, "sky_poly_in_poly": poly_in_poly_const}


def poly_distance(poly: pa.Array, ra: pa.Array, dec: pa.Array) -> pa.Array:
    """Degrees from each point to its polygon: 0 inside, else to the nearest edge."""
    EXACT_ROWS[0] += len(poly)
    ok = _valid(poly, ra, dec)
    out = np.zeros(len(poly))
    if ok.any():
        polys, p = _polys(poly.filter(pa.array(ok))), sky.xyz(_np(ra)[ok], _np(dec)[ok])
        out[ok] = np.where(sky.points_in_polys(p, polys), 0.0,
                           sky.min_edge_distance(p, polys))
    return pa.array(out, mask=~ok)


def area_poly(poly: pa.Array) -> pa.Array:
    return pa.array(sky.spherical_area(_polys(poly)), mask=~_valid(poly))


def centroid_poly(poly: pa.Array) -> pa.Array:
    ra, dec = sky.radec(_polys(poly).centre())
    return pa.array([[float(r), float(d)] for r, d in zip(ra, dec)], pa.list_(pa.float64()),
                    mask=~_valid(poly))


def healpix_index(order: pa.Array, ra: pa.Array, dec: pa.Array) -> pa.Array:
    """NULL where there is no position (a NULL or NaN coordinate, |dec| > 90) or no such
    order (a literal order is checked by the translator; a column's is only here):
    cdshealpix aborts the query (a Rust panic) on any of those."""
    o, r, d = _np(order), _np(ra), _np(dec)
    with np.errstate(invalid="ignore"):
        ok = (_valid(order, ra, dec) & np.isfinite(r) & (np.abs(d) <= 90)
              & (o >= 0) & (o <= 29) & (o == np.floor(o)))
    out = np.zeros(len(o), np.int64)
    for k in np.unique(o[ok]):
        sel = ok & (o == k)
        out[sel] = sky.healpix(r[sel], d[sel], int(k))
    return pa.array(out, mask=~ok)


def box_poly(ra: pa.Array, dec: pa.Array, w: pa.Array, h: pa.Array) -> pa.Array:
    vals = zip(_np(ra), _np(dec), _np(w), _np(h))
    return pa.array([sky.box_polygon(*v) for v in vals], pa.list_(pa.float64()))


UDFS = {
    "sky_pack": (sky.pack, [LIST], "BLOB"),  # catalogue-only, not ADQL
    "sky_pt_in_poly": (pt_in_poly, [DOUBLE, DOUBLE, LIST], BOOL),
    "sky_circle_x_poly": (circle_x_poly, [DOUBLE, DOUBLE, DOUBLE, LIST], BOOL),
    "sky_circle_in_poly": (circle_in_poly, [DOUBLE, DOUBLE, DOUBLE, LIST], BOOL),
    "sky_poly_in_circle": (poly_in_circle, [LIST, DOUBLE, DOUBLE, DOUBLE], BOOL),
    "sky_poly_x_poly": (poly_x_poly, [LIST, LIST], BOOL),
    "sky_poly_in_poly": (poly_in_poly, [LIST, LIST], BOOL),
    "sky_poly_distance": (poly_distance, [LIST, DOUBLE, DOUBLE], DOUBLE),
    "sky_area_poly": (area_poly, [LIST], DOUBLE),
    "sky_centroid_poly": (centroid_poly, [LIST], LIST),
    "sky_box": (box_poly, [DOUBLE, DOUBLE, DOUBLE, DOUBLE], LIST),
    "ivo_healpix_index": (healpix_index, [BIGINT, DOUBLE, DOUBLE], BIGINT),
}


def register(con: duckdb.DuckDBPyConnection) -> None:
    for name, (fn, args, ret) in UDFS.items():
        con.create_function(name, fn, args, ret, type="arrow", null_handling="special")
        if name in PACKED:
            con.create_function(f"{name}_bin", fn, ["BLOB" if a == LIST else a for a in args],
                                ret, type="arrow", null_handling="special")
    for sig, body in MACROS.items():
        con.execute(f"CREATE OR REPLACE MACRO {sig} AS {body}")
