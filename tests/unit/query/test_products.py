"""query.products: dataset IDs and file keys resolved through the catalogue, checked
against the ObsCore view of the same session archive."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from chalicelib.query import products
from chalicelib.query.catalogue import Catalogue

BASE = "https://products.test"


@pytest.fixture(scope="module")
def cat(archive) -> Catalogue:
    return Catalogue(archive, base_url=BASE)


@pytest.fixture(scope="module")
def obscore(cat) -> list[dict]:
    return cat.query("SELECT obs_publisher_did, access_url, access_estsize, s_region, "
                     "obs_collection FROM ivoa.obscore ORDER BY obs_publisher_did").to_pylist()


def test_by_ids_finds_every_dataset_obscore_lists(cat, obscore, archive) -> None:
    ids = [r["obs_publisher_did"] for r in obscore]
    found = products.by_ids(cat, ids + ["ivo://nowhere?x"])
    assert sorted(found) == sorted(ids)  # the unknown ID is simply absent
    for r in obscore:
        did = r["obs_publisher_did"]
        plane = found[did]
        assert archive.exists("data/" + plane["uri"])  # a file the archive holds
        # ObsCore points at the file itself or at the dataset's DataLink
        assert r["access_url"] in (f"{BASE}/data/{plane['uri']}",
                                   f"{BASE}/datalink/links?ID={quote(did, safe='')}")
        assert products.is_sky_image(plane) == (r["s_region"] is not None)


def test_by_key_is_the_same_row_as_by_id(cat, obscore) -> None:
    did = obscore[0]["obs_publisher_did"]
    plane = products.by_ids(cat, [did])[did]
    assert products.by_key(cat, plane["uri"]) == plane
    assert products.by_key(cat, plane["uri"] + ".missing") is None


@pytest.mark.parametrize("key", ["../etc/passwd", "qr2/../../x", "/abs/path", "", "a b"])
def test_by_key_refuses_unsafe_keys_without_asking(key) -> None:
    class NoQueries:
        def query(self, *a, **k):
            raise AssertionError("an unsafe key reached the catalogue")

    assert products.by_key(NoQueries(), key) is None


def test_calibration_inputs_are_archived_files(cat, obscore) -> None:
    science = [r for r in obscore if r["s_region"] is not None]
    planes = products.by_ids(cat, [r["obs_publisher_did"] for r in science])
    cals = products.calibration_inputs(cat, [p["planeid"] for p in planes.values()])
    assert cals, "the synthetic images record their calibration inputs"
    keys = {p["uri"] for p in products.by_ids(
        cat, [r["obs_publisher_did"] for r in obscore]).values()}
    for rows in cals.values():
        assert [r["product"] for r in rows] == sorted(r["product"] for r in rows)
        assert all(r["uri"] in keys for r in rows)  # each input is a file we serve


def test_files_holding_keeps_every_file_with_a_match_and_drops_the_rest(cat, obscore):
    """Catalogue.files_holding against brute force over the files' own rows: a file is
    kept exactly when its [min, max] of the column can hold one of the values, and every
    file that really holds one is kept (the lookups filter on it)."""
    import random

    rows = cat.query("SELECT obs_publisher_did, planeid, _file FROM spherex.plane").to_pylist()
    by_file: dict[str, set[str]] = {}
    for r in rows:
        by_file.setdefault(r["_file"], set()).add(r["obs_publisher_did"])
    rng = random.Random(3)
    dids = sorted({r["obs_publisher_did"] for r in rows})
    for k in (1, 2, 5):
        ids = rng.sample(dids, k) + ["ivo://nowhere?x"]
        kept = cat.files_holding("spherex.plane", "obs_publisher_did", ids)
        kept = set(by_file) if kept is None else set(kept)
        assert {f for f, have in by_file.items() if have & set(ids)} <= kept
        ranges = {f: (min(v), max(v)) for f, v in by_file.items()}
        assert kept == {f for f, (lo, hi) in ranges.items()
                        if any(lo <= i <= hi for i in ids)}
        assert len(kept) < len(by_file)  # the lookup of a few IDs is pruned
    assert cat.files_holding("spherex.plane", "obs_publisher_did", ["ivo://nowhere?x"]) == []
