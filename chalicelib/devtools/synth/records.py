"""CAOM-shaped delivery records (observation, plane, artifact, provenance), the manifest and
the truth table. Column names and Arrow types are the contract the ingest relies on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...lake.storage import file_md5
from . import calibration, optics
from .calibration import CalFile
from .sources import WAVE_KNOTS_UM, Truth
from .survey import DEEP, L2B_VERSION, PIPELINE_VERSION, TELAPSE_S, WIDE, XPOSURE_S, WeekPlan

S, F64, I16, I32, I64 = pa.string(), pa.float64(), pa.int16(), pa.int32(), pa.int64()

OBSERVATION = pa.schema(
    [
        ("obsid", S),
        ("collection", S),
        ("obs_id", S),
        ("detector", I16),
        ("intent", S),
        ("obs_type", S),
        ("target_name", S),
        ("telescope_name", S),
        ("instrument_name", S),
        ("planning_period", S),
        ("delivery", S),
    ]
)
PLANE = pa.schema(
    [
        ("planeid", S),
        ("obsid", S),
        ("product_id", S),
        ("obs_publisher_did", S),
        ("calib_level", I16),
        ("dataproduct_type", S),
        ("dataproduct_subtype", S),
        ("energy_bandpassname", S),
        ("energy_bounds_lower", F64),
        ("energy_bounds_upper", F64),
        ("energy_resolving_power", F64),
        ("time_bounds_lower", F64),
        ("time_bounds_upper", F64),
        ("time_exposure", F64),
        ("poly", pa.list_(F64)),
        ("s_ra", F64),
        ("s_dec", F64),
        ("s_pixel_scale", F64),
        ("s_xel1", I32),
        ("s_xel2", I32),
        ("em_xel", I32),
        ("release_date", S),
        ("pipeline_version", S),
        ("psf_fwhm", F64),
    ]
)
ARTIFACT = pa.schema(
    [
        ("artifactid", S),
        ("planeid", S),
        ("uri", S),
        ("product_type", S),
        ("content_type", S),
        ("content_length", I64),
        ("content_checksum", S),
    ]
)
PROVENANCE = pa.schema([("planeid", S), ("input_planeid", S), ("input_uri", S), ("product", S)])
TRUTH = pa.schema(
    [
        ("source_id", I64),
        ("ra", F64),
        ("dec", F64),
        ("wavelength_um", pa.list_(F64)),
        ("flux_ujy", pa.list_(F64)),
    ]
)
TABLES = {
    "observation": OBSERVATION,
    "plane": PLANE,
    "artifact": ARTIFACT,
    "provenance": PROVENANCE,
}


@dataclass
class ScienceImages:
    """The week's science images, exposure-major then detector 1..6 (n_img = 6 n_exp)."""

    plan: WeekPlan
    n: int  # image size

    @property
    def exp(self) -> np.ndarray:
        return np.repeat(np.arange(self.plan.n_exp), 6)

    @property
    def det(self) -> np.ndarray:
        return np.tile(np.arange(1, 7), self.plan.n_exp)

    @property
    def collection(self) -> list[str]:
        return [DEEP if d else WIDE for d in self.plan.deep[self.exp].tolist()]

    @property
    def obs_id(self) -> list[str]:
        ids = self.plan.obs_id
        return [ids[e] for e in self.exp.tolist()]

    @property
    def obsid(self) -> list[str]:
        return [f"{c}/{o}/D{d}" for c, o, d in zip(self.collection, self.obs_id, self.det.tolist())]

    @property
    def keys(self) -> list[str]:
        w, tag = self.plan.week.name, self.plan.week.processing_tag
        ver = f"l2b-v{L2B_VERSION}-{tag}"
        return [
            f"qr2/level2/{w}/{ver}/{d}/level2_{o}D{d}_spx_{ver}.fits"
            for o, d in zip(self.obs_id, self.det.tolist())
        ]

    def centre(self) -> np.ndarray:
        """(n_img, 2) CRVAL = field centre of each image."""
        return self.plan.centres[self.exp, (self.det - 1) % 3]

    def poly(self) -> np.ndarray:
        """(n_img, 8) footprints: D1/D4 etc. share their array position's corners."""
        return self.plan.footprints(self.n)[self.exp, (self.det - 1) % 3]


def _bands(det: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.array([optics.BANDS[d] for d in range(1, 7)])
    return b[det - 1, 0] * 1e-6, b[det - 1, 1] * 1e-6, b[det - 1, 2]


def _list_array(values: np.ndarray) -> pa.Array:
    """(rows, k) float array -> list<float64> without Python objects."""
    rows, k = values.shape
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32)), pa.array(values.ravel(), type=F64)
    )


def science_tables(imgs: ScienceImages, sizes: np.ndarray, md5s: list[str]) -> dict[str, pa.Table]:
    plan, n = imgs.plan, imgs.n
    det, obsid, keys, coll = imgs.det, imgs.obsid, imgs.keys, imgs.collection
    k = len(det)
    week = plan.week
    planeid = [f"{o}/l2b" for o in obsid]
    lo, hi, res = _bands(det)
    beg = plan.mjd_beg[imgs.exp]
    centre = imgs.centre()
    fwhm = np.array([optics.psf_fwhm_arcsec(d, n) for d in range(1, 7)])[det - 1]
    const = lambda v: [v] * k  # noqa: E731 - constant column
    obs = {
        "obsid": obsid,
        "collection": coll,
        "obs_id": imgs.obs_id,
        "detector": det.astype(np.int16),
        "intent": const("science"),
        "obs_type": const("science"),
        "target_name": const(None),
        "telescope_name": const("SPHEREx"),
        "instrument_name": const("SPHEREx"),
        "planning_period": const(week.name),
        "delivery": const(week.name),
    }
    plane = {
        "planeid": planeid,
        "obsid": obsid,
        "product_id": const("l2b"),
        "obs_publisher_did": [
            f"ivo://irsa.ipac/{c}?{o}/D{d}" for c, o, d in zip(coll, imgs.obs_id, det.tolist())
        ],
        "calib_level": np.full(k, 2, np.int16),
        "dataproduct_type": const("image"),
        "dataproduct_subtype": const("spherex.level2"),
        "energy_bandpassname": [f"SPHEREx-D{d}" for d in det.tolist()],
        "energy_bounds_lower": lo,
        "energy_bounds_upper": hi,
        "energy_resolving_power": res,
        "time_bounds_lower": beg,
        "time_bounds_upper": beg + TELAPSE_S / 86400,
        "time_exposure": np.full(k, XPOSURE_S),
        "poly": _list_array(imgs.poly()),
        "s_ra": centre[:, 0],
        "s_dec": centre[:, 1],
        "s_pixel_scale": np.full(k, optics.pixel_scale_deg(n) * 3600),
        "s_xel1": np.full(k, n, np.int32),
        "s_xel2": np.full(k, n, np.int32),
        "em_xel": np.full(k, optics.N_CHANNELS, np.int32),
        "release_date": const(week.release_date),
        "pipeline_version": const(PIPELINE_VERSION),
        "psf_fwhm": fwhm,
    }
    art = _artifacts(planeid, keys, "science", sizes, md5s)
    return {
        "observation": obs,
        "plane": plane,
        "artifact": art,
        "provenance": _provenance(week, det, planeid),
    }


def _artifacts(
    planeid: list[str], keys: list[str], kind: str, sizes: np.ndarray, md5s: list[str]
) -> dict:
    k = len(planeid)
    return {
        "artifactid": [f"{p}/file" for p in planeid],
        "planeid": planeid,
        "uri": keys,
        "product_type": [kind] * k,
        "content_type": ["application/fits"] * k,
        "content_length": np.asarray(sizes, dtype=np.int64),
        "content_checksum": [f"md5:{h}" for h in md5s],
    }


def _provenance(week, det: np.ndarray, planeid: list[str]) -> dict:
    """One row per (science plane, calibration file used); vectorised (~190 k rows a week)."""
    used = [calibration.in_use(week, d) for d in range(1, 7)]
    table = {
        col: np.array([[getattr(f, attr) for f in fs] for fs in used], dtype=object)
        for col, attr in (
            ("input_planeid", "planeid"),
            ("input_uri", "key"),
            ("product", "product"),
        )
    }
    n_prod = table["product"].shape[1]
    out = {"planeid": np.repeat(np.array(planeid, dtype=object), n_prod)}
    out.update({col: arr[det - 1].ravel() for col, arr in table.items()})
    return out


def cal_tables(
    files: list[CalFile], week, n: int, sizes: list[int], md5s: list[str]
) -> dict[str, dict]:
    k = len(files)
    det = np.array([f.det for f in files], dtype=np.int64)
    lo, hi, res = _bands(det) if k else (np.zeros(0),) * 3
    mjd = np.array([f.mjd for f in files])
    nul = [None] * k
    obs = {
        "obsid": [f.obsid for f in files],
        "collection": [calibration.CAL] * k,
        "obs_id": [f.obs_id for f in files],
        "detector": det.astype(np.int16),
        "intent": ["calibration"] * k,
        "obs_type": ["calibration"] * k,
        "target_name": nul,
        "telescope_name": ["SPHEREx"] * k,
        "instrument_name": ["SPHEREx"] * k,
        "planning_period": [week.name] * k,
        "delivery": [week.name] * k,
    }
    plane = {
        "planeid": [f.planeid for f in files],
        "obsid": obs["obsid"],
        "product_id": [f.product for f in files],
        "obs_publisher_did": [f.publisher_did for f in files],
        "calib_level": np.ones(k, np.int16),
        "dataproduct_type": ["measurements"] * k,
        "dataproduct_subtype": [f"spherex.calibration.{f.product}" for f in files],
        "energy_bandpassname": [f"SPHEREx-D{d}" for d in det.tolist()],
        "energy_bounds_lower": lo,
        "energy_bounds_upper": hi,
        "energy_resolving_power": res,
        "time_bounds_lower": mjd,
        "time_bounds_upper": mjd,
        "time_exposure": nul,
        "poly": nul,
        "s_ra": nul,
        "s_dec": nul,
        "s_pixel_scale": np.full(k, optics.pixel_scale_deg(n) * 3600),
        "s_xel1": np.full(k, n, np.int32),
        "s_xel2": np.full(k, n, np.int32),
        "em_xel": np.full(k, optics.N_CHANNELS, np.int32),
        "release_date": [week.release_date] * k,
        "pipeline_version": [PIPELINE_VERSION] * k,
        "psf_fwhm": [
            optics.psf_fwhm_arcsec(f.det, n) if f.product == "psf" else None for f in files
        ],
    }
    art = _artifacts(plane["planeid"], [f.key for f in files], "calibration", np.array(sizes), md5s)
    prov = {name: [] for name in PROVENANCE.names}
    return {"observation": obs, "plane": plane, "artifact": art, "provenance": prov}


def to_table(columns: dict, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array(columns[f.name], type=f.type)
            if not isinstance(columns[f.name], pa.Array)
            else columns[f.name]
            for f in schema
        ],
        schema=schema,
    )


def write_tables(folder: Path, parts: list[dict[str, dict]]) -> dict[str, dict]:
    """Concatenate the parts per table, write <table>.parquet, return manifest entries."""
    entries = {}
    for name, schema in TABLES.items():
        table = pa.concat_tables([to_table(p[name], schema) for p in parts])
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        entries[name] = {"file": path.name, "rows": table.num_rows, "md5": file_md5(path)}
    return entries




def write_manifest(
    folder: Path,
    week,
    created: str,
    collections: list[str],
    metadata_only: bool,
    tables: dict,
    files: list[dict],
) -> Path:
    doc = {
        "delivery": week.name,
        "created": created,
        "collections": sorted(collections),
        "metadata_only": metadata_only,
        "tables": tables,
        "files": files,
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def write_truth(path: Path, truth: Truth) -> None:
    k = len(truth)
    knots = np.broadcast_to(WAVE_KNOTS_UM, (k, len(WAVE_KNOTS_UM)))
    table = pa.Table.from_arrays(
        [
            pa.array(truth.source_id, I64),
            pa.array(truth.ra, F64),
            pa.array(truth.dec, F64),
            _list_array(np.ascontiguousarray(knots)),
            _list_array(truth.flux),
        ],
        schema=TRUTH,
    )
    pq.write_table(table, path)
