"""Which files the archive knows: dataset IDs and file keys resolved through the catalogue.

Every file-serving path (DataLink, SODA, /data, /cutout, /preview) goes through here, so
only files the archive has ingested can be named: no traversal, no other bucket keys.
"""

from __future__ import annotations

import re

import pyarrow as pa

from .catalogue import Catalogue

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

_PLANE_SQL = (
    "SELECT p.obs_publisher_did AS did, p.planeid, a.uri, a.content_length, a.content_type, "
    "p.poly, p.energy_bounds_lower AS em_lo, p.energy_bounds_upper AS em_hi, "
    "p.time_bounds_lower AS t_lo, p.time_bounds_upper AS t_hi, p.dataproduct_type, "
    "p.dataproduct_subtype "
    "FROM spherex.plane AS p JOIN spherex.artifact AS a ON a.planeid = p.planeid ")


def _keys(values: list[str]) -> dict[str, pa.Table]:
    return {"ids": pa.table({"v": pa.array(values, pa.string())})}


def by_ids(cat: Catalogue, ids: list[str]) -> dict[str, dict]:
    """Plane + file rows for publisher DIDs (thousands at once: a join, not a loop)."""
    rows = cat.query(_PLANE_SQL + "WHERE p.obs_publisher_did IN (SELECT v FROM _upload_ids)",
                     uploads=_keys(ids))
    return {r["did"]: r for r in rows.to_pylist()}


def is_sky_image(plane: dict) -> bool:
    """Only products with a footprint can be cut on the sky; calibration files (darks,
    gain matrices, PSF cubes ...) are in detector coordinates and have none."""
    return plane.get("poly") is not None


def by_key(cat: Catalogue, key: str) -> dict | None:
    """The plane + file row of a file key (the path under data/), or None if unknown."""
    if ".." in key.split("/") or not _SAFE_KEY.match(key):
        return None
    rows = cat.query(_PLANE_SQL + "WHERE a.uri IN (SELECT v FROM _upload_ids)",
                     uploads=_keys([key])).to_pylist()
    return rows[0] if rows else None


def calibration_inputs(cat: Catalogue, planeids: list[str]) -> dict[str, list[dict]]:
    """Calibration files each science plane used (provenance), by plane id."""
    rows = cat.query(
        "SELECT pr.planeid, pr.product, a.uri, a.content_length, a.content_type "
        "FROM spherex.provenance AS pr JOIN spherex.artifact AS a "
        "ON a.planeid = pr.input_planeid WHERE pr.planeid IN (SELECT v FROM _upload_ids) "
        "ORDER BY pr.planeid, pr.product", uploads=_keys(planeids))
    out: dict[str, list[dict]] = {}
    for r in rows.to_pylist():
        out.setdefault(r["planeid"], []).append(r)
    return out
