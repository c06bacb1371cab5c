"""SIA 2.0 through pyvo against the local server, checked against records (and the
SIA and DataLink validators)."""

from __future__ import annotations

import shutil
import subprocess

import astropy.units as u
import numpy as np
import pytest
import pyvo
import requests
from astropy.coordinates import SkyCoord

from chalicelib.geometry import sky


def _disc_hits(images, ra, dec, r):
    """Images a disc touches, by sampling the disc densely (independent of the SQL path);
    returns (sure hits, sure misses) leaving out footprints within 0.02 deg of the rim."""
    c = SkyCoord(ra, dec, unit="deg")
    angles = np.linspace(0, 360, 90) * u.deg
    pts = [c] + [c.directional_offset_by(angles, f * r * u.deg) for f in (0.5, 1.0)]
    ras = np.concatenate([np.atleast_1d(p.ra.deg) for p in pts])
    decs = np.concatenate([np.atleast_1d(p.dec.deg) for p in pts])
    hits, misses = set(), set()
    for im in images:
        polys = sky.Polys.one(im["poly"], len(ras))
        inside = sky.points_in_polys(sky.xyz(ras, decs), polys).any()
        edge = sky.min_edge_distance(sky.xyz([ra], [dec]), sky.Polys.one(im["poly"]))[0]
        if abs(edge - r) < 0.02:
            continue
        (hits if inside else misses).add(im["obs_publisher_did"])
    return hits, misses


def test_circle_search_matches_sampled_disc(sia, images):
    im = images[5]
    ra, dec, r = im["s_ra"], im["s_dec"] + 1.0, 1.5
    got = set(sia.search(pos=(ra, dec, r)).to_table()["obs_publisher_did"])
    hits, misses = _disc_hits(images, ra, dec, r)
    assert hits <= got and not (misses & got) and im["obs_publisher_did"] in got


def test_or_within_and_across_parameters(server, images):
    def dids(**params):
        r = requests.get(server + "/sia/query", params=params)
        assert r.status_code == 200, r.text[:300]
        return set(pyvo.dal.DALResults.from_result_url(r.url).to_table()["obs_publisher_did"])

    wide = dids(COLLECTION="spherex_qr2")
    deep = dids(COLLECTION="spherex_qr2_deep")
    assert wide and deep and not wide & deep
    assert dids(COLLECTION=["spherex_qr2", "spherex_qr2_deep"]) == wide | deep
    band = dids(COLLECTION="spherex_qr2", BAND="2.0e-6 2.2e-6")
    want = {i["obs_publisher_did"] for i in images if i["obs_publisher_did"] in wide
            and i["energy_bounds_upper"] >= 2.0e-6 and i["energy_bounds_lower"] <= 2.2e-6}
    assert band == want and band
    t0 = min(i["time_bounds_lower"] for i in images)
    early = dids(TIME=f"-Inf {t0 + 1e-6}")
    assert early == {i["obs_publisher_did"] for i in images if i["time_bounds_lower"] <= t0
                     + 1e-6} | (early - {i["obs_publisher_did"] for i in images})


def test_null_metadata_never_matches(server):
    for params in ({"TARGET": "M31"}, {"POL": "I"}):
        r = requests.get(server + "/sia/query", params=params)
        assert r.status_code == 200
        assert len(pyvo.dal.DALResults.from_result_url(r.url)) == 0


def test_range_across_ra_zero(server, images):
    r = requests.get(server + "/sia/query", params={"POS": "RANGE 350 10 -30 30"})
    got = set(pyvo.dal.DALResults.from_result_url(r.url).to_table()["obs_publisher_did"])
    centred = {i["obs_publisher_did"] for i in images
               if (i["s_ra"] >= 351 or i["s_ra"] <= 9) and -29 <= i["s_dec"] <= 29}
    assert centred <= got


def test_maxrec_and_self_description(server, planes):
    r = requests.get(server + "/sia/query", params={"MAXREC": "2"})
    res = pyvo.dal.DALResults.from_result_url(r.url)
    assert len(res) == 2 and res.status[0] == "OVERFLOW"
    r = requests.get(server + "/sia/query", params={"MAXREC": "0"})
    res = pyvo.dal.sia2.SIA2Results.from_result_url(r.url)
    assert len(res) == 0
    svc = res.get_adhocservice_by_id("sia")
    names = {p.name for g in svc.groups if g.name == "inputParams" for p in g.entries}
    assert {"POS", "BAND", "TIME", "COLLECTION", "MAXREC"} <= names


@pytest.mark.parametrize("params,words", [
    ({"POS": "CIRCLE 10 20"}, "CIRCLE"), ({"BAND": "2e-6 1e-6"}, "BAND"),
    ({"POS": "TRIANGLE 1 2 3"}, "shape"), ({"CALIB": "two"}, "CALIB"),
    ({"MAXREC": "-1"}, "MAXREC"), ({"RESPONSEFORMAT": "pdf"}, "pdf")])
def test_bad_parameters_get_a_votable_error(server, params, words):
    r = requests.get(server + "/sia/query", params=params)
    assert r.status_code == 400 and b'value="ERROR"' in r.content and words.encode() in r.content


@pytest.mark.skipif(not shutil.which("stilts"), reason="stilts is not installed")
def test_validators_report_no_errors(server, images):
    did = images[0]["obs_publisher_did"]
    for url in (f"{server}/sia/query?POS=CIRCLE+{images[0]['s_ra']}+{images[0]['s_dec']}+0.5",
                f"{server}/sia/query?MAXREC=0"):
        out = subprocess.run(["stilts", "votlint", "validate=true", f"location={url}"],
                             capture_output=True, text=True, timeout=120)
        assert "ERROR" not in out.stdout.upper(), out.stdout[:2000]
    url = f"{server}/datalink/links?ID={requests.utils.quote(did, safe='')}"
    out = subprocess.run(["stilts", "datalinklint", url], capture_output=True, text=True,
                         timeout=120)
    errors = [ln for ln in out.stdout.splitlines() if ln.startswith("E-")]
    assert not errors, out.stdout[:3000]
