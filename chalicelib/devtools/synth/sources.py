"""Truth sources (position + spectrum) and drawing them into an image with its PSF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import optics
from .geometry import pix_to_sky, sky_to_tan
from .survey import WeekPlan

WAVE_KNOTS_UM = np.round(np.geomspace(0.75, 5.0, 30), 5)
SOURCES_PER_ARRAY = 5  # per exposure and array position; overlapping slews add more per image
METADATA_SOURCES_PER_ARRAY = 1  # metadata-only: nothing is drawn, keep truth.parquet small
MIN_SEPARATION_PX = 10  # keeps PSF stamps apart so simple photometry is not blended


@dataclass
class Truth:
    source_id: np.ndarray  # int64
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray  # (n, len(WAVE_KNOTS_UM)) uJy

    @classmethod
    def empty(cls) -> Truth:
        return cls(
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros((0, len(WAVE_KNOTS_UM)))
        )

    def __len__(self) -> int:
        return len(self.source_id)

    def concat(self, other: Truth) -> Truth:
        return Truth(
            *(
                np.concatenate([a, b])
                for a, b in zip(
                    (self.source_id, self.ra, self.dec, self.flux),
                    (other.source_id, other.ra, other.dec, other.flux),
                )
            )
        )

    def take(self, idx: np.ndarray) -> Truth:
        return Truth(self.source_id[idx], self.ra[idx], self.dec[idx], self.flux[idx])

    def flux_at(self, idx: np.ndarray, lam_um: np.ndarray) -> np.ndarray:
        """uJy of sources idx at wavelengths lam_um: the spectrum is linear between knots."""
        return np.array([np.interp(w, WAVE_KNOTS_UM, self.flux[i]) for i, w in zip(idx, lam_um)])


def spectra(n: int, rng: np.random.Generator) -> np.ndarray:
    """Bright smooth spectra (uJy): power laws, some with 3.05 um ice absorption or 3.3 um
    emission. At least ~1 mJy everywhere so forced photometry can be checked to a few %."""
    lam = WAVE_KNOTS_UM[None, :]
    amp = np.exp(rng.uniform(np.log(5e3), np.log(1e5), n))[:, None]
    slope = rng.uniform(-1.0, 0.5, n)[:, None]
    ice = (rng.random(n) < 0.3) * rng.uniform(0.05, 0.3, n)
    pah = (rng.random(n) < 0.2) * rng.uniform(0.1, 0.5, n)
    shape = (
        1
        - ice[:, None] * np.exp(-0.5 * ((lam - 3.05) / 0.15) ** 2)
        + pah[:, None] * np.exp(-0.5 * ((lam - 3.3) / 0.08) ** 2)
    )
    return amp * lam**slope * shape


def week_truth(plan: WeekPlan, n: int, seed: int, k: int) -> Truth:
    """k candidate sources uniform inside each array of each exposure, away from the edges
    so their own image holds the whole PSF stamp."""
    rng = np.random.default_rng([seed, plan.week.year, plan.week.num, 2])
    margin = _stamp_radius(optics.psf_size_for(n)) + 1
    x = rng.uniform(margin, n - 1 - margin, (plan.n_exp, 3, k))
    y = rng.uniform(margin, n - 1 - margin, (plan.n_exp, 3, k))
    pc = np.repeat(optics.pc_matrix(plan.pa, n)[:, None], 3, axis=1)
    ra = np.empty_like(x)
    dec = np.empty_like(x)
    for pos in range(3):
        a, b, _, _ = optics.sip(pos, n)
        off = (n + 1) / 2 - 1  # 0-based pixel -> offset from CRPIX
        ra[:, pos], dec[:, pos] = pix_to_sky(
            plan.centres[:, pos], pc[:, pos], a, b, x[:, pos] - off, y[:, pos] - off
        )
    total = plan.n_exp * 3 * k
    base = (plan.week.year * 100 + plan.week.num) * 10_000_000
    return Truth(
        base + np.arange(1, total + 1, dtype=np.int64), ra.ravel(), dec.ravel(), spectra(total, rng)
    )


def select(candidates: Truth, accepted: Truth, n: int, k: int, per_array: int) -> Truth:
    """Keep per_array of each group of k candidates (one exposure and array), skipping any
    closer than MIN_SEPARATION_PX to a kept source (this week or earlier) so PSF stamps do
    not blend. O(n^2), meant for FITS runs; k == per_array keeps everything unchecked."""
    if k == per_array:
        return candidates
    min_cos = np.cos(np.radians(MIN_SEPARATION_PX * optics.pixel_scale_deg(n)))
    cand = _unit(candidates.ra, candidates.dec)
    groups = np.arange(len(candidates)).reshape(-1, k)
    vec = np.empty((len(accepted) + len(groups) * per_array, 3))
    vec[: len(accepted)] = _unit(accepted.ra, accepted.dec)
    used = len(accepted)
    keep: list[int] = []
    for g in groups:
        got = 0
        for i in g:
            if got == per_array:
                break
            if used and np.max(vec[:used] @ cand[i]) > min_cos:
                continue
            keep.append(int(i))
            vec[used] = cand[i]
            used += 1
            got += 1
    return candidates.take(np.array(keep, dtype=np.int64))


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1).reshape(
        -1, 3
    )


def near(truth: Truth, ra0: float, dec0: float, radius_deg: float) -> np.ndarray:
    """Indices of sources within radius_deg of a centre (cheap prefilter before the WCS)."""
    if not len(truth):
        return np.zeros(0, dtype=np.int64)
    _, _, cosd = sky_to_tan(ra0, dec0, truth.ra, truth.dec)
    return np.flatnonzero(cosd > np.cos(np.radians(radius_deg)))


# ---------------------------------------------------------------- drawing


def _stamp_radius(p: int) -> int:
    """Native-pixel half width holding every oversampled PSF cell at any sub-pixel shift."""
    return int(np.ceil(p / optics.PSF_OVERSAMPLE / 2)) + 1


def _cell_weights(p: int, d: float) -> np.ndarray:
    """(2R+1, p) fraction of each oversampled PSF cell falling in each native pixel.

    The source sits d native pixels from the centre of its nearest pixel; each PSF sample is a
    cell 1/10 pixel wide. Exact box integration, conserves the flux.
    """
    r = _stamp_radius(p)
    cell = (np.arange(p) - (p - 1) / 2) / optics.PSF_OVERSAMPLE
    half = 0.5 / optics.PSF_OVERSAMPLE
    pix = np.arange(-r, r + 1)[:, None] - d
    lo = np.maximum(pix - 0.5, cell - half)
    hi = np.minimum(pix + 0.5, cell + half)
    return np.clip(hi - lo, 0, None) * optics.PSF_OVERSAMPLE


def psf_stamp(psf: np.ndarray, x0: float, y0: float) -> tuple[np.ndarray, int, int]:
    """Pixel-integrated PSF (sums to 1) for a source at 0-based (x0, y0) and the image pixel of
    the stamp's [0, 0] corner."""
    ix, iy = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
    p = psf.shape[0]
    wx, wy = _cell_weights(p, x0 - ix), _cell_weights(p, y0 - iy)
    r = _stamp_radius(p)
    return wy @ psf.astype(np.float64) @ wx.T, ix - r, iy - r


def add_stamp(
    image: np.ndarray, stamp: np.ndarray, x_lo: int, y_lo: int
) -> tuple[slice, slice, np.ndarray]:
    """image[...] += stamp clipped to the image; returns the image slices and the clipped stamp."""
    ny, nx = image.shape
    sy, sx = stamp.shape
    ya, xa = max(y_lo, 0), max(x_lo, 0)
    yb, xb = min(y_lo + sy, ny), min(x_lo + sx, nx)
    if ya >= yb or xa >= xb:
        return slice(0, 0), slice(0, 0), stamp[:0, :0]
    part = stamp[ya - y_lo : yb - y_lo, xa - x_lo : xb - x_lo]
    image[ya:yb, xa:xb] += part
    return slice(ya, yb), slice(xa, xb), part
