"""Which files the archive knows: dataset IDs and file keys resolved through the catalogue.

Every file-serving path (DataLink, SODA, /data, /cutout, /preview) goes through here, so
only files the archive has ingested can be named: no traversal, no other bucket keys.
"""

from __future__ import annotations

import re

import pyarrow as pa

from ..geometry.sqlfunctions import sql_in
from .catalogue import Catalogue

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

_PLANE = ("SELECT p.obs_publisher_did AS did, p.planeid, p.poly, "
          "p.energy_bounds_lower AS em_lo, p.energy_bounds_upper AS em_hi, "
          "p.time_bounds_lower AS t_lo, p.time_bounds_upper AS t_hi, p.dataproduct_type, "
          "p.dataproduct_subtype FROM spherex.plane AS p ")
_FILE = "SELECT a.planeid, a.uri, a.content_length, a.content_type FROM spherex.artifact AS a "

# Each lookup is one table at a time, keyed by the column the previous step found, so
# that each reads only the files whose statistics may hold its keys (Catalogue.
# files_holding): a join would open every file of the other table, on S3 a HEAD and a
# GET per file of every week.


def _keys(values: list[str]) -> dict[str, pa.Table]:
    return {"ids": pa.table({"v": pa.array(values, pa.string())})}


def _lookup(cat: Catalogue, sql: str, table: str, alias: str, col: str,
            values: list[str], tail: str = "") -> list[dict]:
    """Rows of `sql` whose alias.col is one of values, from the files that may hold them."""
    if not values:
        return []
    files = cat.files_holding(table, col, values)
    only = "" if files is None else f" AND {alias}._file IN ({sql_in(files)})"
    return cat.query(f"{sql}WHERE {alias}.{col} IN (SELECT v FROM _upload_ids){only}{tail}",
                     uploads=_keys(values)).to_pylist()


def _with_files(cat: Catalogue, planes: list[dict]) -> list[dict]:
    """Plane rows joined with their file rows (planes without a file are left out)."""
    files = {f["planeid"]: f for f in _lookup(cat, _FILE, "spherex.artifact", "a",
                                               "planeid", [p["planeid"] for p in planes])}
    return [{**p, **files[p["planeid"]]} for p in planes if p["planeid"] in files]


def by_ids(cat: Catalogue, ids: list[str]) -> dict[str, dict]:
    """Plane + file rows for publisher DIDs (thousands at once: a join, not a loop)."""
    planes = _lookup(cat, _PLANE, "spherex.plane", "p", "obs_publisher_did", ids)
    return {r["did"]: r for r in _with_files(cat, planes)}


def is_sky_image(plane: dict) -> bool:
    """Only products with a footprint can be cut on the sky; calibration files (darks,
    gain matrices, PSF cubes ...) are in detector coordinates and have none."""
    return plane.get("poly") is not None


def by_key(cat: Catalogue, key: str) -> dict | None:
    """The plane + file row of a file key (the path under data/), or None if unknown."""
    if ".." in key.split("/") or not _SAFE_KEY.match(key):
        return None
    files = _lookup(cat, _FILE, "spherex.artifact", "a", "uri", [key])
    planes = _lookup(cat, _PLANE, "spherex.plane", "p", "planeid",
                     [f["planeid"] for f in files])
    rows = _with_files(cat, planes)
    return rows[0] if rows else None


def calibration_inputs(cat: Catalogue, planeids: list[str]) -> dict[str, list[dict]]:
    """Calibration files each science plane used (provenance), by plane id."""
    used = _lookup(cat, "SELECT pr.planeid, pr.product, pr.input_planeid FROM "
                   "spherex.provenance AS pr ", "spherex.provenance", "pr", "planeid",
                   planeids, " ORDER BY pr.planeid, pr.product")
    files = {f["planeid"]: f for f in _lookup(cat, _FILE, "spherex.artifact", "a", "planeid",
                                               sorted({u["input_planeid"] for u in used}))}
    out: dict[str, list[dict]] = {}
    for u in used:
        f = files.get(u["input_planeid"])
        if f is not None:
            out.setdefault(u["planeid"], []).append(
                {"planeid": u["planeid"], "product": u["product"], "uri": f["uri"],
                 "content_length": f["content_length"], "content_type": f["content_type"]})
    return out
