"""Forced PSF-fit photometry of one source on one Level 2 image, from range reads.

Only the stamp rows of IMAGE, FLAGS and VARIANCE, the PSF plane of the source's zone and
the headers (with the small WCS-WAVE table) are read. The model is the zone's oversampled
PSF integrated over each native pixel at the source's sub-pixel position (box integration
of every oversampled cell, as the pipeline draws and as synth injects), so the amplitude
of a weighted linear fit is the source flux. A measurement never raises: a bad image gives
NaN flux and a flag bit above the pipeline's 32 bits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from astropy.wcs import WCS

from ..cutout.fitsrange import LAYOUTS, HDUInfo, Layout, RangeReader, read_layout
from ..lake.storage import Archive
from . import fileinfo

DEFAULT_HALF = 15  # BKG_REGION_SIZE: stamp half-size (pixels)
CORE_FRACTION = 1e-3  # model pixels above this fraction of the peak are "core" (fit, flags)
MIN_BKG_PIXELS = 8
# Pipeline FLAGS bits that spoil a pixel (everything but SOURCE 21 and FULLSAMPLE 12).
BAD_BITS = sum(1 << b for b in (0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 14, 15, 17, 19, 20, 22, 23,
                                24, 25, 26, 27, 28))
SOURCE_BIT = 1 << 21
# Measurement flags (above the 32 pipeline bits of a 64-bit flags column).
FLAG_OFF_IMAGE = 1 << 32  # the source is not on the image
FLAG_NO_DATA = 1 << 33  # every core pixel masked or NaN
FLAG_READ_ERROR = 1 << 34  # the file could not be read or parsed
FLAG_EDGE = 1 << 35  # the stamp was clipped by the image edge
FLAG_FEW_BKG = 1 << 36  # too few clean pixels for the background: fitted with less
FLAG_BATCH_FAILED = 1 << 37  # the whole batch failed (set by assemble)
MEASUREMENT_FLAGS = {
    "OFF_IMAGE": FLAG_OFF_IMAGE, "NO_DATA": FLAG_NO_DATA, "READ_ERROR": FLAG_READ_ERROR,
    "EDGE": FLAG_EDGE, "FEW_BKG": FLAG_FEW_BKG, "BATCH_FAILED": FLAG_BATCH_FAILED,
}
# bits that make a point suspect (plots): bad pixels under the core, failed measurements
SERIOUS_FLAGS = BAD_BITS | FLAG_OFF_IMAGE | FLAG_NO_DATA | FLAG_READ_ERROR | FLAG_BATCH_FAILED


@dataclass
class Measurement:
    """One source on one image; x/y_image are 0-based pixel coordinates of the source."""

    lam: float = math.nan  # um
    lam_width: float = math.nan  # um
    flux: float = math.nan  # uJy
    flux_err: float = math.nan  # uJy
    mjd: float = math.nan
    flux_bkg: float = math.nan  # MJy/sr
    x_image: float = math.nan
    y_image: float = math.nan
    flags: int = 0
    bytes_read: int = 0  # cost, not written to the result tables
    requests: int = 0
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Stamp:
    """Pixels [y0, y1) x [x0, x1) of the image, in MJy/sr, and the source position."""

    image: np.ndarray
    variance: np.ndarray
    flags: np.ndarray
    x0: int
    y0: int
    x: float
    y: float


def measure(archive: Archive, key: str, ra: float, dec: float,
            half: int = DEFAULT_HALF) -> Measurement:
    """Forced photometry of (ra, dec) on the file at key; flagged, never raised, on failure."""
    reader = RangeReader(archive, key)
    try:
        m = _measure(reader, ra, dec, half)
    except Exception as e:  # a bad file must not end the job: flag the epoch
        m = Measurement(flags=FLAG_READ_ERROR, error=f"{type(e).__name__}: {e}"[:300])
    m.bytes_read, m.requests = reader.stats.bytes, reader.stats.requests
    return m


def _measure(reader: RangeReader, ra: float, dec: float, half: int) -> Measurement:
    layout, _ = LAYOUTS.get(reader.archive, reader.key, lambda: read_layout(reader))
    image = layout.image()
    head = fileinfo.keys(layout, image)
    m = Measurement(mjd=float(head.get("MJD-AVG", math.nan)))
    if not _in_front(head, ra, dec):  # TAN cannot project it: certainly off the image
        m.flags |= FLAG_OFF_IMAGE
        return m
    wcs = fileinfo.sky_wcs(layout, image)
    with layout.lock:  # astropy WCS is not thread-safe
        x, y = (float(v) for v in wcs.all_world2pix([[ra, dec]], 0, quiet=True)[0])
    m.x_image, m.y_image = x, y
    nx, ny = image.axes
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):  # False for NaN too
        m.flags |= FLAG_OFF_IMAGE
        return m
    wave = fileinfo.wave_lookup(layout, image)
    if wave is not None:
        m.lam, m.lam_width = wave.at(x, y)
    stamp, psf, oversample = _read(reader, layout, image, x, y, half)
    if stamp.image.shape != (2 * half + 1, 2 * half + 1):
        m.flags |= FLAG_EDGE
    _fit(stamp, psf, oversample, _pixel_solid_angle(wcs, layout, x, y), m)
    return m


def _in_front(head: dict, ra: float, dec: float) -> bool:
    """Within 60 deg of the tangent point (CRVAL), far beyond any SPHEREx field."""
    crval = _unit(np.array([float(head.get("CRVAL1", ra))]),
                  np.array([float(head.get("CRVAL2", dec))]))
    return float(crval[0] @ _unit(np.array([ra]), np.array([dec]))[0]) > 0.5


# ---------------------------------------------------------------- reading


def _read(reader: RangeReader, layout: Layout, image: HDUInfo, x: float, y: float,
          half: int) -> tuple[Stamp, np.ndarray, int]:
    """Stamp rows of IMAGE, FLAGS and VARIANCE and the PSF plane of the source's zone,
    in one round trip."""
    nx, ny = image.axes
    ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
    x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
    y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
    hdus = [image, layout.find("FLAGS"), layout.find("VARIANCE")]
    if any(h is None or h.axes != image.axes for h in hdus):
        raise ValueError("FLAGS or VARIANCE missing or of another shape")
    psf = layout.find("PSF")
    if psf is None or len(psf.axes) != 3:
        raise ValueError("no PSF cube")
    xc, yc, xw, yw = fileinfo.zone_table(layout, psf)
    # zones tile the image (XCTR +- XWID/2, 1-based): the nearest in zone widths holds it
    k = int(np.argmin(np.maximum(np.abs(x + 1 - xc) / xw, np.abs(y + 1 - yc) / yw)))
    *blobs, psf_blob = reader.fetch([h.rows(y0, y1) for h in hdus] + [psf.planes(k, k + 1)])
    img, flg, var = (_rows(layout, h, b, y1 - y0)[:, x0:x1] for h, b in zip(hdus, blobs))
    stamp = Stamp(img.astype(np.float64), var.astype(np.float64), flg.astype(np.int64),
                  x0, y0, x, y)
    plane = _rows(layout, psf, psf_blob, psf.axes[1]).astype(np.float64)
    return stamp, plane, int(fileinfo.keys(layout, psf).get("OVERSAMP", 10))


def _rows(layout: Layout, h: HDUInfo, blob: bytes, n: int) -> np.ndarray:
    """n rows of a 2-D image (or n rows of a cube plane) as physical values."""
    bitpix = int(h.keys["BITPIX"])
    dtype = {-32: ">f4", -64: ">f8", 8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}[bitpix]
    data = np.frombuffer(blob, dtype=dtype).reshape(n, h.axes[0])
    head = fileinfo.keys(layout, h)
    scale, zero = float(head.get("BSCALE", 1.0)), float(head.get("BZERO", 0.0))
    return data * scale + zero if (scale, zero) != (1.0, 0.0) else data


def _pixel_solid_angle(wcs: WCS, layout: Layout, x: float, y: float) -> float:
    """Solid angle (sr) of the pixel at the source: the area of its corners on the sky
    (SIP and projection included), as the calibration's solid-angle map."""
    d = 0.5
    px = np.array([[x - d, y], [x + d, y], [x, y - d], [x, y + d]])
    with layout.lock:
        sky = wcs.all_pix2world(px, 0)
    v = _unit(sky[:, 0], sky[:, 1])
    dx, dy = v[1] - v[0], v[3] - v[2]
    return float(np.linalg.norm(np.cross(dx, dy)))


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


# ---------------------------------------------------------------- model and fit


def cell_weights(p: int, oversample: int, rel: np.ndarray) -> np.ndarray:
    """(len(rel), p): fraction of each oversampled PSF cell inside each native pixel, for
    pixel centres at rel native pixels from the source (exact box integration)."""
    cell = (np.arange(p) - (p - 1) / 2) / oversample
    half = 0.5 / oversample
    lo = np.maximum(rel[:, None] - 0.5, cell - half)
    hi = np.minimum(rel[:, None] + 0.5, cell + half)
    return np.clip(hi - lo, 0, None) * oversample


def psf_model(psf: np.ndarray, oversample: int, stamp: Stamp) -> np.ndarray:
    """Pixel-integrated PSF (sums to 1 when whole) on the stamp's pixel grid."""
    ny, nx = stamp.image.shape
    wx = cell_weights(psf.shape[1], oversample, stamp.x0 + np.arange(nx) - stamp.x)
    wy = cell_weights(psf.shape[0], oversample, stamp.y0 + np.arange(ny) - stamp.y)
    return wy @ psf @ wx.T


def _fit(stamp: Stamp, psf: np.ndarray, oversample: int, omega: float,
         m: Measurement) -> None:
    """PSF amplitude and a local background jointly, by weighted least squares (1/VARIANCE).

    The background is a quadratic surface over the clean stamp pixels outside the core: zodi
    follows the LVF wavelength, which changes across a stamp enough that a flat median would
    bias the flux by many sigma. uJy = MJy/sr * sr * 1e12."""
    model = psf_model(psf, oversample, stamp)
    core = model > CORE_FRACTION * model.max()
    finite = np.isfinite(stamp.image) & np.isfinite(stamp.variance) & (stamp.variance > 0)
    good = finite & ((stamp.flags & BAD_BITS) == 0)
    m.flags |= int(np.bitwise_or.reduce(stamp.flags[core], initial=0)) & 0xFFFFFFFF
    bkg_pix = good & ~core & ((stamp.flags & SOURCE_BIT) == 0)  # no other sources
    if bkg_pix.sum() < MIN_BKG_PIXELS:
        m.flags |= FLAG_FEW_BKG
        bkg_pix = good & ~core
    use = (good & core) | bkg_pix
    if not (good & core).any() or bkg_pix.sum() < 3:
        m.flags |= FLAG_NO_DATA
        return
    design = _design(model, stamp, bkg_pix.sum())
    w = 1.0 / stamp.variance[use]
    a = design[:, use].T * np.sqrt(w)[:, None]
    cov = np.linalg.pinv(a.T @ a)
    coef = cov @ (a.T @ (stamp.image[use] * np.sqrt(w)))
    m.flux = float(coef[0]) * omega * 1e12
    m.flux_err = math.sqrt(float(cov[0, 0])) * omega * 1e12
    m.flux_bkg = float(coef[1])  # the surface at the source (terms are centred there)


def _design(model: np.ndarray, stamp: Stamp, n_bkg: int) -> np.ndarray:
    """(terms, ny, nx): PSF, then background 1, dx, dy (+ dx2, dxdy, dy2 with enough
    pixels), dx/dy in stamp half-widths from the source."""
    ny, nx = model.shape
    scale = max(nx, ny) / 2
    dy, dx = np.mgrid[0:ny, 0:nx].astype(float)
    dx, dy = (dx + stamp.x0 - stamp.x) / scale, (dy + stamp.y0 - stamp.y) / scale
    terms = [model, np.ones_like(model), dx, dy]
    if n_bkg >= 30:
        terms += [dx * dx, dx * dy, dy * dy]
    return np.stack(terms)
