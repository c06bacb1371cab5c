"""Cutout engine: regions -> pixel boxes -> range reads -> trimmed MEF (transport-free).

    region = parse_archive_params("210.8,54.3", "0.1")          # ?center=&size=
    gz = parse_gzip(params.get("gzip"))                          # default True
    regions = parse_soda_params(params)                          # SODA POS/CIRCLE/...
    result = cutout(archive, "data/qr2/level2/...fits", region, gzip=True)
    result.data, result.content_type, result.http_headers(), result.stats
    results = cutout_many(archive, [(key, region), ...])         # concurrent, per-item errors

CutoutError (and NoOverlap, MultiValued, NotFits) are the caller's mistakes: archive
syntax -> HTTP 400; SODA -> 'UsageError: <message>' except NoOverlap -> 204.
"""

from .engine import PSF_MODES, CutoutResult, Stats, cutout, cutout_many
from .errors import CutoutError, MultiValued, NoOverlap, NotFits
from .fitsrange import LAYOUTS
from .region import (
    Box,
    CenterBox,
    Circle,
    Polygon,
    Range,
    Region,
    parse_archive_params,
    parse_gzip,
    parse_pos,
    parse_soda_params,
    pixel_box,
)

__all__ = [
    "LAYOUTS", "PSF_MODES", "Box", "CenterBox", "Circle", "CutoutError", "CutoutResult",
    "MultiValued", "NoOverlap", "NotFits", "Polygon", "Range", "Region", "Stats", "cutout",
    "cutout_many", "parse_archive_params", "parse_gzip", "parse_pos", "parse_soda_params",
    "pixel_box",
]
