"""Range-read access to FITS files: learn the HDU layout from the headers alone, then fetch
only the byte ranges a cutout needs.

A FITS file is a chain of HDUs, each a header (2880-byte blocks ending with an END card)
followed by its data padded to 2880 bytes, so each header's offset follows from the
previous header's NAXISn/BITPIX/PCOUNT/GCOUNT. Headers are read progressively from the
first bytes; layouts are cached per file (and per file shape, as a prefetch template), so a
repeated cutout of one file costs one round trip and a new file of a known shape three.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from astropy.io import fits

from ..lake.storage import Archive
from . import cards
from .errors import NotFits

BLOCK = 2880
INITIAL_READ = 64 * 1024  # one round trip usually holds PRIMARY + IMAGE headers
HEADER_GUESS = 4 * BLOCK  # extension headers are mostly small; a miss just reads more
SMALL_DATA = 64 * 1024  # data this small (WCS-WAVE) is read and cached with the headers
DEFAULT_GAP = 32 * 1024  # ranges closer than this are merged: one request beats two
END_CARD = b"END" + b" " * 77
_HEAD_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="fits-head")


def padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


class StaleLayout(OSError):
    """A cached layout no longer matches the object (it was replaced): reload and retry."""


# ---------------------------------------------------------------- HDU geometry

STRUCTURE = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS",
             "EXTNAME", *(f"NAXIS{i}" for i in range(1, 1000))}


@dataclass(frozen=True)
class HDUInfo:
    index: int
    raw: bytes  # the header exactly as in the file (END and padding included)
    keys: dict  # structural keywords (NAXISn, BITPIX, EXTNAME, ...)
    header_start: int
    data_start: int
    data_bytes: int  # unpadded

    @cached_property
    def header(self) -> fits.Header:
        """The parsed header, built on first use (only IMAGE, PSF and tables need one)."""
        return fits.Header.fromstring(self.raw.decode("latin-1"))

    @property
    def name(self) -> str:
        default = "PRIMARY" if self.index == 0 else ""
        return str(self.keys.get("EXTNAME", default)).strip().upper()

    @property
    def header_bytes(self) -> int:
        return self.data_start - self.header_start

    @property
    def end(self) -> int:
        return self.data_start + padded(self.data_bytes)

    @property
    def itemsize(self) -> int:
        return abs(int(self.keys["BITPIX"])) // 8

    @property
    def axes(self) -> tuple[int, ...]:
        """NAXIS1, NAXIS2, ... (FITS order: fastest first)."""
        return tuple(int(self.keys[f"NAXIS{i}"]) for i in range(1, self.keys["NAXIS"] + 1))

    @property
    def is_table(self) -> bool:
        return str(self.keys.get("XTENSION", "")).strip() == "BINTABLE"

    @property
    def is_image(self) -> bool:
        return not self.is_table and self.data_bytes > 0

    @property
    def row_bytes(self) -> int:
        return self.axes[0] * self.itemsize

    def rows(self, y0: int, y1: int) -> tuple[int, int]:
        """Byte range of rows [y0, y1) of a 2-D image."""
        return self.data_start + y0 * self.row_bytes, self.data_start + y1 * self.row_bytes

    def planes(self, k0: int, k1: int) -> tuple[int, int]:
        """Byte range of planes [k0, k1) (0-based) of a 3-D cube."""
        plane = self.axes[0] * self.axes[1] * self.itemsize
        return self.data_start + k0 * plane, self.data_start + k1 * plane


def data_size(h: dict) -> int:
    """Bytes of an HDU's data before padding (FITS 4.0 eq. 2; random groups skip NAXIS1)."""
    naxis = int(h.get("NAXIS", 0))
    if naxis == 0:
        return 0
    axes = [int(h[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
    if axes[0] == 0 and h.get("GROUPS", False):
        axes = axes[1:]
    count = int(h.get("GCOUNT", 1)) * (int(h.get("PCOUNT", 0)) + math.prod(axes))
    return abs(int(h["BITPIX"])) // 8 * count


def header_length(buf: bytes) -> int | None:
    """Bytes of the header at the start of buf (through END's block), None if END is not
    in buf yet. The END card must start on an 80-byte card boundary."""
    pos = buf.find(END_CARD)
    while pos >= 0 and pos % 80:
        pos = buf.find(END_CARD, pos + 1)
    return None if pos < 0 else padded(pos + 80)


# ---------------------------------------------------------------- bytes and requests

class ByteStore:
    """Bytes already fetched from one object, as merged [start, end) chunks."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytes]] = []

    def add(self, start: int, data: bytes) -> None:
        chunks = sorted([*self.chunks, (start, bytes(data))], key=lambda c: c[0])
        merged: list[tuple[int, bytes]] = []
        for s, b in chunks:
            if merged and s <= merged[-1][0] + len(merged[-1][1]):
                ms, mb = merged[-1]
                tail = b[ms + len(mb) - s:]
                merged[-1] = (ms, mb + tail)
            else:
                merged.append((s, b))
        self.chunks = merged

    def from_(self, start: int) -> bytes:
        """The contiguous bytes available from start (possibly empty)."""
        for s, b in self.chunks:
            if s <= start < s + len(b):
                return b[start - s:]
        return b""

    def get(self, start: int, end: int) -> bytes | None:
        avail = self.from_(start)
        return avail[:end - start] if len(avail) >= end - start else None


def coalesce(ranges: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Merge ranges that overlap or lie within gap bytes of each other."""
    merged: list[list[int]] = []
    for s, e in sorted(ranges):
        if merged and s - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


@dataclass
class ReadStats:
    requests: int = 0
    bytes: int = 0
    round_trips: int = 0


@dataclass
class RangeReader:
    """Counts every request and byte; one fetch() = one round trip (ranges run concurrently
    on S3 through Archive.read_ranges)."""

    archive: Archive
    key: str
    gap: int = DEFAULT_GAP
    stats: ReadStats = field(default_factory=ReadStats)

    def fetch(self, ranges: list[tuple[int, int]], allow_short: bool = False) -> list[bytes]:
        """Bytes of each [start, end); a read past the end of the object raises StaleLayout
        unless allow_short (the first read of a file smaller than the first-read size)."""
        todo = coalesce([r for r in ranges if r[1] > r[0]], self.gap)
        try:
            blobs = self.archive.read_ranges(self.key, todo) if todo else []
        except FileNotFoundError:
            raise
        except OSError as e:  # e.g. 416: the object shrank since its headers were cached
            raise StaleLayout(f"{self.key}: {e}") from e
        for (s, e), b in zip(todo, blobs):
            if isinstance(b, BaseException):  # fsspec returns per-range errors in the list
                if isinstance(b, OSError) and "not satisfiable" in str(b):  # S3 416
                    raise StaleLayout(f"{self.key}: no bytes at {s}-{e}") from b
                raise b
            if len(b) != e - s and not allow_short:
                raise StaleLayout(f"{self.key}: short read at {s}-{e}")
        self.stats.requests += len(todo)
        self.stats.bytes += sum(len(b) for b in blobs)
        self.stats.round_trips += bool(todo)
        store = ByteStore()
        for (s, _), b in zip(todo, blobs):
            store.add(s, b)
        out = []
        for s, e in ranges:
            got = store.get(s, e) if e > s else b""
            out.append(got if got is not None else store.from_(s))  # short: allow_short
        return out

    def size(self) -> int:
        return self.archive.size(self.key)


# ---------------------------------------------------------------- layouts

@dataclass
class Layout:
    size: int
    hdus: list[HDUInfo]
    small: dict[int, bytes]  # index -> data of small HDUs (tables), read with the headers
    memo: dict = field(default_factory=dict)  # derived objects (WCS, wave table) per file
    lock: threading.Lock = field(default_factory=threading.Lock)  # astropy WCS is not
    # thread-safe (wcslib keeps scratch space): transforms on memo['wcs'] hold this lock

    def derived(self, name: str, make: Callable[[], object]) -> object:
        """A memoised per-file object (racing threads may both build it: harmless)."""
        if name not in self.memo:
            self.memo[name] = make()
        return self.memo[name]

    @property
    def header_bytes(self) -> int:
        return sum(h.header_bytes for h in self.hdus)

    def find(self, name: str) -> HDUInfo | None:
        return next((h for h in self.hdus if h.name == name.upper()), None)

    def image(self) -> HDUInfo:
        """The science image: EXTNAME IMAGE, else the first 2-D image HDU."""
        h = self.find("IMAGE")
        if h is None or len(h.axes) != 2:
            h = next((h for h in self.hdus if h.is_image and len(h.axes) == 2), None)
        if h is None:
            raise NotFits("the file holds no 2-D image to cut")
        return h


def _signature(hdus: list[HDUInfo], size: int) -> tuple:
    return (size, *((h.header_start, h.data_start, h.data_bytes) for h in hdus))


class _Templates:
    """Which ranges held headers in the last file of a given shape: a new file of that shape
    prefetches them all in one round trip (the parse below still checks every header).
    first_read: bytes up to the science image's data in the last file read, the first
    read's size for the next cold file (a miss costs one more round trip, not an error)."""

    def __init__(self, maxsize: int = 64) -> None:
        self.items: OrderedDict[tuple, list[tuple[int, int]]] = OrderedDict()
        self.lock = threading.Lock()
        self.first_read: int | None = None

    def get(self, sig: tuple) -> list[tuple[int, int]] | None:
        with self.lock:
            return self.items.get(sig)

    def put(self, sig: tuple, layout: Layout) -> None:
        ranges = [(h.header_start, h.data_start + (h.data_bytes if h.index in layout.small
                                                    else 0)) for h in layout.hdus]
        try:
            first = layout.image().data_start
        except NotFits:
            first = None
        with self.lock:
            self.first_read = first
            self.items[sig] = ranges
            self.items.move_to_end(sig)
            while len(self.items) > 64:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.first_read = None


TEMPLATES = _Templates()


class _Parser:
    """Walks the HDU chain over a ByteStore, fetching what is missing."""

    def __init__(self, reader: RangeReader, store: ByteStore, size: int):
        self.reader, self.store, self.size = reader, store, size
        self.template: list[tuple[int, int]] | None = None
        self.template_sig: tuple | None = None

    def fetch(self, start: int, end: int) -> None:
        if self.template is not None:  # first miss: take every header the template names
            want = [(s, e) for s, e in self.template if e > start]
            self.template = None
            want = [(s, min(e, self.size)) for s, e in want if s < self.size]
            ranges = [r for r in want if self.store.get(*r) is None]
            if ranges:
                for (s, _), b in zip(ranges, self.reader.fetch(ranges)):
                    self.store.add(s, b)
                return
        end = min(end, self.size)
        self.store.add(start, self.reader.fetch([(start, end)])[0])

    def header_at(self, offset: int) -> tuple[bytes, int]:
        grow = HEADER_GUESS
        while True:
            buf = self.store.from_(offset)
            n = header_length(buf)
            if n is not None:
                break
            if offset + len(buf) >= self.size:
                raise NotFits(f"no END card in the header at byte {offset}")
            self.fetch(offset + len(buf), offset + len(buf) + max(grow, 3 * len(buf)))
            grow *= 4
        raw = buf[:n]
        magic = b"SIMPLE  " if offset == 0 else b"XTENSION"
        if not raw.startswith(magic):
            raise NotFits(f"not a FITS file (no {magic.decode().strip()} at byte {offset})")
        return raw, n

    def walk(self) -> Layout:
        hdus: list[HDUInfo] = []
        small: dict[int, bytes] = {}
        offset = 0
        while offset < self.size:
            raw, n = self.header_at(offset)
            try:
                keys = cards.scan(raw, STRUCTURE)
                h = HDUInfo(len(hdus), raw, keys, offset, offset + n, data_size(keys))
            except (KeyError, ValueError) as e:
                raise NotFits(f"bad structural keyword in the header at byte {offset}") from e
            hdus.append(h)
            if h.data_bytes and h.data_bytes <= SMALL_DATA:
                small[h.index] = self.small_data(h)
            offset = h.end
            if offset < self.size and not self.store.from_(offset):
                self._maybe_template(hdus)
                self.fetch(offset, offset + HEADER_GUESS)
        if offset - self.size >= BLOCK:
            raise NotFits("file shorter than its headers say")
        return Layout(self.size, hdus, small)

    def small_data(self, h: HDUInfo) -> bytes:
        end = h.data_start + h.data_bytes
        for _ in range(3):  # a template miss, then a plain read
            data = self.store.get(h.data_start, end)
            if data is not None:
                return data
            self.fetch(h.data_start, h.end + HEADER_GUESS)  # and the next header with it
        raise NotFits(f"HDU {h.index} data runs past the end of the file")

    def _maybe_template(self, hdus: list[HDUInfo]) -> None:
        if self.template_sig is None:
            self.template_sig = _signature(hdus, self.size)
            self.template = TEMPLATES.get(self.template_sig)


def read_layout(reader: RangeReader, store: ByteStore | None = None,
                initial: int | None = None) -> Layout:
    """Headers (and small tables) of every HDU: HEAD and the first bytes in one round trip,
    then the rest of the headers (all at once when a file of this shape was seen)."""
    store = store if store is not None else ByteStore()
    initial = initial or TEMPLATES.first_read or INITIAL_READ
    size_f = _HEAD_POOL.submit(reader.size)
    first = reader.fetch([(0, initial)], allow_short=True)[0]
    size = size_f.result()
    reader.stats.requests += 1  # the HEAD ran alongside, in the same round trip
    store.add(0, first)
    parser = _Parser(reader, store, size)
    layout = parser.walk()
    if parser.template_sig is not None:
        TEMPLATES.put(parser.template_sig, layout)
    return layout


# ---------------------------------------------------------------- per-process cache

class LayoutCache:
    """LRU of layouts per (archive, key), each kept at most ttl seconds. Archive files are
    immutable (a new processing version gets a new name); a replaced object shows up as a
    short read (-> reload) or, at worst, lives until the entry expires.
    A Level 2 layout holds ~70 kB of raw headers plus the parsed IMAGE header and WCS."""

    def __init__(self, maxsize: int = 128, ttl: float = 600.0) -> None:
        self.maxsize, self.ttl = maxsize, ttl
        self.items: OrderedDict[tuple[str, str], tuple[Layout, float]] = OrderedDict()
        self.lock = threading.Lock()
        self.loading: dict[tuple[str, str], threading.Lock] = {}

    def _fresh(self, k: tuple[str, str]) -> Layout | None:
        """The cached layout if present and young enough (call with self.lock held)."""
        hit = self.items.get(k)
        if hit is None or time.monotonic() - hit[1] > self.ttl:
            return None
        self.items.move_to_end(k)
        return hit[0]

    def get(self, archive: Archive, key: str,
            load: Callable[[], Layout]) -> tuple[Layout, bool]:
        """(layout, was it cached); concurrent misses on one key load it once."""
        k = (archive.url, key)
        with self.lock:
            layout = self._fresh(k)
            if layout is not None:
                return layout, True
            flight = self.loading.setdefault(k, threading.Lock())
        with flight:
            with self.lock:
                layout = self._fresh(k)
                if layout is not None:
                    return layout, True
            try:
                layout = load()
            finally:
                with self.lock:
                    self.loading.pop(k, None)
            with self.lock:
                self.items[k] = (layout, time.monotonic())
                self.items.move_to_end(k)
                while len(self.items) > self.maxsize:
                    self.items.popitem(last=False)
        return layout, False

    def has(self, archive: Archive, key: str) -> bool:
        with self.lock:
            return self._fresh((archive.url, key)) is not None

    def drop(self, archive: Archive, key: str) -> None:
        with self.lock:
            self.items.pop((archive.url, key), None)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


LAYOUTS = LayoutCache()


def clear_caches() -> None:
    """Forget every cached layout and template (tests, benchmarks)."""
    LAYOUTS.clear()
    TEMPLATES.clear()


def hdu_names(archive: Archive, key: str) -> tuple[list[str], int]:
    """The HDU names of a FITS object from range reads of its headers, and the bytes
    read (ingest checks a delivery in place with this: streaming.HeaderReader)."""
    reader = RangeReader(archive, key)
    layout = read_layout(reader)
    return [h.name for h in layout.hdus], reader.stats.bytes
