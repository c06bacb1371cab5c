"""Exact spherical geometry on the celestial sphere, vectorised with numpy.

Polygons are flat (ra1, dec1, ra2, dec2, ...) degree lists whose edges are great-circle
arcs; they must fit in a hemisphere (footprints, query regions). Tests are orientation
free: a polygon is the smaller of the two regions its edges bound. Everything works in
unit vectors, so RA 0/360 and the poles need no special cases.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from functools import cached_property
from pathlib import Path

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
        self.count = (np.diff(offsets) // 2).astype(np.int64)
        # (cumsum - count: one start per polygon, none for none; [0] for an empty batch
        # made the kernels read count[0] of an empty array and crash the process)
        self.start = (np.cumsum(self.count) - self.count).astype(np.int64)
        self.v = np.empty((len(flat) // 2, 3))
        # only a test of the kernels that needs them starts loading them (~0.5 s of CPU a
        # DataLink answer, which reads one footprint, does not need)
        if _READY.is_set():
            _k_xyz(_rows(flat), self.v)
        else:
            _xyz_exact(flat, self.v)

    @cached_property
    def row(self) -> np.ndarray:
        """The polygon of each vertex (for the vectorised numpy forms)."""
        return np.repeat(np.arange(len(self.count)), self.count)

    @cached_property
    def next(self) -> np.ndarray:
        """Index of each vertex's successor (closing the ring)."""
        nxt = np.arange(len(self.v)) + 1
        ends = self.start + self.count
        nxt[ends[self.count > 0] - 1] = self.start[self.count > 0]
        return nxt

    @classmethod
    def from_arrow(cls, arr: pa.Array | pa.ChunkedArray) -> Polys:
        """From a list<double> array or its packed binary form (see pack)."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            arr = arr if arr.type == pa.binary() else arr.cast(pa.binary())
            arr = arr.fill_null(b"") if arr.null_count else arr
            _, offs, data = arr.buffers()
            offsets = np.frombuffer(offs, np.int32, len(arr) + 1, arr.offset * 4).astype(np.int64)
            flat = np.frombuffer(data, "<f8", (offsets[-1] - offsets[0]) // 8, offsets[0]) \
                if offsets[-1] > offsets[0] else np.empty(0)
            return cls((offsets - offsets[0]) // 8, flat)
        return cls(*_list_parts(arr))

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

    def radius(self) -> np.ndarray:
        """Largest centre-to-vertex angle per polygon (deg): its bounding cap."""
        return self.per_polygon(np.maximum, _angle(self.centre()[self.row], self.v), 0.0)


def _tangent_basis(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.where(np.abs(c[..., 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    e1 = _cross(ref, c)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty polygons give NaN, not noise
        e1 /= _norm(e1)[..., None]
    return e1, _cross(c, e1)


# ---- per-row kernels: the tests a query runs on every candidate row -------------------
# Compiled with numba: the vectorised numpy forms spent ~7 us a row in small-array calls
# while holding the GIL, which DuckDB's threads then queue on; these take ~0.1 us and
# release it. Each loops over polygons; vertices are v[start[i]:start[i] + count[i]].
# numba itself is imported when the kernels are first needed (the loader thread of
# kernels_ready, or warm_up), not with this module: its import is ~0.3-0.6 s of a cold
# start that a cone's first answer does not need. Until then `njit` only records them.

_JITTED: list[tuple[str, object, dict]] = []
_JIT_LOCK = threading.Lock()


def njit(name: str | None = None, **options):
    """numba.njit(**options), deferred: the module global `name` (the function's own name
    by default) becomes the compiled kernel when _jit_all() runs."""
    def mark(fn):
        _JITTED.append((name or fn.__name__, fn, options))
        return fn
    return mark


def _jit_all() -> None:
    """Replace every recorded kernel by its numba dispatcher (compiled on first call, or
    loaded from the cache); callees resolve through these globals when they compile."""
    with _JIT_LOCK:
        if not _JITTED:
            return
        import numba  # deferred: cold start (numba and llvmlite, ~0.3-0.6 s)

        scope = globals()
        for name, fn, options in _JITTED:
            scope[name] = numba.njit(**options)(fn)
        _JITTED.clear()


@njit(cache=True, nogil=True)
def _k_xyz(flat, out):
    for j in range(len(out)):
        ra, dec = math.radians(flat[2 * j]), math.radians(flat[2 * j + 1])
        c = math.cos(dec)
        out[j, 0], out[j, 1], out[j, 2] = c * math.cos(ra), c * math.sin(ra), math.sin(dec)


@njit(cache=True, nogil=True)
def _centre(v, s, k):
    x = y = z = 0.0
    for j in range(s, s + k):
        x += v[j, 0]
        y += v[j, 1]
        z += v[j, 2]
    n = math.sqrt(x * x + y * y + z * z)
    return (x / n, y / n, z / n) if n > 0 else (0.0, 0.0, 0.0)


@njit(cache=True, nogil=True)
def _k_cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@njit(cache=True, nogil=True)
def _k_angle(a0, a1, a2, b0, b1, b2):
    c0, c1, c2 = _k_cross(a0, a1, a2, b0, b1, b2)
    return math.degrees(math.atan2(math.sqrt(c0 * c0 + c1 * c1 + c2 * c2),
                                   a0 * b0 + a1 * b1 + a2 * b2))


def _gnomonic(x, y, z, c0, c1, c2, e0, e1, e2, f0, f1, f2):
    """(x, y, z) in the gnomonic plane centred on c with axes e, f: plain arithmetic, so
    one definition serves the kernel (jitted below) and the numpy stand-in (on arrays)
    with the same expressions in the same order."""
    pc = x * c0 + y * c1 + z * c2
    return (x * e0 + y * e1 + z * e2) / pc, (x * f0 + y * f1 + z * f2) / pc


_k_gnomonic = njit(name="_k_gnomonic", cache=True, nogil=True)(_gnomonic)


@njit(cache=True, nogil=True)
def _inside(p0, p1, p2, v, s, k):
    """Even-odd rule in the gnomonic projection centred on the polygon: it maps great
    circles to straight lines, so it is exact."""
    c0, c1, c2 = _centre(v, s, k)
    pc = p0 * c0 + p1 * c1 + p2 * c2
    if k == 0 or not pc > 0:
        return False
    r0, r1, r2 = (0.0, 0.0, 1.0) if abs(c2) < 0.9 else (1.0, 0.0, 0.0)
    e0, e1, e2 = _k_cross(r0, r1, r2, c0, c1, c2)
    n = math.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
    e0, e1, e2 = e0 / n, e1 / n, e2 / n
    f0, f1, f2 = _k_cross(c0, c1, c2, e0, e1, e2)
    qx = (p0 * e0 + p1 * e1 + p2 * e2) / pc
    qy = (p0 * f0 + p1 * f1 + p2 * f2) / pc
    crossings = 0
    for j in range(k):
        a, b = s + j, s + (j + 1) % k
        ax, ay = _k_gnomonic(v[a, 0], v[a, 1], v[a, 2], c0, c1, c2, e0, e1, e2, f0, f1, f2)
        bx, by = _k_gnomonic(v[b, 0], v[b, 1], v[b, 2], c0, c1, c2, e0, e1, e2, f0, f1, f2)
        if (ay > qy) != (by > qy) and qx < ax + (qy - ay) * (bx - ax) / (by - ay):
            crossings += 1
    return crossings % 2 == 1


@njit(cache=True, nogil=True)
def _edge_distance(p0, p1, p2, a0, a1, a2, b0, b1, b2):
    """Angle (deg) from p to the great-circle arc a->b."""
    ends = min(_k_angle(p0, p1, p2, a0, a1, a2), _k_angle(p0, p1, p2, b0, b1, b2))
    n0, n1, n2 = _k_cross(a0, a1, a2, b0, b1, b2)
    nn = math.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
    if nn == 0:
        return ends
    n0, n1, n2 = n0 / nn, n1 / nn, n2 / nn
    pn = p0 * n0 + p1 * n1 + p2 * n2
    # the foot of p on the great circle lies on the arc when it is between a and b
    f0, f1, f2 = p0 - pn * n0, p1 - pn * n1, p2 - pn * n2
    x0, x1, x2 = _k_cross(a0, a1, a2, f0, f1, f2)
    y0, y1, y2 = _k_cross(f0, f1, f2, b0, b1, b2)
    if x0 * n0 + x1 * n1 + x2 * n2 >= 0 and y0 * n0 + y1 * n1 + y2 * n2 >= 0:
        return min(math.degrees(math.asin(min(1.0, abs(pn)))), ends)
    return ends


@njit(cache=True, nogil=True)
def _min_edge(p0, p1, p2, v, s, k):
    best = math.inf
    for j in range(k):
        a, b = s + j, s + (j + 1) % k
        best = min(best, _edge_distance(p0, p1, p2, v[a, 0], v[a, 1], v[a, 2],
                                        v[b, 0], v[b, 1], v[b, 2]))
    return best


@njit(cache=True, nogil=True)
def _k_points_in_polys(p, v, start, count, out):
    for i in range(len(start)):
        out[i] = _inside(p[i, 0], p[i, 1], p[i, 2], v, start[i], count[i])


@njit(cache=True, nogil=True)
def _k_min_edge_distance(p, v, start, count, out):
    for i in range(len(start)):
        out[i] = _min_edge(p[i, 0], p[i, 1], p[i, 2], v, start[i], count[i])


@njit(cache=True, nogil=True)
def _k_circles_touch_polys(p, r, v, start, count, out):
    for i in range(len(start)):
        s, k = start[i], count[i]
        out[i] = False
        if k == 0:
            continue
        p0, p1, p2 = p[i, 0], p[i, 1], p[i, 2]
        # a polygon within a hemisphere lies in the cap around its centre through its
        # farthest vertex: a circle beyond both radii misses it (most candidate rows)
        c0, c1, c2 = _centre(v, s, k)
        far = 0.0
        for j in range(s, s + k):
            far = max(far, _k_angle(c0, c1, c2, v[j, 0], v[j, 1], v[j, 2]))
        if far < 90.0 and _k_angle(p0, p1, p2, c0, c1, c2) > far + r[i]:
            continue
        out[i] = _inside(p0, p1, p2, v, s, k) or _min_edge(p0, p1, p2, v, s, k) <= r[i]


def warm_up() -> None:
    """Compile the kernels (about 2 s; then cached under NUMBA_CACHE_DIR or __pycache__),
    or load them from that cache (~0.6 s), with the argument types queries use."""
    _jit_all()
    v = np.empty((3, 3))
    _k_xyz(np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0]), v)
    start, count = np.zeros(1, np.int64), np.full(1, 3, np.int64)
    p = _rows(xyz([0.5], [0.2]).reshape(1, 3))
    _k_points_in_polys(p, v, start, count, np.zeros(1, bool))
    _k_min_edge_distance(p, v, start, count, np.empty(1))
    _k_circles_touch_polys(p, np.full(1, 0.1), v, start, count, np.zeros(1, bool))


# ---- before the kernels are loaded ------------------------------------------------------
# Loading the cached kernels costs ~0.6-1 s in a new process (numba imports its whole CPU
# target, scipy's BLAS check included) and the first query of a container would wait for
# it. Instead the first call starts the loading in a thread and, until it is done, the
# point-in-polygon test runs as numpy with the kernels' arithmetic, operation for
# operation (the same IEEE results; sin/cos from the same libm via math), so answers do
# not depend on which path ran. The other tests wait for the kernels.

_READY = threading.Event()
_LOADING = threading.Lock()
_loader: list[threading.Thread] = []


def _load_kernels() -> None:
    try:
        warm_up()
    finally:
        _READY.set()


def kernels_ready(wait: bool = False) -> bool:
    """Are the numba kernels loaded? The first call starts loading them (a thread);
    wait=True blocks until they are."""
    if _READY.is_set():
        return True
    with _LOADING:
        if not _loader:
            _loader.append(threading.Thread(target=_load_kernels, name="sky-kernels",
                                            daemon=True))
            _loader[0].start()
    if wait:
        _READY.wait()
    return _READY.is_set()


def _xyz_exact(flat: np.ndarray, out: np.ndarray) -> None:
    """_k_xyz without numba: math's radians, cos and sin, as the kernel calls them."""
    cos, sin, rad = math.cos, math.sin, math.radians
    vals = np.asarray(flat, dtype=np.float64).tolist()
    for j in range(len(out)):
        ra, dec = rad(vals[2 * j]), rad(vals[2 * j + 1])
        c = cos(dec)
        out[j, 0], out[j, 1], out[j, 2] = c * cos(ra), c * sin(ra), sin(dec)


def _points_in_polys_np(p: np.ndarray, polys: Polys) -> np.ndarray:
    """_k_points_in_polys (_inside for every row) as numpy over the rows, vertex by
    vertex, with the kernel's expressions in the kernel's order."""
    v, s, k = polys.v, polys.start, polys.count
    n = len(k)
    if n == 0:
        return np.zeros(0, bool)
    p0, p1, p2 = p[:, 0], p[:, 1], p[:, 2]
    x, y, z = np.zeros(n), np.zeros(n), np.zeros(n)
    top = int(k.max())
    with np.errstate(all="ignore"):
        for j in range(top):
            m = j < k
            idx = s[m] + j
            x[m] += v[idx, 0]
            y[m] += v[idx, 1]
            z[m] += v[idx, 2]
        nn = np.sqrt(x * x + y * y + z * z)
        pos = nn > 0
        safe = np.where(pos, nn, 1.0)
        c0, c1, c2 = (np.where(pos, a / safe, 0.0) for a in (x, y, z))
        pc = p0 * c0 + p1 * c1 + p2 * c2
        ok = (k > 0) & (pc > 0)
        near = np.abs(c2) < 0.9
        r0, r1, r2 = np.where(near, 0.0, 1.0), np.zeros(n), np.where(near, 1.0, 0.0)
        e0, e1, e2 = r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0
        en = np.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
        e0, e1, e2 = e0 / en, e1 / en, e2 / en
        f0, f1, f2 = c1 * e2 - c2 * e1, c2 * e0 - c0 * e2, c0 * e1 - c1 * e0
        qx = (p0 * e0 + p1 * e1 + p2 * e2) / pc
        qy = (p0 * f0 + p1 * f1 + p2 * f2) / pc
        crossings = np.zeros(n, np.int64)
        kk = np.maximum(k, 1)
        for j in range(top):
            m = ok & (j < k)
            a, b = s + j, s + (j + 1) % kk
            a, b = np.where(m, a, 0), np.where(m, b, 0)
            ax, ay = _gnomonic(v[a, 0], v[a, 1], v[a, 2], c0, c1, c2, e0, e1, e2, f0, f1, f2)
            bx, by = _gnomonic(v[b, 0], v[b, 1], v[b, 2], c0, c1, c2, e0, e1, e2, f0, f1, f2)
            straddle = (ay > qy) != (by > qy)
            hit = straddle & (qx < ax + (qy - ay) * (bx - ax) / (by - ay))
            crossings += m & hit
    return ok & (crossings % 2 == 1)


def _rows(p: np.ndarray) -> np.ndarray:
    """A kernel argument: C-contiguous float64, and writable. numba keys its compiled
    code on the read-only flag too, so a read-only array (Arrow's zero-copy buffers, as
    DuckDB's UDFs pass them) compiled a second specialization on the request path (~0.4 s
    on SIA's first query) instead of loading the cached one warm_up made."""
    return np.require(p, np.float64, ["C_CONTIGUOUS", "WRITEABLE"])


def points_in_polys(p: np.ndarray, polys: Polys) -> np.ndarray:
    """Is unit vector p[i] inside polygon i?"""
    if not kernels_ready():
        return _points_in_polys_np(_rows(p), polys)
    out = np.zeros(len(polys), bool)
    _k_points_in_polys(_rows(p), polys.v, polys.start, polys.count, out)
    return out


def min_edge_distance(p: np.ndarray, polys: Polys) -> np.ndarray:
    """Smallest angle (deg) from p[i] to the boundary of polygon i."""
    kernels_ready(wait=True)
    out = np.empty(len(polys))
    _k_min_edge_distance(_rows(p), polys.v, polys.start, polys.count, out)
    return out


def circles_touch_polys(p: np.ndarray, radius: np.ndarray, polys: Polys) -> np.ndarray:
    """Does the circle of `radius` (deg) around p[i] meet polygon i?"""
    kernels_ready(wait=True)
    out = np.zeros(len(polys), bool)
    r = _rows(np.broadcast_to(radius, (len(polys),)))
    _k_circles_touch_polys(_rows(p), r, polys.v, polys.start, polys.count, out)
    return out


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
    import cdshealpix  # deferred: cold start (astropy)
    from astropy.coordinates import Latitude, Longitude  # deferred: cold start (astropy)

    return cdshealpix.lonlat_to_healpix(Longitude(np.asarray(ra, float), "deg"),
                                        Latitude(np.asarray(dec, float), "deg"),
                                        order).astype(np.int64)


def _list_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(value offsets from 0, flat values) of a list<double> array, nulls as empty."""
    arr = arr.fill_null([])
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    flat = arr.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return offsets - offsets[0], flat


def pack(polys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """list<double> polygons as binary values of little-endian float64 (nulls kept)."""
    if isinstance(polys, pa.ChunkedArray):
        polys = polys.combine_chunks()
    offsets, flat = _list_parts(polys)
    data = np.ascontiguousarray(flat, "<f8").tobytes()
    packed = pa.Array.from_buffers(pa.binary(), len(polys), [
        None, pa.py_buffer((offsets * 8).astype(np.int32)), pa.py_buffer(data)])
    return pc.if_else(polys.is_valid(), packed, pa.scalar(None, pa.binary()))


def cap_cells(ra: float, dec: float, radius: float, order: int = 12,
              max_ranges: int = 16) -> list[tuple[int, int]] | None:
    """Inclusive ranges of nested HEALPix indices at `order` covering a cap (a superset:
    every position within `radius` has its index in one of them), coarse enough to stay
    within max_ranges. None when the cap is most of the sky."""
    if radius >= 60.0:
        return None
    core = _healpix_core()
    depth = min(order, max(0, int(math.log2(117.0 / max(radius, 1e-6)))))
    # folded here: astropy's own wrapping of a huge RA (1.09e216) can land on 360 exactly,
    # which mocpy refuses ('Longitude must be in [0, 2pi[')
    ra = ra % 360.0
    ra = 0.0 if ra >= 360.0 else ra
    while True:
        ranges = _cone_ranges(core, ra, dec, max(radius, 1e-9), depth, order)
        if len(ranges) <= max_ranges or depth == 0:
            return ranges
        depth -= 1


def _cone_ranges(core, ra: float, dec: float, radius: float, depth: int,
                 order: int) -> list[tuple[int, int]]:
    """Merged inclusive index ranges at `order` of the cells (depth <= `depth`) that
    cover the cone: the cells of MOC.from_cone, without mocpy and astropy."""
    if core is None:  # the packaged Python API (imports astropy: ~1 s on a cold start)
        import astropy.units as u  # deferred: cold start (astropy)
        from astropy.coordinates import Latitude, Longitude  # deferred: cold start (astropy)
        from mocpy import MOC  # deferred: cold start (astropy)

        moc = MOC.from_cone(Longitude(ra * u.deg), Latitude(dec * u.deg),
                            radius=radius * u.deg, max_depth=depth)
        ranges = moc.to_depth29_ranges >> (2 * (29 - order))
        return [(int(a), int(b) - 1) for a, b in ranges]
    ipix, depths, _ = core.cone_search(np.uint8(depth), np.uint8(2), np.float64(math.radians(ra)),
                                       np.float64(math.radians(dec)),
                                       np.float64(math.radians(radius)), False)
    shift = 2 * (order - np.asarray(depths, np.int64))
    lo = np.asarray(ipix, np.int64) << shift
    hi = (np.asarray(ipix, np.int64) + 1) << shift
    idx = np.argsort(lo)
    out: list[list[int]] = []
    for a, b in zip(lo[idx].tolist(), hi[idx].tolist()):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b - 1) for a, b in out]


@functools.lru_cache(maxsize=1)
def _healpix_core():
    """cdshealpix's compiled module, loaded alone: the package imports astropy (~1 s of
    a cold start), the compiled functions need none of it. None when not found."""
    spec = importlib.util.find_spec("cdshealpix")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("cdshealpix*.so"))
    if not found:
        return None
    core = importlib.util.spec_from_file_location("cdshealpix.cdshealpix", found[0])
    module = importlib.util.module_from_spec(core)
    try:
        core.loader.exec_module(module)
    except ImportError:
        return None
    return module if hasattr(module, "cone_search") else None


def stcs_polygon(coords) -> str:
    """STC-S text of a polygon: what ObsCore clients and taplint expect for s_region."""
    return "Polygon ICRS " + " ".join(f"{v:.9g}" for v in coords)
