"""Files, cutouts and SODA over HTTP: pyvo's processed() and the archive URL syntax,
checked pixel by pixel against the parent file."""

from __future__ import annotations

import gzip
import io
import time

import numpy as np
import pytest
import pyvo
import requests
from astropy.io import fits

from tests.support.fitscheck import cutout_matches_parent


@pytest.fixture(scope="module")
def image(server):
    """A science image found through SIA, with its DataLink document and parent file."""
    tap = pyvo.dal.TAPService(server + "/tap")
    row = tap.run_sync("SELECT TOP 1 obs_publisher_did, s_ra, s_dec FROM ivoa.obscore "
                       "WHERE dataproduct_type = 'image' ORDER BY obs_publisher_did")[0]
    res = pyvo.dal.sia2.SIA2Service(server + "/sia").search(pos=(row["s_ra"], row["s_dec"],
                                                               0.001))
    dl = [d for d in res.iter_datalinks()
          if d["ID"][0] == row["obs_publisher_did"]][0] if len(res) > 1 else \
        next(res.iter_datalinks())
    this = [link for link in dl if link.semantics == "#this"][0]
    parent = fits.open(io.BytesIO(requests.get(this.access_url).content))
    return {"did": dl["ID"][0], "ra": float(row["s_ra"]), "dec": float(row["s_dec"]),
            "dl": dl, "url": this.access_url, "parent": parent}


def test_soda_processed_through_pyvo(image):
    soda = [link for link in image["dl"] if link.semantics == "#cutout"
            and link.service_def.startswith("soda")][0]
    data = soda.processed(circle=(image["ra"], image["dec"], 0.2)).read()
    cut = fits.open(io.BytesIO(data))
    assert [h.name for h in cut] == [h.name for h in image["parent"]]
    cutout_matches_parent(cut, image["parent"])


def test_archive_cutout_syntax_gzip_by_default(image, server):
    r = requests.get(image["url"], params={"center": f"{image['ra']},{image['dec']}",
                                           "size": "12arcmin"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    cut = fits.open(io.BytesIO(gzip.decompress(r.content)))
    cutout_matches_parent(cut, image["parent"])
    assert int(r.headers["X-Bytes-Read"]) < len(requests.get(image["url"]).content)
    plain = requests.get(image["url"], params={"center": f"{image['ra']},{image['dec']}",
                                               "size": "0.2", "gzip": "false"})
    assert plain.headers["content-type"] == "application/fits"
    far = requests.get(image["url"], params={"center": f"{(image['ra'] + 180) % 360},0",
                                             "size": "0.1"})
    assert far.status_code == 400 and b"overlap" in far.content


def test_rest_and_parameter_cutouts_agree(image, server):
    key = image["url"].split("/data/", 1)[1]
    q = {"ra": image["ra"], "dec": image["dec"], "size": 0.2}
    a = requests.get(f"{server}/cutout/{key}", params=q)
    b = requests.get(f"{server}/cutout", params={**q, "path": key})
    c = requests.get(f"{server}/cutout", params={**q, "ID": image["did"]})
    assert a.status_code == b.status_code == c.status_code == 200
    images = [fits.open(io.BytesIO(r.content))["IMAGE"].data for r in (a, b, c)]
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], images[2])


def test_soda_errors_and_no_overlap(image, server):
    r = requests.get(f"{server}/soda/sync", params={"ID": image["did"],
                                                    "CIRCLE": "0 -89.9 0.01"})
    assert r.status_code == 204
    r = requests.get(f"{server}/soda/sync", params={"ID": [image["did"]] * 2,
                                                    "CIRCLE": "0 0 1"})
    assert r.status_code == 400 and r.text.startswith("MultiValuedParamNotSupported")
    r = requests.get(f"{server}/soda/sync", params={"ID": "ivo://nowhere?x",
                                                    "CIRCLE": "0 0 1"})
    assert r.status_code == 404 and r.text.startswith("NotFoundFault")
    r = requests.get(f"{server}/soda/sync", params={"ID": image["did"], "CIRCLE": "a b"})
    assert r.status_code == 400 and r.text.startswith("UsageError")


def test_soda_async_one_result_per_combination(image, server):
    r = requests.post(f"{server}/soda/async", data={
        "ID": [image["did"]], "PHASE": "RUN",
        "CIRCLE": [f"{image['ra']} {image['dec']} 0.1", f"{image['ra']} {image['dec']} 0.2"]},
        allow_redirects=False)
    assert r.status_code == 303
    job = pyvo.io.uws.parse_job(io.BytesIO(requests.get(
        r.headers["Location"], params={"WAIT": 30}).content))
    for _ in range(60):
        if job.phase in ("COMPLETED", "ERROR"):
            break
        time.sleep(0.5)
        job = pyvo.io.uws.parse_job(io.BytesIO(requests.get(r.headers["Location"]).content))
    assert job.phase == "COMPLETED"
    assert len(job.results) == 2
    sizes = [fits.open(io.BytesIO(requests.get(res.href).content))["IMAGE"].data.shape
             for res in job.results]
    assert sizes[0][0] < sizes[1][0]


def test_only_known_files_and_previews(image, server):
    assert requests.get(f"{server}/data/qr2/level2/nothing.fits").status_code == 404
    assert requests.get(f"{server}/data/..%2F..%2Fetc%2Fpasswd").status_code in (403, 404)
    key = image["url"].split("/data/", 1)[1]
    r = requests.get(f"{server}/preview/{key}")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
