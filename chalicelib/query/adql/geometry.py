"""ADQL geometry, translated by static type onto the functions of sqlfunctions.py.

A point is (ra, dec), a circle (ra, dec, radius), a polygon a DOUBLE[] of (ra, dec) pairs,
all in degrees. Constant shapes are folded here (so BOX and POLYGON literals become DOUBLE[]
literals and can bound a pruning box); shapes built from columns stay SQL expressions.
"""

from __future__ import annotations

import math

from sqlglot import exp

from ...dali import MAX_VERTICES
from ...geometry import sky
from ...geometry.sqlfunctions import PACKED
from ...lake import schema
from . import frames
from .calls import Call
from .values import (
    CIRCLE,
    FLOAT,
    GEOMETRY,
    NULL,
    NUMERIC,
    POINT,
    POLYGON,
    PRED,
    STR,
    Prune,
    Val,
    cast,
    describe,
    fn,
    integer,
    norm360,
    num,
    ra_norm,
)


def _has_frame(c: Call) -> bool:
    """Does the argument count say the first argument is a coordinate system?"""
    n, a = len(c.args), c.args
    if not a or a[0].type not in (STR, NULL):
        return False
    centre_point = n > 1 and a[1].type == POINT
    return {"POINT": n == 3, "CIRCLE": n == 4 or n == 3 and centre_point,
            "BOX": n == 5 or n == 4 and centre_point}.get(c.name, True)


def _frame(c: Call) -> tuple[list[int], str]:
    """Check and drop the optional leading coordinate system: the other argument indexes
    and the frame (frames.ICRS, GALACTIC or ECLIPTIC)."""
    if _has_frame(c):
        v, frame = c.args[0], frames.ICRS
        if v.type == STR:
            text = c.literal_string(0, "the coordinate system")
            parsed = frames.parse_frame(text)
            if parsed is None:
                raise c.error(f"Coordinate system '{text}' is not supported; supported are "
                              f"{frames.SUPPORTED_FRAMES}", 0)
            frame, fk5 = parsed
            if fk5:
                c.note(frames.FK5_NOTE)
        return list(range(1, len(c.args))), frame
    return list(range(len(c.args))), frames.ICRS


def _constant_in(c: Call, frame: str, vals: list[Val]) -> list[float] | None:
    """The ICRS (ra, dec, ...) of constant positions given in `frame`; None in ICRS.
    A non-constant position in another frame is an error (the columns are ICRS)."""
    if frame == frames.ICRS:
        return None
    if any(v.number is None for v in vals):
        raise c.error(f"{c.name} in {frame} needs constant coordinates (they are converted "
                      "to ICRS before the query); positions stored here are ICRS, so write "
                      f"{c.name}('ICRS', ...) for columns. Supported coordinate systems: "
                      f"{frames.SUPPORTED_FRAMES}", 0)
    c.note(f"{c.name} given in {frame} was converted to ICRS with astropy before the query")
    return frames.to_icrs(frame, [v.number for v in vals])


def _native(c: Call, frame: str, v: Val) -> tuple[str, tuple[float, ...]] | None:
    """A POINT argument's own frame and coordinates there; checks it agrees with the
    enclosing constructor's frame when that one is not ICRS."""
    native = v.extra.get("native")
    own = native[0] if native else frames.ICRS
    if frame != frames.ICRS and own != frame:
        raise c.error(f"{c.name} is in {frame} but its POINT is in {own}: give the coordinate "
                      f"system once, on the POINT (e.g. POINT('{frame}', lon, lat))", 0)
    return native


def _point(c: Call, i: int, j: int, frame: str = frames.ICRS) -> Val:
    ra, dec = c.number(i, " for the RA"), c.number(j, " for the Dec")
    if dec.number is not None and abs(dec.number) > 90:
        raise c.error(f"Declination {dec.number:g} is outside [-90, 90]", j)
    icrs = _constant_in(c, frame, [ra, dec])
    if icrs is not None:
        return Val(None, POINT, parts=(num(icrs[0]), num(icrs[1])), const=tuple(icrs),
                   op="geom", extra={"refs": (None, None),
                                     "native": (frame, (ra.number, dec.number))})
    const = (ra.number, dec.number) if ra.number is not None and dec.number is not None else None
    return Val(None, POINT, parts=(ra.sql, dec.sql), const=const, op="geom",
               extra={"refs": (ra.ref, dec.ref)})


def _radius(c: Call, i: int, what: str = "radius") -> Val:
    r = c.number(i, f" for the {what}")
    if r.number is not None and not 0 <= r.number <= 180:
        raise c.error(f"The {what} {r.number:g} is outside [0, 180] degrees", i)
    return r


def _centre(c: Call, frame_idx: tuple[list[int], str],
            n_rest: int) -> tuple[Val, list[int]]:
    """A POINT argument or two numbers, then n_rest more arguments."""
    idx, frame = frame_idx
    if len(idx) == 1 + n_rest and c.args[idx[0]].type == POINT:
        _native(c, frame, c.args[idx[0]])
        return c.args[idx[0]], idx[1:]
    if len(idx) == 2 + n_rest:
        return _point(c, idx[0], idx[1], frame), idx[2:]
    raise c.error(f"{c.name} takes {USAGE[c.name]}")


def point(c: Call) -> Val:
    idx, frame = _frame(c)
    if len(idx) != 2:
        raise c.error(f"POINT takes {USAGE['POINT']}")
    return _point(c, *idx, frame)


def circle(c: Call) -> Val:
    centre, rest = _centre(c, _frame(c), 1)
    r = _radius(c, rest[0])
    const = centre.const + (r.number,) if centre.const and r.number is not None else None
    return Val(None, CIRCLE, parts=(*centre.parts, r.sql), const=const, op="geom",
               extra={"refs": centre.extra.get("refs")})


def polygon(c: Call) -> Val:
    idx, frame = _frame(c)
    if idx and all(c.args[i].type == POINT for i in idx):
        pts = [c.args[i] for i in idx]
        for p in pts:
            _native(c, frame, p)
    elif len(idx) % 2 == 0 and all(c.args[i].type in NUMERIC for i in idx):
        pts = [_point(c, idx[k], idx[k + 1], frame) for k in range(0, len(idx), 2)]
    else:
        raise c.error(f"POLYGON takes {USAGE['POLYGON']}")
    if len(pts) < 3:
        raise c.error("POLYGON needs at least three vertices")
    if len(pts) > MAX_VERTICES:
        raise c.error(f"POLYGON has {len(pts)} vertices; at most {MAX_VERTICES} are accepted")
    if all(p.const for p in pts):
        return const_polygon([v for p in pts for v in p.const])
    items = [e for p in pts
             for e in (cast(ra_norm(p.parts[0]), "DOUBLE"), cast(p.parts[1], "DOUBLE"))]
    return Val(fn("list_value", *items), POLYGON, op="geom")


def const_polygon(coords: list[float]) -> Val:
    coords = [norm360(v) if k % 2 == 0 else v for k, v in enumerate(coords)]
    return Val(fn("list_value", *map(num, coords)), POLYGON, const=tuple(coords), op="geom")


def box(c: Call) -> Val:
    centre, rest = _centre(c, _frame(c), 2)
    w, h = _radius(c, rest[0], "width"), _radius(c, rest[1], "height")
    native = centre.extra.get("native")
    if native and (w.number is None or h.number is None):
        raise c.error(f"BOX in {native[0]} needs a constant width and height", rest[0])
    if native:  # the box's sides follow the frame it was given in: convert its corners
        corners = sky.box_polygon(*native[1], w.number, h.number)
        return const_polygon(frames.to_icrs(native[0], list(corners)))
    if centre.const and w.number is not None and h.number is not None:
        return const_polygon(sky.box_polygon(*centre.const, w.number, h.number))
    return Val(fn("sky_box", *centre.parts, w.sql, h.sql), POLYGON, op="geom")


def _geom(c: Call, i: int, kinds=GEOMETRY) -> Val:
    v = c.args[i]
    if v.type not in kinds:
        want = " or ".join(sorted(k.upper() for k in kinds))
        raise c.error(f"{c.name} needs a {want}, not {describe(v.type)}", i)
    return v


# (inside, region) -> SQL function, argument order ("a" = inside's parts, "b" = region's)
_CONTAINS = {
    (POINT, CIRCLE): ("sky_pt_in_circle", "ab"),
    (POINT, POLYGON): ("sky_pt_in_poly", "ab"),
    (CIRCLE, CIRCLE): ("sky_circle_in_circle", "ab"),
    (CIRCLE, POLYGON): ("sky_circle_in_poly", "ab"),
    (POLYGON, CIRCLE): ("sky_poly_in_circle", "ab"),
    (POLYGON, POLYGON): ("sky_poly_in_poly", "ab"),
}
_INTERSECTS = {
    (CIRCLE, CIRCLE): ("sky_circle_x_circle", "ab"),
    (CIRCLE, POLYGON): ("sky_circle_x_poly", "ab"),
    (POLYGON, CIRCLE): ("sky_circle_x_poly", "ba"),
    (POLYGON, POLYGON): ("sky_poly_x_poly", "ab"),
}


def _args(v: Val) -> list[exp.Expr]:
    return [v.sql] if v.type == POLYGON else list(v.parts)


def _packed(v: Val) -> exp.Expr | None:
    """The packed twin of a served table's stored s_region column, where it has one."""
    src = v.owner
    if v.type != POLYGON or v.ref is None or v.ref.name != "s_region" or \
            not getattr(src, "table", None):  # only served tables have one
        return None
    physical = schema.PHYSICAL[schema.TABLES[src.table].physical]
    if all(c.name != schema.PACKED_REGION for c in physical.columns):
        return None
    return exp.column(schema.PACKED_REGION, table=src.sql_alias, quoted=True)


def _emit(name: str, order: str, a: Val, b: Val) -> exp.Expr:
    first, second = (a, b) if order == "ab" else (b, a)
    packed = [_packed(v) for v in (first, second)] if name in PACKED else [None, None]
    if any(p is not None for p in packed):
        return fn(f"{name}_bin", *[x for v, p in zip((first, second), packed)
                                   for x in ([p] if p is not None else _args(v))])
    return fn(name, *_args(first), *_args(second))


def contains(c: Call) -> Val:
    c.arity(2, usage="two geometries: CONTAINS(inside, region)")
    a, b = _geom(c, 0), _geom(c, 1)
    if b.type == POINT:
        raise c.error("CONTAINS(a, b) tests whether a lies inside b: b must be a CIRCLE, "
                      "POLYGON or BOX, not a POINT", 1)
    name, order = _CONTAINS[(a.type, b.type)]
    return Val(_emit(name, order, a, b), PRED, prune=_prune(a, b), op="pred")


def intersects(c: Call) -> Val:
    c.arity(2, usage="two geometries: INTERSECTS(a, b)")
    a, b = _geom(c, 0), _geom(c, 1)
    if a.type == POINT and b.type == POINT:
        raise c.error("INTERSECTS needs at least one region (CIRCLE, POLYGON or BOX)")
    if b.type == POINT:
        a, b = b, a
    if a.type == POINT:
        name, order = _CONTAINS[(a.type, b.type)]
    else:
        name, order = _INTERSECTS[(a.type, b.type)]
        if name == "sky_poly_x_poly" and b.const and not a.const:
            order = "ba"  # the UDF groups rows by its first polygon: put the constant there
    return Val(_emit(name, order, a, b), PRED, prune=_prune(a, b), op="pred")


def distance(c: Call) -> Val:
    if len(c.args) == 4:
        p, q = _point(c, 0, 1), _point(c, 2, 3)
    elif len(c.args) == 2:
        a, b = _geom(c, 0), _geom(c, 1)
        if a.type != POINT and b.type != POINT:
            raise c.error(f"DISTANCE takes {USAGE['DISTANCE']}", 1)
        if a.type != POINT or b.type != POINT:  # ESO's and pgsphere's: to the nearest
            return _region_distance(*((a, b) if b.type == POINT else (b, a)))  # point
        p, q = a, b
    else:
        raise c.error(f"DISTANCE takes {USAGE['DISTANCE']}")
    v = Val(fn("sky_distance", *p.parts, *q.parts), FLOAT, op="fn:distance")
    for target, other in ((p, q), (q, p)):
        box = _point_target(target)
        if other.const and box:
            v.extra["distance"] = (other.const, box)
    return v


def _region_distance(region: Val, point: Val) -> Val:
    """DISTANCE(region, point) as ESO's ObsCore examples use it (and pgsphere gives it):
    degrees from the point to the nearest point of the region, 0 inside it."""
    if region.type == CIRCLE:
        sql = fn("sky_circle_distance", *region.parts, *point.parts)
    else:
        sql = fn("sky_poly_distance", region.sql, *point.parts)
    return Val(sql, FLOAT, op="fn:distance")


def area(c: Call) -> Val:
    c.arity(1, usage="one region: AREA(CIRCLE(...)) or AREA(POLYGON(...))")
    g = _geom(c, 0)
    sql = {POINT: lambda: num(0.0), CIRCLE: lambda: fn("sky_area_circle", g.parts[2]),
           POLYGON: lambda: fn("sky_area_poly", g.sql)}[g.type]()
    return Val(sql, FLOAT, op="fn:area")


def centroid(c: Call) -> Val:
    c.arity(1, usage="one geometry")
    g = _geom(c, 0)
    if g.type == POINT:
        return g
    if g.type == CIRCLE:
        const = g.const[:2] if g.const else None
        return Val(None, POINT, parts=g.parts[:2], const=const, op="geom")
    sql = fn("sky_centroid_poly", g.sql)
    parts = (fn("list_extract", sql.copy(), integer(1)), fn("list_extract", sql.copy(), integer(2)))
    return Val(sql, POINT, parts=parts, op="geom", extra={"normalised": True})


def coord(c: Call) -> Val:
    c.arity(1, usage="one POINT")
    g = _geom(c, 0, {POINT})
    k = 0 if c.name == "COORD1" else 1
    if g.const:
        return Val(num(norm360(g.const[0]) if k == 0 else g.const[1]), FLOAT,
                   const=(g.const[k],), op="fn:coord")
    sql = ra_norm(g.parts[0]) if k == 0 else g.parts[1]
    return Val(sql, FLOAT, op="fn:coord")


def coordsys(c: Call) -> Val:
    c.arity(1, usage="one geometry")
    _geom(c, 0)
    return Val(exp.Literal.string("ICRS"), STR, extra={"literal": "ICRS"})


def region(c: Call) -> Val:
    raise c.error("REGION (deprecated in ADQL 2.1) is not supported: use POINT, CIRCLE, "
                  "POLYGON or BOX")


def materialise(v: Val) -> exp.Expr:
    """A geometry as the DOUBLE[] a result column holds, RA folded into [0, 360)."""
    if v.type == POLYGON or (v.sql is not None and v.extra.get("normalised")):
        return v.sql
    if v.const:
        return fn("list_value", *(num(norm360(x) if k == 0 else x) for k, x in enumerate(v.const)))
    if v.sql is not None:  # a stored point/circle column: already a DOUBLE[]
        return v.sql
    ra, *rest = v.parts
    return fn("list_value", cast(ra_norm(ra), "DOUBLE"), *(cast(p, "DOUBLE") for p in rest))


# ---- pruning -------------------------------------------------------------------------


def _cap(v: Val) -> tuple[float, float, float] | None:
    """The spherical cap (ra, dec, radius) around a constant shape."""
    if not v.const:
        return None
    if v.type == POINT:
        return v.const[0], v.const[1], 0.0
    if v.type == CIRCLE:
        return v.const
    polys = sky.Polys.one(v.const)
    ra, dec = sky.radec(polys.centre())
    return float(ra[0]), float(dec[0]), float(polys.radius()[0])


def _sql(alias: str, name: str) -> str:
    return exp.column(name, table=alias, quoted=True).sql("duckdb")


Target = tuple[str, str, bool, str | None, str]  # ra, dec, footprint?, table, alias


def _point_target(v: Val) -> Target | None:
    """Columns to box when v is POINT(<ra column>, <dec column>) of one stored table."""
    refs = v.extra.get("refs") if v.type == POINT else None
    if not refs or None in refs:
        return None
    ra, dec = refs
    if not (ra.base and dec.base and ra.alias == dec.alias):
        return None
    return _sql(ra.alias, ra.name), _sql(dec.alias, dec.name), False, ra.table, ra.alias


def _footprint_target(v: Val) -> Target | None:
    """s_ra/s_dec of a served table when v is that table's footprint column."""
    src = v.owner
    if v.type != POLYGON or v.ref is None or not getattr(src, "served", False):
        return None
    if src.col("s_ra") is None or src.col("s_dec") is None:
        return None
    return (_sql(src.sql_alias, "s_ra"), _sql(src.sql_alias, "s_dec"), True, src.table,
            src.sql_alias)


def _prune(a: Val, b: Val) -> Prune | None:
    """Both CONTAINS and INTERSECTS imply that the two shapes touch: a constant shape's cap
    then bounds where the other (a position or a footprint) can be."""
    for target, other in ((a, b), (b, a)):
        cap = _cap(other)
        box = _point_target(target) or _footprint_target(target)
        if cap and box and all(math.isfinite(x) for x in cap):
            return Prune(*cap, *box)
    return None


def distance_prune(v: Val, limit: float) -> Prune | None:
    """DISTANCE(POINT(cols), POINT(consts)) < limit."""
    if "distance" not in v.extra or not math.isfinite(limit):
        return None
    (ra, dec), box = v.extra["distance"]
    return Prune(ra, dec, max(limit, 0.0), *box)


USAGE = {
    "POINT": "two coordinates: POINT(ra, dec) or POINT('ICRS', ra, dec)",
    "CIRCLE": "a centre and a radius: CIRCLE(ra, dec, radius) or CIRCLE(POINT(...), radius)",
    "BOX": "a centre, a width and a height: BOX(ra, dec, width, height)",
    "POLYGON": "at least three vertices: POLYGON(ra1, dec1, ra2, dec2, ra3, dec3, ...) or "
               "POLYGON(POINT(...), POINT(...), POINT(...), ...)",
    "DISTANCE": "two POINTs, a region and a POINT (0 inside the region), or four numbers: "
                "DISTANCE(ra1, dec1, ra2, dec2)",
}

FUNCTIONS = {"POINT": point, "CIRCLE": circle, "POLYGON": polygon, "BOX": box,
             "CONTAINS": contains, "INTERSECTS": intersects, "DISTANCE": distance,
             "AREA": area, "CENTROID": centroid, "COORD1": coord, "COORD2": coord,
             "COORDSYS": coordsys, "REGION": region}
