"""The Spark engine answers as DuckDB does: the ADQL corpus on both, release-pinned
reads, routing of TAP async jobs, progress, ABORT and uploads.

One Spark session for the file (module fixture; xdist's loadfile keeps the file on one
worker). The in-memory corpus uses test_adql's tables (random rows crowded at RA 0/360
and the poles), loaded from the same Arrow tables into DuckDB and into Spark views; the
geometry cases are also checked against test_adql's independent brute force.
"""

from __future__ import annotations

import math
import threading
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from chalicelib import config
from chalicelib.geometry import sqlfunctions
from chalicelib.jobs.uws import Job, JobAborted, LocalJobStore, RunContext, UWSUsageError
from chalicelib.lake import schema
from chalicelib.query import catalogue, runtime
from chalicelib.query.adql import translate
from chalicelib.query.adql.dialect import parse
from chalicelib.query.adql.spark import view_name
from chalicelib.query.catalogue import Catalogue
from chalicelib.query.spark.engine import SparkCatalogue, java_available, stage_progress
from chalicelib.services.tap import asyncjobs, engines
from chalicelib.web.params import Params
from tests.unit.query import test_adql as T

needs_java = pytest.mark.skipif(not java_available(), reason="no Java runtime: pyspark "
                                "cannot start (.ci/run installs openjdk-17-jre-headless)")


# ---- one Spark session, and the in-memory corpus tables on both engines ---------------


@pytest.fixture(scope="module")
def spark():
    """A session on a standalone cluster (master + 2 workers on 127.0.0.1, stopped after);
    local[2] if the cluster cannot start here."""
    if not java_available():
        pytest.skip("no Java runtime: pyspark cannot start")
    from chalicelib.devtools.sparkcluster import StandaloneCluster
    from chalicelib.query.spark import session

    cluster = StandaloneCluster(workers=2, cores=1, memory="1g")
    try:
        master = cluster.start()
    except (OSError, RuntimeError, TimeoutError) as e:
        cluster.stop()
        master = "local[2]"
        print(f"standalone cluster did not start ({e}); using local[2]")
    try:
        yield session.job_session(master)
    finally:
        session.stop()
        cluster.stop()


@pytest.fixture(scope="module")
def engines_mem(spark):
    """(DuckDB connection, Spark session, obscore rows), the same tables in both."""
    rng = np.random.default_rng(20251126)
    oc = T._obscore_rows(rng)
    caom = T._caom_rows(oc)
    data = {"ivoa.obscore": (oc, T.N), "spherex.obscore": (oc, T.N),
            "spherex.plane": (caom["plane"], T.N),
            "spherex.observation": (caom["observation"], len(caom["observation"]["obsid"])),
            "spherex.artifact": (caom["artifact"], T.N), "spherex.provenance": ({}, 30)}
    con = duckdb.connect()
    sqlfunctions.register(con)
    for s in ("ivoa", "spherex", '"TAP_SCHEMA"'):
        con.execute(f"CREATE SCHEMA {s}")
    tables = {name: T._fill(schema.TABLES[name], rows, n) for name, (rows, n) in data.items()}
    tables.update({f"TAP_SCHEMA.{k}": v for k, v in catalogue.tap_schema_tables().items()})
    for name, table in tables.items():
        con.register("_load", table)
        sch, short = name.split(".")
        con.execute(f'CREATE TABLE "{sch}".{short} AS SELECT * FROM _load')
        con.unregister("_load")
        spark.createDataFrame(table).createOrReplaceTempView(view_name(sch, short))
    upload = pa.table({"name": ["a", "b", "c"], "ra": [10.0, 0.1, 359.95],
                       "dec": [20.0, 0.0, -0.4]})
    con.register("_upload_mine", upload)
    spark.createDataFrame(upload).createOrReplaceTempView("_upload_mine")
    return con, spark, oc


# ---- comparing answers ---------------------------------------------------------------


def _kind(t: pa.DataType) -> str:
    """A type up to list field names (DuckDB names its list items 'l', Spark 'element')."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_kind(t.value_type)}>"
    return "string" if pa.types.is_large_string(t) else str(t)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        # sums and averages are added up in another order, sin/cos come from another
        # maths library: equal to ~1e-12, not to the last bit
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (a != a and b != b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _key(row: dict) -> str:
    return repr([round(v, 6) if isinstance(v, float) else v for v in row.values()])


def same_answers(duck: pa.Table, spark: pa.Table, ordered: bool) -> None:
    assert duck.column_names == spark.column_names
    assert [_kind(t) for t in duck.schema.types] == [_kind(t) for t in spark.schema.types]
    a, b = duck.to_pylist(), spark.to_pylist()
    assert len(a) == len(b)
    if not ordered:
        a, b = sorted(a, key=_key), sorted(b, key=_key)
    bad = [(x, y) for x, y in zip(a, b) if not all(_close(x[k], y[k]) for k in x)]
    assert not bad, bad[:3]


def _ordered(adql: str) -> bool:
    """Does the whole query have an ORDER BY (a member's own does not order a UNION)?"""
    return parse(adql).args.get("order") is not None


def _deterministic(adql: str) -> bool:
    """TOP without ORDER BY picks any rows; RAND differs per engine by design."""
    low = adql.lower()
    return "rand(" not in low and not (("top" in low or "offset" in low) and "order" not in low)


def run_both(mem, adql: str, cap: int = 50_000) -> None:
    con, spark, _ = mem
    from chalicelib.query.spark.session import to_arrow

    duck = con.execute(T.tr(adql).sql).to_arrow_table()
    sql = T.tr(adql, dialect="spark").sql
    if duck.num_rows > cap:  # a big join: the count and the types, not every row
        if duck.num_rows < 10 * cap:  # (counting 470 M joined rows took Spark 20 s)
            assert spark.sql(f"SELECT COUNT(*) FROM ({sql}) AS q").collect()[0][0] \
                == duck.num_rows
        types = to_arrow(spark.sql(sql), 0).schema.types
        assert [_kind(t) for t in duck.schema.types] == [_kind(t) for t in types]
        return
    got = to_arrow(spark.sql(sql), None)
    if _deterministic(adql):
        same_answers(duck, got, _ordered(adql))
    else:
        assert got.num_rows == duck.num_rows
        assert [_kind(t) for t in duck.schema.types] == [_kind(t) for t in got.schema.types]


# ---- the corpus ----------------------------------------------------------------------

# translator cases (test_adql's semantics tests), each run on both engines
TRANSLATOR = [
    "SELECT TOP 1 7/2, -7/2, 7.0/2, 7/2.0, 1/3*3, 2+3*4, (2+3)*4, 0x1F FROM ivoa.obscore "
    "ORDER BY obs_id",
    "SELECT obs_id, s_xel1, s_xel2, s_xel1 / s_xel2, MOD(s_xel1, s_xel2), -s_xel1 / 3 "
    "FROM ivoa.obscore",
    "SELECT obs_id, ABS(-s_resolution), CEILING(s_resolution), FLOOR(s_resolution), "
    "CEILING(calib_level), FLOOR(s_xel1), DEGREES(s_resolution), RADIANS(s_resolution), "
    "EXP(s_resolution / 10), LOG(s_resolution), LOG10(s_resolution), SQRT(s_resolution), "
    "POWER(s_resolution, 2), PI(), ROUND(s_resolution), ROUND(s_resolution, 2), "
    "TRUNCATE(s_resolution), TRUNCATE(-s_resolution, 1), TRUNCATE(s_xel1), "
    "SIN(s_resolution), COS(s_resolution), TAN(s_resolution), COT(s_resolution), "
    "ASIN(1 / s_resolution), ACOS(1 / s_resolution), ATAN(s_resolution), "
    "ATAN2(s_resolution, 2), ROUND(-2.5), ROUND(2.5), MOD(s_resolution, 2) FROM ivoa.obscore",
    "SELECT obs_id, s_resolution / 0, calib_level / 0, MOD(calib_level, 0) FROM ivoa.obscore",
    "SELECT obs_id, LOWER(target_name), UPPER(target_name), target_name || '!' "
    "FROM ivoa.obscore WHERE target_name LIKE 'target 3%' AND target_name ILIKE '%m1' "
    "AND obs_id NOT LIKE '%9'",
    "SELECT obs_id, CASE WHEN calib_level IN (1, 2) THEN 'low' ELSE 'high' END, "
    "COALESCE(target_name, 'none'), CASE calib_level WHEN 0 THEN 'zero' END "
    "FROM ivoa.obscore WHERE s_fov BETWEEN 1 AND 2 AND target_name IS NULL "
    "AND calib_level NOT IN (4) AND NOT s_xel2 BETWEEN 3 AND 5",
    "SELECT obs_id FROM ivoa.obscore WHERE 1 = ivo_hasword(target_name, 'M1') "
    "AND ivo_nocasematch(obs_collection, 'SPHEREX%') = 1",
    "SELECT obs_id, ivo_interval_overlaps(em_min, em_max, 1e-6, 2e-6) FROM ivoa.obscore "
    "WHERE ivo_interval_overlaps(em_min, em_max, 1e-6, 2e-6) = 1",
    "SELECT calib_level, COUNT(*), SUM(s_xel2), AVG(s_fov), MIN(obs_id), MAX(t_min) "
    "FROM ivoa.obscore GROUP BY calib_level HAVING COUNT(*) > 10 ORDER BY calib_level",
    "SELECT COUNT(DISTINCT calib_level), COUNT(target_name), SUM(s_xel1) FROM ivoa.obscore",
    "SELECT obs_id FROM ivoa.obscore AS o WHERE s_fov > (SELECT AVG(s_fov) FROM "
    "ivoa.obscore) AND EXISTS (SELECT 1 FROM spherex.plane AS p WHERE p.obs_publisher_did "
    "= o.obs_publisher_did AND p.calib_level > 2)",
    "SELECT obs_id FROM ivoa.obscore WHERE obs_publisher_did IN (SELECT obs_publisher_did "
    "FROM spherex.plane WHERE psf_fwhm = 2)",
    "SELECT p.planeid, o.detector FROM spherex.plane AS p LEFT OUTER JOIN "
    "spherex.observation AS o ON p.obsid = o.obsid AND o.detector > 3",
    "SELECT obsid, detector FROM spherex.plane FULL OUTER JOIN spherex.observation "
    "USING (obsid)",
    "WITH lo AS (SELECT obs_id FROM ivoa.obscore WHERE calib_level <= 1), "
    "cu AS (SELECT obs_id FROM ivoa.obscore WHERE dataproduct_type = 'cube') "
    "SELECT obs_id FROM lo EXCEPT SELECT * FROM cu",
    "(SELECT TOP 2 obs_id FROM ivoa.obscore ORDER BY obs_id) UNION ALL "
    "(SELECT TOP 2 obs_id FROM ivoa.obscore ORDER BY obs_id DESC) ORDER BY 1 DESC",
    "SELECT obs_id, s_ra FROM ivoa.obscore ORDER BY s_ra DESC, obs_id OFFSET 2390",
    "SELECT TOP 7 obs_id, s_ra FROM ivoa.obscore ORDER BY s_ra, obs_id",
    "SELECT m.name, o.obs_id FROM TAP_UPLOAD.mine AS m JOIN ivoa.obscore AS o "
    "ON 1 = CONTAINS(POINT(o.s_ra, o.s_dec), CIRCLE(m.ra, m.dec, 0.5))",
    "SELECT TOP 1 CAST(2022 AS SMALLINT), CAST(5.7 AS INTEGER), CAST('123456' AS BIGINT), "
    "CAST(3 AS REAL), CAST('3.5' AS DOUBLE PRECISION), CAST(42 AS VARCHAR(10)), "
    "CAST('2021-01-14T11:25:00' AS TIMESTAMP), CAST('12.3 45.6' AS POINT), "
    "CAST('370 45 1' AS CIRCLE), CAST('1 0.1 2 0.2 3 0.3' AS POLYGON), "
    "COORD1(CAST('-10 5' AS POINT)) FROM ivoa.obscore ORDER BY obs_id",
    "SELECT obs_id, CAST(target_name || ' 1' AS POINT) FROM ivoa.obscore "
    "WHERE target_name IS NULL",
    "SELECT obs_id, IN_UNIT(s_ra, 'rad'), IN_UNIT(s_fov * 2, 'arcmin'), "
    "IN_UNIT(t_exptime / 60, 'h'), IN_UNIT(em_min, 'um') FROM ivoa.obscore",
    "SELECT obs_id, POINT(s_ra, s_dec), CIRCLE(s_ra, s_dec, s_fov), s_region, "
    "CENTROID(s_region), COORD1(POINT(s_ra - 360, s_dec)), COORD2(POINT(s_ra, s_dec)), "
    "AREA(s_region), AREA(CIRCLE(s_ra, s_dec, s_fov)), BOX(s_ra, s_dec, 1, 2), "
    "POLYGON(s_ra, s_dec, s_ra + 1, s_dec, s_ra, s_dec + 1) FROM ivoa.obscore",
    "SELECT TOP 5 obs_id, DISTANCE(s_region, POINT(10, 20)), "
    "DISTANCE(CIRCLE(s_ra, s_dec, 1), POINT(10, 20)) FROM ivoa.obscore ORDER BY 2, obs_id",
    "SELECT obs_id, ivo_healpix_index(8, s_ra, s_dec) FROM ivoa.obscore",
    "SELECT a.obs_id, b.obs_id FROM ivoa.obscore AS a JOIN ivoa.obscore AS b "
    "ON INTERSECTS(a.s_region, b.s_region) = 1 WHERE a.s_dec > 85 AND b.s_dec > 85",
    "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(s_region, "
    "POLYGON(s_ra - 0.001, s_dec - 0.001, s_ra + 0.001, s_dec - 0.001, s_ra, s_dec + 0.001))"
    " = 1",
]

CORPUS = [(label, q) for label, q in T.CASES["valid"]] + \
    [(f"translator {i}", q) for i, q in enumerate(TRANSLATOR)]


def _marks(label: str, adql: str):
    return []


@needs_java
@pytest.mark.parametrize("label,adql", [pytest.param(lab, q, marks=_marks(lab, q), id=lab)
                                        for lab, q in CORPUS])
def test_corpus_same_on_both_engines(engines_mem, label, adql):
    run_both(engines_mem, adql)


# an overflow is an error in DuckDB; Spark (ANSI mode) must not answer a wrapped number
OVERFLOWS = [
    "SELECT TOP 1 s_xel1 * 9223372036854775807 FROM ivoa.obscore WHERE s_xel1 > 1",
    "SELECT TOP 1 CAST(s_ra * 1e300 AS BIGINT) FROM ivoa.obscore WHERE s_ra > 1",
    "SELECT TOP 1 CAST(s_xel1 * 100000000 AS INTEGER) FROM ivoa.obscore WHERE s_xel1 > 100",
]


@needs_java
@pytest.mark.parametrize("adql", OVERFLOWS)
def test_overflow_is_an_error_on_both_engines(engines_mem, adql):
    con, spark, _ = engines_mem
    with pytest.raises(duckdb.Error, match="(?i)overflow|out of range|can't be cast"):
        con.execute(T.tr(adql).sql).fetchall()
    with pytest.raises(Exception, match="(?i)overflow|out of range|CAST_OVERFLOW"):
        spark.sql(T.tr(adql, dialect="spark").sql).collect()


def _spots(rng):
    for ra, dec in T.SPOTS:
        dra, ddec = rng.normal(0, 0.5, 2)
        yield (ra + dra) % 360, float(np.clip(dec + ddec, -90, 90)), 2.0


def _spark_ids(mem, adql: str) -> set[str]:
    _, spark, _ = mem
    return {r[0] for r in spark.sql(T.tr(adql, dialect="spark").sql).collect()}


@needs_java
def test_geometry_brute_force_on_spark(engines_mem):
    """Cones, footprints and polygons at RA 0/360 and the poles: Spark's rows are the
    brute-force answer (test_adql's own geometry, nothing from sky.py) and DuckDB's."""
    con, _, oc = engines_mem
    v = np.stack([T._verts(r) if r is not None else np.full((4, 3), np.nan)
                  for r in oc["s_region"]])
    shapes = (v, np.array([r is not None for r in oc["s_region"]]), np.array(oc["obs_id"]))
    have = [i for i in range(T.N) if oc["s_ra"][i] is not None]
    pos = np.stack([T._vec(oc["s_ra"][i], oc["s_dec"][i]) for i in have])
    rng = np.random.default_rng(5)
    with np.errstate(invalid="ignore"):
        for ra, dec, r in _spots(rng):
            c = T._vec(ra, dec)
            cone = {oc["obs_id"][have[k]] for k in np.nonzero(T._sep(pos, c) <= r)[0]}
            touching = T._where(shapes, T._inside(c, v) | (T._edge_dist(c, v) <= r))
            poly = T._footprint(ra, dec, r / 2, float(rng.uniform(0, 90)))[0]
            text = ", ".join(f"{x!r}" for x in poly)
            cases = {
                f"CONTAINS(POINT(s_ra, s_dec), CIRCLE({ra}, {dec}, {r})) = 1": cone,
                f"DISTANCE(POINT(s_ra, s_dec), POINT({ra}, {dec})) <= {r}": cone,
                f"INTERSECTS(s_region, CIRCLE({ra}, {dec}, {r})) = 1": touching,
                f"CONTAINS(POINT({ra}, {dec}), s_region) = 1": T._where(shapes,
                                                                        T._inside(c, v)),
                f"INTERSECTS(s_region, POLYGON({text})) = 1":
                    T._where(shapes, T._touch(T._verts(poly), v)),
            }
            for where, want in cases.items():
                q = f"SELECT obs_id FROM ivoa.obscore WHERE {where}"
                duck = {r[0] for r in con.execute(T.tr(q).sql).fetchall()}
                assert _spark_ids(engines_mem, q) == duck == want, where


# ---- the archive: release-pinned files, pruning, the TAP path --------------------------


def _count(cat, adql: str) -> int:
    tr = translate(adql, {**schema.TABLES}, box_sql=cat.box_sql,
                   dialect=getattr(cat, "dialect", "duckdb"),
                   relation=getattr(cat, "relation", None))
    return cat.query(tr.sql).column(0)[0].as_py()


@needs_java
def test_release_is_pinned_while_weeks_land(spark, tmp_path, deliveries):
    """A Spark job reads the files of the release it was given: a week committed after
    it was planned is not seen (DuckDB following the latest release sees it)."""
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive

    arch = Archive.from_env(str(tmp_path / "archive"))
    ingest(deliveries[0], arch)
    first = Catalogue(arch).release
    job = SparkCatalogue(arch, first, session=spark)
    q = "SELECT COUNT(*) FROM ivoa.obscore"
    n_first = _count(job, q)
    ingest(deliveries[1], arch)
    assert _count(job, q) == n_first == _count(Catalogue(arch, first.number), q) > 0
    assert _count(Catalogue(arch), q) > n_first  # the new week is there for new jobs
    assert _count(SparkCatalogue(arch, Catalogue(arch).release, session=spark), q) \
        == _count(Catalogue(arch), q)


ARCHIVE_QUERIES = [
    # full-scan aggregate: images per band per week
    "SELECT energy_bandpassname, FLOOR(t_min / 7) AS week, COUNT(*) AS n, SUM(t_exptime) "
    "FROM spherex.obscore GROUP BY energy_bandpassname, FLOOR(t_min / 7) "
    "ORDER BY energy_bandpassname, week",
    "SELECT obs_publisher_did, access_url, s_ra, s_dec, s_region, t_min, obs_collection "
    "FROM ivoa.obscore ORDER BY obs_publisher_did",
    "SELECT p.planeid, a.uri, o.obsid FROM spherex.plane AS p JOIN spherex.artifact AS a "
    "ON a.planeid = p.planeid JOIN spherex.observation AS o ON o.obsid = p.obsid",
]


def _cone(cat) -> str:
    # one row with a footprint, the same every run (some rows have no position, and an
    # unordered LIMIT 1 picked one of those now and then: CIRCLE(None, None, 0.2))
    rows = Catalogue(cat.archive).query(
        "SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_region IS NOT NULL AND s_ra IS NOT "
        "NULL AND s_dec IS NOT NULL ORDER BY obs_publisher_did LIMIT 1")
    ra, dec = rows.column(0)[0].as_py(), rows.column(1)[0].as_py()
    return (f"SELECT obs_publisher_did, s_ra FROM ivoa.obscore WHERE "
            f"INTERSECTS(s_region, CIRCLE({ra}, {dec}, 0.2)) = 1")


@needs_java
def test_archive_queries_same_and_cones_pruned(spark, archive):
    duck = Catalogue(archive)
    queries = [*ARCHIVE_QUERIES, _cone(duck)]
    for q in queries:
        job = SparkCatalogue(archive, duck.release, session=spark)
        tables = schema.TABLES
        d = duck.query(translate(q, tables, box_sql=duck.box_sql).sql)
        s = job.query(translate(q, tables, box_sql=job.box_sql, dialect="spark",
                                relation=job.relation).sql)
        assert d.num_rows > 0
        same_answers(d, s, _ordered(q))
    cone = SparkCatalogue(archive, duck.release, session=spark)
    translate(queries[-1], schema.TABLES, box_sql=cone.box_sql, dialect="spark",
              relation=cone.relation)
    full = SparkCatalogue(archive, duck.release, session=spark)
    translate("SELECT obs_id FROM ivoa.obscore", schema.TABLES, box_sql=full.box_sql,
              dialect="spark", relation=full.relation)
    assert 0 < cone.estimate()["files"] < full.estimate()["files"]
    assert 0 < cone.estimate()["bytes"] < full.estimate()["bytes"]


@needs_java
def test_upload_cross_match_same_rows(spark, archive):
    duck = Catalogue(archive)
    pos = duck.query("SELECT s_ra, s_dec FROM ivoa.obscore")
    rng = np.random.default_rng(9)
    n = 500
    pick = rng.integers(0, pos.num_rows, n)
    upload = pa.table({"name": [f"s{i}" for i in range(n)],
                       "ra": (pos.column(0).to_numpy()[pick] + rng.normal(0, .05, n)) % 360,
                       "dec": np.clip(pos.column(1).to_numpy()[pick] + rng.normal(0, .05, n),
                                      -90, 90)})
    q = ("SELECT m.name, o.obs_publisher_did FROM TAP_UPLOAD.mine AS m JOIN ivoa.obscore AS o "
         "ON 1 = CONTAINS(POINT(m.ra, m.dec), o.s_region)")
    job = SparkCatalogue(archive, duck.release, session=spark)
    d = duck.query(translate(q, schema.TABLES, uploads=T.UPLOADS).sql,
                   uploads={"mine": upload})
    s = job.query(translate(q, schema.TABLES, uploads=T.UPLOADS, dialect="spark",
                            relation=job.relation).sql, uploads={"mine": upload})
    assert d.num_rows > n // 2
    same_answers(d, s, ordered=False)


# ---- TAP async: routing, jobInfo, ABORT ----------------------------------------------


@pytest.fixture
def tap_env(archive, monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHIVE_URL", archive.url)
    runtime.reset()
    yield LocalJobStore(tmp_path / "jobs.sqlite3")
    runtime.reset()


def _job(store, query: str, **extra) -> tuple[Job, RunContext]:
    params = {"request": ["doQuery"], "lang": ["ADQL"], "query": [query],
              **{k.lower(): [v] for k, v in extra.items()}}
    job = Job(job_id=f"j{time.monotonic_ns()}", service="tap", parameters=params,
              phase="EXECUTING", base_url="http://127.0.0.1:8000")
    store.create(job)
    sink = lambda job, rid, content, mime: f"mem:{rid}:{len(content)}"  # noqa: E731
    return job, RunContext(store, job, result_sink=sink)


def _info(store, job: Job) -> dict:
    return store.get(job.job_id).job_info


@needs_java
def test_auto_routing_by_estimated_scan(tap_env, monkeypatch, spark):
    store = tap_env
    cone = _cone(Catalogue(runtime.catalogue("http://x").archive))
    job, ctx = _job(store, cone)
    asyncjobs.run(job, ctx)
    info = _info(store, job)
    assert info["engine"] == "duckdb" and info["estimate"]["bytes"] > 0
    assert store.get(job.job_id).results[0]["id"] == "result"

    monkeypatch.setenv("SPARK_ROUTE_BYTES", "1")
    config.reset()
    job, ctx = _job(store, cone)
    asyncjobs.run(job, ctx)
    info = _info(store, job)
    assert info["engine"] == "spark" and "SPARK_ROUTE_BYTES" in info["engine_reason"]
    assert info["spark"]["stages_total"] >= 1
    assert info["spark"]["stages_done"] == info["spark"]["stages_total"]
    assert store.get(job.job_id).results[0]["href"].startswith("mem:result:")

    job, ctx = _job(store, cone, ENGINE="duckdb")  # forced, over the threshold
    asyncjobs.run(job, ctx)
    assert _info(store, job)["engine"] == "duckdb"
    monkeypatch.setenv("SPARK_ROUTE_BYTES", str(1 << 40))
    config.reset()
    job, ctx = _job(store, cone, ENGINE="SPARK")  # forced, under it
    asyncjobs.run(job, ctx)
    assert _info(store, job)["engine"] == "spark"
    with pytest.raises(UWSUsageError, match="ENGINE=gpu is not one of"):
        asyncjobs.run(*_job(store, cone, ENGINE="gpu"))


def test_no_spark_anywhere_is_a_clear_error(tap_env, monkeypatch):
    monkeypatch.setattr(engines, "java_available", lambda: False)
    job, ctx = _job(tap_env, "SELECT COUNT(*) FROM ivoa.obscore", ENGINE="spark")
    with pytest.raises(UWSUsageError, match="no Spark engine is available"):
        asyncjobs.run(job, ctx)
    params = Params.from_dict({"query": ["SELECT COUNT(*) FROM ivoa.obscore"]})
    monkeypatch.setenv("SPARK_ROUTE_BYTES", "1")
    config.reset()
    got = engines.choose(params, runtime.catalogue("http://x"), config.settings())
    assert (got.engine, got.reason) == ("duckdb", "no Spark available")


@needs_java
def test_abort_cancels_the_spark_job(spark, archive):
    """ABORT while the stages run: the job group is cancelled and no Spark job is left
    running for it."""
    aborted = threading.Event()
    seen: list[dict] = []

    def check():
        if aborted.is_set():
            raise JobAborted("j")

    duck = Catalogue(archive)
    job = SparkCatalogue(archive, duck.release, session=spark, progress=seen.append,
                         check=check)
    q = ("SELECT COUNT(*) FROM ivoa.obscore AS a, ivoa.obscore AS b, ivoa.obscore AS c, "
         "ivoa.obscore AS d, ivoa.obscore AS e WHERE DISTANCE(POINT(a.s_ra, b.s_dec), "
         "POINT(c.s_ra, d.s_dec)) < e.s_dec")
    sql = translate(q, schema.TABLES, box_sql=job.box_sql, dialect="spark",
                    relation=job.relation).sql
    threading.Timer(8.0, aborted.set).start()
    t0 = time.monotonic()
    with pytest.raises(JobAborted):
        job.query(sql, timeout=600)
    assert time.monotonic() - t0 < 40
    assert seen and seen[-1]["stages_total"] >= 1  # it was running when aborted
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    running = [j for j in tracker.getJobIdsForGroup(job.group)
               if tracker.getJobInfo(j) and tracker.getJobInfo(j).status == "RUNNING"]
    assert running == []
    assert stage_progress(sc, job.group)["stages_total"] >= 1


# ---- the EMR side, run here: the driver and the finish Lambda ------------------------


@needs_java
def test_emr_driver_stores_the_result_and_finish_completes(spark, archive, monkeypatch,
                                                          tmp_path):
    from chalicelib.jobs import runtime as jobs
    from chalicelib.lambdas import spark_driver

    monkeypatch.setenv("ARCHIVE_URL", archive.url)
    monkeypatch.setenv("JOBS_DIR", str(tmp_path / "jobs"))
    runtime.reset()
    jobs.reset()
    store = jobs.store()
    job, _ = _job(store, "SELECT obs_publisher_did FROM ivoa.obscore ORDER BY 1")
    payload = {"job_id": job.job_id, "release": Catalogue(archive).release.number,
               "base_url": "http://127.0.0.1:8000", "archive_url": archive.url,
               "parameters": job.parameters}
    spark_driver.drive(payload, session=spark)
    got = store.get(job.job_id)
    assert got.phase == "EXECUTING"  # finished by the state machine's next step
    assert got.results[0]["id"] == "result" and got.job_info["spark"]["stages_total"] >= 1
    body = archive.read_bytes(got.results[0]["href"].split(":", 1)[1])
    assert body.count(b"<TR>") == Catalogue(archive).query(
        "SELECT COUNT(*) FROM ivoa.obscore").column(0)[0].as_py()
    assert spark_driver.finish({"job_id": job.job_id})["phase"] == "COMPLETED"

    bad, _ = _job(store, "SELECT nope FROM ivoa.obscore")
    spark_driver.drive({**payload, "job_id": bad.job_id, "parameters": bad.parameters},
                       session=spark)
    assert store.get(bad.job_id).phase == "ERROR"  # the caller's mistake, said by the driver
    failed, _ = _job(store, "SELECT 1 FROM ivoa.obscore")
    out = spark_driver.finish({"job_id": failed.job_id,
                               "error": {"Error": "EMRServerless.JobRunFailed", "Cause": "x"}})
    assert out["phase"] == "ERROR"
    assert "Spark job failed" in store.get(failed.job_id).error_summary["message"]
    jobs.reset()


def test_handed_off_job_stays_executing(tmp_path):
    from chalicelib.jobs.uws import HandedOff, run_job

    store = LocalJobStore(tmp_path / "jobs.sqlite3")
    job, ctx = _job(store, "SELECT 1 FROM ivoa.obscore")

    def runner(job, ctx):
        raise HandedOff(job.job_id)

    run_job(ctx, runner)
    assert store.get(job.job_id).phase == "EXECUTING"
