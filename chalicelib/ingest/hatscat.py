"""Each release's ObsCore rows as a HATS catalogue, for LSDB users.

HATS (Hierarchical Adaptive Tiling Scheme) is the layout LSDB reads and IRSA already
serves its big catalogues in: Parquet files partitioned by HEALPix pixel (adaptive
orders, `Norder=k/Dir=d/Npix=n.parquet`), a `_metadata` footer, a partition list, a
MOC, and a *margin cache*: for every pixel, the rows of its neighbours lying within a
threshold of its border, so a cross-match or cone near a pixel edge needs only that
pixel and its margin.

Written by the real `hats-import` pipeline (a Dask client of threads, no worker
processes, so it runs where /dev/shm is missing, as in Lambda) from the release's
released ObsCore rows, as a HATS *collection* under the archive:

    hats/<release>/obscore/collection.properties    the collection (default margin named)
    hats/<release>/obscore/obscore/                 the catalogue, partitioned on (s_ra, s_dec)
    hats/<release>/obscore/obscore_margin/          the margin cache
    hats/latest.json                                {"release": N, "path": "hats/<N>/obscore"}

An image is a footprint, not a point: it contains a position only if its centre
(s_ra, s_dec) lies within `s_rmax` of it. So the margin is as wide as the release's
largest `s_rmax`, and a cross-match of positions with radius max(s_rmax) finds every
image whose footprint can hold each position; the exact footprint test (s_region)
then keeps those that do. HATS requires margin pixels (one order above the deepest
partition) to be at least as wide as the margin, which bounds the partition order: a
3.5 degree SPHEREx field (s_rmax ~2.5 deg) allows partitions up to order 2.

`maintenance.merge` and `compact` call `publish` after their release, so the HATS copy
follows the sky-sorted tiers. Publication is a full rewrite of the release's rows
(HATS has no append), written locally first and uploaded, then `latest.json` flipped:
readers of the previous copy are not disturbed.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import duckdb

from ..geometry.sqlfunctions import sql_in, sql_list
from ..lake import releases, schema
from ..lake.storage import Archive, duckdb_s3
from ..lake.tables import open_table

PREFIX = "hats"
NAME = "obscore"
MARGIN = f"{NAME}_margin"
TABLE = "ivoa.obscore"
# the served ObsCore columns, plus the footprint radius a matcher needs and the
# HEALPix index (order 12, nested) of the centre
EXTRA = ("s_rmax", "hpx")
HPX_ORDER = 12
PIXEL_THRESHOLD = 1_000_000  # rows per partition before it splits (hats-import's default)
MAX_ORDER = 10  # partitions deeper than this are never needed for image metadata
EPSILON_ARCSEC = 1.0  # margin slack over the largest footprint radius


def path_of(release: int) -> str:
    return f"{PREFIX}/{release:08d}/{NAME}"


def columns() -> list[str]:
    served = [c.name for c in schema.TABLES[TABLE].served]
    return served + [c for c in EXTRA if c not in served]


def latest(archive: Archive) -> dict | None:
    """The newest publication ({"release", "path", "rows", "margin_arcsec", ...})."""
    try:
        return json.loads(archive.read_bytes(f"{PREFIX}/latest.json"))
    except FileNotFoundError:
        return None


def _export(archive: Archive, rel: releases.Release, out: Path) -> tuple[int, float]:
    """The release's released ObsCore rows to one local Parquet file: (rows, max s_rmax)."""
    version = rel.versions.get(TABLE)
    dt = open_table(archive, TABLE, version) if version is not None else None
    files = dt.file_uris() if dt is not None else []
    if not files or not rel.runs:
        return 0, 0.0
    # bounded memory, spilling next to the export (a Lambda's only writable disk is /tmp)
    con = duckdb.connect(config={"memory_limit": "2GB", "preserve_insertion_order": False,
                                 "temp_directory": str(out.parent / "spill")})
    try:
        if archive.is_s3:
            duckdb_s3(con)
        table = schema.PHYSICAL[TABLE]
        types = ", ".join(f"'{c}': 'VARCHAR'" for c in table.partition_by)
        scan = (f"read_parquet({sql_list(files)}, hive_partitioning = true, "
                f"union_by_name = true, hive_types = {{{types}}})")
        cols = ", ".join(f'"{c}"' for c in columns())
        where = f"ingest_id IN ({sql_in(sorted(rel.runs.values()))}) AND s_ra IS NOT NULL " \
                "AND s_dec IS NOT NULL"
        con.execute(f"COPY (SELECT {cols} FROM {scan} WHERE {where} ORDER BY hpx) "
                    f"TO '{out}' (FORMAT parquet)")
        rows, rmax = con.execute(f"SELECT count(*), coalesce(max(s_rmax), 0) FROM "
                                 f"read_parquet('{out}')").fetchone()
    finally:
        con.close()
    return int(rows), float(rmax)


def _densest(parquet: Path, order: int) -> int:
    """Rows in the fullest HEALPix pixel of `order` (from hpx, order 12 nested)."""
    shift = 2 * (HPX_ORDER - min(order, HPX_ORDER))
    with duckdb.connect() as con:
        return int(con.execute(f"SELECT coalesce(max(n), 0) FROM (SELECT hpx >> {shift}, "
                               f"count(*) AS n FROM read_parquet('{parquet}') GROUP BY 1)"
                               ).fetchone()[0])


def orders(margin_arcsec: float) -> tuple[int, int]:
    """(deepest partition order, margin order) for a margin of that width: margin
    pixels one order deeper than any partition and at least as wide as the margin."""
    from hats.pixel_math import healpix_shim as hp  # deferred: merge step only

    margin_order = int(hp.margin2order(margin_thr_arcmin=margin_arcsec / 60.0))
    return max(0, min(MAX_ORDER, margin_order - 1)), margin_order


def build(parquet: Path, out: Path, margin_arcsec: float,
          pixel_threshold: int = PIXEL_THRESHOLD, threads: int = 2,
          title: str = "SPHEREx ObsCore") -> Path:
    """Run hats-import on one Parquet file: the collection (catalogue + margin) in out/NAME."""
    from dask.distributed import Client  # deferred: merge step only (Dask is heavy)
    from hats_import.collection.arguments import CollectionArguments  # deferred: as above
    from hats_import.pipeline import pipeline_with_client  # deferred: as above

    highest, _ = orders(margin_arcsec)
    work = out.parent / "hats-tmp"
    args = (CollectionArguments(output_artifact_name=NAME, output_path=out,
                                tmp_dir=work, dask_tmp=work, progress_bar=False,
                                resume=False, addl_hats_properties={"obs_title": title})
            .catalog(input_file_list=[parquet], file_reader="parquet", ra_column="s_ra",
                     dec_column="s_dec", highest_healpix_order=highest,
                     pixel_threshold=pixel_threshold, sort_columns="obs_publisher_did")
            .add_margin(margin_threshold=margin_arcsec, output_artifact_name=MARGIN,
                        is_default=True))
    # threads only: no worker processes (Lambda has no /dev/shm), no dashboard
    with Client(processes=False, n_workers=1, threads_per_worker=threads,
                dashboard_address=None, local_directory=str(work)) as client:
        pipeline_with_client(args, client)
    return out / NAME


def _fix_primary(root: Path, primary: str) -> None:
    """hats-import names the margin's primary catalogue by its local build path; name
    the published one instead."""
    for props in (root / MARGIN / "hats.properties", root / MARGIN / "properties"):
        if props.exists():
            lines = [f"hats_primary_table_url={primary}"
                     if ln.startswith("hats_primary_table_url=") else ln
                     for ln in props.read_text().splitlines()]
            props.write_text("\n".join(lines) + "\n")


def publish(archive: Archive, release: int | None = None,
            pixel_threshold: int | None = None) -> str:
    """Write release `release` (default: the latest) as hats/<release>/obscore and point
    hats/latest.json at it. Returns a line for the maintenance report."""
    pixel_threshold = PIXEL_THRESHOLD if pixel_threshold is None else pixel_threshold
    rel = releases.load(archive, release)
    with tempfile.TemporaryDirectory(prefix="hats-") as tmp:
        tmp = Path(tmp)
        rows, rmax = _export(archive, rel, tmp / "obscore.parquet")
        if rows == 0:
            return f"hats: release {rel.number} has no ObsCore rows, nothing published"
        margin = math.ceil(rmax * 3600.0 + EPSILON_ARCSEC)
        # partitions cannot be deeper than the margin allows, so a pixel there may hold
        # more rows than the threshold: raise it to fit (hats-import refuses otherwise)
        pixel_threshold = max(pixel_threshold,
                              _densest(tmp / "obscore.parquet", orders(margin)[0]))
        root = build(tmp / "obscore.parquet", tmp / "out", margin, pixel_threshold,
                     title=f"SPHEREx ObsCore image metadata, release {rel.number}")
        key = path_of(rel.number)
        _fix_primary(root, archive.path(f"{key}/{NAME}"))
        files = sorted(p for p in root.rglob("*") if p.is_file())
        size = 0
        for p in files:
            archive.put_file(p, f"{key}/{p.relative_to(root).as_posix()}")
            size += p.stat().st_size
    highest, margin_order = orders(margin)
    doc = {"release": rel.number, "path": key, "rows": rows, "margin_arcsec": margin,
           "margin_order": margin_order, "highest_order": highest,
           "pixel_threshold": pixel_threshold, "files": len(files),
           "bytes": size}
    archive.write_bytes(f"{PREFIX}/latest.json", json.dumps(doc, indent=1).encode())
    return (f"hats: release {rel.number} -> {key} ({rows} rows, margin {margin} arcsec, "
            f"{len(files)} files)")
