"""DuckDB and Spark side by side on one archive, with the bytes each query reads.

python -m chalicelib bench engines [--rows 1000000] [--weeks 8] [--archive DIR]
    [--upload 100000] [--cones 3] [--master local[2]]

Builds (or reuses) a metadata-only archive of --rows ObsCore rows (bench tap's), then
runs on both engines, over the same release: a full-scan aggregate (images per band
per week), a cross-match of an uploaded list of --upload sources against every
footprint, and cones. Per query: rows (checked equal), the files and bytes the release
lists for it after pruning (ReleaseFiles.estimate, what auto routing compares with
SPARK_ROUTE_BYTES), and the time of each engine (Spark warm: a UDF query ran
first, so the JVM's JIT and the Python workers are up). The last lines derive a
routing threshold from the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ...lake import schema
from ...query.adql import translate
from ...query.catalogue import Catalogue
from ...query.spark.engine import SparkCatalogue
from ...services.tap import meta as tapmeta
from .bench_tap import build

UPLOAD = schema.Table("TAP_UPLOAD.src", "sources, one row per zone cell they may match in", (
    schema.Column("name", pa.string(), "source"),
    schema.Column("ra", pa.float64(), "RA", unit="deg"),
    schema.Column("dec", pa.float64(), "Dec", unit="deg"),
    schema.Column("zd", pa.int64(), "Dec zone: FLOOR(dec / h) of a footprint centre it may be in"),
    schema.Column("zr", pa.int64(), "RA zone: FLOOR(ra / h) likewise")), physical="")

AGGREGATE = ("SELECT energy_bandpassname, FLOOR(t_min / 7) AS week, COUNT(*) AS n, "
             "SUM(t_exptime) AS exptime FROM spherex.obscore "
             "GROUP BY energy_bandpassname, FLOOR(t_min / 7)")
# A zone join, as one writes a big cross-match in ADQL: an equality on zone cells of
# side h (>= the widest footprint) that both engines hash-join on, then the exact test.
# Each source is uploaded once per cell a footprint centre within h of it can lie in.
# The answer is the images per source (thousands each in the deep fields: all pairs
# would be a result of 10^8 rows).
XMATCH = ("SELECT s.name, COUNT(*) AS images FROM TAP_UPLOAD.src AS s JOIN ivoa.obscore "
          "AS o ON FLOOR(o.s_dec / {h}) = s.zd AND FLOOR(o.s_ra / {h}) = s.zr AND "
          "DISTANCE(POINT(s.ra, s.dec), POINT(o.s_ra, o.s_dec)) <= {h} AND "
          "CONTAINS(POINT(s.ra, s.dec), o.s_region) = 1 GROUP BY s.name")
CONE = ("SELECT obs_publisher_did, s_ra, s_dec FROM ivoa.obscore WHERE "
        "INTERSECTS(CIRCLE('ICRS', {ra}, {dec}, {r}), s_region) = 1")


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench engines")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--weeks", type=int, default=8)
    p.add_argument("--archive", help="folder for the archive (kept; default a temp dir)")
    p.add_argument("--upload", type=int, default=100_000, help="sources to cross-match")
    p.add_argument("--cones", type=int, default=3)
    p.add_argument("--master", default=None, help="Spark master (default SPARK_MASTER or "
                                                  "local[2])")
    return p.parse_args(argv)


def _sources(duck: Catalogue, n: int, h: float) -> pa.Table:
    """n positions near footprint centres, each once per zone cell (side h degrees)
    whose footprints can contain it: cells meeting the box of +-h around it (all RA
    cells near a pole)."""
    pos = duck.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_ra IS NOT NULL")
    rng = np.random.default_rng(14)
    pick = rng.integers(0, pos.num_rows, n)
    ra = (pos["s_ra"].to_numpy()[pick] + rng.normal(0, 0.3, n)) % 360
    dec = np.clip(pos["s_dec"].to_numpy()[pick] + rng.normal(0, 0.3, n), -90, 90)
    ncell = int(np.ceil(360 / h))
    cols: dict[str, list] = {"name": [], "ra": [], "dec": [], "zd": [], "zr": []}
    for i, (r, d) in enumerate(zip(ra, dec, strict=True)):
        cos = np.cos(np.radians(min(89.9, abs(d) + h)))
        dra = h / cos if abs(d) + h < 89.9 else 180.0
        ras = range(ncell) if dra >= 180 else \
            sorted({int(np.floor(((r + k) % 360) / h)) % ncell
                    for k in np.linspace(-dra, dra, int(2 * dra / h) + 2)})
        for zd in range(int(np.floor((d - h) / h)), int(np.floor((d + h) / h)) + 1):
            for zr in ras:
                for key, v in zip(cols, (f"s{i}", r, d, zd, zr), strict=True):
                    cols[key].append(v)
    return pa.table(cols, schema=pa.schema([(c.name, c.arrow) for c in UPLOAD.columns]))


def _duck(duck: Catalogue, adql: str, uploads: dict) -> tuple[float, int]:
    tr = translate(adql, tapmeta.all_tables(), box_sql=duck.box_sql,
                   uploads={"src": UPLOAD} if uploads else None)
    t0 = time.perf_counter()
    n = duck.query(tr.sql, timeout=3600, uploads=uploads).num_rows
    return time.perf_counter() - t0, n


def _spark(duck: Catalogue, session, adql: str, uploads: dict) -> tuple[float, int, dict]:
    best, n, est = float("inf"), -1, {}
    for _ in range(1):  # warm: main() ran a UDF query first (JIT, Python workers)
        job = SparkCatalogue(duck.archive, duck.release, duck.base_url, session=session)
        tr = translate(adql, tapmeta.all_tables(), box_sql=job.box_sql, dialect="spark",
                       relation=job.relation, uploads={"src": UPLOAD} if uploads else None)
        t0 = time.perf_counter()
        n = job.query(tr.sql, timeout=3600, uploads=uploads).num_rows
        best, est = time.perf_counter() - t0, job.estimate()
    return best, n, est


def _cases(duck: Catalogue, a) -> list[tuple[str, str, dict]]:
    h = round(duck.stats("ivoa.obscore").largest("s_rmax", 180.0) + 0.05, 1)
    src = _sources(duck, a.upload, h)
    rows = duck.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_ra IS NOT NULL")
    rng = np.random.default_rng(3)
    out = [("aggregate: images per band per week", AGGREGATE, {}),
           (f"upload cross-match ({a.upload:,} sources, {src.num_rows:,} zone rows, "
            f"h={h} deg)", XMATCH.format(h=h), {"src": src})]
    for k in rng.choice(rows.num_rows, a.cones, replace=False):
        ra, dec = rows["s_ra"][int(k)].as_py(), rows["s_dec"][int(k)].as_py()
        for r in (0.1, 1.0):
            out.append((f"cone r={r}", CONE.format(ra=ra, dec=dec, r=r), {}))
    return out


def main(argv: list[str]) -> None:
    from ...query.spark import session as spark  # deferred: starts the JVM

    a = _args(argv)
    folder = Path(a.archive or tempfile.mkdtemp(prefix="bench-engines-"))
    archive = build(folder, a.rows, a.weeks)
    duck = Catalogue(archive)
    t0 = time.perf_counter()
    session = spark.job_session(a.master)
    print(f"Spark session up in {time.perf_counter() - t0:.1f} s "
          f"({session.sparkContext.master})", flush=True)
    for adql, _, _ in [(CONE.format(ra=10, dec=0, r=1), 0, 0), (AGGREGATE, 0, 0)]:
        _spark(duck, session, adql, {})  # warm-up, not timed
    print("| query | rows | files | MB read | DuckDB s | Spark s | Spark/DuckDB |\n"
          "|---|---|---|---|---|---|---|")
    figures = []
    for label, adql, uploads in _cases(duck, a):
        d, nd = _duck(duck, adql, uploads)
        s, ns, est = _spark(duck, session, adql, uploads)
        mark = "" if nd == ns else f" MISMATCH {nd} != {ns}"
        figures.append((est["bytes"], d, s))
        print(f"| {label} | {nd:,}{mark} | {est['files']} | {est['bytes'] / 1e6:.1f} | "
              f"{d:.2f} | {s:.2f} | {s / d:.1f} |", flush=True)
    _threshold(figures)
    spark.stop()


def _threshold(figures: list[tuple[int, float, float]]) -> None:
    """The routing threshold: what DuckDB reads, at its slowest rate of file bytes per
    second in this run, in half the async limit (600 s) of one Lambda."""
    rates = [b / d for b, d, _ in figures if d > 0]
    slow, fast = min(rates), max(rates)
    print(f"\nDuckDB went through {slow / 1e6:.1f} to {fast / 1e6:.0f} MB of listed files a "
          f"second here; at the slowest, half the 600 s async limit covers "
          f"{slow * 300 / 1e9:.1f} GB: the SPARK_ROUTE_BYTES default")
