"""DataLink 1.1 {links}: what can be had for each dataset, found through the catalogue.

One request answers many IDs (GET or POST); rows of one ID are contiguous. Each image
gets #this (the file, exact size), #cutout (a SODA descriptor with this image's bounds,
and the archive-style cutout), #preview, and #calibration rows from the provenance.
A calibration file (no footprint) gets #this only. An unknown ID, or one whose links
fail, gets an error row of its own; the other IDs are still answered.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import lru_cache

import pyarrow as pa

from ..geometry import sky
from ..query import products, runtime
from ..render import votable
from ..render.descriptors import DATALINK, SODA_SYNC
from ..render.votable import Field, Param, service_descriptor
from ..web.replies import Reply
from ..web.request import Request

PER_ID_DESCRIPTORS = 50  # above this, one shared SODA descriptor keeps responses small
log = logging.getLogger(__name__)

COLUMNS = [
    ("ID", "char", "*", "meta.id;meta.main", "Identifier of the dataset"),
    ("access_url", "char", "*", "meta.ref.url", "URL to retrieve the linked resource"),
    ("service_def", "char", "*", "meta.ref", "Identifier of the service descriptor"),
    ("error_message", "char", "*", "meta.code.error", "Why no link could be made"),
    ("description", "char", "*", "meta.note", "What this link is"),
    ("semantics", "char", "*", "meta.code", "Link type from the IVOA datalink vocabulary"),
    ("content_type", "char", "*", "meta.code.mime", "MIME type of the linked resource"),
    ("content_length", "long", None, "phys.size;meta.file", "Size in bytes"),
    ("content_qualifier", "char", "*", "meta.code.class", "Product type of the resource"),
    ("local_semantics", "char", "*", "meta.code", "Archive-specific link type"),
    ("link_auth", "char", "*", "meta.code", "Authentication: none, optional or required"),
    ("link_authorized", "boolean", None, "meta.code", "Whether the caller is authorized"),
]


def _fields():
    return [Field(name, dt, arraysize=size, ucd=ucd, description=desc,
                  unit="byte" if name == "content_length" else None, id=f"dl_{name}")
            for name, dt, size, ucd, desc in COLUMNS]


def _row(id_, **kw) -> dict:
    row = {name: None for name, *_ in COLUMNS}
    row.update({"ID": id_, "link_auth": "none", "link_authorized": True, **kw})
    return row


def _error_row(did: str, message: str) -> dict:
    return _row(did, error_message=message, semantics="#this", link_auth=None,
                link_authorized=None)


def _this_row(did: str, plane: dict, base: str) -> dict:
    kind = plane.get("dataproduct_type") or "image"
    what = ("The image file (multi-extension FITS)" if products.is_sky_image(plane) else
            f"The calibration file ({plane.get('dataproduct_subtype') or kind}, FITS)")
    return _row(did, access_url=f"{base}/data/{plane['uri']}", semantics="#this",
                description=what, content_type=plane["content_type"],
                content_length=plane["content_length"], content_qualifier=f"#{kind}")


def _sky_rows(did: str, plane: dict, base: str, sd: str) -> list[dict]:
    return [
        _row(did, service_def=f"soda{sd}", semantics="#cutout", description="SODA cutout "
             "of this image (POS, CIRCLE, POLYGON, BAND, TIME)",
             content_type="application/fits", content_qualifier="#image"),
        _row(did, service_def=f"cutout{sd}", semantics="#cutout",
             local_semantics="archive-cutout", description="Cutout around ra, dec of a "
             "given size (deg), as the archive's /cutout service",
             content_type="application/fits", content_qualifier="#image"),
        _row(did, access_url=f"{base}/preview/{plane['uri']}", semantics="#preview",
             description="PNG quick-look of the IMAGE extension", content_type="image/png"),
    ]


def _rows_for(did: str, plane: dict | None, cals: list[dict], base: str, sd: str) -> list:
    if plane is None:
        return [_error_row(did, f"NotFoundFault: {did} is not known to this archive")]
    rows = [_this_row(did, plane, base)]
    if products.is_sky_image(plane):
        rows += _sky_rows(did, plane, base, sd)
    # provenance: the calibration files this product was made with (none for the
    # calibration files themselves; raw progenitors are not archived)
    rows += [_row(did, access_url=f"{base}/data/{c['uri']}", semantics="#calibration",
                  description=f"Calibration file used: {c['product']}",
                  content_type=c["content_type"], content_length=c["content_length"],
                  content_qualifier="#measurements", local_semantics=c["product"])
             for c in cals]
    return rows


def _soda_descriptor(base: str, suffix: str, plane: dict | None, did: str | None) -> str:
    id_param = Param("ID", "char", arraysize="*", value=did or "",
                     ref=None if did else "dl_ID", ucd="meta.id;meta.dataset")
    params = [id_param]
    if plane is not None:
        poly = plane["poly"]
        polys = sky.Polys.one(poly)
        ra, dec = sky.radec(polys.centre())
        r = float(polys.radius()[0])
        params += [
            Param("POS", "char", arraysize="*", ucd="pos.outline;obs",
                  description=f"CIRCLE, RANGE or POLYGON; image centre {float(ra[0]):.5f} "
                  f"{float(dec[0]):.5f}, radius {r:.3f} deg"),
            Param("CIRCLE", "double", arraysize="3", xtype="circle", unit="deg",
                  ucd="obs.field", min=f"{float(ra[0]) - r:.6f} {float(dec[0]) - r:.6f} 0",
                  max=f"{float(ra[0]) + r:.6f} {float(dec[0]) + r:.6f} {2 * r:.6f}"),
            Param("POLYGON", "double", arraysize="*", xtype="polygon", unit="deg",
                  ucd="obs.field"),
            Param("BAND", "double", arraysize="2", xtype="interval", unit="m",
                  ucd="em.wl;stat.interval", min=repr(plane["em_lo"]),
                  max=repr(plane["em_hi"])),
            Param("TIME", "double", arraysize="2", xtype="interval", unit="d",
                  ucd="time.interval;obs.exposure", min=repr(plane["t_lo"]),
                  max=repr(plane["t_hi"])),
        ]
    else:
        params += [Param("POS", "char", arraysize="*"),
                   Param("CIRCLE", "double", arraysize="3", xtype="circle", unit="deg"),
                   Param("POLYGON", "double", arraysize="*", xtype="polygon", unit="deg"),
                   Param("BAND", "double", arraysize="2", xtype="interval", unit="m"),
                   Param("TIME", "double", arraysize="2", xtype="interval", unit="d")]
    return service_descriptor(f"soda{suffix}", f"{base}/soda/sync", SODA_SYNC, params,
                              content_type="application/fits",
                              description="SODA synchronous cutout")


def _cutout_descriptor(base: str, suffix: str, uri: str | None) -> str:
    # per image the file key is fixed; a shared descriptor binds the ID column instead
    first = (Param("path", "char", arraysize="*", value=uri, description="file key") if uri
             else Param("ID", "char", arraysize="*", ref="dl_ID", description="dataset ID"))
    params = [first,
              Param("ra", "double", unit="deg", ucd="pos.eq.ra"),
              Param("dec", "double", unit="deg", ucd="pos.eq.dec"),
              Param("size", "double", unit="deg", ucd="phys.angSize",
                    description="width (deg); 'w,h' also accepted"),
              Param("gzip", "char", arraysize="*", value="false", options=["true", "false"])]
    return service_descriptor(f"cutout{suffix}", f"{base}/cutout", None, params,
                              content_type="application/fits",
                              description="Archive-style cutout by position and size")


def bind_fields(fields: list) -> list:
    """Give the obs_publisher_did FIELD the ID the descriptors' ref= points to."""
    return [replace(f, id="obs_publisher_did") if f.name == "obs_publisher_did" else f
            for f in fields]


def descriptors(base: str) -> list[str]:
    """Descriptors for ObsCore results (SIA, TAP): DataLink and SODA bound to the
    obs_publisher_did column by ref. The same text for every answer on one base URL:
    built once (writing it was ~1 ms of each cone's request path, #17)."""
    return list(_descriptors(base))


@lru_cache(maxsize=16)
def _descriptors(base: str) -> tuple[str, str]:
    dl = service_descriptor("datalink", f"{base}/datalink/links", DATALINK,
                            [Param("ID", "char", arraysize="*", ref="obs_publisher_did",
                                   ucd="meta.id;meta.main")],
                            content_type="application/x-votable+xml;content=datalink",
                            description="DataLink: files, cutouts, previews, calibration")
    soda = service_descriptor("soda", f"{base}/soda/sync", SODA_SYNC, [
        Param("ID", "char", arraysize="*", ref="obs_publisher_did"),
        Param("POS", "char", arraysize="*"),
        Param("CIRCLE", "double", arraysize="3", xtype="circle", unit="deg"),
        Param("POLYGON", "double", arraysize="*", xtype="polygon", unit="deg"),
        Param("BAND", "double", arraysize="2", xtype="interval", unit="m"),
        Param("TIME", "double", arraysize="2", xtype="interval", unit="d")],
        content_type="application/fits", description="SODA cutouts of these images")
    return dl, soda


def _answer(did: str, plane: dict | None, cals: list[dict], base: str,
            suffix: str | None) -> tuple[list[dict], list[str]]:
    """Rows and (with a suffix) per-ID descriptors of one ID; a failure on one dataset
    becomes its error row so the rest of the batch is still answered."""
    try:
        rows = _rows_for(did, plane, cals, base, suffix or "")
        if suffix is None or plane is None or not products.is_sky_image(plane):
            return rows, []
        return rows, [_soda_descriptor(base, suffix, plane, did),
                      _cutout_descriptor(base, suffix, plane["uri"])]
    except Exception:  # noqa: BLE001 - one broken dataset must not fail the batch
        log.exception("DataLink failed for %s", did)
        return [_error_row(did, f"FatalFault: links for {did} could not be made; "
                           "the archive has logged the problem")], []


def links(req: Request) -> Reply:
    params, base = req.params, req.base
    # a value may list several IDs (an array-valued cell bound by ref=): IVOA identifiers
    # never contain whitespace, so splitting on it is safe
    ids = [i for v in params.getall("ID") for i in v.split()]
    if not ids:
        return Reply(400, votable.error_document("UsageFault: no ID given"),
                     "application/x-votable+xml")
    try:
        fmt = votable.parse_format(params.get("RESPONSEFORMAT"))
    except votable.UnsupportedFormat as e:
        return Reply(400, votable.error_document(f"UsageFault: {e}"),
                     "application/x-votable+xml")
    max_ids = req.settings.datalink_max_ids
    overflow = len(ids) > max_ids
    ids = ids[:max_ids]  # whole IDs only: never truncate within one ID
    cat = runtime.catalogue(base)
    planes = products.by_ids(cat, sorted(set(ids)))
    cals = products.calibration_inputs(cat, [p["planeid"] for p in planes.values()])
    per_id = len(set(ids)) <= PER_ID_DESCRIPTORS
    rows, resources, seen = [], [], {}
    for did in ids:
        if did in seen:
            continue
        seen[did] = suffix = f"-{len(seen)}" if per_id else None
        plane = planes.get(did)
        got, res = _answer(did, plane, cals.get(plane["planeid"], []) if plane else [],
                           base, suffix)
        rows += got
        resources += res
    if not per_id and any(r["service_def"] for r in rows):
        resources += [_soda_descriptor(base, "", None, None), _cutout_descriptor(base, "", None)]
    table = pa.Table.from_pylist(rows, schema=_arrow_schema())
    body, ctype = votable.write(table, _fields(), fmt, overflow=overflow,
                                infos=[("standardID", DATALINK, None)],
                                resources_after=resources, title="DataLink links",
                                query="ID=" + " ".join(ids))
    if fmt == "votable":
        ctype = "application/x-votable+xml;content=datalink"
    return Reply(200, body, ctype)


def _arrow_schema() -> pa.Schema:
    types = {"char": pa.string(), "long": pa.int64(), "boolean": pa.bool_()}
    return pa.schema([(name, types[dt]) for name, dt, *_ in COLUMNS])
