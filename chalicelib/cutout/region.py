"""Requested regions and the pixel box they select in one file.

Two syntaxes parse to a Region: the archive's `?center=x,y[unit]&size=w[,h][unit]` (a box
aligned with the pixel grid, as IRSA's image server cuts) and SODA's POS/CIRCLE/POLYGON
with BAND/TIME/POL. `pixel_box` maps a Region to the half-open, 0-based box
[x0, x1) x [y0, y1) of a file's pixels through its full celestial WCS (TAN-SIP).

Sky shapes take the bounding box of (shape intersected with the image): boundary points of
the shape that land on the image plus border points of the image that lie in the shape.
Both tests run on the sphere (chalicelib.sky), so RA 0/360, the poles and shapes larger
than the image need no special cases.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from .. import dali
from ..geometry import sky
from .errors import CutoutError, MultiValued, NoOverlap
from .wavetab import WaveTable

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CENTER = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*([a-zA-Z]*)\s*$")
_SIZE = re.compile(rf"^\s*({_NUM})\s*(?:,\s*({_NUM}))?\s*([a-zA-Z]*)\s*$")
PIXEL_UNITS = frozenset({"px", "pix", "pixel", "pixels"})
ANGLE_UNITS = {"deg": 1.0, "d": 1.0, "degree": 1.0, "degrees": 1.0, "arcmin": 1 / 60,
               "arcsec": 1 / 3600, "rad": math.degrees(1.0)}
POL_STATES = frozenset("I Q U V RR LL RL LR XX YY XY YX POLI POLA".split())
# a cutout larger than this (per side, or as a centre offset) is no real request
MAX_PIXELS = 100_000
MAX_SAMPLES = 200_000  # boundary points per shape: enough for a hemisphere at 1 px


class Box(NamedTuple):
    """Parent pixels [x0, x1) x [y0, y1), 0-based (numpy slices [y0:y1, x0:x1])."""

    x0: int
    x1: int
    y0: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


# ---------------------------------------------------------------- shapes

@dataclass(frozen=True)
class CenterBox:
    """Archive syntax: a box of width x height along NAXIS1 x NAXIS2 around a centre given
    as RA/Dec (deg) or as 1-based FITS pixel coordinates."""

    x: float
    y: float
    pixel_center: bool
    width: float  # deg, or pixels when pixel_size
    height: float
    pixel_size: bool

    def describe(self) -> str:
        cu, su = ("px" if self.pixel_center else "deg"), ("px" if self.pixel_size else "deg")
        return f"center={self.x:.10g},{self.y:.10g}{cu} size={self.width:.10g}," \
               f"{self.height:.10g}{su}"


@dataclass(frozen=True)
class Circle:
    ra: float
    dec: float
    radius: float

    def describe(self) -> str:
        return f"CIRCLE {self.ra:.10g} {self.dec:.10g} {self.radius:.10g}"

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return sky.distance(ra, dec, self.ra, self.dec) <= self.radius

    def boundary(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        c = sky.xyz(self.ra, self.dec)
        e1, e2 = sky._tangent_basis(c)
        r = math.radians(self.radius)
        n = _count(360.0 * math.sin(r), step)
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
        v = math.cos(r) * c + math.sin(r) * (np.cos(t) * e1 + np.sin(t) * e2)
        return sky.radec(v)


@dataclass(frozen=True)
class Range:
    """RA interval (wrapping through 0 when ra1 > ra2) x Dec interval, degrees."""

    ra1: float
    ra2: float
    dec1: float
    dec2: float

    def describe(self) -> str:
        return f"RANGE {self.ra1:.10g} {self.ra2:.10g} {self.dec1:.10g} {self.dec2:.10g}"

    @property
    def full_ra(self) -> bool:
        return self.ra2 - self.ra1 >= 360.0

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ok = (dec >= self.dec1) & (dec <= self.dec2)
        if self.full_ra:
            return ok
        a, b, r = self.ra1 % 360.0, self.ra2 % 360.0, np.asarray(ra) % 360.0
        in_ra = (r >= a) & (r <= b) if a <= b else (r >= a) | (r <= b)
        return ok & in_ra

    def boundary(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        span = 360.0 if self.full_ra else (self.ra2 - self.ra1) % 360.0
        ras, decs = [], []
        for dec in (self.dec1, self.dec2):  # small circles of constant Dec
            n = _count(span * math.cos(math.radians(dec)), step)
            ras.append(self.ra1 + np.linspace(0, span, n))
            decs.append(np.full(n, dec))
        if not self.full_ra:  # meridians
            n = _count(self.dec2 - self.dec1, step)
            for ra in (self.ra1, self.ra1 + span):
                ras.append(np.full(n, ra))
                decs.append(np.linspace(self.dec1, self.dec2, n))
        return np.concatenate(ras) % 360.0, np.concatenate(decs)


@dataclass(frozen=True)
class Polygon:
    coords: tuple[float, ...]  # ra1, dec1, ra2, dec2, ... (great-circle edges)

    def describe(self) -> str:
        return "POLYGON " + " ".join(f"{v:.10g}" for v in self.coords)

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
        out = np.zeros(len(ra), bool)
        for i in range(0, len(ra), 20_000):  # bounded memory: one polygon copy per point
            p = sky.xyz(ra[i:i + 20_000], dec[i:i + 20_000])
            out[i:i + len(p)] = sky.points_in_polys(p, sky.Polys.one(self.coords, len(p)))
        return out

    def boundary(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        v = sky.xyz(self.coords[0::2], self.coords[1::2])
        pts = []
        for a, b in zip(v, np.roll(v, -1, axis=0)):
            angle = math.degrees(math.atan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b)))
            t = np.linspace(0.0, 1.0, _count(angle, step), endpoint=False)[:, None]
            pts.append(_slerp(a, b, t))
        return sky.radec(np.concatenate(pts))


Shape = CenterBox | Circle | Range | Polygon


def _count(length_deg: float, step: float) -> int:
    return int(np.clip(math.ceil(abs(length_deg) / step), 64, MAX_SAMPLES))


def _slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    omega = math.atan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))
    if omega < 1e-12:
        return np.repeat(a[None], len(t), axis=0)
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)


# ---------------------------------------------------------------- region

@dataclass(frozen=True)
class Region:
    """What to cut: a shape (None = the whole image) and optional BAND (m), TIME (MJD)
    and POL filters. TIME and POL select whole files; BAND selects LVF rows."""

    shape: Shape | None = None
    band: tuple[float, float] | None = None
    time: tuple[float, float] | None = None
    pol: tuple[str, ...] | None = None

    def describe(self) -> str:
        parts = [self.shape.describe()] if self.shape else []
        if self.band:
            parts.append(f"BAND {self.band[0]:.10g} {self.band[1]:.10g}")
        if self.time:
            parts.append(f"TIME {self.time[0]:.12g} {self.time[1]:.12g}")
        if self.pol:
            parts.append("POL " + " ".join(self.pol))
        return "; ".join(parts) or "whole image"


# ---------------------------------------------------------------- parsing: archive syntax

def parse_archive_params(center: str | None, size: str | None) -> Region:
    """`center=ra,dec[deg|d|rad|arcmin|arcsec]` or `center=x,y px|pix|pixels` (1-based FITS
    pixels); `size=w[,h][px|pix|pixels|arcsec|arcmin|deg|rad]`, default deg, w along NAXIS1."""
    if not center or not size:
        raise CutoutError("a cutout needs both center=ra,dec and size=w[,h]")
    m = _CENTER.match(center)
    if not m:
        raise CutoutError(f"center must be x,y[unit] (e.g. 10.5,-3.2 or 300,120px), "
                          f"got {center!r}")
    unit = m[3].lower()
    pixel_center = unit in PIXEL_UNITS
    if pixel_center:  # far outside any image is "no overlap", but stays a small number
        x, y = (dali.number(v, "center (px)", -MAX_PIXELS, MAX_PIXELS, error=CutoutError)
                for v in (m[1], m[2]))
    else:
        k = _angle_unit(unit, "center")
        x = dali.number(m[1], "center RA", -1e6, 1e6, error=CutoutError) * k % 360.0
        y = dali.number(m[2], "center Dec", -1e6, 1e6, error=CutoutError) * k
        if not -90.0 <= y <= 90.0:
            raise CutoutError(f"center declination {y:g} deg is outside [-90, 90]")
    m = _SIZE.match(size)
    if not m:
        raise CutoutError(f"size must be w[,h][unit] (e.g. 0.1 or 30,20arcsec or 64px), "
                          f"got {size!r}")
    unit = m[3].lower()
    pixel_size = unit in PIXEL_UNITS
    k = 1.0 if pixel_size else _angle_unit(unit, "size")
    top, label = (MAX_PIXELS, "px") if pixel_size else (180.0, "deg")
    w, h = (dali.number(v, "size", error=CutoutError) * k for v in (m[1], m[2] or m[1]))
    if not (0 < w <= top and 0 < h <= top):
        raise CutoutError(f"size must be positive and at most {top:g} {label}, got {size!r}")
    return Region(CenterBox(x, y, pixel_center, w, h, pixel_size))


def parse_gzip(value: str | None, default: bool = True) -> bool:
    """The archive's gzip= flag: gzip by default, gzip=false (0, no, off) for plain FITS."""
    v = (value or "").strip().lower()
    if not v:
        return default
    if v in ("false", "f", "0", "no", "n", "off"):
        return False
    if v in ("true", "t", "1", "yes", "y", "on"):
        return True
    raise CutoutError(f"gzip must be true or false, got {value!r}")


def _angle_unit(unit: str, what: str) -> float:
    if unit == "":
        return 1.0
    if unit not in ANGLE_UNITS:
        raise CutoutError(f"unknown {what} unit {unit!r}: use px, pix, pixels, arcsec, arcmin, "
                          f"deg or rad")
    return ANGLE_UNITS[unit]


# ---------------------------------------------------------------- parsing: SODA

def parse_soda_params(params, *, sync: bool = False) -> list[Region]:
    """One Region per combination of POS/CIRCLE/POLYGON x BAND x TIME values (POL values
    together form one filter). params: chalicelib.web.Params. With sync=True a repeated
    parameter raises MultiValued (SODA's MultiValuedParamNotSupported)."""
    def values(name: str) -> list[str]:  # a blank value means "not given"
        return [v for v in params.getall(name) if v.strip()]

    shapes: list[Shape] = [parse_pos(v) for v in values("POS")]
    shapes += [_circle(v) for v in values("CIRCLE")]
    shapes += [_polygon(v) for v in values("POLYGON")]
    bands = [_interval(v, "BAND", low=0.0) for v in values("BAND")]
    times = [_interval(v, "TIME") for v in values("TIME")]
    pols = [s for v in values("POL") for s in v.split()]
    for s in pols:
        if s not in POL_STATES:
            raise CutoutError(f"POL {s!r} is not a polarization state "
                              f"({' '.join(sorted(POL_STATES))})")
    if sync:
        for name, vals in (("POS, CIRCLE and POLYGON", shapes), ("BAND", bands),
                           ("TIME", times)):
            if len(vals) > 1:
                raise MultiValued(name)
    pol = tuple(dict.fromkeys(pols)) or None
    return [Region(s, b, t, pol) for s in (shapes or [None]) for b in (bands or [None])
            for t in (times or [None])]


def parse_pos(value: str) -> Shape:
    """SODA POS: CIRCLE ra dec r | RANGE ra1 ra2 dec1 dec2 | POLYGON ra1 dec1 ... (deg)."""
    kind, v = dali.shape(value, "POS", error=CutoutError)
    if kind == "CIRCLE":
        return Circle(*v)
    if kind == "RANGE":
        return Range(*v)
    return Polygon(v)


def _circle(text: str) -> Circle:
    return Circle(*dali.circle(dali.numbers(text, "CIRCLE", error=CutoutError),
                               error=CutoutError))


def _polygon(text: str) -> Polygon:
    return Polygon(dali.polygon(dali.numbers(text, "POLYGON", error=CutoutError),
                                error=CutoutError))


def _interval(text: str, what: str, low: float = -math.inf) -> tuple[float, float]:
    return dali.interval(text, what, low, error=CutoutError)


# ---------------------------------------------------------------- file-level filters

def check_file(region: Region, header: fits.Header, primary: fits.Header) -> None:
    """TIME and POL select whole files: raise NoOverlap when this one is not selected."""
    if region.time:
        beg, end = _time_span(header, primary)
        if beg is None or end is None:
            raise NoOverlap("the file has no observation time to match TIME against")
        if end < region.time[0] or beg > region.time[1]:
            raise NoOverlap(f"the file was observed at MJD {beg:.6f}-{end:.6f}, outside TIME")
    if region.pol:
        raise NoOverlap("the file has no polarization states (it is a total intensity image)")


def _time_span(h: fits.Header, p: fits.Header) -> tuple[float | None, float | None]:
    def get(key: str) -> float | None:
        v = h.get(key, p.get(key))
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    beg = get("MJD-BEG") or get("MJD-OBS")
    end = get("MJD-END")
    if end is None and beg is not None:
        end = beg + (get("TELAPSE") or get("XPOSURE") or 0.0) / 86400.0
    return beg, end


# ---------------------------------------------------------------- boxes

def celestial_wcs(header: fits.Header) -> WCS:
    """The primary celestial WCS (SIP included); alternates and -TAB are not read here."""
    return WCS(header, naxis=2, fix=False)


def pixel_box(region: Region, header: fits.Header, wave: WaveTable | None = None,
              band: tuple[float, float] | None = None, wcs: WCS | None = None) -> Box:
    """The clipped pixel box of region in the image with this header (and its celestial
    WCS, if already built); NoOverlap if empty."""
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    shape = region.shape
    if shape is None:
        box = Box(0, nx, 0, ny)
    elif isinstance(shape, CenterBox):
        box = _center_box(shape, wcs or celestial_wcs(header), nx, ny)
    else:
        box = _sky_box(shape, wcs or celestial_wcs(header), nx, ny)
    band = band or region.band
    return _band_rows(box, wave, band, header) if band else box


def _span(c: float, width: float, n: int) -> tuple[int, int]:
    """Pixels [i0, i0 + k) centred on c as well as the grid allows, k = ceil(width)."""
    k = max(1, math.ceil(width - 1e-6))
    i0 = math.floor(c - k / 2 + 0.5 + 1e-6)  # ties (c on a pixel centre) despite round-off
    return max(0, i0), min(n, i0 + k)


def _need_sky(wcs: WCS, what: str) -> None:
    if not wcs.has_celestial:
        raise CutoutError(f"this file has no celestial WCS: give {what} in pixels "
                          f"(center=x,y px and size=w,h px)")


def _center_box(s: CenterBox, wcs: WCS, nx: int, ny: int) -> Box:
    if not (s.pixel_center and s.pixel_size):
        _need_sky(wcs, "the box")
    if s.pixel_center:
        cx, cy = s.x - 1.0, s.y - 1.0
    else:
        ra0, dec0 = wcs.wcs.crval
        if sky.distance(s.x, s.y, ra0, dec0) > 60.0:  # far behind the tangent plane
            raise NoOverlap(f"center {s.x:g},{s.y:g} is far outside the image")
        cx, cy = wcs.all_world2pix([[s.x, s.y]], 0, quiet=True)[0]
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise NoOverlap(f"center {s.x:g},{s.y:g} does not project onto the image")
    w, h = s.width, s.height
    if not s.pixel_size:
        sx, sy = _local_scales(wcs, cx, cy)
        w, h = w / sx, h / sy
    x0, x1 = _span(cx, w, nx)
    y0, y1 = _span(cy, h, ny)
    if x0 >= x1 or y0 >= y1:
        raise NoOverlap(f"the box {s.describe()} does not overlap the {nx}x{ny} image")
    return Box(x0, x1, y0, y1)


def _local_scales(wcs: WCS, cx: float, cy: float) -> tuple[float, float]:
    """Degrees per pixel along x and y at (cx, cy), SIP included."""
    p = np.array([[cx - 0.5, cy], [cx + 0.5, cy], [cx, cy - 0.5], [cx, cy + 0.5]])
    w = wcs.all_pix2world(p, 0)
    return (float(sky.distance(w[0, 0], w[0, 1], w[1, 0], w[1, 1])),
            float(sky.distance(w[2, 0], w[2, 1], w[3, 0], w[3, 1])))


def _border(nx: int, ny: int, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Points along the outer edges of the pixel grid (0-based, edges at -0.5, n - 0.5)."""
    tx = np.arange(-0.5, nx - 0.5 + 1e-9, step)
    ty = np.arange(-0.5, ny - 0.5 + 1e-9, step)
    x = np.concatenate([tx, tx, np.full_like(ty, -0.5), np.full_like(ty, nx - 0.5)])
    y = np.concatenate([np.full_like(tx, -0.5), np.full_like(tx, ny - 0.5), ty, ty])
    return x, y


def _sky_box(shape: Circle | Range | Polygon, wcs: WCS, nx: int, ny: int) -> Box:
    _need_sky(wcs, "the region")
    step = float(np.mean(proj_plane_pixel_scales(wcs))) / 2  # deg: half a pixel
    bx, by = _border(nx, ny)
    bra, bdec = wcs.all_pix2world(bx, by, 0)
    centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
    reach = float(np.max(sky.distance(bra, bdec, centre[0], centre[1]))) + 4 * step
    inside = shape.contains(bra, bdec)
    ra, dec = shape.boundary(step)
    near = sky.distance(ra, dec, centre[0], centre[1]) <= reach
    xs, ys = [bx[inside]], [by[inside]]
    if near.any():
        p = wcs.all_world2pix(np.column_stack([ra[near], dec[near]]), 0, quiet=True)
        on = np.isfinite(p).all(axis=1) & (p[:, 0] >= -0.5) & (p[:, 0] <= nx - 0.5) & \
            (p[:, 1] >= -0.5) & (p[:, 1] <= ny - 0.5)
        xs.append(p[on, 0])
        ys.append(p[on, 1])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not x.size:
        raise NoOverlap(f"{shape.describe()} does not overlap the image")
    # pixel i covers [i - 0.5, i + 0.5)
    x0, x1 = int(np.floor(x.min() + 0.5)), min(nx, int(np.floor(x.max() + 0.5)) + 1)
    y0, y1 = int(np.floor(y.min() + 0.5)), min(ny, int(np.floor(y.max() + 0.5)) + 1)
    return Box(max(0, x0), x1, max(0, y0), y1)


def _band_rows(box: Box, wave: WaveTable | None, band: tuple[float, float],
               header: fits.Header) -> Box:
    """Rows of box where some pixel's [lambda - bw/2, lambda + bw/2] meets band (m)."""
    if wave is None:
        raise NoOverlap("the file has no spectral WCS (WCS-WAVE) to match BAND against")
    to_m = u.Unit(str(header.get("CUNIT1W", "um"))).to(u.m)
    g = wave.grid(np.arange(box.x0, box.x1), np.arange(box.y0, box.y1)) * to_m
    lam, half = g[..., 0], g[..., 1] / 2
    hit = ((lam - half <= band[1]) & (lam + half >= band[0])).any(axis=1)
    rows = np.flatnonzero(hit)
    if not rows.size:
        raise NoOverlap(f"BAND {band[0]:.6g} {band[1]:.6g} m is not seen in the cutout area")
    return Box(box.x0, box.x1, box.y0 + int(rows[0]), box.y0 + int(rows[-1]) + 1)
