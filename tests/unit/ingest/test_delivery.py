"""Ingest guarantees: validation, append-only releases, idempotence, crashes, concurrency."""

from __future__ import annotations

import json
import shutil
import threading

import astropy.units as u
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from chalicelib.ingest.delivery import DeliveryError, ingest
from chalicelib.ingest.maintenance import compact
from chalicelib.lake import moc as coverage
from chalicelib.lake import releases, schema
from chalicelib.lake.storage import Archive
from chalicelib.query.catalogue import Catalogue


def _records(delivery, kind):
    return pq.read_table(delivery / f"{kind}.parquet")


def _count(cat, table, where="TRUE"):
    return cat.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {where}")["n"][0].as_py()


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_ingested_rows_match_the_records(archive, deliveries):
    cat = Catalogue(archive)
    planes = sum(_records(d, "plane").num_rows for d in deliveries)
    assert cat.release.number == 2 and cat.release.deliveries == [d.name for d in deliveries]
    for table, kind in (("spherex.plane", "plane"), ("spherex.observation", "observation"),
                        ("spherex.artifact", "artifact"), ("spherex.provenance", "provenance")):
        assert _count(cat, table) == sum(_records(d, kind).num_rows for d in deliveries)
    assert _count(cat, "ivoa.obscore") == planes == _count(cat, "spherex.obscore")
    packed = cat.query("SELECT s_region, s_region_bin FROM ivoa.obscore")
    for poly, raw in zip(packed["s_region"].to_pylist(), packed["s_region_bin"].to_pylist()):
        assert (raw is None) == (poly is None)
        assert raw is None or np.frombuffer(raw, "<f8").tolist() == poly


def test_obscore_has_the_mandatory_columns_filled(archive, deliveries):
    cat = Catalogue(archive, base_url="https://example.org/api")
    names = [c.name for c in schema.OBSCORE_MANDATORY]
    rows = cat.query(f"SELECT {', '.join(names)} FROM ivoa.obscore "
                     "WHERE dataproduct_type = 'image'")
    for col in ("dataproduct_type", "calib_level", "obs_collection", "obs_id",
                "obs_publisher_did", "access_url", "access_format", "s_ra", "s_dec",
                "s_region", "t_min", "t_max", "em_min", "em_max", "facility_name"):
        assert rows[col].null_count == 0, col
    assert all(u.startswith("https://example.org/api/datalink/links?ID=ivo%3A%2F%2F")
               for u in rows["access_url"].to_pylist())
    plane = _records(deliveries[0], "plane")
    one = plane.filter(pc.equal(plane["dataproduct_type"], "image")).slice(0, 1).to_pylist()[0]
    got = cat.query("SELECT em_min, em_max, s_region, t_min FROM ivoa.obscore WHERE "
                    f"obs_publisher_did = '{one['obs_publisher_did']}'").to_pylist()[0]
    assert got["em_min"] == one["energy_bounds_lower"] and got["s_region"] == one["poly"]
    assert got["t_min"] == one["time_bounds_lower"]


def test_rows_are_ordered_by_healpix_in_each_file(archive):
    from chalicelib.lake.tables import open_table

    dt = open_table(archive, "ivoa.obscore")
    for uri in dt.file_uris():
        hpx = pq.read_table(uri, columns=["hpx"])["hpx"].drop_null().to_numpy()
        assert np.all(np.diff(hpx) >= 0)


def test_reingest_changes_nothing(archive, deliveries):
    before = releases.load(archive)
    summary = ingest(deliveries[0], archive)
    assert summary.skipped and releases.load(archive) == before


def _corrupt_checksum(d):
    files = json.loads((d / "manifest.json").read_text())["files"]
    path = d / "data" / files[0]["key"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    return "checksum"


def _drop_column(d):
    t = _records(d, "plane").drop_columns(["poly"])
    pq.write_table(t, d / "plane.parquet")
    man = json.loads((d / "manifest.json").read_text())
    man["tables"]["plane"].pop("md5", None)
    (d / "manifest.json").write_text(json.dumps(man))
    return "missing columns"


def _bad_footprint(d):
    t = _records(d, "plane").to_pylist()
    i = next(i for i, r in enumerate(t) if r["poly"])
    t[i]["poly"] = [v if k % 2 == 0 else 95.0 for k, v in enumerate(t[i]["poly"])]
    pq.write_table(pq.read_table(d / "plane.parquet").from_pylist(
        t, schema=pq.read_schema(d / "plane.parquet")), d / "plane.parquet")
    man = json.loads((d / "manifest.json").read_text())
    man["tables"]["plane"].pop("md5", None)
    (d / "manifest.json").write_text(json.dumps(man))
    return "Dec"


def _missing_file(d):
    files = json.loads((d / "manifest.json").read_text())["files"]
    (d / "data" / files[-1]["key"]).unlink()
    return "missing"


@pytest.mark.parametrize("damage", [_corrupt_checksum, _drop_column, _bad_footprint,
                                    _missing_file])
def test_bad_delivery_is_rejected_and_nothing_committed(tmp_path, deliveries, damage):
    arch = Archive.from_env(str(tmp_path / "arch"))
    d = _copy(deliveries[0], tmp_path)
    words = damage(d)
    with pytest.raises(DeliveryError, match=words):
        ingest(d, arch)
    assert releases.load(arch).number == 0 and not arch.exists("tables")
    assert _count(Catalogue(arch), "ivoa.obscore") == 0


def test_killed_ingest_leaves_nothing_and_can_be_rerun(tmp_path, deliveries, monkeypatch):
    arch = Archive.from_env(str(tmp_path / "arch"))

    def crash(*a, **k):
        raise KeyboardInterrupt("killed before the release was written")

    with monkeypatch.context() as m:
        m.setattr(releases, "commit", crash)
        with pytest.raises(KeyboardInterrupt):
            ingest(deliveries[0], arch)
    assert arch.exists("tables/ivoa.obscore")  # rows were appended ...
    assert _count(Catalogue(arch), "ivoa.obscore") == 0  # ... but none is visible
    ingest(deliveries[0], arch)
    n = _records(deliveries[0], "plane").num_rows
    assert _count(Catalogue(arch), "ivoa.obscore") == n  # once, not twice


def test_compaction_keeps_an_unreleased_run_out_of_sight(tmp_path, deliveries, monkeypatch):
    """Compacted files hold released rows only (readers skip the per-row visibility test
    there): rows of a run that never released stay in their delivery and stay hidden."""
    arch = Archive.from_env(str(tmp_path / "arch"))
    ingest(deliveries[0], arch)
    with monkeypatch.context() as m:
        m.setattr(releases, "commit", lambda *a, **k: (_ for _ in ()).throw(
            KeyboardInterrupt("killed before the release was written")))
        with pytest.raises(KeyboardInterrupt):
            ingest(deliveries[1], arch)
    n0 = _records(deliveries[0], "plane").num_rows
    compact(arch)
    from chalicelib.lake.tables import open_table

    hidden = [f for f in open_table(arch, "ivoa.obscore").file_uris()
              if "delivery=_compacted" not in f]
    assert hidden and _count(Catalogue(arch), "ivoa.obscore") == n0
    ingest(deliveries[1], arch)  # the rerun lands once; the killed run stays hidden
    n1 = _records(deliveries[1], "plane").num_rows
    assert _count(Catalogue(arch), "ivoa.obscore") == n0 + n1


def test_two_deliveries_ingested_at_once_both_land(tmp_path, deliveries):
    arch = Archive.from_env(str(tmp_path / "arch"))
    ingest(deliveries[0], arch)  # tables exist: the race is on appends and the release
    errors = []

    def run(d):
        try:
            ingest(d, arch)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    copies = [_copy(deliveries[1], tmp_path / f"c{i}") for i in range(2)]
    threads = [threading.Thread(target=run, args=(c,)) for c in copies]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    rel = releases.load(arch)
    assert rel.deliveries == [d.name for d in deliveries] and rel.number == 2
    total = sum(_records(d, "plane").num_rows for d in deliveries)
    assert _count(Catalogue(arch), "ivoa.obscore") == total  # the duplicate run stays hidden


def test_pinned_release_sees_the_past(archive, deliveries):
    first = _records(deliveries[0], "plane").num_rows
    assert _count(Catalogue(archive, release=1), "ivoa.obscore") == first
    assert _count(Catalogue(archive, release=1), "spherex.plane",
                  f"obsid LIKE '%{deliveries[1].name}%'") == 0


def test_collection_moc_covers_the_footprints(archive):
    cat = Catalogue(archive)
    rel = cat.release
    rows = cat.query("SELECT obs_collection, s_ra, s_dec FROM ivoa.obscore "
                     "WHERE s_region IS NOT NULL")
    for coll in set(rows["obs_collection"].to_pylist()):
        sel = rows.filter(pc.equal(rows["obs_collection"], coll))
        moc = coverage.collection_moc(archive, coll, rel)
        inside = moc.contains_lonlat(sel["s_ra"].to_numpy() * u.deg,
                                     sel["s_dec"].to_numpy() * u.deg)
        assert inside.all(), coll
    assert set(coverage.collections(archive, rel)) == set(rows["obs_collection"].to_pylist())


def test_s3_ingest_and_query_through_moto(s3_archive, deliveries):
    for d in deliveries:
        ingest(d, s3_archive)
    cat = Catalogue(s3_archive)
    assert cat.release.number == 2
    total = sum(_records(d, "plane").num_rows for d in deliveries)
    assert _count(cat, "ivoa.obscore") == total
    key = json.loads((deliveries[0] / "manifest.json").read_text())["files"][0]["key"]
    assert s3_archive.exists("data/" + key)
    assert ingest(deliveries[0], s3_archive).skipped
    compact(s3_archive)  # DuckDB sorts, reading S3 through httpfs; deltalake writes
    from chalicelib.lake.tables import open_table

    assert all("delivery=_compacted-" in f
               for f in open_table(s3_archive, "ivoa.obscore").file_uris())
    assert _count(Catalogue(s3_archive), "ivoa.obscore") == total


def test_s3_release_commit_is_exclusive(s3_archive):
    s3_archive.create_exclusive("x/one", b"1")
    from chalicelib.lake.storage import PreconditionFailed

    with pytest.raises(PreconditionFailed):
        s3_archive.create_exclusive("x/one", b"2")
    assert s3_archive.read_bytes("x/one") == b"1"


def test_compact_keeps_rows_and_visibility(tmp_path, deliveries):
    arch = Archive.from_env(str(tmp_path / "arch"))
    for d in deliveries:
        ingest(d, arch)
    before = Catalogue(arch).query("SELECT obs_publisher_did FROM ivoa.obscore ORDER BY 1")
    report = compact(arch)
    assert "release 3" in report
    after = Catalogue(arch).query("SELECT obs_publisher_did FROM ivoa.obscore ORDER BY 1")
    assert before.equals(after)
    from chalicelib.lake.tables import open_table

    files = open_table(arch, "ivoa.obscore").file_uris()
    assert all("delivery=_compacted" in f for f in files)  # one sky-sorted partition
    for f in files:
        hpx = pq.read_table(f, columns=["hpx"])["hpx"].drop_null().to_numpy()
        assert np.all(np.diff(hpx) >= 0)
    assert _count(Catalogue(arch, release=2), "ivoa.obscore") == before.num_rows


def test_cone_queries_skip_whole_files_and_lose_no_row(tmp_path, monkeypatch):
    """After compaction every file is a run of the HEALPix order: a cone names only the
    files its cap can touch (from the Delta statistics), and finds exactly the rows the
    exact test finds over every row of every file."""
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest import maintenance
    from chalicelib.query.adql import translate
    from chalicelib.services.tap.meta import all_tables

    arch = Archive.from_env(str(tmp_path / "arch"))
    for d in synthesize(tmp_path / "in", 2, images_per_week=6000, metadata_only=True):
        ingest(d, arch)
    monkeypatch.setattr(maintenance, "SPATIAL_FILE_SIZE", 80_000)  # files of 1024 rows
    compact(arch)
    cat = Catalogue(arch)
    n_files = len(cat.stats("ivoa.obscore").uris)
    assert n_files >= 10
    rng = np.random.default_rng(5)
    pos = cat.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_ra IS NOT NULL "
                    "USING SAMPLE 12 ROWS (reservoir, 3)").to_pylist()
    pruned_files = []
    for i, p in enumerate(pos):
        ra, dec = (p["s_ra"] + rng.normal(0, 1)) % 360, float(np.clip(p["s_dec"], -89, 89))
        shape = [f"POINT('ICRS', {ra}, {dec})", f"CIRCLE('ICRS', {ra}, {dec}, 0.1)",
                 f"CIRCLE('ICRS', {ra}, {dec}, 2)"][i % 3]
        fn = "CONTAINS" if shape.startswith("POINT") else "INTERSECTS"
        adql = f"SELECT obs_publisher_did FROM ivoa.obscore WHERE {fn}({shape}, s_region) = 1"
        fast = translate(adql, all_tables(), box_sql=cat.box_sql).sql
        slow = translate(adql, all_tables()).sql
        got = set(cat.query(fast)["obs_publisher_did"].to_pylist())
        assert got == set(cat.query(slow)["obs_publisher_did"].to_pylist()) and got
        assert "_file" in fast
        pruned_files.append(fast.count(".parquet"))
    assert max(pruned_files) < n_files / 2


def test_new_weeks_merge_into_tiers_then_compact_into_one(tmp_path):
    """after_ingest merges only the weeks delivered since the last merge into a new
    HEALPix-sorted tier, compacts the tiers into one when there are too many, and no
    release ever sees a row twice or loses one."""
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest import maintenance
    from chalicelib.lake.tables import open_table

    arch = Archive.from_env(str(tmp_path / "arch"))
    weeks = synthesize(tmp_path / "in", 5, images_per_week=1500, metadata_only=True)
    ids = []

    def check(layout):
        got = Catalogue(arch).query("SELECT obs_publisher_did FROM ivoa.obscore")
        assert sorted(got["obs_publisher_did"].to_pylist()) == sorted(ids)
        assert maintenance.layout(arch) == layout
        for f in open_table(arch, "ivoa.obscore").file_uris():
            hpx = pq.read_table(f, columns=["hpx"])["hpx"].drop_null().to_numpy()
            assert np.all(np.diff(hpx) >= 0)

    expected = [(1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]  # weekly partitions, tiers
    for week, layout in zip(weeks, expected):
        ingest(week, arch)
        ids += _records(week, "plane")["obs_publisher_did"].to_pylist()
        maintenance.after_ingest(arch, every=2, max_tiers=2)
        check(layout)
    assert "release" in maintenance.after_ingest(arch, every=1, max_tiers=2)  # 3 > 2 tiers
    check((0, 1))
    first = Catalogue(arch, release=1).query("SELECT COUNT(*) AS n FROM ivoa.obscore")
    assert first["n"][0].as_py() == len(_records(weeks[0], "plane"))  # pinned: unchanged
