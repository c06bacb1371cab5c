"""Checks of cutouts against their parent files, shared by the service tests."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits


def same_pixels_as_parent(body: bytes, parent: fits.HDUList) -> tuple[int, int, int, int]:
    """Assert the cutout's IMAGE equals the parent's pixels at the offset its CRPIX1A/2A
    give; return that offset and the cutout's shape as (x0, y0, nx, ny)."""
    with fits.open(io.BytesIO(body)) as cut:
        img = cut["IMAGE"]
        x0 = int(round(1 - img.header["CRPIX1A"]))
        y0 = int(round(1 - img.header["CRPIX2A"]))
        ny, nx = img.data.shape
        assert np.array_equal(img.data, parent["IMAGE"].data[y0:y0 + ny, x0:x0 + nx],
                              equal_nan=True)
    return x0, y0, nx, ny
