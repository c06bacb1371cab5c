"""Array-valued service descriptors of the spectrophotometry results, followed over HTTP
on the local server: one row per source, its input images an array column, descriptors
bound to it by ref= give a cutout around the source of every image behind the spectrum."""

from __future__ import annotations

import io
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from astropy.io import fits
from astropy.io.votable import parse

from tests.support.fitscheck import same_pixels_as_parent

pytestmark = pytest.mark.usefixtures("server")


def _job(server: str, points: list[str]) -> dict[str, bytes]:
    """Run a spectrophotometry job over HTTP; its result and long VOTables."""
    r = requests.post(f"{server}/spectrophotometry/async",
                      data=[("POINT", p) for p in points] + [("PHASE", "RUN")],
                      allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    job = r.headers["Location"]
    end = time.monotonic() + 120
    while time.monotonic() < end:
        phase = requests.get(f"{job}/phase", timeout=30).text.strip()
        if phase in ("COMPLETED", "ERROR", "ABORTED"):
            break
        time.sleep(0.1)
    assert phase == "COMPLETED", requests.get(f"{job}/error", timeout=30).text
    return {name: requests.get(f"{job}/results/{name}", timeout=30).content
            for name in ("result", "long")}


def _descriptors(vot) -> dict[str, dict]:
    """ID -> {url, standard, inputs: {name: (ref, value)}} of every adhoc:service RESOURCE."""
    out = {}
    for res in vot.resources:
        if res.type != "meta" or res.utype != "adhoc:service":
            continue
        fixed = {p.name: p.value for p in res.params}
        group = next(g for g in res.groups if g.name == "inputParams")
        out[res.ID] = {"url": str(fixed["accessURL"]), "standard": fixed.get("standardID"),
                       "inputs": {p.name: (p.ref, p.value) for p in group.entries}}
    return out


def _cells(table, row: int, inputs: dict) -> dict[str, object]:
    """The values a client fills in for one row: ref= inputs from that row's cells."""
    return {name: table[ref][row] for name, (ref, _) in inputs.items() if ref}


def _check_cutout(body: bytes, parent: fits.HDUList, x: float, y: float) -> None:
    """Centred on the source (within a pixel, unless the image edge clipped it), pixels
    equal to the parent image's at the offset CRPIX1A/2A give."""
    x0, y0, nx, ny = same_pixels_as_parent(body, parent)
    pny, pnx = parent["IMAGE"].data.shape
    cx, cy = x0 + (nx - 1) / 2, y0 + (ny - 1) / 2
    if 0 < x0 and x0 + nx < pnx:
        assert abs(cx - x) <= 1.0
    if 0 < y0 and y0 + ny < pny:
        assert abs(cy - y) <= 1.0
    assert x0 - 0.5 <= x <= x0 + nx - 0.5 and y0 - 0.5 <= y <= y0 + ny - 0.5


def test_result_descriptors_give_every_input_image(server, archive, synth_dir) -> None:
    truth = pq.read_table(synth_dir / "truth.parquet").to_pylist()[:3]
    bodies = _job(server, [f"{r['ra']},{r['dec']}" for r in truth])
    vot = parse(io.BytesIO(bodies["result"]))
    table = vot.get_first_table().to_table()
    desc = _descriptors(vot)
    assert {"soda", "soda-batch", "datalink"} <= set(desc)
    for d in desc.values():
        assert d["inputs"]["ID"][0] == "obs_publisher_did"
        assert d["url"].startswith(server)
    assert desc["soda"]["inputs"]["CIRCLE"][0] == "cutout_circle"
    assert desc["soda"]["standard"] == "ivo://ivoa.net/std/SODA#sync-1.0"

    row = int(np.argmax([len(v) for v in table["flux"]]))
    dids = str(table["obs_publisher_did"][row]).split()
    assert len(dids) == len(table["flux"][row]) >= 2
    xs, ys = table["x_image"][row], table["y_image"][row]
    values = _cells(table, row, desc["soda"]["inputs"])
    circle = " ".join(repr(float(v)) for v in values["CIRCLE"])
    ra, dec = (float(v) for v in values["CIRCLE"][:2])
    assert (ra, dec) == (float(table["ra"][row]), float(table["dec"][row]))

    # per element (SODA sync takes one ID): one cutout per measured image, on the source
    from chalicelib.query import products, runtime

    planes = products.by_ids(runtime.catalogue(server), dids)
    for did, x, y in zip(dids, xs, ys):
        r = requests.get(desc["soda"]["url"], params={"ID": did, "CIRCLE": circle},
                         timeout=60)
        assert r.status_code == 200, r.text
        with fits.open(io.BytesIO(archive.read_bytes("data/" + planes[did]["uri"]))) as p:
            _check_cutout(r.content, p, float(x), float(y))

    # one activation of the batch descriptor: every element as an ID, one job
    r = requests.post(desc["soda-batch"]["url"], allow_redirects=False, timeout=30,
                      data=[("ID", d) for d in dids] + [("CIRCLE", circle), ("PHASE", "RUN")])
    assert r.status_code == 303, r.text
    job = r.headers["Location"]
    for _ in range(600):
        if requests.get(f"{job}/phase", timeout=30).text.strip() == "COMPLETED":
            break
        time.sleep(0.1)
    results = requests.get(f"{job}/results", timeout=30).text
    assert results.count("<uws:result ") == len(dids), results

    # DataLink with the cell as it is (split on whitespace): #this of every image
    r = requests.get(desc["datalink"]["url"], params={"ID": " ".join(dids)}, timeout=60)
    links = parse(io.BytesIO(r.content)).get_first_table().to_table(use_names_over_ids=True)
    this = links[links["semantics"] == "#this"]
    assert sorted(this["ID"]) == sorted(dids) and not any(this["error_message"])


def test_long_table_descriptors_work_per_element_with_pyvo(server, synth_dir) -> None:
    """The long table (one row per measurement) binds the same descriptors to scalar
    cells: pyvo's DataLink helpers work on it unchanged."""
    from pyvo.dal.tap import TAPResults

    truth = pq.read_table(synth_dir / "truth.parquet").to_pylist()[:1]
    body = _job(server, [f"{r['ra']},{r['dec']}" for r in truth])["long"]
    results = TAPResults(parse(io.BytesIO(body)), url=server)
    n = 0
    for row, links in zip(results, results.iter_datalinks(preserve_order=True)):
        this = [r for r in links if r.semantics == "#this"]
        assert [r["ID"] for r in this] == [row["obs_publisher_did"]]
        n += 1
    assert n == len(results) >= 1
    soda = results.get_adhocservice_by_id("soda")
    assert soda is not None
