"""A per-release spatial index of a table's rows: which rows can touch a cone, in numpy.

Per row it keeps the centre (s_ra, s_dec) as a float32 unit vector, the bounding-cap
radius s_rmax (float32, rounded up), the order-12 HEALPix cell of the centre, and where
the row lives (file number, row number in the file): 26 bytes a row (260 MB at 10 M
rows). Rows are grouped by radius class (footprints of similar size) and sorted by cell
inside a class, so a cone resolves to candidate rows with a few binary searches per class
and one vectorised bounding-cap test on the rows of the cells the cone (widened by the
class's largest radius) covers. The candidates (row numbers per file) are taken from the
row-group cache into the catalogue's cone lane, where the exact ADQL test runs on those
rows only (in DuckDB, or in numpy for a simple cone).

Exactness: a row is a candidate whenever its bounding cap meets the query cap (with a
margin that covers float32 rounding), so no row of the answer is lost; rows without a
centre are never candidates (the RA/Dec box the query also carries excludes them
anyway), rows without a radius always are. Files are immutable: the per-file arrays are
read once (only the files a new release adds are read) and the index of a release is
put together from them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..geometry import sky

ORDER = 12  # HEALPix order of the cells (that of the tables' hpx column)
MARGIN = 1e-4  # degrees added to every reach: covers float32 rounding (~1e-5 deg)
# radius classes: a class's rows are looked up with the cap widened by its upper edge
EDGES = (0.05, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0,
         math.inf)
MAX_CANDIDATES = 200_000  # more: not worth a row filter, the box alone prunes
BYTES_PER_ROW = 26


@dataclass
class FileRows:
    """One data file's rows as the index needs them (rows with a centre only)."""

    row: np.ndarray  # uint32 row number in the file
    cell: np.ndarray  # int32 order-12 cell of the centre
    xyz: np.ndarray  # float32 (n, 3)
    rmax: np.ndarray  # float32 bounding radius, inf when unknown

    @classmethod
    def of(cls, row, ra, dec, rmax, cell=None) -> FileRows:
        ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
        ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
        row, ra, dec = np.asarray(row)[ok], ra[ok], dec[ok]
        r = np.asarray(rmax, np.float64)[ok]
        r = np.where(np.isfinite(r) & (r >= 0), r, np.inf)
        if cell is None:
            c = sky.healpix(ra, dec, ORDER) if len(ra) else np.zeros(0, np.int64)
        else:
            c = np.asarray(cell, np.float64)[ok]
            bad = ~np.isfinite(c)
            if bad.any():  # a row without its cell: computed here
                c[bad] = sky.healpix(ra[bad], dec[bad], ORDER)
        # float32 radii rounded up: never smaller than the stored radius
        r32 = r.astype(np.float32)
        r32 = np.where(r32.astype(np.float64) < r, np.nextafter(r32, np.float32(np.inf)), r32)
        return cls(row.astype(np.uint32), c.astype(np.int32),
                   sky.xyz(ra, dec).astype(np.float32), r32.astype(np.float32))


class Cells:
    """sky.cap_cells of caps around one centre, by radius, computed once each."""

    def __init__(self, ra: float, dec: float):
        self.ra, self.dec, self.got = ra, dec, {}

    def __call__(self, reach: float):
        if reach not in self.got:
            self.got[reach] = sky.cap_cells(self.ra, self.dec, reach, ORDER) \
                if reach < 180 else None
        return self.got[reach]


class SpatialIndex:
    """The rows of a set of files, ready for cone look-ups."""

    def __init__(self, uris: list[str], parts: list[FileRows]):
        self.uris = list(uris)
        file = np.concatenate([np.full(len(p.row), i, np.uint16) for i, p in enumerate(parts)]) \
            if parts else np.zeros(0, np.uint16)
        row = np.concatenate([p.row for p in parts]) if parts else np.zeros(0, np.uint32)
        cell = np.concatenate([p.cell for p in parts]) if parts else np.zeros(0, np.int32)
        xyz = np.concatenate([p.xyz for p in parts]) if parts else np.zeros((0, 3), np.float32)
        rmax = np.concatenate([p.rmax for p in parts]) if parts else np.zeros(0, np.float32)
        self._sort(file, row, cell, xyz, rmax)

    @classmethod
    def merged(cls, indexes: list[SpatialIndex]) -> SpatialIndex:
        """One index over the files of these (disjoint files): a cone over the unmerged
        weeks of a release is one look-up, not one per weekly file (~0.1 ms each)."""
        if not indexes:
            return cls([], [])
        out = cls.__new__(cls)
        out.uris = [u for ix in indexes for u in ix.uris]
        if len(out.uris) > np.iinfo(np.uint16).max:
            raise ValueError(f"{len(out.uris)} files: more than the file numbers hold")
        first = np.cumsum([0] + [len(ix.uris) for ix in indexes[:-1]])
        file = np.concatenate([(ix.file.astype(np.int64) + k).astype(np.uint16)
                               for ix, k in zip(indexes, first.tolist())])
        out._sort(file, *(np.concatenate([getattr(ix, a) for ix in indexes])
                          for a in ("row", "cell", "xyz", "rmax")))
        return out

    def _sort(self, file, row, cell, xyz, rmax) -> None:
        """Keep the rows grouped by radius class, sorted by cell inside a class."""
        n = len(row)
        cls = np.searchsorted(np.asarray(EDGES[:-1], np.float32), rmax, side="left")
        order = np.lexsort((cell, cls))
        self.file, self.row, self.cell = file[order], row[order], cell[order]
        self.xyz, self.rmax = xyz[order], rmax[order]
        cls = cls[order]
        bounds = np.searchsorted(cls, np.arange(len(EDGES) + 1), side="left")
        # (start, end, radius bound) of each non-empty class
        self.classes = [(int(a), int(b), EDGES[k])
                        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
        self.rows = n

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.file, self.row, self.cell, self.xyz, self.rmax))

    def candidates(self, ra: float, dec: float, radius: float, footprint: bool,
                   cells_of=None) -> np.ndarray | None:
        """Positions (into this index's arrays) of the rows whose bounding cap (footprint)
        or centre (not footprint) lies within `radius` of (ra, dec); None when that is
        too many to be worth a row filter. cells_of(reach): the cells of a cap, shared by
        the indexes a cone looks in."""
        q = sky.xyz(ra, dec)
        cells_of = cells_of or Cells(ra, dec)
        picked = []
        total = 0
        for a, b, big in self.classes:
            reach = radius + (big if footprint else 0.0) + MARGIN
            cells = cells_of(reach)
            if cells is None:
                idx = np.arange(a, b)
            else:
                seg = self.cell[a:b]
                lo = np.searchsorted(seg, [c[0] for c in cells], side="left")
                hi = np.searchsorted(seg, [c[1] for c in cells], side="right")
                pieces = [np.arange(a + i, a + j) for i, j in zip(lo, hi) if j > i]
                if not pieces:
                    continue
                idx = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            total += len(idx)
            if total > 4 * MAX_CANDIDATES:
                return None
            d = self.xyz[idx].astype(np.float64) - q
            chord2 = d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2
            lim = radius + MARGIN + (self.rmax[idx].astype(np.float64) if footprint else 0.0)
            lim = np.minimum(lim, 180.0)
            keep = chord2 <= (2 * np.sin(np.radians(lim) / 2)) ** 2 + 1e-12
            picked.append(idx[keep])
        out = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        return None if len(out) > MAX_CANDIDATES else out


CACHE_BYTES = 256 << 20  # decoded row-group columns kept for the cone lane


class RowGroups:
    """Decoded columns of Parquet row groups (least recently used dropped beyond `limit`
    bytes): a cone's few hundred rows are taken from memory, not decoded again."""

    def __init__(self, opener, limit: int = CACHE_BYTES):
        self.opener = opener  # uri -> what pq.ParquetFile reads (path or file object)
        self.limit = limit
        self.files: dict[str, tuple] = {}  # uri -> (ParquetFile, row-group start rows)
        self.cache: OrderedDict[tuple[str, int, str], pa.Array] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def _file(self, uri: str):
        got = self.files.get(uri)
        if got is None:
            pf = pq.ParquetFile(self.opener(uri))
            md = pf.metadata
            starts = np.cumsum([0] + [md.row_group(i).num_rows
                                      for i in range(md.num_row_groups)])
            arrow = pf.schema_arrow
            got = self.files[uri] = (pf, starts, {f.name: f.type for f in arrow})
        return got

    def take(self, uri: str, rows: np.ndarray, columns: list[str]) -> dict[str, pa.Array]:
        """Columns of these rows (row numbers in the file, ascending)."""
        with self.lock:
            pf, starts, present = self._file(uri)
            groups = np.searchsorted(starts, rows, side="right") - 1
            cols = [c for c in columns if c in present]
            # rows ascending: one group when the first and last share it (a wide cone's
            # usual case in each file it meets, done without np.unique)
            used = [int(groups[0])] if len(rows) and groups[0] == groups[-1] else \
                np.unique(groups).tolist()
            for g in used:
                want = [c for c in cols if (uri, g, c) not in self.cache]
                if want:
                    got = pf.read_row_group(g, columns=want)
                    for c in want:
                        a = got[c].combine_chunks() if got[c].num_chunks != 1 else got[c].chunk(0)
                        self.cache[(uri, g, c)] = a
                        self.bytes += a.nbytes
            # rows ascending, groups in order: a take per group used, the pieces joined
            # (a chunked array's take joined the whole groups first: ms for a deep cone)
            cuts = np.searchsorted(groups, used + [len(starts)], side="left").tolist()
            local = [pa.array(rows[a:b] - starts[g], pa.int64())
                     for g, a, b in zip(used, cuts[:-1], cuts[1:])]
            out = {}
            for c in cols:
                pieces = []
                for g, idx in zip(used, local):
                    self.cache.move_to_end((uri, g, c))
                    pieces.append(self.cache[(uri, g, c)].take(idx))
                out[c] = pieces[0] if len(pieces) == 1 else \
                    pa.concat_arrays(pieces) if pieces else pa.array([], present[c])
            while self.bytes > self.limit and self.cache:
                _, a = self.cache.popitem(last=False)
                self.bytes -= a.nbytes
            return out

    def forget(self, keep: set[str]) -> None:
        """Drop the files not in `keep` (gone from the release)."""
        with self.lock:
            for uri in [u for u in self.files if u not in keep]:
                del self.files[uri]
            for key in [k for k in self.cache if k[0] not in keep]:
                self.bytes -= self.cache.pop(key).nbytes
