"""ADQL shapes the query tests send, built one way."""

from __future__ import annotations

import math

import numpy as np


def box_polygon(ra: float, dec: float, half_ra: float, half_dec: float) -> str:
    """The vertices (ADQL POLYGON arguments) of a box around (ra, dec): half_ra degrees of
    great circle either side (widened by 1/cos dec, at most 20x), half_dec in Dec,
    clipped at the poles."""
    w = half_ra / max(math.cos(math.radians(dec)), 0.05)
    ra, dec = float(ra), float(dec)
    pts = [((ra - w) % 360, dec - half_dec), ((ra + w) % 360, dec - half_dec),
           ((ra + w) % 360, dec + half_dec), ((ra - w) % 360, dec + half_dec)]
    return ", ".join(f"{a!r}, {float(np.clip(d, -90, 90))!r}" for a, d in pts)
