"""Forced PSF-fit photometry of one source on one Level 2 image, from range reads.

Only the stamp rows of IMAGE, FLAGS, VARIANCE and ZODI, the PSF plane of the source's
zone and the headers (with the small WCS-WAVE table) are read. The file's ZODI model is
subtracted first; what background is left is fitted jointly with the PSF amplitude. The
model is the zone's oversampled PSF integrated over each native pixel at the source's
sub-pixel position (box integration of every oversampled cell, as the pipeline draws and
as synth injects), so the amplitude of a weighted linear fit is the source flux.

The stamp follows the PSF, not a fixed pixel count: the PSF plane's reach (its width in
native pixels over 2) plus BKG_FWHM FWHMs of background annulus, the FWHM (PSF_FWHM,
arcsec) turned into pixels with the pixel scale at the source. BKG_REGION_SIZE (pixels)
overrides the half-size.

The flux error is the PSF amplitude's marginal error of the joint fit (so it carries the
background terms' uncertainty and their correlation with the flux), scaled by the
square root of the reduced chi-square where that is above 1 by more than its own scatter
(see inflation()): where the model does not fit the pixels, the statistical error alone
is too small. Each measurement reports chi2, the
number of pixels fitted and the number of parameters; FLAG_BAD_FIT marks a chi-square
improbable at the 1e-3 level. A measurement never raises: a bad image gives NaN flux and
a flag bit above the pipeline's 32 bits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from astropy.wcs import WCS

from ..cutout.fitsrange import LAYOUTS, HDUInfo, Layout, RangeReader, read_layout
from ..lake.storage import Archive
from . import fileinfo

DEFAULT_HALF = None  # BKG_REGION_SIZE default: the stamp half-size follows the PSF
BKG_FWHM = 2.0  # background annulus around the PSF's reach, in PSF FWHMs
MIN_HALF, MAX_HALF = 3, 100  # BKG_REGION_SIZE limits (pixels)
CORE_FRACTION = 1e-3  # model pixels above this fraction of the peak are "core" (flags)
MIN_BKG_PIXELS = 8
PLANE_BKG_PIXELS = 30  # a background gradient (dx, dy) is fitted from this many pixels
BAD_FIT_Z = 3.09  # chi2 above its 1 - 1e-3 quantile (Wilson-Hilferty): FLAG_BAD_FIT
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
FLAG_BAD_FIT = 1 << 38  # chi2 improbable (p < 1e-3): the model does not fit (error inflated)
FLAG_NO_ZODI = 1 << 39  # the file has no usable ZODI plane: the fit took all the background
MEASUREMENT_FLAGS = {
    "OFF_IMAGE": FLAG_OFF_IMAGE, "NO_DATA": FLAG_NO_DATA, "READ_ERROR": FLAG_READ_ERROR,
    "EDGE": FLAG_EDGE, "FEW_BKG": FLAG_FEW_BKG, "BATCH_FAILED": FLAG_BATCH_FAILED,
    "BAD_FIT": FLAG_BAD_FIT, "NO_ZODI": FLAG_NO_ZODI,
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
    chi2: float = math.nan  # of the fit, over n_pix pixels with n_par parameters
    n_pix: int = 0
    n_par: int = 0
    flux_err_stat: float = math.nan  # uJy, before the reduced chi-square scaling
    stamp_radius: float = math.nan  # deg: the stamp's half-diagonal on the sky
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
            half: int | None = DEFAULT_HALF) -> Measurement:
    """Forced photometry of (ra, dec) on the file at key; flagged, never raised, on failure."""
    reader = RangeReader(archive, key)
    try:
        m = _measure(reader, ra, dec, half)
    except Exception as e:  # a bad file must not end the job: flag the epoch
        m = Measurement(flags=FLAG_READ_ERROR, error=f"{type(e).__name__}: {e}"[:300])
    m.bytes_read, m.requests = reader.stats.bytes, reader.stats.requests
    return m


def _measure(reader: RangeReader, ra: float, dec: float, half: int | None) -> Measurement:
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
    omega = _pixel_solid_angle(wcs, layout, x, y)
    if half is None:
        half = stamp_half(layout, head, omega)
    m.stamp_radius = math.degrees(math.sqrt(omega)) * (half + 0.5) * math.sqrt(2)
    stamp, psf, oversample, zodi = _read(reader, layout, image, x, y, half)
    if stamp.image.shape != (2 * half + 1, 2 * half + 1):
        m.flags |= FLAG_EDGE
    if not zodi:
        m.flags |= FLAG_NO_ZODI
    _fit(stamp, psf, oversample, omega, m)
    return m


def stamp_half(layout: Layout, head: dict, omega: float) -> int:
    """Default stamp half-size (pixels): the PSF plane's reach plus BKG_FWHM FWHMs, the
    FWHM from PSF_FWHM (arcsec) and the pixel scale at the source (sqrt of its solid
    angle): ~5 px at 128 px images (98"/px), ~8 px at 2040 px (6.15"/px)."""
    psf = layout.find("PSF")
    reach = 2.5
    if psf is not None and len(psf.axes) == 3:
        over = float(fileinfo.keys(layout, psf).get("OVERSAMP", 10))
        reach = max(psf.axes[0], psf.axes[1]) / over / 2
    scale = math.degrees(math.sqrt(omega)) * 3600
    fwhm = float(head.get("PSF_FWHM", 1.5 * scale)) / scale
    return int(min(max(math.ceil(reach + BKG_FWHM * fwhm), MIN_HALF), MAX_HALF))


def _in_front(head: dict, ra: float, dec: float) -> bool:
    """Within 60 deg of the tangent point (CRVAL), far beyond any SPHEREx field."""
    crval = _unit(np.array([float(head.get("CRVAL1", ra))]),
                  np.array([float(head.get("CRVAL2", dec))]))
    return float(crval[0] @ _unit(np.array([ra]), np.array([dec]))[0]) > 0.5


# ---------------------------------------------------------------- reading


def _read(reader: RangeReader, layout: Layout, image: HDUInfo, x: float, y: float,
          half: int) -> tuple[Stamp, np.ndarray, int, bool]:
    """Stamp rows of IMAGE, FLAGS, VARIANCE and ZODI and the PSF plane of the source's
    zone, in one round trip; the stamp's image has the ZODI model subtracted (the bool
    says whether the file had one)."""
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
    zodi = layout.find("ZODI")
    has_zodi = zodi is not None and zodi.axes == image.axes
    if has_zodi:
        hdus.append(zodi)
    *blobs, psf_blob = reader.fetch([h.rows(y0, y1) for h in hdus] + [psf.planes(k, k + 1)])
    img, flg, var, *zod = (_rows(layout, h, b, y1 - y0)[:, x0:x1].astype(np.float64)
                           for h, b in zip(hdus, blobs))
    if zod:
        img = img - zod[0]  # NaN zodi makes the pixel unusable, as NaN data does
    stamp = Stamp(img, var, flg.astype(np.int64), x0, y0, x, y)
    plane = _rows(layout, psf, psf_blob, psf.axes[1]).astype(np.float64)
    return stamp, plane, int(fileinfo.keys(layout, psf).get("OVERSAMP", 10)), has_zodi


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
    """PSF amplitude and what background is left after ZODI, jointly, by weighted least
    squares (1/VARIANCE).

    Pixels used: clean ones under the source's own PSF (model > 0) and clean ones elsewhere
    without the SOURCE bit (neighbours). The background is a constant, plus a gradient
    with at least PLANE_BKG_PIXELS background pixels. uJy = MJy/sr * sr * 1e12."""
    model = psf_model(psf, oversample, stamp)
    core = model > CORE_FRACTION * model.max()
    own = model > 0
    finite = np.isfinite(stamp.image) & np.isfinite(stamp.variance) & (stamp.variance > 0)
    good = finite & ((stamp.flags & BAD_BITS) == 0)
    m.flags |= int(np.bitwise_or.reduce(stamp.flags[core], initial=0)) & 0xFFFFFFFF
    bkg_pix = good & ~own & ((stamp.flags & SOURCE_BIT) == 0)  # no other sources
    if bkg_pix.sum() < MIN_BKG_PIXELS:
        m.flags |= FLAG_FEW_BKG
        bkg_pix = good & ~own
    use = (good & own) | bkg_pix
    if not (good & core).any() or bkg_pix.sum() < 3:
        m.flags |= FLAG_NO_DATA
        return
    design = _design(model, stamp, int(bkg_pix.sum()))[:, use]
    sw = 1.0 / np.sqrt(stamp.variance[use])
    a = design.T * sw[:, None]
    b = stamp.image[use] * sw
    cov = np.linalg.pinv(a.T @ a)
    coef = cov @ (a.T @ b)
    chi2 = float(np.sum((b - a @ coef) ** 2))
    n, k = int(use.sum()), design.shape[0]
    scale = omega * 1e12
    m.flux = float(coef[0]) * scale
    m.flux_err_stat = math.sqrt(float(cov[0, 0])) * scale
    m.chi2, m.n_pix, m.n_par = chi2, n, k
    dof = n - k
    m.flux_err = m.flux_err_stat * inflation(chi2, dof)
    if dof <= 0 or chi2_z(chi2, dof) > BAD_FIT_Z:
        m.flags |= FLAG_BAD_FIT
    m.flux_bkg = float(coef[1])  # the residual background at the source (terms centred)


def inflation(chi2: float, dof: int) -> float:
    """Error scale sqrt(chi2/dof - sqrt(2/dof)), at least 1: the reduced chi-square less
    its own 1-sigma scatter, so fits that are fine stay unscaled (a plain max(1, chi2/dof)
    inflates every lucky-high chi2 and pulls fall to ~0.95) while a model that does not
    fit (chi2/dof well above 1 + sqrt(2/dof)) scales the error by nearly sqrt(chi2/dof)."""
    if dof <= 0:
        return 1.0
    return math.sqrt(max(chi2 / dof - math.sqrt(2.0 / dof), 1.0))


def chi2_z(chi2: float, dof: int) -> float:
    """Normal deviate of chi2 with dof degrees of freedom (Wilson-Hilferty cube root)."""
    v = 2.0 / (9.0 * dof)
    return ((chi2 / dof) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v)


def _design(model: np.ndarray, stamp: Stamp, n_bkg: int) -> np.ndarray:
    """(terms, ny, nx): PSF, then background 1 (+ dx, dy with enough pixels), dx/dy in
    stamp half-widths from the source. ZODI is already subtracted: what is left is
    small and smooth, and every extra term costs flux precision."""
    ny, nx = model.shape
    scale = max(nx, ny) / 2
    dy, dx = np.mgrid[0:ny, 0:nx].astype(float)
    dx, dy = (dx + stamp.x0 - stamp.x) / scale, (dy + stamp.y0 - stamp.y) / scale
    terms = [model, np.ones_like(model)]
    if n_bkg >= PLANE_BKG_PIXELS:
        terms += [dx, dy]
    return np.stack(terms)
