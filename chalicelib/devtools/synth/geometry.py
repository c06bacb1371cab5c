"""Vectorised TAN-SIP celestial coordinates: the transform astropy.wcs applies to our headers.

Used for metadata-only footprints (no FITS, no astropy per image), for placing sources and
for the pixel solid-angle map. Angles are in degrees unless a name says otherwise.
"""

from __future__ import annotations

import numpy as np

# SIP polynomial terms (p, q) of orders 2..3, the forward A_/B_ keywords.
SIP_TERMS: tuple[tuple[int, int], ...] = tuple((n - q, q) for n in (2, 3) for q in range(n + 1))
# Inverse AP_/BP_ terms of orders 1..3 (linear terms make the inverse fit tighter).
INV_TERMS: tuple[tuple[int, int], ...] = tuple((n - q, q) for n in (1, 2, 3) for q in range(n + 1))


def _poly(
    coef: np.ndarray, terms: tuple[tuple[int, int], ...], u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """Sum of coef[..., i] * u**p * v**q; coef broadcasts against u, v with a trailing term axis."""
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    up, vp = [np.ones_like(u), u], [np.ones_like(v), v]  # powers by multiplication: ** is slow
    for _ in range(2):
        up.append(up[-1] * u)
        vp.append(vp[-1] * v)
    out = np.zeros(np.broadcast_shapes(u.shape, v.shape, coef.shape[:-1]))
    for i, (p, q) in enumerate(terms):
        out = out + coef[..., i] * (up[p] * vp[q])
    return out


def sip_forward(
    a: np.ndarray, b: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distorted focal-plane offsets (u + f, v + g) from pixel offsets u, v relative to CRPIX."""
    return u + _poly(a, SIP_TERMS, u, v), v + _poly(b, SIP_TERMS, u, v)


def _basis(ra0: np.ndarray, dec0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (centre, east, north) of the tangent plane at (ra0, dec0)."""
    a, d = np.radians(ra0), np.radians(dec0)
    centre = np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    return centre, east, north


def tan_to_sky(ra0, dec0, xi, eta) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic deprojection (FITS TAN, LONPOLE 180): tangent-plane degrees -> RA [0, 360), Dec.

    All arguments broadcast together (pass ra0[..., None] for several points per centre).
    """
    ra0, dec0, xi, eta = np.broadcast_arrays(
        *(np.asarray(t, dtype=float) for t in (ra0, dec0, xi, eta))
    )
    c, e, n = _basis(ra0, dec0)
    vec = c + np.radians(xi)[..., None] * e + np.radians(eta)[..., None] * n
    ra = np.degrees(np.arctan2(vec[..., 1], vec[..., 0])) % 360.0
    ra = np.where(ra >= 360.0, 0.0, ra)  # -1e-17 % 360 rounds up to 360.0
    dec = np.degrees(np.arctan2(vec[..., 2], np.hypot(vec[..., 0], vec[..., 1])))
    return ra, dec


def sky_to_tan(ra0, dec0, ra, dec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gnomonic projection: (xi, eta) degrees and cos(distance) (> 0 on the visible hemisphere)."""
    c, e, n = _basis(np.asarray(ra0, float), np.asarray(dec0, float))
    p, _, _ = _basis(np.asarray(ra, float), np.asarray(dec, float))
    cosd = np.sum(p * c, axis=-1)
    xi = np.degrees(np.sum(p * e, axis=-1) / cosd)
    eta = np.degrees(np.sum(p * n, axis=-1) / cosd)
    return xi, eta, cosd


def pix_to_sky(
    crval: np.ndarray, cd: np.ndarray, a: np.ndarray, b: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of pixel offsets (u, v) = p_1based - CRPIX.

    crval (..., 2), cd (..., 2, 2) in degrees per pixel, a/b (..., len(SIP_TERMS));
    u, v (..., k): k points for each of the leading (image) entries.
    """
    uu, vv = sip_forward(a[..., None, :], b[..., None, :], u, v)
    xi = cd[..., 0, 0, None] * uu + cd[..., 0, 1, None] * vv
    eta = cd[..., 1, 0, None] * uu + cd[..., 1, 1, None] * vv
    return tan_to_sky(crval[..., 0, None], crval[..., 1, None], xi, eta)


def corner_offsets(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from CRPIX of the outer pixel-grid corners, in the order 0-based (-0.5,-0.5),
    (n-0.5,-0.5), (n-0.5,n-0.5), (-0.5,n-0.5): counter-clockwise on the sky when det(CD) < 0."""
    h = n / 2.0
    return np.array([-h, h, h, -h]), np.array([-h, -h, h, h])


def fit_inverse_sip(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares AP_/BP_ (INV_TERMS) so that u = U + AP(U, V) over the whole detector."""
    h = n / 2.0 + 1.0
    g = np.linspace(-h, h, 41)
    u, v = (t.ravel() for t in np.meshgrid(g, g))
    uu, vv = sip_forward(a, b, u, v)
    # Scale the design matrix for conditioning, then undo the scale on the coefficients.
    s = np.array([h ** -(p + q) for p, q in INV_TERMS])
    design = np.stack([uu**p * vv**q for p, q in INV_TERMS], axis=-1) * s
    ap = np.linalg.lstsq(design, u - uu, rcond=None)[0] * s
    bp = np.linalg.lstsq(design, v - vv, rcond=None)[0] * s
    return ap, bp


def solid_angle_map(
    cd: np.ndarray, a: np.ndarray, b: np.ndarray, n: int, nodes: int = 65
) -> np.ndarray:
    """Pixel solid angle (sr) at every pixel centre, shape (n, n) indexed [y, x].

    Omega = |det CD| * det(1 + dSIP) / (1 + xi^2 + eta^2)^1.5: SIP stretches the pixel, the
    gnomonic projection shrinks it away from the tangent point. Evaluated exactly on a grid
    of nodes and interpolated bilinearly (the map is smooth: error ~1e-7 relative). Depends
    on the detector and the image size only, never on the pointing.
    """
    k = min(n, nodes)
    g = np.linspace(0, n - 1, k) + 1.0 - (n + 1) / 2.0
    u, v = np.meshgrid(g, g)
    grid = _solid_angle(cd, a, b, u, v)
    if k == n:
        return grid
    w = bilinear_weights(g, np.arange(n) + 1.0 - (n + 1) / 2.0)
    return w @ grid @ w.T


def bilinear_weights(nodes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(len(coords), len(nodes)) linear-interpolation matrix."""
    j = np.clip(np.searchsorted(nodes, coords, side="right") - 1, 0, len(nodes) - 2)
    f = (coords - nodes[j]) / (nodes[j + 1] - nodes[j])
    w = np.zeros((len(coords), len(nodes)))
    w[np.arange(len(coords)), j] = 1 - f
    w[np.arange(len(coords)), j + 1] = f
    return w


def _solid_angle(
    cd: np.ndarray, a: np.ndarray, b: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    dfu, dfv, dgu, dgv = (np.zeros_like(u) for _ in range(4))
    for i, (p, q) in enumerate(SIP_TERMS):
        if p:
            dfu += a[i] * p * u ** (p - 1) * v**q
            dgu += b[i] * p * u ** (p - 1) * v**q
        if q:
            dfv += a[i] * q * u**p * v ** (q - 1)
            dgv += b[i] * q * u**p * v ** (q - 1)
    jac = (1 + dfu) * (1 + dgv) - dfv * dgu
    uu, vv = sip_forward(a, b, u, v)
    xi = np.radians(cd[0, 0] * uu + cd[0, 1] * vv)
    eta = np.radians(cd[1, 0] * uu + cd[1, 1] * vv)
    det = abs(np.linalg.det(cd)) * np.radians(1.0) ** 2
    return det * jac / (1 + xi**2 + eta**2) ** 1.5


def sky_to_pix(
    crval: tuple[float, float],
    cd: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    ap: np.ndarray,
    bp: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (u, v) from CRPIX of sky positions: the inverse SIP as a first guess, then
    fixed-point iterations on the forward SIP (distortion gradients are ~1e-3, so a few
    steps reach 1e-9 pixel, i.e. what astropy's all_world2pix gives)."""
    xi, eta, _ = sky_to_tan(crval[0], crval[1], ra, dec)
    inv = np.linalg.inv(cd)
    big_u = inv[0, 0] * xi + inv[0, 1] * eta
    big_v = inv[1, 0] * xi + inv[1, 1] * eta
    u = big_u + _poly(ap, INV_TERMS, big_u, big_v)
    v = big_v + _poly(bp, INV_TERMS, big_u, big_v)
    for _ in range(4):
        u, v = big_u - _poly(a, SIP_TERMS, u, v), big_v - _poly(b, SIP_TERMS, u, v)
    return u, v
