"""Cold start of the Lambda functions: process start to first answer, per handler kind.

python -m chalicelib bench coldstart [--image NAME] [--host] [--warm 5] [--repeat 3]
    [--s3 [--s3-delay-ms 25]]

Builds a small synthetic archive (two weeks), then for each handler kind (VOSI
availability, TAP cone search, SIA, DataLink, cutout) starts a fresh function process and
measures the time from its start to the first answer, then the same request `--warm`
times in that process. The function process is the image's real entry point,
`python3 -m awslambdaric chalicelib.lambdas.handlers.api`, fed by a Lambda Runtime API on
127.0.0.1 (infra/image/runtime_api.py), inside the image built by `make image` (run with
buildah, the archive copied in). Without buildah or an image (or with --host) it runs on
this machine instead and says so (with awslambdaric, or a stand-in client doing what it
does when that is not installed). Each kind runs --repeat times; the table shows the
median. Goals: < 1 s to the first cone answer, < 300 ms for a handler without the
science stack. With --s3 the archive is served by moto on 127.0.0.1 (its tables, logs
and files copied in) with --s3-delay-ms added to every request, a stand-in for S3's
first-byte latency from a Lambda: what a cold start costs on the AWS path (boto3, DuckDB's
httpfs, the requests), with the requests counted per kind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[3]
RUNTIME_API = ROOT / "infra" / "image" / "runtime_api.py"
BUILDAH = ["buildah", "--storage-driver", "vfs"]
HOST = "abc.execute-api.us-east-1.amazonaws.com"
HANDLER = "chalicelib.lambdas.handlers.api"
# what a new Lambda container does not have: the kernels copied from the seed, caches,
# the catalogue's empty bind files (query/catalogue.py BIND_ROOT)
IMAGE_TMP = ["/tmp/numba-cache", "/tmp/matplotlib", "/tmp/.astropy", "/tmp/.cache",
             "/tmp/catalogue-bind"]
GOALS = {"availability": 0.3, "datalink": 0.3, "tap_cone": 1.0}


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench coldstart")
    p.add_argument("--image", default="spherex-archive:latest",
                   help="image built by make image (default spherex-archive:latest)")
    p.add_argument("--host", action="store_true", help="run on this machine, not the image")
    p.add_argument("--warm", type=int, default=5, help="warm requests per process")
    p.add_argument("--repeat", type=int, default=3, help="cold processes per kind")
    p.add_argument("--s3", action="store_true", help="the archive on moto S3 (loopback)")
    p.add_argument("--s3-delay-ms", type=float, default=25.0,
                   help="added to every S3 request with --s3 (default 25)")
    return p.parse_args(argv)


def proxy_event(path: str, query: dict[str, str] | None = None) -> dict:
    """What API Gateway's greedy {proxy+} resource sends (REST API, Lambda proxy)."""
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": "GET",
        "headers": {"Host": HOST, "Accept": "*/*"}, "multiValueHeaders": {"Accept": ["*/*"]},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": quote(path.lstrip("/"))}, "stageVariables": None,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "GET", "stage": "api",
                           "path": "/api" + path, "requestId": "bench", "domainName": HOST},
        "body": None, "isBase64Encoded": False,
    }


def build_archive(folder: Path) -> dict[str, dict]:
    """Two synthetic weeks ingested into folder/archive; the events of each kind."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ...ingest.delivery import ingest
    from ...lake.storage import Archive
    from ..synth import synthesize

    weeks = synthesize(folder / "synth", weeks=2, image_size=64, images_per_week=24, seed=5)
    arch = Archive.from_env(str(folder / "archive"))
    for w in weeks:
        ingest(w, arch)
    planes = pq.read_table(weeks[0] / "plane.parquet")
    row = planes.filter(pa.compute.is_valid(planes["poly"])).to_pylist()[0]
    ra, dec, did = row["s_ra"], row["s_dec"], row["obs_publisher_did"]
    data = folder / "archive" / "data"
    key = next(str(p.relative_to(data)) for p in sorted(data.rglob("*.fits"))
               if "level2_" in p.name)
    cone = ("SELECT obs_publisher_did, s_ra, s_dec, access_url FROM ivoa.obscore WHERE "
            f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, 1.0)) = 1")
    return {
        "availability": proxy_event("/tap/availability"),
        "tap_cone": proxy_event("/tap/sync", {"REQUEST": "doQuery", "LANG": "ADQL",
                                              "QUERY": cone}),
        "sia": proxy_event("/sia/query", {"POS": f"CIRCLE {ra} {dec} 0.5"}),
        "datalink": proxy_event("/datalink/links", {"ID": did}),
        "cutout": proxy_event("/cutout/" + key, {"ra": str(ra), "dec": str(dec),
                                                 "size": "0.2"}),
    }


def _plan(events: dict[str, dict], archive: str, warm: int, repeat: int,
          clear: list[str], s3: dict[str, str] | None = None) -> dict:
    # WITHOUT_PANDAS as the template sets it for the API function
    env = {"ARCHIVE_URL": archive, "RATE_LIMIT": "0", "WITHOUT_PANDAS": "1",
           **(s3 or {})}  # with S3: its ARCHIVE_URL, endpoint and credentials
    return {"runs": [{"name": name, "handler": HANDLER, "event": ev, "warm": warm,
                      "env": env, "clear": clear}
                     for _ in range(repeat) for name, ev in events.items()]}


def _image_exists(image: str) -> bool:
    if shutil.which("buildah") is None:
        return False
    r = subprocess.run(BUILDAH + ["images", "--quiet", "localhost/" + image],
                       capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def to_moto(folder: Path) -> tuple[object, dict[str, str], object]:
    """The bench archive on a request-counting moto S3 on 127.0.0.1: (server, the
    function environment for it, the counter)."""
    from ...lake.storage import Archive
    from .bench_tap import _moto_with_counter

    srv, endpoint, counter = _moto_with_counter()
    url = _to_s3_whole(Archive.from_env(str(folder / "archive")), endpoint)
    env = {"ARCHIVE_URL": url, "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    return srv, env, counter


def _to_s3_whole(local, endpoint: str) -> str:
    """Every object of the local archive (tables, logs, releases, data files) into
    s3://bench/archive; its URL. (This process's own settings are left alone.)"""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="bench")
    root = Path(local.url)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: s3.upload_file(str(p), "bench",
                                               f"archive/{p.relative_to(root)}"),
                      [p for p in root.rglob("*") if p.is_file()]))
    return "s3://bench/archive"


def run_in_image(image: str, folder: Path, events: dict, warm: int, repeat: int,
                 s3: dict[str, str] | None = None) -> dict:
    name = subprocess.run(BUILDAH + ["from", "--pull-never", "localhost/" + image],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        mnt = Path(subprocess.run(BUILDAH + ["mount", name], capture_output=True, text=True,
                                  check=True).stdout.strip())
        work = mnt / "bench"
        shutil.copytree(folder / "archive", work / "archive")
        shutil.copy(RUNTIME_API, work / "runtime_api.py")
        (work / "plan.json").write_text(json.dumps(_plan(events, "/bench/archive", warm,
                                                         repeat, IMAGE_TMP, s3)))
        r = subprocess.run(BUILDAH + ["run", "--isolation", "chroot", name, "--", "python3",
                                      "/bench/runtime_api.py", "/bench/plan.json"],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise SystemExit(f"runtime_api.py failed in the image:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout)
    finally:
        subprocess.run(BUILDAH + ["umount", name], capture_output=True)
        subprocess.run(BUILDAH + ["rm", name], capture_output=True)


def run_on_host(folder: Path, events: dict, warm: int, repeat: int,
                s3: dict[str, str] | None = None) -> dict:
    plan = folder / "plan.json"
    plan.write_text(json.dumps(_plan(events, str(folder / "archive"), warm, repeat, [], s3)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(RUNTIME_API), str(plan)], capture_output=True,
                       text=True, timeout=1800, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"runtime_api.py failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def table(out: dict) -> list[str]:
    by: dict[str, list[dict]] = {}
    for res in out["results"]:
        by.setdefault(res["name"], []).append(res)
    lines = ["| handler kind | cold: start to first answer (median) | its CPU time | "
             "warm (median) | cold / warm | goal | status |", "|---|---|---|---|---|---|---|"]
    for name, runs in by.items():
        bad = [r for r in runs if "error" in r or r["response"].get("statusCode") != 200]
        cold = statistics.median(r["cold_s"] for r in runs if "cold_s" in r)
        cpus = [r["cold_cpu_s"] for r in runs if r.get("cold_cpu_s") is not None]
        cpu = f"{statistics.median(cpus) * 1000:.0f} ms" if cpus else "?"
        warm = statistics.median(w for r in runs for w in r.get("warm_s", [])) \
            if any(r.get("warm_s") for r in runs) else float("nan")
        goal = GOALS.get(name)
        target = "" if goal is None else \
            f"< {goal * 1000:.0f} ms {'met' if cold < goal else 'missed'}"
        status = "HTTP 200" if not bad else "FAILED: " + str(bad[0])[:200]
        reqs = f" ({runs[0]['requests']:.0f} S3 requests a process)" \
            if "requests" in runs[0] else ""
        lines.append(f"| {name} | {cold * 1000:.0f} ms | {cpu} | {warm * 1000:.1f} ms | "
                     f"{cold / warm:.0f}x | {target} | {status}{reqs} |")
    return lines


def main(argv: list[str]) -> None:
    a = _args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        folder = Path(tmp)
        print("building a synthetic archive (2 weeks, 48 images) ...", flush=True)
        events = build_archive(folder)
        srv, s3, counter = to_moto(folder) if a.s3 else (None, None, None)
        if counter is not None:
            counter.delay(a.s3_delay_ms / 1000)
        image = not a.host and _image_exists(a.image)
        if image:
            where = f"inside the image {a.image} (buildah run --isolation chroot)"
        else:
            why = "--host" if a.host else f"no image {a.image} (make image) or no buildah"
            where = f"on this machine, NOT in the image ({why})"
        try:
            out = {"results": []}
            # with S3 one kind at a time, so that its requests can be counted
            for group in ([{k: v} for k, v in events.items()] if counter else [events]):
                before = counter.requests() if counter else 0
                got = run_in_image(a.image, folder, group, a.warm, a.repeat, s3) if image \
                    else run_on_host(folder, group, a.warm, a.repeat, s3)
                for res in got["results"]:
                    if counter:
                        res["requests"] = (counter.requests() - before) / a.repeat
                out = {**got, "results": out["results"] + got["results"]}
        finally:
            if srv is not None:
                srv.shutdown()
        if counter is not None:
            where += f"; the archive on moto S3, +{a.s3_delay_ms:g} ms a request"
    print(f"\ncold starts {where}; Python {out['python']}, client: {out['client']}; "
          f"{a.repeat} cold processes per kind, {a.warm} warm requests each\n")
    print("\n".join(table(out)))
    print(f"\nload average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall times stretch with it; the CPU time of the function process much less)")
