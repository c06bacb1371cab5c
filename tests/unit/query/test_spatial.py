"""The spatial index and the cone lane: answers equal to brute force.

The index alone (numpy, random rows incl. the poles, RA 0/360, huge and unknown radii,
rows without a centre) is checked against the angles computed in float64 here; the
catalogue (index + cone lane) against numpy brute force over every row (DISTANCE,
CONTAINS(POINT) on the convex footprints) and against the same ADQL run with no pruning
at all (every row through the exact kernels), on a fresh week and after compaction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from chalicelib.query import catalogue as catalogue_mod
from chalicelib.query import spatial
from chalicelib.query.adql import translate
from chalicelib.query.catalogue import Catalogue
from tests.support.adqlshapes import box_polygon

# ---- the index alone ---------------------------------------------------------------------


def _unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def _angle(ra1, dec1, ra2, dec2):
    """Degrees between positions (float64, atan2 form: exact at all separations)."""
    a, b = _unit(ra1, dec1), _unit(ra2, dec2)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(a * b, -1)))


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(17)
    n = 20_000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    dec[:300] = rng.uniform(88.5, 90, 300)  # the poles
    dec[300:600] = rng.uniform(-90, -88.5, 300)
    ra[600:900] = rng.choice([0.0, 359.9999, 1e-9, 360 - 1e-9], 300)  # the RA wrap
    rmax = rng.uniform(0.5, 2.6, n)
    rmax[900:950] = rng.uniform(20, 179, 50)  # huge footprints
    rmax[950:960] = np.nan  # radius unknown: always a candidate
    ra[960:970] = np.nan  # no centre: never one
    return ra, dec, rmax


def _cones(rng, k):
    out = [(0.0, 90.0, 0.0), (123.0, -90.0, 1.0), (0.0, 0.0, 0.5), (359.99, 10.0, 0.3),
           (180.0, 89.0, 3.0), (10.0, -45.0, 170.0)]
    for _ in range(k):
        out.append((rng.uniform(0, 360), math.degrees(math.asin(rng.uniform(-1, 1))),
                    float(rng.choice([0.0, 0.01, 0.1, 1.0, 5.0]))))
    return out


def test_index_candidates_are_every_touching_row_and_little_else(rows):
    ra, dec, rmax = rows
    n = len(ra)
    half = n // 2  # two files, row numbers from 0 in each
    parts = [spatial.FileRows.of(np.arange(half), ra[:half], dec[:half], rmax[:half]),
             spatial.FileRows.of(np.arange(n - half), ra[half:], dec[half:], rmax[half:])]
    index = spatial.SpatialIndex(["a", "b"], parts)
    assert index.rows == n - 10  # the rows without a centre are not kept
    assert index.nbytes == index.rows * spatial.BYTES_PER_ROW
    rng = np.random.default_rng(3)
    for cra, cdec, r in _cones(rng, 60):
        sep = _angle(ra, dec, cra, cdec)
        for footprint in (True, False):
            reach = r + (np.nan_to_num(rmax, nan=np.inf) if footprint else 0.0)
            must = np.flatnonzero(np.nan_to_num(sep, nan=np.inf) <= reach)
            may = np.flatnonzero(np.nan_to_num(sep, nan=np.inf) <= reach + 3 * spatial.MARGIN)
            found = index.candidates(cra, cdec, r, footprint)
            assert found is not None
            got = index.file[found].astype(np.int64) * half + index.row[found]
            assert len(set(got.tolist())) == len(got)  # each row once
            assert set(must.tolist()) <= set(got.tolist()), (cra, cdec, r, footprint)
            assert set(got.tolist()) <= set(may.tolist()), (cra, cdec, r, footprint)


def kernels():
    """Loaded before the queries: a polygon query whose kernels finish loading while it
    runs in DuckDB's threads crashed the process (seen on main too; see README)."""
    from chalicelib.geometry import sky

    sky.kernels_ready(wait=True)


@pytest.fixture(scope="module")
def weeks(tmp_path_factory):
    """Three metadata-only weeks (wide survey, deep field, calibration rows without a
    footprint)."""
    from chalicelib.devtools.synth import synthesize

    out = tmp_path_factory.mktemp("spatial-synth")
    return synthesize(out, weeks=3, images_per_week=600, metadata_only=True, seed=11)


@pytest.fixture(scope="module")
def sky_archive(tmp_path_factory, weeks):
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive

    arch = Archive.from_env(str(tmp_path_factory.mktemp("spatial-archive")))
    for d in weeks[:2]:
        ingest(d, arch)
    return arch


def _tables():
    from chalicelib.services.tap.meta import all_tables

    return all_tables()


def _ids(cat, adql, pruned=True):
    sql = translate(adql, _tables(), box_sql=cat.box_sql if pruned else None).sql
    return cat.query(sql, timeout=600)["obs_publisher_did"].to_pylist()


def _all_rows(cat):
    t = cat.query("SELECT obs_publisher_did, s_ra, s_dec, s_region FROM ivoa.obscore",
                  timeout=600)
    return (np.array(t["obs_publisher_did"].to_pylist()),
            t["s_ra"].to_numpy(zero_copy_only=False),
            t["s_dec"].to_numpy(zero_copy_only=False), t["s_region"].to_pylist())


def _inside_convex(ra, dec, poly) -> bool:
    """Point in a convex spherical polygon: on the same side of every edge's great circle."""
    v = _unit(np.array(poly[0::2]), np.array(poly[1::2]))
    p = _unit(ra, dec)
    if np.dot(v.mean(0), p) <= 0:  # the far hemisphere (the antipode passes the sides)
        return False
    sides = [np.dot(np.cross(v[i], v[(i + 1) % len(v)]), p) for i in range(len(v))]
    return all(s >= -1e-12 for s in sides) or all(s <= 1e-12 for s in sides)


def _positions(ra, dec, k, rng):
    """Cones at rows' centres (offset), at the poles and across RA 0/360."""
    ok = np.flatnonzero(np.isfinite(ra))
    pick = rng.choice(ok, k, replace=False)
    out = [(float((ra[i] + 0.4) % 360), float(np.clip(dec[i] - 0.3, -90, 90))) for i in pick]
    return out + [(0.0, 90.0), (200.0, -90.0), (359.95, float(dec[ok[0]])),
                  (0.02, float(dec[ok[0]]))]


def _lane_used(cat, adql):
    before = catalogue_mod.LANE_ROWS[0]
    for _ in range(3):  # the first cone marks its files, the next query indexes them
        got = _ids(cat, adql)
    return got, catalogue_mod.LANE_ROWS[0] > before


def test_distance_and_point_cones_equal_brute_force(sky_archive):
    cat = Catalogue(sky_archive)
    ids, ra, dec, regions = _all_rows(cat)
    rng = np.random.default_rng(23)
    used = 0
    for cra, cdec in _positions(ra, dec, 8, rng):
        for r in (0.05, 1.0, 4.0):
            adql = ("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
                    f"DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {cra!r}, {cdec!r})) < {r}")
            got, lane = _lane_used(cat, adql)
            sep = _angle(ra, dec, cra, cdec)
            want = set(ids[np.nan_to_num(sep, nan=np.inf) < r].tolist())
            assert sorted(got) == sorted(want), (cra, cdec, r)
            used += lane
        adql = ("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
                f"CONTAINS(POINT('ICRS', {cra!r}, {cdec!r}), s_region) = 1")
        got, lane = _lane_used(cat, adql)
        want = {i for i, poly in zip(ids.tolist(), regions)
                if poly is not None and _inside_convex(cra, cdec, poly)}
        assert sorted(got) == sorted(want), (cra, cdec)
        used += lane
    assert used >= 20  # the cone lane answered most of them (not the empty cones)


def _footprint_queries(cra, cdec):
    cra, cdec = float(cra), float(cdec)
    poly = box_polygon(cra, cdec, 0.3, 0.2)
    sel = "SELECT obs_publisher_did FROM ivoa.obscore WHERE "
    return [
        sel + f"INTERSECTS(CIRCLE('ICRS', {cra!r}, {cdec!r}, 0.1), s_region) = 1",
        sel + f"INTERSECTS(CIRCLE('ICRS', {cra!r}, {cdec!r}, 1.5), s_region) = 1",
        sel + f"INTERSECTS(s_region, POLYGON('ICRS', {poly})) = 1",
        sel + f"CONTAINS(s_region, CIRCLE('ICRS', {cra!r}, {cdec!r}, 3)) = 1",
        sel + f"1 = CONTAINS(CIRCLE('ICRS', {cra!r}, {cdec!r}, 0.01), s_region)",
        # other terms ANDed with the cone, TOP and ORDER BY
        "SELECT TOP 7 obs_publisher_did FROM ivoa.obscore WHERE obs_collection = "
        f"'spherex_qr2' AND INTERSECTS(CIRCLE('ICRS', {cra!r}, {cdec!r}, 2), s_region) = 1 "
        "AND t_exptime > 0 ORDER BY obs_publisher_did DESC",
        # not a simple cone: a join, and an OR (no box at all): DuckDB as before
        "SELECT a.obs_publisher_did FROM ivoa.obscore AS a JOIN ivoa.obscore AS b "
        "ON a.obs_publisher_did = b.obs_publisher_did WHERE "
        f"INTERSECTS(CIRCLE('ICRS', {cra!r}, {cdec!r}, 0.5), a.s_region) = 1",
        sel + f"INTERSECTS(CIRCLE('ICRS', {cra!r}, {cdec!r}, 0.5), s_region) = 1 "
        "OR obs_publisher_did = 'nothing'",
    ]


def _check_footprints(cat, positions):
    for cra, cdec in positions:
        for adql in _footprint_queries(cra, cdec):
            got, _ = _lane_used(cat, adql)
            want = _ids(cat, adql, pruned=False)  # every row through the exact kernels
            if "TOP" in adql:
                assert got == want, adql
            else:
                assert sorted(got) == sorted(want), adql


def test_footprint_cones_equal_the_unpruned_query(sky_archive):
    cat = Catalogue(sky_archive)
    _, ra, dec, _ = _all_rows(cat)
    _check_footprints(cat, _positions(ra, dec, 4, np.random.default_rng(29)))


def test_a_new_week_and_compaction_give_new_indexes_and_the_same_answers(
        tmp_path, weeks):
    """A fresh unmerged week is seen by the next query (new release: new candidates, its
    files indexed), and compaction (new files) answers the same."""
    import shutil

    from chalicelib.ingest.delivery import ingest
    from chalicelib.ingest.maintenance import compact
    from chalicelib.lake.storage import Archive

    arch = Archive.from_env(str(tmp_path / "archive"))
    ingest(weeks[0], arch)
    cat = Catalogue(arch)
    ids, ra, dec, _ = _all_rows(cat)

    def cone(i):
        return ("SELECT obs_publisher_did FROM ivoa.obscore WHERE INTERSECTS(CIRCLE('ICRS', "
                f"{float(ra[i])!r}, {float(dec[i])!r}, 2), s_region) = 1")

    first = int(np.flatnonzero(np.isfinite(ra))[np.argsort(ids[np.isfinite(ra)])[0]])
    adql = cone(first)
    before, lane = _lane_used(cat, adql)
    assert lane and before
    assert sorted(before) == sorted(_ids(cat, adql, pruned=False))
    ingest(weeks[2], arch)  # a new release: its rows are answered by the next queries
    after, lane = _lane_used(cat, adql)
    assert lane and set(before) <= set(after)
    assert sorted(after) == sorted(_ids(cat, adql, pruned=False))
    old = set(ids.tolist())
    ids, ra, dec, _ = _all_rows(cat)
    fresh = sorted(i for i, r in zip(ids.tolist(), ra) if i not in old and np.isfinite(r))
    k = ids.tolist().index(fresh[0])  # a cone around a row of the new week
    new_week, lane = _lane_used(cat, cone(k))
    assert lane and fresh[0] in new_week
    assert sorted(new_week) == sorted(_ids(cat, cone(k), pruned=False))
    compact(arch)
    merged, lane = _lane_used(cat, adql)
    assert lane and sorted(merged) == sorted(after)
    merged, lane = _lane_used(cat, cone(k))
    assert lane and sorted(merged) == sorted(new_week)
    shutil.rmtree(tmp_path / "archive", ignore_errors=True)


def test_pinned_release_keeps_its_own_rows(sky_archive):
    """Two catalogues of different releases share translations by release only."""
    old, new = Catalogue(sky_archive, release=1), Catalogue(sky_archive)
    _, ra, dec, _ = _all_rows(new)
    i = int(np.flatnonzero(np.isfinite(ra))[-1])
    adql = ("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
            f"INTERSECTS(CIRCLE('ICRS', {float(ra[i])!r}, {float(dec[i])!r}, 3), s_region) = 1")
    for cat in (old, new, old, new):
        got, _ = _lane_used(cat, adql)
        assert sorted(got) == sorted(_ids(cat, adql, pruned=False))


def test_a_merged_index_finds_what_the_indexes_of_its_files_find(rows):
    """One index over several files (SpatialIndex.merged) against one index per file:
    the same rows of the same files for every cone, pole and RA wrap included."""
    ra, dec, rmax = rows
    cuts = [0, 3_000, 3_001, 11_000, len(ra)]  # a file of one row among them
    files = [spatial.SpatialIndex([f"f{k}"], [spatial.FileRows.of(
        np.arange(b - a), ra[a:b], dec[a:b], rmax[a:b])]) for k, (a, b) in
        enumerate(zip(cuts[:-1], cuts[1:]))]
    files.append(spatial.SpatialIndex(["empty"], []))
    merged = spatial.SpatialIndex.merged(files)
    assert merged.uris == [u for ix in files for u in ix.uris]
    assert merged.rows == sum(ix.rows for ix in files) and merged.nbytes == \
        sum(ix.nbytes for ix in files)
    rng = np.random.default_rng(5)
    nonempty = 0
    for cra, cdec, r in _cones(rng, 40):
        for footprint in (True, False):
            want = set()
            for ix in files:
                found = ix.candidates(cra, cdec, r, footprint)
                want |= {(ix.uris[0], int(x)) for x in ix.row[found]}
            found = merged.candidates(cra, cdec, r, footprint)
            got = [(merged.uris[int(f)], int(x))
                   for f, x in zip(merged.file[found], merged.row[found])]
            assert len(got) == len(set(got)) and set(got) == want, (cra, cdec, r)
            nonempty += len({f for f, _ in want}) >= 2
    assert nonempty > 20  # rows of several files, not only empty answers


def test_a_release_of_several_files_is_looked_up_in_one_index(sky_archive, monkeypatch):
    """After the first cones, the indexing thread puts the release's files into one
    index; cones then look it up once, not once per file, and get the same candidate
    rows per file, in the same order, as the per-file look-up."""
    cat = Catalogue(sky_archive)
    ids, ra, dec, _ = _all_rows(cat)
    rng = np.random.default_rng(8)
    cones = _positions(ra, dec, 6, rng)
    for cra, cdec in cones:  # index the files (each first cone marks them)
        _lane_used(cat, f"SELECT obs_publisher_did FROM ivoa.obscore WHERE INTERSECTS("
                        f"CIRCLE('ICRS', {cra!r}, {cdec!r}, 1), s_region) = 1")
    if cat._indexer is not None:
        cat._indexer.join(120)
    opened = cat.current()
    index, covered, visible = opened.combined["ivoa.obscore"]
    # (the calibration files, which no cone meets, are not indexed)
    assert covered <= visible and len(covered) >= 2 and index.rows == \
        sum(cat._indexes[u].rows for u in covered)
    stats = opened.files["ivoa.obscore"]
    files = [u for u in stats.uris if u in covered]
    across = 0
    per_file_calls = []
    real = spatial.SpatialIndex.candidates

    def spy(self, *a, **k):
        if len(self.uris) == 1:
            per_file_calls.append(self.uris[0])
        return real(self, *a, **k)

    monkeypatch.setattr(spatial.SpatialIndex, "candidates", spy)
    for cra, cdec in cones:
        for r, footprint in ((0.0, True), (1.0, True), (2.0, False)):
            got = cat._candidates(opened, "ivoa.obscore", files, cra, cdec, r, footprint)
            assert per_file_calls == []
            monkeypatch.setitem(opened.combined, "ivoa.obscore", (index, set(), visible))
            want = cat._candidates(opened, "ivoa.obscore", files, cra, cdec, r,
                                   footprint)  # the per-file way
            monkeypatch.setitem(opened.combined, "ivoa.obscore", (index, covered, visible))
            assert per_file_calls and list(got) == list(want)
            assert all(np.array_equal(got[u], want[u]) for u in got)
            per_file_calls.clear()
            across += len(got) >= 2
    assert across >= 6  # cones with rows in several files were among them


def test_row_groups_take_rows_across_groups_as_the_file_holds_them(tmp_path):
    """RowGroups.take against pyarrow's own read: rows in one group, across several,
    none, the first and last row; strings, lists with NULLs, numbers; a small cache
    limit (groups dropped and read again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2)
    n = 1_000
    lists = [None if k % 7 == 0 else list(rng.random(k % 5)) for k in range(n)]
    t = pa.table({"s": [f"id-{k}" for k in range(n)], "l": lists,
                  "x": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.random(n)))})
    path = str(tmp_path / "f.parquet")
    pq.write_table(t, path, row_group_size=128)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    for limit in (spatial.CACHE_BYTES, 20_000):
        groups = spatial.RowGroups(lambda u: u, limit=limit)
        picks = [np.array([], np.int64), np.array([0]), np.array([n - 1]),
                 np.arange(130, 140), np.arange(120, 140), np.array([0, 127, 128, 999])]
        picks += [np.sort(rng.choice(n, k, replace=False)) for k in (5, 50, 500, n)]
        for rows in picks:
            got = groups.take(path, rows, ["s", "l", "x", "absent"])
            assert set(got) == {"s", "l", "x"}
            for c in ("s", "l", "x"):
                want = t[c].take(pa.array(rows, pa.int64())).combine_chunks()
                same = np.array_equal(got[c].to_numpy(), want.to_numpy(), equal_nan=True) \
                    if c == "x" else got[c].equals(want)
                assert got[c].type == want.type and same, (c, rows[:5])
        assert groups.bytes <= max(limit, 0) + 20_000
