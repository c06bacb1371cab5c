"""Cutouts of SPHEREx Level 2 MEFs (and plain FITS images) straight from range reads.

The output keeps every HDU in order: PRIMARY (+ provenance keywords), the 2-D images of
the science image's shape (IMAGE, FLAGS, VARIANCE, ZODI) trimmed byte-for-byte (dtype,
scaling and headers kept; CRPIX of the celestial WCS and of non-table alternates shifted:
SIP is relative to CRPIX, and 'A' then maps cutout pixels to 0-based parent pixels), the
PSF cube whole, zone-only or dropped, and WCS-WAVE rebuilt for the cutout. Output FITS is
assembled from raw bytes: no pixel is converted, so values are bit-identical.

HTTP: gzip output is a .fits.gz file (Content-Type application/gzip, no Content-Encoding),
because that is what curl users of the archive get and keep: a Content-Encoding would make
browsers and requests inflate it silently under a .gz name.
"""

from __future__ import annotations

import gzip as gzip_module
import posixpath
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from ..lake.storage import Archive
from . import cards
from .errors import CutoutError
from .fitsrange import (
    BLOCK,
    DEFAULT_GAP,
    LAYOUTS,
    ByteStore,
    HDUInfo,
    Layout,
    RangeReader,
    StaleLayout,
    read_layout,
)
from .region import Box, Region, celestial_wcs, check_file, pixel_box
from .wavetab import WaveTable

PSF_MODES = ("all", "zone", "none")
GZIP_LEVEL = 3  # float noise barely compresses: higher levels cost time, not bytes
_ZONE_KEY = re.compile(r"^[XY](CTR|WID)_\d+$")
_STALE = {"CHECKSUM", "DATASUM"}  # no longer true of the new data
_ALT_KEYS = " ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Stats:
    bytes_read: int  # every byte fetched, headers included
    requests: int  # GETs (one per coalesced range) + the HEAD of a cold file
    round_trips: int  # sequential waits: 1 when the headers were cached
    file_size: int
    minimum_bytes: int  # rows spanned x image HDUs + PSF/table data kept + headers read
    headers_cached: bool
    output_bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CutoutResult:
    key: str
    data: bytes
    gzip: bool
    shape: tuple[int, int]  # (ny, nx) of IMAGE
    box: Box  # parent pixels [x0, x1) x [y0, y1), 0-based
    stats: Stats
    filename: str
    region: str = ""

    @property
    def content_type(self) -> str:
        return "application/gzip" if self.gzip else "application/fits"

    def http_headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type,
                "Content-Disposition": f'attachment; filename="{self.filename}"'}


@dataclass
class _Part:
    """One output HDU: what to fetch for it and how to render it."""

    hdu: HDUInfo
    kind: str  # trim | whole | zones | wave | header
    ranges: list[tuple[int, int]] = field(default_factory=list)
    zones: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- public API

def cutout(archive: Archive, key: str, region: Region, *, psf: str = "all",
           band: tuple[float, float] | None = None, gzip: bool = False,
           gap: int = DEFAULT_GAP) -> CutoutResult:
    """Cut region out of the archive file `key` (e.g. 'data/qr2/level2/...fits').

    psf: 'all' (the whole PSF cube, as the archive does), 'zone' (only the zones under
    the cutout) or 'none'. band: (lo, hi) metres, overriding region.band. Raises
    NoOverlap / CutoutError for the caller's mistakes, FileNotFoundError if key is absent.
    """
    if psf not in PSF_MODES:
        raise CutoutError(f"psf must be one of {', '.join(PSF_MODES)}, got {psf!r}")
    if ".." in key.split("/"):
        raise CutoutError(f"invalid file path {key!r}")
    t0 = time.perf_counter()
    reader = RangeReader(archive, key, gap)  # counts both attempts
    try:
        result = _attempt(reader, region, psf, band, gzip)
    except StaleLayout:  # the object was replaced since its headers were cached
        LAYOUTS.drop(archive, key)
        result = _attempt(reader, region, psf, band, gzip)
    result.stats.seconds = time.perf_counter() - t0
    return result


def cutout_many(archive: Archive, items: list[tuple[str, Region]], *, workers: int = 16,
                **kw) -> list[CutoutResult | Exception]:
    """Cutouts of several (key, region) pairs, fetched concurrently; one result or the
    exception it raised per item, in order. The first file's headers are read first so
    the others of the same shape prefetch theirs in one round trip."""
    if not items:
        return []

    def one(item: tuple[str, Region]) -> CutoutResult | Exception:
        try:
            return cutout(archive, item[0], item[1], **kw)
        except Exception as e:  # noqa: BLE001 - reported per item, the batch goes on
            return e

    first: list[CutoutResult | Exception] = []
    if not LAYOUTS.has(archive, items[0][0]):
        first.append(one(items[0]))  # its headers become the others' prefetch template
    with ThreadPoolExecutor(max(1, min(workers, len(items)))) as pool:
        return first + list(pool.map(one, items[len(first):]))


# ---------------------------------------------------------------- one cutout

def _attempt(reader: RangeReader, region: Region, psf: str, band, gzip: bool) -> CutoutResult:
    store = ByteStore()
    layout, cached = LAYOUTS.get(reader.archive, reader.key, lambda: read_layout(reader, store))
    return _cut(reader, store, layout, cached, reader.key, region, psf, band, gzip)


def _cut(reader: RangeReader, store: ByteStore, layout: Layout, cached: bool, key: str,
         region: Region, psf: str, band, gzip: bool) -> CutoutResult:
    image = layout.image()
    box = _box(layout, image, region, band)
    wave = layout.memo["wave"]
    parts = _plan(layout, image, box, psf, wave)
    chunks = _fetch(reader, store, [r for p in parts for r in p.ranges])
    hdus = [_render(p, chunks, box, wave, layout) for p in parts]
    hdus[0] = (_provenance(hdus[0][0], key, region, box, psf, len(hdus)), hdus[0][1])
    data = b"".join(h + _pad(d) for h, d in hdus)
    if gzip:
        data = gzip_module.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    minimum = sum(e - s for s, e in chunks)
    if not cached:
        minimum += layout.header_bytes + sum(len(b) for b in layout.small.values())
    stats = Stats(reader.stats.bytes, reader.stats.requests, reader.stats.round_trips,
                  layout.size, minimum, cached, len(data))
    return CutoutResult(key, data, gzip, (box.height, box.width), box, stats,
                        _filename(key, box, gzip), region.describe())


def _box(layout: Layout, image: HDUInfo, region: Region, band) -> Box:
    """The parent pixels to cut (TIME/POL checked first: they select whole files)."""
    check_file(region, image.header, layout.hdus[0].header)
    wave = layout.derived("wave", lambda: _wave_table(layout, image))
    wcs = layout.derived("wcs", lambda: celestial_wcs(image.header))
    with layout.lock:
        return pixel_box(region, image.header, wave, band, wcs)


def _fetch(reader: RangeReader, store: ByteStore,
           wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Bytes of each wanted range: from the header reads when they hold it, else in one
    round trip of coalesced range requests."""
    missing = [r for r in wanted if store.get(*r) is None]
    got = dict(zip(missing, reader.fetch(missing)))
    return {r: got[r] if r in got else store.get(*r) for r in wanted}


def _wave_table(layout: Layout, image: HDUInfo) -> WaveTable | None:
    name = str(image.header.get("PS1_0W", "")).strip()
    h = layout.find(name) if name else None
    if h is None or h.index not in layout.small:
        return None
    return WaveTable.parse(image.header, h.header, layout.small[h.index], h.raw)


def _plan(layout: Layout, image: HDUInfo, box: Box, psf: str,
          wave: WaveTable | None) -> list[_Part]:
    parts = []
    for h in layout.hdus:
        if h.is_image and h.axes == image.axes:
            parts.append(_Part(h, "trim", [h.rows(box.y0, box.y1)]))
        elif h.name == "PSF" and len(h.axes) == 3:
            if psf == "none":
                continue
            zones = _zones_under(layout, h, box) if psf == "zone" else None
            if zones is None:
                parts.append(_Part(h, "whole", [(h.data_start, h.data_start + h.data_bytes)]))
            else:
                parts.append(_Part(h, "zones", [h.planes(k - 1, k) for k in zones], zones))
        elif wave is not None and h.name == wave.extname.upper() and wave.rebuildable:
            parts.append(_Part(h, "wave"))
        elif h.data_bytes == 0 or h.index in layout.small:
            parts.append(_Part(h, "header" if h.data_bytes == 0 else "whole"))
        else:
            parts.append(_Part(h, "whole", [(h.data_start, h.data_start + h.data_bytes)]))
    return parts


def _zones_under(layout: Layout, psf: HDUInfo, box: Box) -> list[int] | None:
    """1-based PSF planes whose zone rectangle (XCTR +- XWID/2, 1-based pixels) meets the
    box; None when the zone keywords are incomplete (then the whole cube is kept)."""
    zones = layout.derived("zones", lambda: _zone_table(psf))
    if zones is None:
        return None
    xc, yc, xw, yw = zones
    bx0, bx1, by0, by1 = box.x0 + 0.5, box.x1 + 0.5, box.y0 + 0.5, box.y1 + 0.5
    hit = (xc - xw / 2 < bx1) & (xc + xw / 2 > bx0) & (yc - yw / 2 < by1) & (yc + yw / 2 > by0)
    return [int(k) + 1 for k in np.flatnonzero(hit)] or None


def _zone_table(psf: HDUInfo) -> tuple[np.ndarray, ...] | None:
    n = psf.axes[2]
    names = [f"{p}_{k}" for p in ("XCTR", "YCTR", "XWID", "YWID") for k in range(1, n + 1)]
    found = cards.scan(psf.raw, set(names))
    if len(found) != len(names):
        return None
    return tuple(np.array([float(found[f"{p}_{k}"]) for k in range(1, n + 1)])
                 for p in ("XCTR", "YCTR", "XWID", "YWID"))


# ---------------------------------------------------------------- rendering

def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _render(p: _Part, chunks: dict, box: Box, wave: WaveTable | None,
            layout: Layout) -> tuple[bytes, bytes]:
    """(header bytes, unpadded data) of one output HDU."""
    h = p.hdu
    if p.kind == "trim":
        b = h.itemsize
        rows = np.frombuffer(chunks[p.ranges[0]], np.uint8).reshape(box.height, h.row_bytes)
        data = rows[:, box.x0 * b:box.x1 * b].tobytes()
        return _trim_header(h.raw, box, shift_tab=not _rebuilt(wave)), data
    if p.kind == "zones":
        return _zone_header(h.raw, p.zones), b"".join(chunks[r] for r in p.ranges)
    if p.kind == "wave":
        return wave.cutout_bytes(*box)
    data = b"" if p.kind == "header" else layout.small.get(h.index) or chunks[p.ranges[0]]
    return cards.edit(h.raw, remove=_STALE), data


def _rebuilt(wave: WaveTable | None) -> bool:
    return wave is not None and wave.rebuildable


def _trim_header(raw: bytes, box: Box, shift_tab: bool) -> bytes:
    """NAXISn of the cutout; CRPIX of every WCS moved by the box origin, except -TAB ones
    whose table is rebuilt in cutout pixels instead; IRAF LTVn likewise."""
    names = {f"{k}{i}{a}".strip() for k in ("CRPIX", "CTYPE") for i in (1, 2)
             for a in _ALT_KEYS} | {"LTV1", "LTV2"}
    v = cards.scan(raw, names)
    updates: dict = {"NAXIS1": box.width, "NAXIS2": box.height}
    for a in _ALT_KEYS.strip():
        tab = any(str(v.get(f"CTYPE{i}{a}", "")).endswith("-TAB") for i in (1, 2))
        if tab and not shift_tab:
            continue
        for i, off in ((1, box.x0), (2, box.y0)):
            if f"CRPIX{i}{a}" in v and off:
                updates[f"CRPIX{i}{a}"] = float(v[f"CRPIX{i}{a}"]) - off
    for i, off in ((1, box.x0), (2, box.y0)):
        for k in (f"CRPIX{i}", f"LTV{i}"):
            if k in v and off:
                updates[k] = float(v[k]) - off
    return cards.edit(raw, updates, remove=_STALE)


def _zone_header(raw: bytes, zones: list[int]) -> bytes:
    """Zone keywords renumbered by plane (1..n, as readers index the cube), values still in
    parent pixels like the whole cube's; ZONE_j names the parent plane."""
    old = {cards.keyword(c): c for c in cards.split(raw) if _ZONE_KEY.match(cards.keyword(c))}
    new: list[bytes] = []
    for j, k in enumerate(zones, start=1):
        for p in ("XCTR", "YCTR", "XWID", "YWID"):
            c = old[f"{p}_{k}"]
            new += cards.make(f"{p}_{j}", cards.value(c), cards.comment(c))
        new += cards.make(f"ZONE_{j}", k, "Parent PSF plane (zone) of this plane")
    return cards.edit(raw, {"NAXIS3": len(zones)}, remove=set(old) | _STALE, append=new)


def _provenance(raw: bytes, key: str, region: Region, box: Box, psf: str,
                n_hdus: int) -> bytes:
    """PRIMARY with CUT* keywords saying where the cutout comes from."""
    name = posixpath.basename(key)
    new: list[bytes] = []
    for k, v, comment in (
            ("PARENT", name, "File this cutout was cut from"),
            ("CUTREGN", region.describe(), "Requested region"),
            ("CUTX1", box.x0 + 1, "First parent column (1-based)"),
            ("CUTX2", box.x1, "Last parent column (1-based)"),
            ("CUTY1", box.y0 + 1, "First parent row (1-based)"),
            ("CUTY2", box.y1, "Last parent row (1-based)"),
            ("CUTPSF", psf, "PSF planes kept: all, zone or none"),
            ("CUTORIG", "chalicelib.cutout", "Cutout software")):
        fits_in_card = len(repr(v)) + len(comment) < 66  # else astropy truncates, warning
        new += cards.make(k, v, comment if fits_in_card else "")
    new += cards.make("HISTORY", f"cutout [{box.x0 + 1}:{box.x1},{box.y0 + 1}:{box.y1}] "
                                 f"of {name}")
    nextend = {"NEXTEND": n_hdus - 1} if "NEXTEND" in cards.scan(raw, {"NEXTEND"}) else {}
    return cards.edit(raw, nextend, remove=set(), append=new)


def _filename(key: str, box: Box, gz: bool) -> str:
    stem = re.sub(r"\.fits?(\.gz)?$", "", posixpath.basename(key), flags=re.I)
    return f"{stem}_cutout_x{box.x0 + 1}y{box.y0 + 1}_{box.width}x{box.height}.fits" + \
        (".gz" if gz else "")
