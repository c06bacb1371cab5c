"""Checks of cutouts against their parent files, shared by the service tests."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


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


def cutout_matches_parent(cut: fits.HDUList, parent: fits.HDUList,
                          exts: tuple[str, ...] = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")
                          ) -> None:
    """Every pixel of each extension equals the parent pixel its 'A' (physical) WCS maps
    to, and the celestial WCS of the cutout agrees with the parent's at its centre."""
    wa = WCS(cut["IMAGE"].header, key="A")
    wa.sip = None
    ny, nx = cut["IMAGE"].data.shape
    px, py = wa.all_pix2world(np.array([0, nx - 1]), np.array([0, ny - 1]), 0)
    x0, y0 = int(round(px[0])), int(round(py[0]))
    for ext in exts:
        np.testing.assert_array_equal(cut[ext].data, parent[ext].data[y0:y0 + ny, x0:x0 + nx])
    sky = WCS(cut["IMAGE"].header).pixel_to_world(nx // 2, ny // 2)
    back = WCS(parent["IMAGE"].header).world_to_pixel(sky)
    assert abs(back[0] - (x0 + nx // 2)) < 1e-6 and abs(back[1] - (y0 + ny // 2)) < 1e-6
