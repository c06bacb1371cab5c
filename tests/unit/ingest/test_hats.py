"""The HATS copy of ObsCore, read by LSDB: the same images for a list of positions as
the TAP service's CONTAINS(POINT, s_region).

The archive's merge step publishes it (maintenance -> hatscat.publish); LSDB opens the
collection with its margin, cross-matches the positions with radius max(s_rmax), and an
independent spherical point-in-polygon test on s_region keeps the images that contain
each position. TAP is asked through pyvo over the local server.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

lsdb = pytest.importorskip("lsdb")
hats = pytest.importorskip("hats")
pytest.importorskip("hats_import")

import dask  # noqa: E402  (after the skips: lsdb brings it)
import pandas as pd  # noqa: E402
import pyvo  # noqa: E402

PIXEL_THRESHOLD = 40  # small partitions: many pixel borders for the margin to matter


def _xyz(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def _flat(region) -> np.ndarray:
    """s_region as ra0, dec0, ra1, dec1, ...: TAP serves 'Polygon ICRS ...' text, the
    HATS copy the stored list of vertices."""
    if isinstance(region, bytes | str):
        text = region.decode() if isinstance(region, bytes) else region
        return np.asarray(text.split()[2:], float)
    return np.asarray(region, float)


def _inside(point_ra: float, point_dec: float, region) -> bool:
    """A convex spherical polygon (s_region as ra0, dec0, ra1, dec1, ...) contains the
    point when it lies on the same side of every edge's great circle."""
    region = _flat(region)
    v = _xyz(region[0::2], region[1::2])
    p = _xyz(point_ra, point_dec)
    side = np.einsum("ij,j->i", np.cross(v, np.roll(v, -1, axis=0)), p)
    return bool((side > 0).all() or (side < 0).all())


def _radius(ra: float, dec: float, region) -> float:
    """Largest angle (deg) from the centre to a vertex of the footprint."""
    region = _flat(region)
    v = _xyz(region[0::2], region[1::2])
    return float(np.degrees(np.arccos(np.clip(v @ _xyz(ra, dec), -1, 1))).max())


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two metadata-only weeks ingested, merged into a tier (which publishes HATS)."""
    from chalicelib import config
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest import hatscat, maintenance
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive

    root = tmp_path_factory.mktemp("hats")
    synthesize(root / "syn", weeks=2, images_per_week=150, metadata_only=True, seed=5)
    arch = Archive.from_env(str(root / "archive"))
    for d in sorted(p for p in (root / "syn").iterdir() if p.is_dir()):
        ingest(d, arch)
    mp = pytest.MonkeyPatch()
    mp.setenv("HATS_PUBLISH", "1")
    mp.setattr(hatscat, "PIXEL_THRESHOLD", PIXEL_THRESHOLD)
    config.reset()
    try:
        report = maintenance.after_ingest(arch, every=2)
    finally:
        mp.undo()
        config.reset()
    return arch, report


@pytest.fixture(scope="module")
def tap(published):
    """A local server over this module's archive. The app serves ARCHIVE_URL, one per
    process: restored afterwards, so the session server's tests see their archive."""
    from chalicelib import config
    from chalicelib.devtools.localserver import start_background
    from chalicelib.query import runtime

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHIVE_URL", published[0].url)
        srv, base = start_background(published[0].url)
        yield pyvo.dal.TAPService(base + "/tap")
        srv.server.shutdown()
    runtime.reset()
    config.reset()


@pytest.fixture(scope="module")
def collection(published):
    arch, _ = published
    doc = json.loads(arch.read_bytes("hats/latest.json"))
    return doc, arch.path(doc["path"])


def test_merge_publishes_the_release_as_a_valid_hats_collection(published, collection, tap):
    from chalicelib.lake import releases

    arch, report = published
    doc, path = collection
    assert doc["release"] == releases.load(arch).number  # the release the merge made
    assert f"hats: release {doc['release']} -> hats/{doc['release']:08d}/obscore" in report
    assert hats.io.validation.is_valid_catalog(path)
    coll = hats.read_hats(path)
    main, margin = coll.main_catalog, hats.read_hats(f"{path}/obscore_margin")
    # every row with a position (not the positionless "measurements" products)
    n = int(tap.run_sync("SELECT COUNT(*) AS n FROM ivoa.obscore WHERE s_ra IS NOT NULL")
            ["n"][0])
    assert main.catalog_info.total_rows == doc["rows"] == n > 200
    pixels = main.get_healpix_pixels()
    assert len(pixels) > 4 and max(p.order for p in pixels) <= doc["highest_order"]
    rows = tap.run_sync("SELECT s_ra, s_dec, s_region FROM ivoa.obscore "
                        "WHERE s_region IS NOT NULL")
    rmax = max(_radius(ra, dec, reg) for ra, dec, reg in
               zip(rows["s_ra"], rows["s_dec"], rows["s_region"]))
    assert margin.catalog_info.margin_threshold >= rmax * 3600 > 3600  # degrees wide
    assert margin.catalog_info.catalog_type == "margin" and margin.catalog_info.total_rows > 0
    assert margin.catalog_info.primary_catalog == arch.path(f"{doc['path']}/obscore")
    # the served columns, s_region as a list of (ra, dec) vertices
    cat = lsdb.open_catalog(path)
    assert {"obs_publisher_did", "s_region", "access_url", "s_rmax"} <= set(cat.columns)


def _positions(tap) -> pd.DataFrame:
    """Centres, points just inside footprint corners (often in another HEALPix pixel
    than the image centre: the margin's case) and random points."""
    rows = tap.run_sync("SELECT obs_publisher_did, s_ra, s_dec, s_region FROM ivoa.obscore "
                        "WHERE s_region IS NOT NULL ORDER BY obs_publisher_did").to_table()
    rng = np.random.default_rng(3)
    pts = []
    for i in rng.choice(len(rows), 12, replace=False):
        ra0, dec0 = float(rows["s_ra"][i]), float(rows["s_dec"][i])
        pts.append((ra0, dec0))
        reg = _flat(rows["s_region"][i])
        for ra, dec in zip(reg[0::2][:2], reg[1::2][:2]):
            # 3 % of the way from a corner to the centre (same RA wrap as the corner)
            dra = (ra0 - ra + 180) % 360 - 180
            pts.append(((ra + 0.03 * dra) % 360, dec + 0.03 * (dec0 - dec)))
    for _ in range(10):
        z = rng.uniform(-1, 1)
        pts.append((rng.uniform(0, 360), float(np.degrees(np.arcsin(z)))))
    return pd.DataFrame({"pid": range(len(pts)), "ra": [p[0] for p in pts],
                         "dec": [p[1] for p in pts]})


def _lsdb_matches(path: str, points: pd.DataFrame, radius_arcsec: float
                  ) -> dict[int, set[str]]:
    """LSDB's answer: the collection (catalogue + default margin), or a bare catalogue."""
    cat = lsdb.open_catalog(path, columns=["obs_publisher_did", "s_ra", "s_dec", "s_region"])
    left = lsdb.from_dataframe(points, ra_column="ra", dec_column="dec",
                               lowest_order=0, highest_order=2)
    with dask.config.set(scheduler="threads"):  # local scheduler, threads
        m = left.crossmatch(cat, radius_arcsec=radius_arcsec, n_neighbors=500,
                            suffixes=("", "_img"), suffix_method="overlapping_columns"
                            ).compute()
    got: dict[int, set[str]] = {int(p): set() for p in points["pid"]}
    for pid, ra, dec, did, region in zip(m["pid"], m["ra"], m["dec"],
                                         m["obs_publisher_did"], m["s_region"]):
        if _inside(ra, dec, region):  # the exact footprint test
            got[int(pid)].add(did)
    return got


def test_lsdb_finds_the_same_images_as_tap_for_a_list_of_positions(collection, tap):
    doc, path = collection
    points = _positions(tap)
    radius = doc["margin_arcsec"]  # max(s_rmax) and a little: every candidate centre
    via_lsdb = _lsdb_matches(path, points, radius)
    via_tap = {}
    for pid, ra, dec in zip(points["pid"], points["ra"], points["dec"]):
        res = tap.run_sync("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
                           f"CONTAINS(POINT('ICRS', {ra!r}, {dec!r}), s_region) = 1")
        via_tap[int(pid)] = {str(d) for d in res["obs_publisher_did"]}
    assert via_lsdb == via_tap
    assert sum(map(len, via_tap.values())) >= 36  # every centre and corner point matches
    # without its margin LSDB misses images whose centre is in a neighbouring pixel:
    # the margin is what makes the HATS copy answer footprint queries
    bare = _lsdb_matches(f"{path}/obscore", points, radius)
    assert all(bare[p] <= via_tap[p] for p in via_tap)
    assert sum(map(len, bare.values())) < sum(map(len, via_tap.values()))


def test_positions_straddle_partition_borders(collection, tap):
    """The comparison above is only worth something if positions and the images that
    contain them fall in different partitions: count such pairs independently."""
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    doc, path = collection
    pixels = hats.read_hats(f"{path}/obscore").get_healpix_pixels()

    def partition(ra, dec):
        for p in pixels:
            n = lonlat_to_healpix(Longitude([ra], "deg"), Latitude([dec], "deg"), p.order)[0]
            if int(n) == p.pixel:
                return p
        return None

    points = _positions(tap)
    crossing = 0
    for ra, dec in zip(points["ra"], points["dec"]):
        res = tap.run_sync("SELECT s_ra, s_dec FROM ivoa.obscore WHERE "
                           f"CONTAINS(POINT('ICRS', {ra!r}, {dec!r}), s_region) = 1")
        here = partition(ra, dec)
        crossing += sum(partition(float(r), float(d)) != here
                        for r, d in zip(res["s_ra"], res["s_dec"]))
    assert crossing >= 5


def test_publish_to_s3_is_read_by_lsdb_from_s3(s3_archive, moto_endpoint, tmp_path,
                                               monkeypatch):
    """On S3 (moto) the merge writes the collection under the archive prefix and LSDB
    reads it from there, margin included."""
    from chalicelib import config
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest import hatscat, maintenance
    from chalicelib.ingest.delivery import ingest

    synthesize(tmp_path / "syn", weeks=2, images_per_week=40, metadata_only=True, seed=9)
    for d in sorted(p for p in (tmp_path / "syn").iterdir() if p.is_dir()):
        ingest(d, s3_archive)
    monkeypatch.setenv("HATS_PUBLISH", "1")
    monkeypatch.setattr(hatscat, "PIXEL_THRESHOLD", 10)
    config.reset()
    report = maintenance.after_ingest(s3_archive, every=2)
    doc = hatscat.latest(s3_archive)
    assert doc is not None and f"-> {doc['path']}" in report
    assert s3_archive.exists(f"{doc['path']}/collection.properties")
    url = s3_archive.path(doc["path"])
    assert url.startswith("s3://")
    from upath import UPath

    # an S3 path with its endpoint (moto); hats derives every child path from it
    cat = lsdb.open_catalog(UPath(url, endpoint_url=moto_endpoint,
                                  client_kwargs={"region_name": "us-east-1"}))
    assert cat.margin is not None
    with dask.config.set(scheduler="threads"):
        rows = cat.compute()
        margin_rows = cat.margin.compute()
    assert len(rows) == doc["rows"] > 0 and len(margin_rows) > 0
    assert rows["obs_publisher_did"].is_unique
