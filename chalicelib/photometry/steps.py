"""Spectrophotometry in three steps: plan (which images cover which source), measure (a
batch of (source, image) pairs) and assemble (the result tables and plots).

The same functions serve the local runner (service.py, everything in memory) and the Step
Functions state machine (plan/measure/assemble below take the Lambda event; intermediate
data lives under results/spectrophotometry/<job>/ because a state's payload is limited to
256 KB).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .. import dali
from ..geometry.sqlfunctions import sql_in
from ..jobs import runtime as jobs
from ..jobs.uws import UWSUsageError
from ..jobs.uws.executor import JobAborted, RunContext, complete_job
from ..lake.storage import Archive
from ..query import runtime
from ..query.catalogue import Catalogue
from ..query.uploads import UploadRequest, UploadUsageError, load_uploads
from ..render import votable
from ..render.descriptors import array_descriptors
from . import engine

SERVICE = "spectrophotometry"
MAX_SOURCES = 1000
MAX_IMAGES_PER_JOB = 5000
UPLOAD_LIMIT = 10_000_000  # bytes of uploaded source tables
BATCH_SIZE = 8  # images per measure invocation (~8 s on Lambda)
# Larger plans go to the archive and batches only name them: the execution state (plan,
# then every batch's summary or error, then assemble's input) must stay under 256 KB.
INLINE_PLAN_BYTES = 64_000
MEASURE_THREADS = 8  # range reads wait on S3: overlap them within a batch


# ---------------------------------------------------------------- parameters


@dataclass
class Request:
    sources: list[dict]  # source_id, ra, dec
    half: int | None = engine.DEFAULT_HALF  # BKG_REGION_SIZE; None: follows the PSF
    time: tuple[float, float] | None = None  # MJD
    band: tuple[float, float] | None = None  # m
    collections: list[str] = field(default_factory=list)
    max_images: int | None = None  # per source


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = [v for v in params.get(name, []) if v.strip()]
    if len(values) > 1:
        raise UWSUsageError(f"{name.upper()} may be given once")
    return values[0].strip() if values else None


def _floats(text: str, name: str, n: int) -> list[float]:
    vals = dali.numbers(text, name, allow_inf=True, error=UWSUsageError)
    if len(vals) != n:
        raise UWSUsageError(f"{name}: {text!r} is not {n} numbers")
    return vals


def _interval(params: dict[str, list[str]], name: str) -> tuple[float, float] | None:
    text = _one(params, name)
    if text is None:
        return None
    lo, hi = _floats(text, name.upper(), 2)
    if lo > hi:
        raise UWSUsageError(f"{name.upper()}: lower bound above upper bound")
    return lo, hi


def _int(params: dict[str, list[str]], name: str, lo: int, hi: int) -> int | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UWSUsageError(f"{name.upper()}: {text!r} is not an integer") from None
    if not lo <= value <= hi:
        raise UWSUsageError(f"{name.upper()} must be between {lo} and {hi}")
    return value


def _source(source_id: int, ra: float, dec: float, what: str) -> dict:
    if not (-90 <= dec <= 90 and math.isfinite(ra)):
        raise UWSUsageError(f"{what}: ({ra}, {dec}) is not a sky position (deg)")
    return {"source_id": source_id, "ra": ra % 360.0, "dec": dec}


def _column(table: pa.Table, names: tuple[str, ...]) -> pa.ChunkedArray | None:
    found = next((n for n in table.column_names if n.lower() in names), None)
    return table.column(found) if found else None


def _uploaded(params: dict[str, list[str]], first_id: int) -> list[dict]:
    """Sources of UPLOAD=name,uri VOTables (columns ra, dec in deg; source_id optional)."""
    if not params.get("upload"):
        return []
    try:
        tables, _ = load_uploads(UploadRequest(params["upload"]), UPLOAD_LIMIT)
    except UploadUsageError as e:
        raise UWSUsageError(str(e)) from None
    out: list[dict] = []
    for name, table in tables.items():
        if table.num_rows > MAX_SOURCES:
            raise UWSUsageError(f"upload {name}: {table.num_rows} sources; the limit per "
                                f"job is {MAX_SOURCES}")
        ra, dec = _column(table, ("ra", "ra_deg")), _column(table, ("dec", "dec_deg"))
        if ra is None or dec is None:
            raise UWSUsageError(f"upload {name}: needs columns ra and dec (deg)")
        ids_col = _column(table, ("source_id", "id"))
        start = first_id + len(out)
        ids = (ids_col.to_pylist() if ids_col is not None and pa.types.is_integer(ids_col.type)
               else list(range(start, start + table.num_rows)))  # numbered after the POINTs
        for i, r, d in zip(ids, ra.to_pylist(), dec.to_pylist()):
            if r is None or d is None or i is None:
                raise UWSUsageError(f"upload {name}: empty ra, dec or source_id")
            out.append(_source(int(i), float(r), float(d), f"upload {name}"))
    return out


def parse(params: dict[str, list[str]]) -> Request:
    """The job parameters (lower-case names) as a Request; UWSUsageError when invalid."""
    params = {k.lower(): [v] if isinstance(v, str) else list(v) for k, v in params.items()}
    points = [v for v in params.get("point", []) if v.strip()]
    if len(points) > MAX_SOURCES:
        raise UWSUsageError(f"{len(points)} sources given; the limit per job is {MAX_SOURCES}")
    sources = []
    for i, text in enumerate(points, 1):
        ra, dec = _floats(text, "POINT", 2)
        sources.append(_source(i, ra, dec, f"POINT {text!r}"))
    sources += _uploaded(params, len(sources) + 1)
    if not sources:
        raise UWSUsageError("POINT=ra,dec (deg, once per source) or UPLOAD is required")
    if len(sources) > MAX_SOURCES:
        raise UWSUsageError(f"{len(sources)} sources given; the limit per job is {MAX_SOURCES}")
    if len({s["source_id"] for s in sources}) != len(sources):
        raise UWSUsageError("source_id values must be unique (POINTs are numbered 1, 2, ...)")
    half = _int(params, "bkg_region_size", engine.MIN_HALF, engine.MAX_HALF)
    return Request(
        sources, engine.DEFAULT_HALF if half is None else half, _interval(params, "time"),
        _interval(params, "band"), [v.strip() for v in params.get("collection", []) if v.strip()],
        _int(params, "max_images", 1, MAX_IMAGES_PER_JOB))


# ---------------------------------------------------------------- plan


def _image_sql(cat: Catalogue, req: Request) -> str:
    """Every (source, image) pair with the source inside the footprint, in one query over
    the uploaded sources: a Dec-band range join plus a cone test on the footprint centres
    (native, vectorised) leave few pairs for the exact point-in-polygon test."""
    r = cat.current().max_footprint_radius + 1e-6
    cos_r = math.cos(math.radians(min(r, 180.0)))
    where = ["o.dataproduct_type = 'image'", "a.product_type = 'science'",
             "sky_pt_in_poly(s.ra, s.dec, o.s_region)"]
    if req.time:
        where.append(f"o.t_max >= {req.time[0]!r} AND o.t_min <= {req.time[1]!r}")
    if req.band:
        where.append(f"o.em_max >= {req.band[0]!r} AND o.em_min <= {req.band[1]!r}")
    if req.collections:
        where.append(f"o.obs_collection IN ({sql_in(req.collections)})")
    return ("SELECT s.i, o.obs_publisher_did AS did, o.obs_collection AS collection, a.uri "
            "FROM _upload_src AS s JOIN ivoa.obscore AS o "
            f"ON o.s_dec BETWEEN s.dec - {r!r} AND s.dec + {r!r} "
            "AND sin(radians(o.s_dec)) * sin(radians(s.dec)) + cos(radians(o.s_dec)) "
            f"* cos(radians(s.dec)) * cos(radians(o.s_ra - s.ra)) >= {cos_r!r} "
            "JOIN spherex.plane AS p ON p.obs_publisher_did = o.obs_publisher_did "
            "JOIN spherex.artifact AS a ON a.planeid = p.planeid "
            f"WHERE {' AND '.join(where)} ORDER BY s.i, o.t_min, o.obs_publisher_did")


def plan_items(cat: Catalogue, req: Request) -> tuple[list[list], dict[str, Any]]:
    """Every (source index, file key, did, collection) to measure, and notes (images cut by
    MAX_IMAGES); more than MAX_IMAGES_PER_JOB images is an error, never a truncation."""
    src = pa.table({"i": pa.array(range(len(req.sources)), pa.int64()),
                    "ra": pa.array([s["ra"] for s in req.sources], pa.float64()),
                    "dec": pa.array([s["dec"] for s in req.sources], pa.float64())})
    found: list[list[dict]] = [[] for _ in req.sources]
    for row in cat.query(_image_sql(cat, req), uploads={"src": src}).to_pylist():
        found[row["i"]].append(row)
    items: list[list] = []
    cut: dict[str, int] = {}
    for i, rows in enumerate(found):
        if req.max_images is not None and len(rows) > req.max_images:
            cut[str(req.sources[i]["source_id"])] = len(rows) - req.max_images
            rows = rows[: req.max_images]
        items += [[i, "data/" + r["uri"], r["did"], r["collection"]] for r in rows]
    if len(items) > MAX_IMAGES_PER_JOB:
        raise UWSUsageError(f"{len(items)} source-image pairs; the limit per job is "
                            f"{MAX_IMAGES_PER_JOB} (narrow TIME, BAND or COLLECTION, set "
                            "MAX_IMAGES or split the sources)")
    return items, {"skipped_by_max_images": cut}


def batches_of(items: list, size: int = BATCH_SIZE) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- measure


def measure_items(archive: Archive, sources: list[dict], items: list[list], half: int | None,
                  threads: int = MEASURE_THREADS) -> list[dict]:
    """Measurements of (source index, key, did, collection) items, in order."""
    def one(item: list) -> dict:
        src = sources[item[0]]
        m = engine.measure(archive, item[1], src["ra"], src["dec"], half)
        return {"source": item[0], "key": item[1], "did": item[2], "collection": item[3],
                **m.to_dict()}

    if threads <= 1 or len(items) <= 1:
        return [one(it) for it in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(one, items))


def failed_items(items: list[list], error: str) -> list[dict]:
    """Flagged rows for a batch that could not be measured at all."""
    return [{"source": it[0], "key": it[1], "did": it[2], "collection": it[3],
             **engine.Measurement(flags=engine.FLAG_BATCH_FAILED, error=error[:300]).to_dict()}
            for it in items]


# ---------------------------------------------------------------- assemble

_FLOATS = [  # (name, measurement key, unit, ucd, description)
    ("lambda", "lam", "um", "em.wl;obs.atmos", "central wavelength at the source (WCS 'W')"),
    ("lambda_width", "lam_width", "um", "instr.bandwidth", "bandwidth at the source"),
    ("flux", "flux", "uJy", "phot.flux.density", "PSF-fit flux density"),
    ("flux_err", "flux_err", "uJy", "stat.error;phot.flux.density",
     "1-sigma error of flux: the joint fit's marginal error (background terms included), "
     "scaled by sqrt(reduced chi2) where the model does not fit (see flags BAD_FIT)"),
    ("mjd", "mjd", "d", "time.epoch", "MJD-AVG of the exposure"),
    ("flux_bkg", "flux_bkg", "MJy/sr", "phot.flux.sb;instr.background",
     "local background at the source"),
    ("x_image", "x_image", "pix", "pos.cartesian.x;instr.det", "0-based image x of the source"),
    ("y_image", "y_image", "pix", "pos.cartesian.y;instr.det", "0-based image y of the source"),
    ("chi2", "chi2", None, "stat.fit.chi2", "chi-square of the PSF + background fit"),
]
_INTS = [  # (name, measurement key, ucd, description)
    ("n_pix", "n_pix", "meta.number", "pixels in the fit"),
    ("n_par", "n_par", "meta.number", "fitted parameters (flux + background terms); "
     "reduced chi2 = chi2 / (n_pix - n_par)"),
]
CIRCLE_RADIUS_DEG = 0.01  # cutout radius for a source without measurements
_FLAGS_DOC = ("OR of FLAGS under the PSF core (bits 0-31, as in the images); measurement "
              "bits: " + ", ".join(f"{k}={int(math.log2(v))}"
                                   for k, v in engine.MEASUREMENT_FLAGS.items()))


def _fields(array: bool) -> list[votable.Field]:
    size = "*" if array else None
    out = [votable.Field("source_id", "long", ucd="meta.id;meta.main"),
           votable.Field("ra", "double", unit="deg", ucd="pos.eq.ra;meta.main"),
           votable.Field("dec", "double", unit="deg", ucd="pos.eq.dec;meta.main")]
    out += [votable.Field(n, "double", size, unit=u, ucd=ucd, description=d)
            for n, _, u, ucd, d in _FLOATS]
    out += [votable.Field(n, "int", size, ucd=ucd, description=d) for n, _, ucd, d in _INTS]
    out.append(votable.Field("flags", "long", size, ucd="meta.code.qual",
                             description=_FLAGS_DOC))
    sep = " (space-separated, one per exposure)" if array else ""
    out += [votable.Field("data_collection", "char", "*", ucd="meta.id;meta.dataset",
                          description="obs_collection of the image" + sep),
            votable.Field("obs_publisher_did", "char", "*", ucd="meta.ref.ivoid",
                          description="publisher DID of the image" + sep,
                          id="obs_publisher_did"),
            votable.Field("cutout_circle", "double", "3", xtype="circle", unit="deg",
                          ucd="pos.outline;obs.field", id="cutout_circle",
                          description="the source and the largest photometry stamp "
                          "radius: the CIRCLE of the cutout service descriptors")]
    return out


def _descriptors(base: str, array: bool) -> list[str]:
    per_row = ("every input image's DID, space-separated (an array: one element per "
               "exposure, in the order of the other arrays)" if array else
               "the DID of the image of this measurement")
    return array_descriptors(base, "obs_publisher_did", "cutout_circle", per_row)


def _circle(source: dict, group: list[dict]) -> list[float]:
    radii = [r.get("stamp_radius", math.nan) for r in group]
    radii = [r for r in radii if r is not None and math.isfinite(r)]
    return [source["ra"], source["dec"], max(radii) if radii else CIRCLE_RADIUS_DEG]


def _sorted_rows(sources: list[dict], rows: list[dict]) -> list[list[dict]]:
    """Measurements per source, by wavelength (off-image epochs dropped)."""
    per: list[list[dict]] = [[] for _ in sources]
    for r in rows:
        if not r["flags"] & engine.FLAG_OFF_IMAGE:
            per[r["source"]].append(r)
    for group in per:
        group.sort(key=lambda r: (math.isnan(r["lam"]), r["lam"], r["mjd"]))
    return per


def long_table(sources: list[dict], per: list[list[dict]]) -> pa.Table:
    flat = [(sources[i], r) for i, group in enumerate(per) for r in group]
    cols: dict[str, pa.Array] = {
        "source_id": pa.array([s["source_id"] for s, _ in flat], pa.int64()),
        "ra": pa.array([s["ra"] for s, _ in flat], pa.float64()),
        "dec": pa.array([s["dec"] for s, _ in flat], pa.float64()),
    }
    for name, key, *_ in _FLOATS:
        cols[name] = pa.array([r[key] for _, r in flat], pa.float64())
    for name, key, *_ in _INTS:
        cols[name] = pa.array([r.get(key, 0) for _, r in flat], pa.int32())
    cols["flags"] = pa.array([r["flags"] for _, r in flat], pa.int64())
    cols["data_collection"] = pa.array([r["collection"] for _, r in flat], pa.string())
    cols["obs_publisher_did"] = pa.array([r["did"] for _, r in flat], pa.string())
    circles = [_circle(s, g) for s, g in zip(sources, per)]
    cols["cutout_circle"] = pa.array([circles[i] for i, g in enumerate(per) for _ in g],
                                     pa.list_(pa.float64(), 3))
    return pa.table(cols)


def source_table(sources: list[dict], per: list[list[dict]]) -> pa.Table:
    """One row per source; per-exposure values as arrays (strings space-joined)."""
    cols: dict[str, pa.Array] = {
        "source_id": pa.array([s["source_id"] for s in sources], pa.int64()),
        "ra": pa.array([s["ra"] for s in sources], pa.float64()),
        "dec": pa.array([s["dec"] for s in sources], pa.float64()),
    }
    for name, key, *_ in _FLOATS:
        cols[name] = pa.array([[r[key] for r in g] for g in per], pa.list_(pa.float64()))
    for name, key, *_ in _INTS:
        cols[name] = pa.array([[r.get(key, 0) for r in g] for g in per], pa.list_(pa.int32()))
    cols["flags"] = pa.array([[r["flags"] for r in g] for g in per], pa.list_(pa.int64()))
    cols["data_collection"] = pa.array([" ".join(r["collection"] for r in g) for g in per])
    cols["obs_publisher_did"] = pa.array([" ".join(r["did"] for r in g) for g in per])
    cols["cutout_circle"] = pa.array([_circle(s, g) for s, g in zip(sources, per)],
                                     pa.list_(pa.float64(), 3))
    return pa.table(cols)


def plot_png(source: dict, group: list[dict]) -> bytes:
    """The measured spectrum of one source (clean points filled, flagged ones open)."""
    import matplotlib  # deferred: cold start (matplotlib)

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # deferred: cold start (matplotlib)

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    lam = np.array([r["lam"] for r in group], float)
    flux = np.array([r["flux"] for r in group], float)
    err = np.array([r["flux_err"] for r in group], float)
    bad = np.array([bool(r["flags"] & engine.SERIOUS_FLAGS) for r in group], bool)
    for mask, style in ((~bad, "o"), (bad, "s")):
        if mask.any():
            ax.errorbar(lam[mask], flux[mask], err[mask], fmt=style, ms=4,
                        mfc="none" if style == "s" else None,
                        label="flagged" if style == "s" else "clean")
    ax.set_xlabel("wavelength (um)")
    ax.set_ylabel("flux density (uJy)")
    ax.set_title(f"source {source['source_id']}: RA {source['ra']:.5f} Dec {source['dec']:.5f}")
    if len(group):
        ax.legend(loc="best", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def assemble_results(sources: list[dict], rows: list[dict], notes: dict[str, Any],
                     add: Callable[[str, bytes, str], Any], plots: bool = True,
                     base: str | None = None) -> dict:
    """Write result, long, long-parquet and plot-<source_id>; returns a summary. The
    VOTables carry DataLink service descriptors (cutouts of every input image around the
    source, DataLink of the images) with accessURLs under base (default: the public URL)."""
    base = jobs.job_base(base)
    per = _sorted_rows(sources, rows)
    infos = [("n_sources", str(len(sources)), None),
             ("n_measurements", str(sum(map(len, per))), None)]
    cut = notes.get("skipped_by_max_images") or {}
    if cut:
        infos.append(("skipped_by_max_images", str(sum(cut.values())),
                      "images not measured because of MAX_IMAGES, per source_id: "
                      + json.dumps(cut)))
    errors = list(dict.fromkeys(f"{r['did']}: {r['error']}" for g in per for r in g
                                if r["error"]))
    if errors:  # why flagged epochs have no flux (first few)
        infos.append(("measurement_errors", str(len(errors)), "\n".join(errors[:20])))
    body, mime = votable.write(source_table(sources, per), _fields(True), "votable",
                               infos=infos, resources_after=_descriptors(base, True))
    add("result", body, mime)
    table = long_table(sources, per)
    body, mime = votable.write(table, _fields(False), "votable", infos=infos,
                               resources_after=_descriptors(base, False))
    add("long", body, mime)
    body, mime = votable.write(table, _fields(False), "parquet")
    add("long-parquet", body, mime)
    if plots:
        for src, group in zip(sources, per):
            add(f"plot-{src['source_id']}", plot_png(src, group), "image/png")
    n_bad = sum(1 for g in per for r in g if not math.isfinite(r["flux"]))
    return {"sources": len(sources), "measurements": sum(map(len, per)), "failed": n_bad}


# ---------------------------------------------------------------- Step Functions steps


def _job_prefix(job_id: str) -> str:
    return f"results/{SERVICE}/{job_id}/_work"


def plan(event: dict[str, Any]) -> dict[str, Any]:
    """Execution input {job_id, service, parameters} -> {"batches": [...], ...}; the
    sources and (when large) the items are stored in the archive."""
    arch = runtime.archive()
    req = parse(event.get("parameters") or {})
    items, notes = plan_items(runtime.catalogue(jobs.job_base(event.get("base_url"))), req)
    batches = batches_of(items)
    state = {"sources": req.sources, "half": req.half, "notes": notes, "batches": batches}
    arch.write_bytes(f"{_job_prefix(event['job_id'])}/plan.json", json.dumps(state).encode())
    inline = len(json.dumps(batches)) <= INLINE_PLAN_BYTES
    return {"batches": batches if inline else [{"ref": i} for i in range(len(batches))],
            "n_items": len(items), "n_sources": len(req.sources)}


def _load_plan(job_id: str) -> dict[str, Any]:
    return json.loads(runtime.archive().read_bytes(f"{_job_prefix(job_id)}/plan.json"))


def _batch_items(batch: Any, state: dict[str, Any]) -> list[list]:
    if isinstance(batch, dict) and "ref" in batch:
        return state["batches"][int(batch["ref"])]
    return batch


def measure(event: dict[str, Any]) -> dict[str, Any]:
    """One batch -> its measurements stored in the archive; returns a small summary."""
    state = _load_plan(event["job_id"])
    items = _batch_items(event["batch"], state)
    half = state.get("half")
    rows = measure_items(runtime.archive(), state["sources"], items,
                         None if half is None else int(half))
    key = f"{_job_prefix(event['job_id'])}/batch-{int(event['index']):05d}.json"
    runtime.archive().write_bytes(key, json.dumps(rows).encode())
    return {"index": int(event["index"]), "key": key, "n": len(rows)}


def assemble(event: dict[str, Any]) -> dict[str, Any]:
    """Gather every batch (failed ones as flagged rows), write the results, complete the job."""
    arch = runtime.archive()
    state = _load_plan(event["job_id"])
    rows: list[dict] = []
    for entry in event.get("measurements") or []:
        if entry.get("failed"):
            err = entry.get("error") or {}
            msg = f"{err.get('Error', 'error')}: {err.get('Cause', '')}"
            rows += failed_items(_batch_items(entry.get("batch"), state), msg)
        else:
            rows += json.loads(arch.read_bytes(entry["key"]))
    store = jobs.store()
    job = store.get(event["job_id"])
    if job is None:
        return {"job_id": event["job_id"], "completed": False}
    ctx = RunContext(store, job, result_sink=jobs.result_sink)
    try:
        summary = assemble_results(state["sources"], rows, state["notes"], ctx.add_result,
                                   base=job.base_url)
        ctx.set_progress(1.0, f"{summary['measurements']} measurements", **summary)
    except JobAborted:  # ABORTed or timed out meanwhile: leave the job as it is
        return {"job_id": event["job_id"], "completed": False}
    return {"job_id": event["job_id"], "completed": complete_job(store, event["job_id"]),
            **summary}
