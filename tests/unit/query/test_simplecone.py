"""Simple cones answered in numpy (query/simplecone.py) against the DuckDB path.

Every query of a corpus (points, circles, polygons, DISTANCE both ways round, point-in-
circle on the centres, extra column terms, TOP, SELECT *, NULL footprints and values,
empty answers) is run twice on the same catalogue: through the numpy lane and with it
switched off (the cone lane's DuckDB connection over the same candidate rows); the two
Arrow tables must be equal, types included, and the counter must show the numpy lane
answered. Queries it must not answer (ORDER BY, DISTINCT, expressions, OR, joins) are
left to DuckDB. DISTANCE and point-in-circle are also checked against numpy brute force.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.query import simplecone
from chalicelib.query.adql import translate
from chalicelib.query.catalogue import Catalogue
from tests.support.adqlshapes import box_polygon


@pytest.fixture(scope="module", autouse=True)
def kernels():
    from chalicelib.geometry import sky

    sky.kernels_ready(wait=True)


def _blank_some(week, seed: int) -> None:
    """Rows with a centre but no footprint, and NULL exposure times, in a delivery (the
    synthetic ones have neither): rewrites plane.parquet and its manifest checksum."""
    path = week / "plane.parquet"
    t = pq.read_table(path)
    rng = np.random.default_rng(seed)
    has = np.flatnonzero(pc.is_valid(t["poly"]).to_numpy(zero_copy_only=False))
    blank = np.zeros(t.num_rows, bool)
    blank[rng.choice(has, len(has) // 5, replace=False)] = True
    poly = pc.if_else(pa.array(blank), pa.nulls(t.num_rows, t["poly"].type), t["poly"])
    t = t.set_column(t.schema.get_field_index("poly"), "poly", poly)
    exp = pc.if_else(pa.array(rng.random(t.num_rows) < 0.1),
                     pa.nulls(t.num_rows, pa.float64()), t["time_exposure"])
    t = t.set_column(t.schema.get_field_index("time_exposure"), "time_exposure", exp)
    pq.write_table(t, path)
    manifest = json.loads((week / "manifest.json").read_text())
    manifest["tables"]["plane"]["md5"] = hashlib.md5(path.read_bytes()).hexdigest()
    (week / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive

    out = tmp_path_factory.mktemp("simplecone-synth")
    weeks = synthesize(out, weeks=2, images_per_week=600, metadata_only=True, seed=5)
    arch = Archive.from_env(str(tmp_path_factory.mktemp("simplecone-archive")))
    for k, week in enumerate(weeks):
        _blank_some(week, k)
        ingest(week, arch)
    yield arch
    shutil.rmtree(out, ignore_errors=True)


def _tables():
    from chalicelib.services.tap.meta import all_tables

    return all_tables()


def _sql(cat, adql: str) -> str:
    """The translation, after the cones that index its files (the first marks them)."""
    for _ in range(2):
        sql = translate(adql, _tables(), box_sql=cat.box_sql).sql
        cat.query(sql, timeout=600)
    return translate(adql, _tables(), box_sql=cat.box_sql).sql


def _both(cat, sql: str, max_rows: int | None = None) -> tuple[pa.Table, pa.Table, bool]:
    before = simplecone.ANSWERED[0]
    cat.simple = True
    quick = cat.query(sql, timeout=600, max_rows=max_rows)
    taken = simplecone.ANSWERED[0] > before
    cat.simple = False
    try:
        slow = cat.query(sql, timeout=600, max_rows=max_rows)
    finally:
        cat.simple = True
    return quick, slow, taken


def _centres(cat):
    t = cat.query("SELECT obs_publisher_did, s_ra, s_dec, s_region FROM ivoa.obscore "
                  "WHERE s_ra IS NOT NULL", timeout=600)
    return (np.array(t["obs_publisher_did"].to_pylist()), t["s_ra"].to_numpy(),
            t["s_dec"].to_numpy(), t["s_region"].is_null().to_numpy(zero_copy_only=False))


def _positions(ra, dec, rng, k: int):
    pick = rng.choice(len(ra), k, replace=False)
    out = [(float((ra[i] + 0.3) % 360), float(np.clip(dec[i] - 0.2, -90, 90))) for i in pick]
    return out + [(0.0, 90.0), (359.98, float(dec[0])), (0.01, float(dec[0]))]


def _corpus(cra: float, cdec: float) -> list[str]:
    """Queries the numpy lane must answer, equal to DuckDB's."""
    c = f"{cra!r}, {cdec!r}"
    ids = "SELECT obs_publisher_did FROM ivoa.obscore WHERE "
    return [
        ids + f"CONTAINS(POINT('ICRS', {c}), s_region) = 1",
        ids + f"1 = INTERSECTS(POINT('ICRS', {c}), s_region)",
        ids + f"INTERSECTS(CIRCLE('ICRS', {c}, 0.1), s_region) = 1",
        ids + f"INTERSECTS(s_region, CIRCLE('ICRS', {c}, 1.5)) = 1",
        ids + f"CONTAINS(s_region, CIRCLE('ICRS', {c}, 3)) = 1",
        ids + f"CONTAINS(CIRCLE('ICRS', {c}, 0.01), s_region) = 1",
        ids + f"INTERSECTS(s_region, POLYGON('ICRS', {box_polygon(cra, cdec, 0.4, 0.3)})) = 1",
        ids + f"CONTAINS(POLYGON('ICRS', {box_polygon(cra, cdec, 0.4, 0.3)}), s_region) = 1",
        ids + f"DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {c})) < 1",
        ids + f"0.5 >= DISTANCE(POINT('ICRS', {c}), POINT('ICRS', s_ra, s_dec))",
        ids + f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {c}, 2)) = 1",
        # every column (NULL footprints and values, lists, integers, partition values)
        f"SELECT * FROM ivoa.obscore WHERE DISTANCE(POINT('ICRS', s_ra, s_dec), "
        f"POINT('ICRS', {c})) < 2",
        f"SELECT * FROM ivoa.obscore WHERE INTERSECTS(CIRCLE('ICRS', {c}, 1), s_region) = 1",
        # other terms, renamed outputs, TOP
        f"SELECT TOP 7 obs_publisher_did AS did, s_ra AS a, t_exptime FROM ivoa.obscore "
        f"WHERE obs_collection = 'spherex_qr2' AND INTERSECTS(CIRCLE('ICRS', {c}, 2), "
        "s_region) = 1 AND t_exptime > 0",
        ids + f"INTERSECTS(CIRCLE('ICRS', {c}, 2), s_region) = 1 AND s_xel1 >= -2.5 "
        "AND 100000 > s_xel2 AND t_exptime <> 3.5",
        "SELECT access_url, s_region FROM ivoa.obscore WHERE "
        f"DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {c})) <= 3 AND "
        "obs_collection <> 'nothing'",
        # empty answers: no row that passes the other terms, and a tiny cone
        ids + f"INTERSECTS(CIRCLE('ICRS', {c}, 1), s_region) = 1 AND t_exptime < -1",
        ids + f"DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {c})) < 1e-9",
    ]


def _not_simple(cra: float, cdec: float) -> list[str]:
    """Queries left to DuckDB (the cone lane's connection or the full path)."""
    c = f"{cra!r}, {cdec!r}"
    cone = f"INTERSECTS(CIRCLE('ICRS', {c}, 1), s_region) = 1"
    return [
        f"SELECT TOP 3 obs_publisher_did FROM ivoa.obscore WHERE {cone} "
        "ORDER BY obs_publisher_did",
        f"SELECT DISTINCT obs_collection FROM ivoa.obscore WHERE {cone}",
        f"SELECT s_ra * 2 AS x FROM ivoa.obscore WHERE {cone}",
        f"SELECT COUNT(*) AS n FROM ivoa.obscore WHERE {cone}",
        f"SELECT obs_publisher_did FROM ivoa.obscore WHERE {cone} AND "
        "(t_exptime > 1 OR s_xel1 > 2)",
        f"SELECT obs_publisher_did FROM ivoa.obscore WHERE {cone} AND t_exptime IS NULL",
        f"SELECT obs_publisher_did FROM ivoa.obscore WHERE {cone} AND "
        f"CONTAINS(POINT('ICRS', {c}), s_region) = 1",
        f"SELECT a.obs_publisher_did FROM ivoa.obscore AS a JOIN ivoa.obscore AS b "
        f"ON a.obs_publisher_did = b.obs_publisher_did WHERE "
        f"INTERSECTS(CIRCLE('ICRS', {c}, 0.5), a.s_region) = 1",
    ]


def test_simple_cones_equal_the_duckdb_path_types_included(archive):
    cat = Catalogue(archive, base_url="https://archive.example/")
    _, ra, dec, blank = _centres(cat)
    assert blank.any() and (~blank).any()  # rows with a centre and no footprint exist
    rng = np.random.default_rng(41)
    taken = rows = nulls = empty = 0
    for cra, cdec in _positions(ra, dec, rng, 5):
        for adql in _corpus(cra, cdec):
            sql = _sql(cat, adql)
            quick, slow, lane = _both(cat, sql)
            assert quick.schema == slow.schema, adql
            assert quick.equals(slow), adql
            taken += lane
            rows += quick.num_rows
            empty += quick.num_rows == 0
            if "s_region" in quick.column_names:
                nulls += quick["s_region"].null_count
    assert taken == 8 * len(_corpus(0.0, 0.0))  # incl. boxes that meet no file (FALSE)
    assert rows > 500 and nulls > 0 and empty >= 8


def test_quotes_keywords_and_parentheses_in_names_and_strings_fool_no_scanner(archive):
    """The scanner reads the translated SQL: aliases and string literals a caller writes
    (quotes, SQL keywords, parentheses, operators inside them) are answered as DuckDB
    answers them, by the lane or by DuckDB."""
    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    c = f"{float(ra[5])!r}, {float(dec[5])!r}"
    cone = f"INTERSECTS(CIRCLE('ICRS', {c}, 2), s_region) = 1"
    for adql in [
        f'SELECT obs_publisher_did AS "x FROM y WHERE z AND" FROM ivoa.obscore WHERE {cone}',
        f'SELECT s_ra AS "a"" AS ""b", s_dec AS "LIMIT 1" FROM ivoa.obscore WHERE {cone}',
        f"SELECT obs_id FROM ivoa.obscore WHERE {cone} AND "
        "obs_collection <> 'a'' AND ''b) OR (1 = 1'",
        f"SELECT obs_id FROM ivoa.obscore WHERE obs_collection = 'x'' LIMIT 1 --' AND {cone}",
        f"SELECT obs_id FROM ivoa.obscore WHERE {cone} AND obs_id > ')(' AND obs_id < '~'",
    ]:
        quick, slow, _ = _both(cat, _sql(cat, adql))
        assert quick.schema == slow.schema, adql
        assert sorted(map(repr, quick.to_pylist())) == sorted(map(repr, slow.to_pylist())), adql


def test_max_rows_cuts_the_answer_like_the_duckdb_path(archive):
    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    adql = ("SELECT obs_publisher_did, s_ra FROM ivoa.obscore WHERE "
            f"INTERSECTS(CIRCLE('ICRS', {float(ra[3])!r}, {float(dec[3])!r}, 3), s_region) = 1")
    sql = _sql(cat, adql)
    quick, slow, lane = _both(cat, sql, max_rows=4)
    assert lane and quick.num_rows == 4 and quick.equals(slow)


def test_other_queries_are_left_to_duckdb(archive):
    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    for adql in _not_simple(float(ra[7]), float(dec[7])):
        sql = _sql(cat, adql)
        quick, slow, lane = _both(cat, sql)
        assert not lane, adql
        # both are DuckDB's answers; a join or OFFSET without ORDER BY has no set order
        assert quick.schema == slow.schema, adql
        assert sorted(map(repr, quick.to_pylist())) == sorted(map(repr, slow.to_pylist()))


def test_distance_and_point_in_circle_equal_brute_force(archive):
    """Independent of both engines: float64 angles over every row with a centre."""
    cat = Catalogue(archive)
    ids, ra, dec, _ = _centres(cat)
    a, b = np.radians(ra), np.radians(dec)
    for cra, cdec in _positions(ra, dec, np.random.default_rng(7), 6):
        p = np.radians([cra, cdec])
        sep = np.degrees(np.arccos(np.clip(
            np.sin(b) * np.sin(p[1]) + np.cos(b) * np.cos(p[1]) * np.cos(a - p[0]), -1, 1)))
        for r in (0.3, 2.0):
            c = f"{cra!r}, {cdec!r}"
            far = np.abs(sep - r) > 1e-7  # not decided by rounding
            for adql in (f"SELECT obs_publisher_did FROM ivoa.obscore WHERE DISTANCE("
                         f"POINT('ICRS', s_ra, s_dec), POINT('ICRS', {c})) < {r}",
                         f"SELECT obs_publisher_did FROM ivoa.obscore WHERE CONTAINS("
                         f"POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {c}, {r})) = 1"):
                before = simplecone.ANSWERED[0]
                got = set(cat.query(_sql(cat, adql), timeout=600)["obs_publisher_did"]
                          .to_pylist())
                assert simplecone.ANSWERED[0] > before or not (sep < r).any()
                assert {i for i in got if far[ids == i].all()} == \
                    set(ids[(sep < r) & far].tolist()), adql


@pytest.mark.parametrize("sql", [
    # a string literal holding what would otherwise be terms or keywords
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE SKY_PT_IN_POLY_BIN(1.0, '
    '2.0, "t1"."s_region_bin") AND (("t1"."_row" <> -1 AND TRUE)) AND "t1"."b" = '
    "'x'' OR TRUE OR ''y'",
    # an alias holding FROM, a second table alias, a call on another alias
    'SELECT "t1"."a" AS "x FROM y" FROM "ivoa"."obscore" AS "t1" WHERE SKY_PT_IN_POLY_BIN('
    '1.0, 2.0, "t1"."s_region_bin") AND (("t1"."_row" <> -1 AND TRUE))',
])
def test_plan_reads_literals_and_aliases_whole(sql):
    p = simplecone.plan(sql)
    assert p is not None
    assert p.filters == () or p.filters[0].right == "x' OR TRUE OR 'y"
    assert p.token == 1 and p.limit is None


@pytest.mark.parametrize("sql", [
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE SKY_PT_IN_POLY_BIN(1.0, '
    '2.0, "t2"."s_region_bin") AND (("t1"."_row" <> -1 AND TRUE))',  # another alias
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE SKY_PT_IN_POLY_BIN(1.0, '
    '2.0, "t1"."s_region_bin") OR (("t1"."_row" <> -1 AND TRUE))',  # OR
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE NOT SKY_PT_IN_POLY_BIN('
    '1.0, 2.0, "t1"."s_region_bin") AND (("t1"."_row" <> -1 AND TRUE))',  # NOT
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE SKY_PT_IN_POLY_BIN(1.0, '
    '2.0, "t1"."s_region_bin") AND (("t1"."_row" <> -1 AND TRUE)) AND "t1"."b" = '
    '"t1"."c"',  # column against column
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE SKY_PT_IN_POLY_BIN(1.0, '
    '2.0, "t1"."s_region_bin") AND (("t1"."_row" <> -1 AND TRUE)) OFFSET 3',
    'SELECT "t1"."a" AS "a" FROM "ivoa"."obscore" AS "t1" WHERE SKY_NOPE("t1"."x") AND '
    '(("t1"."_row" <> -1 AND TRUE))',  # not a geometry function
])
def test_plan_refuses_what_it_does_not_read_in_full(sql):
    assert simplecone.plan(sql) is None


def test_a_first_cone_is_answered_before_its_files_are_indexed(archive, monkeypatch):
    """The files a first cone touches are indexed in a thread after its answer (inline,
    it was most of a cold first query); the cones after it take the numpy lane."""
    import threading

    from chalicelib.query import catalogue as catalogue_mod

    monkeypatch.delitem(catalogue_mod._SHARED, archive.url, raising=False)  # no indexes
    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    where = []
    index_files = cat._index_files

    def spy(opened, pending):
        where.append(threading.current_thread().name)
        index_files(opened, pending)

    monkeypatch.setattr(cat, "_index_files", spy)
    adql = ("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
            f"INTERSECTS(CIRCLE('ICRS', {float(ra[5])!r}, {float(dec[5])!r}, 1), s_region) = 1")
    first = cat.query(translate(adql, _tables(), box_sql=cat.box_sql).sql, timeout=600)
    assert cat._indexer is not None
    cat._indexer.join(120)
    assert where == ["spatial-index"]  # not on the query's thread
    quick, slow, lane = _both(cat, translate(adql, _tables(), box_sql=cat.box_sql).sql)
    assert lane and quick.equals(slow)
    assert sorted(quick["obs_publisher_did"].to_pylist()) == \
        sorted(first["obs_publisher_did"].to_pylist())


def test_a_process_exits_cleanly_while_a_first_cone_is_being_indexed(archive):
    """Exit waits for the indexing thread (it is not a daemon): as a daemon, a process
    that exited while it ran inside DuckDB aborted at 1 M rows ("terminate called without
    an active exception"), losing its buffered output. Here the indexing is slowed down
    so that it is still running when the script ends."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, time\n"
        "from chalicelib.lake.storage import Archive\n"
        "from chalicelib.query.adql import translate\n"
        "from chalicelib.query.catalogue import Catalogue\n"
        "from chalicelib.services.tap.meta import all_tables\n"
        "real = Catalogue._index_files\n"
        "def slow(self, opened, pending):\n"
        "    time.sleep(1.0)\n"
        "    real(self, opened, pending)\n"
        "    print('indexed', flush=True)\n"
        "Catalogue._index_files = slow\n"
        "cat = Catalogue(Archive.from_env(sys.argv[1]))\n"
        "t = cat.query('SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_ra IS NOT NULL LIMIT 1')\n"
        "ra, dec = t['s_ra'][0].as_py(), t['s_dec'][0].as_py()\n"
        "adql = ('SELECT obs_publisher_did FROM ivoa.obscore WHERE INTERSECTS(CIRCLE('\n"
        "        f\"'ICRS', {ra!r}, {dec!r}, 1), s_region) = 1\")\n"
        "sql = translate(adql, all_tables(), box_sql=cat.box_sql).sql\n"
        "print('answered', cat.query(sql).num_rows, cat._indexer.is_alive())\n")
    root = Path(__file__).resolve().parents[3]
    got = subprocess.run([sys.executable, "-c", code, archive.url], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    lines = got.stdout.split("\n")
    assert lines[0].startswith("answered") and lines[0].endswith("True"), got.stdout
    assert lines[1] == "indexed", got.stdout  # finished before the process ended


def test_the_catalogue_connections_print_no_progress_bar(archive):
    """DuckDB prints a progress bar on stdout for scans over 2 s (a first cone's indexing
    on a loaded machine did), into whatever the process writes there."""
    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    _both(cat, _sql(cat, _corpus(float(ra[0]), float(dec[0]))[2]))  # the lane's DuckDB
    setting = "SELECT current_setting('enable_progress_bar') AS on_"
    assert cat.query(setting)["on_"].to_pylist() == [False]
    assert cat.current().hot.execute(setting).fetchall() == [(False,)]


def test_column_comparisons_follow_duckdb_on_nan_null_and_mixed_numbers():
    """Each operator on doubles (NaN, NULL, infinities), integers and strings against
    DuckDB evaluating the same comparison (it orders NaN above every number)."""
    import duckdb

    t = pa.table({
        "x": pa.array([1.5, float("nan"), None, -2.0, float("inf"), 3.0, -float("inf")]),
        "i": pa.array([1, 2, None, -3, 4, 3, 0], pa.int32()),
        "s": pa.array(["a", "b", None, "", "ab", "B", "a'b"]),
    })
    con = duckdb.connect()
    con.register("t", t)
    for col, literal, text in (("x", 1.5, "1.5"), ("x", -2, "-2"), ("i", 3, "3"),
                               ("i", 2.5, "2.5"), ("s", "a", "'a'"), ("s", "a'b", "'a''b'")):
        for op in simplecone.OPS:
            want = [bool(v) for (v,) in con.execute(
                f"SELECT coalesce({col} {op} {text}, false) FROM t").fetchall()]
            f = simplecone.Compare(simplecone.Col(col), op, literal)
            assert simplecone._compare_mask(f, t).tolist() == want, (col, op, literal)


def test_a_repeated_cone_builds_its_candidate_table_once(archive, monkeypatch):
    """The candidate table of a cone (its rows from every file they lie in) is built the
    first time and kept: a repeated cone takes nothing from the row-group cache again,
    so ten unmerged weeks cost what one tier file does. A new cone builds its own."""
    from chalicelib.query import catalogue as catalogue_mod
    from chalicelib.query import spatial

    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    opened = cat.current()
    for k in range(len(ra)):  # a cone (INTERSECTS circle 1.5) with rows in both weeks
        sql = _sql(cat, _corpus(float(ra[k]), float(dec[k]))[3])
        token = int(catalogue_mod.CONE_TOKEN.search(sql).group(1))
        if len(catalogue_mod.CONES.get((archive.url, opened.release.number), token)[1]) > 1:
            break
    taken = []
    real = spatial.RowGroups.take

    def spy(self, uri, rows, columns):
        taken.append(uri)
        return real(self, uri, rows, columns)

    monkeypatch.setattr(spatial.RowGroups, "take", spy)
    from collections import OrderedDict

    monkeypatch.setattr(catalogue_mod.CONES, "tables", OrderedDict())  # nothing built
    monkeypatch.setattr(catalogue_mod.CONES, "bytes", 0)
    quick, slow, lane = _both(cat, sql)
    assert lane and quick.equals(slow)
    files = len(set(taken))
    assert files >= 2  # rows of both weekly files: what is saved is per file
    assert len(taken) == 2 * files  # once for the numpy lane, once for DuckDB's columns
    taken.clear()
    for _ in range(3):
        again, slow_again, lane = _both(cat, sql)
        assert lane and again.equals(quick) and slow_again.equals(slow)
    assert taken == []
    other = translate(_corpus(float(ra[k]), float(dec[k]))[2], _tables(),
                      box_sql=cat.box_sql).sql  # circle 0.1: another cone, its own rows
    cat.query(other, timeout=600)
    assert taken


def test_the_candidate_tables_kept_are_bounded_in_bytes():
    from chalicelib.query.catalogue import Cones

    cones = Cones(table_bytes=4 * 8 * 1000)
    tables = {k: pa.table({"x": np.arange(k * 100, dtype=np.float64)}) for k in range(1, 12)}
    built = []

    def maker(k):
        return lambda: built.append(k) or tables[k]

    for k in tables:
        assert cones.table(("a", 1, k), maker(k)) is tables[k]
        assert cones.bytes == sum(t.nbytes for t in cones.tables.values()) <= 32_000
    assert ("a", 1, 11) not in cones.tables  # over a quarter of the limit: not kept
    kept = [key[2] for key in cones.tables]
    assert kept == [6, 7, 8, 9, 10]  # the newest that fit (32,000 bytes): oldest went first
    built.clear()
    cones.table(("a", 1, 10), maker(10))
    assert built == []  # kept: not built again
    cones.table(("a", 1, 1), maker(1))
    assert built == [1]  # dropped: built again


def _mask_by_characters(sql: str):
    """The plan scanner's mask as it was written first, one character at a time (the
    reference for the token scanner that replaced it)."""
    out, depth, quote = [], 0, None
    for ch in sql:
        if quote:
            closing = ch == quote
            quote = None if closing else quote
            out.append(ch if closing and depth == 0 else "_")
            continue
        if ch in "'\"":
            quote = ch
            out.append(ch if depth == 0 else "_")
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return None
        edge = ch in "()" and depth == (1 if ch == "(" else 0)
        out.append(ch if depth == 0 or edge else "_")
    return "".join(out) if depth == 0 and quote is None else None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab ()'\"", max_size=40))
def test_the_mask_by_tokens_equals_the_one_by_characters(sql):
    assert simplecone._mask(sql) == _mask_by_characters(sql)


def test_the_mask_of_a_translated_cone_by_tokens_equals_the_one_by_characters(archive):
    cat = Catalogue(archive)
    _, ra, dec, _ = _centres(cat)
    for adql in _corpus(float(ra[1]), float(dec[1])) + _not_simple(float(ra[1]), float(dec[1])):
        sql = _sql(cat, adql)
        assert "'" in sql and simplecone._mask(sql) == _mask_by_characters(sql)


def test_a_distance_cone_converts_the_positions_of_a_kept_table_once(monkeypatch):
    """The centres' unit vectors of a candidate table are made on its first DISTANCE
    cone and reused while the table lives (the catalogue keeps a cone's table), the
    distances equal to sky.distance bit for bit, either way round, NULLs as NaN."""
    import gc

    from chalicelib.geometry import sky

    rng = np.random.default_rng(4)
    ra, dec = rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50)
    ra[3] = np.nan
    rows = pa.table({"s_ra": pa.array(ra, from_pandas=True), "s_dec": dec})
    assert rows["s_ra"].null_count == 1
    col = simplecone.Col
    calls = [simplecone.Call("SKY_DISTANCE", (col("s_ra"), col("s_dec"), 10.0, -20.0)),
             simplecone.Call("SKY_DISTANCE", (10.0, -20.0, col("s_ra"), col("s_dec")))]
    made = []
    real = sky.xyz
    monkeypatch.setattr(sky, "xyz", lambda a, b: made.append(np.size(a)) or real(a, b))
    for call in calls * 2:
        got = simplecone._evaluate(call, rows)
        want = sky.distance(ra, dec, 10.0, -20.0) if isinstance(call.args[0], simplecone.Col) \
            else sky.distance(10.0, -20.0, ra, dec)
        assert np.array_equal(got, want, equal_nan=True) and np.isnan(got[3])
    assert made.count(50) == 1 + 4  # the table's once; sky.distance's own in `want`
    key = id(rows)
    assert key in simplecone._VECTORS
    del rows
    gc.collect()
    assert key not in simplecone._VECTORS  # gone with its table
