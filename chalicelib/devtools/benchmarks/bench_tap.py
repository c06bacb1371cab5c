"""Spatial TAP queries: pruned engine vs the exact predicate on every row, side by side.

python -m chalicelib bench tap [--rows 2600000] [--weeks 26] [--archive DIR] [--s3] [--repeat 15]

Builds (or reuses) a metadata-only archive of --rows ObsCore rows, compacts it into one
HEALPix-sorted tier unless it is one already, then times ADQL
CONTAINS(POINT, s_region), INTERSECTS(CIRCLE 0.1 deg) and INTERSECTS(CIRCLE 1 deg), plus a
deep-field point query, through the TAP translation and the catalogue: median warm latency
with pruning (HEALPix-ordered rows + RA/Dec box on Parquet statistics + exact test) and
without it (exact test on every row). With --s3 the archive is copied to a moto S3
server on loopback that counts the bytes it serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ...geometry import sky
from ...ingest.delivery import open_table
from ...ingest.maintenance import compact, layout
from ...lake import schema
from ...lake.storage import Archive
from ...query.catalogue import Catalogue
from ...services.tap.meta import all_tables


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m chalicelib bench tap")
    p.add_argument("--rows", type=int, default=2_600_000)
    p.add_argument("--weeks", type=int, default=26)
    p.add_argument("--archive", help="reuse or build the archive here (default: temp)")
    p.add_argument("--s3", action="store_true", help="also run against moto S3")
    p.add_argument("--no-local", action="store_true", help="skip the local-folder run")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--positions", type=int, default=3, help="sky positions per query")
    p.add_argument("--http", action="store_true",
                   help="also time /tap/sync round trips against the engine, side by side")
    p.add_argument("--every-row-repeat", type=int, default=3,
                   help="timed runs of the every-row query (tens of seconds each at 10M)")
    return p.parse_args(argv)


def build(folder: Path, rows: int, weeks: int) -> Archive:
    from ...ingest.delivery import ingest
    from ..synth import synthesize

    archive = Archive.from_env(str(folder / "archive"))
    if (folder / "archive" / "tables").exists():
        return archive
    per_week = rows // weeks
    print(f"building {weeks} weeks x {per_week} images ...", flush=True)
    for d in synthesize(folder / "deliveries", weeks, images_per_week=per_week,
                        metadata_only=True, progress=True):
        print(ingest(d, archive).text(), flush=True)
    shutil.rmtree(folder / "deliveries", ignore_errors=True)
    return archive


QUERIES = {
    "CONTAINS(point)": "CONTAINS(POINT('ICRS', {ra}, {dec}), s_region) = 1",
    "INTERSECTS(circle 0.1)": "INTERSECTS(CIRCLE('ICRS', {ra}, {dec}, 0.1), s_region) = 1",
    "INTERSECTS(circle 1)": "INTERSECTS(CIRCLE('ICRS', {ra}, {dec}, 1.0), s_region) = 1",
}


def _sql(cat: Catalogue, where: str, pruned: bool) -> str:
    from ...query.adql import translate

    tables = all_tables()
    adql = f"SELECT obs_publisher_did, t_min FROM ivoa.obscore WHERE {where}"
    return translate(adql, tables, box_sql=cat.box_sql if pruned else None).sql


def _time(cat: Catalogue, sql: str, repeat: int, warm: bool = True) -> tuple[float, int]:
    if warm:
        cat.query(sql, timeout=3600)
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = cat.query(sql, timeout=3600).num_rows
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def _positions(cat: Catalogue, k: int) -> list[tuple[float, float]]:
    rows = cat.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_ra IS NOT NULL "
                     "USING SAMPLE 200 ROWS", timeout=3600)
    rng = np.random.default_rng(3)
    idx = rng.choice(rows.num_rows, size=min(k, rows.num_rows), replace=False)
    return [(float(rows["s_ra"][i].as_py()) + 0.3, float(rows["s_dec"][i].as_py()) - 0.2)
            for i in idx]


def run_suite(cat: Catalogue, label: str, repeat: int, counter=None, positions: int = 3,
              slow_repeat: int = 3) -> None:
    sky.kernels_ready(wait=True)  # warm: loaded off the first query, ~1 s after it
    total = cat.query("SELECT COUNT(*) AS n FROM ivoa.obscore", timeout=3600)["n"][0].as_py()
    print(f"\n== {label}: {total:,} ObsCore rows ==", flush=True)
    print(f"{'query':28s} {'rows':>7s} {'pruned ms':>10s} {'every-row ms':>13s} {'speed-up':>9s}"
          + ("  pruned bytes  every-row bytes" if counter else ""))
    deep = cat.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE obs_collection = "
                     "'spherex_qr2_deep' LIMIT 1", timeout=3600).to_pylist()
    cases = [(name, q.format(ra=ra % 360, dec=dec)) for name, q in QUERIES.items()
             for ra, dec in _positions(cat, positions)]
    if deep:
        cases.append(("deep-field CONTAINS(point)", QUERIES["CONTAINS(point)"].format(
            ra=deep[0]["s_ra"], dec=deep[0]["s_dec"])))
    for name, where in cases:
        b0 = counter() if counter else 0
        fast, n = _time(cat, _sql(cat, where, True), repeat)
        b1 = counter() if counter else 0
        # the every-row query reads the same files, warmed by the pruned runs
        slow, n2 = _time(cat, _sql(cat, where, False), slow_repeat, warm=False)
        b2 = counter() if counter else 0
        assert n == n2, (name, n, n2)  # the pruning never loses a row
        extra = ""
        if counter:
            extra = (f"  {(b1 - b0) / (repeat + 1) / 1e6:9.2f} MB  "
                     f"{(b2 - b1) / slow_repeat / 1e6:12.2f} MB")
        print(f"{name:28s} {n:7d} {fast * 1000:10.1f} {slow * 1000:13.1f} "
              f"{slow / fast:8.0f}x{extra}", flush=True)


def _moto_with_counter():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    served = {"bytes": 0, "requests": 0}
    lock = threading.Lock()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        with lock:
            served["requests"] += 1
        body = app(environ, start_response)
        for chunk in body:
            if environ["REQUEST_METHOD"] == "GET":
                with lock:
                    served["bytes"] += len(chunk)
            yield chunk

    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_request(self, *a, **k):
            pass

    srv = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    counter = lambda: served["bytes"]  # noqa: E731
    counter.requests = lambda: served["requests"]
    return srv, f"http://127.0.0.1:{srv.server_port}", counter


def first_cone(archive: Archive, counter) -> None:
    """Requests and time from a new catalogue to its first cone's answer."""
    probe = Catalogue(archive)
    row = probe.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE obs_collection = "
                      "'spherex_qr2' ORDER BY hash(obs_publisher_did) LIMIT 1").to_pylist()[0]
    where = QUERIES["CONTAINS(point)"].format(ra=row["s_ra"], dec=row["s_dec"])
    r0, t0 = counter.requests(), time.perf_counter()
    cat = Catalogue(archive)
    n = cat.query(_sql(cat, where, True), timeout=3600).num_rows
    took, r1 = time.perf_counter() - t0, counter.requests()
    cat.query(_sql(cat, where, True), timeout=3600)
    print(f"first cone on a new S3 catalogue: {n} rows, {r1 - r0} requests, "
          f"{took * 1000:.0f} ms; the next one: {counter.requests() - r1} requests",
          flush=True)


def _to_s3(local: Archive, endpoint: str) -> Archive:
    import boto3

    os.environ.update({"S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing"})
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bench")
    s3 = Archive("s3://bench/archive")
    root = Path(local.url)
    live = {Path(u) for name in schema.PHYSICAL if (dt := open_table(local, name))
            for u in dt.file_uris()}
    todo = [p for p in root.joinpath("tables").rglob("*")  # logs, releases, live files
             if p.is_file() and (p.suffix != ".parquet" or "_delta_log" in p.parts
                                 or p in live)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: s3.put_file(p, str(p.relative_to(root))), todo))
    return s3


def http_suite(archive: Archive, repeat: int, positions: int = 3) -> None:
    """Engine (translation + catalogue, as /tap/sync runs them), the sync service
    (that plus VOTable output) and the HTTP round trip of the same ADQL on a local
    server (127.0.0.1, a free port), interleaved run by run; medians."""
    import requests

    from ..localserver import start_background

    srv, base = start_background(archive.url)
    cat = Catalogue(archive)
    session = requests.Session()
    print(f"\n== /tap/sync on {base} (VOTable) vs the engine, ms ==\n"
          "| query | rows | engine | service | http | http - engine |\n|---|---|---|---|---|---|",
          flush=True)
    try:
        for name, q in QUERIES.items():
            for ra, dec in _positions(cat, positions):
                adql = ("SELECT obs_publisher_did, t_min FROM ivoa.obscore WHERE "
                        + q.format(ra=ra % 360, dec=dec))
                n, med = _http_case(cat, adql, f"{base}/tap/sync", session, repeat)
                print(f"| {name} | {n:,} | {med['engine']:.1f} | {med['service']:.1f} | "
                      f"{med['http']:.1f} | {med['http'] - med['engine']:.1f} |", flush=True)
    finally:
        srv.server.shutdown()
        srv.server.server_close()


def _http_case(cat: Catalogue, adql: str, url: str, session, repeat: int):
    from ...query.adql import translate
    from ...services.tap import sync as tapsync

    params = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql}

    def engine():
        return cat.query(translate(adql, all_tables(), box_sql=cat.box_sql).sql,
                         timeout=3600).num_rows

    def service():  # the sync service in-process: the engine plus the VOTable output
        return tapsync.run_query(tapsync.Params(list(params.items())), cat, 3600).rows

    def http():
        r = session.get(url, params=params, timeout=600)
        r.raise_for_status()
        return r.content

    fns = {"engine": engine, "service": service, "http": http}
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return engine(), {k: statistics.median(v) * 1000 for k, v in times.items()}


def main(argv: list[str]) -> None:
    a = _args(argv)
    folder = Path(a.archive) if a.archive else Path(tempfile.mkdtemp(prefix="bench-tap-"))
    archive = build(folder, a.rows, a.weeks)
    if layout(archive) != (0, 1):  # weekly files span the sky: re-cluster them first
        t0 = time.perf_counter()
        print(compact(archive).splitlines()[0], flush=True)
        print(f"compact: {time.perf_counter() - t0:.0f} s", flush=True)
    files = open_table(archive, "ivoa.obscore").file_uris()
    size = sum(Path(p).stat().st_size for p in files)
    print(f"ivoa.obscore Parquet: {len(files)} files, {size / 1e6:.1f} MB", flush=True)
    if not a.no_local:
        run_suite(Catalogue(archive), "local folder", a.repeat, positions=a.positions,
                  slow_repeat=a.every_row_repeat)
    if a.http:
        http_suite(archive, a.repeat, a.positions)
    if a.s3:
        srv, endpoint, counter = _moto_with_counter()
        try:
            s3 = _to_s3(archive, endpoint)
            first_cone(s3, counter)
            run_suite(Catalogue(s3), "moto S3 (loopback)",
                      max(3, a.repeat // 3), counter, positions=1, slow_repeat=1)
        finally:
            srv.shutdown()
    if not a.archive:
        shutil.rmtree(folder, ignore_errors=True)
