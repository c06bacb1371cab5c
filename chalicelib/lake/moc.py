"""Per-collection coverage maps (IVOA MOC 2.0) built with mocpy.

Each ingest run writes the MOC of what it brought (moc/<collection>/<delivery>.<run>.fits);
a collection's MOC is the union of the pieces of released runs, cached per release.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from mocpy import MOC

from .releases import Release
from .storage import Archive

# 13.7 arcmin cells: fine against a 3.5 deg field, and cheap enough that a week of
# 21,000 footprints costs ~2 s (order 10 cost ~12 s); boundary cells are kept, so the
# MOC never misses covered sky
DEPTH = 8
BATCH = 5000  # mocpy's per-footprint cost grows past a few thousand polygons per call


def from_polygons(polys: Iterable[list[float]], depth: int = DEPTH) -> MOC:
    """Union of footprints given as flat (ra, dec, ...) lists."""
    moc = None
    batch: list[np.ndarray] = []

    def flush():
        nonlocal moc
        if batch:
            parts = MOC.from_polygons(batch, max_depth=depth)
            moc = (moc or parts[0]).union(*parts)
            batch.clear()

    seen: set[tuple] = set()
    for p in polys:
        # skip products without a footprint (calibration files) and repeats (D1/D4,
        # D2/D5 and D3/D6 share one)
        if not p or tuple(p) in seen:
            continue
        seen.add(tuple(p))
        a = np.asarray(p, float)
        batch += [a[0::2], a[1::2]]
        if len(batch) >= 2 * BATCH:
            flush()
    flush()
    return moc if moc is not None else MOC.new_empty(depth)


def to_bytes(moc: MOC, fmt: str = "fits") -> bytes:
    """The MOC 2.0 serialisations: FITS (range-encoded), or text as `order/ipix-ipix`
    (ascii) or {"order": [ipix, ...]} (json). The text forms come from to_string, since
    serialize() gives a dict for json and an HDUList for fits, not bytes."""
    if fmt == "fits":
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "m.fits"
            moc.save(str(p), format="fits")
            return p.read_bytes()
    if fmt in ("json", "ascii"):
        return moc.to_string(format=fmt).encode()
    raise ValueError(f"unknown MOC format {fmt!r}: use fits, json or ascii")


def from_bytes(data: bytes) -> MOC:
    return MOC.from_fits(io.BytesIO(data))


def piece_key(collection: str, delivery: str, run: str) -> str:
    return f"moc/{collection}/{delivery}.{run}.fits"


def write_piece(archive: Archive, collection: str, delivery: str, run: str, polys) -> None:
    archive.write_bytes(piece_key(collection, delivery, run), to_bytes(from_polygons(polys)))


def collections(archive: Archive, release: Release) -> list[str]:
    names = {k.split("/")[1] for k in archive.list("moc") if "/" in k}
    return sorted(c for c in names if _pieces(archive, c, release))


def _pieces(archive: Archive, collection: str, release: Release) -> list[str]:
    wanted = {f"{d}.{r}.fits" for d, r in release.runs.items()}
    return [k for k in archive.list(f"moc/{collection}") if k.rsplit("/", 1)[1] in wanted]


def collection_moc(archive: Archive, collection: str, release: Release) -> MOC:
    """The collection's MOC as of a release, cached under moc/<collection>/r<N>.fits."""
    cache = f"moc/{collection}/_r{release.number:08d}.fits"
    if archive.exists(cache):
        return from_bytes(archive.read_bytes(cache))
    moc = MOC.new_empty(DEPTH)
    for key in _pieces(archive, collection, release):
        moc = moc.union(from_bytes(archive.read_bytes(key)))
    archive.write_bytes(cache, to_bytes(moc))
    return moc
