"""The /coverage service: which collections cover a region, and a collection's MOC.

The MOCs themselves (building, storing, reading pieces) are lake.moc's."""

from __future__ import annotations

import pyarrow as pa
from mocpy import MOC

from ..dali import shape
from ..lake.moc import DEPTH, collection_moc, collections, from_polygons, to_bytes
from ..query import runtime
from ..render import votable
from ..web.replies import Reply
from ..web.request import Request

FORMATS = {"fits": "application/fits", "json": "application/json", "ascii": "text/plain"}


def _region_moc(pos: str) -> MOC:
    import astropy.units as u  # deferred: cold start (astropy)
    from astropy.coordinates import Latitude, Longitude  # deferred: cold start (astropy)

    kind, v = shape(pos, "POS", kinds=("CIRCLE", "POLYGON"))
    if kind == "CIRCLE":
        return MOC.from_cone(lon=Longitude(v[0] * u.deg), lat=Latitude(v[1] * u.deg),
                             radius=v[2] * u.deg, max_depth=DEPTH)
    return from_polygons([list(v)])


def search(req: Request) -> Reply:
    """Which collections cover a region: a VOTable of collections with their MOC URL."""
    params, base = req.params, req.base
    cat = runtime.catalogue(base)
    pos = params.get("POS")
    try:
        region = _region_moc(pos) if pos else None
    except ValueError as e:
        return Reply(400, votable.error_document(f"UsageError: {e}"),
                     "application/x-votable+xml")
    rows = []
    for coll in collections(cat.archive, cat.release):
        moc = collection_moc(cat.archive, coll, cat.release)
        overlap = moc if region is None else moc.intersection(region)
        if region is None or not overlap.empty():
            rows.append({"collection": coll, "sky_fraction": float(moc.sky_fraction),
                         "overlap_fraction": float(overlap.sky_fraction),
                         "moc_url": f"{base}/coverage/{coll}"})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("collection", pa.string()), ("sky_fraction", pa.float64()),
        ("overlap_fraction", pa.float64()), ("moc_url", pa.string())]))
    fields = [votable.Field("collection", "char", "*", ucd="meta.id"),
              votable.Field("sky_fraction", "double", ucd="arith.ratio",
                            description="fraction of the sky the collection covers"),
              votable.Field("overlap_fraction", "double", ucd="arith.ratio",
                            description="fraction of the sky in both region and collection"),
              votable.Field("moc_url", "char", "*", ucd="meta.ref.url")]
    body, ctype = votable.write(table, fields, "votable")
    return Reply(200, body, ctype)


def moc(req: Request) -> Reply:
    """A collection's MOC 2.0 as FITS (default), JSON or ASCII (FORMAT=...)."""
    collection, params, base = req.path["collection"], req.params, req.base
    # a short name or its MIME type, lenient about case
    fmt = (params.get("FORMAT") or "fits").strip().lower()
    fmt = fmt if fmt in FORMATS else {m: n for n, m in FORMATS.items()}.get(fmt)
    if fmt is None:
        return Reply.text(f"UsageError: FORMAT {params.get('FORMAT')!r} is not supported; "
                          "use fits (default), json or ascii", 400)
    cat = runtime.catalogue(base)
    if collection not in collections(cat.archive, cat.release):
        return Reply.text(f"NotFoundFault: no coverage for collection {collection!r}", 404)
    m = collection_moc(cat.archive, collection, cat.release)
    return Reply(200, to_bytes(m, fmt), FORMATS[fmt],
                 {"Content-Disposition": f'inline; filename="{collection}.moc.{fmt}"'})
