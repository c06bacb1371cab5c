"""ADQL 2.0 coordinate systems: every ICRS-like spelling accepted, FK5 J2000 taken as ICRS
with a warning INFO, constant GALACTIC/ECLIPTIC positions converted exactly with astropy,
and a column position in another frame refused (never a silent wrong answer)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pyvo
from astropy import units as u
from astropy.coordinates import BarycentricMeanEcliptic, Galactic, SkyCoord

from chalicelib.geometry import sky
from chalicelib.lake import schema
from chalicelib.query import catalogue
from chalicelib.query.adql import AdqlError, frames, translate

TABLES = {**schema.TABLES, **catalogue.TAP_SCHEMA_TABLES}
ICRS_LIKE = ["", "ICRS", "icrs", "J2000", "j2000", "FK5", "fk5 J2000", "FK5 J2000.0",
             "ICRS GEOCENTER", "icrs topocenter", "J2000 TOPOCENTER", "FK5 J2000 BARYCENTER",
             "ICRS BARYCENTER SPHERICAL2", "GEOCENTER", "UNKNOWNFRAME UNKNOWNREFPOS"]
SHAPES = ["POINT('{f}', 10, 20)", "CIRCLE('{f}', 10, 20, 1)", "BOX('{f}', 10, 20, 1, 2)",
          "POLYGON('{f}', 10, 20, 11, 20, 11, 21)"]


def tr(q):
    return translate(q, TABLES)


@pytest.mark.parametrize("frame", ICRS_LIKE)
@pytest.mark.parametrize("shape", SHAPES)
def test_icrs_spellings_are_icrs_on_every_constructor(frame, shape):
    got = tr(f"SELECT {shape.format(f=frame)} AS g FROM ivoa.obscore")
    want = tr(f"SELECT {shape.format(f='ICRS')} AS g FROM ivoa.obscore")
    assert got.sql == want.sql
    fk5 = frame.split()[:1] in (["FK5"], ["fk5"], ["J2000"], ["j2000"])
    assert (frames.FK5_NOTE in got.notes) == fk5 and not want.notes


def test_columns_in_icrs_like_frames():
    t = tr("SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('J2000', s_ra, s_dec), "
           "CIRCLE('FK5 J2000 TOPOCENTER', 10, 20, 1)) = 1")
    assert "s_ra" in t.sql and t.notes == [frames.FK5_NOTE]


@pytest.mark.parametrize("q,fragments", [
    ("SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('GALACTIC', s_ra, s_dec), "
     "CIRCLE('ICRS', 1, 2, 3)) = 1", ["POINT in GALACTIC needs constant", "ICRS", "column 54"]),
    ("SELECT obs_id FROM ivoa.obscore WHERE INTERSECTS(s_region, CIRCLE('ECLIPTIC', s_ra, 2, "
     "1)) = 1", ["CIRCLE in ECLIPTIC needs constant"]),
    ("SELECT POINT('FK4', 1, 2) FROM ivoa.obscore", ["'FK4' is not supported", "GALACTIC"]),
    ("SELECT POINT('FK5 B1950', 1, 2) FROM ivoa.obscore", ["'FK5 B1950' is not supported"]),
    ("SELECT POINT('ICRS NOWHERE', 1, 2) FROM ivoa.obscore", ["not supported"]),
    ("SELECT CIRCLE('GALACTIC', POINT(1, 2), 3) FROM ivoa.obscore",
     ["CIRCLE is in GALACTIC but its POINT is in ICRS"]),
    ("SELECT POLYGON('GALACTIC', POINT(1, 2), POINT(2, 2), POINT(2, 3)) FROM ivoa.obscore",
     ["POLYGON is in GALACTIC but its POINT is in ICRS"]),
])
def test_unsupported_frames_fail_clearly(q, fragments):
    with pytest.raises(AdqlError) as e:
        tr(q)
    for f in fragments:
        assert f in str(e.value)


def _icrs(frame, lon, lat):
    c = Galactic(l=lon * u.deg, b=lat * u.deg) if frame == "GALACTIC" else \
        BarycentricMeanEcliptic(lon=lon * u.deg, lat=lat * u.deg, equinox="J2000")
    c = SkyCoord(c).icrs
    return c.ra.deg, c.dec.deg


@pytest.mark.parametrize("frame", ["GALACTIC", "ECLIPTIC"])
def test_constants_converted_as_astropy_does(frame):
    t = tr(f"SELECT POINT('{frame}', 33.5, -12.25) AS p, CIRCLE('{frame} BARYCENTER', 33.5, "
           f"-12.25, 0.5) AS c FROM ivoa.obscore")
    ra, dec = (float(x) for x in _icrs(frame, 33.5, -12.25))
    assert f"{ra!r}" in t.sql.replace("e0", "") and f"{dec!r}" in t.sql.replace("e0", "")
    assert any(frame in n for n in t.notes)


# ---- on the sky: the same rows in either frame -----------------------------------------


@pytest.fixture(scope="module")
def tap(server):
    return pyvo.dal.TAPService(server + "/tap")


@pytest.fixture(scope="module")
def planes(deliveries):
    t = pa.concat_tables([pq.read_table(d / "plane.parquet") for d in deliveries])
    return t.filter(pa.compute.is_valid(t["poly"]))


def _dids(res):
    return set(res["obs_publisher_did"])


def test_galactic_point_finds_the_icrs_rows(tap, planes):
    row = planes.slice(5, 1).to_pylist()[0]
    ra, dec = row["s_ra"] + 0.2, row["s_dec"] + 0.1
    g = SkyCoord(ra * u.deg, dec * u.deg).galactic
    q = "SELECT obs_publisher_did FROM ivoa.obscore WHERE CONTAINS(POINT('{}', {}, {}), " \
        "s_region) = 1"
    icrs = _dids(tap.run_sync(q.format("ICRS", ra, dec)))
    res = tap.run_sync(q.format("GALACTIC", g.l.deg, g.b.deg))
    assert icrs and _dids(res) == icrs
    infos = res.votable.resources[0].infos
    assert any(i.name == "WARNING" and "GALACTIC" in str(i.content) for i in infos)


def test_galactic_circle_against_astropy_separation(tap, planes):
    row = planes.slice(9, 1).to_pylist()[0]
    g = SkyCoord(row["s_ra"] * u.deg, row["s_dec"] * u.deg).galactic
    r = 1.5
    res = tap.run_sync("SELECT obs_publisher_did FROM ivoa.obscore WHERE CONTAINS("
                       f"POINT('ICRS', s_ra, s_dec), CIRCLE('GALACTIC', {g.l.deg}, "
                       f"{g.b.deg}, {r})) = 1")
    pos = SkyCoord(np.asarray(planes["s_ra"]) * u.deg, np.asarray(planes["s_dec"]) * u.deg)
    sep = pos.galactic.separation(g).deg  # the separation measured in galactic coordinates
    want = set(np.asarray(planes["obs_publisher_did"].to_pylist())[sep <= r])
    assert want and _dids(res) == want


def test_galactic_polygon_and_box_vertex_by_vertex(tap, planes):
    row = planes.slice(2, 1).to_pylist()[0]
    g = SkyCoord(row["s_ra"] * u.deg, row["s_dec"] * u.deg).galactic
    lon, lat = float(g.l.deg), float(g.b.deg)
    poly = [lon - 1, lat - 1, lon + 1, lat - 1, lon + 1, lat + 1, lon - 1, lat + 1]
    corners = sky.box_polygon(lon, lat, 2.0, 1.0)
    q = "SELECT obs_publisher_did FROM ivoa.obscore WHERE INTERSECTS(s_region, {}) = 1"
    for shape, verts in ((f"POLYGON('GALACTIC', {', '.join(map(repr, poly))})", poly),
                         (f"BOX('GALACTIC', {lon}, {lat}, 2, 1)", list(corners))):
        ra, dec = _icrs("GALACTIC", np.array(verts[0::2]), np.array(verts[1::2]))
        flat = ", ".join(f"{float(a)!r}, {float(b)!r}" for a, b in zip(ra, dec))
        want = _dids(tap.run_sync(q.format(f"POLYGON('ICRS', {flat})")))
        got = _dids(tap.run_sync(q.format(shape)))
        assert want and got == want


def test_fk5_answer_carries_a_warning_info(server):
    import requests

    r = requests.get(server + "/tap/sync", params={
        "LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id FROM ivoa.obscore WHERE CONTAINS("
        "POINT('FK5 J2000', s_ra, s_dec), CIRCLE('J2000', 0, 0, 180)) = 1"}, timeout=60)
    assert r.status_code == 200
    assert '<INFO name="WARNING" value="coordinate system">Coordinate system FK5 J2000' \
        in r.text and "0.03 arcsec" in r.text
