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

    served = {"bytes": 0, "requests": 0, "delay": 0.0}
    lock = threading.Lock()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        with lock:
            served["requests"] += 1
        if served["delay"]:  # a stand-in for S3's first-byte latency, per request
            time.sleep(served["delay"])
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
    counter.delay = lambda seconds: served.update(delay=seconds)
    return srv, f"http://127.0.0.1:{srv.server_port}", counter


def first_cone(archive: Archive, counter, delay: float = 0.0) -> None:
    """Requests and time from a new catalogue to its first cone's answer, with `delay`
    seconds added to every S3 request (S3's first-byte latency is 20-30 ms)."""
    probe = Catalogue(archive)
    row = probe.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE obs_collection = "
                      "'spherex_qr2' ORDER BY hash(obs_publisher_did) LIMIT 1").to_pylist()[0]
    where = QUERIES["CONTAINS(point)"].format(ra=row["s_ra"], dec=row["s_dec"])
    counter.delay(delay)
    try:
        r0, t0 = counter.requests(), time.perf_counter()
        cat = Catalogue(archive)
        n = cat.query(_sql(cat, where, True), timeout=3600).num_rows
        took, r1 = time.perf_counter() - t0, counter.requests()
        cat.query(_sql(cat, where, True), timeout=3600)
    finally:
        counter.delay(0.0)
    print(f"first cone on a new S3 catalogue (+{delay * 1000:.0f} ms a request): {n} rows, "
          f"{r1 - r0} requests, {took * 1000:.0f} ms; the next one: "
          f"{counter.requests() - r1} requests", flush=True)


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
    """The request path (#17): the engine (what the service computes: translation and
    catalogue for TAP, the SQL query for SIA) against the same request through the local
    server (127.0.0.1, a free port) on a new connection per request and on one kept-alive
    connection, and through the Lambda handler (an API Gateway proxy event, in-process),
    interleaved run by run; medians, and the worst path minus the engine."""
    from ..localserver import start_background

    os.environ["RATE_LIMIT"] = "0"  # the per-caller limit would throttle a benchmark
    os.environ["QUIET_HTTP"] = "1"  # no access log line per request on stderr
    srv, base = start_background(archive.url)
    cat = Catalogue(archive)
    print(f"\n== sync requests on {base} (VOTable) vs the engine, ms ==\n"
          "| query | rows | engine | local, new conn | local, kept-alive | Lambda handler "
          "| worst - engine |\n|---|---|---|---|---|---|---|", flush=True)
    try:
        for name, q in QUERIES.items():
            for ra, dec in _positions(cat, positions):
                adql = ("SELECT obs_publisher_did, t_min FROM ivoa.obscore WHERE "
                        + q.format(ra=ra % 360, dec=dec))
                _http_row(f"TAP {name}", *_tap_case(cat, adql), base, repeat)
        for ra, dec in _positions(cat, positions):
            _http_row("SIA POS=CIRCLE 0.1", *_sia_case(cat, ra % 360, dec, 0.1), base, repeat)
    finally:
        srv.server.shutdown()
        srv.server.server_close()


def _tap_case(cat: Catalogue, adql: str):
    from ...query.adql import translate

    def engine():
        return cat.query(translate(adql, all_tables(), box_sql=cat.box_sql).sql,
                         timeout=3600).num_rows

    return "/tap/sync", {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql}, engine


def _sia_case(cat: Catalogue, ra: float, dec: float, r: float):
    from ...config import settings
    from ...services import sia
    from ...web.params import Params

    params = {"POS": f"CIRCLE {ra!r} {dec!r} {r!r}"}
    conf = settings()

    def engine():
        q = sia.SiaQuery.parse(Params(list(params.items())), conf.sia_default_maxrec,
                               conf.sia_hard_maxrec)
        cols = ", ".join(c.name for c in sia.TABLE.served)
        return cat.query(f"SELECT {cols} FROM ivoa.obscore WHERE {sia.where(q, cat)} "
                         "ORDER BY t_min, obs_publisher_did", timeout=3600).num_rows

    return "/sia/query", params, engine


def _proxy_event(path: str, params: dict[str, str]) -> dict:
    host = "bench.execute-api.us-east-1.amazonaws.com"
    return {"resource": "/{proxy+}", "path": path, "httpMethod": "GET",
            "headers": {"Host": host}, "multiValueHeaders": {"Host": [host]},
            "queryStringParameters": params,
            "multiValueQueryStringParameters": {k: [v] for k, v in params.items()},
            "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "GET",
                               "stage": "api", "path": "/api" + path, "requestId": "bench",
                               "domainName": host},
            "body": None, "isBase64Encoded": False}


def _http_row(label: str, path: str, params: dict[str, str], engine, base: str,
              repeat: int) -> None:
    import copy
    import http.client
    from urllib.parse import urlencode, urlparse

    from ...lambdas import handlers

    u = urlparse(base)
    target = f"{path}?{urlencode(params)}"
    kept = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    event = _proxy_event(path, params)

    def get(conn):
        conn.request("GET", target)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{label}: HTTP {r.status}: {body[:300]!r}")

    def new():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        try:
            get(conn)
        finally:
            conn.close()

    def lam():
        r = handlers.api(copy.deepcopy(event))
        if r["statusCode"] != 200:
            raise RuntimeError(f"{label}: Lambda {r['statusCode']}: {str(r['body'])[:300]}")

    fns = {"engine": engine, "new": new, "kept": lambda: get(kept), "lambda": lam}
    times = {k: [] for k in fns}
    try:
        for fn in fns.values():
            fn()
        for _ in range(repeat):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    finally:
        kept.close()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    worst = max(med["new"], med["kept"], med["lambda"])
    print(f"| {label} | {engine():,} | {med['engine']:.1f} | {med['new']:.1f} | "
          f"{med['kept']:.1f} | {med['lambda']:.1f} | {worst - med['engine']:+.1f} |",
          flush=True)


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
            first_cone(s3, counter, delay=0.025)
            run_suite(Catalogue(s3), "moto S3 (loopback)",
                      max(3, a.repeat // 3), counter, positions=1, slow_repeat=1)
        finally:
            srv.shutdown()
    if not a.archive:
        shutil.rmtree(folder, ignore_errors=True)
