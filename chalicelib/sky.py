"""Exact spherical geometry on the celestial sphere, vectorised with numpy.

Polygons are flat (ra1, dec1, ra2, dec2, ...) degree lists whose edges are great-circle
arcs; they must fit in a hemisphere (footprints, query regions). Tests are orientation
free: a polygon is the smaller of the two regions its edges bound. Everything works in
unit vectors, so RA 0/360 and the poles need no special cases.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEG = np.pi / 180.0


def xyz(ra, dec) -> np.ndarray:
    """Unit vectors (..., 3) for RA/Dec in degrees."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    c = np.cos(dec)
    return np.stack([c * np.cos(ra), c * np.sin(ra), np.sin(dec)], axis=-1)


# Row-wise vector algebra on (..., 3) arrays, written out: np.cross, np.linalg.norm and
# np.sum(a * b, -1) cost several times more on the short rows of a query's batch.
def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", a, b)


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(_dot(a, a))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v / _norm(v)[..., None]
    ra = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(v[..., 2], -1, 1)))
    return ra, dec


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between unit vectors in degrees, accurate at all separations."""
    return np.degrees(np.arctan2(_norm(_cross(a, b)), _dot(a, b)))


def distance(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (Vincenty form: exact for tiny and large angles)."""
    return _angle(xyz(ra1, dec1), xyz(ra2, dec2))


# ---- flattened polygon arrays: one row per polygon, vertices concatenated ---------------


class Polys:
    """A batch of polygons: vertex unit vectors, owning row per vertex, row offsets."""

    def __init__(self, offsets: np.ndarray, flat: np.ndarray):
        # offsets index into the flat (ra, dec, ...) values, so halve them for vertices
        self._link(np.diff(offsets) // 2, xyz(flat[0::2], flat[1::2]))

    def _link(self, count: np.ndarray, v: np.ndarray) -> None:
        self.count, self.v = count, v
        self.start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        self.row = np.repeat(np.arange(len(count)), count)
        nxt = np.arange(len(v)) + 1
        ends = self.start + count
        nxt[ends[count > 0] - 1] = self.start[count > 0]
        self.next = nxt  # index of each vertex's successor (closing the ring)

    def subset(self, keep: np.ndarray) -> Polys:
        """The polygons where keep is true, without converting their vertices again."""
        out = object.__new__(Polys)
        out._link(self.count[keep], self.v[keep[self.row]])
        return out

    @classmethod
    def from_arrow(cls, arr: pa.Array | pa.ChunkedArray) -> Polys:
        """From a list<double> array or its packed binary form (see pack)."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            arr = arr.cast(pa.binary()).fill_null(b"")
            _, offs, data = arr.buffers()
            offsets = np.frombuffer(offs, np.int32, len(arr) + 1, arr.offset * 4).astype(np.int64)
            flat = np.frombuffer(data, "<f8", (offsets[-1] - offsets[0]) // 8, offsets[0]) \
                if offsets[-1] > offsets[0] else np.empty(0)
            return cls((offsets - offsets[0]) // 8, flat)
        arr = arr.fill_null([])
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        flat = arr.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
        return cls(offsets - offsets[0], flat)

    @classmethod
    def one(cls, coords, n: int = 1) -> Polys:
        """The same polygon repeated for n rows."""
        flat = np.tile(np.asarray(coords, float), n)
        return cls(np.arange(n + 1) * len(coords), flat)

    def __len__(self) -> int:
        return len(self.count)

    def per_polygon(self, ufunc: np.ufunc, values: np.ndarray, empty: float) -> np.ndarray:
        """ufunc reduced over each polygon's vertex values (reduceat: ufunc.at is ~50x
        slower); `empty` for polygons without vertices."""
        out = np.full((len(self),) + values.shape[1:], empty, dtype=values.dtype)
        full = self.count > 0
        if full.any():
            out[full] = ufunc.reduceat(values, self.start[full], axis=0)
        return out

    def centre(self) -> np.ndarray:
        c = self.per_polygon(np.add, self.v, 0.0)
        n = _norm(c)[..., None]
        return c / np.where(n == 0, 1, n)

    def radius(self, centre: np.ndarray | None = None) -> np.ndarray:
        """Largest centre-to-vertex angle per polygon (deg): its bounding cap."""
        c = self.centre() if centre is None else centre
        return self.per_polygon(np.maximum, _angle(c[self.row], self.v), 0.0)


def _tangent_basis(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.where(np.abs(c[..., 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    e1 = _cross(ref, c)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty polygons give NaN, not noise
        e1 /= _norm(e1)[..., None]
    return e1, _cross(c, e1)


def points_in_polys(p: np.ndarray, polys: Polys) -> np.ndarray:
    """Is unit vector p[i] inside polygon i? Even-odd rule in the gnomonic projection
    centred on each polygon: it maps great circles to straight lines, so it is exact."""
    c = polys.centre()
    e1, e2 = _tangent_basis(c)
    pc = _dot(p, c)
    front = pc > 0
    safe = np.where(front, pc, 1.0)
    px, py = _dot(p, e1) / safe, _dot(p, e2) / safe
    r = polys.row
    vc = _dot(polys.v, c[r])
    vx, vy = _dot(polys.v, e1[r]) / vc, _dot(polys.v, e2[r]) / vc
    wx, wy = vx[polys.next], vy[polys.next]
    qx, qy = px[r], py[r]
    straddle = (vy > qy) != (wy > qy)
    with np.errstate(divide="ignore", invalid="ignore"):
        xcross = vx + (qy - vy) * (wx - vx) / (wy - vy)
    crossings = np.bincount(r, weights=straddle & (qx < xcross), minlength=len(polys))
    return front & (crossings.astype(np.int64) % 2 == 1)


def _edge_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (deg) from p to the great-circle arc a->b, all (n, 3)."""
    n = _cross(a, b)
    nn = _norm(n)[..., None]
    n = n / np.where(nn == 0, 1, nn)
    # foot of p on the great circle lies on the arc when it is between a and b
    foot = p - _dot(p, n)[..., None] * n
    on_arc = (_dot(_cross(a, foot), n) >= 0) & (_dot(_cross(foot, b), n) >= 0)
    perp = np.degrees(np.arcsin(np.clip(np.abs(_dot(p, n)), 0, 1)))
    ends = np.minimum(_angle(p, a), _angle(p, b))
    return np.where(on_arc & (nn[..., 0] > 0), np.minimum(perp, ends), ends)


def min_edge_distance(p: np.ndarray, polys: Polys) -> np.ndarray:
    """Smallest angle (deg) from p[i] to the boundary of polygon i."""
    d = _edge_distance(p[polys.row], polys.v, polys.v[polys.next])
    return polys.per_polygon(np.minimum, d, np.inf)


def _arcs_cross(a, b, c, d) -> np.ndarray:
    """Do great-circle arcs a->b and c->d (each < 180 deg) intersect?"""
    n1, n2 = _cross(a, b), _cross(c, d)
    x = _cross(n1, n2)
    norm = _norm(x)[..., None]
    x = x / np.where(norm == 0, 1, norm)

    def on(arc_a, arc_b, n, pt):
        return (_dot(_cross(arc_a, pt), n) >= 0) & (
            _dot(_cross(pt, arc_b), n) >= 0)

    hit = (on(a, b, n1, x) & on(c, d, n2, x)) | (on(a, b, n1, -x) & on(c, d, n2, -x))
    return hit & (norm[..., 0] > 1e-15)


def polys_edges_cross(q: np.ndarray, polys: Polys) -> np.ndarray:
    """Does any edge of the fixed polygon q (vertices (k, 3)) cross an edge of polygon i?"""
    out = np.zeros(len(polys), bool)
    a, b = polys.v, polys.v[polys.next]
    for i in range(len(q)):
        hit = _arcs_cross(q[i][None, :], q[(i + 1) % len(q)][None, :], a, b)
        out |= np.bincount(polys.row, weights=hit, minlength=len(polys)) > 0
    return out


def spherical_area(polys: Polys) -> np.ndarray:
    """Area in square degrees: signed fan of spherical triangles around the centre."""
    c = polys.centre()[polys.row]
    a, b = polys.v, polys.v[polys.next]
    num = _dot(c, _cross(a, b))
    den = 1 + _dot(c, a) + _dot(a, b) + _dot(b, c)
    tri = 2 * np.arctan2(num, den)
    area = np.abs(np.bincount(polys.row, weights=tri, minlength=len(polys)))
    return np.degrees(np.degrees(area))


def box_polygon(ra: float, dec: float, width: float, height: float) -> list[float]:
    """ADQL BOX as a polygon: corners at +-width/2, +-height/2 in the tangent plane at the
    centre, so the sides are great circles through the centre's offsets."""
    c = xyz(ra, dec)
    e1, e2 = _tangent_basis(c)
    tx, ty = math.tan(math.radians(width / 2)), math.tan(math.radians(height / 2))
    corners = [c + sx * tx * e1 + sy * ty * e2 for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
    r, d = radec(np.array(corners))
    return [float(v) for pair in zip(r, d) for v in pair]


def cap_bounds(ra: float, dec: float, radius: float) -> tuple[float, float, list[tuple]]:
    """Dec range and RA ranges (0..360, split at the wrap) enclosing a spherical cap:
    the prefilter the Parquet statistics can prune with."""
    lo, hi = dec - radius, dec + radius
    if radius >= 90 or hi >= 90 or lo <= -90:
        return max(lo, -90.0), min(hi, 90.0), [(0.0, 360.0)]
    dra = math.degrees(math.asin(min(1.0, math.sin(math.radians(radius))
                                     / math.cos(math.radians(dec)))))
    a, b = (ra - dra) % 360.0, (ra + dra) % 360.0
    ranges = [(a, b)] if a <= b else [(a, 360.0), (0.0, b)]
    return lo, hi, ranges


def healpix(ra, dec, order: int = 12) -> np.ndarray:
    """Nested HEALPix index of each position: the spatial sort key of the tables."""
    import cdshealpix
    from astropy.coordinates import Latitude, Longitude

    return cdshealpix.lonlat_to_healpix(Longitude(np.asarray(ra, float), "deg"),
                                        Latitude(np.asarray(dec, float), "deg"),
                                        order).astype(np.int64)


def pack(polys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """list<double> polygons as binary values of little-endian float64 (nulls kept)."""
    if isinstance(polys, pa.ChunkedArray):
        polys = polys.combine_chunks()
    valid = polys.is_valid()
    filled = polys.fill_null([])
    offsets = np.asarray(filled.offsets, dtype=np.int64)
    flat = filled.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    data = np.ascontiguousarray(flat, "<f8").tobytes()
    packed = pa.Array.from_buffers(pa.binary(), len(filled), [
        None, pa.py_buffer(((offsets - offsets[0]) * 8).astype(np.int32)), pa.py_buffer(data)])
    return pc.if_else(valid, packed, pa.scalar(None, pa.binary()))


def cap_cells(ra: float, dec: float, radius: float, order: int = 12,
              max_ranges: int = 16) -> list[tuple[int, int]] | None:
    """Inclusive ranges of nested HEALPix indices at `order` covering a cap (a superset:
    every position within `radius` has its index in one of them), coarse enough to stay
    within max_ranges. None when the cap is most of the sky."""
    if radius >= 60.0:
        return None
    import astropy.units as u
    from astropy.coordinates import Latitude, Longitude
    from mocpy import MOC

    depth = min(order, max(0, int(math.log2(117.0 / max(radius, 1e-6)))))
    while True:
        moc = MOC.from_cone(Longitude(ra * u.deg), Latitude(dec * u.deg),
                            radius=max(radius, 1e-9) * u.deg, max_depth=depth)
        ranges = moc.to_depth29_ranges >> (2 * (29 - order))
        if len(ranges) <= max_ranges or depth == 0:
            return [(int(a), int(b) - 1) for a, b in ranges]
        depth -= 1


def stcs_polygon(coords) -> str:
    """STC-S text of a polygon: what ObsCore clients and taplint expect for s_region."""
    return "Polygon ICRS " + " ".join(f"{v:.9g}" for v in coords)
