"""TAP through pyvo against the local server, checked against the delivery records."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pyvo
import requests
from astropy.table import Table

from chalicelib.geometry import sky


@pytest.fixture(scope="module")
def tap(server):
    return pyvo.dal.TAPService(server + "/tap")


def _brute_contains(planes, ra, dec):
    """Images whose footprint contains (ra, dec), by direct geometry on the records."""
    imgs = planes.filter(pa.compute.is_valid(planes["poly"]))
    inside = sky.points_in_polys(np.broadcast_to(sky.xyz(ra, dec), (imgs.num_rows, 3)),
                                 sky.Polys.from_arrow(imgs["poly"]))
    return set(np.asarray(imgs["obs_publisher_did"].to_pylist())[inside])


def test_cone_search_matches_brute_force(tap, planes):
    row = planes.filter(pa.compute.is_valid(planes["poly"])).slice(3, 1).to_pylist()[0]
    ra, dec = row["s_ra"] + 0.3, row["s_dec"] - 0.2
    res = tap.run_sync("SELECT obs_publisher_did, s_region, access_url FROM ivoa.obscore "
                       f"WHERE CONTAINS(POINT('ICRS', {ra}, {dec}), s_region) = 1")
    got = set(res["obs_publisher_did"])
    assert got == _brute_contains(planes, ra, dec) and row["obs_publisher_did"] in got
    assert str(res["s_region"][0]).startswith("Polygon ICRS")
    assert res["access_url"][0].startswith(tap.baseurl.rsplit("/tap", 1)[0] + "/datalink/")


def test_maxrec_overflow_only_when_truncated(tap, planes):
    n = planes.num_rows
    full = tap.run_sync("SELECT obs_publisher_did FROM ivoa.obscore", maxrec=n)
    assert len(full) == n and full.status[0] == "OK"
    cut = tap.run_sync("SELECT obs_publisher_did FROM ivoa.obscore", maxrec=n - 1)
    assert len(cut) == n - 1 and cut.status[0] == "OVERFLOW"
    # pyvo drops a falsy maxrec, so ask for MAXREC=0 directly
    r = requests.get(tap.baseurl + "/sync", params={
        "LANG": "ADQL", "MAXREC": "0", "QUERY": "SELECT obs_publisher_did, s_ra FROM ivoa.obscore"})
    meta = pyvo.dal.DALResults.from_result_url(r.url)
    assert len(meta) == 0 and list(meta.fieldnames) == ["obs_publisher_did", "s_ra"]


@pytest.mark.parametrize("fmt,reader", [
    ("csv", lambda b: Table.read(io.BytesIO(b), format="ascii.csv")),
    ("tsv", lambda b: Table.read(io.BytesIO(b), format="ascii.tab")),
    ("fits", lambda b: Table.read(io.BytesIO(b), format="fits")),
    ("votable/b2", lambda b: Table.read(io.BytesIO(b), format="votable")),
    ("parquet", lambda b: pq.read_table(io.BytesIO(b))),
])
def test_output_formats(server, fmt, reader):
    r = requests.post(server + "/tap/sync", data={
        "LANG": "ADQL", "RESPONSEFORMAT": fmt, "QUERY":
        "SELECT TOP 5 obs_id, s_ra, calib_level FROM ivoa.obscore ORDER BY obs_id"})
    assert r.status_code == 200, r.text[:500]
    t = reader(r.content)
    assert len(t) == 5 and list(t["s_ra"])[0] is not None


def test_errors_are_votable_with_the_reason(tap, server):
    with pytest.raises(pyvo.dal.DALQueryError, match="nosuchcolumn"):
        tap.run_sync("SELECT nosuchcolumn FROM ivoa.obscore")
    with pytest.raises(pyvo.dal.DALQueryError, match="(?i)table"):
        tap.run_sync("SELECT * FROM nowhere.nothing")
    r = requests.get(server + "/tap/sync", params={"LANG": "SQL", "QUERY": "SELECT 1"})
    assert r.status_code == 400 and b"QUERY_STATUS" in r.content and b"LANG" in r.content
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": "x",
                                                   "RESPONSEFORMAT": "pdf"})
    assert r.status_code == 400 and b"pdf" in r.content


def test_escape_attempts_are_refused_over_http(tap):
    for q in ("SELECT * FROM read_csv('/etc/passwd')", "COPY ivoa.obscore TO '/tmp/x.csv'",
              "SELECT 1; DROP TABLE x", "SELECT getenv('HOME')"):
        with pytest.raises(pyvo.dal.DALQueryError):
            tap.run_sync(q)


def test_async_job_runs_and_result_is_named_result(tap, planes):
    job = tap.submit_job("SELECT obs_publisher_did FROM ivoa.obscore")
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    assert job.phase == "COMPLETED"
    assert len(job.fetch_result().to_table()) == planes.num_rows
    assert [r.id_ for r in job.results] == ["result"]
    job.delete()


def test_async_job_list_filters(server, tap):
    job = tap.submit_job("SELECT TOP 1 obs_id FROM ivoa.obscore")
    mine = tap._session  # pyvo's session keeps the owner cookie of the job it created
    r = mine.get(server + "/tap/async", params={"PHASE": "PENDING"})
    assert r.status_code == 200 and job.job_id in r.text
    r = mine.get(server + "/tap/async", params={"PHASE": "COMPLETED"})
    assert job.job_id not in r.text
    stranger = requests.get(server + "/tap/async", params={"PHASE": "PENDING"})
    assert stranger.status_code == 200 and job.job_id not in stranger.text
    job.delete()


def test_upload_join(tap, planes):
    dids = planes["obs_publisher_did"].to_pylist()[:3]
    up = Table({"did": dids, "n": [1, 2, 3]})
    res = tap.run_sync("SELECT u.n, o.obs_id FROM TAP_UPLOAD.mine AS u JOIN ivoa.obscore AS o "
                       "ON o.obs_publisher_did = u.did ORDER BY u.n", uploads={"mine": up})
    assert list(res["n"]) == [1, 2, 3]


def test_tables_and_capabilities(tap):
    tables = {t.name: t for t in tap.tables}
    assert {"ivoa.obscore", "spherex.plane", "TAP_SCHEMA.columns"} <= set(tables)
    cols = {c.name for c in tables["ivoa.obscore"].columns}
    assert {"s_region", "obs_publisher_did", "pol_xel", "em_xel", "t_xel"} <= cols
    caps = tap.capabilities
    assert any(c.standardid.startswith("ivo://ivoa.net/std/TAP") for c in caps)
    res = tap.run_sync("SELECT COUNT(*) AS n FROM TAP_SCHEMA.columns "
                       "WHERE table_name = 'ivoa.obscore'")
    assert res["n"][0] == len(cols)


def test_sync_timeout_points_to_async(server, monkeypatch):
    from chalicelib import config

    monkeypatch.setenv("TAP_SYNC_TIMEOUT", "0.01")
    config.reset()
    q = ("SELECT COUNT(*) FROM ivoa.obscore AS a, ivoa.obscore AS b, ivoa.obscore AS c, "
         "ivoa.obscore AS d WHERE a.s_ra + b.s_ra + c.s_dec > d.s_dec")
    r = requests.post(server + "/tap/sync", data={"LANG": "ADQL", "QUERY": q})
    assert r.status_code == 400 and b"/tap/async" in r.content


@pytest.mark.skipif(not shutil.which("stilts"), reason="stilts is not installed")
def test_taplint_reports_no_errors(server):
    out = subprocess.run(["stilts", "taplint", f"tapurl={server}/tap", "report=EW"],
                         capture_output=True, text=True, timeout=600)
    errors = [ln for ln in out.stdout.splitlines() if ln.startswith("E-")]
    assert "Totals: Errors: 0;" in out.stdout and not errors, "\n".join(errors[:40])
