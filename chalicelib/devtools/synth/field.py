"""A test field for error bars: a few Level 2 files over one patch of sky, with sources
placed to probe forced photometry where it is hard, written straight into an archive
folder (no delivery, no ingest) with its truth.parquet.

Fluxes are log-uniform over a wide range (S/N ~5 to ~20,000 with the synthetic noise),
some sources sit within a few pixels of the reference image's edge (the other images,
slewed along the LVF, see many more near theirs) and a cluster packs sources at the
minimum separation of the survey synthesis (a crowded deep field). The images are small
slews of one pointing on several detectors, so each source is measured on most of them,
at different wavelengths and sub-pixel positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fitsimage, optics, records
from .fitsimage import ImageMeta
from .geometry import pix_to_sky
from .sources import MIN_SEPARATION_PX, WAVE_KNOTS_UM, Truth
from .survey import DEEP_FIELDS

EDGE_FRACTION = 0.15  # of the sources, within 3 px of the reference image's edge
CLUSTER_FRACTION = 0.25  # of the sources, packed at 1-1.3 x MIN_SEPARATION_PX


@dataclass
class Field:
    keys: list[str]  # archive keys of the images
    truth: Truth
    metas: list[ImageMeta]
    edge: np.ndarray  # bool per source: placed near the reference image's edge
    crowded: np.ndarray  # bool per source: in the cluster


def _positions(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """k 0-based pixel positions >= MIN_SEPARATION_PX apart: edge, cluster and the rest."""
    sep = MIN_SEPARATION_PX
    pts: list[tuple[float, float]] = []
    kind: list[int] = []  # 0 field, 1 edge, 2 cluster

    def ok(x: float, y: float) -> bool:
        return all((x - a) ** 2 + (y - b) ** 2 >= sep**2 for a, b in pts)

    centre = rng.uniform(0.3 * n, 0.7 * n, 2)
    want = [(1, round(EDGE_FRACTION * k)), (2, round(CLUSTER_FRACTION * k))]
    want.append((0, k - sum(c for _, c in want)))
    for what, count in want:
        tries = 0
        while count and tries < 20000:
            tries += 1
            if what == 1:  # within 3 px of one of the four edges (the PSF runs off)
                d, t, side = rng.uniform(-0.4, 3.0), rng.uniform(-0.4, n - 0.6), rng.integers(4)
                x, y = [(d, t), (n - 1 - d, t), (t, d), (t, n - 1 - d)][side]
            elif what == 2:  # next to a cluster member at 1-1.3 separations
                if kind.count(2) == 0:
                    x, y = centre
                else:
                    j = rng.choice([i for i, c in enumerate(kind) if c == 2])
                    r, a = rng.uniform(1.0, 1.3) * sep, rng.uniform(0, 2 * np.pi)
                    x, y = pts[j][0] + r * np.cos(a), pts[j][1] + r * np.sin(a)
                if not (4 <= x <= n - 5 and 4 <= y <= n - 5):
                    continue
            else:
                x, y = rng.uniform(-0.4, n - 0.6, 2)
            if ok(x, y):
                pts.append((float(x), float(y)))
                kind.append(what)
                count -= 1
    xy = np.array(pts)
    kinds = np.array(kind)
    return xy[:, 0], xy[:, 1], kinds == 1, kinds == 2


def make_field(root: str | Path, n: int, images: int = 4, sources: int = 100,
               flux_ujy: tuple[float, float] = (15.0, 4e5), seed: int = 0,
               prefix: str = "field") -> Field:
    """Write `images` files of n px under root/<prefix>/ and root/<prefix>/truth.parquet.

    Image i is detector 1 + i % 6 at the deep-field centre (NEP) slewed by i small steps of
    3 % of the field along the LVF (rows), so sources move to new wavelengths and pixels.
    sources is capped by what fits at MIN_SEPARATION_PX (about 35 at 128 px)."""
    root = Path(root)
    rng = np.random.default_rng([seed, n, 77])
    centre = DEEP_FIELDS[0]
    step = 0.03 * optics.FIELD_DEG
    metas = [ImageMeta(n=n, det=1 + i % 6, obs_id=f"2025W40_9F_{i // 6 + 1:04d}_{i % 4 + 1}",
                       expidn=9000 + i, crval=(centre[0], centre[1] + step * (i - images / 2)),
                       pa=0.0, mjd_beg=60950.0 + i * 129 / 86400,
                       processed="2025-10-06T12:00:00") for i in range(images)]
    ref = metas[images // 2]
    x, y, edge, crowded = _positions(n, sources, rng)
    a, b, _, _ = optics.sip(ref.pos, n)
    off = (n + 1) / 2 - 1
    ra, dec = pix_to_sky(np.array(ref.crval), optics.pc_matrix(ref.pa, n), a, b, x - off, y - off)
    k = len(x)
    amp = np.exp(rng.uniform(*np.log(flux_ujy), k))
    slope = rng.uniform(-1.0, 0.5, k)
    flux = amp[:, None] * (WAVE_KNOTS_UM[None, :] / 2.0) ** slope[:, None]
    truth = Truth(np.arange(1, k + 1, dtype=np.int64), np.asarray(ra).ravel(),
                  np.asarray(dec).ravel(), flux)
    folder = root / prefix
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i, m in enumerate(metas):
        rendered = fitsimage.render(m, truth, np.random.default_rng([seed, n, i]))
        key = f"{prefix}/img{i:02d}_D{m.det}.fits"
        fitsimage.write_file(root / key, fitsimage.science_hdus(m, rendered))
        keys.append(key)
    records.write_truth(folder / "truth.parquet", truth)
    return Field(keys, truth, metas, edge, crowded)
