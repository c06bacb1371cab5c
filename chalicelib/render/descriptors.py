"""DataLink service descriptors for result tables whose rows name several datasets.

Written here, below the services, because the spectrophotometry worker writes them into
its results; the DataLink service uses the same standard identifiers.
"""

from __future__ import annotations

from .votable import Param, service_descriptor

SODA_SYNC = "ivo://ivoa.net/std/SODA#sync-1.0"
SODA_ASYNC = "ivo://ivoa.net/std/SODA#async-1.0"
DATALINK = "ivo://ivoa.net/std/DataLink#links-1.1"


def array_descriptors(base: str, id_ref: str, circle_ref: str, per_row: str) -> list[str]:
    """Descriptors for a table whose ID column may hold several dataset IDs per row (the
    spectrophotometry result: one row per source, its input images space-separated in
    obs_publisher_did). ID is ref= bound to that column and CIRCLE to a per-row circle
    around the source, so activating a descriptor for a row asks for cutouts of every
    image behind it centred on the source. per_row describes what a cell holds.

    - soda-batch (SODA async): one activation, every ID element as a repeated ID, yields
      one cutout per image in one job;
    - soda (SODA sync, one ID per call): call once per element of the ID cell;
    - datalink: every element as a repeated ID (or the cell as it is: /datalink/links
      splits values on whitespace, which no IVOA identifier contains) -> the links of
      every image in one response."""
    def inputs() -> list:
        return [Param("ID", "char", arraysize="*", ref=id_ref, ucd="meta.id;meta.dataset",
                      description=f"bound to {id_ref}: {per_row}"),
                Param("CIRCLE", "double", arraysize="3", xtype="circle", unit="deg",
                      ucd="pos.outline;obs", ref=circle_ref,
                      description=f"bound to {circle_ref}: the source's position and the "
                      "photometry stamp's radius"),
                Param("POS", "char", arraysize="*"),
                Param("BAND", "double", arraysize="2", xtype="interval", unit="m"),
                Param("TIME", "double", arraysize="2", xtype="interval", unit="d")]

    batch = service_descriptor(
        "soda-batch", f"{base}/soda/async", SODA_ASYNC, inputs(),
        content_type="application/fits",
        description="Cutouts around the source of every image behind this row in one UWS "
        "job: send each ID element as its own ID parameter with PHASE=RUN")
    sync = service_descriptor(
        "soda", f"{base}/soda/sync", SODA_SYNC, inputs(), content_type="application/fits",
        description="SODA cutout around the source, one image per call: call once per "
        "ID element")
    dl = service_descriptor(
        "datalink", f"{base}/datalink/links", DATALINK,
        [Param("ID", "char", arraysize="*", ref=id_ref, ucd="meta.id;meta.main",
               description=f"bound to {id_ref}: {per_row}")],
        content_type="application/x-votable+xml;content=datalink",
        description="DataLink of the images behind this row: files, cutouts, previews, "
        "calibration")
    return [batch, sync, dl]
