"""Weekly delivery ingest: validate, store files, append rows, release atomically.

Cost is proportional to the delivery: files are copied, each Delta table gets one
append (partitioned by collection and delivery, rows ordered by HEALPix), MOC pieces are
written, and one release file makes it all visible at once (see releases.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from tqdm import tqdm

from ..geometry import sky
from ..lake import moc as coverage
from ..lake import releases, schema
from ..lake.storage import Archive, file_md5, region
from ..lake.tables import open_table, table_uri

SCIENCE_HDUS = ["PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "PSF", "WCS-WAVE"]
DATALINK_FORMAT = "application/x-votable+xml;content=datalink"


class DeliveryError(ValueError):
    """The delivery is invalid; nothing was committed."""


@dataclass
class Summary:
    delivery: str
    release: int
    skipped: bool = False
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        if self.skipped:
            return f"{self.delivery}: already in release {self.release}; nothing changed"
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        took = sum(self.seconds.values())
        return (f"{self.delivery}: release {self.release} in {took:.1f} s; {self.files} files"
                f" ({self.bytes / 1e6:.1f} MB); rows: {rows}")


# ---- validation -------------------------------------------------------------------------


def _load_manifest(folder: Path) -> dict:
    try:
        return parse_manifest((folder / "manifest.json").read_bytes())
    except FileNotFoundError:
        raise DeliveryError(f"{folder}: no manifest.json") from None


def parse_manifest(data: bytes) -> dict:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeliveryError(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise DeliveryError("manifest.json is not a JSON object")
    for k in ("delivery", "tables", "files"):
        if k not in doc:
            raise DeliveryError(f"manifest.json lacks '{k}'")
    return doc


def _read_records(folder: Path, manifest: dict) -> dict[str, pa.Table]:
    def read(name: str) -> bytes | None:
        path = folder / name
        return path.read_bytes() if path.exists() else None

    return read_records(read, manifest)


def read_records(read, manifest: dict) -> dict[str, pa.Table]:
    """The four record tables the manifest lists, checked against their schema;
    read(relative name) -> bytes, or None when the delivery lacks that file."""
    out = {}
    for kind in schema.DELIVERY_RECORDS:
        entry = manifest["tables"].get(kind)
        if entry is None:
            raise DeliveryError(f"manifest lists no '{kind}' table")
        data = read(entry["file"])
        if data is None:
            raise DeliveryError(f"{entry['file']} is missing")
        if entry.get("md5") and hashlib.md5(data).hexdigest() != entry["md5"]:
            raise DeliveryError(f"{entry['file']}: checksum differs from the manifest")
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowInvalid, OSError) as e:
            raise DeliveryError(f"{entry['file']} is not readable Parquet: {e}") from None
        want = schema.record_schema(kind)
        missing = [n for n in want.names if n not in table.column_names]
        if missing:
            raise DeliveryError(f"{entry['file']}: missing columns {missing}")
        try:
            table = table.select(want.names).cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DeliveryError(f"{entry['file']}: wrong column types: {e}") from None
        if "rows" in entry and entry["rows"] != table.num_rows:
            raise DeliveryError(f"{entry['file']}: {table.num_rows} rows, manifest says "
                                f"{entry['rows']}")
        out[kind] = table
    return out


def _unique(table: pa.Table, column: str, what: str) -> None:
    if pc.count_distinct(table[column]).as_py() != table.num_rows:
        raise DeliveryError(f"{what}: duplicate {column} values")


def _refs(child: pa.Table, col: str, parent: pa.Table, pcol: str, what: str) -> None:
    bad = pc.invert(pc.is_in(child[col], value_set=parent[pcol]))
    if pc.any(bad).as_py():
        example = child.filter(bad)[col][0].as_py()
        raise DeliveryError(f"{what}: {col} {example!r} refers to nothing")


def _check_footprints(plane: pa.Table) -> None:
    """Footprints are optional (calibration files have none) but must be sane if given."""
    plane = plane.filter(pc.is_valid(plane["poly"]))
    if plane.num_rows == 0:
        return
    if plane["s_ra"].null_count or plane["s_dec"].null_count:
        raise DeliveryError("plane: a footprint without s_ra/s_dec")
    lengths = pc.list_value_length(plane["poly"]).to_numpy(zero_copy_only=False)
    bad = (lengths < 6) | (lengths % 2 == 1)
    if bad.any():
        raise DeliveryError(f"plane {plane['planeid'][int(np.argmax(bad))]}: poly needs "
                            ">= 3 (ra, dec) vertices")
    flat = pc.list_flatten(plane["poly"]).to_numpy()
    ra, dec = flat[0::2], flat[1::2]
    if not (np.isfinite(flat).all() and (np.abs(dec) <= 90).all() and
            ((ra >= 0) & (ra < 360)).all()):
        raise DeliveryError("plane poly: coordinates outside RA [0, 360), Dec [-90, 90]")
    polys = sky.Polys.from_arrow(plane["poly"])
    area = sky.spherical_area(polys)
    centre = sky.xyz(plane["s_ra"].to_numpy(), plane["s_dec"].to_numpy())
    inside = sky.points_in_polys(centre, polys)
    for i in np.flatnonzero((area <= 0) | (area > 100) | ~inside)[:1]:
        raise DeliveryError(f"plane {plane['planeid'][int(i)]}: footprint not sane (area "
                            f"{area[i]:.3g} deg2, centre inside: {bool(inside[i])})")


def _check_values(plane: pa.Table) -> None:
    lo, hi = plane["energy_bounds_lower"].to_numpy(), plane["energy_bounds_upper"].to_numpy()
    t0, t1 = plane["time_bounds_lower"].to_numpy(), plane["time_bounds_upper"].to_numpy()
    if not ((lo > 0) & (lo < hi)).all():
        raise DeliveryError("plane: energy bounds must be positive with lower < upper (m)")
    if not (t0 <= t1).all():
        raise DeliveryError("plane: time_bounds_lower after time_bounds_upper")


def check_artifacts_listed(manifest: dict, artifact: pa.Table) -> None:
    listed = {f["key"] for f in manifest["files"]}
    for uri in artifact["uri"].to_pylist():
        if uri not in listed:
            raise DeliveryError(f"artifact {uri} is not in the manifest's files")


def _check_files(folder: Path, manifest: dict, artifact: pa.Table, progress) -> None:
    if manifest.get("metadata_only"):
        return
    check_artifacts_listed(manifest, artifact)
    from astropy.io import fits  # deferred: cold start (astropy)

    for f in progress(manifest["files"], "checking files"):
        path = folder / "data" / f["key"]
        if not path.exists():
            raise DeliveryError(f"file {f['key']} is missing")
        if path.stat().st_size != f["size"] or file_md5(path) != f["md5"]:
            raise DeliveryError(f"file {f['key']}: size or checksum differs from manifest")
        try:
            with fits.open(path, lazy_load_hdus=True) as hdul:
                names = [h.name for h in hdul]
        except OSError as e:
            raise DeliveryError(f"file {f['key']} is not readable FITS: {e}") from None
        if "/level2/" in f["key"] and names[:len(SCIENCE_HDUS)] != SCIENCE_HDUS:
            raise DeliveryError(f"file {f['key']}: HDUs {names}, expected {SCIENCE_HDUS}")


def validate(folder: Path, progress=None) -> tuple[dict, dict[str, pa.Table]]:
    progress = progress or (lambda it, _desc: it)
    manifest = _load_manifest(folder)
    rec = _read_records(folder, manifest)
    validate_records(manifest, rec)
    _check_files(folder, manifest, rec["artifact"], progress)
    return manifest, rec


def validate_records(manifest: dict, rec: dict[str, pa.Table]) -> None:
    """Everything about the rows: keys unique, references resolved, one delivery,
    footprints and values sane (the files are checked apart: locally or in place)."""
    _unique(rec["observation"], "obsid", "observation")
    _unique(rec["plane"], "planeid", "plane")
    _unique(rec["artifact"], "artifactid", "artifact")
    _refs(rec["plane"], "obsid", rec["observation"], "obsid", "plane")
    _refs(rec["artifact"], "planeid", rec["plane"], "planeid", "artifact")
    _refs(rec["provenance"], "planeid", rec["plane"], "planeid", "provenance")
    deliveries = set(rec["observation"]["delivery"].to_pylist())
    if deliveries - {manifest["delivery"]}:
        raise DeliveryError(f"observation rows name deliveries {sorted(deliveries)}, the "
                            f"manifest {manifest['delivery']!r}")
    _check_footprints(rec["plane"])
    _check_values(rec["plane"])


# ---- derived rows ------------------------------------------------------------------------


def _lookup(keys: pa.Array, table: pa.Table, key: str, column: str) -> pa.Array:
    idx = pc.index_in(keys, value_set=table[key])
    return pc.take(table[column], idx)


def obscore_rows(rec: dict[str, pa.Table], archive: Archive, delivery: str,
                 run: str) -> pa.Table:
    """ObsCore rows derived from the CAOM records, ordered by HEALPix of the centre."""
    plane, obs, art = rec["plane"], rec["observation"], rec["artifact"]
    n = plane.num_rows
    coll = _lookup(plane["obsid"], obs, "obsid", "collection")
    uri = _lookup(plane["planeid"], art, "planeid", "uri")
    size = _lookup(plane["planeid"], art, "planeid", "content_length")
    dids = plane["obs_publisher_did"].to_pylist()
    s_rmax, hpx = _footprint_keys(plane)
    cloud = [None] * n
    if archive.is_s3:
        cloud = [json.dumps({"aws": {"bucket_name": archive.bucket,
                                     "key": archive._s3_key("data/" + u),
                                     "region": region()}})
                 for u in uri.to_pylist()]
    cols = {
        "dataproduct_type": plane["dataproduct_type"],
        "calib_level": plane["calib_level"],
        "obs_collection": coll,
        "obs_id": _lookup(plane["obsid"], obs, "obsid", "obs_id"),
        "obs_publisher_did": plane["obs_publisher_did"],
        "access_url": pa.array([f"/datalink/links?ID={quote(d, safe='')}" for d in dids]),
        "access_format": pa.array([DATALINK_FORMAT] * n),
        "access_estsize": pc.divide(size, 1000),
        "target_name": _lookup(plane["obsid"], obs, "obsid", "target_name"),
        "s_ra": plane["s_ra"], "s_dec": plane["s_dec"],
        "s_fov": pc.multiply(s_rmax, 2.0),
        "s_region": plane["poly"],
        "s_resolution": plane["psf_fwhm"],
        "s_xel1": plane["s_xel1"], "s_xel2": plane["s_xel2"],
        "t_min": plane["time_bounds_lower"], "t_max": plane["time_bounds_upper"],
        "t_exptime": plane["time_exposure"], "t_resolution": plane["time_exposure"],
        "t_xel": pa.array([1] * n),
        "em_min": plane["energy_bounds_lower"], "em_max": plane["energy_bounds_upper"],
        "em_res_power": plane["energy_resolving_power"], "em_xel": plane["em_xel"],
        "o_ucd": pa.array(["phot.flux.density.sb"] * n),
        "pol_states": pa.nulls(n, pa.string()), "pol_xel": pa.nulls(n, pa.int64()),
        "facility_name": pa.array(["SPHEREx"] * n),
        "instrument_name": _lookup(plane["obsid"], obs, "obsid", "instrument_name"),
        "dataproduct_subtype": plane["dataproduct_subtype"],
        "obs_title": pc.binary_join_element_wise(
            "SPHEREx ", coll, " ", plane["obsid"].cast(pa.string()), " ",
            plane["energy_bandpassname"], ""),
        "obs_creator_did": pa.nulls(n, pa.string()),
        "obs_release_date": plane["release_date"],
        "s_pixel_scale": plane["s_pixel_scale"],
        "energy_bandpassname": plane["energy_bandpassname"],
        "cloud_access": pa.array(cloud, pa.string()),
        "delivery": pa.array([delivery] * n),
        "hpx": hpx,
        "s_rmax": s_rmax,
        schema.PACKED_REGION: sky.pack(plane["poly"]),
        "ingest_id": pa.array([run] * n),
    }
    table = pa.table(cols).cast(schema.PHYSICAL["ivoa.obscore"].arrow_schema())
    return table.sort_by("hpx")


def _footprint_keys(plane: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Per row: the largest centre-to-vertex angle and the HEALPix sort key (null where
    a product has no footprint, e.g. calibration files)."""
    n = plane.num_rows
    has = pc.is_valid(plane["poly"]).to_numpy(zero_copy_only=False)
    s_rmax, hpx = np.zeros(n), np.zeros(n, np.int64)
    if has.any():
        sub = plane.filter(pa.array(has))
        polys = sky.Polys.from_arrow(sub["poly"])
        ra, dec = sub["s_ra"].to_numpy(), sub["s_dec"].to_numpy()
        rmax = polys.per_polygon(np.maximum, sky.distance(
            ra[polys.row], dec[polys.row], *sky.radec(polys.v)), 0.0)
        s_rmax[has], hpx[has] = rmax, sky.healpix(ra, dec)
    return pa.array(s_rmax, mask=~has), pa.array(hpx, mask=~has)


def caom_rows(rec: dict[str, pa.Table], delivery: str, run: str) -> dict[str, pa.Table]:
    """The CAOM tables with the ingest columns (collection, delivery, run) added."""
    obs = rec["observation"]
    out = {"spherex.observation": obs.append_column("ingest_id", pa.array([run] * len(obs)))}
    for kind in ("plane", "artifact", "provenance"):
        t = rec[kind]
        coll = (_lookup(t["obsid"], obs, "obsid", "collection") if kind == "plane" else
                _lookup(_lookup(t["planeid"], rec["plane"], "planeid", "obsid"), obs,
                        "obsid", "collection"))
        n = t.num_rows
        t = t.append_column("collection", coll).append_column(
            "delivery", pa.array([delivery] * n, pa.string())).append_column(
            "ingest_id", pa.array([run] * n, pa.string()))
        if kind == "plane":
            t = t.sort_by("s_dec")
        out[f"spherex.{kind}"] = t
    return {name: t.cast(schema.PHYSICAL[name].arrow_schema()) for name, t in out.items()}


# ---- writing ----------------------------------------------------------------------------


# file statistics on every column (Delta's default stops at 32): the pruning needs the
# late ones too, e.g. s_rmax, the widest footprint, read from the log at open time
# and a checkpoint every 10 commits, so opening a table replays at most 10 JSON commits
# however many weeks the archive holds
TABLE_CONFIG = {"delta.dataSkippingNumIndexedCols": "-1", "delta.checkpointInterval": "10"}


ROW_GROUP_ROWS = 4096


def append(archive: Archive, name: str, rows: pa.Table, delivery: str, run: str,
           dt: DeltaTable | None = None) -> None:
    """Append rows in one Delta commit (to an already opened table when given: opening
    replays the log, so an ingest opens each table once)."""
    t = schema.PHYSICAL[name]
    dt = dt if dt is not None else open_table(archive, name)
    write_deltalake(
        dt if dt is not None else table_uri(archive, name), rows, mode="append",
        partition_by=list(t.partition_by),
        storage_options=archive.storage_options, target_file_size=128 << 20,
        configuration=TABLE_CONFIG if dt is None else None,
        # small row groups over HEALPix-ordered rows: each covers a compact patch of sky,
        # so Parquet statistics skip most of a file for a cone query
        writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS),
        commit_properties=CommitProperties(custom_metadata={"delivery": delivery,
                                                            "ingest_id": run}))


def current_versions(archive: Archive, opened: dict | None = None) -> dict[str, int]:
    """Latest version of every table; tables already opened are moved forward
    incrementally (only the commits since) instead of reopened."""
    out = {}
    for name in schema.PHYSICAL:
        dt = (opened or {}).get(name)
        if dt is None:
            dt = open_table(archive, name)
        else:
            dt.update_incremental()
        if dt is not None:
            out[name] = dt.version()
    return out


def _progress(enabled: bool):
    def wrap(items, desc):
        if not enabled:
            return items
        return tqdm(items, desc=desc, unit="file", file=sys.stderr,
                    disable=not sys.stderr.isatty())
    return wrap


def ingest(folder: str | Path, archive: Archive, progress: bool = False) -> Summary:
    """Ingest one delivery folder; a delivery already released is left as it is."""
    folder = Path(folder)
    bar = _progress(progress)
    t0 = time.perf_counter()
    manifest, rec = validate(folder, bar)
    delivery = manifest["delivery"]
    latest = releases.load(archive)
    if delivery in latest.runs:
        return Summary(delivery, latest.number, skipped=True)
    summary = Summary(delivery, 0, seconds={"validate": time.perf_counter() - t0})
    run = uuid.uuid4().hex[:12]

    t0 = time.perf_counter()
    for f in bar(manifest["files"], "storing files"):
        archive.put_file(folder / "data" / f["key"], "data/" + f["key"])
        summary.files += 1
        summary.bytes += f["size"]
    summary.seconds["files"] = time.perf_counter() - t0

    return commit_rows(archive, rec, delivery, run, summary)


def commit_rows(archive: Archive, rec: dict[str, pa.Table], delivery: str, run: str,
                summary: Summary) -> Summary:
    """Append the delivery's rows, write its MOC pieces and commit the release (the
    files are stored already): the one step that makes a delivery visible."""
    t0 = time.perf_counter()
    tables = caom_rows(rec, delivery, run)
    tables["ivoa.obscore"] = obscore_rows(rec, archive, delivery, run)
    opened = {name: open_table(archive, name) for name in tables}
    for name, rows in tables.items():
        append(archive, name, rows, delivery, run, opened[name])
        summary.rows[name] = rows.num_rows
    summary.seconds["tables"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    oc = tables["ivoa.obscore"]
    for coll in pc.unique(oc["obs_collection"]).to_pylist():
        sel = oc.filter(pc.equal(oc["obs_collection"], coll))["s_region"].drop_null()
        if len(sel):  # calibration files have no footprint, hence no coverage
            coverage.write_piece(archive, coll, delivery, run, sel.to_pylist())
    summary.seconds["moc"] = time.perf_counter() - t0

    t0 = time.perf_counter()

    def add_run(latest: releases.Release) -> releases.Release | None:
        if delivery in latest.runs:  # a concurrent run of the same delivery won
            return None
        return releases.Release(0, {**latest.runs, delivery: run},
                                current_versions(archive, opened))

    rel = releases.commit(archive, add_run)
    summary.release = rel.number
    summary.skipped = rel.runs.get(delivery) != run
    summary.seconds["commit"] = time.perf_counter() - t0
    return summary
