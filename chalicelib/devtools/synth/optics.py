"""The synthetic instrument: detector bands, focal-plane distortion, LVF wavelengths, PSF,
zodiacal light, defects. Everything here depends on the detector and the image size only
(never on the pointing), so it is cached and shared by science and calibration files.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .geometry import SIP_TERMS, bilinear_weights, fit_inverse_sip, solid_angle_map

NATIVE_SIZE = 2040
NATIVE_SCALE_ARCSEC = 6.15
# The field stays 3.485 deg whatever the synthetic image size: the pixel scale grows instead.
FIELD_DEG = NATIVE_SIZE * NATIVE_SCALE_ARCSEC / 3600.0
# Focal-plane X offset between neighbouring arrays (side by side, a small gap).
ARRAY_OFFSET_DEG = 3.55
N_CHANNELS = 17
PSF_GRID = 11
PSF_OVERSAMPLE = 10
WAVE_GRID = 11

# det -> (lambda_min um, lambda_max um, resolving power R), from SPHEREX.md.
BANDS: dict[int, tuple[float, float, float]] = {
    1: (0.75, 1.09, 39.0),
    2: (1.10, 1.62, 41.0),
    3: (1.63, 2.41, 41.0),
    4: (2.42, 3.82, 35.0),
    5: (3.83, 4.41, 112.0),
    6: (4.42, 5.00, 128.0),
}

# Normalised SIP shapes per array position (D1/D4, D2/D5, D3/D6), terms in SIP_TERMS order;
# the outer arrays mirror each other, the central one is nearly symmetric.
_SIP_SHAPE = {
    0: ([0.30, -0.20, 0.10, 0.50, 0.10, 0.40, -0.10], [0.10, 0.25, -0.30, -0.10, 0.45, 0.05, 0.50]),
    1: ([0.05, -0.10, 0.05, 0.60, 0.00, 0.60, 0.00], [-0.05, 0.05, 0.10, 0.00, 0.60, 0.00, 0.60]),
    2: (
        [-0.30, -0.20, -0.10, 0.50, -0.10, 0.40, 0.10],
        [0.10, -0.25, -0.30, 0.10, 0.45, -0.05, 0.50],
    ),
}
_SIP_CORNER_PX = 1.5  # distortion at a corner of a full-size image, in native pixels


def array_position(det: int) -> int:
    """0, 1, 2: D1/D4, D2/D5 and D3/D6 share a position (same sky through the dichroic)."""
    return (det - 1) % 3


def pixel_scale_deg(n: int) -> float:
    return FIELD_DEG / n


def psf_size_for(n: int) -> int:
    """Oversampled PSF stamp width: the real 101 for large images, 51 (5.1 native px) for small."""
    return 101 if n >= 1000 else 51


@lru_cache(maxsize=32)
def sip(pos: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, AP, BP) for an array position and image size.

    Distortion scales with the image so that it is the same on the sky at any size.
    """
    k = _SIP_CORNER_PX / (NATIVE_SIZE / 2)
    scale = np.array([k * (n / 2) ** (1 - p - q) for p, q in SIP_TERMS])
    a = np.array(_SIP_SHAPE[pos][0]) * scale
    b = np.array(_SIP_SHAPE[pos][1]) * scale
    ap, bp = fit_inverse_sip(a, b, n)
    return a, b, ap, bp


def rotation(pa_deg: np.ndarray) -> np.ndarray:
    """Unit PC matrices for position angles: det = -1 (east left when north is up), so the
    corner order of geometry.corner_offsets runs counter-clockwise on the sky."""
    t = np.radians(np.asarray(pa_deg, dtype=float))
    m = np.empty(t.shape + (2, 2))
    m[..., 0, 0], m[..., 0, 1] = -np.cos(t), np.sin(t)
    m[..., 1, 0], m[..., 1, 1] = np.sin(t), np.cos(t)
    return m


def pc_matrix(pa_deg: np.ndarray, n: int) -> np.ndarray:
    """PC matrices carrying the pixel scale (CDELT = 1, as in the real headers)."""
    return rotation(pa_deg) * pixel_scale_deg(n)


@lru_cache(maxsize=32)
def omega_map(pos: int, n: int) -> np.ndarray:
    """Pixel solid angle (sr), [y, x]; PA does not matter (rotation keeps |det CD|)."""
    a, b, _, _ = sip(pos, n)
    return solid_angle_map(pc_matrix(0.0, n), a, b, n).astype(np.float64)


@lru_cache(maxsize=32)
def omega_median_arcsec2(pos: int, n: int) -> float:
    """OMEGA_MEDIAN, arcsec2."""
    return float(np.median(omega_map(pos, n))) * (180 / np.pi * 3600) ** 2


# ---------------------------------------------------------------- LVF wavelengths


def control_points(n: int) -> np.ndarray:
    """WCS-WAVE control points: 11 strictly increasing 1-based pixel coordinates 1..n."""
    return np.round(np.linspace(1, n, WAVE_GRID)).astype(np.int32)


def _lvf_fraction(xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Position along the band (0 = long end) at normalised detector coordinates in [0, 1].

    Mostly along Y (rows), a little along X, and curved iso-wavelength lines.
    """
    return 0.012 + 0.93 * yn + 0.04 * (2 * xn - 1) ** 2 + 0.015 * xn


@lru_cache(maxsize=64)
def wave_table(det: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, VALUES[iy, ix, (wavelength, bandwidth)]) in um; longest wavelengths at the bottom."""
    lo, hi, r = BANDS[det]
    x = control_points(n)
    xn, yn = np.meshgrid((x - 1) / (n - 1), (x - 1) / (n - 1))
    lam = hi * (lo / hi) ** _lvf_fraction(xn, yn)  # constant R -> geometric spacing
    return x, x.copy(), np.stack([lam, lam / r], axis=-1)


def wave_at(det: int, n: int, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """Bilinear WCS-WAVE wavelength (um) at 0-based pixel positions (what WCS 'W' returns)."""
    x, y, val = wave_table(det, n)
    wx = bilinear_weights(x.astype(float), np.atleast_1d(x0) + 1.0)  # the -TAB index lookup
    wy = bilinear_weights(y.astype(float), np.atleast_1d(y0) + 1.0)
    return np.einsum("ij,jk,ik->i", wy, val[..., 0], wx)


def wave_maps(det: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (wavelength, bandwidth) maps [y, x] as WCS 'W' gives them: separable
    bilinear interpolation of the 11 x 11 table (kinks at every control point)."""
    x, y, val = wave_table(det, n)
    pix = np.arange(1, n + 1, dtype=float)
    wx, wy = bilinear_weights(x.astype(float), pix), bilinear_weights(y.astype(float), pix)
    return wy @ val[..., 0] @ wx.T, wy @ val[..., 1] @ wx.T


def filter_law(det: int, n: int, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """The LVF's own smooth wavelength (um) at 0-based pixel positions: what the table
    samples at its control points (the two agree there and differ by up to 2.3e-4
    relative in between)."""
    lo, hi, _ = BANDS[det]
    xn, yn = np.asarray(x0, float) / (n - 1), np.asarray(y0, float) / (n - 1)
    return hi * (lo / hi) ** _lvf_fraction(xn, yn)


@lru_cache(maxsize=12)
def smooth_wave_maps(det: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (wavelength, bandwidth) maps [y, x] from the smooth filter law: what the
    sky (zodi) and the per-pixel calibration maps (CWAVE, CBAND) follow."""
    g = np.arange(n, dtype=float)
    lam = filter_law(det, n, g[None, :], g[:, None])
    return lam, lam / BANDS[det][2]


# ---------------------------------------------------------------- PSF


def psf_zones(n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """1-based zone centres along one axis and the zone width (11 equal zones)."""
    w = n / PSF_GRID
    return (np.arange(PSF_GRID) + 0.5) * w + 0.5, np.arange(PSF_GRID) * w, w


def _fwhm_px(det: int, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Core FWHM in native pixels: diffraction grows with wavelength, optics degrade outwards.

    Kept in pixels whatever the image size, so PSF_FWHM in arcsec scales with the pixel.
    """
    lo, hi, _ = BANDS[det]
    lam = hi * (lo / hi) ** _lvf_fraction(xn, yn)
    r2 = (2 * xn - 1) ** 2 + (2 * yn - 1) ** 2
    return np.sqrt(0.85**2 + (1.2 * lam / 5.0) ** 2) * (1 + 0.04 * r2)


def psf_fwhm_arcsec(det: int, n: int) -> float:
    """Median core FWHM over the 121 zones, arcsec (PSF_FWHM, plane.psf_fwhm)."""
    c, _, _ = psf_zones(n)
    xn, yn = np.meshgrid((c - 1) / n, (c - 1) / n)
    return float(np.median(_fwhm_px(det, xn, yn))) * pixel_scale_deg(n) * 3600


@lru_cache(maxsize=12)
def psf_cube(det: int, n: int) -> np.ndarray:
    """(121, P, P) float32, oversampled x10, each zone normalised to sum 1.

    Core Gaussian (slightly elliptical, varying over the detector) plus a faint wide halo;
    zone k = iy * 11 + ix (x fastest).
    """
    p = psf_size_for(n)
    c, _, _ = psf_zones(n)
    s = (np.arange(p) - (p - 1) / 2) / PSF_OVERSAMPLE  # sample offsets in native pixels
    yy, xx = np.meshgrid(s, s, indexing="ij")
    zy, zx = np.meshgrid((c - 1) / n, (c - 1) / n, indexing="ij")
    sig = (_fwhm_px(det, zx, zy) / 2.3548).ravel()[:, None, None]
    ell = (0.06 * (2 * zx - 1)).ravel()[:, None, None]
    core = np.exp(-0.5 * ((xx / (sig * (1 + ell))) ** 2 + (yy / (sig * (1 - ell))) ** 2))
    halo = np.exp(-0.5 * (xx**2 + yy**2) / (2.5 * sig) ** 2)
    cube = (
        core / core.sum(axis=(1, 2), keepdims=True) * 0.9
        + halo / halo.sum(axis=(1, 2), keepdims=True) * 0.1
    )
    return (cube / cube.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def zone_index(n: int, x0: float, y0: float) -> int:
    """0-based cube plane of the zone holding 0-based pixel (x0, y0)."""
    w = n / PSF_GRID
    ix = int(np.clip(np.floor((x0 + 0.5) / w), 0, PSF_GRID - 1))
    iy = int(np.clip(np.floor((y0 + 0.5) / w), 0, PSF_GRID - 1))
    return iy * PSF_GRID + ix


# ---------------------------------------------------------------- backgrounds and defects


def zodi_sb(lam_um: np.ndarray, ecl_lat_deg: float) -> np.ndarray:
    """Zodiacal light, MJy/sr: scattered sunlight falling with wavelength, thermal rising past
    3.5 um, fainter towards the ecliptic poles."""
    lat = 0.35 + 0.65 * np.exp(-((ecl_lat_deg / 30.0) ** 2))
    return (0.45 * lam_um**-1.4 + 0.06 * np.exp((lam_um - 3.5) / 0.8)) * lat


@lru_cache(maxsize=12)
def defects(det: int, n: int) -> dict[str, np.ndarray]:
    """Fixed bad pixels of a detector (flat indices): NONFUNC, HOT, COLD; hardware, so seeded
    by detector only (the nonfunc_mask calibration file agrees)."""
    rng = np.random.default_rng([det, n, 20250312])
    counts = {
        "NONFUNC": max(2, round(2e-4 * n * n)),
        "HOT": max(2, round(1e-4 * n * n)),
        "COLD": max(1, round(5e-5 * n * n)),
    }
    idx = rng.choice(n * n, size=sum(counts.values()), replace=False)
    out, start = {}, 0
    for name, k in counts.items():
        out[name] = np.sort(idx[start : start + k])
        start += k
    return out


@lru_cache(maxsize=12)
def dichroic_mask(det: int, n: int) -> np.ndarray:
    """Pixels whose flux the dichroic attenuates by >= 50 %: a corner, on D3 and D4 only."""
    yy, xx = np.mgrid[0:n, 0:n]
    if det not in (3, 4):
        return np.zeros((n, n), dtype=bool)
    return (xx + yy) < 0.12 * n
