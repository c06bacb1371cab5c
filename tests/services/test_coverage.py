"""The /coverage service over the local server: collections and their MOC formats."""

from __future__ import annotations

import io
import json

import requests
from astropy.io.votable import parse_single_table
from mocpy import MOC


def _collections(server: str) -> list[str]:
    r = requests.get(server + "/coverage")
    assert r.status_code == 200
    names = [str(c) for c in parse_single_table(io.BytesIO(r.content)).to_table()["collection"]]
    assert names
    return names


def test_coverage_json_and_ascii_match_fits(server):
    for coll in _collections(server):
        url = f"{server}/coverage/{coll}"
        fits = requests.get(url)
        assert fits.status_code == 200 and fits.headers["Content-Type"] == "application/fits"
        ref = MOC.from_fits(io.BytesIO(fits.content))
        assert not ref.empty()
        js = requests.get(url, params={"FORMAT": "json"})
        assert js.status_code == 200 and js.headers["Content-Type"] == "application/json"
        assert MOC.from_json(json.loads(js.text)) == ref
        asc = requests.get(url, params={"FORMAT": "ascii"})
        assert asc.status_code == 200 and asc.headers["Content-Type"].startswith("text/plain")
        assert MOC.from_string(asc.text, format="ascii") == ref
        mime = requests.get(url, params={"FORMAT": "application/json"})
        assert mime.status_code == 200 and mime.content == js.content


def test_coverage_bad_format_400_unknown_collection_404(server):
    coll = _collections(server)[0]
    r = requests.get(f"{server}/coverage/{coll}", params={"FORMAT": "votable"})
    assert r.status_code == 400
    assert all(name in r.text for name in ("fits", "json", "ascii"))
    r = requests.get(f"{server}/coverage/no_such_collection")
    assert r.status_code == 404 and r.text.startswith("NotFoundFault")
    r = requests.get(f"{server}/coverage/no_such_collection", params={"FORMAT": "json"})
    assert r.status_code == 404
