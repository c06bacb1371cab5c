"""DataLink over the local server: links of SIA results, many IDs at once, and the
regressions for calibration datasets and per-ID errors."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import requests
from astropy.io.votable import parse_single_table

CAL = "spherex_qr2_cal"
UNKNOWN = "ivo://irsa.ipac/spherex_qr2?no_such_obs/D1"


def _records(table) -> list[dict]:
    """Rows as dicts, empty or masked cells as None."""
    return [{c: None if np.ma.is_masked(row[c]) or row[c] == "" else row[c]
             for c in table.colnames} for row in table]


def _tap(server: str, query: str) -> list[dict]:
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": query,
                                                   "RESPONSEFORMAT": "votable"})
    assert r.status_code == 200, r.text[:500]
    return _records(parse_single_table(io.BytesIO(r.content)).to_table())


def _links(server: str, ids: list[str]) -> list[dict]:
    r = requests.post(server + "/datalink/links", data={"ID": ids})
    assert r.status_code == 200, r.text[:500]
    return _records(parse_single_table(io.BytesIO(r.content)).to_table(use_names_over_ids=True))


@pytest.fixture(scope="module")
def cal_rows(server) -> list[dict]:
    rows = _tap(server, "SELECT obs_publisher_did, access_url FROM ivoa.obscore "
                f"WHERE obs_collection = '{CAL}'")
    assert rows, "the test archive has a calibration collection"
    return rows


@pytest.fixture(scope="module")
def science_id(server) -> str:
    rows = _tap(server, "SELECT TOP 1 obs_publisher_did FROM ivoa.obscore "
                f"WHERE obs_collection <> '{CAL}' AND s_region IS NOT NULL")
    return rows[0]["obs_publisher_did"]


def test_datalink_answers_every_calibration_dataset(server, cal_rows):
    for cal in cal_rows:
        did = cal["obs_publisher_did"]
        r = requests.get(server + "/datalink/links", params={"ID": did})
        assert r.status_code == 200, (did, r.text[:300])
        rows = _links(server, [did])
        assert all(row["error_message"] is None for row in rows), rows
        this = [row for row in rows if row["semantics"] == "#this"]
        assert len(this) == 1 and this[0]["access_url"].startswith(server + "/data/")
        # a calibration file is no sky image: nothing to cut, no descriptor to bind
        assert not any(row["semantics"] == "#cutout" or row["service_def"] for row in rows)
        f = requests.get(this[0]["access_url"])
        assert f.status_code == 200 and f.content[:6] == b"SIMPLE"
        assert len(f.content) == this[0]["content_length"]


def test_datalink_batch_isolates_unknown_id(server, cal_rows, science_id):
    cal_id = cal_rows[0]["obs_publisher_did"]
    ids = [science_id, cal_id, UNKNOWN]
    rows = _links(server, ids)
    order = [row["ID"] for row in rows]
    assert [i for n, i in enumerate(order) if n == 0 or order[n - 1] != i] == ids
    by_id = {i: [row for row in rows if row["ID"] == i] for i in ids}
    sci_sems = [row["semantics"] for row in by_id[science_id]]
    assert "#this" in sci_sems and "#cutout" in sci_sems and "#calibration" in sci_sems
    assert [row["semantics"] for row in by_id[cal_id]] == ["#this"]
    (bad,) = by_id[UNKNOWN]
    assert bad["error_message"].startswith("NotFoundFault: ")
    assert bad["access_url"] is None and bad["service_def"] is None
    assert all(row["error_message"] is None for i in ids[:2] for row in by_id[i])


def test_datalink_failing_dataset_gets_error_row_not_500(server, science_id, cal_rows,
                                                         monkeypatch):
    from chalicelib.services import datalink

    real = datalink._rows_for
    cal_id = cal_rows[0]["obs_publisher_did"]

    def broken(did, *args):
        if did == cal_id:
            raise RuntimeError("simulated bad catalogue row")
        return real(did, *args)

    monkeypatch.setattr(datalink, "_rows_for", broken)
    rows = _links(server, [science_id, cal_id])
    (bad,) = [row for row in rows if row["ID"] == cal_id]
    assert bad["error_message"].startswith("FatalFault: ")
    assert any(row["ID"] == science_id and row["semantics"] == "#this" for row in rows)


def test_calibration_access_urls_in_tap_and_sia_resolve(server, cal_rows):
    r = requests.get(server + "/sia/query", params={"COLLECTION": CAL})
    assert r.status_code == 200
    sia = parse_single_table(io.BytesIO(r.content)).to_table()
    assert len(sia) == len(cal_rows)
    urls = {row["access_url"] for row in cal_rows} | {str(u) for u in sia["access_url"]}
    for url in urls:
        got = requests.get(url, allow_redirects=False)
        assert got.status_code in (200, 303), (url, got.status_code, got.text[:300])


@pytest.mark.skipif(not shutil.which("stilts"), reason="stilts is not installed")
def test_datalinklint_accepts_calibration_and_mixed_batch(server, cal_rows, science_id):
    cal_id = cal_rows[0]["obs_publisher_did"]
    for ids in ([cal_id], [science_id, cal_id, UNKNOWN]):
        url = requests.Request("GET", server + "/datalink/links",
                               params={"ID": ids}).prepare().url
        # votable= named: a positional URL is not taken as the document to check
        out = subprocess.run(["stilts", "datalinklint", f"votable={url}"],
                             capture_output=True, text=True, timeout=120)
        assert "Totals: Errors: 0;" in out.stdout, out.stdout[-3000:] + out.stderr[-1000:]
        assert not [ln for ln in out.stdout.splitlines() if ln.startswith("E-")]


def test_datalink_from_sia_results(sia, images, archive, deliveries):
    res = sia.search(pos=(images[0]["s_ra"], images[0]["s_dec"], 0.01))
    dl = next(res.iter_datalinks())
    this = [link for link in dl if link.semantics == "#this"][0]
    key = this.access_url.split("/data/", 1)[1]
    assert this.content_length == archive.size("data/" + key)
    sems = [link.semantics for link in dl]
    assert "#cutout" in sems and "#preview" in sems and sems.count("#calibration") >= 1
    soda = dl.get_adhocservice_by_id([link.service_def for link in dl
                                      if link.semantics == "#cutout"
                                      and link.service_def.startswith("soda")][0])
    std = {p.name: str(p.value) for p in soda.params}["standardID"]
    assert std == "ivo://ivoa.net/std/SODA#sync-1.0"


def test_datalink_many_ids_post_contiguous_and_unknown(server, planes):
    dids = planes["obs_publisher_did"].to_pylist()
    ids = dids + ["ivo://nowhere/x?y"]
    r = requests.post(server + "/datalink/links", data={"ID": ids})
    assert r.status_code == 200
    rows = parse_single_table(io.BytesIO(r.content)).to_table(use_names_over_ids=True)
    seen, last = [], None
    for rid in rows["ID"]:
        if rid != last:
            assert rid not in seen  # rows of one ID are contiguous
            seen.append(rid)
            last = rid
    assert seen == ids
    bad = rows[rows["ID"] == "ivo://nowhere/x?y"]
    assert len(bad) == 1 and str(bad["error_message"][0]).startswith("NotFoundFault")
