"""Load: bounded concurrent clients on a mix of requests, for a fixed time.

python -m chalicelib bench load [--seconds 30] [--clients 8] [--lambda] [--archive DIR]
                                [--image-size 256] [--seed 1]

Builds a small synthetic archive unless --archive names one, serves it on 127.0.0.1 (a
port chosen at run time) and runs --clients threads for --seconds on a mix of TAP sync
cones (CONTAINS and INTERSECTS), SIA, DataLink, cutouts and TAP async jobs (create with
PHASE=RUN, blocking WAIT, fetch the result, DELETE). Prints throughput, p50/p95/p99
latency per kind, errors (goal 0) and the process RSS over time (goal: flat; the server
runs in this process). Then the isolation check: cone latency alone, and again while
slow requests (large cutouts, heavy sync queries, async jobs) run on the other clients:
a slow request must never hold a cone search up. With --lambda the same mix also goes
through the Lambda handler (chalicelib.handlers.api) in-process, as API Gateway proxy
events.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlparse

import requests

MAX_REQUESTS_PER_CLIENT = 100_000  # a bound besides time
# ~2.5 s of DuckDB on a laptop core: 123 million joined rows of TAP_SCHEMA.columns
HEAVY = ("SELECT COUNT(*) AS n FROM TAP_SCHEMA.columns AS a, TAP_SCHEMA.columns AS b, "
         "TAP_SCHEMA.columns AS c, TAP_SCHEMA.columns AS d WHERE a.column_name < "
         "b.column_name AND c.column_name < d.column_name")


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench load")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--lambda", dest="lambda_", action="store_true",
                   help="also drive chalicelib.handlers.api in-process with proxy events")
    p.add_argument("--archive", help="serve this archive (default: build a small one)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


# ---- two ways to send a request: HTTP to the local server, or the Lambda handler --------

class Http:
    name = "local server (HTTP)"

    def __init__(self, base: str):
        self.base = base
        self._local = threading.local()

    def call(self, method: str, path: str, params=None, data=None):
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        r = s.request(method, self.base + path, params=params, data=data, timeout=120,
                      allow_redirects=False)
        return r.status_code, r.headers, r.content

    def local_path(self, url: str) -> str:
        return url[len(self.base):] if url.startswith(self.base) else urlparse(url).path


class Lambda:
    """API Gateway REST proxy events into chalicelib.handlers.api, in this process."""

    name = "Lambda handler (in-process proxy events)"
    DOMAIN = "abc.execute-api.us-east-1.amazonaws.com"

    def __init__(self):
        from ...lambdas import handlers

        self.api = handlers.api
        self.n = 0
        self.token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")

    def call(self, method: str, path: str, params=None, data=None):
        self.n += 1
        multi: dict[str, list[str]] = defaultdict(list)
        for k, v in (params or {}).items():
            multi[k].append(str(v))
        body = urlencode(data) if data else None
        headers = {"Host": self.DOMAIN, "Accept": "*/*", "X-Owner-Token": self.token}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        event = {
            "resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": {k: v[-1] for k, v in multi.items()} or None,
            "multiValueQueryStringParameters": dict(multi) or None,
            "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method,
                               "stage": "api", "path": "/api" + path,
                               "requestId": f"load-{self.n}", "domainName": self.DOMAIN},
            "body": body, "isBase64Encoded": False}
        out = self.api(event, None)
        raw = out.get("body") or b""
        raw = base64.b64decode(raw) if out.get("isBase64Encoded") else (
            raw.encode() if isinstance(raw, str) else raw)
        hdrs = {k: v for k, v in (out.get("headers") or {}).items()}
        hdrs.update({k: v[-1] for k, v in (out.get("multiValueHeaders") or {}).items() if v})
        return out["statusCode"], hdrs, raw

    def local_path(self, url: str) -> str:
        path = urlparse(url).path
        return path[len("/api"):] if path.startswith("/api/") else path


# ---- the requests ------------------------------------------------------------------------

class Mix:
    """What the clients ask for, drawn from a few real images of the archive."""

    def __init__(self, images: list[dict]):
        self.images = images

    def _image(self, rnd: random.Random) -> dict:
        return rnd.choice(self.images)

    def cone_contains(self, c, rnd) -> bool:
        im = self._image(rnd)
        q = ("SELECT obs_id, s_ra, s_dec FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', "
             f"s_ra, s_dec), CIRCLE('ICRS', {im['ra'] + rnd.uniform(-1, 1):.4f}, "
             f"{im['dec'] + rnd.uniform(-1, 1):.4f}, 1.0)) = 1")
        return c.call("GET", "/tap/sync", {"LANG": "ADQL", "QUERY": q})[0] == 200

    def cone_intersects(self, c, rnd) -> bool:
        im = self._image(rnd)
        q = ("SELECT obs_id, access_url FROM ivoa.obscore WHERE INTERSECTS(s_region, "
             f"CIRCLE('ICRS', {im['ra']:.4f}, {im['dec']:.4f}, 0.5)) = 1")
        return c.call("POST", "/tap/sync", data={"LANG": "ADQL", "QUERY": q})[0] == 200

    def sia(self, c, rnd) -> bool:
        im = self._image(rnd)
        return c.call("GET", "/sia/query", {"POS": f"CIRCLE {im['ra']} {im['dec']} 0.5",
                                            "MAXREC": "100"})[0] == 200

    def datalink(self, c, rnd) -> bool:
        return c.call("GET", "/datalink/links", {"ID": self._image(rnd)["id"]})[0] == 200

    def cutout(self, c, rnd, size: float = 0.05) -> bool:
        im = self._image(rnd)
        status, _, body = c.call("GET", f"/cutout/{im['key']}", {
            "ra": im["ra"], "dec": im["dec"], "size": size})
        return status == 200 and body[:6] == b"SIMPLE"

    def big_cutout(self, c, rnd) -> bool:
        return self.cutout(c, rnd, size=3.0)

    def heavy_sync(self, c, rnd) -> bool:
        return c.call("POST", "/tap/sync", data={"LANG": "ADQL", "QUERY": HEAVY})[0] == 200

    def async_job(self, c, rnd, query: str | None = None) -> bool:
        im = self._image(rnd)
        q = query or ("SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT(s_ra, s_dec), "
                      f"CIRCLE({im['ra']:.4f}, {im['dec']:.4f}, 2)) = 1")
        status, headers, _ = c.call("POST", "/tap/async", data={
            "LANG": "ADQL", "QUERY": q, "PHASE": "RUN"})
        if status != 303:
            return False
        job = c.local_path(headers["Location"])
        phase = b""
        for _ in range(10):  # bounded: 10 blocking waits of at most 5 s
            status, _, phase = c.call("GET", job + "/phase", {"WAIT": "5"})
            if phase not in (b"PENDING", b"QUEUED", b"EXECUTING"):
                break
        ok = phase == b"COMPLETED"
        if ok:
            status, headers, _ = c.call("GET", job + "/results/result")
            ok = status == 303 and c.call("GET", c.local_path(headers["Location"]))[0] == 200
        c.call("DELETE", job)
        return ok

    def heavy_async(self, c, rnd) -> bool:
        return self.async_job(c, rnd, HEAVY)


MIX = [("cone_contains", 25), ("cone_intersects", 20), ("sia", 15), ("datalink", 15),
       ("cutout", 15), ("async_job", 10)]
SLOW = [("big_cutout", 1), ("heavy_sync", 1), ("heavy_async", 1)]


# ---- running clients ---------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.examples: list[str] = []

    def add(self, kind: str, seconds: float, ok: bool, what: str = "") -> None:
        with self.lock:
            self.lat[kind].append(seconds)
            if not ok:
                self.errors[kind] += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{kind}: {what}")


def _client(client, mix: Mix, kinds: list[tuple[str, int]], rec: Recorder, stop: float,
            seed: int) -> None:
    rnd = random.Random(seed)
    names, weights = zip(*kinds)
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() >= stop:
            return
        kind = rnd.choices(names, weights)[0]
        t0 = time.perf_counter()
        try:
            ok, what = getattr(mix, kind)(client, rnd), ""
        except Exception as e:  # noqa: BLE001 - counted as an error of this kind
            ok, what = False, f"{type(e).__name__}: {e}"
        rec.add(kind, time.perf_counter() - t0, ok, what)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    def __init__(self, every: float = 1.0):
        super().__init__(daemon=True)
        self.every, self.samples = every, []
        self.done = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.done.is_set():
            self.samples.append((time.monotonic() - t0, rss_mb()))
            self.done.wait(self.every)


def run_clients(groups: list[tuple[Callable[[], object], list, int]], seconds: float,
                mix: Mix, seed: int) -> tuple[Recorder, float]:
    """groups: (make a client, kinds, how many threads). Returns the recorder and wall s."""
    rec = Recorder()
    stop = time.monotonic() + seconds
    threads = []
    for g, (make, kinds, n) in enumerate(groups):
        for i in range(n):
            threads.append(threading.Thread(target=_client, args=(
                make(), mix, kinds, rec, stop, seed * 1000 + g * 100 + i), daemon=True))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 180)  # a request in flight at the stop time may finish late
    return rec, time.perf_counter() - t0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def report(rec: Recorder, wall: float) -> None:
    total = sum(len(v) for v in rec.lat.values())
    errors = sum(rec.errors.values())
    print(f"  {'kind':<16} {'n':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6}")
    for kind in sorted(rec.lat):
        v = rec.lat[kind]
        print(f"  {kind:<16} {len(v):>6} {len(v) / wall:>7.1f} {_pct(v, 50) * 1e3:>8.1f} "
              f"{_pct(v, 95) * 1e3:>8.1f} {_pct(v, 99) * 1e3:>8.1f} {rec.errors[kind]:>6}")
    print(f"  total: {total} requests in {wall:.1f} s = {total / wall:.1f}/s; errors: "
          f"{errors} (goal 0)")
    for e in rec.examples:
        print(f"    error: {e}")


def memory_report(samples: list[tuple[float, float]]) -> None:
    if len(samples) < 4:
        return
    step = max(1, len(samples) // 8)
    line = "  ".join(f"{t:.0f}s {mb:.0f}" for t, mb in samples[::step])
    print(f"  RSS MB over time: {line}  (end {samples[-1][1]:.0f})")
    q = max(1, len(samples) // 4)
    first = statistics.mean(mb for _, mb in samples[:q])
    last = statistics.mean(mb for _, mb in samples[-q:])
    print(f"  RSS first quarter {first:.0f} MB, last quarter {last:.0f} MB: "
          f"{last - first:+.0f} MB ({(last - first) / first * 100:+.1f}%)")


def _images(base: str) -> list[dict]:
    r = requests.get(base + "/tap/sync", timeout=60, params={
        "LANG": "ADQL", "RESPONSEFORMAT": "csv",
        "QUERY": "SELECT TOP 40 o.obs_publisher_did, a.uri, o.s_ra, o.s_dec FROM "
                 "ivoa.obscore AS o JOIN spherex.plane AS p ON p.obs_publisher_did = "
                 "o.obs_publisher_did JOIN spherex.artifact AS a ON a.planeid = p.planeid "
                 "WHERE o.dataproduct_type = 'image' AND a.product_type = 'science' "
                 "ORDER BY 1"})
    r.raise_for_status()
    rows = [line.split(",") for line in r.text.splitlines()[1:] if line]
    return [{"id": i, "key": k, "ra": float(ra), "dec": float(de)} for i, k, ra, de in rows]


def main(argv: list[str]) -> None:
    a = _args(argv)
    import logging

    os.environ["QUIET_HTTP"] = "1"
    os.environ["RATE_LIMIT"] = "0"  # every request comes from one address: measure the service
    logging.getLogger("chalicelib").setLevel(logging.WARNING)
    from ...jobs import runtime as jobs
    from ..localserver import start_background

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        t0 = time.perf_counter()
        url = a.archive or _build(Path(tmp), a.image_size)
        srv, base = start_background(url)
        try:
            print(f"archive {url} ({time.perf_counter() - t0:.1f} s), serving on {base}; "
                  f"{a.clients} clients, {a.seconds:g} s per run, {os.cpu_count()} CPUs",
                  flush=True)
            mix = Mix(_images(base))
            targets: list[Callable[[], object]] = [lambda: Http(base)]
            if a.lambda_:
                targets.append(Lambda)
            for make in targets:
                _run(make, mix, a)
        finally:
            srv.server.shutdown()
            srv.server.server_close()
            jobs.reset()


def _build(folder: Path, size: int) -> str:
    from ...ingest.delivery import ingest
    from ...lake.storage import Archive
    from ..synth import synthesize

    synthesize(folder / "synth", weeks=1, image_size=size, images_per_week=24, seed=7)
    arch = Archive.from_env(str(folder / "archive"))
    for d in sorted(p for p in (folder / "synth").iterdir() if p.is_dir()):
        ingest(d, arch)
    return arch.url


def _run(make: Callable[[], object], mix: Mix, a: argparse.Namespace) -> None:
    print(f"\n== {make().name}: the mix, {a.clients} clients, {a.seconds:g} s", flush=True)
    sampler = Sampler()
    sampler.start()
    rec, wall = run_clients([(make, MIX, a.clients)], a.seconds, mix, a.seed)
    sampler.done.set()
    sampler.join()
    report(rec, wall)
    memory_report(sampler.samples)

    cones = [("cone_contains", 1), ("cone_intersects", 1)]
    n_cone = max(1, min(2, a.clients // 4))
    n_slow = max(1, a.clients // 2)
    third = max(5.0, a.seconds / 3)
    print(f"\n== isolation: {n_cone} cone clients alone, then with {n_slow} clients on slow "
          f"requests (3 deg cutouts, ~2.5 s sync queries and async jobs), {third:g} s each",
          flush=True)
    alone, w1 = run_clients([(make, cones, n_cone)], third, mix, a.seed + 1)
    loaded, w2 = run_clients([(make, cones, n_cone), (make, SLOW, n_slow)], third, mix,
                             a.seed + 2)
    print("  cones alone:")
    report(alone, w1)
    print("  cones while slow requests run:")
    report(loaded, w2)
    cone_alone = alone.lat["cone_contains"] + alone.lat["cone_intersects"]
    cone_loaded = loaded.lat["cone_contains"] + loaded.lat["cone_intersects"]
    slow = [x for k, _ in SLOW for x in loaded.lat[k]]
    p99, slow50 = _pct(cone_loaded, 99), _pct(slow, 50)
    print(f"  cone p50 {_pct(cone_alone, 50) * 1e3:.1f} -> {_pct(cone_loaded, 50) * 1e3:.1f} ms,"
          f" p99 {_pct(cone_alone, 99) * 1e3:.1f} -> {p99 * 1e3:.1f} ms, max "
          f"{max(cone_loaded) * 1e3:.0f} ms; slow requests p50 {slow50 * 1e3:.0f} ms")
    verdict = "never blocked" if p99 < slow50 else "BLOCKED behind slow requests"
    print(f"  cones {verdict} (pass: cone p99 under load below the slow p50); "
          f"{len(cone_loaded)} cones and {len(slow)} slow requests ran side by side")
